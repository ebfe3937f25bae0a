"""The load clients of ``bench.fanout``: subscribers, the probe, and churning clients.

Every client shares the machine's cores with the server it measures, so it is kept cheap: raw
non-blocking sockets read by event-loop readers with a minimal RFC 6455 frame parser instead
of a WebSocket library, and per text frame only ``seq`` and ``timestamp`` are read
(``bytes.find``, no JSON decoding). Receipt times are the kernel's receive timestamps
(``SO_TIMESTAMPNS``), so a client's own lag stays out of what it measures.

Three kinds of client live here:

- a *worker* process holds many subscribers (``/ws/machines/{id}``, or ``/ws`` subscribed to
  several machines); some of them may stop reading for a while (a stall). Statistics are
  aggregated in the worker; the parent gets one small summary per window.
- the *probe* (run in the parent's event loop): REST reads and fresh WebSocket handshakes at a
  steady rate while the subscribers stream, each timed from just before it is sent to the
  kernel's receipt of its answer.
- a *churn* process: clients that connect, take a frame or two and leave, in a loop, at a
  bounded rate and count, leaving in three ways (close handshake, half-close, reset).

Parent and worker talk over a ``multiprocessing`` pipe: ``worker -> ("ramped", RampResult)``;
``parent -> ("window", start, end, StallPlan | None)`` (wall-clock seconds, announced ahead);
``parent -> ("summary", (first_seq, last_seq) or None)`` after the window, answered by
``worker -> ("summary", WindowSummary)``; ``parent -> ("stop",)``. A churn process sends
``("ready", None)``, gets ``("churn", start, end)``, answers ``("churned", ChurnResult)`` and
waits for ``("stop",)``.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import ctypes
import json
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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

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
# struct tcp_info (linux/tcp.h): tcpi_state is its first byte, tcpi_data_segs_in a u32 at 152.
TCP_INFO_BYTES = 256
TCPI_DATA_SEGS_IN = struct.Struct("@I")
TCPI_DATA_SEGS_IN_OFFSET = 152
TCP_STATES = {1: "established", 7: "reset", 8: "closed by server"}  # CLOSE, CLOSE_WAIT

PROBE_TIMEOUT_S = 10.0
PROBE_MAX_IN_FLIGHT = 32  # per kind; a request due while this many wait is skipped, not queued
CHURN_CLOSE_WAIT_S = 2.0  # how long a leaving churn client waits for the server's close/EOF
CHURN_STYLES = ("close", "half-close", "reset")

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA  # RFC 6455 opcodes this client handles
SEQ_KEY = b'"seq":'
TIMESTAMP_KEY = b'"timestamp":'


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """What one client process does: which connections to open and how fast.

    ``subscriptions[i]``, where given and not empty, are the machines the client on
    ``paths[i]`` (then ``/ws``) subscribes to with one control message. The first
    ``stalled`` clients stop reading during the stall announced with the window.
    """

    host: str
    port: int
    paths: tuple[str, ...]
    concurrency: int
    timeout_s: float
    nice: int = 0
    subscriptions: tuple[tuple[str, ...], ...] = ()
    stalled: int = 0


@dataclass(frozen=True, slots=True)
class StallPlan:
    """When the stalled clients stop reading (wall-clock seconds), and what they do after."""

    begin: float
    end: float
    then: str  # "resume": read again; "close": close the socket


@dataclass(slots=True)
class RampResult:
    connected: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


@dataclass(slots=True)
class StallSummary:
    """What became of one worker's stalled clients."""

    clients: int = 0
    at_stall_end: Counter[str] = field(default_factory=Counter)  # TCP state when the stall ended
    outcomes: Counter[str] = field(default_factory=Counter)  # when the summary was taken
    frames: int = 0  # frames they read in the window
    seq_gaps: int = 0


@dataclass(slots=True)
class WindowSummary:
    """One worker's figures for the measurement window (stalled clients apart)."""

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
    open_clients: int = 0
    data_segments: int = 0  # TCP segments with data received in the window, all clients
    segment_clients: int = 0  # clients whose segments were counted
    cpu_s: float = 0.0
    kernel_timestamps: bool = False
    late_start_s: float = 0.0
    stall: StallSummary | None = None


