"""``GET /machines/{id}/history``: recent samples from the store's history, as JSON or CSV."""

from __future__ import annotations

import asyncio
import math

from aiohttp import web

from server.control import ProtocolError, check_fields
from server.errors import json_error, unknown_machine
from server.keys import history_gate_key, settings_key, store_key

FORMATS = ("json", "csv")
DEFAULT_SECONDS = 60.0
CHUNK_FRAMES = 50  # frames encoded between two turns of the event loop (about 1 ms)
CONCURRENT_READS = 2  # history reads encoding at once; the others wait their turn

routes = web.RouteTableDef()


@routes.get("/machines/{machine_id}/history")
async def machine_history(request: web.Request) -> web.Response:
    """The last ``seconds`` of simulated time of one machine, oldest first.

    JSON: an array of snapshots shaped exactly like the live stream's frames, so a
    dashboard can feed both through one code path. CSV: ``timestamp,seq,<fields>``.
    """
    store, settings = request.app[store_key], request.app[settings_key]
    machine_id = request.match_info["machine_id"]
    if machine_id not in store:
        return unknown_machine(machine_id, store.catalog)
    query = request.query
    max_seconds = settings.history_seconds * settings.speed  # simulated seconds held
    seconds = _seconds(query.get("seconds"), max_seconds)
    if seconds is None:
        return json_error(
            400,
            "bad_seconds",
            f"seconds must be a number in (0, {max_seconds:g}], got {query.get('seconds')!r}",
            max_seconds=max_seconds,
        )
    output = query.get("format", "json")
    if output not in FORMATS:
        return json_error(
            400,
            "bad_format",
            f"format must be one of {list(FORMATS)}, got {output!r}",
            valid_formats=list(FORMATS),
        )
    try:
        fields = (
            check_fields(query["fields"].split(","), (machine_id,), store.catalog, None)
            if "fields" in query
            else None
        )
    except ProtocolError as error:
        details = {k: v for k, v in error.payload.items() if k not in ("op", "id")}
        return json_error(400, **details)
    async with request.app[history_gate_key]:
        stamped = store.recent(seconds)
        parts: list[bytes] = []
        for start in range(0, max(len(stamped), 1), CHUNK_FRAMES):
            chunk = stamped[start : start + CHUNK_FRAMES]
            if output == "csv":
                parts.append(store.csv(chunk, machine_id, fields, header=start == 0).encode())
            else:
                parts += [store.encode(f, machine_id, fields, epoch_s=e) for f, e in chunk]
            await asyncio.sleep(0)  # the loop serves streams and others between chunks
    # The history of a large fleet holds fewer seconds than asked for: say what it holds.
    held = {"X-History-Held-Seconds": f"{store.held_seconds:g}"}
    if output == "csv":
        return web.Response(
            body=b"".join(parts),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'inline; filename="{machine_id}.csv"'} | held,
        )
    body = b"[" + b",".join(parts) + b"]"
    return web.Response(body=body, content_type="application/json", headers=held)


def _seconds(text: str | None, max_seconds: float) -> float | None:
    if text is None:
        return min(DEFAULT_SECONDS, max_seconds)
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 < value <= max_seconds else None
