"""The application factory: the frame source, the sinks, the fan-out, the routes, their lifetimes.

One process, embedded (the default): the local fleet is the source; the store is the first
sink and wakes the fan-out, which runs on its own task; the plant-control service changes
the fleet between steps. ``docs/architecture.md`` draws the data flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from types import ModuleType

import aiohttp_cors
from aiohttp import WSCloseCode, web
from prometheus_client.registry import Collector

from server import api, history, plant_api, scenario, streams
from server.clock import Clock, MonotonicClock
from server.config import Settings
from server.connections import SERVER_NAME, ConnectionCap
from server.engine import Engine, FrameFeed
from server.errors import json_errors
from server.fleetfile import fresh_seed, load_fleet
from server.gctuning import GcTuner
from server.guard import guard_mutations
from server.hub import Hub
from server.keys import (
    catalog_key,
    connection_cap_key,
    engine_key,
    history_gate_key,
    hub_key,
    machines_json_key,
    metrics_key,
    outlets_key,
    plant_key,
    settings_key,
    shutdown_key,
    store_key,
)
from server.metrics import Metrics
from server.plant import LocalPlant, PlantControl
from server.scenario import ScriptedSource, load_scenario, scenario_key
from server.shutdown import Shutdown
from server.sinks import FrameSink, Outlet, SinkSet
from server.source import FrameSource, LocalSource
from server.store import Store
from simulation import Fleet
from simulation.catalog import FleetCatalog

UNCORS_PATHS = ("/metrics", "/ws")  # scrapes and WebSockets: no CORS preflight applies

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, clock: Clock | None = None, sinks: Sequence[FrameSink] = ()
) -> web.Application:
    """Build the embedded app; the fleet is built now, the tick and fan-out tasks start with
    the app.

    ``sinks`` take every frame after the store, in order (each isolated: see
    :mod:`server.sinks`).
    """
    clock = clock if clock is not None else MonotonicClock()
    if settings.replay is not None:
        return replay_app(settings, clock=clock, sinks=sinks)
    local = LocalSource(build_fleet(settings))
    store = new_store(settings, local.catalog)
    plant = LocalPlant(local)
    source = scripted(settings, local)
    outlets = configured_outlets(settings, store, plant)
    engine = Engine(
        source,
        SinkSet([store, *(outlet.sink for outlet in outlets), *sinks]),
        tick_hz=settings.tick_hz,
        clock=clock,
    )
    app = serving_app(settings, store, engine, plant, clock=clock, outlets=outlets)
    if isinstance(source, ScriptedSource):
        app[scenario_key] = source
    return app


def replay_app(
    settings: Settings, *, clock: Clock, sinks: Sequence[FrameSink] = ()
) -> web.Application:
    """The app serving a recording (``--replay``) at ``--speed`` times its own rate."""
    from server.replay import ReplayPlant, RunStore, open_replay, replay_tick_hz

    assert settings.replay is not None
    source = open_replay(
        settings.replay, start_s=settings.replay_start_s, loop=settings.replay_loop
    )
    settings = dataclasses.replace(settings, tick_hz=replay_tick_hz(source.dt_s, settings.speed))
    settings = dataclasses.replace(settings, speed=source.dt_s * settings.tick_hz)
    store = new_store(settings, source.catalog)
    plant = ReplayPlant(store)
    outlets = configured_outlets(settings, store, plant)
    engine = Engine(
        source,
        SinkSet([RunStore(store, source), *(outlet.sink for outlet in outlets), *sinks]),
        tick_hz=settings.tick_hz,
        clock=clock,
    )
    log.info(
        "replaying %s: %d machine(s), %g s recorded at %g Hz, served at %g Hz",
        settings.replay,
        source.catalog.size,
        source.duration_s,
        1 / source.dt_s,
        settings.tick_hz,
    )
    return serving_app(settings, store, engine, plant, clock=clock, outlets=outlets)


def scripted(settings: Settings, local: LocalSource) -> FrameSource:
    """The local source, or with ``--scenario`` the same with the scenario's changes."""
    if settings.scenario is None:
        return local
    actions = load_scenario(settings.scenario, local.catalog)
    log.info("scenario %s: %d action(s)", settings.scenario, len(actions))
    return ScriptedSource(local, actions, path=settings.scenario)


def configured_outlets(settings: Settings, store: Store, plant: PlantControl) -> list[Outlet]:
    """The outlets the settings ask for, publishing what ``store`` holds."""
    outlets: list[Outlet] = []
    if settings.mqtt_url is not None:
        from server.mqtt.gateway import MqttGateway

        outlets.append(MqttGateway(settings, store, plant))
    if settings.record_dir is not None:
        from server.recorder import Recorder  # pyarrow: the export extra

        outlets.append(Recorder(settings, store.catalog))
    return outlets


