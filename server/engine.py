"""The tick task: steps the whole fleet on a drift-free schedule, feeds the store and the hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from server.clock import Clock
from server.hub import Hub
from server.store import Store
from simulation import Fleet, Frame

# Above this many machines a step runs in a worker thread (numpy releases the GIL in
# large array operations) so the event loop keeps serving sockets meanwhile.
THREAD_STEP_MIN_MACHINES = 5_000

SLOT_TOLERANCE = 1e-6  # fraction of a period: a slot due "now" counts as overrun

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EngineStats:
    ticks: int = 0
    skipped_ticks: int = 0
    last_lateness_s: float = 0.0
    last_tick_at: float = 0.0
    last_step_s: float = 0.0
    last_tick_s: float = 0.0


class Engine:
    """Tick k is due at ``t0 + k / tick_hz``; slots a late tick overran are counted, not made up."""

    def __init__(
        self,
        fleet: Fleet,
        store: Store,
        hub: Hub,
        *,
        tick_hz: float,
        clock: Clock,
        on_tick: Callable[[float, float], None] | None = None,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.hub = hub
        self.period_s = 1.0 / tick_hz
        self.clock = clock
        self.stats = EngineStats()
        self.on_tick = on_tick
        self._task: asyncio.Task[None] | None = None
        self.fleet_lock = asyncio.Lock()  # held while stepping; hold it to change the fleet
        self._wall_start_s = 0.0
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-step")
            if fleet.size >= THREAD_STEP_MIN_MACHINES
            else None
        )

    @property
    def uses_worker_thread(self) -> bool:
        return self._executor is not None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Compute the first frame (so every read has data from the start), then tick."""
        self._wall_start_s = self.clock.wall()
        self._publish(await self._step())
        self.stats.last_tick_at = self.clock.now()
        self._task = asyncio.create_task(self._run_logged(), name="tick")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    async def _run_logged(self) -> None:
        try:
            await self.run()
        except Exception:
            log.exception("the tick task failed; no more ticks will be served")
            raise

    async def run(self) -> None:
        """Step, publish and fan out on schedule until cancelled."""
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
            step_began = self.clock.now()
            frame = await self._step()
            self.stats.last_step_s = self.clock.now() - step_began
            self._publish(frame)
            await self.hub.broadcast()
            finished = self.clock.now()
            self.stats.ticks += 1
            self.stats.last_tick_at = finished
            self.stats.last_tick_s = finished - began
            if self.on_tick is not None:
                self.on_tick(self.stats.last_tick_s, self.stats.last_lateness_s)

    def _publish(self, frame: Frame) -> None:
        """Publish ``frame`` stamped with the wall time its slot was due.

        Seq ``k`` is due ``k - 1`` periods after start, plus the slots skipped so far,
        so timestamps follow the wall clock even after overruns, while the samples
        at a given ``seq`` stay those of the seeded simulation.
        """
        slots = frame.seq - 1 + self.stats.skipped_ticks
        self.store.publish(frame, self._wall_start_s + slots * self.fleet.dt_s)

    async def _step(self) -> Frame:
        if self._executor is None:
            return self.fleet.step()
        async with self.fleet_lock:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.fleet.step)
