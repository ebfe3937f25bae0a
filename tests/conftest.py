"""Fixtures: the real app from the real factory, on a real socket, driven by a manual clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from tests.clock import ManualClock

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
