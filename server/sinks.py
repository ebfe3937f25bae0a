"""Frame sinks: where the tick task hands every frame, each one isolated from the others.

A sink's ``publish`` runs on the tick task and must return at once: the store keeps the
frame and wakes the fan-out; a sink with I/O to do (a bus publisher, a broker gateway, a
recorder) wraps its work in a :class:`BackgroundSink`, which keeps the newest frames in a
bounded queue for its own task and drops (and counts) the oldest when that task falls
behind. A sink that raises is counted and logged; the other sinks and the tick go on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.registry import Collector

from simulation import Frame

LOG_EVERY_FAILURES = 100  # after the first failure of a sink, log one in this many

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    """Takes every frame the tick produces, stamped with its epoch time; never blocks."""

    name: str

    def publish(self, frame: Frame, timestamp_s: float) -> None: ...


class Outlet(Protocol):
    """An outlet with a connection of its own (a broker gateway): its sink takes the frames,
    it runs for the app's lifetime, and its metrics join ``/metrics``."""

    @property
    def sink(self) -> FrameSink: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def collector(self) -> Collector: ...


@dataclass(slots=True)
class SinkStats:
    """What one sink cost the tick task, and how often it failed or fell behind."""

    frames: int = 0
    failures: int = 0  # publish raised
    dropped: int = 0  # a background sink's frames dropped unsent, behind newer ones
    delivery_failures: int = 0  # a background sink's deliveries that raised
    seconds_total: float = 0.0
    max_seconds: float = 0.0


class SinkSet:
    """The sinks chosen for this process, called in order with their cost and failures kept."""

    def __init__(self, sinks: Sequence[FrameSink]) -> None:
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique, got {names}")
        self.sinks = tuple(sinks)
        self.stats = {sink.name: SinkStats() for sink in sinks}

    def publish(self, frame: Frame, timestamp_s: float) -> None:
        for sink in self.sinks:
            stats = self.stats[sink.name]
            began = time.perf_counter()
            try:
                sink.publish(frame, timestamp_s)
            except Exception:
                stats.failures += 1
                if stats.failures % LOG_EVERY_FAILURES == 1:
                    log.exception(
                        "sink %s failed on seq %d (%d failures so far); the other sinks go on",
                        sink.name,
                        frame.seq,
                        stats.failures,
                    )
            else:
                stats.frames += 1
            elapsed = time.perf_counter() - began
            stats.seconds_total += elapsed
            stats.max_seconds = max(stats.max_seconds, elapsed)
            if isinstance(sink, BackgroundSink):
                stats.dropped, stats.delivery_failures = sink.dropped, sink.failures

    async def close(self) -> None:
        """Stop the sinks that run a task of their own, letting each finish what it holds."""
        for sink in self.sinks:
            if isinstance(sink, BackgroundSink):
                await sink.close()


Deliver = Callable[[Frame, float], Awaitable[None]]


class BackgroundSink:
    """A sink whose work is a coroutine, run on its own task over a bounded queue of frames.

    ``publish`` only appends to the queue (``max_pending`` frames; past that the oldest is
    dropped and counted), so a slow or stuck ``deliver`` never delays the tick. A ``deliver``
    that raises is counted and logged, and the task goes on with the next frame.
    """

    def __init__(self, name: str, deliver: Deliver, *, max_pending: int = 2) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.name = name
        self.deliver = deliver
        self.dropped = 0
        self.delivered = 0
        self.failures = 0
        self._pending: collections.deque[tuple[Frame, float]] = collections.deque(
            maxlen=max_pending
        )
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def publish(self, frame: Frame, timestamp_s: float) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append((frame, timestamp_s))
        self._ready.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"sink-{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                frame, timestamp_s = self._pending.popleft()
                try:
                    await self.deliver(frame, timestamp_s)
                except Exception:
                    self.failures += 1
                    if self.failures % LOG_EVERY_FAILURES == 1:
                        log.exception("sink %s could not deliver seq %d", self.name, frame.seq)
                else:
                    self.delivered += 1
