"""The application factory: routes, CORS, and the engine's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator

import aiohttp_cors
import numpy as np
from aiohttp import WSCloseCode, web

from server import api, history, plant, streams
from server.clock import Clock, MonotonicClock
from server.config import Settings
from server.engine import Engine
from server.errors import json_errors
from server.gctuning import GcTuner
from server.guard import guard_mutations
from server.hub import Hub
from server.keys import (
    engine_key,
    hub_key,
    machines_json_key,
    metrics_key,
    settings_key,
    store_key,
    websockets_key,
)
from server.metrics import Metrics
from server.store import Store
from simulation import Fleet, FleetSpec
from simulation.fleet_spec import default_fleet, parse_fleet
from simulation.models import MODEL_TYPES

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """Build the app; the fleet is built now, the tick task starts with the app."""
    clock = clock if clock is not None else MonotonicClock()
    seed = settings.seed if settings.seed is not None else fresh_seed()
    fleet = Fleet(
        load_fleet_spec(settings),
        seed=seed,
        dt_s=settings.step_s,
        fault_rate_per_h=settings.fault_rate_per_h,
        repair_after_s=settings.repair_after_s,
    )
    store = Store(
        fleet,
        history_frames=round(settings.history_seconds * settings.tick_hz),
        history_max_bytes=settings.history_max_bytes,
    )
    hub = Hub(
        store=store,
        clock=clock,
        send_buffer_bytes=settings.send_buffer_bytes,
        stall_timeout_s=settings.stall_timeout_s,
    )
    app = web.Application(middlewares=[json_errors, guard_mutations])
    app[settings_key] = settings
    app[store_key] = store
    app[hub_key] = hub
    engine = Engine(fleet, store, hub, tick_hz=settings.tick_hz, clock=clock)
    metrics = Metrics(hub, engine)
    engine.on_tick = metrics.observe_tick
    app[engine_key] = engine
    app[metrics_key] = metrics
    app[machines_json_key] = api.machines_listing(store.machine_types)
    app[websockets_key] = weakref.WeakSet()
    _add_routes(app, settings)
    app.cleanup_ctx.append(run_engine)
    if settings.gc_freeze:
        app.cleanup_ctx.append(run_gc_tuner)
    app.on_shutdown.append(close_websockets)
    log.info("fleet of %d machine(s), seed %d, %g Hz", fleet.size, seed, settings.tick_hz)
    return app


def load_fleet_spec(settings: Settings) -> FleetSpec:
    """The fleet file's machines, or the seed's three; raises FleetSpecError naming the line."""
    if settings.fleet is None:
        return default_fleet()
    text = settings.fleet.read_text(encoding="utf-8")
    return parse_fleet(text, str(settings.fleet), MODEL_TYPES)


def fresh_seed() -> int:
    """A random seed, so an unseeded run can still be reproduced from its logged seed."""
    return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])


async def run_engine(app: web.Application) -> AsyncIterator[None]:
    engine, metrics = app[engine_key], app[metrics_key]
    metrics.watch_gc()
    await engine.start()
    yield
    await engine.stop()
    await app[hub_key].close()
    metrics.unwatch_gc()


async def run_gc_tuner(app: web.Application) -> AsyncIterator[None]:
    tuner = GcTuner(app[hub_key])
    task = asyncio.create_task(tuner.run(), name="gc-tuner")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    tuner.release()


async def close_websockets(app: web.Application) -> None:
    """On SIGTERM/Ctrl+C close every WebSocket with 1001 (going away), all at once."""
    sockets = list(app[websockets_key])
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in sockets),
        return_exceptions=True,
    )


def _add_routes(app: web.Application, settings: Settings) -> None:
    cors = aiohttp_cors.setup(app)
    options = aiohttp_cors.ResourceOptions(allow_headers="*", expose_headers="*", max_age=3600)
    defaults = {origin: options for origin in settings.cors_origins}
    for path, handler in (
        ("/", api.welcome),
        ("/machines", api.list_machines),
        ("/machines/{machine_id}/data", api.machine_data),
        ("/machines/{machine_id}/history", history.machine_history),
        ("/health", api.health),
    ):
        cors.add(app.router.add_get(path, handler), defaults)
    faults = cors.add(app.router.add_resource("/machines/{machine_id}/faults"))
    cors.add(faults.add_route("GET", plant.list_faults), defaults)
    cors.add(faults.add_route("POST", plant.inject_fault), defaults)
    fault = cors.add(app.router.add_resource("/machines/{machine_id}/faults/{fault_id}"))
    cors.add(fault.add_route("DELETE", plant.clear_fault), defaults)
    cors.add(app.router.add_post("/machines/{machine_id}/commands", plant.send_command), defaults)
    cors.add(app.router.add_get("/machines/{machine_id}", plant.describe_machine), defaults)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/ws/machines/{machine_id}", streams.machine_stream)
    app.router.add_get("/ws", streams.multiplex_stream)
