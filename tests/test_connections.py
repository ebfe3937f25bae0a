"""The listening socket of ``python -m server``: the connection cap, JSON parser errors, and
request headers that never finish."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp

from tests.processes import running_server

DEADLINE_S = 10.0


async def _read_response(port: int, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """Send raw ``request`` bytes; return the status line, headers and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=DEADLINE_S)  # closed after it
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status.encode(), headers, body


async def _get_status(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return None


async def test_connections_past_the_cap_get_a_json_503_and_one_log_line(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    async with running_server("--max-connections", "4", log_path=log_path) as (_, port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        for _ in range(3):  # each refused, one log line for the whole episode
            status, headers, body = await _read_response(port, b"GET /health HTTP/1.1\r\n\r\n")
            assert status == b"HTTP/1.1 503 Service Unavailable"
            assert headers["Content-Type"] == "application/json"
            assert json.loads(body)["error"] == "too_many_connections"
        held.pop()[1].close()
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/metrics"
            deadline = time.monotonic() + DEADLINE_S
            refused = 3
            while await _get_status(session, url) != 200:  # served once one has closed
                assert time.monotonic() < deadline, "never served after a connection closed"
                refused += 1
                await asyncio.sleep(0.05)
            async with session.get(url) as response:
                metrics = await response.text()
        for _, writer in held:
            writer.close()
    assert f"dms_connections_refused_total {refused}.0" in metrics
    log = log_path.read_text()
    assert log.count("connection cap reached: 4 open (--max-connections 4)") == 1
    assert "below the connection cap again" in log


async def test_the_parsers_own_errors_are_json_without_versions() -> None:
    too_long = b"X-Long: " + b"a" * 20_000
    requests = (
        b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",  # a control byte in the method
        b"GET / HTTP/1.1\r\nHost: x\r\n" + too_long + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    )
    async with running_server() as (_, port):
        for request in requests:
            status, headers, body = await _read_response(port, request)
            assert status.split()[1] == b"400", status
            assert headers["Content-Type"].startswith("application/json")
            assert headers["Server"] == "demo-machine-server"
            reply = json.loads(body)
            assert reply["error"] == "bad_request"
            assert reply["message"]


async def test_a_request_header_that_never_finishes_is_cut_at_the_keepalive_timeout() -> None:
    async with running_server("--keepalive-timeout", "1") as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        began = time.monotonic()
        closed_after_s = None
        for _ in range(50):  # one header byte every 0.1 s, for at most 5 s
            writer.write(b"X")
            try:
                await writer.drain()
                if await asyncio.wait_for(reader.read(1), timeout=0.1) == b"":
                    closed_after_s = time.monotonic() - began
                    break
            except TimeoutError:
                continue
            except ConnectionError:
                closed_after_s = time.monotonic() - began
                break
        writer.close()
    assert closed_after_s is not None, "a trickled header held the connection open"
    assert closed_after_s < 3.0
