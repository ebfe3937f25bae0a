"""WebSocket fan-out under load: N subscribers of the real server, started as its own process.

Run: ``python -m bench.fanout`` (``--subscribers 1000,5000,7000`` for several sizes, one server
each; ``--target both`` to run the original design, ``shared/baseline/seed_fastapi.py``, at each
size too and print the ratios). Per (target, size) it starts the server on a free loopback port,
spreads the subscribers round-robin over the machines and over client processes, ramps them up
a bounded number at a time, lets them settle, then receives for a fixed window and prints:
connections made and failed, delivered messages/s against the ideal (N x tick rate), per-client
rate, latency from each frame's ``timestamp`` to its receipt, ``seq`` gaps, the server's CPU
time per delivered message, and its memory before and with the clients.

Scenarios, each bounded in count and time (docs/benchmarks.md has the figures):

- ``--probe`` (on by default): while the subscribers stream, the parent reads
  ``GET /machines/{id}/data`` at ``--probe-rest-hz`` and opens a new WebSocket at
  ``--probe-ws-hz`` (taking its first frame), and prints p50/p99/max of each.
- GC and server counters: ``/metrics`` is scraped at the window's start and end and after the
  run: the longest GC pause per generation, pauses over 20 ms, tick overruns, frames dropped,
  slow-consumer closes, mean tick (fan-out) time.
- ``--stall K --stall-seconds S``: K of the N clients stop reading for S seconds inside the
  window, then resume (``--stall-then close``: close). A control run without the stall comes
  first (``--no-stall-control`` to skip it); the others' delivery and p99 are compared with it.
- ``--churn S``: for S seconds a churn process connects clients at ``--churn-rate`` per second
  (at most ``--churn-max``), each takes a frame or two and leaves (close handshake, half-close
  or reset, in turn); then ``dms_connections``/``dms_subscriptions`` must come back to the
  steady clients' count, and server memory before and after is printed.
- ``--multiplex M``: clients use ``/ws`` and subscribe to M machines each, from a temporary
  fleet file of ``--fleet-size`` machines; prints messages/s, CPU per message and per client
  tick, and the TCP segments each client received per tick (1.0: one write per client per tick).

The client processes share the machine's cores with the server. So that they do not crowd it
out they run at nice 19 (``--client-nice``) and take receipt times from the kernel's socket
timestamps, not from their own clock, so their own lag stays out of the latencies; their CPU
share, the server's wait for a core and the rest of the machine's load are printed beside the
figures. Every child is stopped by its own pid.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import dataclasses
import importlib.util
import itertools
import json
import math
import multiprocessing
import os
import platform
import re
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
from collections.abc import Callable, Iterator, Sequence
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
    ChurnConfig,
    ChurnResult,
    ProbeConfig,
    ProbeResult,
    RampResult,
    StallPlan,
    StallSummary,
    WindowSummary,
    WorkerConfig,
    churn_main,
    die_with_parent,
    idle_latency,
    raise_fd_limit,
    run_probe,
    worker_main,
)

HOST = "127.0.0.1"  # every socket of the benchmark stays on loopback
MACHINES = ("robot_01", "cnc_01", "conveyor_01")  # the default fleet (and the baseline's)
MACHINE_TYPES = ("robotic_arm", "cnc_mill", "conveyor_belt")
REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO.parent / "shared" / "baseline" / "seed_fastapi.py"
BASELINE_MODULES = ("fastapi", "uvicorn", "websockets")
BASELINE_TICK_HZ = 10.0  # the original design sleeps 0.1 s per connection, whatever --tick-hz
MAX_PER_PROCESS = 1_500
MAX_FRAMES_PER_PROCESS = 3_000  # frames per tick one client process parses (--multiplex)
FD_MARGIN = 64  # descriptors a process needs besides its sockets
START_LIMIT_S = 30.0
STOP_LIMIT_S = 10.0
IDLE_PROBE_S = 1.5
PIPE_SLACK_S = 15.0
WINDOW_LEAD_S = 1.0  # the least time between announcing the window and its start
BUSY_BACKGROUND_PCT = 20.0  # of one core: more than this before a run, and figures are suspect
NOISY_OTHER_PCT = 40.0  # of one core: other work in the window above this makes a run noisy
STALL_LEAD_S = 3.0  # window time before the stall begins
STALL_TAIL_S = 5.0  # window time after it ends
MAX_STALL_S = 600.0
MAX_CHURN_S = 600.0
MAX_CHURN_COUNT = 100_000
SAMPLE_S = 0.5  # server memory sampled this often in the window
RETURN_LIMIT_S = 15.0  # time allowed for connections to come back to the steady count
CHURN_AFTER_S = 6.0  # wait after churn before the last memory figure (the GC tuner checks at 5 s)
PROBE_TAIL_S = 12.0  # the probe's last requests finish within this after the window
GC_SLOW_S = "0.02"  # the dms_gc_pause_seconds bucket bound of the 20 ms target
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOSE_LINE = re.compile(rb"stream closed: \S+ \S+ \(code (\S+), sent \d+, dropped (\d+)")


class RunTimeoutError(Exception):
    """A run went over its hard time limit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """What happens beside the N streaming subscribers (see the module's docstring)."""

    probe: bool = True
    probe_rest_hz: float = 20.0
    probe_ws_hz: float = 5.0
    stall: int = 0
    stall_s: float = 30.0
    stall_then: str = "resume"
    stall_control: bool = True
    churn_s: float = 0.0
    churn_rate: float = 200.0
    churn_max: int = 20_000
    churn_concurrency: int = 100
    multiplex: int = 0
    fleet_size: int = 0

    @property
    def machines_per_client(self) -> int:
        return max(1, self.multiplex)

    @property
    def ours_only(self) -> bool:
        """Whether the scenario needs what only our server has (``/ws``, ``/metrics``)."""
        return bool(self.stall or self.churn_s or self.multiplex)


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
    wait_quiet_s: float = 0.0
    retry_noisy: int = 0
    keep_logs: bool = False
    bus_url: str = "redis://127.0.0.1:6379/0"
    bus_workers: int = 2
    scenario: Scenario = field(default_factory=Scenario)

    @property
    def measured_s(self) -> float:
        """The window: long enough for the stall (with a lead and a tail) and the churn."""
        scenario, window = self.scenario, self.window_s
        if scenario.stall:
            window = max(window, STALL_LEAD_S + scenario.stall_s + STALL_TAIL_S)
        return max(window, scenario.churn_s)


@dataclass(frozen=True, slots=True)
class Target:
    """How to start one server under test and how to tell that it is serving."""

    name: str
    ready_path: str
    tick_hz: float
    ours: bool  # our server: seq, /metrics, /ws; timestamps are the ticks' due times
    bus_workers: int = 0  # > 0: one simulator and this many web processes on Redis

    def command(self, port: int, options: Options, extra: Sequence[str] = ()) -> list[str]:
        if not self.ours:
            return [sys.executable, str(BASELINE), "--host", HOST, "--port", str(port)]
        bus: tuple[str, ...] = ()
        if self.bus_workers:
            bus = ("--workers", str(self.bus_workers), "--bus", options.bus_url)
            bus += ("--bus-prefix", f"bench-{port}")
        return [
            *(sys.executable, "-m", "server", "--host", HOST, "--port", str(port)),
            *("--seed", "1", "--tick-hz", f"{options.tick_hz:g}", *options.server_args),
            *bus,
            *extra,
        ]


@dataclass(frozen=True, slots=True)
class Run:
    """One measured run: a target, a size, and how many of its clients stall."""

    target: Target
    size: int
    stall: int


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
    stall: StallSummary = field(default_factory=StallSummary)


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
def server_process(
    target: Target, options: Options, log_path: Path, extra: Sequence[str] = ()
) -> Iterator[tuple[int, int]]:
    """Start the target on a free loopback port; yield (pid, port); stop it by its pid."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            target.command(port, options, extra),
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


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (``--workers`` runs the server as several)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents.setdefault(int(_proc_stat(int(entry.name))[1]), []).append(int(entry.name))
    tree, waiting = [], [pid]
    while waiting:
        current = waiting.pop()
        tree.append(current)
        waiting += parents.get(current, [])
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants (every thread), from ``/proc/*/stat``."""
    return sum(user_system_seconds(pid))


