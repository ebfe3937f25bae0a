"""Command-line entry point: settings from argv and the environment, then run the process its
role names (embedded by default; a simulator or a web process on a bus; ``--workers N`` of
them); ``export ...`` runs the data-set export instead."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

from server.app import create_app
from server.bus.publisher import LeaseHeldError
from server.config import Settings, configure_logging, load_settings
from server.recorder import RecordingUnavailableError
from server.replay import ReplayError
from server.serve import serve
from simulation import FleetSpecError
from simulation.scenario import ScenarioError


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["export"]:
        from server.export.cli import main as export  # the export alone needs pyarrow

        sys.exit(export(arguments))
    settings = load_settings(arguments, os.environ if environ is None else environ)
    tag = "" if settings.role == "embedded" and settings.workers == 1 else settings.role
    configure_logging(settings.log_level, tag=tag if settings.workers == 1 else "workers")
    if settings.workers > 1:
        from server.workers import run_workers

        sys.exit(run_workers(settings, arguments))
    try:
        status = asyncio.run(_serve(settings))
    except KeyboardInterrupt:  # Ctrl+C before the server was up (a web process waiting)
        status = 130
    except (
        FleetSpecError,
        LeaseHeldError,
        ScenarioError,
        RecordingUnavailableError,
        ReplayError,
    ) as error:
        sys.exit(f"python -m server: {error}")
    except OSError as error:  # address in use, not an address of this host, no permission
        reason = error.strerror or str(error)
        sys.exit(f"python -m server: cannot listen on {settings.host}:{settings.port}: {reason}")
    sys.exit(status)


async def _serve(settings: Settings) -> int:
    return await serve(await _build(settings), settings)


async def _build(settings: Settings) -> web.Application:
    if settings.role == "simulator":
        from server.roles import simulator_app

        return _loaded(simulator_app, settings)
    if settings.role == "web":
        from server.roles import web_app

        return await web_app(settings)
    return _loaded(create_app, settings)


def _loaded(factory: Callable[[Settings], web.Application], settings: Settings) -> web.Application:
    """The app ``factory`` builds; a fleet file that cannot be read is one line, exit 1."""
    try:
        return factory(settings)
    except (FleetSpecError, OSError) as error:
        raise FleetSpecError(f"cannot load the fleet: {error}") from None
