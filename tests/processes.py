"""``python -m server`` as a child process on a free loopback port, for the tests that need
the real command (signals, the listening socket, start-up)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

START_LIMIT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until_serving(port: int, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.returncode is None, "the server exited during start-up"
            try:
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError(f"server not serving on port {port} after {START_LIMIT_S} s")


@contextlib.asynccontextmanager
async def running_server(
    *arguments: str, port_in_env: bool = False, log_path: Path | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``python -m server`` on a free loopback port (as ``--port``, or as ``PORT`` in the
    environment) with ``arguments``, its log written to ``log_path`` if given; killed if
    still running at the end."""
    port = free_port()
    environ = {"PATH": "/usr/bin:/bin"}
    if port_in_env:
        environ["PORT"] = str(port)
    else:
        arguments = ("--port", str(port), *arguments)
    log: int | None = None
    if log_path is not None:
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "--host",
        "127.0.0.1",
        *arguments,
        env=environ,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log if log is not None else asyncio.subprocess.DEVNULL,
    )
    if log is not None:
        os.close(log)  # the child holds its own copy
    try:
        await wait_until_serving(port, process)
        yield process, port
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