def user_system_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` and its descendants (every thread): Python's work, and the
    kernel's (sends, and on loopback the delivery to the reader, charged to the sender)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _proc_stat(member)
            user, system = user + int(fields[11]), system + int(fields[12])
    return user / tick, system / tick


def run_queue_wait_s(pid: int) -> float:
    """Seconds the threads of ``pid`` and its descendants spent runnable but waiting for a
    CPU (schedstat)."""
    total_ns = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{member}/task").iterdir():
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
    """Resident memory of ``pid`` and its descendants."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024 if total else float("nan")


def fd_count(pid: int) -> int | None:
    try:
        return sum(
            sum(1 for _ in Path(f"/proc/{member}/fd").iterdir()) for member in process_tree(pid)
        )
    except OSError:
        return None


def tcp_memory_mb() -> float | None:
    """Memory of every TCP socket buffer on the machine (``/proc/net/sockstat``, in pages)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                words = line.split()
                return int(words[words.index("mem") + 1]) * PAGE_BYTES / 2**20
    return None


def server_seq(port: int, path: str = "/") -> int | None:
    """The tick count our server reports at ``GET /`` (``None`` where it has none); behind a
    bus, the simulator's at ``GET /health`` (each web process may be a tick behind it)."""
    try:
        body = json.loads(http_get(port, path, 5.0))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    seq = body.get("seq") if isinstance(body, dict) else None
    return seq if isinstance(seq, int) else None


def machine_ids(port: int, target: Target) -> tuple[str, ...]:
    """Our server's machine ids in fleet order (``GET /machines``); the baseline's three."""
    if not target.ours:
        return MACHINES
    listing = json.loads(http_get(port, "/machines", 10.0))
    return tuple(str(entry["id"]) for entry in listing)


# --- /metrics ------------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_metrics(port: int) -> Samples | None:
    """Every sample of our server's ``/metrics``, keyed by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = http_get(port, "/metrics", 10.0).decode()
    except (OSError, urllib.error.URLError):
        return None
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: Samples | None, name: str, **labels: str) -> float:
    """One sample's value; 0 where it is absent (a histogram child not yet observed)."""
    if samples is None:
        return math.nan
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def gc_over(samples: Samples | None) -> float:
    """Cyclic GC pauses longer than 20 ms so far, all generations."""
    total = 0.0
    for generation in "012":
        count = metric(samples, "dms_gc_pause_seconds_count", generation=generation)
        fast = metric(samples, "dms_gc_pause_seconds_bucket", generation=generation, le=GC_SLOW_S)
        total += count - fast
    return total


def gc_worst_ms(before: Samples | None, after: Samples | None) -> float | None:
    """The upper bound (ms) of the ``dms_gc_pause_seconds`` bucket holding the longest pause
    between two scrapes: every pause took at most this long (inf: over the last bound).
    ``None`` when there was no pause."""
    count, bucket = "dms_gc_pause_seconds_count", "dms_gc_pause_seconds_bucket"

    def slower_than(bound: str) -> float:
        total = 0.0
        for generation in "012":
            for samples, sign in ((after, 1.0), (before, -1.0)):
                total += sign * (
                    metric(samples, count, generation=generation)
                    - metric(samples, bucket, generation=generation, le=bound)
                )
        return total

    if after is None or gc_count(after) - gc_count(before) <= 0:
        return None
    bounds = {dict(labels)["le"] for name, labels in after if name == bucket} - {"+Inf"}
    for bound in sorted(bounds, key=float):
        if slower_than(bound) <= 0:
            return 1e3 * float(bound)
    return math.inf


def gc_window_pauses(before: Samples | None, after: Samples | None) -> dict[str, int]:
    """Pauses between two scrapes by generation and histogram bucket, e.g. ``"g2 <= 0.05"``."""
    count, bucket = "dms_gc_pause_seconds_count", "dms_gc_pause_seconds_bucket"
    pauses: dict[str, int] = {}
    if before is None or after is None:
        return pauses
    bounds = sorted(
        {dict(labels)["le"] for name, labels in after if name == bucket} - {"+Inf"}, key=float
    )
    for generation in "012":
        below = 0.0
        for bound in [*bounds, "+Inf"]:
            upto = metric(after, bucket, generation=generation, le=bound) - metric(
                before, bucket, generation=generation, le=bound
            )
            if bound == "+Inf":
                upto = metric(after, count, generation=generation) - metric(
                    before, count, generation=generation
                )
            if upto - below > 0:
                pauses[f"g{generation} <= {bound}"] = round(upto - below)
            below = upto
    return pauses


def gc_count(samples: Samples | None) -> float:
    return sum(
        metric(samples, "dms_gc_pause_seconds_count", generation=generation) for generation in "012"
    )


def server_figures(
    before: Samples | None, after: Samples | None, final: Samples | None
) -> dict[str, Any]:
    """GC, overruns, drops, slow consumers and tick time: in the window and over the run."""
    if before is None or after is None or final is None:
        return {}

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    ticks = delta("dms_tick_duration_seconds_count")
    slow_ticks = ticks - delta("dms_tick_duration_seconds_bucket", le="0.1")
    figures: dict[str, Any] = {
        f"gc_max_g{generation}_ms": 1e3
        * metric(final, "dms_gc_pause_max_seconds", generation=generation)
        for generation in "012"
    }
    figures |= {
        "gc_pauses_window": gc_count(after) - gc_count(before),
        "gc_over_20ms_window": gc_over(after) - gc_over(before),
        "gc_window_worst_ms": gc_worst_ms(before, after),
        "gc_window_pauses": gc_window_pauses(before, after),
        "gc_over_20ms_run": gc_over(final),
        "overruns_window": delta("dms_tick_overruns_total"),
        "overruns_run": metric(final, "dms_tick_overruns_total"),
        # Since the fan-out runs on its own task: frames it passed over for a newer one (a
        # server with the fan-out inside the tick has no such counter: 0).
        "fanout_skipped_window": delta("dms_fanout_skipped_total"),
        "fanout_ms_mean": 1e3 * delta("dms_fanout_seconds_total") / ticks if ticks else None,
        "dropped_window": delta("dms_frames_dropped_total"),
        "dropped_run": metric(final, "dms_frames_dropped_total"),
        "slow_closes_window": delta("dms_slow_consumer_disconnects_total"),
        "slow_closes_run": metric(final, "dms_slow_consumer_disconnects_total"),
        "tick_mean_ms": 1e3 * delta("dms_tick_duration_seconds_sum") / ticks if ticks else None,
        "tick_late_mean_ms": 1e3 * delta("dms_tick_lateness_seconds_sum") / ticks
        if ticks
        else None,
        "ticks_over_100ms_window": slow_ticks,
        "encodes_per_tick": delta("dms_encodes_total") / ticks if ticks else None,
        "variants": metric(after, "dms_variants"),
        "step_ms": 1e3 * metric(after, "dms_step_seconds"),
    }
    return figures


def log_closes(path: Path) -> tuple[dict[str, int], int]:
    """Close codes of the streams the server logged as closed so far, and their drops."""
    codes: Counter[str] = Counter()
    dropped = 0
    with contextlib.suppress(OSError):
        for match in CLOSE_LINE.finditer(path.read_bytes()):
            codes[match.group(1).decode()] += 1
            dropped += int(match.group(2))
    return dict(codes), dropped


# --- client processes ----------------------------------------------------------------------


class ClientPool:
    """Client processes, each running ``entry(config, pipe, uvloop)``, stopped by their pids."""

    def __init__(
        self,
        entry: Callable[[Any, Connection, bool], None],
        configs: Sequence[Any],
        options: Options,
        name: str,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.links: list[Connection] = []
        self.processes: list[BaseProcess] = []
        for index, config in enumerate(configs):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=entry,
                args=(config, child_end, options.client_uvloop),
                name=f"{name}-{index}",
                daemon=True,
            )
            self.links.append(parent_end)
            self.processes.append(process)
        for started in self.processes:
            started.start()
            _children.append(started)

    def gather(self, kind: str, deadline: Deadline) -> list[Any]:
        """One ``kind`` message from every process, within the deadline."""
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
        """Ask each process to close its sockets; kill (by pid) any that has not exited."""
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


@dataclass(frozen=True, slots=True)
class ClientPlan:
    """Every subscriber's path and, on ``/ws``, the machines it subscribes to."""

    paths: tuple[str, ...]
    subscriptions: tuple[tuple[str, ...], ...]


def client_plan(size: int, machines: Sequence[str], multiplex: int) -> ClientPlan:
    """Subscribers round-robin over the machines; with ``multiplex`` M, client i takes the M
    machines from ``i * M`` on (wrapping round the fleet)."""
    if not multiplex:
        paths = tuple(f"/ws/machines/{machines[index % len(machines)]}" for index in range(size))
        return ClientPlan(paths, ((),) * size)
    subscriptions = tuple(
        tuple(machines[(index * multiplex + offset) % len(machines)] for offset in range(multiplex))
        for index in range(size)
    )
    return ClientPlan(("/ws",) * size, subscriptions)


def split(count: int, parts: int) -> list[tuple[int, int]]:
    """``count`` items in ``parts`` even blocks, as (start, stop)."""
    return list(itertools.pairwise(count * part // parts for part in range(parts + 1)))


def worker_configs(
    port: int, plan: ClientPlan, procs: int, stalled: int, timeout_s: float, options: Options
) -> list[WorkerConfig]:
    """The subscribers in ``procs`` even blocks; the stalled ones spread evenly over them."""
    size = len(plan.paths)
    if size == 0:
        return []
    concurrency = max(1, options.ramp_concurrency // procs)
    configs = []
    for (start, stop), (stall_start, stall_stop) in zip(
        split(size, procs), split(stalled, procs), strict=True
    ):
        configs.append(
            WorkerConfig(
                host=HOST,
                port=port,
                paths=plan.paths[start:stop],
                subscriptions=plan.subscriptions[start:stop],
                concurrency=concurrency,
                timeout_s=timeout_s,
                nice=options.client_nice,
                stalled=stall_stop - stall_start,
            )
        )
    return configs


def client_procs_for(size: int, options: Options) -> int:
    if size == 0:
        return 0
    if options.client_procs is not None:
        return max(1, min(options.client_procs, size))
    if options.scenario.multiplex:
        return max(1, math.ceil(size * options.scenario.multiplex / MAX_FRAMES_PER_PROCESS))
    return max(1, math.ceil(size / MAX_PER_PROCESS))


def run_timeout(size: int, options: Options) -> float:
    """Hard limit of one run: start-up, a ramp at >= 50 connections/s, settle, window, the
    probe's and churn's tails, and the wait for connections to come back."""
    if options.run_timeout_s is not None:
        return options.run_timeout_s
    tail = PROBE_TAIL_S + RETURN_LIMIT_S + (CHURN_AFTER_S if options.scenario.churn_s else 0.0)
    return 60.0 + size / 50 + options.settle_s + options.measured_s + tail


def fd_warnings(size: int, procs: int, options: Options) -> list[str]:
    soft, _ = raise_fd_limit()
    warnings = []
    extra = options.scenario.churn_concurrency if options.scenario.churn_s else 0
    if size + extra + FD_MARGIN > soft:
        warnings.append(f"the server needs ~{size + extra + FD_MARGIN} fds, the limit is {soft}")
    per_process = math.ceil(size / max(procs, 1)) + FD_MARGIN
    if per_process > soft:
        warnings.append(f"a client process needs ~{per_process} fds, the limit is {soft}")
    return warnings


def write_fleet(directory: Path, size: int) -> Path:
    """A fleet file of ``size`` machines, the three types in turn (ids from ``GET /machines``)."""
    counts = [size // 3 + (1 if index < size % 3 else 0) for index in range(3)]
    entries = [
        f'[[machines]]\ntype = "{kind}"\ncount = {count}\n'
        for kind, count in zip(MACHINE_TYPES, counts, strict=True)
        if count
    ]
    path = directory / f"fleet-{size}.toml"
    path.write_text("\n".join(entries))
    return path


# --- one run -------------------------------------------------------------------------------


def run_one(run: Run, options: Options, log_dir: Path) -> dict[str, Any]:
    """Measure one run; the row of figures, or the error."""
    target, size = run.target, run.size
    procs = client_procs_for(size, options)
    limit_s = run_timeout(size, options)
    scenario = options.scenario
    row: dict[str, Any] = {
        "target": target.name,
        "subscribers": size,
        "client_procs": procs,
        "stall": run.stall,
        "stall_scenario": bool(scenario.stall),
        "multiplex": scenario.multiplex,
        "churn_s": scenario.churn_s,
    }
    row["label"] = run_label(row)
    row["warnings"] = fd_warnings(size, procs, options)
    for warning in row["warnings"]:
        print(f"  warning: {warning}", flush=True)
    log_path = log_dir / f"{target.name}-{size}-{row['label'].replace(' ', '')}.log"
    if options.wait_quiet_s:
        row["waited_for_quiet_s"] = wait_for_quiet(options.wait_quiet_s)
    row["background_cpu_pct"] = background_cpu_pct()
    row["load_1min"] = os.getloadavg()[0]
    waited = f" (after waiting {row['waited_for_quiet_s']:.0f} s)" if options.wait_quiet_s else ""
    print(
        f"  background: {row['background_cpu_pct']:.0f}% of a core, "
        f"load average {row['load_1min']:.2f}{waited}",
        flush=True,
    )
    if row["background_cpu_pct"] > BUSY_BACKGROUND_PCT:
        print("  warning: the machine is already busy: figures are suspect", flush=True)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s + 2 * STOP_LIMIT_S + PIPE_SLACK_S)
    try:
        deadline = Deadline(time.monotonic() + limit_s)
        row.update(_measure(run, procs, options, deadline, log_path, log_dir, limit_s))
    except (RunTimeoutError, RuntimeError, OSError, ValueError) as error:
        row["error"] = f"{type(error).__name__}: {error}"
        print(f"  failed: {row['error']} (server log: {log_path})", flush=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    row["server_log"] = log_summary(log_path)
    return row


def run_quietest(run: Run, options: Options, log_dir: Path) -> dict[str, Any]:
    """``run_one``, repeated (``--retry-noisy``) while other work crowded the window; the
    quietest row, with the number of attempts."""
    best: dict[str, Any] | None = None
    for attempt in range(1 + options.retry_noisy):
        row = run_one(run, options, log_dir)
        add_costs(row)
        row["attempts"] = attempt + 1
        other = row.get("other_cpu_pct", math.inf)
        if best is None or other < best.get("other_cpu_pct", math.inf):
            best = row
        if other <= NOISY_OTHER_PCT:
            break
        if attempt < options.retry_noisy:
            print(
                f"  noisy: other work took {other:.0f}% of a core in the window; again", flush=True
            )
    assert best is not None
    best["attempts"] = row["attempts"]
    return best


def run_label(row: dict[str, Any]) -> str:
    parts = []
    if row["multiplex"]:
        parts.append(f"mux {row['multiplex']}")
    if row["stall"]:
        parts.append(f"stall {row['stall']}")
    elif row["stall_scenario"]:
        parts.append("no stall")
    if row["churn_s"]:
        parts.append(f"churn {row['churn_s']:g}s")
    return ", ".join(parts) or "-"


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise RunTimeoutError("hard time limit reached")


def _measure(
    run: Run,
    procs: int,
    options: Options,
    deadline: Deadline,
    log_path: Path,
    log_dir: Path,
    limit_s: float,
) -> dict[str, Any]:
    target, size, scenario = run.target, run.size, options.scenario
    extra: list[str] = []
    if scenario.multiplex and target.ours:
        extra = ["--fleet", str(write_fleet(log_dir, scenario.fleet_size))]
    simulator_port = None
    if target.bus_workers:
        simulator_port = free_port()
        extra += ["--simulator-port", str(simulator_port)]
    with server_process(target, options, log_path, extra) as (pid, port):
        wait_until_serving(pid, port, target.ready_path, deadline)
        time.sleep(1.0)
        machines = machine_ids(port, target)
        figures: dict[str, Any] = {
            "rss_idle_mb": rss_mb(pid),
            "fds_idle": fd_count(pid),
            "fleet": len(machines),
        }
        path = f"/ws/machines/{machines[0]}"
        idle = asyncio.run(asyncio.wait_for(idle_latency(HOST, port, path, IDLE_PROBE_S), 10.0))
        figures["latency_idle_ms"] = None if idle is None else idle * 1e3
        plan = client_plan(size, machines, scenario.multiplex)
        totals = Totals()
        seq_at = (simulator_port, "/health") if simulator_port else (port, "/")
        ramp_began, seq_before = time.monotonic(), server_seq(*seq_at)
        pool = ClientPool(
            worker_main,
            worker_configs(port, plan, procs, run.stall, limit_s, options),
            options,
            "fanout-client",
        )
        churner = None
        if scenario.churn_s:
            churn_plan = client_plan(max(len(machines), 3), machines, scenario.multiplex)
            config = ChurnConfig(
                host=HOST,
                port=port,
                paths=churn_plan.paths,
                subscriptions=churn_plan.subscriptions,
                rate_hz=scenario.churn_rate,
                max_count=scenario.churn_max,
                concurrency=scenario.churn_concurrency,
                timeout_s=limit_s,
                nice=options.client_nice,
            )
            churner = ClientPool(churn_main, [config], options, "fanout-churn")
        try:
            for ramp in pool.gather("ramped", deadline):
                merge_ramp(totals.ramp, ramp)
            print(f"  {totals.ramp.connected} connected in {totals.ramp.seconds:.1f} s", flush=True)
            figures["ramp_lost_ticks"] = lost_ticks(
                seq_before, server_seq(*seq_at), time.monotonic() - ramp_began, target.tick_hz
            )
            if churner is not None:
                churner.gather("ready", deadline)
            # Announced now, so that every client knows it well before it starts.
            start = time.time() + max(options.settle_s, WINDOW_LEAD_S)
            end = start + options.measured_s
            # The control run of a stall scenario keeps the stall's times for its figures.
            stall = None
            if scenario.stall:
                began = start + STALL_LEAD_S
                stall = StallPlan(began, began + scenario.stall_s, scenario.stall_then)
            pool.send("window", start, end, stall if run.stall else None)
            if churner is not None:
                churner.send("churn", start, start + scenario.churn_s)
            probe = None
            if scenario.probe:
                probe = ProbeConfig(
                    host=HOST,
                    port=port,
                    rest_paths=tuple(f"/machines/{machine}/data" for machine in machines[:3]),
                    ws_paths=tuple(f"/ws/machines/{machine}" for machine in machines[:3]),
                    rest_hz=scenario.probe_rest_hz,
                    ws_hz=scenario.probe_ws_hz,
                )
            bus = BusProbe(options.bus_url, simulator_port) if simulator_port else None
            window = asyncio.run(
                asyncio.wait_for(
                    observe(pid, port, target, start, end, probe, stall, bus), deadline.left()
                )
            )
            figures |= window
            pool.send("summary", window.get("seqs"))
            for summary in pool.gather("summary", deadline):
                merge_window(totals.window, summary)
                if summary.stall is not None:
                    merge_stall(totals.stall, summary.stall)
            if churner is not None:
                (churned,) = churner.gather("churned", deadline)
                figures |= describe_churn(churned)
            if target.ours:
                figures |= come_back(pid, port, totals, scenario, deadline)
                figures["server_closes"], figures["server_closes_dropped"] = log_closes(log_path)
        finally:
            if churner is not None:
                churner.stop()
            pool.stop()
    per_client = scenario.machines_per_client
    figures |= describe(totals, target.tick_hz, options.measured_s, per_client)
    figures |= describe_stall(totals.stall)
    if churner is not None:
        figures |= churn_memory(figures)
    return figures


def lost_ticks(
    seq_before: int | None, seq_after: int | None, elapsed_s: float, tick_hz: float
) -> int | None:
    """Ticks the server skipped in ``elapsed_s``: a late tick is skipped, never made up."""
    if seq_before is None or seq_after is None:
        return None
    return max(0, round(elapsed_s * tick_hz) - (seq_after - seq_before))


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU counters at one instant: the server's, this process's, and the whole machine's."""

    server_cpu_s: float
    server_system_s: float
    server_wait_s: float
    bench_cpu_s: float
    machine: tuple[int, int]

    @classmethod
    def take(cls, pid: int) -> CpuSample:
        return cls(
            cpu_seconds(pid),
            user_system_seconds(pid)[1],
            run_queue_wait_s(pid),
            time.process_time(),
            machine_cpu_jiffies(),
        )


def machine_busy_pct(began: tuple[int, int], ended: tuple[int, int]) -> float:
    """All cores' busy time between two ``machine_cpu_jiffies`` samples; 100 = one core."""
    busy, total = ended[0] - began[0], ended[1] - began[1]
    return 100.0 * busy * (os.cpu_count() or 1) / total if total else 0.0


def background_cpu_pct(seconds: float = 1.0) -> float:
    """How busy the machine is before a run starts (other work on it skews every figure)."""
    began = machine_cpu_jiffies()
    time.sleep(seconds)
    return machine_busy_pct(began, machine_cpu_jiffies())


def wait_for_quiet(limit_s: float, quiet_s: int = 3) -> float:
    """Wait (at most ``limit_s``) until other work on the machine has stayed under
    ``BUSY_BACKGROUND_PCT`` for ``quiet_s`` seconds in a row; the seconds waited."""
    began = time.monotonic()
    quiet = 0
    while quiet < quiet_s and time.monotonic() - began < limit_s:
        quiet = quiet + 1 if background_cpu_pct() < BUSY_BACKGROUND_PCT else 0
    waited = time.monotonic() - began
    if quiet < quiet_s:
        print(f"  the machine stayed busy for {waited:.0f} s; running anyway", flush=True)
    return waited


async def observe(
    pid: int,
    port: int,
    target: Target,
    start: float,
    end: float,
    probe: ProbeConfig | None,
    stall: StallPlan | None,
    bus: BusProbe | None = None,
) -> dict[str, Any]:
    """The window seen from the parent: server CPU, ticks, counters and memory at both ends,
    memory every ``SAMPLE_S``, the probe's REST reads and handshakes, and behind a bus, Redis's
    CPU and the bus's own figures."""
    probing = asyncio.create_task(run_probe(probe, start, end)) if probe is not None else None
    await asyncio.sleep(max(start - time.time(), 0.0))
    bus_began = bus.sample() if bus is not None else None
    began = CpuSample.take(pid)
    sampling = asyncio.create_task(sample_memory(pid, end))
    seq_at = (bus.simulator_port, "/health") if bus is not None else (port, "/")
    seq_began = await asyncio.to_thread(server_seq, *seq_at)
    metrics_began = await asyncio.to_thread(scrape_metrics, port) if target.ours else None
    await asyncio.sleep(max(end - time.time(), 0.0))
    ended = CpuSample.take(pid)
    bus_ended = bus.sample() if bus is not None else None
    seq_ended = await asyncio.to_thread(server_seq, *seq_at)
    metrics_ended = await asyncio.to_thread(scrape_metrics, port) if target.ours else None
    samples = await sampling
    window_s = end - start
    seqs = None if seq_began is None or seq_ended is None else (seq_began, seq_ended)
    figures: dict[str, Any] = {
        "seqs": seqs,
        "server_cpu_s": ended.server_cpu_s - began.server_cpu_s,
        "server_system_s": ended.server_system_s - began.server_system_s,
        "server_run_queue_wait_pct": 100.0 * (ended.server_wait_s - began.server_wait_s) / window_s,
        "bench_cpu_pct": 100.0 * (ended.bench_cpu_s - began.bench_cpu_s) / window_s,
        "machine_busy_pct": machine_busy_pct(began.machine, ended.machine),
        "rss_loaded_mb": rss_mb(pid),
        "ticks_per_s": None if seqs is None else (seqs[1] - seqs[0]) / window_s,
        "metrics_began": metrics_began,
        "metrics_ended": metrics_ended,
        "memory_samples": samples,
    }
    figures |= memory_figures(samples, stall)
    if bus is not None and bus_began is not None and bus_ended is not None:
        figures |= bus.figures(bus_began, bus_ended, metrics_ended, window_s)
    if probing is not None:
        figures |= describe_probe(await probing)
    return figures


@dataclass(frozen=True, slots=True)
class BusProbe:
    """Redis's CPU and the simulator's and a web process's bus figures, for ``--target bus``."""

    url: str
    simulator_port: int

    def redis_pid(self) -> int | None:
        """The pid of the Redis at ``url`` when it runs on this machine (loopback)."""
        import redis

        try:
            return int(redis.Redis.from_url(self.url).info("server")["process_id"])
        except (redis.RedisError, OSError, KeyError, ValueError):
            return None

    def sample(self) -> tuple[float | None, Samples | None]:
        pid = self.redis_pid()
        redis_cpu = None if pid is None or not Path(f"/proc/{pid}").exists() else cpu_seconds(pid)
        return redis_cpu, scrape_metrics(self.simulator_port)

    def figures(
        self,
        began: tuple[float | None, Samples | None],
        ended: tuple[float | None, Samples | None],
        web: Samples | None,
        window_s: float,
    ) -> dict[str, Any]:
        (redis_began, simulator_began), (redis_ended, simulator_ended) = began, ended
        published = metric(simulator_ended, "dms_bus_published_ticks_total") - metric(
            simulator_began, "dms_bus_published_ticks_total"
        )
        sent = metric(simulator_ended, "dms_bus_published_bytes_total") - metric(
            simulator_began, "dms_bus_published_bytes_total"
        )
        return {
            "redis_cpu_pct": None
            if redis_began is None or redis_ended is None
            else 100.0 * (redis_ended - redis_began) / window_s,
            "bus_bytes_per_tick": sent / published if published else None,
            "bus_messages_per_tick": metric(simulator_ended, "dms_bus_tick_messages"),
            "bus_unpublished_window": metric(simulator_ended, "dms_bus_unpublished_ticks_total")
            - metric(simulator_began, "dms_bus_unpublished_ticks_total"),
            "hop_p50_ms": 1e3 * metric(web, "dms_bus_hop_seconds", quantile="0.5"),
            "hop_p99_ms": 1e3 * metric(web, "dms_bus_hop_seconds", quantile="0.99"),
        }


async def sample_memory(pid: int, end: float) -> list[tuple[float, float, float | None]]:
    """(time, server RSS MB, machine TCP buffer MB) every ``SAMPLE_S`` until ``end``."""
    samples = []
    while True:
        samples.append((time.time(), rss_mb(pid), tcp_memory_mb()))
        if time.time() >= end:
            return samples
        await asyncio.sleep(min(SAMPLE_S, max(end - time.time(), 0.0)))


def memory_figures(
    samples: list[tuple[float, float, float | None]], stall: StallPlan | None
) -> dict[str, Any]:
    tcp = [mb for _, _, mb in samples if mb is not None]
    times = np.array([at for at, _, _ in samples])
    rss = np.array([mb for _, mb, _ in samples])
    figures: dict[str, Any] = {
        "rss_window_start_mb": float(rss[0]),
        "rss_window_max_mb": float(rss.max()),
        "rss_growth_mb_per_min": float(np.polyfit(times - times[0], rss, 1)[0] * 60)
        if times.size > 2
        else None,
        "tcp_mem_max_mb": max(tcp) if tcp else None,
    }
    if stall is not None:
        before = [rss for at, rss, _ in samples if at < stall.begin]
        during = [rss for at, rss, _ in samples if stall.begin <= at <= stall.end]
        figures["rss_stall_before_mb"] = before[-1] if before else None
        figures["rss_stall_max_mb"] = max(during) if during else None
        figures["rss_stall_after_mb"] = samples[-1][1]
    return figures


def come_back(
    pid: int, port: int, totals: Totals, scenario: Scenario, deadline: Deadline
) -> dict[str, Any]:
    """Wait until ``dms_connections``/``dms_subscriptions`` are back to the clients still open
    (the churn's and the probe's gone); then the last memory and counter figures."""
    expected = totals.window.open_clients + totals.stall.outcomes.get("open", 0)
    expected_subs = expected * scenario.machines_per_client
    began = time.monotonic()
    samples = scrape_metrics(port)
    while time.monotonic() - began < min(RETURN_LIMIT_S, deadline.left()):
        if (
            metric(samples, "dms_connections") == expected
            and metric(samples, "dms_subscriptions") == expected_subs
        ):
            break
        time.sleep(0.25)
        samples = scrape_metrics(port)
    back_s = time.monotonic() - began
    figures: dict[str, Any] = {
        "connections_expected": expected,
        "subscriptions_expected": expected_subs,
        "connections_end": metric(samples, "dms_connections"),
        "subscriptions_end": metric(samples, "dms_subscriptions"),
        "variants_end": metric(samples, "dms_variants"),
        "back_s": back_s if metric(samples, "dms_connections") == expected else None,
        "rss_back_mb": rss_mb(pid),
    }
    if scenario.churn_s:
        time.sleep(min(CHURN_AFTER_S, deadline.left()))
        samples = scrape_metrics(port)
    figures["rss_end_mb"] = rss_mb(pid)
    figures["fds_end"] = fd_count(pid)
    figures["metrics_final"] = samples
    return figures


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
    total.open_clients += part.open_clients
    total.data_segments += part.data_segments
    total.segment_clients += part.segment_clients
    total.cpu_s += part.cpu_s
    total.kernel_timestamps = total.kernel_timestamps or part.kernel_timestamps
    total.late_start_s = max(total.late_start_s, part.late_start_s)


def merge_stall(total: StallSummary, part: StallSummary) -> None:
    total.clients += part.clients
    total.at_stall_end.update(part.at_stall_end)
    total.outcomes.update(part.outcomes)
    total.frames += part.frames
    total.seq_gaps += part.seq_gaps


def describe(
    totals: Totals, tick_hz: float, window_s: float, machines_per_client: int
) -> dict[str, Any]:
    """The steady subscribers' figures, from the merged worker summaries."""
    ramp, window = totals.ramp, totals.window
    steady = len(window.per_client)
    ideal = steady * machines_per_client * tick_hz
    rates = sorted(count / window_s for count in window.per_client) or [0.0]
    raw = {q: percentile(window.latency_bins, q) for q in (0.5, 0.99)}
    return {
        "connected": ramp.connected,
        "failed": ramp.failed,
        "failures": dict(ramp.failures),
        "ramp_s": ramp.seconds,
        "window_s": window_s,
        "tick_hz": tick_hz,
        "steady": steady,
        "messages": window.messages,
        "msgs_per_s": window.messages / window_s,
        "ideal_per_s": ideal,
        "delivered_pct": 100.0 * window.messages / window_s / ideal if ideal else None,
        "client_min_hz": rates[0],
        "client_p50_hz": rates[len(rates) // 2],
        "latency_p50_ms": _ms(raw[0.5]),
        "latency_p99_ms": _ms(raw[0.99]),
        "latency_max_ms": _ms(window.latency_max_s),
        "latency_min_ms": _ms(window.latency_min_s),
        **fanout_delay(window),
        "seq_gaps": window.seq_gaps,
        "seq_repeats": window.seq_repeats,
        "closed_by_server": {str(code): n for code, n in window.closed_by_server.items()},
        "connections_lost": window.lost,
        "data_segments": window.data_segments,
        "segment_clients": window.segment_clients,
        "client_cpu_pct": 100.0 * window.cpu_s / window_s,
        "receipt_clock": "kernel SO_TIMESTAMPNS" if window.kernel_timestamps else "time.time()",
        "client_late_start_s": window.late_start_s,
    }


def describe_stall(stall: StallSummary) -> dict[str, Any]:
    if not stall.clients:
        return {}
    return {
        "stalled_clients": stall.clients,
        "stalled_at_end": dict(stall.at_stall_end),
        "stalled_outcomes": dict(stall.outcomes),
        "stalled_frames": stall.frames,
        "stalled_gaps": stall.seq_gaps,
    }


def describe_probe(probe: ProbeResult) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "probe_rest_n": len(probe.rest_s),
        "probe_rest_failed": sum(probe.rest_failures.values()),
        "probe_rest_failures": dict(probe.rest_failures),
        "probe_ws_n": len(probe.handshake_s),
        "probe_ws_failed": sum(probe.ws_failures.values()),
        "probe_ws_failures": dict(probe.ws_failures),
        "probe_skipped": probe.skipped,
    }
    for name, values in (
        ("probe_rest", probe.rest_s),
        ("probe_hs", probe.handshake_s),
        ("probe_first", probe.first_frame_s),
    ):
        figures |= quantiles_ms(name, values)
    return figures


def quantiles_ms(name: str, values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {f"{name}_p50_ms": None, f"{name}_p99_ms": None, f"{name}_max_ms": None}
    p50, p99 = np.percentile(np.asarray(values) * 1e3, [50, 99])
    return {
        f"{name}_p50_ms": float(p50),
        f"{name}_p99_ms": float(p99),
        f"{name}_max_ms": 1e3 * max(values),
    }


def describe_churn(churned: ChurnResult) -> dict[str, Any]:
    return {
        "churn_attempted": churned.attempted,
        "churn_completed": churned.completed,
        "churn_failed": sum(churned.failures.values()),
        "churn_failures": dict(churned.failures),
        "churn_styles": dict(churned.styles),
        "churn_behind": churned.behind,
        "churn_rate": churned.attempted / churned.seconds if churned.seconds else None,
        "churn_cpu_pct": 100.0 * churned.cpu_s / churned.seconds if churned.seconds else None,
        **quantiles_ms("churn_hs", churned.handshake_s),
    }


def churn_memory(figures: dict[str, Any]) -> dict[str, Any]:
    """Server memory before, half-way through and after the churn, per 1,000 churned."""
    samples = figures.get("memory_samples") or []
    completed = figures.get("churn_completed") or 0
    if not samples or not completed:
        return {}
    first, last = samples[0][0], samples[-1][0]
    middle = min(samples, key=lambda sample: abs(sample[0] - (first + last) / 2))
    before, mid, after = samples[0][1], middle[1], figures["rss_end_mb"]
    thousands = completed / 1000
    return {
        "churn_rss_before_mb": before,
        "churn_rss_mid_mb": mid,
        "churn_rss_after_mb": after,
        "churn_kb_per_1k": (after - before) * 1024 / thousands,
        "churn_second_half_kb_per_1k": (after - mid) * 1024 / (thousands / 2),
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


def _ms(seconds: float | None) -> float | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    return seconds * 1e3


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
    """Derived figures, once the window is in: cost per message, memory per connection, the
    server's counters, and the multiplexed clients' writes per tick."""
    if "error" in row:
        return
    messages = row["messages"]
    row["server_cpu_pct"] = 100.0 * row["server_cpu_s"] / row["window_s"]
    row["server_us_per_msg"] = 1e6 * row["server_cpu_s"] / messages if messages else None
    row["server_system_pct"] = (
        100.0 * row["server_system_s"] / row["server_cpu_s"] if row["server_cpu_s"] else None
    )
    row["other_cpu_pct"] = (
        row["machine_busy_pct"]
        - row["server_cpu_pct"]
        - row["client_cpu_pct"]
        - row["bench_cpu_pct"]
        - (row.get("churn_cpu_pct") or 0.0)
        - (row.get("redis_cpu_pct") or 0.0)
    )
    grown = row["rss_loaded_mb"] - row["rss_idle_mb"]
    row["rss_per_conn_kb"] = grown * 1024 / row["connected"] if row["connected"] else None
    row |= server_figures(
        row.pop("metrics_began", None),
        row.pop("metrics_ended", None),
        row.pop("metrics_final", None),
    )
    if row.get("tick_mean_ms") is not None and row["subscribers"]:
        row["tick_ms_per_1k"] = row["tick_mean_ms"] / (row["subscribers"] / 1000)
    ticks = row["window_s"] * (row.get("ticks_per_s") or 0.0)
    if row["segment_clients"] and ticks:
        row["segments_per_client_tick"] = row["data_segments"] / row["segment_clients"] / ticks
    if row["multiplex"] and messages:
        row["server_us_per_client_tick"] = row["server_us_per_msg"] * row["multiplex"]
    row.pop("memory_samples", None)
    row.pop("seqs", None)


def add_stall_comparison(rows: Sequence[dict[str, Any]]) -> None:
    """Each stalled run against the run of the same target and size without the stall."""
    controls = {
        (row["target"], row["subscribers"]): row
        for row in rows
        if row["stall_scenario"] and not row["stall"] and "error" not in row
    }
    for row in rows:
        control = controls.get((row["target"], row["subscribers"]))
        if not row["stall"] or control is None or "error" in row:
            continue
        row["control_delivered_pct"] = control.get("delivered_pct")
        row["control_p99_ms"] = control.get("latency_p99_ms")
        row["delivered_change_pct"] = _change(
            row.get("delivered_pct"), control.get("delivered_pct")
        )
        row["p99_change_pct"] = _change(row.get("latency_p99_ms"), control.get("latency_p99_ms"))


def _change(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return 100.0 * (value - reference) / reference


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

Column = tuple[str, str, str]
FIRST: tuple[Column, ...] = (
    ("target", "{:<8}", "target"),
    ("N", "{:>6,}", "subscribers"),
    ("run", "{:<16}", "label"),
)
DELIVERY: tuple[Column, ...] = (
    *FIRST,
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
LATENCY: tuple[Column, ...] = (
    *FIRST,
    ("ts p50", "{:>7.1f}", "latency_p50_ms"),
    ("ts p99", "{:>7.1f}", "latency_p99_ms"),
    ("ts max", "{:>7.1f}", "latency_max_ms"),
    ("ts min", "{:>7.1f}", "latency_min_ms"),
    ("ts idle", "{:>7.1f}", "latency_idle_ms"),
    ("fan p50", "{:>7.1f}", "fanout_p50_ms"),
    ("fan p99", "{:>7.1f}", "fanout_p99_ms"),
    ("fan max", "{:>7.1f}", "fanout_max_ms"),
    ("tick gap max", "{:>12.1f}", "tick_gap_max_ms"),
)
COST: tuple[Column, ...] = (
    *FIRST,
    ("procs", "{:>5}", "client_procs"),
    ("ramp s", "{:>6.1f}", "ramp_s"),
    ("ramp skip", "{:>9}", "ramp_lost_ticks"),
    ("srv CPU%", "{:>8.0f}", "server_cpu_pct"),
    ("us/msg", "{:>7.2f}", "server_us_per_msg"),
    ("sys%", "{:>4.0f}", "server_system_pct"),
    ("RSS idle MB", "{:>11.1f}", "rss_idle_mb"),
    ("RSS MB", "{:>7.1f}", "rss_loaded_mb"),
    ("KB/conn", "{:>7.1f}", "rss_per_conn_kb"),
    ("MB/min", "{:>6.1f}", "rss_growth_mb_per_min"),
    ("cli CPU%", "{:>8.0f}", "client_cpu_pct"),
    ("bench CPU%", "{:>10.0f}", "bench_cpu_pct"),
    ("srv wait%", "{:>9.0f}", "server_run_queue_wait_pct"),
    ("other CPU%", "{:>10.0f}", "other_cpu_pct"),
    ("bg CPU%", "{:>7.0f}", "background_cpu_pct"),
    ("load", "{:>5.2f}", "load_1min"),
    ("tries", "{:>5}", "attempts"),
)
PROBE: tuple[Column, ...] = (
    *FIRST,
    ("REST n", "{:>6,}", "probe_rest_n"),
    ("REST p50", "{:>8.1f}", "probe_rest_p50_ms"),
    ("REST p99", "{:>8.1f}", "probe_rest_p99_ms"),
    ("REST max", "{:>8.1f}", "probe_rest_max_ms"),
    ("fail", "{:>4,}", "probe_rest_failed"),
    ("WS n", "{:>5,}", "probe_ws_n"),
    ("hs p50", "{:>7.1f}", "probe_hs_p50_ms"),
    ("hs p99", "{:>7.1f}", "probe_hs_p99_ms"),
    ("hs max", "{:>7.1f}", "probe_hs_max_ms"),
    ("1st p99", "{:>7.1f}", "probe_first_p99_ms"),
    ("fail", "{:>4,}", "probe_ws_failed"),
    ("skip", "{:>4,}", "probe_skipped"),
)
SERVER: tuple[Column, ...] = (
    *FIRST,
    ("gc0 max", "{:>7.1f}", "gc_max_g0_ms"),
    ("gc1 max", "{:>7.1f}", "gc_max_g1_ms"),
    ("gc2 max", "{:>7.1f}", "gc_max_g2_ms"),
    (">20ms run", "{:>9.0f}", "gc_over_20ms_run"),
    (">20ms win", "{:>9.0f}", "gc_over_20ms_window"),
    ("win <=", "{:>6.0f}", "gc_window_worst_ms"),
    ("overrun run", "{:>11.0f}", "overruns_run"),
    ("overrun win", "{:>11.0f}", "overruns_window"),
    ("fan-out skip win", "{:>16.0f}", "fanout_skipped_window"),
    ("fan-out ms", "{:>10.1f}", "fanout_ms_mean"),
    ("dropped", "{:>8.0f}", "dropped_run"),
    ("slow", "{:>5.0f}", "slow_closes_run"),
    ("step ms", "{:>7.1f}", "step_ms"),
    ("tick ms", "{:>7.1f}", "tick_mean_ms"),
    ("ms/1k", "{:>5.2f}", "tick_ms_per_1k"),
    ("late ms", "{:>7.1f}", "tick_late_mean_ms"),
    ("enc/tick", "{:>8.1f}", "encodes_per_tick"),
    ("conns end", "{:>9.0f}", "connections_end"),
    ("expected", "{:>8,}", "connections_expected"),
)
STALL: tuple[Column, ...] = (
    *FIRST,
    ("%ideal", "{:>6.1f}", "delivered_pct"),
    ("p99", "{:>6.1f}", "latency_p99_ms"),
    ("ctl %ideal", "{:>10.1f}", "control_delivered_pct"),
    ("ctl p99", "{:>7.1f}", "control_p99_ms"),
    ("d%ideal", "{:>7.1f}", "delivered_change_pct"),
    ("d p99 %", "{:>7.1f}", "p99_change_pct"),
    ("RSS before", "{:>10.1f}", "rss_stall_before_mb"),
    ("RSS max", "{:>7.1f}", "rss_stall_max_mb"),
    ("RSS after", "{:>9.1f}", "rss_stall_after_mb"),
    ("TCP MB max", "{:>10.1f}", "tcp_mem_max_mb"),
    ("dropped", "{:>8.0f}", "dropped_window"),
    ("slow", "{:>5.0f}", "slow_closes_window"),
)
CHURN: tuple[Column, ...] = (
    *FIRST,
    ("started", "{:>7,}", "churn_attempted"),
    ("done", "{:>6,}", "churn_completed"),
    ("fail", "{:>4,}", "churn_failed"),
    ("per s", "{:>5.0f}", "churn_rate"),
    ("hs p50", "{:>6.1f}", "churn_hs_p50_ms"),
    ("hs p99", "{:>6.1f}", "churn_hs_p99_ms"),
    ("conns end", "{:>9.0f}", "connections_end"),
    ("subs end", "{:>8.0f}", "subscriptions_end"),
    ("expected", "{:>8,}", "connections_expected"),
    ("back s", "{:>6.1f}", "back_s"),
    ("RSS before", "{:>10.1f}", "churn_rss_before_mb"),
    ("RSS mid", "{:>7.1f}", "churn_rss_mid_mb"),
    ("RSS after", "{:>9.1f}", "churn_rss_after_mb"),
    ("KB/1k", "{:>6.0f}", "churn_kb_per_1k"),
    ("2nd half KB/1k", "{:>14.0f}", "churn_second_half_kb_per_1k"),
    ("fds idle", "{:>8}", "fds_idle"),
    ("fds end", "{:>7}", "fds_end"),
)
MULTIPLEX: tuple[Column, ...] = (
    *FIRST,
    ("M", "{:>3}", "multiplex"),
    ("fleet", "{:>5}", "fleet"),
    ("variants", "{:>8.0f}", "variants"),
    ("msg/s", "{:>8,.0f}", "msgs_per_s"),
    ("ideal", "{:>8,.0f}", "ideal_per_s"),
    ("%ideal", "{:>6.1f}", "delivered_pct"),
    ("us/msg", "{:>6.2f}", "server_us_per_msg"),
    ("us/cli-tick", "{:>11.1f}", "server_us_per_client_tick"),
    ("segs/cli-tick", "{:>13.2f}", "segments_per_client_tick"),
    ("enc/tick", "{:>8.1f}", "encodes_per_tick"),
    ("ts p99", "{:>6.1f}", "latency_p99_ms"),
)


BUS: tuple[Column, ...] = (
    *FIRST,
    ("%ideal", "{:>6.1f}", "delivered_pct"),
    ("ts p50", "{:>6.1f}", "latency_p50_ms"),
    ("ts p99", "{:>6.1f}", "latency_p99_ms"),
    ("hop p50", "{:>7.2f}", "hop_p50_ms"),
    ("hop p99", "{:>7.2f}", "hop_p99_ms"),
    ("bus B/tick", "{:>10,.0f}", "bus_bytes_per_tick"),
    ("msgs/tick", "{:>9.0f}", "bus_messages_per_tick"),
    ("unpub", "{:>5.0f}", "bus_unpublished_window"),
    ("srv CPU%", "{:>8.0f}", "server_cpu_pct"),
    ("redis CPU%", "{:>10.1f}", "redis_cpu_pct"),
    ("cli CPU%", "{:>8.0f}", "client_cpu_pct"),
    ("other%", "{:>6.0f}", "other_cpu_pct"),
)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    widths = [max(len(title), len(fmt.format(0))) for title, fmt, _ in columns]
    widths[2] = max([widths[2], *(len(str(row.get("label", ""))) for row in rows)])
    header = " ".join(
        title.rjust(width) if fmt.startswith("{:>") else title.ljust(width)
        for (title, fmt, _), width in zip(columns, widths, strict=True)
    )
    lines = [header]
    for row in rows:
        cells = []
        for (_, fmt, key), width in zip(columns, widths, strict=True):
            value = row.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("-".rjust(width))
            elif fmt.startswith("{:>"):
                cells.append(fmt.format(value).rjust(width))
            else:
                cells.append(fmt.format(value).ljust(width))
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
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "an unknown commit (not a git checkout)"
    changed = [line[3:] for line in changed if line.strip()]
    if not changed:
        return f"commit {commit}"
    return f"commit {commit} with uncommitted changes to {', '.join(changed)}"


def header_lines(options: Options) -> list[str]:
    cores = os.cpu_count() or 0
    loop = "uvloop" if options.client_uvloop else "asyncio"
    scenario = options.scenario
    extras = []
    if scenario.probe:
        extras.append(
            f"probe {scenario.probe_rest_hz:g} REST/s + {scenario.probe_ws_hz:g} handshakes/s"
        )
    if scenario.stall:
        extras.append(
            f"stall {scenario.stall} clients for {scenario.stall_s:g} s, then {scenario.stall_then}"
        )
    if scenario.churn_s:
        extras.append(
            f"churn {scenario.churn_s:g} s at {scenario.churn_rate:g}/s "
            f"(<= {scenario.churn_max:,}, {scenario.churn_concurrency} at once)"
        )
    if scenario.multiplex:
        extras.append(f"/ws, {scenario.multiplex} machines per client of {scenario.fleet_size}")
    return [
        f"machine: {cores} cores ({platform.machine()}, {platform.system()}), "
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}",
        f"server code: {REPO} at {code_version()}",
        f"ran: targets {', '.join(options.targets)}; subscribers {options.sizes}; "
        f"window {options.measured_s:g} s after {options.settle_s:g} s settle; "
        f"tick {options.tick_hz:g} Hz; ramp {options.ramp_concurrency} handshakes at a time",
        f"scenario: {'; '.join(extras) or 'plain'}",
        f"clients: raw-socket WebSocket readers ({loop} loop, nice {options.client_nice}), "
        f"<= {MAX_PER_PROCESS:,} per process; they share the {cores} cores with the server "
        "(see cli CPU%, srv wait%)",
    ]


NOTES = """\
msg/s: frames of the ticks the server made in the window (by seq; the baseline, which has no
seq: frames that arrived in the window), per second, steady clients only (stalled ones apart);
ideal = steady clients x machines each x tick rate. cli min/p50: one client's frames per second.
gaps: seqs missing between consecutive frames of one client, summed (the server skips frames for
a client whose send buffer is full). ticks/s: the server's own seq count over the window; a tick
the server starts late is skipped and seq stays contiguous, so skipped ticks show here, in
"ramp skip" and in "overrun", not in gaps.
Receipt times are the kernel's receive timestamps of the client sockets (SO_TIMESTAMPNS), so
client lag is left out; a read's time is its newest frame's, older frames in it are not timed.
ts: receipt time - frame timestamp, as is. Our timestamps are the wall time each tick was due
(after overruns too), so ts is the full delay: timer lateness, the step, the fan-out and the
kernel. ts idle: its median for one client of the idle server before the ramp (what one tick
costs when nobody waits behind a fan-out). The baseline's timestamps are taken at generation.
fan: receipt time - first receipt of the same seq by any client: how long one tick takes to
reach everyone. tick gap max: the longest interval between first receipts of consecutive seqs.
srv CPU%: server process CPU (user+sys, all threads) in the window, 100 = one core; us/msg:
that CPU per delivered message (the probe's and churn's work included); sys%: the kernel's share
of it (sends and, on loopback, the delivery to the reader). KB/conn: (RSS with
clients, at the window's end - RSS idle) / connections; MB/min: RSS growth in the window
(least squares over samples every 0.5 s). cli CPU%: all subscriber processes; bench CPU%:
this process (the probe). srv wait%: time the server was runnable but waiting for a core
(schedstat). other CPU%: the rest of the machine in the window (kernel network work not
charged to a process, any other load); bg CPU%, load: the machine before the run. Rerun when
they are high (--retry-noisy does; tries: the runs made, the quietest kept).
probe: REST = GET /machines/{id}/data on keep-alive connections, from just before the request
is sent to the kernel's receipt of the answer's last byte; hs = a new connection from just
before connect() to the receipt of the 101 answer; 1st = to the receipt of its first frame.
server (from /metrics): the longest GC pause per generation and pauses over 20 ms over the whole
run ("run", ramp included) and in the window ("win <=": the longest in the window took at
most this long, the bound of its histogram bucket); overrun = tick slots skipped; step ms =
the simulation step of the window's last tick; tick ms = mean time of a tick in the window
(step + publish; a server with the fan-out inside the tick adds the fan-out), ms/1k = per
1,000 subscribers; fan-out skip = frames the fan-out passed over for a newer one, fan-out ms
= its mean time per frame (both 0 for a server without the counters); late ms =
mean lateness of a tick's start; enc/tick = snapshots encoded per tick; conns end = open
WebSockets once the clients' churn and probe had gone, against the clients still open.
stall: steady clients' delivery and p99 in the stalled run against the control run of the same
size (d: change in %); RSS before/max/after the stall; TCP MB = all TCP socket buffers of the
machine (the stalled data waits there); dropped/slow: frames skipped and slow-consumer closes
in the window (from /metrics). The stalled clients' TCP state at the stall's end and what they
saw by the end of the window follow the tables.
churn: clients started, completed, failed, start rate, their handshake times; RSS before, half-
way and after (after connections came back and the GC tuner had its turn), per 1,000 churned,
and the growth in the second half only (a leak grows there too; a high-water mark does not).
mux: /ws clients subscribed to M machines; us/cli-tick = server CPU per client per tick (one
write); segs/cli-tick = TCP data segments a client received per tick (1.0 = one write)."""


def print_report(rows: Sequence[dict[str, Any]]) -> None:
    tables = [("delivery", DELIVERY, rows), ("latency, ms", LATENCY, rows), ("cost", COST, rows)]
    if any(row.get("probe_rest_n") is not None for row in rows):
        tables.append(("probe, ms", PROBE, rows))
    ours = [row for row in rows if row["target"] in ("ours", "bus")]
    if ours:
        tables.append(("server counters (/metrics), ms", SERVER, ours))
    if any(row["stall_scenario"] for row in rows):
        tables.append(("stall", STALL, [row for row in rows if row["stall_scenario"]]))
    if any(row["churn_s"] for row in rows):
        tables.append(("churn", CHURN, [row for row in rows if row["churn_s"]]))
    if any(row["multiplex"] for row in rows):
        tables.append(("multiplex", MULTIPLEX, [row for row in rows if row["multiplex"]]))
    if any(row["target"] == "bus" for row in rows):
        tables.append(("scale-out on Redis, ms", BUS, rows))
    for title, columns, selected in tables:
        print(f"\n{title}")
        print(format_table(selected, columns))
    print()
    print(NOTES)
    for row in rows:
        extra = _row_remarks(row)
        if extra:
            print(f"{row['target']} N={row['subscribers']:,} {row['label']}: {'; '.join(extra)}")
    for line in ratio_lines(rows):
        print(line)


def _row_remarks(row: dict[str, Any]) -> list[str]:
    remarks = list(row.get("warnings", []))
    if row.get("failures"):
        remarks.append(f"connect failures {row['failures']}")
    if row.get("closed_by_server"):
        remarks.append(f"steady clients closed by the server {row['closed_by_server']}")
    if row.get("client_late_start_s"):
        remarks.append(
            f"a client process learnt of the window {row['client_late_start_s']:.2f} s late: "
            "its first frames are missing from the count"
        )
    if row.get("connections_lost"):
        remarks.append(f"{row['connections_lost']} steady connections lost")
    if row.get("stalled_clients"):
        remarks.append(
            f"{row['stalled_clients']} stalled clients: TCP state at the stall's end "
            f"{row['stalled_at_end']}, by the window's end {row['stalled_outcomes']}, "
            f"{row['stalled_frames']:,} frames read in the window, {row['stalled_gaps']:,} "
            "seqs skipped"
        )
    if row.get("server_closes"):
        remarks.append(
            f"streams the server closed, by code {row['server_closes']} "
            f"({row.get('server_closes_dropped', 0):,} frames dropped for them)"
        )
    if row.get("gc_over_20ms_window"):
        pauses = row["gc_window_pauses"]
        remarks.append(f"GC pauses in the window, by generation and bound: {pauses}")
    for key in ("probe_rest_failures", "probe_ws_failures", "churn_failures"):
        if row.get(key):
            remarks.append(f"{key.replace('_', ' ')} {row[key]}")
    if row.get("churn_styles"):
        remarks.append(f"churned clients left by {row['churn_styles']}")
    if row.get("churn_behind"):
        remarks.append(f"{row['churn_behind']} churn starts waited for a free slot")
    log = row.get("server_log") or {}
    if log.get("warnings") or log.get("errors"):
        remarks.append(f"server log: {log}")
    return remarks


def ratio_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Ours against the baseline, and the bus against one process, at each size where both
    ran."""
    lines = []
    by_key = {(row["target"], row["subscribers"]): row for row in rows if "error" not in row}
    for size in sorted({row["subscribers"] for row in rows}):
        bus, one = by_key.get(("bus", size)), by_key.get(("ours", size))
        if bus is not None and one is not None:
            parts = [
                _ratio("delivered (bus/one)", bus["msgs_per_s"], one["msgs_per_s"]),
                _ratio("p99 (one/bus)", one.get("latency_p99_ms"), bus.get("latency_p99_ms")),
                _ratio(
                    "server CPU per msg (bus/one)",
                    bus["server_us_per_msg"],
                    one["server_us_per_msg"],
                ),
            ]
            lines.append(f"bus vs one process at N={size:,}: " + ", ".join(parts))
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


def resolve_targets(choice: str, options: Options) -> list[Target]:
    ours = Target("ours", "/", options.tick_hz, ours=True)
    if choice == "ours":
        return [ours]
    if choice in ("bus", "scale"):
        bus = Target("bus", "/", options.tick_hz, ours=True, bus_workers=options.bus_workers)
        return [bus] if choice == "bus" else [ours, bus]
    reason = baseline_missing()
    if reason is None and options.scenario.ours_only:
        reason = "--stall, --churn and --multiplex need /ws and /metrics, which it lacks"
    if reason is not None:
        print(f"skipping the baseline: {reason}")
        return [ours] if choice == "both" else []
    if options.tick_hz != BASELINE_TICK_HZ:
        print(f"note: the baseline sends at a fixed {BASELINE_TICK_HZ:g} Hz whatever --tick-hz")
    baseline = Target("baseline", "/machines", BASELINE_TICK_HZ, ours=False)
    return [baseline] if choice == "baseline" else [baseline, ours]


def plan_runs(targets: Sequence[Target], options: Options) -> list[Run]:
    """Every (target, size), twice with ``--stall``: the control run first, then the stall."""
    scenario = options.scenario
    stalls = [scenario.stall]
    if scenario.stall and scenario.stall_control:
        stalls = [0, scenario.stall]
    return [
        Run(target, size, min(stall, size))
        for size in options.sizes
        for target in targets
        for stall in stalls
    ]


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
    parser.add_argument(
        "--client-procs",
        type=int,
        help=f"default: <= {MAX_PER_PROCESS} clients (or {MAX_FRAMES_PER_PROCESS} frames a "
        "tick) each",
    )
    parser.add_argument(
        "--ramp-concurrency",
        type=int,
        default=200,
        help="handshakes in flight at once, over all client processes",
    )
    parser.add_argument(
        "--target",
        choices=("ours", "baseline", "both", "bus", "scale"),
        default="ours",
        help="ours: one process; baseline: the original design; both: the two; bus: one "
        "simulator and --bus-workers web processes on Redis (--workers); scale: ours and bus",
    )
    parser.add_argument(
        "--bus-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis of --target bus|scale",
    )
    parser.add_argument("--bus-workers", type=int, default=2, help="web processes on the bus")
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
        help="hard seconds per run (default: 60 + N/50 + settle + window + tails)",
    )
    parser.add_argument(
        "--client-nice",
        type=int,
        default=19,
        help="niceness added to the client processes (0: they compete with the server)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for other load on the machine to stop",
    )
    parser.add_argument(
        "--retry-noisy",
        type=int,
        default=0,
        metavar="N",
        help=f"run again, up to N times, when other work took over {NOISY_OTHER_PCT:g}%% of a "
        "core in the window; the quietest run is kept",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the servers' logs (kept anyway on errors)"
    )
    scenarios = parser.add_argument_group("scenarios")
    scenarios.add_argument(
        "--probe",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="REST reads and new handshakes timed while the subscribers stream",
    )
    scenarios.add_argument("--probe-rest-hz", type=float, default=20.0)
    scenarios.add_argument("--probe-ws-hz", type=float, default=5.0)
    scenarios.add_argument(
        "--stall", type=int, default=0, metavar="K", help="clients that stop reading"
    )
    scenarios.add_argument("--stall-seconds", type=float, default=30.0)
    scenarios.add_argument("--stall-then", choices=("resume", "close"), default="resume")
    scenarios.add_argument(
        "--stall-control",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run each size without the stall first, to compare with",
    )
    scenarios.add_argument(
        "--churn", type=float, default=0.0, metavar="SECONDS", help="clients come and go"
    )
    scenarios.add_argument("--churn-rate", type=float, default=200.0, help="starts per second")
    scenarios.add_argument("--churn-max", type=int, default=20_000, help="starts at most")
    scenarios.add_argument("--churn-concurrency", type=int, default=100, help="at once at most")
    scenarios.add_argument(
        "--multiplex", type=int, default=0, metavar="M", help="/ws clients with M machines each"
    )
    scenarios.add_argument(
        "--fleet-size", type=int, help="machines in the fleet of --multiplex (default 5 x M)"
    )
    args = parser.parse_args(argv)
    sizes = tuple(int(size) for size in args.subscribers.split(",") if size.strip())
    if not sizes or args.window <= 0 or args.tick_hz <= 0:
        parser.error("sizes, window and tick rate must be positive")
    if min(sizes) < (0 if args.churn else 1):
        parser.error("sizes must be positive (0 only with --churn)")
    if not 0 <= args.stall <= max(sizes) or not 0 < args.stall_seconds <= MAX_STALL_S:
        parser.error(f"--stall must be 0..N and --stall-seconds 0..{MAX_STALL_S:g}")
    if not 0 <= args.churn <= MAX_CHURN_S or not 0 < args.churn_max <= MAX_CHURN_COUNT:
        parser.error(f"--churn must be 0..{MAX_CHURN_S:g} s and --churn-max 1..{MAX_CHURN_COUNT:,}")
    if args.churn_rate <= 0 or args.churn_concurrency < 1:
        parser.error("--churn-rate and --churn-concurrency must be positive")
    if args.multiplex < 0 or (args.fleet_size is not None and args.fleet_size < args.multiplex):
        parser.error("--multiplex must be >= 0 and --fleet-size >= --multiplex")
    if args.probe_rest_hz < 0 or args.probe_ws_hz < 0:
        parser.error("probe rates must be >= 0")
    scenario = Scenario(
        probe=args.probe,
        probe_rest_hz=args.probe_rest_hz,
        probe_ws_hz=args.probe_ws_hz,
        stall=args.stall,
        stall_s=args.stall_seconds,
        stall_then=args.stall_then,
        stall_control=args.stall_control,
        churn_s=args.churn,
        churn_rate=args.churn_rate,
        churn_max=args.churn_max,
        churn_concurrency=args.churn_concurrency,
        multiplex=args.multiplex,
        fleet_size=args.fleet_size or 5 * args.multiplex,
    )
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
        bus_url=args.bus_url,
        bus_workers=args.bus_workers,
        client_uvloop=_use_uvloop(args.client_loop),
        client_nice=args.client_nice,
        json_path=args.json,
        wait_quiet_s=max(0.0, args.wait_quiet),
        retry_noisy=max(0, args.retry_noisy),
        keep_logs=args.keep_logs,
        scenario=scenario,
    )
    return options, args.target


def _use_uvloop(choice: str) -> bool:
    available = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not available:
        sys.exit("--client-loop uvloop: uvloop is not installed")
    return choice == "uvloop" or (choice == "auto" and available)


def main(argv: Sequence[str] | None = None) -> None:
    options, choice = parse_args(argv)
    targets = resolve_targets(choice, options)
    if not targets:
        sys.exit("nothing to run")
    options = dataclasses.replace(options, targets=tuple(target.name for target in targets))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    atexit.register(_stop_children)
    print("\n".join(header_lines(options)), flush=True)
    rows = []
    log_dir = Path(tempfile.mkdtemp(prefix="fanout-"))
    for run in plan_runs(targets, options):
        label = f" ({run.stall} stalling)" if run.stall else ""
        print(f"{run.target.name}, {run.size:,} subscribers{label} ...", flush=True)
        rows.append(run_quietest(run, options, log_dir))
    add_stall_comparison(rows)
    print_report(rows)
    if options.keep_logs or any("error" in row for row in rows):
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
        "window_s": options.measured_s,
        "settle_s": options.settle_s,
        "tick_hz": options.tick_hz,
        "server_args": list(options.server_args),
        "scenario": dataclasses.asdict(options.scenario),
        "code": code_version(),
    }
    runs = [{key: _rounded(value) for key, value in row.items()} for row in rows]
    path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    print(f"figures written to {path}")


if __name__ == "__main__":
    main()
