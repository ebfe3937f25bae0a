"""The load client of ``bench.fanout``: one process holding many WebSocket subscribers.

The client shares the machine's cores with the server it measures, so it is kept cheap: raw
non-blocking sockets read by event-loop readers with a minimal RFC 6455 frame parser instead
of a WebSocket library, and per text frame only ``seq`` and ``timestamp`` are read
(``bytes.find``, no JSON decoding). Receipt times are the kernel's receive timestamps.
Statistics are aggregated in the worker; the parent gets one small summary per window.

Parent and worker talk over a ``multiprocessing`` pipe: ``worker -> ("ramped", RampResult)``;
``parent -> ("window", start, end)`` (wall-clock seconds, announced ahead);
``parent -> ("summary", (first_seq, last_seq) or None)`` after the window, answered by
``worker -> ("summary", WindowSummary)``; ``parent -> ("stop",)``.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import ctypes
import os
import resource
import signal
import socket
import statistics
import struct
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection

INFINITY = float("inf")
HANDSHAKE_TIMEOUT_S = 10.0
DRAIN_S = 5.0  # longest wait after the window for clients to read what arrived in it
MAX_HANDSHAKE_BYTES = 16 * 1024
RECEIVE_BYTES = 64 * 1024
SO_TIMESTAMPNS = SCM_TIMESTAMPNS = 35  # asm-generic/socket.h (x86, arm); Python lacks the name
TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux
LATENCY_BIN_S = 1e-4  # latency histogram resolution: 0.1 ms
ISO_CACHE_SIZE = 64  # distinct timestamps remembered; every subscriber of a tick shares one
PR_SET_PDEATHSIG = 1  # linux/prctl.h
ANCILLARY_BYTES = socket.CMSG_SPACE(TIMESPEC.size)

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA  # RFC 6455 opcodes this client handles
SEQ_KEY = b'"seq":'
TIMESTAMP_KEY = b'"timestamp":'


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """What one client process does: which connections to open and how fast."""

    host: str
    port: int
    paths: tuple[str, ...]
    concurrency: int
    timeout_s: float
    nice: int = 0


@dataclass(slots=True)
class RampResult:
    connected: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


@dataclass(slots=True)
class WindowSummary:
    """One worker's figures for the measurement window."""

    messages: int = 0
    per_client: list[int] = field(default_factory=list)
    latency_bins: Counter[int] = field(default_factory=Counter)
    latency_max_s: float = float("-inf")
    latency_min_s: float = float("inf")
    receipt_seqs: array[int] = field(default_factory=lambda: array("q"))
    receipt_times: array[float] = field(default_factory=lambda: array("d"))
    seq_gaps: int = 0
    seq_repeats: int = 0
    closed_by_server: Counter[int] = field(default_factory=Counter)
    lost: int = 0
    cpu_s: float = 0.0
    kernel_timestamps: bool = False
    late_start_s: float = 0.0


class WindowClock:
    """The measurement window shared by every connection of a worker (wall-clock seconds)."""

    __slots__ = ("end", "start")

    def __init__(self) -> None:
        self.start = INFINITY
        self.end = INFINITY


class Stats:
    """Counters shared by every connection of a worker; only frames inside the window count."""

    __slots__ = (
        "iso_cache",
        "kernel_timestamps",
        "latency_bins",
        "latency_max_s",
        "latency_min_s",
        "receipt_seqs",
        "receipt_times",
        "window",
    )

    def __init__(self, window: WindowClock) -> None:
        self.window = window
        self.latency_bins: dict[int, int] = {}
        self.latency_max_s = float("-inf")
        self.latency_min_s = float("inf")
        self.receipt_seqs: array[int] = array("q")
        self.receipt_times: array[float] = array("d")
        self.iso_cache: dict[bytes, float] = {}
        self.kernel_timestamps = False

    def epoch_of(self, raw: bytes) -> float:
        """Epoch seconds of a ``timestamp`` value: a JSON number or a quoted ISO-8601 string."""
        if raw[:1] != b'"':
            return float(raw)
        epoch = self.iso_cache.get(raw)
        if epoch is None:
            if len(self.iso_cache) >= ISO_CACHE_SIZE:
                self.iso_cache.clear()
            epoch = datetime.fromisoformat(raw[1:-1].decode()).timestamp()
            self.iso_cache[raw] = epoch
        return epoch

    def record_latency(self, latency_s: float) -> None:
        key = round(latency_s / LATENCY_BIN_S)
        bins = self.latency_bins
        bins[key] = bins.get(key, 0) + 1
        if latency_s > self.latency_max_s:
            self.latency_max_s = latency_s
        if latency_s < self.latency_min_s:
            self.latency_min_s = latency_s

    def record_receipt(self, seq: int, now: float) -> None:
        """Every (seq, receipt time): the parent measures fan-out delay from the first receipt."""
        self.receipt_seqs.append(seq)
        self.receipt_times.append(now)


