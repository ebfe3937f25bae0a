"""WebSocket fan-out under load: N subscribers of the real server, started as its own process.

Run: ``python -m bench.fanout`` (``--subscribers 1000,5000,7000`` for several sizes, one server
each; ``--target both`` to run the original design, ``shared/baseline/seed_fastapi.py``, at each
size too and print the ratios). Per (target, size) it starts the server on a free loopback port,
spreads the subscribers round-robin over the three machines and over client processes, ramps
them up a bounded number at a time, lets them settle, then receives for a fixed window and
prints: connections made and failed, delivered messages/s against the ideal (N x tick rate),
per-client rate, latency from each frame's ``timestamp`` to its receipt, ``seq`` gaps, the
server's CPU time per delivered message, and its memory before and with the clients.

The client processes share the machine's cores with the server. So that they do not crowd it
out they run at nice 19 (``--client-nice``) and take receipt times from the kernel's socket
timestamps, not from their own clock, so their own lag stays out of the latencies; their CPU
share, the server's wait for a core and the rest of the machine's load are printed beside the
figures.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import dataclasses
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import numpy as np

from bench.fanout_client import (
    LATENCY_BIN_S,
    RampResult,
    WindowSummary,
    WorkerConfig,
    die_with_parent,
    probe_offset,
    raise_fd_limit,
    worker_main,
)

HOST = "127.0.0.1"  # every socket of the benchmark stays on loopback
MACHINES = ("robot_01", "cnc_01", "conveyor_01")
REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO.parent / "shared" / "baseline" / "seed_fastapi.py"
BASELINE_MODULES = ("fastapi", "uvicorn", "websockets")
BASELINE_TICK_HZ = 10.0  # the original design sleeps 0.1 s per connection, whatever --tick-hz
MAX_PER_PROCESS = 1_500
FD_MARGIN = 64  # descriptors a process needs besides its sockets
START_LIMIT_S = 30.0
STOP_LIMIT_S = 10.0
PROBE_S = 1.5
PIPE_SLACK_S = 15.0
WINDOW_LEAD_S = 1.0  # the least time between announcing the window and its start
BUSY_BACKGROUND_PCT = 20.0  # of one core: more than this before a run, and figures are suspect


class RunTimeoutError(Exception):
    """A run went over its hard time limit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    sizes: tuple[int, ...]
    targets: tuple[str, ...]
    window_s: float
    tick_hz: float
    settle_s: float
    client_procs: int | None
    ramp_concurrency: int
    run_timeout_s: float | None
    server_args: tuple[str, ...]
    client_uvloop: bool
    client_nice: int
    json_path: Path | None


@dataclass(frozen=True, slots=True)
class Target:
    """How to start one server under test and how to tell that it is serving."""

    name: str
    ready_path: str
    tick_hz: float
    simulated_timestamps: bool  # stamped with simulated time (ours), not at generation

    def command(self, port: int, options: Options) -> list[str]:
        if self.name == "baseline":
            return [sys.executable, str(BASELINE), "--host", HOST, "--port", str(port)]
        return [
            *(sys.executable, "-m", "server", "--host", HOST, "--port", str(port)),
            *("--seed", "1", "--tick-hz", f"{options.tick_hz:g}", *options.server_args),
        ]


@dataclass(slots=True)
class Deadline:
    """The hard time limit of one run."""

    at: float

    def left(self) -> float:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise RunTimeoutError("the run went over its time limit")
        return remaining


@dataclass(slots=True)
class Totals:
    """Every worker's figures merged."""

    ramp: RampResult = field(default_factory=RampResult)
    window: WindowSummary = field(default_factory=WindowSummary)


# --- child processes -----------------------------------------------------------------------

_children: list[subprocess.Popen[bytes] | BaseProcess] = []


def _stop_children() -> None:
    """Last resort (atexit): kill every child still running, each by its own pid."""
    for child in _children:
        if isinstance(child, subprocess.Popen):
            if child.poll() is None:
                child.kill()
        elif child.is_alive():
            child.kill()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def server_process(target: Target, options: Options, log_path: Path) -> Iterator[tuple[int, int]]:
    """Start the target on a free loopback port; yield (pid, port); stop it by its pid."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            target.command(port, options),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    _children.append(process)
    try:
        yield process.pid, port
    finally:
        stop_process(process)
        _children.remove(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server's graceful stop), then SIGKILL if it has not exited in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str, timeout_s: float) -> bytes:
    """GET on loopback, never through a proxy from the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{HOST}:{port}{path}", timeout=timeout_s) as response:
        return bytes(response.read())


