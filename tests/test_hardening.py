"""Bad input gets one clear answer and nothing else breaks: start-up errors, ids, headers, caps."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from aiohttp import WSMsgType

from server.keys import hub_key
from server.streams import CONTROL_BURST, MAX_RATE_VIOLATIONS
from simulation import FleetSpecError, parse_fleet
from simulation.faults import MAX_ACTIVE_FAULTS
from simulation.models import MODEL_TYPES
from tests.conftest import MakeServer
from tests.rawsocket import masked_text_frame, open_non_reader, read_until_closed

ALL = ["robot_01", "cnc_01", "conveyor_01"]
CLIENTS = 5  # abusive clients at once


def start(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "--host", "127.0.0.1", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


def last_line_only(result: subprocess.CompletedProcess[str]) -> str:
    """The error line; no traceback before it."""
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_a_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = start("--port", str(port))
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1" in last_line_only(result)
    assert "address already in use" in last_line_only(result)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [(b"\xff\xfe[[machines]]", "not UTF-8 text"), (None, "not a regular file")],
    ids=["not utf-8", "a directory"],
)
def test_a_fleet_that_is_not_a_text_file_is_refused(
    tmp_path: Path, content: bytes | None, complaint: str
) -> None:
    fleet = tmp_path / "plant.toml"
    if content is None:
        fleet.mkdir()
    else:
        fleet.write_bytes(content)
    result = start("--port", "0", "--fleet", str(fleet))
    assert result.returncode == 1
    assert complaint in last_line_only(result)


def test_a_device_is_refused_not_read_forever() -> None:
    result = start("--port", "0", "--fleet", "/dev/zero")
    assert result.returncode == 1
    assert "/dev/zero: not a regular file" in last_line_only(result)


def test_an_absurd_history_is_a_usage_error() -> None:
    result = start("--history-seconds", "1e308")
    assert result.returncode == 2
    assert "--history-seconds: must be at most" in last_line_only(result)


def test_machine_ids_are_anchored_at_both_ends() -> None:
    with pytest.raises(FleetSpecError, match="invalid machine id"):
        parse_fleet('[[machines]]\nid = "r1\\n"\ntype = "robotic_arm"\n', "f.toml", MODEL_TYPES)


async def test_the_server_header_shows_no_versions(make_server: MakeServer) -> None:
    harness = await make_server()
    for path in ("/", "/machines/robot_99", "/nowhere"):
        response = await harness.client.get(path)
        assert response.headers["Server"] == "demo-machine-server"


async def test_a_refused_origin_is_not_echoed(make_server: MakeServer) -> None:
    harness = await make_server(cors_origins=("http://dash.example",))
    response = await harness.client.get(
        "/ws/machines/robot_01",
        headers={
            "Origin": "http://evil.example",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert response.status == 403
    assert "evil" not in await response.text()


async def test_a_non_utf8_token_is_refused_with_json(make_server: MakeServer) -> None:
    harness = await make_server(control_token="s3cret")
    reader, writer = await asyncio.open_connection(harness.client.host, harness.client.port)
    body = b'{"command": "stop"}'
    writer.write(
        b"POST /machines/cnc_01/commands HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer \xff\xfe\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 403"), answer[:60]
    assert b'"error": "forbidden"' in answer


async def test_active_faults_per_machine_are_capped(make_server: MakeServer) -> None:
    harness = await make_server()
    fault = {"type": "bias", "severity": 0.1, "sensor": "spindle_speed"}
    for _ in range(MAX_ACTIVE_FAULTS):
        assert (await harness.client.post("/machines/cnc_01/faults", json=fault)).status == 201
    refused = await harness.client.post("/machines/cnc_01/faults", json=fault)
    assert refused.status == 409
    body = await refused.json()
    assert (body["error"], body["limit"]) == ("too_many_faults", MAX_ACTIVE_FAULTS)
    listed = await (await harness.client.get("/machines/cnc_01/faults")).json()
    assert len(listed["faults"]) == MAX_ACTIVE_FAULTS
    other = await harness.client.post(
        "/machines/robot_01/faults", json={**fault, "sensor": "joint_1_angle"}
    )
    assert other.status == 201


NASTY_BODIES = {
    "huge integer": b'{"type": "bias", "severity": ' + b"9" * 5000 + b"}",
    "deep nesting": b'{"type": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    "huge duration": b'{"type": "overheating", "severity": 0.5, "duration_s": 1'
    + b"0" * 400
    + b"}",
    "infinite duration": b'{"type": "overheating", "severity": 0.5, "duration_s": 1e400}',
    "huge severity": b'{"type": "overheating", "severity": 1' + b"0" * 400 + b"}",
}


@pytest.mark.parametrize("body", list(NASTY_BODIES.values()), ids=list(NASTY_BODIES))
async def test_malformed_numbers_and_nesting_are_a_json_400(
    make_server: MakeServer, body: bytes
) -> None:
    harness = await make_server()
    response = await harness.client.post(
        "/machines/cnc_01/faults", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    answer = await response.json()
    assert answer["error"] in ("malformed_json", "bad_severity", "bad_duration_s")
    assert len(answer["message"]) < 400  # the number is not echoed back whole
    assert (await harness.client.get("/machines/cnc_01/data")).status == 200


async def test_malformed_control_messages_keep_the_socket(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws") as ws:
        for text in ('{"op": "subscribe", "since": ' + "9" * 5000 + "}", "[" * 5000 + "]" * 5000):
            await ws.send_str(text)
            answer = await ws.receive_json(timeout=5)
            assert (answer["op"], answer["error"]) == ("error", "malformed_json")
        await ws.send_json({"op": "subscribe", "machines": ["robot_01"], "id": 1})
        assert (await ws.receive_json(timeout=5))["op"] == "subscribed"


async def test_a_body_in_two_segments_is_read_whole(make_server: MakeServer) -> None:
    harness = await make_server()
    body = b'{"type": "overheating", "severity": 0.5}'
    reader, writer = await asyncio.open_connection(harness.client.host, harness.client.port)
    writer.write(
        b"POST /machines/cnc_01/faults HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body[:9]
    )
    await writer.drain()
    await asyncio.sleep(0.05)  # lets the server take the first segment on its own
    writer.write(body[9:])
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]


FAULT = {"type": "overheating", "severity": 0.5}


async def test_pages_of_other_origins_cannot_change_the_plant(make_server: MakeServer) -> None:
    harness = await make_server()  # CORS allows every origin to read
    path = "/machines/cnc_01/faults"
    evil = await harness.client.post(path, json=FAULT, headers={"Origin": "http://evil.example"})
    assert evil.status == 403
    assert (await evil.json())["error"] == "cross_origin"
    simple = await harness.client.post(
        path,
        data=json.dumps(FAULT),
        headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
    )
    assert simple.status == 403
    hidden = await harness.client.post(path, json=FAULT, headers={"Sec-Fetch-Site": "cross-site"})
    assert hidden.status == 403
    command = await harness.client.post(
        "/machines/cnc_01/commands",
        json={"command": "stop"},
        headers={"Origin": "null"},
    )
    assert command.status == 403
    assert (await (await harness.client.get(path)).json())["faults"] == []
    own = f"http://{harness.client.host}:{harness.client.port}"
    assert (await harness.client.post(path, json=FAULT, headers={"Origin": own})).status == 201
    assert (await harness.client.post(path, json=FAULT)).status == 201  # curl: no Origin


@pytest.mark.parametrize(
    ("token", "status"), [(None, 403), ("s3cret", 201)], ids=["loopback trust", "token"]
)
async def test_the_own_origin_under_a_rebound_name_needs_the_token(
    make_server: MakeServer, token: str | None, status: int
) -> None:
    """DNS rebinding: a page of ``evil.example`` re-resolved to 127.0.0.1 is "same-origin"
    under that name; without a token it may not change the plant, with one it must send it."""
    harness = await make_server(control_token=token)
    rebound = f"evil.example:{harness.client.port}"
    headers = {"Host": rebound, "Origin": f"http://{rebound}"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = await harness.client.post("/machines/cnc_01/faults", json=FAULT, headers=headers)
    assert response.status == status
    localhost = f"localhost:{harness.client.port}"
    headers |= {"Host": localhost, "Origin": f"http://{localhost}"}
    named = await harness.client.post("/machines/cnc_01/faults", json=FAULT, headers=headers)
    assert named.status == 201


async def test_control_origins_are_trusted_apart_from_cors(make_server: MakeServer) -> None:
    harness = await make_server(
        cors_origins=("https://dash.example",), control_origins=("https://ops.example",)
    )
    path = "/machines/robot_01/faults"
    read_only = await harness.client.post(
        path, json=FAULT, headers={"Origin": "https://dash.example"}
    )
    assert read_only.status == 403
    ops = await harness.client.post(path, json=FAULT, headers={"Origin": "https://ops.example"})
    assert ops.status == 201


async def test_a_client_that_asks_without_reading_is_closed_not_answered(
    make_server: MakeServer,
) -> None:
    harness = await make_server(
        send_buffer_bytes=2048, socket_send_buffer_bytes=4096, stall_timeout_s=1e6
    )  # only its own answers fill its buffers: no ticks, no eviction for stalling
    hub = harness.app[hub_key]
    host, port = harness.client.host, harness.client.port
    sock = await open_non_reader(host, port, "/ws")
    loop = asyncio.get_running_loop()
    ask = masked_text_frame(json.dumps({"op": "subscribe", "machines": ALL, "since": 0}))
    for _ in range(400):  # bounded: the server closes it long before
        if hub.stats.slow_disconnects:
            break
        harness.clock.stall(1.0)  # tokens for the next message: no rate limit in the way
        try:
            await loop.sock_sendall(sock, ask)
        except (ConnectionResetError, BrokenPipeError):
            break
        await asyncio.sleep(0.001)  # lets the server read and answer it
    tail = await asyncio.wait_for(read_until_closed(sock), timeout=10)
    sock.close()
    assert hub.stats.slow_disconnects == 1
    assert b"\x88" in tail[-40:]  # a close frame ...
    assert b"\x03\xf0" in tail[-40:]  # ... with code 1008
    assert hub.connections == set()


async def test_a_flood_of_refused_messages_closes_the_socket(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws") as ws:
        for _ in range(CONTROL_BURST + MAX_RATE_VIOLATIONS + 1):
            await ws.send_json({"op": "unsubscribe"})
        message = await ws.receive(timeout=5)
        while message.type is WSMsgType.TEXT:
            message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert ws.close_code == 1008


async def test_a_resume_is_capped_by_the_send_buffer_with_a_gap_for_the_rest(
    make_server: MakeServer,
) -> None:
    harness = await make_server(send_buffer_bytes=4096)
    await harness.clock.tick(99)  # seq 100
    async with harness.client.ws_connect("/ws") as ws:
        await ws.send_json({"op": "subscribe", "machines": ["cnc_01"], "since": 0})
        assert (await ws.receive_json(timeout=5))["op"] == "subscribed"
        gap = await ws.receive_json(timeout=5)
        assert (gap["op"], gap["reason"], gap["from_seq"]) == ("gap", "limit", 1)
        texts = [await ws.receive_str(timeout=5) for _ in range(100 - gap["to_seq"])]
        assert [json.loads(text)["seq"] for text in texts] == list(range(gap["to_seq"] + 1, 101))
        assert sum(len(text) for text in texts) <= 4096


async def test_a_history_cut_by_its_memory_bound_is_announced(make_server: MakeServer) -> None:
    harness = await make_server(history_seconds=60.0, history_max_bytes=20_000)
    await harness.clock.tick(3)
    welcome = await (await harness.client.get("/")).json()
    held = welcome["history"]["seconds_held"]
    assert welcome["history"]["seconds_asked"] == 60.0
    assert 0 < held < 60.0
    response = await harness.client.get("/machines/robot_01/history?seconds=60")
    assert float(response.headers["X-History-Held-Seconds"]) == pytest.approx(held)


async def _abuse(loop: asyncio.AbstractEventLoop, sock: socket.socket, frames: bytes) -> None:
    """Send ``frames`` without ever reading, until done or the server closes the socket."""
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        await asyncio.wait_for(loop.sock_sendall(sock, frames), timeout=30)


async def test_abusive_clients_hold_no_more_than_their_budget(make_server: MakeServer) -> None:
    """Clients that never read: a burst of resume requests each, then a junk flood."""
    send_buffer = 64 * 1024
    harness = await make_server(send_buffer_bytes=send_buffer, stall_timeout_s=1e6)
    hub = harness.app[hub_key]
    await harness.clock.tick(999)  # seq 1000: every resume asks for 1,000 held frames
    host, port = harness.client.host, harness.client.port
    loop = asyncio.get_running_loop()
    resume = masked_text_frame(json.dumps({"op": "subscribe", "machines": ALL, "since": 0}))
    junk = masked_text_frame("[[[[[")  # answered with malformed_json, each one

    runner = harness.client.server.runner
    assert runner is not None
    assert runner.server is not None
    server = runner.server

    async def abuse(count: int) -> None:
        clients = [await open_non_reader(host, port, "/ws") for _ in range(count)]
        await asyncio.gather(*(_abuse(loop, sock, resume * CONTROL_BURST) for sock in clients))
        await asyncio.gather(*(_abuse(loop, sock, junk * 20_000) for sock in clients))
        for _ in range(500):  # bounded: each is closed once it asks while over its budget
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        for sock in clients:
            sock.close()

    await abuse(1)  # warms the caches and buffers every connection shares
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        await abuse(CLIENTS)
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_client = (peak - before) / CLIENTS
    # at worst a client holds its budget of queued answers plus one answer past it, and
    # aiohttp's queue of its unread messages (at most 128 KiB of payload; as 5-byte
    # messages, ~1.5 MB of objects: reading stops when it is evicted, so ~0.6 MB here)
    assert per_client < send_buffer + 1024 * 1024, f"{per_client / 1e6:.2f} MB per client"
    assert after - before < 256 * 1024  # and once it is closed, nothing stays
    assert hub.connections == set()
    assert hub.stats.slow_disconnects == 1 + CLIENTS
