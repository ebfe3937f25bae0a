"""Frame sources: what the tick task steps: the local fleet, or a replay (server/replay.py)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from simulation import Fleet, Frame
from simulation.catalog import FleetCatalog

# Above this many machines a step runs in a worker thread (numpy releases the GIL in
# large array operations) so the event loop keeps serving sockets meanwhile.
THREAD_STEP_MIN_MACHINES = 5_000


class SourceExhaustedError(Exception):
    """A source with no more frames (a replay at its end): the ticks stop, nothing failed."""


class FrameSource(Protocol):
    """Produces one frame per tick of the fleet its catalog describes."""

    catalog: FleetCatalog

    @property
    def seq(self) -> int:
        """The seq of the latest frame produced (0 before the first)."""

    async def step(self) -> Frame: ...

    def close(self) -> None: ...


class LocalSource:
    """Steps a fleet in this process. ``lock`` is held while a step runs: hold it to change
    the fleet between two steps (the plant-control service does)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.catalog = fleet.catalog
        self.lock = asyncio.Lock()
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-step")
            if fleet.size >= THREAD_STEP_MIN_MACHINES
            else None
        )

    @property
    def seq(self) -> int:
        return self.fleet.seq

    @property
    def uses_worker_thread(self) -> bool:
        return self._executor is not None

    async def step(self) -> Frame:
        async with self.lock:
            if self._executor is None:
                return self.fleet.step()
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self.fleet.step)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
