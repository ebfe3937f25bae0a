"""``/ws``: many machines on one socket, fields, rates, resume, and every protocol error."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType

from server.control import MAX_CONTROL_MESSAGE_BYTES
from server.keys import hub_key, store_key
from server.streams import CONTROL_BURST
from tests.conftest import Harness, MakeServer

ALL = ["robot_01", "cnc_01", "conveyor_01"]


async def receive(ws: ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=5)
    assert message.type is WSMsgType.TEXT, message
    return json.loads(message.data)


async def subscribe(ws: ClientWebSocketResponse, **request: Any) -> dict[str, Any]:
    await ws.send_json({"op": "subscribe", **request})
    return await receive(ws)


async def frames_of_next_tick(harness: Harness, ws: ClientWebSocketResponse, count: int) -> list:
    await harness.clock.tick()
    return [await receive(ws) for _ in range(count)]


async def test_one_socket_streams_several_machines(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws") as ws:
        ack = await subscribe(ws, machines=ALL, id="r1")
        assert ack == {"op": "subscribed", "machines": ALL, "fields": None, "hz": 10.0, "id": "r1"}
        first = [await receive(ws) for _ in ALL]
        assert sorted(frame["machine_id"] for frame in first) == sorted(ALL)
        for expected_seq in (2, 3, 4):
            frames = await frames_of_next_tick(harness, ws, 3)
            assert sorted(frame["machine_id"] for frame in frames) == sorted(ALL)
            assert {frame["seq"] for frame in frames} == {expected_seq}


async def test_fields_filter_the_snapshot(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws") as ws:
        fields = ["vibration_spindle", "spindle_speed"]
        ack = await subscribe(ws, machines=["cnc_01"], fields=fields)
        assert ack["fields"] == ["spindle_speed", "vibration_spindle"]
        latest = await receive(ws)
        assert list(latest) == [
            "machine_id",
            "type",
            "timestamp",
            "seq",
            "spindle_speed",
            "vibration_spindle",
        ]
        (frame,) = await frames_of_next_tick(harness, ws, 1)
        assert set(frame) == set(latest)


async def test_hz_decimates_on_seq_multiples(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws") as ws:
        ack = await subscribe(ws, machines=["robot_01"], hz=2)
        assert ack["hz"] == 2.0
        await receive(ws)  # the latest snapshot, at once
        await harness.clock.tick(12)
        seqs = [(await receive(ws))["seq"] for _ in range(2)]
        assert seqs == [5, 10]
        await ws.send_json({"op": "unsubscribe"})
        assert (await receive(ws))["op"] == "unsubscribed"


async def test_a_variant_is_encoded_once_per_tick_for_all_its_clients(
    make_server: MakeServer,
) -> None:
    harness = await make_server()
    store = harness.app[store_key]
    clients = [await harness.client.ws_connect("/ws") for _ in range(5)]
    for ws in clients:
        await subscribe(ws, machines=["conveyor_01"], fields=["belt_speed"])
        await receive(ws)
    before = store.encodes
    await harness.clock.tick(4)
    assert store.encodes - before == 4
    received = [[(await ws.receive(timeout=5)).data for _ in range(4)] for ws in clients]
    assert all(payloads == received[0] for payloads in received)
    assert [json.loads(text)["seq"] for text in received[0]] == [2, 3, 4, 5]
    for ws in clients:
        await ws.close()


async def test_unsubscribe_stops_one_machine(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws") as ws:
        await subscribe(ws, machines=["robot_01", "cnc_01"])
        [await receive(ws) for _ in range(2)]
        await ws.send_json({"op": "unsubscribe", "machines": ["robot_01"], "id": 7})
        assert await receive(ws) == {"op": "unsubscribed", "machines": ["robot_01"], "id": 7}
        frames = await frames_of_next_tick(harness, ws, 1)
        assert frames[0]["machine_id"] == "cnc_01"
        await harness.clock.tick()
        assert (await receive(ws))["machine_id"] == "cnc_01"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("{not json", "malformed_json"),
        ("[1, 2]", "malformed_message"),
        ('{"op": "explode"}', "unknown_op"),
        ('{"op": "subscribe", "machines": ["robot_99"]}', "unknown_machine"),
        ('{"op": "subscribe", "machines": "robot_01"}', "bad_machines"),
        ('{"op": "subscribe", "machines": [1]}', "bad_machines"),
        ('{"op": "subscribe", "machines": ["robot_01"], "fields": ["rpm"]}', "unknown_field"),
        ('{"op": "subscribe", "machines": ["robot_01"], "fields": []}', "bad_fields"),
        ('{"op": "subscribe", "machines": ["robot_01"], "hz": 0}', "bad_rate"),
        ('{"op": "subscribe", "machines": ["robot_01"], "hz": 11}', "bad_rate"),
        ('{"op": "subscribe", "machines": ["robot_01"], "hz": "fast"}', "bad_rate"),
        ('{"op": "subscribe", "machines": ["robot_01"], "since": -1}', "bad_since"),
        ('{"op": "subscribe", "machines": ["robot_01"], "colour": 1}', "unknown_keys"),
        ('{"op": "unsubscribe", "machines": ["nope"]}', "unknown_machine"),
    ],
)
async def test_bad_control_messages_get_an_error_and_the_socket_stays_open(
    make_server: MakeServer, message: str, error: str
) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws") as ws:
        await ws.send_str(message)
        answer = await receive(ws)
        assert answer["op"] == "error"
        assert answer["error"] == error
        assert answer["message"]
        ack = await subscribe(ws, machines=["robot_01"])
        assert ack["op"] == "subscribed"


async def test_unknown_field_names_the_valid_ones(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws") as ws:
        answer = await subscribe(ws, machines=["robot_01"], fields=["rpm"], id="x")
        assert answer["field"] == "rpm"
        assert "joint_1_angle" in answer["valid_fields"]
        assert answer["id"] == "x"


async def test_binary_and_oversized_messages_are_refused(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws") as ws:
        await ws.send_bytes(b"\x00\x01")
        assert (await receive(ws))["error"] == "binary_not_accepted"
        await ws.send_str(" " * (MAX_CONTROL_MESSAGE_BYTES + 1))
        answer = await receive(ws)
        assert answer["error"] == "message_too_large"
        assert answer["limit"] == MAX_CONTROL_MESSAGE_BYTES


async def test_subscriptions_per_socket_are_limited(make_server: MakeServer) -> None:
    harness = await make_server(max_subscriptions=2)
    async with harness.client.ws_connect("/ws") as ws:
        await subscribe(ws, machines=["robot_01", "cnc_01"])
        [await receive(ws) for _ in range(2)]
        answer = await subscribe(ws, machines=["conveyor_01"])
        assert answer["error"] == "too_many_subscriptions"
        assert answer["limit"] == 2
        again = await subscribe(ws, machines=["cnc_01"], hz=1)
        assert again["op"] == "subscribed"


async def test_control_messages_are_rate_limited(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws") as ws:
        for number in range(CONTROL_BURST + 1):
            await ws.send_json({"op": "unsubscribe", "id": number})
        answers = [await receive(ws) for _ in range(CONTROL_BURST + 1)]
        assert [a["op"] for a in answers[:CONTROL_BURST]] == ["unsubscribed"] * CONTROL_BURST
        assert answers[-1]["error"] == "rate_limited"
        assert answers[-1]["id"] == CONTROL_BURST  # the refused request's own id
        harness.clock.stall(1.0)  # ten more tokens
        await ws.send_json({"op": "unsubscribe"})
        assert (await receive(ws))["op"] == "unsubscribed"


async def test_resume_sends_the_missed_frames_then_live_ones(make_server: MakeServer) -> None:
    harness = await make_server()
    await harness.clock.tick(9)  # seq 10
    async with harness.client.ws_connect("/ws") as ws:
        await subscribe(ws, machines=["robot_01", "cnc_01"], since=6)
        missed = [await receive(ws) for _ in range(8)]
        assert [(f["machine_id"], f["seq"]) for f in missed] == [
            ("robot_01", 7),
            ("robot_01", 8),
            ("robot_01", 9),
            ("robot_01", 10),
            ("cnc_01", 7),
            ("cnc_01", 8),
            ("cnc_01", 9),
            ("cnc_01", 10),
        ]
        live = await frames_of_next_tick(harness, ws, 2)
        assert {f["seq"] for f in live} == {11}


async def test_resumed_frames_equal_what_live_subscribers_saw(make_server: MakeServer) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws/machines/conveyor_01") as live:
        seen = [await live.receive_str()]
        for _ in range(5):
            await harness.clock.tick()
            seen.append(await live.receive_str())
    async with harness.client.ws_connect("/ws/machines/conveyor_01?since=0") as resumed:
        replay = [await resumed.receive_str() for _ in range(6)]
    assert replay == seen


async def test_resume_beyond_the_history_says_what_was_missed(make_server: MakeServer) -> None:
    harness = await make_server(history_seconds=0.5)  # five ticks at 10 Hz
    await harness.clock.tick(19)  # seq 20, history holds 16..20
    async with harness.client.ws_connect("/ws") as ws:
        await subscribe(ws, machines=["cnc_01"], since=3)
        gap = await receive(ws)
        assert gap == {
            "op": "gap",
            "machine_id": "cnc_01",
            "from_seq": 4,
            "to_seq": 15,
            "reason": "expired",
        }
        assert [(await receive(ws))["seq"] for _ in range(5)] == [16, 17, 18, 19, 20]


async def test_resume_from_a_seq_the_server_never_reached_is_a_reset(
    make_server: MakeServer,
) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws") as ws:
        await subscribe(ws, machines=["robot_01"], since=5000)
        assert await receive(ws) == {
            "op": "gap",
            "machine_id": "robot_01",
            "reason": "reset",
            "since": 5000,
            "latest_seq": 1,
        }


async def test_seed_route_accepts_fields_hz_and_since(make_server: MakeServer) -> None:
    harness = await make_server()
    await harness.clock.tick(9)
    url = "/ws/machines/robot_01?fields=power_consumption&hz=5&since=5"
    async with harness.client.ws_connect(url) as ws:
        missed = [json.loads(await ws.receive_str()) for _ in range(3)]
        assert [frame["seq"] for frame in missed] == [6, 8, 10]
        assert set(missed[0]) == {"machine_id", "type", "timestamp", "seq", "power_consumption"}
        await harness.clock.tick(2)
        assert json.loads(await ws.receive_str())["seq"] == 12


@pytest.mark.parametrize(
    "query", ["fields=rpm", "hz=50", "hz=fast", "since=-2", "since=1.5", "fields="]
)
async def test_seed_route_refuses_bad_parameters_with_4400(
    make_server: MakeServer, query: str
) -> None:
    harness = await make_server()
    async with harness.client.ws_connect(f"/ws/machines/robot_01?{query}") as ws:
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert ws.close_code == 4400
        assert message.extra


async def test_churn_leaves_nothing_behind(make_server: MakeServer) -> None:
    harness = await make_server()
    hub = harness.app[hub_key]
    await harness.clock.tick()
    tasks_before = len(asyncio.all_tasks())
    for _ in range(20):
        sockets = [await harness.client.ws_connect("/ws/machines/robot_01") for _ in range(10)]
        multiplexed = [await harness.client.ws_connect("/ws") for _ in range(5)]
        for ws in multiplexed:
            await subscribe(ws, machines=ALL, hz=5)
        await harness.clock.tick()
        for ws in sockets + multiplexed:
            await ws.close()
    await harness.clock.tick()
    assert hub.connections == set()
    assert hub.subscription_count == 0
    assert hub.variant_count == 0
    assert len(asyncio.all_tasks()) == tasks_before
