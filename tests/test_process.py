"""``python -m server`` as a real process: start-up, fleet errors, and graceful SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.processes import START_LIMIT_S, running_server
from tests.rawsocket import open_non_reader


@pytest.fixture
async def server_process() -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    async with running_server("--seed", "5", port_in_env=True) as started:
        yield started


async def test_port_comes_from_the_environment_and_sigterm_closes_streams_with_1001(
    server_process: tuple[asyncio.subprocess.Process, int],
) -> None:
    process, port = server_process
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{port}/ws/machines/robot_01") as ws,
    ):
        assert (await ws.receive_json())["machine_id"] == "robot_01"
        process.send_signal(signal.SIGTERM)
        message = await ws.receive(timeout=10)
        while message.type is WSMsgType.TEXT:
            message = await ws.receive(timeout=10)
        assert message.type is WSMsgType.CLOSE
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
    assert await asyncio.wait_for(process.wait(), timeout=10) == 0


def test_a_bad_fleet_file_stops_start_up_naming_the_line(tmp_path) -> None:
    fleet = tmp_path / "plant.toml"
    fleet.write_text(
        '[[machines]]\nid = "r1"\ntype = "robotic_arm"\n\n[[machines]]\nid = "x"\ntype = "lathe"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "server", "--fleet", str(fleet), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"{fleet}:5: machines entry 2: unknown or missing type 'lathe'" in result.stderr


def test_help_explains_the_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--tick-hz" in result.stdout
    assert "[env PORT]" in result.stdout


async def _wait_for_dropped_frames(port: int) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                for line in (await response.text()).splitlines():
                    if line.startswith("dms_frames_dropped_total ") and float(line.split()[1]):
                        return
            await asyncio.sleep(0.1)
    raise AssertionError("the stalled client's buffers never filled")


async def test_sigterm_ends_on_time_with_a_client_that_never_reads() -> None:
    options = ("--shutdown-timeout", "2", "--tick-hz", "100", "--socket-send-buffer-bytes", "4096")
    async with running_server(*options) as (process, port):
        stalled = await open_non_reader("127.0.0.1", port, "/ws/machines/robot_01")
        await _wait_for_dropped_frames(port)  # its buffers are full: a close frame waits too
        half_open = socket.create_connection(("127.0.0.1", port))
        half_open.sendall(b"GET /ws/machines/cnc_01 HTTP/1.1\r\nHost: x\r\n")  # never finished
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=15)
        took_s = time.monotonic() - began
        stalled.close()
        half_open.close()
    assert code == 0
    assert took_s < 2 + 1.5  # the shutdown timeout, and the interpreter's own exit


async def test_a_silent_connection_is_closed_after_the_keepalive_timeout() -> None:
    async with running_server("--keepalive-timeout", "1") as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        began = time.monotonic()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""  # closed, nothing sent
        assert time.monotonic() - began < 5
        writer.close()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--scenario", "{dir}/scenario.toml"], "{dir}/scenario.toml:1: actions entry 1: unknown "
         "machine 'lathe_1'"),
        (["--record", "{dir}/a-file/recording"], "--record {dir}/a-file/recording: Not a "
         "directory"),
    ],
)  # fmt: skip
def test_a_bad_scenario_or_recording_directory_stops_start_up_in_one_line(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    (tmp_path / "scenario.toml").write_text(
        '[[actions]]\nat = 1\nmachine = "lathe_1"\ncommand = "stop"\n'
    )
    (tmp_path / "a-file").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "server", "--port", "0",
         *(argument.format(dir=tmp_path) for argument in arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"python -m server: {message.format(dir=tmp_path)}"
    )
