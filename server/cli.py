"""Command-line entry point: settings from argv and the environment, then run the app;
``export ...`` runs the data-set export instead."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

from server.app import create_app
from server.config import configure_logging, load_settings
from server.serve import serve
from simulation import FleetSpecError


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["export"]:
        from server.export.cli import main as export  # the export alone needs pyarrow

        sys.exit(export(arguments))
    settings = load_settings(arguments, os.environ if environ is None else environ)
    configure_logging(settings.log_level)
    try:
        app = create_app(settings)
    except (FleetSpecError, OSError) as error:
        sys.exit(f"python -m server: cannot load the fleet: {error}")
    try:
        asyncio.run(serve(app, settings))
    except OSError as error:  # address in use, not an address of this host, no permission
        reason = error.strerror or str(error)
        sys.exit(f"python -m server: cannot listen on {settings.host}:{settings.port}: {reason}")
