"""``python -m server --workers N``: one simulator and N web processes sharing one port."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.processes import free_port
from tests.redis_servers import drop_prefix, eventually, require_shared

START_LIMIT_S = 30.0


def children_of(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: pid -> command line."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            children[int(entry.name)] = command
    return children


def listening_pids(port: int, pids: list[int]) -> set[int]:
    """Which of ``pids`` hold a socket listening on ``port`` (from /proc, no tools needed)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    holders = set()
    for pid in pids:
        with_fd = Path(f"/proc/{pid}/fd")
        try:
            links = [os.readlink(fd) for fd in with_fd.iterdir()]
        except OSError:
            continue
        if any(link == f"socket:[{inode}]" for link in links for inode in inodes):
            holders.add(pid)
    return holders


async def wait_for(condition: Callable[[], object], what: str) -> None:
    """Until ``condition()`` holds; each check reads /proc, so a tenth of a second apart."""
    await eventually(condition, START_LIMIT_S, what, every_s=0.1)


async def test_workers_share_the_port_restart_a_dead_one_and_stop_together() -> None:
    url = await require_shared()
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    port = free_port()
    supervisor = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "--workers", "2", "--host", "127.0.0.1",
        "--port", str(port), "--simulator-port", str(free_port()),
        "--bus", url, "--bus-prefix", prefix, "--shutdown-timeout", "2",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_for(lambda: len(children_of(supervisor.pid)) == 3, "three workers")
        children = children_of(supervisor.pid)
        roles = sorted(command.split("--role ")[-1].split()[0] for command in children.values())
        assert roles == ["simulator", "web", "web"]
        webs = [pid for pid, command in children.items() if "--role web" in command]
        await wait_for(lambda: listening_pids(port, webs) == set(webs), "both webs listening")
        async with aiohttp.ClientSession() as session:
            for _ in range(20):  # whichever web process the kernel picks, the same plant
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    assert response.status == 200

            os.kill(webs[0], signal.SIGKILL)  # a worker dies; the supervisor starts another
            await wait_for(
                lambda: (
                    len(children_of(supervisor.pid)) == 3
                    and webs[0] not in children_of(supervisor.pid)
                ),
                "a new web worker",
            )
            fresh = [
                pid for pid, command in children_of(supervisor.pid).items() if "web" in command
            ]
            await wait_for(lambda: listening_pids(port, fresh) == set(fresh), "it listens")
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                assert response.status == 200
        supervisor.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            status = await supervisor.wait()
        assert status == 0
        assert children_of(supervisor.pid) == {}
        log = (await supervisor.stderr.read()).decode() if supervisor.stderr else ""
        assert "exited with status -9" in log
        assert "workers: all stopped" in log
    finally:
        if supervisor.returncode is None:
            for pid in children_of(supervisor.pid):
                os.kill(pid, signal.SIGKILL)
            supervisor.kill()
            await supervisor.wait()
        await drop_prefix(url, prefix)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--workers", "2"], "--workers 2 runs on a Redis bus: give --bus"),
        (["--role", "web"], "--role web runs on a Redis bus"),
        (["--role", "simulator", "--bus", "redis://127.0.0.1:1", "--workers", "2"], "one process"),
    ],
)
async def test_roles_and_workers_without_what_they_need_say_so(
    arguments: list[str], message: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", *arguments,
        env={"PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, error = await process.communicate()
    assert process.returncode == 2
    assert message in error.decode()
