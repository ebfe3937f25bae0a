"""REST handlers: read the store and the engine's counters, never step the simulation."""

from __future__ import annotations

import json

from aiohttp import web

from server import __version__
from server.errors import unknown_machine
from server.keys import (
    engine_key,
    machines_json_key,
    metrics_key,
    settings_key,
    store_key,
)
from simulation.catalog import FleetCatalog

HEALTH_MIN_STALL_S = 2.0
HEALTH_STALL_TICKS = 10
WELCOME = "Welcome to the Demo Machine Server: simulated industrial machines for digital twins"

routes = web.RouteTableDef()


@routes.get("/")
async def welcome(request: web.Request) -> web.Response:
    app = request.app
    store, settings = app[store_key], app[settings_key]
    catalog = store.catalog  # the current run's (a new run behind a bus has its own seed)
    frame = store.latest
    return web.json_response(
        {
            "message": WELCOME,
            "version": __version__,
            "machines": catalog.size,
            "tick_hz": settings.tick_hz,
            "speed": settings.speed,
            "seed": catalog.seed,
            "epoch": store.epoch,
            "seq": frame.seq if frame is not None else 0,
            "history": {
                "seconds_asked": settings.history_seconds * settings.speed,
                "seconds_held": store.held_seconds,
            },
        }
    )


@routes.get("/machines")
async def list_machines(request: web.Request) -> web.Response:
    return web.Response(body=request.app[machines_json_key], content_type="application/json")


@routes.get("/machines/{machine_id}/data")
async def machine_data(request: web.Request) -> web.Response:
    store = request.app[store_key]
    machine_id = request.match_info["machine_id"]
    if machine_id not in store:
        return unknown_machine(machine_id, store.catalog)
    return web.Response(body=store.snapshot_bytes(machine_id), content_type="application/json")


def machines_listing(catalog: FleetCatalog) -> bytes:
    """The seed's ``[{"id": ..., "type": ...}]`` listing, encoded once at start-up."""
    return json.dumps(
        [{"id": machine.machine_id, "type": machine.machine_type} for machine in catalog.machines]
    ).encode()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """200 while the tick task is alive and recent, 503 once it has stalled or died."""
    engine, settings = request.app[engine_key], request.app[settings_key]
    age_s = engine.clock.now() - engine.stats.last_tick_at
    limit_s = max(HEALTH_MIN_STALL_S, HEALTH_STALL_TICKS * settings.tick_period_s)
    healthy = engine.alive and age_s <= limit_s
    body = {
        "status": "ok" if healthy else "stalled",
        "seq": engine.stats.seq,
        "last_tick_age_s": round(age_s, 3),
        "stall_limit_s": limit_s,
        "tick_task_alive": engine.alive,
    }
    return web.json_response(body, status=200 if healthy else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition format."""
    return web.Response(
        body=request.app[metrics_key].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
