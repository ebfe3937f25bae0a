"""A plant on a real Redis in one test: a simulator on a manual clock, web processes fed by the
bus, each app on a real socket (``aiohttp_client``), every key under the test's own prefix."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from server.bus.feed import BusFeed
from server.bus.publisher import BusPublisher
from server.config import Settings
from server.keys import engine_key, store_key
from server.roles import publisher_key, simulator_app, web_app
from server.store import Store
from tests.clock import ManualClock
from tests.redis_servers import eventually

Client = TestClient[web.Request, web.Application]


@dataclasses.dataclass
class Simulator:
    client: Client
    clock: ManualClock

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[return-value]

    @property
    def publisher(self) -> BusPublisher:
        return self.app[publisher_key]

    @property
    def seq(self) -> int:
        return self.app[engine_key].stats.seq

    async def tick(self, count: int = 1, *, wait_published: bool = True) -> None:
        """Run ``count`` ticks, each (by default) only once the previous one is on the bus,
        as at the real tick rate (back to back, the publisher would send the newest only)."""
        for _ in range(count):
            handled = self.handled_ticks
            await self.clock.tick()
            if wait_published:
                await eventually(
                    lambda handled=handled: self.handled_ticks > handled, what="tick published"
                )

    @property
    def handled_ticks(self) -> int:
        stats = self.publisher.stats
        return stats.published + stats.unpublished


@dataclasses.dataclass
class Web:
    client: Client
    clock: ManualClock

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[return-value]

    @property
    def store(self) -> Store:
        return self.app[store_key]

    @property
    def feed(self) -> BusFeed:
        feed = self.app[engine_key]
        assert isinstance(feed, BusFeed)
        return feed

    @property
    def seq(self) -> int:
        latest = self.store.latest
        return latest.seq if latest is not None else 0

    async def reaches(self, seq: int, limit_s: float = 5.0) -> None:
        await eventually(lambda: self.seq >= seq, limit_s, f"web at seq {seq} (is {self.seq})")


class BusPlant:
    """Starts simulators and web processes of one plant (``url``, ``prefix``)."""

    def __init__(self, aiohttp_client: Any, url: str, prefix: str, **options: Any) -> None:
        self.aiohttp_client, self.url, self.prefix = aiohttp_client, url, prefix
        self.options = options

    def settings(self, role: str, **overrides: Any) -> Settings:
        base = {
            "role": role,
            "bus_url": self.url,
            "bus_prefix": self.prefix,
            "gc_freeze": False,
        }
        return Settings(**(base | self.options | overrides))

    async def simulator(self, **overrides: Any) -> Simulator:
        clock = ManualClock()
        app = simulator_app(self.settings("simulator", **overrides), clock=clock)
        return Simulator(await self.aiohttp_client(app), clock)

    async def web(self, **overrides: Any) -> Web:
        clock = ManualClock()
        app = await web_app(self.settings("web", **overrides), clock=clock)
        return Web(await self.aiohttp_client(app), clock)
