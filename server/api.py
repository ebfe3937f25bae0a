"""REST handlers: read the store, never step the simulation."""

from __future__ import annotations

import json

from aiohttp import web

from server import __version__
from server.errors import unknown_machine
from server.keys import engine_key, machines_json_key, settings_key, store_key

WELCOME = "Welcome to the Demo Machine Server: simulated industrial machines for digital twins"


async def welcome(request: web.Request) -> web.Response:
    app = request.app
    store, settings = app[store_key], app[settings_key]
    engine = app[engine_key]
    frame = store.latest
    return web.json_response(
        {
            "message": WELCOME,
            "version": __version__,
            "machines": len(store.machine_types),
            "tick_hz": settings.tick_hz,
            "seed": engine.fleet.seed,
            "seq": frame.seq if frame is not None else 0,
        }
    )


async def list_machines(request: web.Request) -> web.Response:
    return web.Response(body=request.app[machines_json_key], content_type="application/json")


async def machine_data(request: web.Request) -> web.Response:
    store = request.app[store_key]
    machine_id = request.match_info["machine_id"]
    if machine_id not in store:
        return unknown_machine(machine_id, list(store.machine_types))
    return web.Response(body=store.snapshot_bytes(machine_id), content_type="application/json")


def machines_listing(machine_types: dict[str, str]) -> bytes:
    """The seed's ``[{"id": ..., "type": ...}]`` listing, encoded once at start-up."""
    return json.dumps(
        [{"id": machine_id, "type": kind} for machine_id, kind in machine_types.items()]
    ).encode()
