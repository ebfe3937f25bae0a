"""Faults and machine commands taken from ``{prefix}/{type}/{machine_id}/cmd``.

A message is one JSON object, at most 16 KiB, with an optional ``id`` echoed in the answer
and exactly one of::

    {"command": "stop"}                                   start, stop, maintain, reset
    {"fault": {"type": "tool_breakage", "severity": 0.5}}  the REST fault body
    {"clear_fault": "cnc_mill-1"}

The answer, on ``.../cmd/reply``, is ``{"id", "ok": true, "effective_seq", ...}`` with the new
mode or the fault, or ``{"id", "ok": false, "status", "error", "message", ...}`` with the
same error body (and HTTP status) REST gives. Nothing a message holds can raise out of here.
"""

from __future__ import annotations

from typing import Any

from server.jsontext import MalformedJsonError, parse_json
from server.labels import fault_json
from server.plant import PlantControl, PlantUnavailableError
from server.plant_api import FAULT_KEYS, MAX_BODY_BYTES, fault_request, refusal_body
from server.store import Store
from simulation.errors import ControlError

ACTIONS = ("command", "fault", "clear_fault")


async def carry_out(
    payload: bytes, machine_id: str, plant: PlantControl, store: Store
) -> dict[str, Any]:
    """The answer to one command message for ``machine_id``."""
    if len(payload) > MAX_BODY_BYTES:
        return _bad(None, "body_too_large", f"messages are limited to {MAX_BODY_BYTES} bytes")
    try:
        message = parse_json(payload)
    except MalformedJsonError as error:
        return _bad(None, "malformed_json", f"the message is not valid JSON: {error}")
    if not isinstance(message, dict):
        return _bad(None, "malformed_body", "the message must be a JSON object")
    request_id = message.get("id")
    if not isinstance(request_id, str | int | None) or isinstance(request_id, bool):
        request_id = None
    actions = [key for key in ACTIONS if key in message]
    unknown = sorted(set(message) - {*ACTIONS, "id"})
    if unknown or len(actions) != 1:
        return _bad(
            request_id,
            "bad_message",
            f"give exactly one of {list(ACTIONS)} (and an optional id); got {sorted(message)}",
        )
    try:
        answer = await _apply(actions[0], message[actions[0]], machine_id, plant, store)
    except (ControlError, PlantUnavailableError) as error:
        fault_id = message.get("clear_fault")
        status, body = refusal_body(
            error, plant.catalog, fault_id if isinstance(fault_id, str) else None
        )
        return {"id": request_id, "ok": False, "status": status, **body}
    return {"id": request_id, "ok": True, **answer}


async def _apply(
    action: str, argument: Any, machine_id: str, plant: PlantControl, store: Store
) -> dict[str, Any]:
    if action == "command":
        change = await plant.command(machine_id, argument)
        return {"command": argument, "mode": change.result, "effective_seq": change.effective_seq}
    if action == "clear_fault":
        if not isinstance(argument, str):
            raise ControlError("clear_fault names a fault id (a string)", field="fault_id")
        cleared = await plant.clear_fault(machine_id, argument)
        record = cleared.result
        return {
            "cleared": fault_json(record, store.onset_timestamp(record.onset_s)),
            "effective_seq": cleared.effective_seq,
        }
    if not isinstance(argument, dict) or not {"type", "severity"} <= set(argument):
        raise ControlError("a fault needs 'type' and 'severity'", field="fault")
    unknown = sorted(set(argument) - set(FAULT_KEYS))
    if unknown:
        raise ControlError(f"unknown fault key(s) {unknown}", field="fault", valid=FAULT_KEYS)
    injected = await plant.inject_fault(machine_id, fault_request(argument))
    record = injected.result
    return {
        "fault": fault_json(record, store.onset_timestamp(record.onset_s)),
        "effective_seq": injected.effective_seq,
    }


def _bad(request_id: Any, error: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "status": 400, "error": error, "message": message}