class Subscriber:
    """One upgraded WebSocket on a raw non-blocking socket, read by an event-loop reader.

    Each read takes the kernel's receive timestamp (``SO_TIMESTAMPNS``) where available, so
    the receipt time is when the frame reached this socket, not when this busy process got
    round to it: on a machine shared with the server, client lag stays out of the latency.
    """

    __slots__ = (
        "buffer",
        "close_code",
        "count",
        "fd",
        "last_arrival",
        "last_seq",
        "loop",
        "lost",
        "newest_seq",
        "seq_gaps",
        "seq_repeats",
        "seqs",
        "sock",
        "stats",
    )

    def __init__(self, sock: socket.socket, stats: Stats) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.stats = stats
        self.buffer = b""
        self.count = 0
        self.last_arrival = 0.0
        self.last_seq = -1  # the previous seq in the window, for gaps
        self.newest_seq = -1
        self.seq_gaps = 0
        self.seq_repeats = 0
        self.seqs: array[int] = array("q")
        self.close_code: int | None = None
        self.lost = False

    def start(self, leftover: bytes) -> None:
        """Start reading; ``leftover`` is what arrived with the handshake response."""
        self.loop.add_reader(self.fd, self.on_readable)
        if leftover:
            self._frames(leftover, time.time())

    def on_readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(RECEIVE_BYTES, ANCILLARY_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.lost = True
            self._shut()
            return
        now = kernel_time(ancillary) if ancillary else time.time()
        self.last_arrival = now
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        self._frames(data, now)

    def _frames(self, data: bytes, now: float) -> None:
        """Handle every complete frame in ``data``; keep the incomplete tail for later.

        A read carries the arrival time of its last segment, so only the last text frame of
        ``data`` is timed; earlier ones (a backlog) are counted but not timed.
        """
        pos, size = 0, len(data)
        last_start = last_stop = -1
        closed = False
        while size - pos >= 2:
            length = data[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            start = pos + head
            stop = start + length
            if stop > size:
                break
            opcode = data[pos] & 0x0F
            if opcode == OP_TEXT:
                if last_start >= 0:
                    self._text(data, last_start, last_stop, now, timed=False)
                last_start, last_stop = start, stop
            elif opcode == OP_PING:
                self._send(OP_PONG, data[start:stop])
            elif opcode == OP_CLOSE:
                self._closed(data[start:stop])
                closed = True
                break
            pos = stop
        if pos < size and not closed:
            self.buffer = data[pos:]
        if last_start >= 0:
            self._text(data, last_start, last_stop, now, timed=True)

    def _text(self, data: bytes, start: int, stop: int, now: float, *, timed: bool) -> None:
        stats = self.stats
        window = stats.window
        seq = _field(data, SEQ_KEY, start, stop)
        number = -1 if seq is None else int(seq)
        if number >= 0:
            self.newest_seq = number
            if window.start != INFINITY:  # announced: keep every seq, counted later by range
                self.seqs.append(number)
        if not window.start <= now < window.end:
            return
        self.count += 1
        if number >= 0:
            self._seq(number)
            if timed:
                stats.record_receipt(number, now)
        if timed:
            stamp = _field(data, TIMESTAMP_KEY, start, stop)
            if stamp is not None:
                stats.record_latency(now - stats.epoch_of(stamp))

    def _seq(self, seq: int) -> None:
        last = self.last_seq
        if last >= 0:
            if seq > last + 1:
                self.seq_gaps += seq - last - 1
            elif seq <= last:
                self.seq_repeats += 1
        self.last_seq = seq

    def _closed(self, payload: bytes) -> None:
        self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        self._send(OP_CLOSE, payload[:2])
        self._shut()

    def _send(self, opcode: int, payload: bytes) -> None:
        """A masked client frame (payloads here are control frames: < 126 bytes)."""
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        with contextlib.suppress(OSError):
            self.sock.send(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def _shut(self) -> None:
        if self.is_open:
            self.loop.remove_reader(self.fd)
            self.sock.close()

    @property
    def is_open(self) -> bool:
        return self.sock.fileno() >= 0

    def close(self) -> None:
        """Send a normal close (1000) and drop the socket."""
        if self.is_open:
            self._send(OP_CLOSE, (1000).to_bytes(2, "big"))
            self._shut()


def _field(data: bytes, key: bytes, start: int, stop: int) -> bytes | None:
    """The raw JSON value after ``key`` within ``data[start:stop]`` (flat objects only)."""
    found = data.find(key, start, stop)
    if found < 0:
        return None
    begin = found + len(key)
    while data[begin] == 0x20:
        begin += 1
    if data[begin] == 0x22:  # a string: up to the closing quote, quotes kept
        end = data.find(b'"', begin + 1, stop) + 1
    else:
        end = data.find(b",", begin, stop)
        if end < 0:
            end = data.find(b"}", begin, stop)
    return data[begin:end] if end > begin else None


def kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The receive time the kernel attached to a read (epoch seconds), else the current time."""
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(payload) >= 16:
            seconds, nanoseconds = TIMESPEC.unpack_from(payload)
            return float(seconds + nanoseconds * 1e-9)
    return time.time()


def enable_kernel_timestamps(sock: socket.socket) -> bool:
    if sys.platform != "linux":
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


async def upgrade(sock: socket.socket, host: str, port: int, path: str) -> bytes:
    """Connect and upgrade to WebSocket; return whatever arrived after the response head."""
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while (end := head.find(b"\r\n\r\n")) < 0:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
        if len(head) > MAX_HANDSHAKE_BYTES:
            raise ConnectionError("oversized handshake response")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head[: head.find(b"\r\n")].decode(errors="replace"))
    return head[end + 4 :]


async def open_subscriber(host: str, port: int, path: str, stats: Stats) -> Subscriber:
    """Connect and complete the WebSocket upgrade, within ``HANDSHAKE_TIMEOUT_S``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        stats.kernel_timestamps = enable_kernel_timestamps(sock)
        leftover = await asyncio.wait_for(upgrade(sock, host, port, path), HANDSHAKE_TIMEOUT_S)
    except BaseException:
        sock.close()
        raise
    subscriber = Subscriber(sock, stats)
    subscriber.start(leftover)
    return subscriber


async def ramp(config: WorkerConfig, stats: Stats) -> tuple[list[Subscriber], RampResult]:
    """Open every connection of ``config``, at most ``concurrency`` handshakes at a time."""
    result = RampResult()
    subscribers: list[Subscriber] = []
    gate = asyncio.Semaphore(config.concurrency)
    began = time.monotonic()

    async def one(path: str) -> None:
        async with gate:
            try:
                subscribers.append(await open_subscriber(config.host, config.port, path, stats))
                result.connected += 1
            except (OSError, TimeoutError) as error:
                result.failed += 1
                result.failures[_failure_reason(error)] += 1

    await asyncio.gather(*(one(path) for path in config.paths))
    result.seconds = time.monotonic() - began
    return subscribers, result


def _failure_reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    return str(error) or type(error).__name__


def summarise(
    subscribers: list[Subscriber], stats: Stats, cpu_s: float, seqs: tuple[int, int] | None
) -> WindowSummary:
    """The worker's figures; with ``seqs`` = (first, last), frames are counted by seq.

    Counting the frames of the ticks the server produced in the window (seq in ``(first,
    last]``) is exact however late a client reads them; without seqs (the baseline) frames are
    counted by arrival time.
    """
    if seqs is None:
        per_client = [subscriber.count for subscriber in subscribers]
    else:
        first, last = seqs
        per_client = [
            bisect.bisect_right(sub.seqs, last) - bisect.bisect_right(sub.seqs, first)
            for sub in subscribers
        ]
    summary = WindowSummary(
        messages=sum(per_client),
        per_client=per_client,
        latency_bins=Counter(stats.latency_bins),
        latency_max_s=stats.latency_max_s,
        latency_min_s=stats.latency_min_s,
        receipt_seqs=stats.receipt_seqs,
        receipt_times=stats.receipt_times,
        cpu_s=cpu_s,
        kernel_timestamps=stats.kernel_timestamps,
    )
    for subscriber in subscribers:
        summary.seq_gaps += subscriber.seq_gaps
        summary.seq_repeats += subscriber.seq_repeats
        if subscriber.close_code is not None:
            summary.closed_by_server[subscriber.close_code] += 1
        elif subscriber.lost:
            summary.lost += 1
    return summary


async def client_cpu(start: float, end: float) -> float:
    """This process's CPU seconds between two wall-clock times."""
    await asyncio.sleep(max(start - time.time(), 0.0))
    began = time.process_time()
    await asyncio.sleep(max(end - time.time(), 0.0))
    return time.process_time() - began


async def drain(subscribers: list[Subscriber], end: float, last_seq: int | None) -> None:
    """Let clients read what reached them in the window but still waits in their sockets.

    Waits until every open subscriber has read ``last_seq`` (or, without seqs, something that
    arrived after ``end``), for at most ``DRAIN_S``.
    """
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        if all(
            not sub.is_open
            or (sub.newest_seq >= last_seq if last_seq is not None else sub.last_arrival >= end)
            for sub in subscribers
        ):
            return
        await asyncio.sleep(0.1)


async def receive(conn: Connection, timeout_s: float) -> tuple[object, ...]:
    """The parent's next message, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    ready = await loop.run_in_executor(None, conn.poll, timeout_s)
    if not ready:
        raise TimeoutError("no word from the parent process")
    message = conn.recv()
    assert isinstance(message, tuple)
    return message


async def serve(config: WorkerConfig, conn: Connection) -> None:
    """Ramp, report; on "window" start the clock; on "summary" drain and report; on "stop" end."""
    window = WindowClock()
    stats = Stats(window)
    subscribers, ramped = await ramp(config, stats)
    conn.send(("ramped", ramped))
    cpu: asyncio.Task[float] | None = None
    late_s = 0.0
    try:
        while True:
            message = await receive(conn, config.timeout_s)
            if message[0] == "window":
                _, start, end = message
                assert isinstance(start, float)
                assert isinstance(end, float)
                window.start, window.end = start, end
                late_s = max(time.time() - window.start, 0.0)  # frames before now go uncounted
                cpu = asyncio.create_task(client_cpu(window.start, window.end))
            elif message[0] == "summary" and cpu is not None:
                seqs = message[1]
                assert seqs is None or isinstance(seqs, tuple)
                await drain(subscribers, window.end, None if seqs is None else seqs[1])
                summary = summarise(subscribers, stats, await cpu, seqs)
                summary.late_start_s = late_s
                conn.send(("summary", summary))
            elif message[0] == "stop":
                return
    finally:
        for subscriber in subscribers:
            subscriber.close()
        await asyncio.sleep(0.2)


def raise_fd_limit() -> tuple[int, int]:
    """Lift the soft open-file limit to the hard one; return the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def die_with_parent() -> None:
    """Ask Linux to kill this process if the process that started it dies (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def new_event_loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    if use_uvloop:
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def worker_main(config: WorkerConfig, conn: Connection, use_uvloop: bool) -> None:
    """Entry point of a client process (``multiprocessing`` target)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    raise_fd_limit()
    if config.nice:
        os.nice(config.nice)
    with (
        contextlib.suppress(TimeoutError, BrokenPipeError, EOFError),
        asyncio.Runner(loop_factory=new_event_loop_factory(use_uvloop)) as runner,
    ):
        runner.run(asyncio.wait_for(serve(config, conn), config.timeout_s))
    conn.close()


async def probe_offset(host: str, port: int, path: str, seconds: float) -> float | None:
    """Median of (receipt time - frame timestamp) for one idle subscriber, in seconds.

    The server's ``timestamp`` is the frame's simulated time, anchored to the wall clock at
    start-up, so even an idle server does not show 0; later latencies are reported net of this.
    """
    window = WindowClock()
    stats = Stats(window)
    window.start = time.time()
    subscriber = await open_subscriber(host, port, path, stats)
    await asyncio.sleep(seconds)
    subscriber.close()
    samples = [
        key * LATENCY_BIN_S
        for key, count in sorted(stats.latency_bins.items())
        for _ in range(count)
    ]
    return statistics.median(samples) if samples else None
