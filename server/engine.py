"""The tick task: takes a frame from the source on a drift-free schedule, hands it to the sinks.

The engine knows no consumer by name: the store, and with it the fan-out, is one sink among
those the app chose (:mod:`server.sinks`). The fan-out runs on a task of its own, woken by
the store, so a slow broadcast delays no tick (``docs/architecture.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from server.clock import Clock
from server.sinks import SinkSet
from server.source import FrameSource, SourceExhaustedError
from simulation import Frame
from simulation.catalog import FleetCatalog

SLOT_TOLERANCE = 1e-6  # fraction of a period: a slot due "now" counts as overrun

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EngineStats:
    ticks: int = 0  # frames handed to the sinks
    skipped_ticks: int = 0  # slots overrun (a feed from a bus: ticks it never received)
    seq: int = 0
    last_lateness_s: float = 0.0
    last_tick_at: float = 0.0
    last_step_s: float = 0.0
    last_tick_s: float = 0.0


class FrameFeed(Protocol):
    """What hands this process its frames: the tick task here, or a bus from a simulator.
    ``/health`` and ``/metrics`` read it; :meth:`start` returns once the first frame is in."""

    stats: EngineStats
    sinks: SinkSet
    clock: Clock

    @property
    def catalog(self) -> FleetCatalog: ...

    @property
    def alive(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Engine:
    """Tick k is due at ``t0 + k / tick_hz``; slots a late tick overran are counted, not made up."""

    def __init__(
        self,
        source: FrameSource,
        sinks: SinkSet,
        *,
        tick_hz: float,
        clock: Clock,
        on_tick: Callable[[float, float], None] | None = None,
    ) -> None:
        self.source = source
        self.sinks = sinks
        self.period_s = 1.0 / tick_hz
        self.dt_s = source.catalog.dt_s
        self.clock = clock
        self.stats = EngineStats()
        self.on_tick = on_tick
        self._task: asyncio.Task[None] | None = None
        self._wall_start_s = 0.0

    @property
    def catalog(self) -> FleetCatalog:
        return self.source.catalog

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Take the first frame (so every read has data from the start), then tick."""
        self._wall_start_s = self.clock.wall()
        self._publish(await self.source.step())
        self.stats.last_tick_at = self.clock.now()
        self._task = asyncio.create_task(self._run_logged(), name="tick")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.source.close()

    async def _run_logged(self) -> None:
        try:
            await self.run()
        except SourceExhaustedError as end:
            log.info("%s: no more ticks (seq %d)", end, self.stats.seq)
        except Exception:
            log.exception("the tick task failed; no more ticks will be served")
            raise

    async def run(self) -> None:
        """Step and publish on schedule until cancelled."""
        start = self.clock.now()
        slot = 0
        while True:
            slot += 1
            due = start + slot * self.period_s
            await self.clock.sleep_until(due)
            began = self.clock.now()
            self.stats.last_lateness_s = began - due
            missed = math.floor((began - due) / self.period_s + SLOT_TOLERANCE)
            if missed > 0:
                slot += missed
                self.stats.skipped_ticks += missed
                log.debug("tick overrun: %d slot(s) skipped", missed)
            frame = await self.source.step()
            self.stats.last_step_s = self.clock.now() - began
            self._publish(frame)
            finished = self.clock.now()
            self.stats.ticks += 1
            self.stats.last_tick_at = finished
            self.stats.last_tick_s = finished - began
            if self.on_tick is not None:
                self.on_tick(self.stats.last_tick_s, self.stats.last_lateness_s)

    def _publish(self, frame: Frame) -> None:
        """Hand ``frame`` to the sinks, stamped with the epoch time of its simulated instant.

        Seq ``k`` is due ``k - 1`` ticks after the start, plus the slots skipped so far, each
        tick worth ``dt_s`` of simulated time (``--speed`` times the tick period): timestamps
        are simulated time anchored at the wall clock of the start, and the samples at a given
        ``seq`` stay those of the seeded simulation.
        """
        slots = frame.seq - 1 + self.stats.skipped_ticks
        self.stats.seq = frame.seq
        self.sinks.publish(frame, self._wall_start_s + slots * self.dt_s)
