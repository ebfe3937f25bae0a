"""The processes of a plant on a bus: the simulator, which steps and publishes, and the web
processes, which serve what it publishes. The embedded process is :func:`server.app.create_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from server import api
from server.app import (
    build_fleet,
    configured_outlets,
    name_the_server,
    new_store,
    scripted,
    serving_app,
)
from server.bus.client import connect
from server.bus.control import ControlResponder, RemotePlant
from server.bus.feed import BusFeed
from server.bus.publisher import LEASE_S, BusPublisher
from server.bus.wire import Announcement, BusKeys
from server.clock import Clock, MonotonicClock
from server.config import Settings
from server.connections import ConnectionCap
from server.engine import Engine
from server.errors import json_errors
from server.keys import (
    connection_cap_key,
    engine_key,
    metrics_key,
    settings_key,
    shutdown_key,
)
from server.metrics import Metrics
from server.plant import LocalPlant
from server.shutdown import Shutdown
from server.sinks import SinkSet
from server.source import LocalSource

log = logging.getLogger(__name__)

publisher_key = web.AppKey("publisher", BusPublisher)
responder_key = web.AppKey("responder", ControlResponder)


def simulator_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """Steps the fleet and publishes every tick on the bus; serves ``/health`` and
    ``/metrics`` only."""
    assert settings.bus_url is not None
    clock = clock if clock is not None else MonotonicClock()
    local = LocalSource(build_fleet(settings))
    plant = LocalPlant(local)
    source = scripted(settings, local)
    client = connect(settings, client_name=f"dms-simulator-{os.getpid()}")
    keys = BusKeys(settings.bus_prefix)
    announcement = Announcement.fresh(
        source.catalog,
        tick_hz=settings.tick_hz,
        speed=settings.speed,
        machines_per_shard=settings.bus_shard_machines,
        started_at=clock.wall(),
    )
    publisher = BusPublisher(
        client,
        keys,
        announcement,
        url=settings.bus_url,
        stream_seconds=settings.bus_stream_seconds,
        stream_max_bytes=settings.bus_stream_max_bytes,
    )
    engine = Engine(source, SinkSet([publisher.sink]), tick_hz=settings.tick_hz, clock=clock)
    responder = ControlResponder(client, keys, plant)
    connections = ConnectionCap(settings.max_connections)
    metrics = Metrics(None, engine, connections, [publisher.collector(), responder.collector()])
    engine.on_tick = metrics.observe_tick
    app = web.Application(middlewares=[json_errors])
    app[settings_key] = settings
    app[shutdown_key] = Shutdown()
    app[engine_key] = engine
    app[metrics_key] = metrics
    app[connection_cap_key] = connections
    app[publisher_key] = publisher
    app[responder_key] = responder
    app.router.add_get("/health", api.health)
    app.router.add_get("/metrics", api.metrics)
    app.cleanup_ctx.append(run_simulator)
    app.on_response_prepare.append(name_the_server)
    return app


async def run_simulator(app: web.Application) -> AsyncIterator[None]:
    """Claim the bus, tick and publish, answer control requests, for the app's lifetime."""
    engine, publisher, metrics = app[engine_key], app[publisher_key], app[metrics_key]
    metrics.watch_gc()
    await publisher.claim_at_start(timeout_s=LEASE_S + 1.0)
    await engine.start()
    responder = asyncio.create_task(app[responder_key].run(), name="bus-control")
    yield
    responder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await responder
    await engine.stop()
    await engine.sinks.close()
    await publisher.release()
    await publisher.client.aclose()
    metrics.unwatch_gc()


async def web_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """Serves the plant the bus carries: waits for the simulator's announcement, then builds
    the store from its catalog and every route over it; changes go to the simulator."""
    assert settings.bus_url is not None
    clock = clock if clock is not None else MonotonicClock()
    process_id = uuid.uuid4().hex[:12]
    client = connect(settings, client_name=f"dms-web-{process_id}")
    keys = BusKeys(settings.bus_prefix)
    feed = BusFeed(client, keys, clock=clock, url=settings.bus_url, process_id=process_id)
    announcement = await feed.open()
    # The simulator sets the pace: its tick rate and speed, whatever this process was given.
    settings = dataclasses.replace(settings, tick_hz=announcement.tick_hz, speed=announcement.speed)
    store = new_store(settings, announcement.catalog, epoch=announcement.epoch)
    feed.store = store
    plant = RemotePlant(
        client,
        keys,
        store,
        process_id=process_id,
        timeout_s=settings.bus_command_timeout_s,
        connected=lambda: feed.bus.connected,
    )
    feed.on_reply = plant.resolve
    outlets = configured_outlets(settings, store, plant)
    feed.sinks = SinkSet([store, *(outlet.sink for outlet in outlets)])
    app = serving_app(
        settings,
        store,
        feed,
        plant,
        clock=clock,
        collectors=[feed.collector()],
        outlets=outlets,
    )
    feed.on_fatal = app[shutdown_key].fail
    return app