def build_fleet(settings: Settings) -> Fleet:
    """The fleet the settings describe (a fresh seed, logged, unless one is given)."""
    seed = settings.seed if settings.seed is not None else fresh_seed()
    fleet = Fleet(
        load_fleet(settings.fleet)[0],
        seed=seed,
        dt_s=settings.step_s,
        fault_rate_per_h=settings.fault_rate_per_h,
        repair_after_s=settings.repair_after_s,
    )
    log.info("fleet of %d machine(s), seed %d, %g Hz", fleet.size, seed, settings.tick_hz)
    return fleet


def new_store(settings: Settings, catalog: FleetCatalog, epoch: str | None = None) -> Store:
    return Store(
        catalog,
        history_frames=round(settings.history_seconds * settings.tick_hz),
        history_max_bytes=settings.history_max_bytes,
        epoch=epoch,
    )


def serving_app(
    settings: Settings,
    store: Store,
    feed: FrameFeed,
    plant: PlantControl,
    *,
    clock: Clock,
    collectors: Sequence[Collector] = (),
    outlets: Sequence[Outlet] = (),
) -> web.Application:
    """The app serving the plant in ``store``, fed by ``feed`` (the local tick task, or a
    bus), changed through ``plant``: every route, the fan-out, the outlets, their lifetimes."""
    catalog = store.catalog
    hub = Hub(
        store=store,
        clock=clock,
        send_buffer_bytes=settings.send_buffer_bytes,
        stall_timeout_s=settings.stall_timeout_s,
    )
    connections = ConnectionCap(settings.max_connections)
    metrics = Metrics(
        hub, feed, connections, [*collectors, *(outlet.collector() for outlet in outlets)]
    )
    feed_ticks(feed, metrics)
    app = web.Application(middlewares=[json_errors, guard_mutations])
    app[settings_key] = settings
    app[shutdown_key] = Shutdown()
    app[catalog_key] = catalog
    app[store_key] = store
    app[hub_key] = hub
    app[engine_key] = feed
    app[plant_key] = plant
    app[metrics_key] = metrics
    app[connection_cap_key] = connections
    app[machines_json_key] = api.machines_listing(catalog)
    app[history_gate_key] = asyncio.Semaphore(history.CONCURRENT_READS)
    app[outlets_key] = tuple(outlets)
    _add_routes(app, settings, (api, history, plant_api, scenario, streams))
    app.cleanup_ctx.append(run_engine)
    for outlet in outlets:
        app.cleanup_ctx.append(functools.partial(run_outlet, outlet))
    if settings.gc_freeze:
        app.cleanup_ctx.append(run_gc_tuner)
    app.on_shutdown.append(close_websockets)
    app.on_response_prepare.append(name_the_server)
    return app


def feed_ticks(feed: FrameFeed, metrics: Metrics) -> None:
    """Let the tick task time its ticks into the metrics' histograms."""
    if isinstance(feed, Engine):
        feed.on_tick = metrics.observe_tick


async def run_engine(app: web.Application) -> AsyncIterator[None]:
    """The tick task and the fan-out task, for the app's lifetime."""
    engine, hub, metrics = app[engine_key], app[hub_key], app[metrics_key]
    metrics.watch_gc()
    await engine.start()
    hub.start()
    fanout = asyncio.create_task(hub.run(), name="fan-out")
    yield
    await engine.stop()
    fanout.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await fanout
    await engine.sinks.close()
    await hub.close()
    metrics.unwatch_gc()


async def run_outlet(outlet: Outlet, app: web.Application) -> AsyncIterator[None]:
    await outlet.start()
    yield
    await outlet.stop()


async def run_gc_tuner(app: web.Application) -> AsyncIterator[None]:
    tuner = GcTuner(app[hub_key])
    task = asyncio.create_task(tuner.run(), name="gc-tuner")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    tuner.release()


async def name_the_server(request: web.Request, response: web.StreamResponse) -> None:
    """``Server`` names the product, not the exact versions of Python and aiohttp."""
    response.headers["Server"] = SERVER_NAME


async def close_websockets(app: web.Application) -> None:
    """On SIGTERM/Ctrl+C close every WebSocket with 1001 (going away), all at once; within half
    the shutdown timeout, so the rest of the shutdown still ends on time."""
    await app[hub_key].close_all(
        WSCloseCode.GOING_AWAY,
        "server shutdown",
        timeout_s=app[settings_key].shutdown_timeout_s / 2,
    )


def _add_routes(app: web.Application, settings: Settings, modules: Sequence[ModuleType]) -> None:
    """The handler modules' routes; CORS on each REST route (not on scrapes or sockets)."""
    for module in modules:
        app.router.add_routes(module.routes)
    cors = aiohttp_cors.setup(app)
    options = aiohttp_cors.ResourceOptions(allow_headers="*", expose_headers="*", max_age=3600)
    defaults = {origin: options for origin in settings.cors_origins}
    for route in list(app.router.routes()):
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter", "")
        if not path.startswith(UNCORS_PATHS):
            cors.add(route, defaults)
