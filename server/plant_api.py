"""REST endpoints that describe a machine and change the plant, over the plant-control service.

Who may make changes is checked by :mod:`server.guard`; what a change does, and the ``seq``
from which it shows (``effective_seq`` in every answer), comes from :mod:`server.plant`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.errors import json_error, unknown_machine, unknown_machines_message, valid_ids
from server.jsontext import MalformedJsonError, parse_json
from server.keys import catalog_key, plant_key, store_key
from server.labels import fault_json
from server.plant import PlantUnavailableError, describe_machine
from simulation.catalog import FleetCatalog
from simulation.errors import ControlError, UnknownMachineError
from simulation.faults import MAX_ACTIVE_FAULTS, FaultRecord
from simulation.spec import FaultRequest

MAX_BODY_BYTES = 16 * 1024
FAULT_KEYS = ("type", "severity", "onset", "duration_s", "sensor")

routes = web.RouteTableDef()


@routes.get("/machines/{machine_id}")
async def describe(request: web.Request) -> web.Response:
    """Type, state and every sensor's unit, range, thresholds and description (Grafana style)."""
    try:
        body = describe_machine(request.app[catalog_key], request.match_info["machine_id"])
    except (ControlError, PlantUnavailableError) as error:
        return refusal(request, error)
    return web.json_response(body)


@routes.get("/machines/{machine_id}/faults")
async def list_faults(request: web.Request) -> web.Response:
    machine_id = request.match_info["machine_id"]
    try:
        records = await request.app[plant_key].active_faults(machine_id)
    except (ControlError, PlantUnavailableError) as error:
        return refusal(request, error)
    return web.json_response({"machine_id": machine_id, "faults": _faults_json(request, records)})


@routes.post("/machines/{machine_id}/faults")
async def inject_fault(request: web.Request) -> web.Response:
    """``{"type", "severity", "onset"?, "duration_s"?, "sensor"?}`` -> 201 with the fault."""
    catalog, machine_id = request.app[catalog_key], request.match_info["machine_id"]
    if machine_id not in catalog:
        return unknown_machine(machine_id, catalog)
    body = await _json_body(request, FAULT_KEYS)
    if isinstance(body, web.Response):
        return body
    if "type" not in body or "severity" not in body:
        return json_error(
            400,
            "missing_field",
            "a fault needs 'type' and 'severity'",
            valid_types=list(catalog.machine_type(machine_id).fault_kinds),
        )
    fault = fault_request(body)
    try:
        change = await request.app[plant_key].inject_fault(machine_id, fault)
    except (ControlError, PlantUnavailableError) as error:
        return refusal(request, error)
    answer = _faults_json(request, (change.result,))[0] | {"effective_seq": change.effective_seq}
    location = f"/machines/{machine_id}/faults/{change.result.fault_id}"
    return web.json_response(answer, status=201, headers={"Location": location})


@routes.delete("/machines/{machine_id}/faults/{fault_id}")
async def clear_fault(request: web.Request) -> web.Response:
    machine_id, fault_id = request.match_info["machine_id"], request.match_info["fault_id"]
    try:
        change = await request.app[plant_key].clear_fault(machine_id, fault_id)
    except (ControlError, PlantUnavailableError) as error:
        return refusal(request, error)
    cleared = _faults_json(request, (change.result,))[0]
    return web.json_response({"cleared": cleared, "effective_seq": change.effective_seq})


@routes.post("/machines/{machine_id}/commands")
async def send_command(request: web.Request) -> web.Response:
    """``{"command": "start" | "stop" | "maintain" | "reset"}`` -> the machine's new mode."""
    catalog, machine_id = request.app[catalog_key], request.match_info["machine_id"]
    if machine_id not in catalog:
        return unknown_machine(machine_id, catalog)
    body = await _json_body(request, ("command",))
    if isinstance(body, web.Response):
        return body
    try:
        command: Any = body.get("command")  # checked by the plant
        change = await request.app[plant_key].command(machine_id, command)
    except (ControlError, PlantUnavailableError) as error:
        return refusal(request, error)
    return web.json_response(
        {
            "machine_id": machine_id,
            "command": body["command"],
            "mode": change.result,
            "effective_seq": change.effective_seq,
        }
    )


def fault_request(body: dict[str, Any]) -> FaultRequest:
    """The fault a body of :data:`FAULT_KEYS` asks for (checked where it is carried out)."""
    return FaultRequest(
        kind=body["type"],
        severity=body["severity"],
        onset=body.get("onset", "step"),
        duration_s=body.get("duration_s"),
        sensor=body.get("sensor"),
    )


def refusal(request: web.Request, error: ControlError | PlantUnavailableError) -> web.Response:
    """The REST answer to a refused change (:func:`refusal_body`)."""
    status, body = refusal_body(error, request.app[catalog_key], request.match_info.get("fault_id"))
    return json_error(status, **body)


def refusal_body(
    error: ControlError | PlantUnavailableError, catalog: FleetCatalog, fault_id: str | None
) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a refused change, on every transport: 404 for an unknown machine
    or fault; 409 for what the machine's state refuses; 5xx when the simulator behind a bus
    cannot be reached; else 400."""
    if isinstance(error, PlantUnavailableError):
        return error.status, {"error": error.error, "message": str(error)}
    if isinstance(error, UnknownMachineError):
        return 404, {
            "error": "unknown_machine",
            "message": unknown_machines_message([error.machine_id]),
            "machine_id": error.machine_id,
            "valid_ids": valid_ids(catalog),
            "machine_count": catalog.size,
        }
    message = str(error)
    if error.field == "fault_id":
        return 404, {
            "error": "unknown_fault",
            "message": message,
            "fault_id": fault_id,
            "active_fault_ids": list(error.valid),
        }
    if error.field == "faults":
        return 409, {"error": "too_many_faults", "message": message, "limit": MAX_ACTIVE_FAULTS}
    status, slug = (409, "conflict") if error.field == "state" else (400, f"bad_{error.field}")
    return status, {
        "error": slug,
        "message": message,
        "field": error.field,
        "valid": list(error.valid),
    }


async def _json_body(request: web.Request, keys: tuple[str, ...]) -> dict[str, Any] | web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return json_error(413, "body_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
    raw = await _read_body(request)
    if raw is None:
        return json_error(413, "body_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
    try:
        body = parse_json(raw)
    except MalformedJsonError as error:
        return json_error(400, "malformed_json", f"the body is not valid JSON: {error}")
    if not isinstance(body, dict):
        return json_error(400, "malformed_body", "the body must be a JSON object")
    unknown = sorted(set(body) - set(keys))
    if unknown:
        return json_error(400, "unknown_keys", f"unknown key(s) {unknown}", valid_keys=list(keys))
    return body


async def _read_body(request: web.Request) -> bytes | None:
    """The whole body, however many segments it came in; None past :data:`MAX_BODY_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(MAX_BODY_BYTES + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
    return b"".join(chunks)


def _faults_json(request: web.Request, records: tuple[FaultRecord, ...]) -> list[dict[str, Any]]:
    store = request.app[store_key]
    return [fault_json(record, store.onset_timestamp(record.onset_s)) for record in records]
