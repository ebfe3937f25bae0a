"""Fixtures: the real app from the real factory, on a real socket, driven by a manual clock."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from tests.bus_plant import BusPlant
from tests.clock import ManualClock
from tests.redis_servers import drop_prefix, require_shared

TEST_SEED = 20261130


@dataclasses.dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    clock: ManualClock
    app: web.Application


MakeServer = Callable[..., Awaitable[Harness]]


@pytest.fixture
def make_server(aiohttp_client: Any) -> MakeServer:
    """Start the real app with ``Settings(seed=TEST_SEED, **overrides)`` on a manual clock."""

    async def make(**overrides: Any) -> Harness:
        clock = ManualClock()
        settings = Settings(**({"seed": TEST_SEED} | overrides))
        app = create_app(settings, clock=clock)
        client = await aiohttp_client(app)
        return Harness(client, clock, app)

    return make


@pytest.fixture
async def plant(aiohttp_client: Any) -> AsyncIterator[BusPlant]:
    """A plant on the shared Redis (tests/bus_plant.py), under a prefix of its own, deleted
    afterwards."""
    url = await require_shared()
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield BusPlant(aiohttp_client, url, prefix, seed=TEST_SEED)
    await drop_prefix(url, prefix)