class WindowClock:
    """The measurement window shared by every connection of a worker (wall-clock seconds)."""

    __slots__ = ("end", "start")

    def __init__(self) -> None:
        self.start = INFINITY
        self.end = INFINITY


class Stats:
    """Counters shared by a group of connections; only frames inside the window count."""

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
        "outcome",
        "per_tick",
        "reading",
        "segments_at_start",
        "segments_in_window",
        "seq_gaps",
        "seq_repeats",
        "seqs",
        "sock",
        "stats",
    )

    def __init__(self, sock: socket.socket, stats: Stats, per_tick: int = 1) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.stats = stats
        self.per_tick = per_tick  # frames of one tick (machines subscribed on /ws)
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
        self.outcome = "open"
        self.reading = False
        self.segments_at_start: int | None = None
        self.segments_in_window: int | None = None

    def start(self, leftover: bytes) -> None:
        """Start reading; ``leftover`` is what arrived with the handshake response."""
        self.resume()
        if leftover:
            self._frames(leftover, time.time())

    def pause(self) -> None:
        """Stop reading (the socket stays open): the kernel buffers fill, then the server's."""
        if self.reading and self.is_open:
            self.loop.remove_reader(self.fd)
        self.reading = False

    def resume(self) -> None:
        if not self.reading and self.is_open:
            self.loop.add_reader(self.fd, self.on_readable)
            self.reading = True

    def on_readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(RECEIVE_BYTES, ANCILLARY_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._lose("reset" if isinstance(error, ConnectionResetError) else "error")
            return
        if not data:
            self._lose("eof")
            return
        now = kernel_time(ancillary) if ancillary else time.time()
        self.last_arrival = now
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        self._frames(data, now)

    def _lose(self, outcome: str) -> None:
        self.lost = True
        self.outcome = outcome
        self._shut()

    def _frames(self, data: bytes, now: float) -> None:
        """Handle every complete frame in ``data``; keep the incomplete tail for later.

        A read carries the arrival time of its last segment, so only the last text frame of
        ``data`` is timed; earlier ones (a backlog, or the other machines of one write) are
        counted but not timed.
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
            elif seq < last or (seq == last and self.per_tick == 1):
                self.seq_repeats += 1
        self.last_seq = seq

    def _closed(self, payload: bytes) -> None:
        self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        self.outcome = f"close {self.close_code}"
        self._send(OP_CLOSE, payload[:2])
        self._shut()

    def _send(self, opcode: int, payload: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(client_frame(opcode, payload))

    def _shut(self) -> None:
        if self.is_open:
            if self.reading:
                self.loop.remove_reader(self.fd)
                self.reading = False
            self.sock.close()

    @property
    def is_open(self) -> bool:
        return self.sock.fileno() >= 0

    def tcp_state(self) -> str:
        """The connection's TCP state as this end sees it (the server's FIN or RST shows)."""
        if not self.is_open:
            return self.outcome
        info = _tcp_info(self.sock)
        return "unknown" if info is None else TCP_STATES.get(info[0], f"state {info[0]}")

    def count_segments(self, *, at_start: bool) -> None:
        """Data segments received, at the window's start and end (one server write is one)."""
        info = _tcp_info(self.sock) if self.is_open else None
        if info is None or len(info) < TCPI_DATA_SEGS_IN_OFFSET + TCPI_DATA_SEGS_IN.size:
            return
        (segments,) = TCPI_DATA_SEGS_IN.unpack_from(info, TCPI_DATA_SEGS_IN_OFFSET)
        if at_start:
            self.segments_at_start = segments
        elif self.segments_at_start is not None:
            self.segments_in_window = segments - self.segments_at_start

    def close(self) -> None:
        """Send a normal close (1000) and drop the socket."""
        if self.is_open:
            self._send(OP_CLOSE, (1000).to_bytes(2, "big"))
            self._shut()
            if self.outcome == "open":
                self.outcome = "closed by client"


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked client frame (RFC 6455 5.2; payloads here stay under 64 KiB)."""
    size = len(payload)
    mask = os.urandom(4)
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    else:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    return head + mask + masked


def _tcp_info(sock: socket.socket) -> bytes | None:
    if sys.platform != "linux":
        return None
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)
    except OSError:
        return None


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


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The complete server frames in ``data`` as (opcode, payload), and the bytes they took."""
    frames: list[tuple[int, bytes]] = []
    pos, size = 0, len(data)
    while size - pos >= 2:
        length, head = data[pos + 1] & 0x7F, 2
        if length == 126:
            if size - pos < 4:
                break
            length, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            if size - pos < 10:
                break
            length, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        if pos + head + length > size:
            break
        frames.append((data[pos] & 0x0F, data[pos + head : pos + head + length]))
        pos += head + length
    return frames, pos


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


