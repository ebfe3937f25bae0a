"""Redis for the bus tests: the shared one (``REDIS_URL``, default 127.0.0.1:6379), or a
``redis-server`` of the test's own on a free loopback port, which it may stop and restart
(stopped by its pid, never anyone else's)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from tests.processes import free_port

SHARED_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
START_LIMIT_S = 10.0


def unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail under CI, where Redis must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"Redis is needed under CI=true: {reason}")
    pytest.skip(reason)


async def require_shared() -> str:
    client = redis.Redis.from_url(SHARED_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as error:
        unavailable(f"no Redis at {SHARED_URL}: {error}")
    finally:
        await client.aclose()
    return SHARED_URL


async def drop_prefix(url: str, prefix: str, **options: Any) -> None:
    """Delete every key of a test's plant."""
    client = redis.Redis.from_url(url, **options)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class OwnRedis:
    """A ``redis-server`` on a free loopback port, without persistence, stopped by its pid."""

    def __init__(self, directory: Path, extra: Sequence[str] = (), *, tls_port: bool = False):
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed (Debian: apt-get install redis-server)")
        assert binary is not None
        self.binary, self.directory, self.extra = binary, directory, list(extra)
        self.port = free_port()
        self.tls = tls_port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        ports = (
            ["--port", "0", "--tls-port", str(self.port)]
            if self.tls
            else ["--port", str(self.port)]
        )
        self.process = subprocess.Popen(
            [
                self.binary,
                *ports,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "redis-server exited at start"
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        raise AssertionError(f"redis-server not listening on {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@contextlib.asynccontextmanager
async def own_redis(
    directory: Path, extra: Sequence[str] = (), *, tls_port: bool = False
) -> AsyncIterator[OwnRedis]:
    server = OwnRedis(directory, extra, tls_port=tls_port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def eventually(
    predicate: Callable[[], object], limit_s: float = 5.0, what: str = "", every_s: float = 0.005
) -> None:
    """Wait until ``predicate()`` is true (real I/O in between), for at most ``limit_s``,
    asking every ``every_s``."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit_s} s: {what}")
        await asyncio.sleep(every_s)
