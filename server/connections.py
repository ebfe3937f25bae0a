"""The listening socket's protocol: a cap on open connections, and aiohttp's own request
errors (a malformed request line or header) in the same JSON shape as every other error.

The cap is checked as each connection is made, so it is exact; a connection past it gets a
JSON 503 and is closed at once, keeping file descriptors for the clients already served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

log = logging.getLogger(__name__)

SERVER_NAME = "demo-machine-server"
DESCRIPTOR_RESERVE = 64  # kept for files, logs, the bus and the listening socket itself
REARM_FRACTION = 0.9  # the "cap reached" line is logged again once below 90 % of the cap
REFUSAL_LINGER_S = 2.0  # a refused connection is closed by then, whatever its peer does
MAX_ERROR_MESSAGE = 200  # characters of a parser message (it may quote the bad bytes)


class ConnectionCap:
    """Counts the open connections and admits one only below ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._at_cap = False

    def admit(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            if not self._at_cap:
                self._at_cap = True
                log.warning(
                    "connection cap reached: %d open (--max-connections %d); new connections "
                    "get 503 until some close",
                    self.open,
                    self.limit,
                )
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1
        if self._at_cap and self.open < self.limit * REARM_FRACTION:
            self._at_cap = False
            log.info("below the connection cap again: %d open", self.open)

    def fit_descriptors(self) -> None:
        """Raise the soft descriptor limit towards the cap; lower the cap to what it allows."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = self.limit + DESCRIPTOR_RESERVE
        if soft != resource.RLIM_INFINITY and soft < wanted:
            raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
            except (ValueError, OSError) as error:
                log.warning("cannot raise the file-descriptor limit to %d: %s", raised, error)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            allowed = max(soft - DESCRIPTOR_RESERVE, 1)
            log.warning(
                "the file-descriptor limit (%d) allows %d connections, not %d: capped at %d",
                soft,
                allowed,
                self.limit,
                allowed,
            )
            self.limit = allowed


def refusal_bytes(cap: ConnectionCap) -> bytes:
    body = json.dumps(
        {
            "error": "too_many_connections",
            "message": f"the server holds its cap of {cap.limit} open connections; retry later",
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        f"Server: {SERVER_NAME}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class CappedRequestHandler(web.RequestHandler):
    """aiohttp's request handler, counted against the cap, with JSON parser errors."""

    __slots__ = ("_admitted", "_cap")

    def __init__(self, manager: web.Server, cap: ConnectionCap, **options: Any) -> None:
        super().__init__(manager, **options)
        self._cap = cap
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._cap.admit():
            # Answer, then read and drop the request until the peer closes (or the linger
            # ends): closing with its request unread would reset the connection, and the
            # peer would lose the answer.
            assert isinstance(transport, asyncio.Transport)
            transport.write(refusal_bytes(self._cap))
            transport.write_eof()
            asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.close)
            return
        self._admitted = True
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._admitted:
            self._admitted = False
            self._cap.release()
            super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises once a reply began
        phrase = HTTPStatus(status).phrase
        detail = message if status < 500 and message else phrase
        body = {
            "error": phrase.lower().replace(" ", "_").replace("-", "_"),
            "message": detail[:MAX_ERROR_MESSAGE],
        }
        response = web.json_response(body, status=status)
        response.headers["Server"] = SERVER_NAME
        response.force_close()
        return response