def new_socket() -> tuple[socket.socket, bool]:
    """A non-blocking TCP socket with kernel receive timestamps where the platform has them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock, enable_kernel_timestamps(sock)


async def wait_readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def recv_timed(sock: socket.socket) -> tuple[bytes, float]:
    """The next bytes of ``sock`` and the kernel's receive time of them (b"" at EOF)."""
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(RECEIVE_BYTES, ANCILLARY_BYTES)
        except (BlockingIOError, InterruptedError):
            await wait_readable(sock)
            continue
        return data, kernel_time(ancillary) if ancillary else time.time()


def upgrade_request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def upgrade(sock: socket.socket, host: str, port: int, path: str) -> tuple[bytes, float]:
    """Connect and upgrade to WebSocket; return what arrived after the response head and the
    kernel's receipt time of the response."""
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, port))
    await loop.sock_sendall(sock, upgrade_request(host, port, path))
    head = b""
    while (end := head.find(b"\r\n\r\n")) < 0:
        if len(head) > MAX_HANDSHAKE_BYTES:
            raise ConnectionError("oversized handshake response")
        chunk, arrived = await recv_timed(sock)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head[: head.find(b"\r\n")].decode(errors="replace"))
    return head[end + 4 :], arrived


def subscribe_message(machines: tuple[str, ...]) -> bytes:
    return client_frame(OP_TEXT, json.dumps({"op": "subscribe", "machines": machines}).encode())


async def open_subscriber(
    host: str, port: int, path: str, stats: Stats, machines: tuple[str, ...] = ()
) -> Subscriber:
    """Connect, complete the upgrade (and subscribe on ``/ws``), within ``HANDSHAKE_TIMEOUT_S``."""
    sock, stats.kernel_timestamps = new_socket()
    try:
        leftover, _ = await asyncio.wait_for(upgrade(sock, host, port, path), HANDSHAKE_TIMEOUT_S)
        if machines:
            await asyncio.get_running_loop().sock_sendall(sock, subscribe_message(machines))
    except BaseException:
        sock.close()
        raise
    subscriber = Subscriber(sock, stats, per_tick=max(1, len(machines)))
    subscriber.start(leftover)
    return subscriber


async def ramp(
    config: WorkerConfig, stats: Stats, stalled_stats: Stats
) -> tuple[list[Subscriber], list[Subscriber], RampResult]:
    """Open every connection of ``config``, at most ``concurrency`` handshakes at a time.

    Returns the steady subscribers, the ones that will stall, and the ramp's figures.
    """
    result = RampResult()
    steady: list[Subscriber] = []
    stalled: list[Subscriber] = []
    gate = asyncio.Semaphore(config.concurrency)
    began = time.monotonic()
    subscriptions = config.subscriptions or ((),) * len(config.paths)

    async def one(index: int, path: str, machines: tuple[str, ...]) -> None:
        group, group_stats = (stalled, stalled_stats) if index < config.stalled else (steady, stats)
        async with gate:
            try:
                group.append(
                    await open_subscriber(config.host, config.port, path, group_stats, machines)
                )
                result.connected += 1
            except (OSError, TimeoutError) as error:
                result.failed += 1
                result.failures[_failure_reason(error)] += 1

    await asyncio.gather(
        *(
            one(index, path, machines)
            for index, (path, machines) in enumerate(zip(config.paths, subscriptions, strict=True))
        )
    )
    result.seconds = time.monotonic() - began
    return steady, stalled, result


def _failure_reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    return str(error) or type(error).__name__


