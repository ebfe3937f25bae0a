"""Abusive clients against ``python -m server`` on loopback: what they cost the server and the
clients beside them.

    python -m bench.abuse                      # both scenarios, defaults below
    python -m bench.abuse --scenario cadence --fill-seconds 60
    python -m bench.abuse --scenario memory --clients 1,5,20

``cadence``: a 100 Hz subscriber's gaps between frames, alone and while 30 maximal history
reads (``seconds=60``: 6,000 frames each once the history is full) run at once.
``memory``: server RSS (``/proc/<pid>/status``) while clients that never read send a burst
of resume requests (``since=0``, all machines, 20 at once) and then 250,000 junk frames,
against the same server's idle drift over the same time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp

from bench.fanout import HOST, REPO, free_port
from tests.rawsocket import masked_text_frame, open_non_reader

START_LIMIT_S = 30.0
STOP_LIMIT_S = 10.0
ALL = ["robot_01", "cnc_01", "conveyor_01"]
RESUME_BURST = 20
JUNK_FRAMES = 250_000
SAMPLE_S = 0.05
WATCH_S = 6.0  # seconds a gap watcher subscribes
ABUSE_LIMIT_S = 60.0


@contextlib.asynccontextmanager
async def server(*arguments: str) -> AsyncIterator[tuple[int, int]]:
    """``python -m server`` on a free loopback port; yields (pid, port); stopped by its pid."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--seed",
        "1",
        *arguments,
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_LIMIT_S
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"http://{HOST}:{port}/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                if time.monotonic() > deadline or process.returncode is not None:
                    raise SystemExit("the server did not start")
                await asyncio.sleep(0.1)
        yield process.pid, port
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_LIMIT_S)
            except TimeoutError:
                process.kill()
                await process.wait()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def cadence(fill_s: float, reads: int) -> None:
    async with (
        server("--tick-hz", "100", "--history-seconds", "60") as (_, port),
        aiohttp.ClientSession() as session,
    ):
        print(f"cadence: filling the history for {fill_s:g} s at 100 Hz ...", flush=True)
        await asyncio.sleep(fill_s)
        url = f"ws://{HOST}:{port}/ws/machines/robot_01"
        alone = await _watch_gaps(url, WATCH_S)

        async def read() -> tuple[float, bytes]:
            began = time.perf_counter()
            url = f"http://{HOST}:{port}/machines/robot_01/history?seconds=60"
            async with session.get(url) as response:
                body = await response.read()
            return time.perf_counter() - began, body

        watcher = asyncio.create_task(_watch_gaps(url, WATCH_S))
        await asyncio.sleep(1.0)  # the watcher is connected and streaming
        results = await asyncio.gather(*(read() for _ in range(reads)))
        during = await watcher
    frames = len(json.loads(results[0][1]))
    longest_s = max(duration for duration, _ in results)
    print(f"  {reads} reads of {frames} frames each, all done in {longest_s:.2f} s")
    print(f"  gaps alone:        max {alone[0]:6.1f} ms, p99 {alone[1]:5.1f} ms")
    print(f"  gaps during reads: max {during[0]:6.1f} ms, p99 {during[1]:5.1f} ms (aim < 50)")


async def _watch_gaps(url: str, seconds: float) -> tuple[float, float]:
    """(max, p99) gaps in ms between a subscriber's frames over ``seconds``, measured in a
    process of its own so the readers' parsing here cannot delay its clock."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.abuse",
        "--watch",
        url,
        "--watch-seconds",
        str(seconds),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await child.communicate()
    gaps = json.loads(output)
    return gaps["max_ms"], gaps["p99_ms"]


async def watch(url: str, seconds: float) -> None:
    """Subscribe to ``url`` for ``seconds``; print the gaps between frames as JSON."""
    arrivals: list[float] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            try:
                await asyncio.wait_for(ws.receive(), left)
            except TimeoutError:
                break
            arrivals.append(time.perf_counter())
    max_ms, p99_ms = _gaps_ms(arrivals)
    print(json.dumps({"max_ms": max_ms, "p99_ms": p99_ms, "frames": len(arrivals)}))


def _gaps_ms(arrivals: Sequence[float]) -> tuple[float, float]:
    gaps = [(b - a) * 1e3 for a, b in itertools.pairwise(arrivals)]
    if len(gaps) < 2:
        return float("nan"), float("nan")
    return max(gaps), statistics.quantiles(gaps, n=100)[98]


async def memory(counts: Sequence[int]) -> None:
    print("memory: server RSS while clients that never read abuse /ws")
    for count in counts:
        async with server() as (pid, port):
            await asyncio.sleep(3.0)  # the history holds frames to resume
            idle_before = rss_bytes(pid)
            await asyncio.sleep(2.0)
            idle_drift = rss_bytes(pid) - idle_before
            before = rss_bytes(pid)
            peak = before
            began = time.perf_counter()
            clients = [await open_non_reader(HOST, port, "/ws") for _ in range(count)]
            await asyncio.gather(*(_abuse(sock) for sock in clients))
            async with aiohttp.ClientSession() as session:
                while time.perf_counter() - began < ABUSE_LIMIT_S:
                    peak = max(peak, rss_bytes(pid))
                    open_now, closed = await _connections(session, port)
                    if open_now == 0:
                        break
                    await asyncio.sleep(SAMPLE_S)
            took_s = time.perf_counter() - began
            for sock in clients:
                sock.close()
            await asyncio.sleep(2.0)
            after = rss_bytes(pid)
        print(
            f"  {count:3d} client(s): peak +{(peak - before) / 1e6:5.1f} MB "
            f"({(peak - before) / count / 1e6:4.2f} MB per client), after +"
            f"{(after - before) / 1e6:5.1f} MB; {closed}/{count} closed by the server in "
            f"{took_s:.1f} s; idle drift over 2 s {idle_drift / 1e6:+.1f} MB"
        )


async def _connections(session: aiohttp.ClientSession, port: int) -> tuple[int, int]:
    """Open WebSocket connections and slow-consumer closes, from ``/metrics``."""
    async with session.get(f"http://{HOST}:{port}/metrics") as response:
        text = await response.text()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        values[name] = value
    return int(float(values["dms_connections"])), int(
        float(values["dms_slow_consumer_disconnects_total"])
    )


async def _abuse(sock: socket.socket) -> None:
    """A resume burst, then junk, never reading, until sent or refused."""
    loop = asyncio.get_running_loop()
    resume = masked_text_frame(json.dumps({"op": "subscribe", "machines": ALL, "since": 0}))
    junk = masked_text_frame("[[[[[")
    try:
        await asyncio.wait_for(loop.sock_sendall(sock, resume * RESUME_BURST), 30)
        await asyncio.wait_for(loop.sock_sendall(sock, junk * JUNK_FRAMES), 30)
    except (ConnectionResetError, BrokenPipeError, TimeoutError):
        pass


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.abuse", description=__doc__)
    parser.add_argument("--scenario", choices=("cadence", "memory", "both"), default="both")
    parser.add_argument("--fill-seconds", type=float, default=60.0)
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument("--clients", default="1,5,20")
    parser.add_argument("--watch", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--watch-seconds", type=float, default=WATCH_S, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.watch:
        asyncio.run(watch(args.watch, args.watch_seconds))
        return
    if args.scenario in ("cadence", "both"):
        asyncio.run(cadence(args.fill_seconds, args.reads))
    if args.scenario in ("memory", "both"):
        asyncio.run(memory([int(part) for part in args.clients.split(",")]))


if __name__ == "__main__":
    main()
