"""Run the app on its listening socket until SIGTERM or Ctrl+C, then shut down on time.

aiohttp's ``web.run_app`` with one change: the listening socket's protocol is
:class:`~server.connections.CappedRequestHandler` (the connection cap, JSON parser errors).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from aiohttp import web
from yarl import URL

from server.config import Settings
from server.connections import CappedRequestHandler, ConnectionCap
from server.keys import connection_cap_key, shutdown_key

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 128


class CappedSite(web.BaseSite):
    """A TCP site whose connections are counted against a :class:`ConnectionCap`."""

    __slots__ = ("_factory", "_host", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        cap: ConnectionCap,
        *,
        reuse_port: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(runner, backlog=LISTEN_BACKLOG)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        server = runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._factory = lambda: CappedRequestHandler(server, cap, loop=loop, **options)

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self.port))

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the one the system chose for 0)."""
        if not isinstance(self._server, asyncio.Server) or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._factory,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )


async def serve(app: web.Application, settings: Settings) -> int:
    """Serve ``app`` on ``settings.host:port`` until SIGTERM/SIGINT (exit status 0) or until a
    part of it cannot go on (its status); raises ``OSError`` when the address cannot be
    listened on."""
    loop = asyncio.get_running_loop()
    shutdown = app[shutdown_key]
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, shutdown.request)
    cap = app[connection_cap_key]
    cap.fit_descriptors()
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_timeout_s)
    await runner.setup()
    try:
        site = CappedSite(
            runner,
            settings.host,
            settings.port,
            cap,
            reuse_port=settings.reuse_port,
            keepalive_timeout=settings.keepalive_timeout_s,
        )
        await site.start()
        log.info("serving on %s (at most %d connections)", site.name, cap.limit)
        await shutdown.requested.wait()
        log.info("shutting down (at most %g s)", settings.shutdown_timeout_s)
    finally:
        await runner.cleanup()
    return shutdown.exit_code