def _per_client_counts(subscribers: list[Subscriber], seqs: tuple[int, int] | None) -> list[int]:
    """Frames each client got of the window: by seq in ``(first, last]``, else by arrival.

    Counting the frames of the ticks the server produced in the window is exact however late
    a client reads them; without seqs (the baseline) frames are counted by arrival time.
    """
    if seqs is None:
        return [subscriber.count for subscriber in subscribers]
    first, last = seqs
    return [
        bisect.bisect_right(sub.seqs, last) - bisect.bisect_right(sub.seqs, first)
        for sub in subscribers
    ]


def summarise(
    subscribers: list[Subscriber], stats: Stats, cpu_s: float, seqs: tuple[int, int] | None
) -> WindowSummary:
    """The worker's figures for its steady subscribers."""
    per_client = _per_client_counts(subscribers, seqs)
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
        if subscriber.is_open:
            summary.open_clients += 1
        if subscriber.segments_in_window is not None:
            summary.data_segments += subscriber.segments_in_window
            summary.segment_clients += 1
    return summary


def summarise_stalled(
    stalled: list[Subscriber], at_stall_end: Counter[str], seqs: tuple[int, int] | None
) -> StallSummary:
    return StallSummary(
        clients=len(stalled),
        at_stall_end=at_stall_end,
        outcomes=Counter(_outcome(subscriber) for subscriber in stalled),
        frames=sum(_per_client_counts(stalled, seqs)),
        seq_gaps=sum(subscriber.seq_gaps for subscriber in stalled),
    )


def _outcome(subscriber: Subscriber) -> str:
    """How a stalled client ended: as it saw it, or, while it still reads a backlog the
    server has closed behind, as TCP says ("closed by server", "reset")."""
    if subscriber.outcome != "open":
        return subscriber.outcome
    state = subscriber.tcp_state()
    return "open" if state == "established" else state


async def client_cpu(start: float, end: float) -> float:
    """This process's CPU seconds between two wall-clock times."""
    await asyncio.sleep(max(start - time.time(), 0.0))
    began = time.process_time()
    await asyncio.sleep(max(end - time.time(), 0.0))
    return time.process_time() - began


async def count_segments(subscribers: list[Subscriber], start: float, end: float) -> None:
    """Sample every subscriber's received data segments at the window's start and end."""
    await asyncio.sleep(max(start - time.time(), 0.0))
    for subscriber in subscribers:
        subscriber.count_segments(at_start=True)
    await asyncio.sleep(max(end - time.time(), 0.0))
    for subscriber in subscribers:
        subscriber.count_segments(at_start=False)


async def stall(stalled: list[Subscriber], plan: StallPlan) -> Counter[str]:
    """Stop reading on ``stalled`` for the plan's time; then resume or close them.

    Returns their TCP states at the end of the stall: still established, closed by the
    server (its FIN arrived behind the unread data), or reset.
    """
    await asyncio.sleep(max(plan.begin - time.time(), 0.0))
    for subscriber in stalled:
        subscriber.pause()
    await asyncio.sleep(max(plan.end - time.time(), 0.0))
    states = Counter(subscriber.tcp_state() for subscriber in stalled)
    for subscriber in stalled:
        if plan.then == "close":
            subscriber.close()
        else:
            subscriber.resume()
    return states


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


