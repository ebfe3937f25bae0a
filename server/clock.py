"""Time sources for the tick task: the real monotonic clock, injectable for tests."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds, for scheduling."""

    def wall(self) -> float:
        """Unix epoch seconds, to anchor simulated timestamps."""

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline``."""


class MonotonicClock:
    """The real clock: ``time.monotonic`` for scheduling, ``time.time`` for the epoch."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        await asyncio.sleep(max(delay, 0.0))
