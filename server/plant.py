"""Endpoints that describe a machine and change the plant: faults and commands.

Changes go through the fleet between steps (under the engine's fleet lock) and show in
the next tick's labels; who may make them is checked by :mod:`server.guard`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from server.errors import json_error, unknown_machine
from server.keys import engine_key, store_key
from server.labels import LABEL_FIELDS, fault_json
from simulation import Fleet
from simulation.errors import ControlError
from simulation.faults import FaultRecord
from simulation.spec import COMMANDS, STATE_NAMES, FaultRequest

MAX_BODY_BYTES = 16 * 1024
FAULT_KEYS = ("type", "severity", "onset", "duration_s", "sensor")
LABEL_DESCRIPTIONS = {
    "state": "operating state: " + ", ".join(STATE_NAMES),
    "health": "hidden health of the wearing part, 1 new to 0 failed",
    "rul_s": "remaining useful life in running seconds at the nominal duty; null if undefined",
    "faults": "active faults: id, type, severity, onset shape and time, duration, sensor, origin",
}


async def describe_machine(request: web.Request) -> web.Response:
    """Type, state and every sensor's unit, range, thresholds and description (Grafana style)."""
    fleet, machine_id = _fleet(request), request.match_info["machine_id"]
    if machine_id not in fleet.placement:
        return unknown_machine(machine_id, list(fleet.placement))
    sensors = []
    for sensor in fleet.sensors(machine_id):
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
        if sensor.warning is not None:
            steps.append({"color": "orange", "value": sensor.warning})
        if sensor.alarm is not None:
            steps.append({"color": "red", "value": sensor.alarm})
        sensors.append(
            {
                "name": sensor.name,
                "unit": sensor.unit,
                "warning": sensor.warning,
                "alarm": sensor.alarm,
                "field_config": {
                    "unit": sensor.grafana_unit,
                    "min": sensor.typical_min,
                    "max": sensor.typical_max,
                    "decimals": 0 if sensor.integer else sensor.decimals,
                    "description": sensor.description,
                    "thresholds": {"mode": "absolute", "steps": steps},
                },
            }
        )
    body = {
        "id": machine_id,
        "type": fleet.machine_type(machine_id),
        "sensors": sensors,
        "labels": [
            {"name": name, "description": LABEL_DESCRIPTIONS[name]} for name in LABEL_FIELDS
        ],
        "fault_types": list(fleet.fault_kinds(machine_id)),
        "commands": list(COMMANDS),
    }
    return web.json_response(body)


async def list_faults(request: web.Request) -> web.Response:
    fleet, machine_id = _fleet(request), request.match_info["machine_id"]
    if machine_id not in fleet.placement:
        return unknown_machine(machine_id, list(fleet.placement))
    records = fleet.active_faults(machine_id)
    return web.json_response({"machine_id": machine_id, "faults": _faults_json(request, records)})


async def inject_fault(request: web.Request) -> web.Response:
    """``{"type", "severity", "onset"?, "duration_s"?, "sensor"?}`` -> 201 with the fault."""
    fleet, machine_id = _fleet(request), request.match_info["machine_id"]
    if machine_id not in fleet.placement:
        return unknown_machine(machine_id, list(fleet.placement))
    body = await _json_body(request, FAULT_KEYS)
    if isinstance(body, web.Response):
        return body
    if "type" not in body or "severity" not in body:
        return json_error(
            400,
            "missing_field",
            "a fault needs 'type' and 'severity'",
            valid_types=list(fleet.fault_kinds(machine_id)),
        )
    async with request.app[engine_key].fleet_lock:
        try:
            record = fleet.inject_fault(
                machine_id,
                FaultRequest(
                    kind=body["type"],
                    severity=body["severity"],
                    onset=body.get("onset", "step"),
                    duration_s=body.get("duration_s"),
                    sensor=body.get("sensor"),
                ),
            )
        except ControlError as error:
            return _refusal(error)
    fault = _faults_json(request, (record,))[0]
    location = f"/machines/{machine_id}/faults/{record.fault_id}"
    return web.json_response(fault, status=201, headers={"Location": location})


async def clear_fault(request: web.Request) -> web.Response:
    fleet, machine_id = _fleet(request), request.match_info["machine_id"]
    if machine_id not in fleet.placement:
        return unknown_machine(machine_id, list(fleet.placement))
    fault_id = request.match_info["fault_id"]
    async with request.app[engine_key].fleet_lock:
        try:
            record = fleet.clear_fault(machine_id, fault_id)
        except ControlError as error:
            active = [r.fault_id for r in fleet.active_faults(machine_id)]
            return json_error(
                404, "unknown_fault", str(error), fault_id=fault_id, active_fault_ids=active
            )
    return web.json_response({"cleared": _faults_json(request, (record,))[0]})


async def send_command(request: web.Request) -> web.Response:
    """``{"command": "start" | "stop" | "maintain" | "reset"}`` -> the machine's new mode."""
    fleet, machine_id = _fleet(request), request.match_info["machine_id"]
    if machine_id not in fleet.placement:
        return unknown_machine(machine_id, list(fleet.placement))
    body = await _json_body(request, ("command",))
    if isinstance(body, web.Response):
        return body
    async with request.app[engine_key].fleet_lock:
        try:
            mode = fleet.command(machine_id, body.get("command"))
        except ControlError as error:
            return _refusal(error)
    return web.json_response({"machine_id": machine_id, "command": body["command"], "mode": mode})


def _refusal(error: ControlError) -> web.Response:
    """400 for a bad request; 409 for one the machine's current state refuses."""
    status, slug = (409, "conflict") if error.field == "state" else (400, f"bad_{error.field}")
    return json_error(status, slug, str(error), field=error.field, valid=list(error.valid))


async def _json_body(request: web.Request, keys: tuple[str, ...]) -> dict[str, Any] | web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return json_error(413, "body_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return json_error(413, "body_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return json_error(400, "malformed_json", f"the body is not valid JSON: {error}")
    if not isinstance(body, dict):
        return json_error(400, "malformed_body", "the body must be a JSON object")
    unknown = sorted(set(body) - set(keys))
    if unknown:
        return json_error(400, "unknown_keys", f"unknown key(s) {unknown}", valid_keys=list(keys))
    return body


def _faults_json(request: web.Request, records: tuple[FaultRecord, ...]) -> list[dict[str, Any]]:
    store = request.app[store_key]
    return [fault_json(record, store.onset_timestamp(record.onset_s)) for record in records]


def _fleet(request: web.Request) -> Fleet:
    return request.app[engine_key].fleet