async def receive(conn: Connection, timeout_s: float) -> tuple[Any, ...]:
    """The parent's next message, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    ready = await loop.run_in_executor(None, conn.poll, timeout_s)
    if not ready:
        raise TimeoutError("no word from the parent process")
    message = conn.recv()
    assert isinstance(message, tuple)
    return message


async def serve(config: WorkerConfig, conn: Connection) -> None:
    """Ramp, report; on "window" start the clock (and the stall); on "summary" drain and
    report; on "stop" end."""
    window = WindowClock()
    stats, stalled_stats = Stats(window), Stats(window)
    steady, stalled, ramped = await ramp(config, stats, stalled_stats)
    conn.send(("ramped", ramped))
    cpu: asyncio.Task[float] | None = None
    stalling: asyncio.Task[Counter[str]] | None = None
    background: set[asyncio.Task[None]] = set()
    late_s = 0.0
    try:
        while True:
            message = await receive(conn, config.timeout_s)
            if message[0] == "window":
                _, start, end, plan = message
                window.start, window.end = float(start), float(end)
                late_s = max(time.time() - window.start, 0.0)  # frames before now go uncounted
                cpu = asyncio.create_task(client_cpu(window.start, window.end))
                background.add(asyncio.create_task(count_segments(steady, start, end)))
                if plan is not None and stalled:
                    stalling = asyncio.create_task(stall(stalled, plan))
            elif message[0] == "summary" and cpu is not None:
                seqs = message[1]
                assert seqs is None or isinstance(seqs, tuple)
                await drain(steady, window.end, None if seqs is None else seqs[1])
                await asyncio.gather(*background)
                summary = summarise(steady, stats, await cpu, seqs)
                summary.late_start_s = late_s
                if stalled:
                    states = await stalling if stalling is not None else Counter[str]()
                    summary.stall = summarise_stalled(stalled, states, seqs)
                conn.send(("summary", summary))
            elif message[0] == "stop":
                return
    finally:
        for task in (cpu, stalling, *background):
            if task is not None:
                task.cancel()
        for subscriber in (*steady, *stalled):
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


def _run_child(
    main: Coroutine[Any, Any, None], conn: Connection, nice: int, timeout_s: float, uvloop: bool
) -> None:
    """Common set-up of a client process: die with the parent, ignore ^C, fds, niceness."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    raise_fd_limit()
    if nice:
        os.nice(nice)
    with (
        contextlib.suppress(TimeoutError, BrokenPipeError, EOFError),
        asyncio.Runner(loop_factory=new_event_loop_factory(uvloop)) as runner,
    ):
        runner.run(asyncio.wait_for(main, timeout_s))
    conn.close()


def worker_main(config: WorkerConfig, conn: Connection, use_uvloop: bool) -> None:
    """Entry point of a subscriber process (``multiprocessing`` target)."""
    _run_child(serve(config, conn), conn, config.nice, config.timeout_s, use_uvloop)


async def idle_latency(host: str, port: int, path: str, seconds: float) -> float | None:
    """Median of (receipt time - frame timestamp) for one subscriber of the idle server.

    Our timestamps are the wall time each tick was due, so this is what one tick costs before
    anyone waits behind a fan-out: the timer's lateness, the step, encoding and one send.
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


# --- the probe: REST reads and new handshakes while the subscribers stream ------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeConfig:
    host: str
    port: int
    rest_paths: tuple[str, ...]  # cycled
    ws_paths: tuple[str, ...]  # cycled
    rest_hz: float
    ws_hz: float


@dataclass(slots=True)
class ProbeResult:
    rest_s: list[float] = field(default_factory=list)
    rest_failures: Counter[str] = field(default_factory=Counter)
    handshake_s: list[float] = field(default_factory=list)  # connect -> the 101's receipt
    first_frame_s: list[float] = field(default_factory=list)  # connect -> the first frame's
    ws_failures: Counter[str] = field(default_factory=Counter)
    skipped: int = 0  # due while PROBE_MAX_IN_FLIGHT were waiting
    cpu_s: float = 0.0


class HttpPool:
    """Keep-alive HTTP/1.1 connections on raw sockets, for timed GETs."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[socket.socket] = []

    async def get(self, path: str) -> float:
        """GET ``path``; seconds from just before the request is sent to the kernel's receipt
        of the last byte of a 200 answer."""
        loop = asyncio.get_running_loop()
        sock = self.idle.pop() if self.idle else None
        began = time.time()
        if sock is None:
            sock, _ = new_socket()
            try:
                await loop.sock_connect(sock, (self.host, self.port))
            except BaseException:
                sock.close()
                raise
        try:
            keep, arrived = await self._exchange(sock, path)
        except BaseException:
            sock.close()
            raise
        if keep:
            self.idle.append(sock)
        else:
            sock.close()
        return arrived - began

    async def _exchange(self, sock: socket.socket, path: str) -> tuple[bool, float]:
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        await asyncio.get_running_loop().sock_sendall(sock, request)
        data = b""
        while True:
            chunk, arrived = await recv_timed(sock)
            if not chunk:
                raise ConnectionError("closed before the answer")
            data += chunk
            end = data.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = data[:end].decode("latin-1").lower()
            length = _header(head, "content-length")
            if length is None:
                raise ConnectionError("answer without content-length")
            if len(data) >= end + 4 + int(length):
                break
        status = data[9:12].decode("latin-1")
        if status != "200":
            raise ConnectionError(f"HTTP {status}")
        return _header(head, "connection") != "close", arrived

    def close(self) -> None:
        for sock in self.idle:
            sock.close()
        self.idle.clear()


