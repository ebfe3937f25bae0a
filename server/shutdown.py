"""Why and how the process ends: a signal, or a part of the app that cannot go on."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class Shutdown:
    """Set by SIGTERM/Ctrl+C (exit 0) or by :meth:`fail` (a non-zero exit, with the reason)."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.exit_code = 0
        self.reason = ""

    def request(self) -> None:
        self.requested.set()

    def fail(self, reason: str, exit_code: int = 3) -> None:
        """End the process because it cannot go on; its supervisor may start it again."""
        if not self.requested.is_set():
            log.error("%s; stopping", reason)
            self.exit_code, self.reason = exit_code, reason
        self.requested.set()
