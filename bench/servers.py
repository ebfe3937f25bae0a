"""``python -m server`` for the benchmarks that start one or two of them with their own
arguments: on a loopback port, serving before it is handed over, stopped by its pid."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.fanout import REPO, http_get, stop_process

START_LIMIT_S = 120.0  # a large fleet or an export to read takes a while to start


@contextlib.contextmanager
def started_server(
    arguments: Sequence[str], log: Path, *, port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """The server on 127.0.0.1:``port`` with ``arguments``, its output in ``log``, once it
    answers ``GET /health``."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port),
             *arguments],
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            if process.poll() is not None:
                raise SystemExit(f"a server exited during start-up (status "
                                 f"{process.returncode}); see {log}")  # fmt: skip
            try:
                http_get(port, "/health", 2.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"not serving on {port} after {START_LIMIT_S:g} s; "
                                     f"see {log}") from None  # fmt: skip
                time.sleep(0.2)
        yield process
    finally:
        stop_process(process)
