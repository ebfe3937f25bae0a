"""WebSocket handlers: one machine per socket (the seed's route) or many over ``/ws``."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

from aiohttp import WSMsgType, web

from server.config import Settings
from server.control import (
    MAX_CONTROL_MESSAGE_BYTES,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    check_fields,
    parse_control,
    rate_divisor,
    request_id_of,
)
from server.errors import unknown_machines_message
from server.hub import Connection, Hub, VariantKey
from server.keys import catalog_key, hub_key, settings_key, store_key
from server.ratelimit import TokenBucket
from server.store import Store
from simulation import Frame

UNKNOWN_MACHINE_CODE = 4404
BAD_REQUEST_CODE = 4400
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes
MAX_RESUME_FRAMES = 6_000  # per machine of a subscribe request; the send buffer bounds it first
CONTROL_RATE_PER_S = 10.0
CONTROL_BURST = 20
MAX_RATE_VIOLATIONS = 50  # messages refused as rate-limited before the socket is closed
TOO_MANY_MESSAGES_CODE = 1008

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.get("/ws/machines/{machine_id}")
async def machine_stream(request: web.Request) -> web.StreamResponse:
    """``/ws/machines/{id}[?fields=a,b&hz=2&since=seq]``: one machine's snapshots as JSON text."""
    ws = await _accept(request)
    store = request.app[store_key]
    machine_id = request.match_info["machine_id"]
    if machine_id not in store:
        await _refuse(ws, UNKNOWN_MACHINE_CODE, unknown_machines_message([machine_id]))
        return ws
    try:
        subscription = _query_subscription(request, machine_id)
    except ProtocolError as error:
        await _refuse(ws, BAD_REQUEST_CODE, str(error))
        return ws
    async with _Registered(request, ws) as connection:
        _start(
            request.app[hub_key],
            store,
            connection,
            subscription,
            ack_hz=None,
            budget_bytes=request.app[settings_key].send_buffer_bytes,
        )
        async for message in ws:
            if message.type is WSMsgType.ERROR:
                break
    return ws


@routes.get("/ws")
async def multiplex_stream(request: web.Request) -> web.StreamResponse:
    """``/ws``: subscribe to any machines, fields and rates with JSON control messages."""
    ws = await _accept(request, max_msg_size=4 * MAX_CONTROL_MESSAGE_BYTES)
    app = request.app
    hub, store, settings = app[hub_key], app[store_key], app[settings_key]
    bucket = TokenBucket(CONTROL_RATE_PER_S, CONTROL_BURST, hub.clock.now())
    violations = 0
    async with _Registered(request, ws) as connection:
        connection.on_reset = lambda frame: hub.answer(connection, [_reset_notice(store, frame)])
        async for message in ws:
            if message.type is WSMsgType.ERROR:
                break
            try:
                if message.type is not WSMsgType.TEXT:
                    raise ProtocolError("binary_not_accepted", "control messages are JSON text")
                if not bucket.take(hub.clock.now()):
                    violations += 1
                    if violations > MAX_RATE_VIOLATIONS:
                        await ws.close(
                            code=TOO_MANY_MESSAGES_CODE, message=b"too many control messages"
                        )
                        break
                    raise ProtocolError(
                        "rate_limited",
                        f"at most {CONTROL_RATE_PER_S:g} control messages per second "
                        f"(bursts of {CONTROL_BURST}); this one was ignored",
                        limit_per_s=CONTROL_RATE_PER_S,
                        id=request_id_of(message.data),
                    )
                _apply(
                    hub,
                    store,
                    settings,
                    connection,
                    parse_control(message.data, store.catalog, settings.tick_hz),
                )
            except ProtocolError as error:
                hub.answer(connection, [_json(error.payload)])
    return ws


def _apply(
    hub: Hub,
    store: Store,
    settings: Settings,
    connection: Connection,
    request: Subscribe | Unsubscribe,
) -> None:
    if isinstance(request, Unsubscribe):
        machines = (
            list(connection.subscriptions) if request.machines is None else list(request.machines)
        )
        hub.unsubscribe(connection, machines)
        answer = {"op": "unsubscribed", "machines": machines, "id": request.request_id}
        hub.answer(connection, [_json(answer)])
        return
    new = set(request.machines) - set(connection.subscriptions)
    if len(connection.subscriptions) + len(new) > settings.max_subscriptions:
        raise ProtocolError(
            "too_many_subscriptions",
            f"at most {settings.max_subscriptions} machines per connection",
            limit=settings.max_subscriptions,
            id=request.request_id,
        )
    _start(
        hub,
        store,
        connection,
        request,
        ack_hz=settings.tick_hz / request.every,
        budget_bytes=settings.send_buffer_bytes,
    )


