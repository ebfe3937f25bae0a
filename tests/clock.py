"""A clock the test drives: the tick task advances only when the test says so."""

from __future__ import annotations

import asyncio

WAIT_LIMIT_S = 5.0


class ManualClock:
    """Stands in for :class:`server.clock.MonotonicClock`; ``tick()`` runs exactly one tick."""

    def __init__(self, start: float = 1_000.0, wall: float = 1_790_000_000.0) -> None:
        self._start = start
        self._now = start
        self._wall = wall
        self._sleeper: tuple[float, asyncio.Future[None]] | None = None
        self._asleep = asyncio.Event()
        self.deadlines: list[float] = []

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall + (self._now - self._start)

    async def sleep_until(self, deadline: float) -> None:
        self.deadlines.append(deadline)
        if deadline <= self._now:
            return
        future = asyncio.get_running_loop().create_future()
        self._sleeper = (deadline, future)
        self._asleep.set()
        await future

    async def tick(self, count: int = 1) -> None:
        """Let the sleeper reach its next deadline ``count`` times; return when it sleeps again."""
        for _ in range(count):
            deadline, future = await self._take_sleeper()
            self._now = max(self._now, deadline)
            future.set_result(None)
        await self._wait_asleep()

    async def jump(self, seconds: float) -> None:
        """Move time on by ``seconds`` at once (a stalled loop), then run the tick that is due."""
        deadline, future = await self._take_sleeper()
        self._now = max(self._now + seconds, deadline)
        future.set_result(None)
        await self._wait_asleep()

    def stall(self, seconds: float) -> None:
        """Move time on without waking the sleeper: the tick task looks stuck."""
        self._now += seconds

    async def _take_sleeper(self) -> tuple[float, asyncio.Future[None]]:
        await self._wait_asleep()
        assert self._sleeper is not None
        sleeper, self._sleeper = self._sleeper, None
        self._asleep.clear()
        return sleeper

    async def _wait_asleep(self) -> None:
        async with asyncio.timeout(WAIT_LIMIT_S):
            await self._asleep.wait()