def _header(head: str, name: str) -> str | None:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


async def timed_handshake(host: str, port: int, path: str) -> tuple[float, float]:
    """Open a WebSocket, take its first text frame and close it.

    Returns seconds from just before ``connect`` to the kernel's receipt of the 101 answer,
    and to that of the first frame (the same read when they come together).
    """
    sock, _ = new_socket()
    try:
        began = time.time()
        leftover, upgraded = await upgrade(sock, host, port, path)
        frames, _ = parse_frames(leftover)
        first = upgraded
        while not any(opcode == OP_TEXT for opcode, _ in frames):
            chunk, first = await recv_timed(sock)
            if not chunk:
                raise ConnectionError("closed before the first frame")
            leftover += chunk
            frames, _ = parse_frames(leftover)
        with contextlib.suppress(OSError):
            sock.send(client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        return upgraded - began, first - began
    finally:
        sock.close()


async def run_probe(config: ProbeConfig, start: float, end: float) -> ProbeResult:
    """REST reads at ``rest_hz`` and handshakes at ``ws_hz`` from ``start`` to ``end``.

    Open loop: each is started on its schedule whatever the ones before it are doing (at most
    ``PROBE_MAX_IN_FLIGHT`` of a kind at once, the rest skipped and counted), so a slow server
    shows as slow answers, not as fewer questions.
    """
    result = ProbeResult()
    pool = HttpPool(config.host, config.port)
    tasks: set[asyncio.Task[None]] = set()
    in_flight = Counter[str]()

    async def rest(index: int) -> None:
        path = config.rest_paths[index % len(config.rest_paths)]
        try:
            result.rest_s.append(await asyncio.wait_for(pool.get(path), PROBE_TIMEOUT_S))
        except (OSError, TimeoutError) as error:
            result.rest_failures[_failure_reason(error)] += 1

    async def handshake(index: int) -> None:
        path = config.ws_paths[index % len(config.ws_paths)]
        try:
            upgraded, first = await asyncio.wait_for(
                timed_handshake(config.host, config.port, path), PROBE_TIMEOUT_S
            )
        except (OSError, TimeoutError) as error:
            result.ws_failures[_failure_reason(error)] += 1
            return
        result.handshake_s.append(upgraded)
        result.first_frame_s.append(first)

    def launcher(
        kind: str, job: Callable[[int], Coroutine[Any, Any, None]]
    ) -> Callable[[int], None]:
        def launch(index: int) -> None:
            if in_flight[kind] >= PROBE_MAX_IN_FLIGHT:
                result.skipped += 1
                return
            in_flight[kind] += 1
            task = asyncio.create_task(job(index))
            tasks.add(task)

            def done(finished: asyncio.Task[None]) -> None:
                tasks.discard(finished)
                in_flight[kind] -= 1

            task.add_done_callback(done)

        return launch

    began = time.process_time()
    try:
        await asyncio.gather(
            paced(start, end, config.rest_hz, launcher("rest", rest)),
            paced(start, end, config.ws_hz, launcher("ws", handshake)),
        )
        if tasks:
            await asyncio.wait(set(tasks), timeout=PROBE_TIMEOUT_S + 1)
    finally:
        for task in tasks:
            task.cancel()
        pool.close()
    result.cpu_s = time.process_time() - began
    return result


async def paced(start: float, end: float, hz: float, launch: Callable[[int], None]) -> int:
    """Call ``launch(k)`` at ``start + k / hz`` (wall clock) until ``end``; return the count."""
    index = 0
    if hz <= 0:
        return index
    while (due := start + index / hz) < end:
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        launch(index)
        index += 1
    return index


# --- churn: clients that connect, take a frame or two and leave, in a loop -----------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChurnConfig:
    host: str
    port: int
    paths: tuple[str, ...]  # cycled
    subscriptions: tuple[tuple[str, ...], ...]  # parallel to paths; () on the per-machine route
    rate_hz: float
    max_count: int
    concurrency: int
    timeout_s: float
    nice: int = 0


@dataclass(slots=True)
class ChurnResult:
    attempted: int = 0
    completed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    styles: Counter[str] = field(default_factory=Counter)  # completed, by how they left
    frames: int = 0
    handshake_s: list[float] = field(default_factory=list)
    behind: int = 0  # starts that waited for a free slot (the concurrency bound)
    seconds: float = 0.0
    cpu_s: float = 0.0


async def churn_one(config: ChurnConfig, index: int, result: ChurnResult) -> None:
    """One short-lived client: upgrade, take 1 or 2 data frames, leave in one of three ways.

    "close": close frame, then wait for the server's; "half-close": FIN without a close frame,
    then wait for the server's EOF; "reset": an RST (SO_LINGER 0).
    """
    loop = asyncio.get_running_loop()
    path = config.paths[index % len(config.paths)]
    machines = config.subscriptions[index % len(config.subscriptions)]
    wanted, style = 1 + index % 2, CHURN_STYLES[index % len(CHURN_STYLES)]
    sock, _ = new_socket()
    try:
        began = time.time()
        data, upgraded = await upgrade(sock, config.host, config.port, path)
        result.handshake_s.append(upgraded - began)
        if machines:
            await loop.sock_sendall(sock, subscribe_message(machines))
        frames_seen = 0
        while True:
            frames, used = parse_frames(data)
            data = data[used:]
            frames_seen += sum(
                1 for opcode, payload in frames if opcode == OP_TEXT and SEQ_KEY in payload
            )
            if frames_seen >= wanted:
                break
            chunk, _ = await recv_timed(sock)
            if not chunk:
                raise ConnectionError("closed before its frames")
            data += chunk
        result.frames += frames_seen
        if style == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            if style == "close":
                await loop.sock_sendall(sock, client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
            else:
                sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(_until_eof(sock), CHURN_CLOSE_WAIT_S)
        result.styles[style] += 1
        result.completed += 1
    finally:
        sock.close()


async def _until_eof(sock: socket.socket) -> None:
    while (await recv_timed(sock))[0]:
        pass


async def churn(config: ChurnConfig, start: float, end: float) -> ChurnResult:
    """Start clients at ``rate_hz`` from ``start`` until ``end`` or ``max_count``, at most
    ``concurrency`` at once; then wait for the last ones (each bounded in time)."""
    result = ChurnResult()
    gate = asyncio.Semaphore(config.concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def one(index: int) -> None:
        try:
            await asyncio.wait_for(churn_one(config, index, result), HANDSHAKE_TIMEOUT_S)
        except (OSError, TimeoutError) as error:
            result.failures[_failure_reason(error)] += 1
        finally:
            gate.release()

    await asyncio.sleep(max(start - time.time(), 0.0))
    began, cpu_began = time.monotonic(), time.process_time()
    while result.attempted < config.max_count:
        due = start + result.attempted / config.rate_hz
        if due >= end:
            break
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if gate.locked():
            result.behind += 1
        await gate.acquire()
        task = asyncio.create_task(one(result.attempted))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        result.attempted += 1
    if tasks:
        await asyncio.wait(set(tasks), timeout=HANDSHAKE_TIMEOUT_S + 1)
    result.seconds = time.monotonic() - began
    result.cpu_s = time.process_time() - cpu_began
    return result


async def serve_churn(config: ChurnConfig, conn: Connection) -> None:
    conn.send(("ready", None))
    message = await receive(conn, config.timeout_s)
    if message[0] != "churn":
        return
    _, start, end = message
    conn.send(("churned", await churn(config, float(start), float(end))))
    await receive(conn, config.timeout_s)  # ("stop",)


def churn_main(config: ChurnConfig, conn: Connection, use_uvloop: bool) -> None:
    """Entry point of a churn process (``multiprocessing`` target)."""
    _run_child(serve_churn(config, conn), conn, config.nice, config.timeout_s, use_uvloop)
