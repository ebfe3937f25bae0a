"""Machine-readable JSON error bodies for every 4xx/5xx the server answers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from simulation.catalog import FleetCatalog

MAX_LISTED_IDS = 100  # valid ids listed in an unknown-machine answer (REST and /ws alike)


def json_error(status: int, error: str, message: str, **details: Any) -> web.Response:
    body = {"error": error, "message": message, **details}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def unknown_machines_message(machine_ids: list[str]) -> str:
    """The one wording of an unknown machine, on every transport."""
    listed = ", ".join(repr(machine_id) for machine_id in machine_ids)
    return f"no machine with id {listed}; GET /machines lists them"


def valid_ids(catalog: FleetCatalog) -> list[str]:
    """The fleet's first ids, to show beside an unknown one."""
    return [machine.machine_id for machine in catalog.machines[:MAX_LISTED_IDS]]


def unknown_machine(machine_id: str, catalog: FleetCatalog) -> web.Response:
    """404 naming the id asked for and the valid ids (the first hundred of a large fleet)."""
    return json_error(
        404,
        "unknown_machine",
        unknown_machines_message([machine_id]),
        machine_id=machine_id,
        valid_ids=valid_ids(catalog),
        machine_count=catalog.size,
    )


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn aiohttp's plain-text HTTP errors (unknown route, wrong method) into JSON bodies."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        slug = error.reason.lower().replace(" ", "_")
        response = json_error(
            error.status, slug, f"{error.reason}: {request.method} {request.path}"
        )
        if allow := error.headers.get("Allow"):
            response.headers["Allow"] = allow
        return response
