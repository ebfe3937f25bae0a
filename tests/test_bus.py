"""One simulator, several web processes, one Redis: the same plant everywhere."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

from server.app import create_app
from server.bus.publisher import LeaseHeldError
from server.bus.wire import BusKeys
from server.config import Settings
from server.keys import outlets_key, shutdown_key
from server.roles import publisher_key, responder_key, simulator_app
from tests.bus_plant import BusPlant, Simulator, Web
from tests.clock import ManualClock
from tests.conftest import TEST_SEED
from tests.redis_servers import eventually

SHARDED_FLEET = """
[[machines]]
type = "robotic_arm"
count = 3
id_prefix = "arm_"

[[machines]]
type = "cnc_mill"
count = 2
id_prefix = "mill_"

[[machines]]
type = "conveyor_belt"
count = 2
id_prefix = "belt_"
"""


async def collect(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    messages = []
    async with asyncio.timeout(5):
        while len(messages) < count:
            messages.append(json.loads((await ws.receive()).data))
    return messages


async def test_two_web_processes_stream_the_same_frames_and_answer_the_same(
    plant: BusPlant,
) -> None:
    simulator = await plant.simulator()
    first, second = await plant.web(), await plant.web()
    streams = [await web.client.ws_connect("/ws/machines/cnc_01") for web in (first, second)]
    await simulator.tick(20)
    seen = [await collect(ws, 15) for ws in streams]
    by_seq = [{frame["seq"]: frame for frame in frames} for frames in seen]
    common = set(by_seq[0]) & set(by_seq[1])
    assert len(common) >= 10
    assert all(by_seq[0][seq] == by_seq[1][seq] for seq in common)
    for frames in seen:
        seqs = [frame["seq"] for frame in frames]
        assert seqs == sorted(set(seqs)), "no repeats, no reordering"
    await first.reaches(simulator.seq)
    await second.reaches(simulator.seq)
    for path in ("/machines/robot_01/data", "/machines/conveyor_01/history?seconds=1", "/"):
        answers = [await (await web.client.get(path)).json() for web in (first, second)]
        assert answers[0] == answers[1], path
    assert answers[0]["epoch"] == simulator.publisher.epoch
    assert answers[0]["seed"] == TEST_SEED


async def test_a_sharded_bus_carries_exactly_what_one_embedded_process_serves(
    plant: BusPlant, aiohttp_client: Any, tmp_path: Any
) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(SHARDED_FLEET)
    simulator = await plant.simulator(fleet=fleet, bus_shard_machines=2)
    assert simulator.publisher.plan.shard_count == 4
    web = await plant.web()
    clock = ManualClock()
    embedded = await aiohttp_client(create_app(Settings(seed=TEST_SEED, fleet=fleet), clock=clock))
    await simulator.tick(12)
    await clock.tick(12)
    await web.reaches(13)
    for machine in ("arm_01", "arm_03", "mill_02", "belt_01", "belt_02"):
        path = f"/machines/{machine}/history?seconds=1.2"
        ours = await (await web.client.get(path)).json()
        theirs = await (await embedded.get(path)).json()
        assert isinstance(ours, list), ours
        assert [frame["seq"] for frame in ours] == list(range(1, 14))
        assert ours == theirs, machine


async def test_a_web_process_that_joins_late_fills_its_history_from_the_streams(
    plant: BusPlant,
) -> None:
    simulator = await plant.simulator()
    await simulator.tick(29)
    await eventually(lambda: simulator.publisher.stats.published == 30)
    late = await plant.web()
    history = await (await late.client.get("/machines/robot_01/history?seconds=10")).json()
    assert [frame["seq"] for frame in history] == list(range(1, 31))
    assert late.feed.bus.backfilled_ticks == 30
    assert late.feed.bus.missed_ticks == 0


async def test_a_client_resumes_on_another_web_process_without_repeats_or_gaps(
    plant: BusPlant,
) -> None:
    simulator = await plant.simulator()
    first, second = await plant.web(), await plant.web()
    ws = await first.client.ws_connect("/ws/machines/robot_01")
    await simulator.tick(5)
    frames = await collect(ws, 6)
    await ws.close()
    last = frames[-1]["seq"]
    await simulator.tick(10)
    await second.reaches(simulator.seq)
    resumed = await second.client.ws_connect(f"/ws/machines/robot_01?since={last}")
    await simulator.tick(2)
    seqs = [frame["seq"] for frame in await collect(resumed, simulator.seq - last)]
    assert seqs == list(range(last + 1, simulator.seq + 1))


async def test_faults_and_commands_go_to_the_simulator_and_show_everywhere(
    plant: BusPlant,
) -> None:
    simulator = await plant.simulator()
    first, second = await plant.web(), await plant.web()
    posting = asyncio.ensure_future(
        first.client.post(
            "/machines/cnc_01/faults", json={"type": "tool_breakage", "severity": 0.6}
        )
    )
    await eventually(lambda: _handled(simulator) == 1, what="the simulator took the fault")
    await simulator.tick()  # the frame that shows it
    response = await posting
    assert response.status == 201
    fault = await response.json()
    assert fault["effective_seq"] == simulator.seq
    assert first.seq >= fault["effective_seq"], "answered once this process shows it"
    await second.reaches(fault["effective_seq"])
    listed = await (await second.client.get("/machines/cnc_01/faults")).json()
    assert [entry["id"] for entry in listed["faults"]] == [fault["id"]]
    data = await (await second.client.get("/machines/cnc_01/data")).json()
    assert [entry["id"] for entry in data["faults"]] == [fault["id"]]

    stopping = asyncio.ensure_future(
        second.client.post("/machines/robot_01/commands", json={"command": "stop"})
    )
    await eventually(lambda: _handled(simulator) == 2)
    await simulator.tick()
    answer = await (await stopping).json()
    assert answer["mode"] == "idle"
    assert answer["effective_seq"] == simulator.seq


async def test_refusals_come_back_from_the_simulator_as_the_embedded_server_gives_them(
    plant: BusPlant,
) -> None:
    await plant.simulator()
    web = await plant.web()
    bad_kind = await web.client.post(
        "/machines/cnc_01/faults", json={"type": "meteor", "severity": 0.5}
    )
    assert bad_kind.status == 400
    body = await bad_kind.json()
    assert body["error"] == "bad_kind"
    assert "tool_breakage" in body["valid"]
    unknown = await web.client.delete("/machines/cnc_01/faults/cnc_mill-99")
    assert unknown.status == 404
    assert (await unknown.json())["error"] == "unknown_fault"
    bad_command = await web.client.post("/machines/cnc_01/commands", json={"command": "fly"})
    assert bad_command.status == 400
    nobody = await web.client.post("/machines/nobody/commands", json={"command": "stop"})
    assert nobody.status == 404


async def test_without_a_simulator_a_change_is_503_and_a_silent_one_504(
    plant: BusPlant,
) -> None:
    simulator = await plant.simulator()
    web = await plant.web(bus_command_timeout_s=0.3)
    await simulator.client.close()
    response = await web.client.post("/machines/cnc_01/commands", json={"command": "stop"})
    assert response.status == 503
    assert (await response.json())["error"] == "simulator_unavailable"

    silent = redis.Redis.from_url(plant.url)
    pubsub = silent.pubsub()
    await pubsub.subscribe(BusKeys(plant.prefix).control)  # takes requests, never answers
    try:
        response = await web.client.post("/machines/cnc_01/commands", json={"command": "stop"})
        assert response.status == 504
        assert (await response.json())["error"] == "simulator_timeout"
    finally:
        await pubsub.aclose()
        await silent.aclose()


async def test_a_stale_stream_is_a_503_on_health_and_nothing_is_invented(plant: BusPlant) -> None:
    simulator = await plant.simulator()
    web = await plant.web()
    await simulator.tick(3)
    await web.reaches(4)
    assert (await web.client.get("/health")).status == 200
    web.clock.stall(2.5)
    response = await web.client.get("/health")
    assert response.status == 503
    assert (await response.json())["seq"] == 4
    assert web.seq == 4


async def test_a_new_simulator_run_resets_every_client_never_mixing_runs(plant: BusPlant) -> None:
    simulator = await plant.simulator()
    web = await plant.web()
    multiplexed = await web.client.ws_connect("/ws")
    await multiplexed.send_json({"op": "subscribe", "machines": ["robot_01"], "id": 1})
    single = await web.client.ws_connect("/ws/machines/robot_01")

    async def read_until_closed() -> list[int]:
        seqs = []
        while (message := await single.receive()).type is aiohttp.WSMsgType.TEXT:
            seqs.append(json.loads(message.data)["seq"])
        assert message.type is aiohttp.WSMsgType.CLOSE
        return seqs

    reading = asyncio.ensure_future(read_until_closed())
    await simulator.tick(10)
    await web.reaches(11)
    old_epoch = simulator.publisher.epoch
    await simulator.client.close()

    restarted = await plant.simulator(seed=7)
    await restarted.tick(3)
    await eventually(lambda: web.store.epoch == restarted.publisher.epoch)
    async with asyncio.timeout(5):
        single_seqs = await reading
    assert single.close_code == 1012, "the old run's stream ends: reconnect for the new one"
    assert single_seqs == list(range(1, 12)), "every frame of the old run, none of the new"
    messages = []
    async with asyncio.timeout(5):
        while not any(m.get("op") == "reset" for m in messages) or messages[-1].get("seq", 0) < 2:
            messages.append(json.loads((await multiplexed.receive()).data))
    reset_at = next(i for i, m in enumerate(messages) if m.get("op") == "reset")
    before, after = messages[:reset_at], messages[reset_at + 1 :]
    assert messages[reset_at]["epoch"] == restarted.publisher.epoch != old_epoch
    old = [m["seq"] for m in before if "machine_id" in m]
    assert old == list(range(1, 12)), "the old run's frames, then the notice"
    assert [m["seq"] for m in after] == list(range(messages[reset_at]["seq"], after[-1]["seq"] + 1))
    welcome = await (await web.client.get("/")).json()
    assert (welcome["epoch"], welcome["seed"]) == (restarted.publisher.epoch, 7)
    history = await (await web.client.get("/machines/robot_01/history?seconds=60")).json()
    assert [frame["seq"] for frame in history] == list(range(1, web.seq + 1)), "old run gone"


async def test_a_run_with_another_fleet_stops_the_web_process_to_be_started_again(
    plant: BusPlant, tmp_path: Any
) -> None:
    simulator = await plant.simulator()
    web: Web = await plant.web()
    await simulator.client.close()
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(SHARDED_FLEET)
    await plant.simulator(fleet=fleet)
    shutdown = web.app[shutdown_key]
    await eventually(lambda: shutdown.requested.is_set(), what="the web process stops")
    assert shutdown.exit_code == 3
    assert "another fleet" in shutdown.reason


def _handled(simulator: Simulator) -> int:
    return simulator.app[responder_key].handled


async def test_the_simulator_serves_health_and_metrics_only_and_holds_its_prefix(
    plant: BusPlant,
) -> None:
    simulator = await plant.simulator()
    await simulator.tick(2)
    assert (await simulator.client.get("/health")).status == 200
    assert (await simulator.client.get("/")).status == 404
    assert (await simulator.client.get("/machines/robot_01/data")).status == 404
    metrics = await (await simulator.client.get("/metrics")).text()
    assert "dms_bus_published_ticks_total 3.0" in metrics
    assert "dms_connections " not in metrics, "no fan-out in the simulator"
    rival = simulator_app(plant.settings("simulator"), clock=ManualClock())
    with pytest.raises(LeaseHeldError, match="another simulator"):
        await rival[publisher_key].announce()
    await rival[publisher_key].client.aclose()


async def test_junk_on_the_bus_is_counted_and_breaks_nothing(plant: BusPlant) -> None:
    simulator = await plant.simulator()
    web = await plant.web()
    keys = BusKeys(plant.prefix)
    junk = redis.Redis.from_url(plant.url)
    try:
        await junk.publish(keys.ticks(0), b"DMSB not a shard")
        await junk.publish(keys.control, b"{not json")
        await junk.publish(keys.control, json.dumps({"id": "x", "reply_to": "elsewhere"}))
        await junk.publish(keys.announcements, b"[]")
    finally:
        await junk.aclose()
    await eventually(lambda: web.feed.bus.bad_messages == 2, what="junk counted")
    await eventually(lambda: simulator.app[responder_key].bad_requests == 2)
    await simulator.tick(2)
    await web.reaches(3)
    assert (await web.client.get("/machines/robot_01/data")).status == 200
    stopping = asyncio.ensure_future(
        web.client.post("/machines/robot_01/commands", json={"command": "stop"})
    )
    await eventually(lambda: _handled(simulator) == 1)
    await simulator.tick()
    assert (await stopping).status == 200


async def test_a_web_process_can_be_the_mqtt_gateway_of_the_bus_plant(plant: BusPlant) -> None:
    from tests.mqtt_brokers import Recorder
    from tests.mqtt_brokers import require_shared as require_broker

    broker = require_broker()
    simulator = await plant.simulator()
    topic_prefix = f"{plant.prefix}-mqtt"
    recorder = Recorder(broker, f"{topic_prefix}/#")
    try:
        web = await plant.web(mqtt_url=broker, mqtt_prefix=topic_prefix, mqtt_commands=True)
        (gateway,) = web.app[outlets_key]
        await eventually(lambda: gateway.stats.connected, what="the gateway connected")
        await simulator.tick(3)
        await eventually(lambda: len(recorder.on("/robot_01/telemetry")) >= 3, what="frames")
        seqs = [json.loads(m.payload)["seq"] for m in recorder.on("/robot_01/telemetry")]
        assert seqs == sorted(set(seqs))
        assert seqs[-1] == simulator.seq
        recorder.publish(f"{topic_prefix}/cnc_mill/cnc_01/cmd", json.dumps({"command": "stop"}))
        await eventually(lambda: _handled(simulator) == 1, what="forwarded to the simulator")
        await simulator.tick()
        await eventually(lambda: recorder.on("/cmd/reply"), what="the answer")
        answer = json.loads(recorder.on("/cmd/reply")[0].payload)
        assert answer["ok"] is True
        assert answer["mode"] == "idle"
        assert answer["effective_seq"] == simulator.seq
    finally:
        recorder.close()
