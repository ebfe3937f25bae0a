"""WebSocket streams on real sockets: a frame per tick, shared samples, errors, slow consumers."""

from __future__ import annotations

import struct

import pytest
from aiohttp import WSMsgType

from server.hub import SLOW_CONSUMER_CODE, SLOW_CONSUMER_REASON
from server.keys import hub_key
from tests.conftest import MakeServer
from tests.rawsocket import open_non_reader, read_until_closed


async def test_stream_sends_one_snapshot_per_tick_with_consecutive_seq(
    make_server: MakeServer,
) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws/machines/robot_01") as ws:
        first = await ws.receive_json()
        assert first["machine_id"] == "robot_01"
        seqs = [first["seq"]]
        for _ in range(10):
            await harness.clock.tick()
            seqs.append((await ws.receive_json())["seq"])
        assert seqs == list(range(seqs[0], seqs[0] + 11))


async def test_stream_follows_the_tick_schedule(make_server: MakeServer) -> None:
    harness = await make_server(tick_hz=10.0)
    async with harness.client.ws_connect("/ws/machines/cnc_01") as ws:
        await ws.receive_json()
        await harness.clock.tick(3)
        for _ in range(3):
            await ws.receive_json()
    start = harness.clock.deadlines[0] - 0.1
    assert harness.clock.deadlines[:3] == pytest.approx([start + 0.1 * k for k in (1, 2, 3)])


async def test_two_subscribers_receive_identical_frames(make_server: MakeServer) -> None:
    harness = await make_server()
    async with (
        harness.client.ws_connect("/ws/machines/conveyor_01") as first,
        harness.client.ws_connect("/ws/machines/conveyor_01") as second,
    ):
        await first.receive_str()
        await second.receive_str()
        for _ in range(5):
            await harness.clock.tick()
            assert await first.receive_str() == await second.receive_str()
    assert harness.app[hub_key].store.encodes <= 6 * 1 + 1


async def test_unknown_machine_closes_with_4404_and_a_readable_reason(
    make_server: MakeServer,
) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws/machines/robot_99") as ws:
        message = await ws.receive()
        assert message.type is WSMsgType.CLOSE
        assert ws.close_code == 4404
        assert "robot_99" in message.extra


async def test_websocket_from_a_foreign_origin_is_refused(make_server: MakeServer) -> None:
    harness = await make_server(cors_origins=("http://dash.example",))
    response = await harness.client.get(
        "/ws/machines/robot_01",
        headers={
            "Origin": "http://evil.example",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert response.status == 403
    async with harness.client.ws_connect(
        "/ws/machines/robot_01", headers={"Origin": "http://dash.example"}
    ) as ws:
        assert (await ws.receive_json())["machine_id"] == "robot_01"


async def test_compression_is_not_negotiated(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws/machines/robot_01", compress=15) as ws:
        assert ws.compress == 0
        await ws.receive_json()


async def test_client_messages_are_read_and_ignored(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws/machines/robot_01") as ws:
        await ws.receive_json()
        await ws.send_str("hello")
        await ws.ping()
        await harness.clock.tick()
        assert (await ws.receive_json())["machine_id"] == "robot_01"


async def test_a_non_reading_subscriber_is_closed_without_holding_others_back(
    make_server: MakeServer,
) -> None:
    harness = await make_server(
        send_buffer_bytes=2048, socket_send_buffer_bytes=4096, stall_timeout_s=1.0
    )
    hub = harness.app[hub_key]
    hub.close_grace_s = 0.5
    host, port = harness.client.host, harness.client.port
    stuck = await open_non_reader(host, port, "/ws/machines/robot_01")
    async with harness.client.ws_connect("/ws/machines/robot_01") as reader:
        seqs = [(await reader.receive_json())["seq"]]
        for _ in range(2000):
            await harness.clock.tick()
            seqs.append((await reader.receive_json())["seq"])
            if hub.stats.slow_disconnects:
                break
        assert hub.stats.frames_dropped >= 10, "the stuck client skips frames before eviction"
        assert hub.stats.slow_disconnects == 1
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        tail = await read_until_closed(stuck)
        stuck.close()
        close_frame = bytes([0x88, 2 + len(SLOW_CONSUMER_REASON)]) + struct.pack(
            "!H", SLOW_CONSUMER_CODE
        )
        assert tail.endswith(close_frame + SLOW_CONSUMER_REASON.encode())
        await hub.close()
        await harness.clock.tick()
        assert (await reader.receive_json())["seq"] == seqs[-1] + 1
        assert len(hub.connections) == 1