def wait_until_serving(pid: int, port: int, path: str, deadline: Deadline) -> None:
    limit = time.monotonic() + START_LIMIT_S
    while time.monotonic() < limit:
        deadline.left()
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            raise RuntimeError("the server exited during start-up")
        try:
            http_get(port, path, 1.0)
            return
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    raise RuntimeError(f"the server was not serving after {START_LIMIT_S:g} s")


def _is_zombie(pid: int) -> bool:
    return _proc_stat(pid)[0] == "Z"


def _proc_stat(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` fields from the state (field 3) on."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (every thread), from ``/proc/<pid>/stat``."""
    fields = _proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_wait_s(pid: int) -> float:
    """Seconds the threads of ``pid`` spent runnable but waiting for a CPU (schedstat)."""
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            total_ns += int((task / "schedstat").read_text().split()[1])
    return total_ns / 1e9


def machine_cpu_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores together, from ``/proc/stat``."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_seq(port: int) -> int | None:
    """The tick count our server reports at ``GET /`` (``None`` where it has none)."""
    try:
        body = json.loads(http_get(port, "/", 5.0))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    seq = body.get("seq") if isinstance(body, dict) else None
    return seq if isinstance(seq, int) else None


# --- client processes ----------------------------------------------------------------------


class ClientPool:
    """Client processes, each opening its share of the subscribers and reporting summaries."""

    def __init__(self, port: int, size: int, procs: int, options: Options) -> None:
        context = multiprocessing.get_context("spawn")
        self.links: list[Connection] = []
        self.processes: list[BaseProcess] = []
        concurrency = max(1, options.ramp_concurrency // procs)
        for worker, paths in enumerate(spread(size, procs)):
            parent_end, child_end = context.Pipe()
            config = WorkerConfig(
                host=HOST,
                port=port,
                paths=paths,
                concurrency=concurrency,
                timeout_s=run_timeout(size, options),
                nice=options.client_nice,
            )
            process = context.Process(
                target=worker_main,
                args=(config, child_end, options.client_uvloop),
                name=f"fanout-client-{worker}",
                daemon=True,
            )
            self.links.append(parent_end)
            self.processes.append(process)
        for started in self.processes:
            started.start()
            _children.append(started)

    def gather(self, kind: str, deadline: Deadline) -> list[Any]:
        """One ``kind`` message from every worker, within the deadline."""
        answers = []
        for link in self.links:
            if not link.poll(deadline.left()):
                raise RunTimeoutError(f"a client process sent no {kind!r} in time")
            message = link.recv()
            if message[0] != kind:
                raise RuntimeError(f"client process sent {message[0]!r}, expected {kind!r}")
            answers.append(message[1])
        return answers

    def send(self, *message: object) -> None:
        for link in self.links:
            link.send(message)

    def stop(self) -> None:
        """Ask each worker to close its sockets; kill any that does not exit in time."""
        for link in self.links:
            with contextlib.suppress(OSError):
                link.send(("stop",))
        for process in self.processes:
            process.join(STOP_LIMIT_S)
            if process.is_alive():
                process.kill()
                process.join()
            _children.remove(process)
        for link in self.links:
            link.close()


def spread(size: int, procs: int) -> list[tuple[str, ...]]:
    """Paths of ``size`` subscribers, round-robin over the machines, in ``procs`` even blocks."""
    paths = [f"/ws/machines/{MACHINES[index % len(MACHINES)]}" for index in range(size)]
    bounds = [size * worker // procs for worker in range(procs + 1)]
    return [tuple(paths[bounds[worker] : bounds[worker + 1]]) for worker in range(procs)]


def client_procs_for(size: int, options: Options) -> int:
    if options.client_procs is not None:
        return max(1, min(options.client_procs, size))
    return max(1, math.ceil(size / MAX_PER_PROCESS))


def run_timeout(size: int, options: Options) -> float:
    """Hard limit of one run: start-up, a ramp at >= 50 connections/s, settle, window, stop."""
    if options.run_timeout_s is not None:
        return options.run_timeout_s
    return 60.0 + size / 50 + options.settle_s + options.window_s


def fd_warnings(size: int, procs: int) -> list[str]:
    soft, _ = raise_fd_limit()
    warnings = []
    if size + FD_MARGIN > soft:
        warnings.append(f"the server needs ~{size + FD_MARGIN} fds, the limit is {soft}")
    per_process = math.ceil(size / procs) + FD_MARGIN
    if per_process > soft:
        warnings.append(f"a client process needs ~{per_process} fds, the limit is {soft}")
    return warnings


# --- one run -------------------------------------------------------------------------------


def run_one(target: Target, size: int, options: Options, log_dir: Path) -> dict[str, Any]:
    """Measure ``size`` subscribers of ``target``; the row of figures, or the error."""
    procs = client_procs_for(size, options)
    limit_s = run_timeout(size, options)
    row: dict[str, Any] = {"target": target.name, "subscribers": size, "client_procs": procs}
    row["warnings"] = fd_warnings(size, procs)
    for warning in row["warnings"]:
        print(f"  warning: {warning}", flush=True)
    log_path = log_dir / f"{target.name}-{size}.log"
    row["background_cpu_pct"] = background_cpu_pct()
    if row["background_cpu_pct"] > BUSY_BACKGROUND_PCT:
        print(
            f"  warning: the machine is already busy ({row['background_cpu_pct']:.0f}% of a core)",
            flush=True,
        )
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s + 2 * STOP_LIMIT_S + PIPE_SLACK_S)
    try:
        row.update(
            _measure(target, size, procs, options, Deadline(time.monotonic() + limit_s), log_path)
        )
    except (RunTimeoutError, RuntimeError, OSError) as error:
        row["error"] = f"{type(error).__name__}: {error}"
        print(f"  failed: {row['error']} (server log: {log_path})", flush=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    row["server_log"] = log_summary(log_path)
    return row


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise RunTimeoutError("hard time limit reached")


def _measure(
    target: Target, size: int, procs: int, options: Options, deadline: Deadline, log_path: Path
) -> dict[str, Any]:
    with server_process(target, options, log_path) as (pid, port):
        wait_until_serving(pid, port, target.ready_path, deadline)
        time.sleep(1.0)
        figures: dict[str, Any] = {"rss_idle_mb": rss_mb(pid)}
        path = f"/ws/machines/{MACHINES[0]}"
        idle = asyncio.run(asyncio.wait_for(probe_offset(HOST, port, path, PROBE_S), 10.0))
        figures["latency_idle_ms"] = None if idle is None else idle * 1e3
        offset = idle if target.simulated_timestamps else None
        totals = Totals()
        ramp_began, seq_before = time.monotonic(), server_seq(port)
        pool = ClientPool(port, size, procs, options)
        try:
            for ramp in pool.gather("ramped", deadline):
                merge_ramp(totals.ramp, ramp)
            print(f"  {totals.ramp.connected} connected in {totals.ramp.seconds:.1f} s", flush=True)
            figures["ramp_lost_ticks"] = lost_ticks(
                seq_before, server_seq(port), time.monotonic() - ramp_began, target.tick_hz
            )
            # Announced now, so that every client knows it well before it starts.
            start = time.time() + max(options.settle_s, WINDOW_LEAD_S)
            pool.send("window", start, start + options.window_s)
            figures |= _window(pool, pid, port, start, options, deadline, totals)
        finally:
            pool.stop()
    return figures | describe(totals, size, target.tick_hz, options.window_s, offset)


def lost_ticks(
    seq_before: int | None, seq_after: int | None, elapsed_s: float, tick_hz: float
) -> int | None:
    """Ticks the server skipped in ``elapsed_s``: a late tick is skipped, never made up."""
    if seq_before is None or seq_after is None:
        return None
    return max(0, round(elapsed_s * tick_hz) - (seq_after - seq_before))


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU counters at one instant: the server's, and the whole machine's."""

    server_cpu_s: float
    server_wait_s: float
    machine: tuple[int, int]

    @classmethod
    def take(cls, pid: int) -> CpuSample:
        return cls(cpu_seconds(pid), run_queue_wait_s(pid), machine_cpu_jiffies())


def machine_busy_pct(began: tuple[int, int], ended: tuple[int, int]) -> float:
    """All cores' busy time between two ``machine_cpu_jiffies`` samples; 100 = one core."""
    busy, total = ended[0] - began[0], ended[1] - began[1]
    return 100.0 * busy * (os.cpu_count() or 1) / total if total else 0.0


def background_cpu_pct(seconds: float = 1.0) -> float:
    """How busy the machine is before a run starts (other work on it skews every figure)."""
    began = machine_cpu_jiffies()
    time.sleep(seconds)
    return machine_busy_pct(began, machine_cpu_jiffies())


def _window(
    pool: ClientPool,
    pid: int,
    port: int,
    start: float,
    options: Options,
    deadline: Deadline,
    totals: Totals,
) -> dict[str, Any]:
    """Measure the window from ``start``; server CPU, ticks and memory sampled at both ends."""
    end = start + options.window_s
    time.sleep(min(max(start - time.time(), 0.0), deadline.left()))
    began = CpuSample.take(pid)
    seq_began = server_seq(port)
    time.sleep(max(end - time.time(), 0.0))
    ended = CpuSample.take(pid)
    seq_ended = server_seq(port)
    rss_loaded = rss_mb(pid)
    seqs = None if seq_began is None or seq_ended is None else (seq_began, seq_ended)
    pool.send("summary", seqs)
    for summary in pool.gather("summary", deadline):
        merge_window(totals.window, summary)
    ticks = None if seqs is None else seqs[1] - seqs[0]
    window_s = options.window_s
    return {
        "server_cpu_s": ended.server_cpu_s - began.server_cpu_s,
        "server_run_queue_wait_pct": 100.0 * (ended.server_wait_s - began.server_wait_s) / window_s,
        "machine_busy_pct": machine_busy_pct(began.machine, ended.machine),
        "rss_loaded_mb": rss_loaded,
        "ticks_per_s": None if ticks is None else ticks / window_s,
    }


def merge_ramp(total: RampResult, part: RampResult) -> None:
    total.connected += part.connected
    total.failed += part.failed
    total.failures.update(part.failures)
    total.seconds = max(total.seconds, part.seconds)


def merge_window(total: WindowSummary, part: WindowSummary) -> None:
    total.messages += part.messages
    total.per_client.extend(part.per_client)
    total.latency_bins.update(part.latency_bins)
    total.latency_max_s = max(total.latency_max_s, part.latency_max_s)
    total.latency_min_s = min(total.latency_min_s, part.latency_min_s)
    total.receipt_seqs.extend(part.receipt_seqs)
    total.receipt_times.extend(part.receipt_times)
    total.seq_gaps += part.seq_gaps
    total.seq_repeats += part.seq_repeats
    total.closed_by_server.update(part.closed_by_server)
    total.lost += part.lost
    total.cpu_s += part.cpu_s
    total.kernel_timestamps = total.kernel_timestamps or part.kernel_timestamps
    total.late_start_s = max(total.late_start_s, part.late_start_s)


def describe(
    totals: Totals, size: int, tick_hz: float, window_s: float, offset_s: float | None
) -> dict[str, Any]:
    """The figures of one run, from the merged worker summaries."""
    ramp, window = totals.ramp, totals.window
    ideal = size * tick_hz
    rates = sorted(count / window_s for count in window.per_client) or [0.0]
    offset = offset_s or 0.0
    raw = {q: percentile(window.latency_bins, q) for q in (0.5, 0.99)}
    return {
        "connected": ramp.connected,
        "failed": ramp.failed,
        "failures": dict(ramp.failures),
        "ramp_s": ramp.seconds,
        "window_s": window_s,
        "tick_hz": tick_hz,
        "messages": window.messages,
        "msgs_per_s": window.messages / window_s,
        "ideal_per_s": ideal,
        "delivered_pct": 100.0 * window.messages / window_s / ideal,
        "client_min_hz": rates[0],
        "client_p50_hz": rates[len(rates) // 2],
        "latency_offset_ms": None if offset_s is None else offset_s * 1e3,
        "latency_raw_p50_ms": _ms(raw[0.5]),
        "latency_raw_p99_ms": _ms(raw[0.99]),
        "latency_raw_max_ms": _ms(window.latency_max_s),
        "latency_p50_ms": _ms(raw[0.5], offset),
        "latency_p99_ms": _ms(raw[0.99], offset),
        "latency_max_ms": _ms(window.latency_max_s, offset),
        "latency_min_ms": _ms(window.latency_min_s, offset),
        **fanout_delay(window),
        "seq_gaps": window.seq_gaps,
        "seq_repeats": window.seq_repeats,
        "closed_by_server": {str(code): n for code, n in window.closed_by_server.items()},
        "connections_lost": window.lost,
        "client_cpu_pct": 100.0 * window.cpu_s / window_s,
        "receipt_clock": "kernel SO_TIMESTAMPNS" if window.kernel_timestamps else "time.time()",
        "client_late_start_s": window.late_start_s,
    }


def fanout_delay(window: WindowSummary) -> dict[str, float | None]:
    """Receipt time of each frame minus the first receipt of the same ``seq`` by any client.

    Independent of the ``timestamp``'s anchor: how long one tick's fan-out takes to reach
    everyone (with the kernel's receive timestamps, the server's side of it). Ticks cut by the
    window's edges are left out. ``tick_gap_max_ms``: the longest interval between the first
    receipts of consecutive seqs.
    """
    seqs = np.frombuffer(window.receipt_seqs, dtype=np.int64)
    times = np.frombuffer(window.receipt_times, dtype=np.float64)
    empty: dict[str, float | None] = dict.fromkeys(
        ("fanout_p50_ms", "fanout_p99_ms", "fanout_max_ms", "tick_gap_max_ms")
    )
    if seqs.size == 0:
        return empty
    inner = (seqs > seqs.min()) & (seqs < seqs.max())
    seqs, times = seqs[inner], times[inner]
    if seqs.size == 0:
        return empty
    unique, index = np.unique(seqs, return_inverse=True)
    first = np.full(unique.size, np.inf)
    np.minimum.at(first, index, times)
    delay_ms = (times - first[index]) * 1e3
    p50, p99 = np.percentile(delay_ms, [50, 99])
    return {
        "fanout_p50_ms": float(p50),
        "fanout_p99_ms": float(p99),
        "fanout_max_ms": float(delay_ms.max()),
        "tick_gap_max_ms": float(np.diff(first).max() * 1e3) if first.size > 1 else None,
    }


def _ms(seconds: float | None, offset_s: float = 0.0) -> float | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    return (seconds - offset_s) * 1e3


def percentile(bins: Counter[int], q: float) -> float | None:
    """The ``q`` quantile (seconds) of a latency histogram with ``LATENCY_BIN_S`` bins."""
    total = sum(bins.values())
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for key in sorted(bins):
        seen += bins[key]
        if seen > rank:
            return key * LATENCY_BIN_S
    return max(bins) * LATENCY_BIN_S


def add_costs(row: dict[str, Any]) -> None:
    """Server CPU per delivered message and memory per connection, once the window is in."""
    if "error" in row:
        return
    messages = row["messages"]
    row["server_cpu_pct"] = 100.0 * row["server_cpu_s"] / row["window_s"]
    row["server_us_per_msg"] = 1e6 * row["server_cpu_s"] / messages if messages else None
    row["other_cpu_pct"] = row["machine_busy_pct"] - row["server_cpu_pct"] - row["client_cpu_pct"]
    grown = row["rss_loaded_mb"] - row["rss_idle_mb"]
    row["rss_per_conn_kb"] = grown * 1024 / row["connected"] if row["connected"] else None


def log_summary(path: Path) -> dict[str, int]:
    """Warnings, errors and slow-consumer closes the server logged during the run."""
    if not path.exists():
        return {}
    text = path.read_text(errors="replace")
    return {
        "warnings": text.count(" WARNING "),
        "errors": text.count(" ERROR ") + text.count("Traceback"),
        "slow_consumers": text.count("slow consumer"),
    }


# --- output --------------------------------------------------------------------------------

DELIVERY = (
    ("target", "{:<8}", "target"),
    ("N", "{:>6,}", "subscribers"),
    ("conn", "{:>6,}", "connected"),
    ("fail", "{:>5,}", "failed"),
    ("msg/s", "{:>8,.0f}", "msgs_per_s"),
    ("ideal", "{:>8,.0f}", "ideal_per_s"),
    ("%ideal", "{:>6.1f}", "delivered_pct"),
    ("cli min", "{:>7.2f}", "client_min_hz"),
    ("cli p50", "{:>7.2f}", "client_p50_hz"),
    ("gaps", "{:>7,}", "seq_gaps"),
    ("ticks/s", "{:>7.2f}", "ticks_per_s"),
)
LATENCY = (
    ("target", "{:<8}", "target"),
    ("N", "{:>6,}", "subscribers"),
    ("ts p50", "{:>7.1f}", "latency_p50_ms"),
    ("ts p99", "{:>7.1f}", "latency_p99_ms"),
    ("ts max", "{:>7.1f}", "latency_max_ms"),
    ("ts min", "{:>7.1f}", "latency_min_ms"),
    ("fan p50", "{:>7.1f}", "fanout_p50_ms"),
    ("fan p99", "{:>7.1f}", "fanout_p99_ms"),
    ("fan max", "{:>7.1f}", "fanout_max_ms"),
    ("tick gap max", "{:>12.1f}", "tick_gap_max_ms"),
    ("idle offset", "{:>11.1f}", "latency_offset_ms"),
)
COST = (
    ("target", "{:<8}", "target"),
    ("N", "{:>6,}", "subscribers"),
    ("procs", "{:>5}", "client_procs"),
    ("ramp s", "{:>6.1f}", "ramp_s"),
    ("ramp skip", "{:>9}", "ramp_lost_ticks"),
    ("srv CPU%", "{:>8.0f}", "server_cpu_pct"),
    ("us/msg", "{:>7.1f}", "server_us_per_msg"),
    ("RSS idle MB", "{:>11.1f}", "rss_idle_mb"),
    ("RSS MB", "{:>7.1f}", "rss_loaded_mb"),
    ("KB/conn", "{:>7.1f}", "rss_per_conn_kb"),
    ("cli CPU%", "{:>8.0f}", "client_cpu_pct"),
    ("srv wait%", "{:>9.0f}", "server_run_queue_wait_pct"),
    ("other CPU%", "{:>10.0f}", "other_cpu_pct"),
    ("bg CPU%", "{:>7.0f}", "background_cpu_pct"),
)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    widths = [max(len(title), len(fmt.format(0))) for title, fmt, _ in columns]
    header = " ".join(
        title.ljust(width) if index == 0 else title.rjust(width)
        for index, ((title, _, _), width) in enumerate(zip(columns, widths, strict=True))
    )
    lines = [header]
    for row in rows:
        cells = []
        for (_, fmt, key), width in zip(columns, widths, strict=True):
            value = row.get(key)
            cells.append("-".rjust(width) if value is None else fmt.format(value))
        lines.append(" ".join(cells) + (f"  {row['error']}" if "error" in row else ""))
    return "\n".join(lines)


def code_version() -> str:
    """The repository's commit, and whether its files differ from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "an unknown commit (not a git checkout)"
    return f"commit {commit}" + (" with uncommitted changes" if changed else "")


def header_lines(options: Options) -> list[str]:
    cores = os.cpu_count() or 0
    loop = "uvloop" if options.client_uvloop else "asyncio"
    return [
        f"machine: {cores} cores ({platform.machine()}, {platform.system()}), "
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}",
        f"server code: {REPO} at {code_version()}",
        f"ran: targets {', '.join(options.targets)}; subscribers {options.sizes}; "
        f"window {options.window_s:g} s after {options.settle_s:g} s settle; "
        f"tick {options.tick_hz:g} Hz; ramp {options.ramp_concurrency} handshakes at a time",
        f"clients: raw-socket WebSocket readers ({loop} loop, nice {options.client_nice}), "
        f"<= {MAX_PER_PROCESS:,} per process; they share the {cores} cores with the server "
        "(see cli CPU%, srv wait%)",
    ]


NOTES = """\
msg/s: frames of the ticks the server made in the window (by seq; the baseline, which has no
seq: frames that arrived in the window), per second; ideal = N x tick rate. cli min/p50: one
client's frames per second. gaps: seqs missing between consecutive frames of one client,
summed (the server skips frames for a client whose send buffer is full). ticks/s: the server's
own seq count over the window (GET /); a tick the server starts late is skipped and seq stays
contiguous, so skipped ticks show here and in "ramp skip" (during the ramp), not in gaps.
Receipt times are the kernel's receive timestamps of the client sockets (SO_TIMESTAMPNS), so
client lag is left out; a read's time is its newest frame's, older frames in it are not timed.
ts: receipt time - frame timestamp. Our timestamps are simulated time anchored to the wall clock
at start-up, so ours are net of "idle offset" (that difference for one client of the idle
server, measured first), and each skipped tick puts every later timestamp one period further
behind: "ts min" shows that accumulated lag. The baseline's are taken at generation, used as
is. fan: receipt time - first receipt of the same seq by any client: how long one tick takes to
reach everyone. tick gap max: the longest interval between first receipts of consecutive seqs.
srv CPU%: server process CPU (user+sys, all threads) in the window, 100 = one core; us/msg:
that CPU per delivered message. KB/conn: (RSS with clients - RSS idle) / connections.
cli CPU%: all client processes together, same scale. srv wait%: time the server was runnable
but waiting for a core (schedstat): high means something crowds it out. other CPU%: the rest of
the machine in the window (kernel network work not charged to a process, any other load);
bg CPU%: the machine's load just before the run. Other load skews every figure: rerun when
bg CPU% is high."""


def print_report(rows: Sequence[dict[str, Any]], options: Options) -> None:
    print("\ndelivery")
    print(format_table(rows, DELIVERY))
    print("\nlatency, ms")
    print(format_table(rows, LATENCY))
    print("\ncost")
    print(format_table(rows, COST))
    print()
    print(NOTES)
    for row in rows:
        extra = _row_remarks(row)
        if extra:
            print(f"{row['target']} N={row['subscribers']:,}: {'; '.join(extra)}")
    for line in ratio_lines(rows):
        print(line)


def _row_remarks(row: dict[str, Any]) -> list[str]:
    remarks = list(row.get("warnings", []))
    if row.get("failures"):
        remarks.append(f"connect failures {row['failures']}")
    if row.get("closed_by_server"):
        remarks.append(f"closed by the server in the window {row['closed_by_server']}")
    if row.get("client_late_start_s"):
        remarks.append(
            f"a client process learnt of the window {row['client_late_start_s']:.2f} s late: "
            "its first frames are missing from the count"
        )
    if row.get("connections_lost"):
        remarks.append(f"{row['connections_lost']} connections lost")
    log = row.get("server_log") or {}
    if log.get("warnings") or log.get("errors"):
        remarks.append(f"server log: {log}")
    return remarks


def ratio_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Ours against the baseline at each size where both ran."""
    lines = []
    by_key = {(row["target"], row["subscribers"]): row for row in rows if "error" not in row}
    for size in sorted({row["subscribers"] for row in rows}):
        ours, base = by_key.get(("ours", size)), by_key.get(("baseline", size))
        if ours is None or base is None:
            continue
        parts = [
            _ratio("delivered", ours["msgs_per_s"], base["msgs_per_s"]),
            _ratio(
                "server CPU per msg (baseline/ours)",
                base["server_us_per_msg"],
                ours["server_us_per_msg"],
            ),
            _ratio(
                "memory per conn (baseline/ours)", base["rss_per_conn_kb"], ours["rss_per_conn_kb"]
            ),
        ]
        lines.append(f"ours vs baseline at N={size:,}: " + ", ".join(parts))
    return lines


def _ratio(label: str, numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator or denominator <= 0:
        return f"{label} -"
    return f"{label} x{numerator / denominator:.2f}"


# --- command line --------------------------------------------------------------------------


def baseline_missing() -> str | None:
    """Why the baseline cannot run here, or ``None`` if it can."""
    if not BASELINE.exists():
        return f"{BASELINE} not found"
    missing = [name for name in BASELINE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return f"missing {', '.join(missing)}: pip install fastapi 'uvicorn[standard]' to run it"
    return None


def resolve_targets(choice: str, tick_hz: float) -> list[Target]:
    ours = Target("ours", "/", tick_hz, simulated_timestamps=True)
    if choice == "ours":
        return [ours]
    reason = baseline_missing()
    if reason is not None:
        print(f"skipping the baseline: {reason}")
        return [ours] if choice == "both" else []
    if tick_hz != BASELINE_TICK_HZ:
        print(f"note: the baseline sends at a fixed {BASELINE_TICK_HZ:g} Hz whatever --tick-hz")
    baseline = Target("baseline", "/machines", BASELINE_TICK_HZ, simulated_timestamps=False)
    return [baseline] if choice == "baseline" else [baseline, ours]


def parse_args(argv: Sequence[str] | None) -> tuple[Options, str]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--subscribers", default="1000", help="one size or a comma list")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--tick-hz", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the ramp")
    parser.add_argument("--client-procs", type=int, help=f"default: <= {MAX_PER_PROCESS} each")
    parser.add_argument(
        "--ramp-concurrency",
        type=int,
        default=200,
        help="handshakes in flight at once, over all client processes",
    )
    parser.add_argument("--target", choices=("ours", "baseline", "both"), default="ours")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra flag for our server, repeatable: --server-arg=--log-level=warning",
    )
    parser.add_argument(
        "--client-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="client event loop; auto: uvloop when installed",
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        help="hard seconds per run (default: 60 + N/50 + settle + window)",
    )
    parser.add_argument(
        "--client-nice",
        type=int,
        default=19,
        help="niceness added to the client processes (0: they compete with the server)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    sizes = tuple(int(size) for size in args.subscribers.split(",") if size.strip())
    if not sizes or min(sizes) < 1 or args.window <= 0 or args.tick_hz <= 0:
        parser.error("sizes, window and tick rate must be positive")
    options = Options(
        sizes=sizes,
        targets=(),
        window_s=args.window,
        tick_hz=args.tick_hz,
        settle_s=args.settle,
        client_procs=args.client_procs,
        ramp_concurrency=max(1, args.ramp_concurrency),
        run_timeout_s=args.run_timeout,
        server_args=tuple(args.server_arg),
        client_uvloop=_use_uvloop(args.client_loop),
        client_nice=args.client_nice,
        json_path=args.json,
    )
    return options, args.target


def _use_uvloop(choice: str) -> bool:
    available = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not available:
        sys.exit("--client-loop uvloop: uvloop is not installed")
    return choice == "uvloop" or (choice == "auto" and available)


def main(argv: Sequence[str] | None = None) -> None:
    options, choice = parse_args(argv)
    targets = resolve_targets(choice, options.tick_hz)
    if not targets:
        sys.exit("nothing to run")
    options = dataclasses.replace(options, targets=tuple(target.name for target in targets))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    atexit.register(_stop_children)
    print("\n".join(header_lines(options)), flush=True)
    rows = []
    log_dir = Path(tempfile.mkdtemp(prefix="fanout-"))
    for size in options.sizes:
        for target in targets:
            print(f"{target.name}, {size:,} subscribers ...", flush=True)
            row = run_one(target, size, options, log_dir)
            add_costs(row)
            rows.append(row)
    print_report(rows, options)
    if any("error" in row for row in rows):
        print(f"server logs kept in {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    if options.json_path is not None:
        write_json(options.json_path, rows, options)


def _rounded(value: object) -> object:
    return round(value, 3) if isinstance(value, float) else value


def write_json(path: Path, rows: Sequence[dict[str, Any]], options: Options) -> None:
    meta = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "client_loop": "uvloop" if options.client_uvloop else "asyncio",
        "client_nice": options.client_nice,
        "window_s": options.window_s,
        "settle_s": options.settle_s,
        "tick_hz": options.tick_hz,
        "server_args": list(options.server_args),
        "code": code_version(),
    }
    runs = [{key: _rounded(value) for key, value in row.items()} for row in rows]
    path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    print(f"figures written to {path}")


if __name__ == "__main__":
    main()
