"""``--workers N``: one command that uses every core: one simulator and N web processes on the
bus, the web processes sharing the port (``SO_REUSEPORT``, the kernel spreads connections).

The supervisor only starts, watches and stops its children: each is ``python -m server``
with the same arguments and environment, and a role. A child that dies is started again
after a backoff; one that keeps failing at once (a port taken by another program) ends the
supervisor with its status. SIGTERM or Ctrl+C is passed on to every child, which shuts down
within its ``--shutdown-timeout``; a child still running after that (and a grace) is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from server.config import Settings

RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
STABLE_AFTER_S = 30.0  # a child that ran this long starts again from the first delay
QUICK_FAILURE_S = 5.0
QUICK_FAILURES_LIMIT = 5
KILL_GRACE_S = 5.0

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Child:
    name: str
    arguments: list[str]
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restart_delay_s: float = RESTART_FIRST_S
    quick_failures: int = 0
    restarts: int = 0


def child_arguments(settings: Settings, argv: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(name, arguments) of every child: the given arguments, then the child's own, which
    win (argparse keeps the last of a repeated flag)."""
    children: list[tuple[str, list[str]]] = []
    base = [*argv, "--workers", "1"]
    if settings.role == "embedded":
        simulator_port = settings.simulator_port or settings.port + 1
        children.append(
            ("simulator", [*base, "--role", "simulator", "--port", str(simulator_port)])
        )
    for number in range(1, settings.workers + 1):
        children.append((f"web-{number}", [*base, "--role", "web", "--reuse-port"]))
    return children


class Supervisor:
    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self.settings = settings
        self.children = [
            Child(name, arguments) for name, arguments in child_arguments(settings, argv)
        ]
        self._stopping = asyncio.Event()
        self.exit_code = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stopping.set)
        log.info(
            "workers: %s on %s:%d",
            ", ".join(child.name for child in self.children),
            self.settings.host,
            self.settings.port,
        )
        keepers = [asyncio.create_task(self._keep(child)) for child in self.children]
        await self._stopping.wait()
        await self._stop_all()
        await asyncio.gather(*keepers)
        return self.exit_code

    async def _keep(self, child: Child) -> None:
        """Run ``child`` until the supervisor stops; start it again after each death, with a
        growing delay, unless it keeps failing at once."""
        while not self._stopping.is_set():
            child.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server", *child.arguments
            )
            child.started_at = time.monotonic()
            log.info("workers: %s started (pid %d)", child.name, child.process.pid)
            status = await child.process.wait()
            if self._stopping.is_set():
                return
            ran_s = time.monotonic() - child.started_at
            if ran_s >= STABLE_AFTER_S:
                child.restart_delay_s, child.quick_failures = RESTART_FIRST_S, 0
            if ran_s < QUICK_FAILURE_S:
                child.quick_failures += 1
            if child.quick_failures >= QUICK_FAILURES_LIMIT:
                log.error(
                    "workers: %s failed %d times within %.0f s of starting (last status %d); "
                    "stopping every worker",
                    child.name,
                    child.quick_failures,
                    QUICK_FAILURE_S,
                    status,
                )
                self.exit_code = status or 1
                self._stopping.set()
                return
            log.warning(
                "workers: %s exited with status %d after %.1f s; starting it again in %.0f s",
                child.name,
                status,
                ran_s,
                child.restart_delay_s,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), child.restart_delay_s)
            child.restart_delay_s = min(child.restart_delay_s * 2, RESTART_MAX_S)
            child.restarts += 1

    async def _stop_all(self) -> None:
        """SIGTERM every child, the web processes first; kill those still running late."""
        running = [
            child
            for child in reversed(self.children)
            if child.process is not None and child.process.returncode is None
        ]
        for child in running:
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.terminate()
        limit_s = self.settings.shutdown_timeout_s + KILL_GRACE_S
        for child in running:
            assert child.process is not None
            try:
                await asyncio.wait_for(child.process.wait(), limit_s)
            except TimeoutError:
                log.warning("workers: %s did not stop in %.0f s; killed", child.name, limit_s)
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
        log.info("workers: all stopped")


def run_workers(settings: Settings, argv: Sequence[str]) -> int:
    return asyncio.run(Supervisor(settings, argv).run())
