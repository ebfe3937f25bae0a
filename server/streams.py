"""WebSocket handlers: register subscribers with the hub and keep reading their sockets."""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import WSMsgType, web

from server.hub import Subscriber
from server.keys import hub_key, settings_key, store_key, websockets_key

UNKNOWN_MACHINE_CODE = 4404
MAX_CLIENT_MESSAGE_BYTES = 4096
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes

log = logging.getLogger(__name__)


async def machine_stream(request: web.Request) -> web.StreamResponse:
    """``/ws/machines/{id}``: one snapshot per tick of one machine, as JSON text frames."""
    settings = request.app[settings_key]
    origin = request.headers.get("Origin")
    if origin is not None and not settings.cors_allows_all and origin not in settings.cors_origins:
        raise web.HTTPForbidden(reason=f"Origin {origin} not allowed")
    machine_id = request.match_info["machine_id"]
    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat_s, compress=False, max_msg_size=MAX_CLIENT_MESSAGE_BYTES
    )
    await ws.prepare(request)
    peer = request.remote or "unknown"
    if machine_id not in request.app[store_key]:
        reason = f"unknown machine {machine_id!r}; GET /machines lists the valid ids"
        await ws.close(code=UNKNOWN_MACHINE_CODE, message=_close_reason(reason))
        log.info("refused stream of unknown machine %r from %s", machine_id, peer)
        return ws
    transport = request.transport
    assert transport is not None, "a prepared WebSocket has a transport"
    _bound_kernel_buffer(transport, settings.socket_send_buffer_bytes)
    hub = request.app[hub_key]
    subscriber = Subscriber(
        machine_id=machine_id,
        peer=peer,
        transport=transport,
        close=lambda code, reason: ws.close(code=code, message=reason.encode()),
    )
    request.app[websockets_key].add(ws)
    hub.subscribe(subscriber)
    log.info("stream opened: %s <- %s (%d subscribers)", peer, machine_id, hub.subscriber_count)
    try:
        async for message in ws:
            if message.type is WSMsgType.ERROR:
                break
    finally:
        hub.unsubscribe(subscriber)
        request.app[websockets_key].discard(ws)
        log.info(
            "stream closed: %s <- %s (code %s, sent %d, dropped %d, %d subscribers)",
            peer,
            machine_id,
            ws.close_code,
            subscriber.sent,
            subscriber.dropped,
            hub.subscriber_count,
        )
    return ws


def _bound_kernel_buffer(transport: asyncio.BaseTransport, size_bytes: int) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size_bytes)


def _close_reason(text: str) -> bytes:
    encoded = text.encode()
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return encoded
    return encoded[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore").encode() + b"..."
