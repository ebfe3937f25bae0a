"""The ``/ws`` control protocol: parse and check client messages, shape the answers.

Client messages are JSON objects with an ``op``:

- ``{"op": "subscribe", "machines": [ids], "fields": [names], "hz": 2, "since": seq, "id": any}``
  (``fields``, ``hz``, ``since`` and ``id`` optional);
- ``{"op": "unsubscribe", "machines": [ids]}`` (no ``machines``: everything).

Each gets one answer: ``{"op": "subscribed" | "unsubscribed", ...}`` or
``{"op": "error", "error": <slug>, "message": ..., ...}``; the connection stays open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.errors import MAX_LISTED_IDS, unknown_machines_message, valid_ids
from server.jsontext import MalformedJsonError, parse_json
from server.store import Fields
from simulation.catalog import FleetCatalog

MAX_CONTROL_MESSAGE_BYTES = 16 * 1024
MAX_MACHINES_PER_MESSAGE = 1_000


class ProtocolError(Exception):
    """A client request that cannot be honoured; ``payload`` is the error answer."""

    def __init__(self, error: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.payload = {"op": "error", "error": error, "message": message, **details}


@dataclass(frozen=True, slots=True)
class Subscribe:
    machines: tuple[str, ...]
    fields: Fields
    every: int
    since: int | None
    request_id: Any


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    machines: tuple[str, ...] | None
    request_id: Any


def parse_control(text: str, catalog: FleetCatalog, tick_hz: float) -> Subscribe | Unsubscribe:
    """Check one text message against the protocol and the fleet; raise ProtocolError if bad."""
    if len(text) > MAX_CONTROL_MESSAGE_BYTES:
        raise ProtocolError(
            "message_too_large",
            f"control messages are limited to {MAX_CONTROL_MESSAGE_BYTES} bytes",
            limit=MAX_CONTROL_MESSAGE_BYTES,
        )
    try:
        message = parse_json(text)
    except MalformedJsonError as error:
        raise ProtocolError("malformed_json", f"not valid JSON: {error}") from None
    if not isinstance(message, dict):
        raise ProtocolError("malformed_message", "a control message is a JSON object with an 'op'")
    request_id = message.get("id")
    op = message.get("op")
    if op == "subscribe":
        return _subscribe(message, catalog, tick_hz, request_id)
    if op == "unsubscribe":
        machines = message.get("machines")
        return Unsubscribe(
            None if machines is None else _machine_ids(machines, catalog, request_id), request_id
        )
    raise ProtocolError(
        "unknown_op", f"unknown op {op!r}", valid_ops=["subscribe", "unsubscribe"], id=request_id
    )


def request_id_of(text: str) -> Any:
    """The ``id`` of a message that is refused before it is checked (rate-limited), if it has
    one; a message too large to read, or not a JSON object, has none."""
    if len(text) > MAX_CONTROL_MESSAGE_BYTES:
        return None
    try:
        message = parse_json(text)
    except MalformedJsonError:
        return None
    return message.get("id") if isinstance(message, dict) else None


def rate_divisor(hz: Any, tick_hz: float, request_id: Any = None) -> int:
    """Ticks between two frames for a requested rate from 1 Hz (or the tick rate) up to it."""
    low = min(1.0, tick_hz)
    if isinstance(hz, bool) or not isinstance(hz, int | float) or not low <= hz <= tick_hz:
        raise ProtocolError(
            "bad_rate",
            f"hz must be a number from {low:g} to the tick rate {tick_hz:g}, got {hz!r}",
            min_hz=low,
            max_hz=tick_hz,
            id=request_id,
        )
    return max(1, round(tick_hz / hz))


def check_fields(
    fields: Any, machines: tuple[str, ...], catalog: FleetCatalog, request_id: Any
) -> Fields:
    """Fields as a canonical tuple (sensors, then labels), each valid for every machine asked
    for; None (no filter) means all of them."""
    if fields is None:
        return None
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise ProtocolError(
            "bad_fields", "fields must be a non-empty list of sensor names", id=request_id
        )
    for machine_id in machines:
        valid = catalog.field_names(machine_id)
        for name in fields:
            if name not in valid:
                raise ProtocolError(
                    "unknown_field",
                    f"{machine_id} ({catalog.machine_type(machine_id).name}) has no field {name!r}",
                    field=name,
                    machine_id=machine_id,
                    valid_fields=list(valid),
                    id=request_id,
                )
    wanted = set(fields)
    return tuple(name for name in catalog.field_names(machines[0]) if name in wanted)


def _subscribe(
    message: dict[str, Any], catalog: FleetCatalog, tick_hz: float, request_id: Any
) -> Subscribe:
    unknown = sorted(set(message) - {"op", "machines", "fields", "hz", "since", "id"})
    if unknown:
        raise ProtocolError(
            "unknown_keys",
            f"unknown key(s) {unknown} in subscribe",
            valid_keys=["machines", "fields", "hz", "since", "id"],
            id=request_id,
        )
    machines = _machine_ids(message.get("machines"), catalog, request_id)
    fields = check_fields(message.get("fields"), machines, catalog, request_id)
    every = rate_divisor(message.get("hz", tick_hz), tick_hz, request_id)
    since = message.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
        raise ProtocolError(
            "bad_since", f"since must be a non-negative seq, got {since!r}", id=request_id
        )
    return Subscribe(machines, fields, every, since, request_id)


def _machine_ids(machines: Any, catalog: FleetCatalog, request_id: Any) -> tuple[str, ...]:
    if not isinstance(machines, list) or not machines:
        raise ProtocolError(
            "bad_machines", "machines must be a non-empty list of machine ids", id=request_id
        )
    if len(machines) > MAX_MACHINES_PER_MESSAGE:
        raise ProtocolError(
            "too_many_machines",
            f"at most {MAX_MACHINES_PER_MESSAGE} machines per message",
            limit=MAX_MACHINES_PER_MESSAGE,
            id=request_id,
        )
    if not all(isinstance(machine, str) for machine in machines):
        raise ProtocolError("bad_machines", "machine ids are strings", id=request_id)
    unknown = [machine for machine in machines if machine not in catalog]
    if unknown:
        raise ProtocolError(
            "unknown_machine",
            unknown_machines_message(unknown[:MAX_LISTED_IDS]),
            machine_ids=unknown[:MAX_LISTED_IDS],
            valid_ids=valid_ids(catalog),
            id=request_id,
        )
    return tuple(dict.fromkeys(machines))