def _start(
    hub: Hub,
    store: Store,
    connection: Connection,
    request: Subscribe,
    *,
    ack_hz: float | None,
    budget_bytes: int,
) -> None:
    """Subscribe, then send the ack (if ``ack_hz``) and what the client has not seen yet:
    the latest snapshot, or with ``since`` the frames it missed."""
    for machine_id in request.machines:
        hub.subscribe(connection, VariantKey(machine_id, request.fields, request.every))
    payloads = []
    if ack_hz is not None:
        answer = {
            "op": "subscribed",
            "machines": list(request.machines),
            "fields": None if request.fields is None else list(request.fields),
            "hz": ack_hz,
            "id": request.request_id,
        }
        payloads.append(_json(answer))
    if request.since is None:
        payloads += [hub.snapshot(machine, request.fields) for machine in request.machines]
    else:
        frame_bytes = max(
            len(hub.snapshot(machine, request.fields)) for machine in request.machines
        )
        most = max(1, budget_bytes // (frame_bytes * len(request.machines)))
        payloads += _missed(store, hub.seq, request, min(most, MAX_RESUME_FRAMES))
    hub.answer(connection, payloads)


def _missed(store: Store, latest_seq: int, request: Subscribe, most: int) -> list[bytes]:
    """Held frames after ``since`` up to the hub's ``latest_seq``, on the request's decimation,
    at most ``most`` per machine (the newest), behind a gap marker where short."""
    history, since = store.history, request.since
    assert since is not None
    if since > latest_seq:
        return [
            _json(
                {
                    "op": "gap",
                    "machine_id": machine,
                    "reason": "reset",
                    "since": since,
                    "latest_seq": latest_seq,
                }
            )
            for machine in request.machines
        ]
    held = history.after(since, until=latest_seq)
    due = [frame for frame in held if frame.seq % request.every == 0]
    kept = due[-most:]
    expected = _first_due(since + 1, request.every)
    gap_end = (kept[0].seq if kept else latest_seq + 1) - 1
    reason = "limit" if len(kept) < len(due) else "expired"
    payloads = []
    for machine in request.machines:
        if expected <= gap_end:
            marker = {
                "op": "gap",
                "machine_id": machine,
                "from_seq": expected,
                "to_seq": gap_end,
                "reason": reason,
            }
            payloads.append(_json(marker))
        payloads += [store.encode(frame, machine, request.fields) for frame in kept]
    return payloads


def _first_due(seq: int, every: int) -> int:
    return seq + (-seq) % every


def _query_subscription(request: web.Request, machine_id: str) -> Subscribe:
    catalog, settings = request.app[catalog_key], request.app[settings_key]
    query = request.query
    fields = None
    if "fields" in query:
        fields = check_fields(
            [name for name in query["fields"].split(",") if name], (machine_id,), catalog, None
        )
    every = 1
    if "hz" in query:
        every = rate_divisor(_number(query["hz"], "hz"), settings.tick_hz)
    since: int | None = None
    if "since" in query:
        asked = _number(query["since"], "since")
        if not isinstance(asked, int) or asked < 0:
            raise ProtocolError("bad_since", f"since must be a non-negative seq, got {asked!r}")
        since = asked
    return Subscribe((machine_id,), fields, every, since, None)


def _number(text: str, name: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ProtocolError("bad_query", f"{name} must be a number, got {text!r}") from None


async def _accept(request: web.Request, max_msg_size: int = 4096) -> web.WebSocketResponse:
    settings = request.app[settings_key]
    origin = request.headers.get("Origin")
    if origin is not None and not settings.cors_allows_all and origin not in settings.cors_origins:
        raise web.HTTPForbidden(reason="Origin not allowed")  # never echoed back
    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat_s, compress=False, max_msg_size=max_msg_size
    )
    await ws.prepare(request)
    return ws


class _Registered:
    """Register a prepared WebSocket with the hub for the body of a ``with`` block; log it."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.request, self.ws = request, ws

    async def __aenter__(self) -> Connection:
        request, ws = self.request, self.ws
        transport = request.transport
        assert transport is not None, "a prepared WebSocket has a transport"
        _bound_kernel_buffer(transport, request.app[settings_key].socket_send_buffer_bytes)
        self.connection = Connection(
            peer=request.remote or "unknown",
            transport=transport,
            close=lambda code, reason: ws.close(code=code, message=reason.encode()),
        )
        hub = request.app[hub_key]
        hub.connect(self.connection)
        log.info(
            "stream opened: %s %s (%d connections)",
            self.connection.peer,
            request.path_qs,
            len(hub.connections),
        )
        return self.connection

    async def __aexit__(self, *exc_info: object) -> None:
        hub = self.request.app[hub_key]
        hub.disconnect(self.connection)
        log.info(
            "stream closed: %s %s (code %s, sent %d, dropped %d, %d connections)",
            self.connection.peer,
            self.request.path,
            self.ws.close_code,
            self.connection.sent,
            self.connection.dropped,
            len(hub.connections),
        )


async def _refuse(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    await ws.close(code=code, message=_close_reason(reason))
    log.info("stream refused (%d): %s", code, reason)


def _reset_notice(store: Store, frame: Frame) -> bytes:
    """Sent on ``/ws`` before the first frame of a new simulator run: seqs start over."""
    return _json(
        {
            "op": "reset",
            "reason": "new_run",
            "epoch": store.epoch,
            "seq": frame.seq,
            "message": "the simulator restarted: seqs start over from this frame; "
            "resume with since only from frames after this notice",
        }
    )


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _bound_kernel_buffer(transport: asyncio.BaseTransport, size_bytes: int) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size_bytes)


def _close_reason(text: str) -> bytes:
    encoded = text.encode()
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return encoded
    return encoded[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore").encode() + b"..."
