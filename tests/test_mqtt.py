"""Gateway mode against a real Mosquitto, read back by an independent subscriber (paho-mqtt)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.keys import outlets_key
from server.mqtt.gateway import MqttGateway
from server.mqtt.proto.sparkplug_b_pb2 import Payload
from tests import protobuf_wire
from tests.certificates import self_signed
from tests.clock import ManualClock
from tests.conftest import TEST_SEED
from tests.mqtt_brokers import OwnMosquitto, Recorder, require_shared
from tests.processes import running_server
from tests.redis_servers import eventually

MACHINES = {"robot_01": "robotic_arm", "cnc_01": "cnc_mill", "conveyor_01": "conveyor_belt"}


class Gateway:
    """The real app with an MQTT gateway on a manual clock, and a recorder of its prefix."""

    def __init__(self, client: TestClient[web.Request, web.Application], clock: ManualClock):
        self.client, self.clock = client, clock

    @property
    def outlet(self) -> MqttGateway:
        (gateway,) = self.client.app[outlets_key]  # type: ignore[index]
        assert isinstance(gateway, MqttGateway)
        return gateway

    async def connected(self, recorder: Recorder) -> None:
        await recorder.until(lambda: self.outlet.stats.connected, "the gateway connected")

    async def tick(self, count: int = 1) -> None:
        """Ticks one at a time, each once the gateway has handed the last one on."""
        for _ in range(count):
            handled = self.handled
            await self.clock.tick()
            await eventually(lambda handled=handled: self.handled > handled, what="handed on")

    @property
    def handled(self) -> int:
        return self.outlet.sink.delivered + self.outlet.sink.failures


@pytest.fixture
async def gateway(aiohttp_client: Any) -> AsyncIterator[Any]:
    """A factory: ``await gateway(url=..., **settings)`` -> (Gateway, Recorder)."""
    recorders: list[Recorder] = []

    async def make(
        url: str | None = None, recorder_ca: Path | None = None, **overrides: Any
    ) -> tuple[Gateway, Recorder]:
        url = url or require_shared()
        prefix = overrides.pop("mqtt_prefix", f"test-{uuid.uuid4().hex[:8]}")
        recorder = Recorder(url, f"{prefix}/#", f"spBv1.0/{prefix}/#", ca_file=recorder_ca)
        recorders.append(recorder)
        clock = ManualClock()
        settings = Settings(seed=TEST_SEED, mqtt_url=url, mqtt_prefix=prefix, **overrides)
        app = create_app(settings, clock=clock)
        made = Gateway(await aiohttp_client(app), clock)
        await made.connected(recorder)
        return made, recorder

    yield make
    for recorder in recorders:
        recorder.close()


async def test_every_machine_publishes_the_websocket_snapshot_with_status_and_metadata(
    gateway: Any,
) -> None:
    plant, recorder = await gateway()
    await plant.tick(5)
    await recorder.until(lambda: len(recorder.on("/telemetry")) == 18, "6 ticks x 3 machines")
    assert [m.payload for m in recorder.on("/status/" + plant.outlet.topics.gateway_id)] == [
        b"online"
    ]
    for machine_id, machine_type in MACHINES.items():
        (meta,) = recorder.on(f"/{machine_type}/{machine_id}/meta")
        described = await (await plant.client.get(f"/machines/{machine_id}")).json()
        assert json.loads(meta.payload) == described
        telemetry = recorder.on(f"/{machine_type}/{machine_id}/telemetry")
        history = await (await plant.client.get(f"/machines/{machine_id}/history")).json()
        assert [json.loads(m.payload) for m in telemetry] == history, "the stream's frames"
        assert [frame["seq"] for frame in history] == [1, 2, 3, 4, 5, 6]
        assert not any(m.retain for m in telemetry)
    metrics = await (await plant.client.get("/metrics")).text()
    assert "dms_mqtt_published_total 18.0" in metrics
    assert "dms_mqtt_connected 1.0" in metrics


async def test_a_lower_rate_qos_and_retain_are_honoured(gateway: Any) -> None:
    plant, recorder = await gateway(mqtt_hz=2.0, mqtt_qos=1, mqtt_retain=True)
    await plant.tick(11)
    await recorder.until(lambda: len(recorder.on("/telemetry")) == 9, "seqs 1, 5 and 10")
    seqs = [json.loads(m.payload)["seq"] for m in recorder.on("/robot_01/telemetry")]
    assert seqs == [1, 5, 10], "the latest at connection, then every fifth tick"
    late = Recorder(recorder_url(plant), f"{plant.outlet.topics.prefix}/+/+/telemetry")
    try:  # retained: a subscriber that comes now gets each machine's last value at once
        await late.until(lambda: len(late.messages) == 3, "three retained values")
        assert all(m.retain and json.loads(m.payload)["seq"] == 10 for m in late.messages)
    finally:
        late.close()


def recorder_url(plant: Gateway) -> str:
    return str(plant.outlet.broker)


async def test_report_by_exception_publishes_changes_and_the_integrity_period(
    gateway: Any,
) -> None:
    plant, recorder = await gateway(mqtt_deadband=5.0, mqtt_max_silence_s=2.0)
    await recorder.until(lambda: len(recorder.on("/telemetry")) == 3, "every machine at first")
    await plant.tick(5)
    answer = await plant.client.post(
        "/machines/cnc_01/faults", json={"type": "tool_breakage", "severity": 0.9}
    )
    effective = (await answer.json())["effective_seq"]
    await plant.tick(2)
    await recorder.until(lambda: len(recorder.on("/cnc_01/telemetry")) >= 2, "a fault changed")
    changed = json.loads(recorder.on("/cnc_01/telemetry")[1].payload)
    assert changed["seq"] == effective
    assert changed["faults"]
    await plant.tick(14)  # to seq 22: 2 s of simulated time at 10 Hz, the integrity period
    await recorder.until(lambda: len(recorder.on("/robot_01/telemetry")) == 2, "integrity")
    robot = [json.loads(m.payload)["seq"] for m in recorder.on("/robot_01/telemetry")]
    assert robot == [1, 21], "no sensor moves by 5 ranges: sent again after 2 s, not before"
    metrics = await (await plant.client.get("/metrics")).text()
    assert "dms_mqtt_skipped_by_exception_total" in metrics


async def test_commands_are_answered_on_the_reply_topic_and_bad_ones_break_nothing(
    gateway: Any,
) -> None:
    plant, recorder = await gateway(mqtt_commands=True)
    prefix = plant.outlet.topics.prefix
    await recorder.until(lambda: True, "")
    command = f"{prefix}/cnc_mill/cnc_01/cmd"
    await asyncio.sleep(0.2)  # the gateway's subscription is acknowledged
    for payload in (
        json.dumps({"id": "a", "command": "stop"}),
        json.dumps({"id": "b", "fault": {"type": "overheating", "severity": 0.5}}),
        json.dumps({"id": "c", "command": "fly"}),
        json.dumps({"id": "d", "clear_fault": "cnc_mill-99"}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"id": "e", "command": "stop", "fault": {}}),
        "9" * 5000,
    ):
        recorder.publish(command, payload)
    recorder.publish(f"{prefix}/cnc_mill/nobody/cmd", json.dumps({"command": "stop"}))
    recorder.publish(f"{prefix}/robotic_arm/cnc_01/cmd", json.dumps({"command": "stop"}))
    await plant.tick(2)
    await recorder.until(lambda: len(recorder.on("/cmd/reply")) == 10, "ten answers")
    answers = [json.loads(m.payload) for m in recorder.on("/cmd/reply")]
    by_id = {answer["id"]: answer for answer in answers if answer["id"] is not None}
    assert by_id["a"]["ok"] is True
    assert by_id["a"]["mode"] == "idle"
    assert isinstance(by_id["a"]["effective_seq"], int)
    assert by_id["b"]["ok"] is True
    assert by_id["b"]["fault"]["type"] == "overheating"
    assert (by_id["c"]["status"], by_id["c"]["error"]) == (400, "bad_command")
    assert (by_id["d"]["status"], by_id["d"]["error"]) == (404, "unknown_fault")
    assert by_id["e"]["error"] == "bad_message"
    anonymous = sorted(answer["error"] for answer in answers if answer["id"] is None)
    assert anonymous == [
        "malformed_body",
        "malformed_json",
        "malformed_json",
        "unknown_machine",
        "unknown_machine",
    ]
    faults = await (await plant.client.get("/machines/cnc_01/faults")).json()
    assert [fault["type"] for fault in faults["faults"]] == ["overheating"]
    assert (await plant.client.get("/health")).status == 200


async def test_without_mqtt_commands_nothing_on_the_broker_changes_the_plant(
    gateway: Any,
) -> None:
    plant, recorder = await gateway()
    prefix = plant.outlet.topics.prefix
    recorder.publish(f"{prefix}/cnc_mill/cnc_01/cmd", json.dumps({"command": "stop"}))
    await plant.tick(3)
    await recorder.until(lambda: len(recorder.on("/telemetry")) == 12, "telemetry flows")
    assert recorder.on("/cmd/reply") == []
    data = await (await plant.client.get("/machines/cnc_01/data")).json()
    assert data["state"] != "idle"


async def test_a_broker_restart_costs_counted_ticks_and_resumes_with_the_latest(
    gateway: Any, tmp_path: Path
) -> None:
    broker = OwnMosquitto(tmp_path)
    broker.start()
    try:
        plant, recorder = await gateway(url=broker.url)
        await plant.tick(3)
        await recorder.until(lambda: len(recorder.on("/telemetry")) == 12, "before")
        broker.stop()
        await plant.tick(5)
        assert plant.outlet.stats.unsent >= 3 * 4
        broker.start()
        recorder.close()
        after = Recorder(broker.url, f"{plant.outlet.topics.prefix}/#")
        try:
            for _ in range(200):
                await plant.tick()
                if after.on("/telemetry"):
                    break
                await asyncio.sleep(0.02)
            await after.until(lambda: after.on("/status/" + plant.outlet.topics.gateway_id), "")
            assert after.on("/status/" + plant.outlet.topics.gateway_id)[-1].payload == b"online"
            first = json.loads(after.on("/telemetry")[0].payload)["seq"]
            assert first > 9, "the newest tick, not a backlog of the missed ones"
            assert plant.outlet.stats.connects == 2
            assert len(after.on("/meta")) == 3, "metadata published again (a fresh broker)"
        finally:
            after.close()
    finally:
        broker.stop()


async def test_the_last_will_says_offline_when_the_server_is_killed(tmp_path: Path) -> None:
    url = require_shared()
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    recorder = Recorder(url, f"{prefix}/status/#")
    try:
        async with running_server(
            "--mqtt", url, "--mqtt-prefix", prefix, "--mqtt-gateway-id", "line-1"
        ) as (process, _):
            await recorder.until(lambda: recorder.on("/status/line-1"), "online", 10)
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
            await recorder.until(lambda: len(recorder.on("/status/line-1")) == 2, "the will")
        assert [m.payload for m in recorder.on("/status/line-1")] == [b"online", b"offline"]
    finally:
        recorder.close()


def test_under_report_by_exception_a_subscriber_is_never_more_than_the_deadband_off() -> None:
    """The invariant of a deadband: what a subscriber last got is within the band of every
    sensor's true value, for every machine not published at a frame."""
    from server.mqtt.exception import ExceptionFilter
    from simulation import FaultRequest, Fleet, FleetSpec, MachineSpec

    kinds = ("robotic_arm", "cnc_mill", "conveyor_belt")
    spec = FleetSpec(tuple(MachineSpec(f"m{i:02d}", kinds[i % 3]) for i in range(30)))
    fleet = Fleet(spec, seed=TEST_SEED, dt_s=0.1)
    deadband = 0.05
    exceptions = ExceptionFilter(fleet.catalog, deadband, max_silence_s=1e9)
    seen: dict[int, Any] = {}
    published = skipped = 0
    for step in range(300):
        if step == 150:
            fleet.inject_fault("m04", FaultRequest(kind="tool_breakage", severity=0.8))
        frame = fleet.step()
        for slot, columns in enumerate(exceptions.due(frame)):
            values = frame.values[slot]
            if slot not in seen:
                seen[slot] = values.copy()
            seen[slot][:, columns] = values[:, columns]
            published += len(columns)
            skipped += values.shape[1] - len(columns)
            kind = fleet.catalog.types[slot]
            band = deadband * np.array([s.typical_max - s.typical_min for s in kind.sensors])
            off = np.abs(values - seen[slot])
            assert np.all((off <= band[:, None] + 1e-12) | np.isnan(values)), kind.name
    assert published >= 30, "every machine at the first frame"
    assert skipped > published, "most machine-frames are within the band and not sent"


def _spb(recorder: Recorder, kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(topic, decoded payload) of the Sparkplug messages of one kind, in arrival order."""
    return [
        (m.topic, protobuf_wire.payload(m.payload))
        for m in recorder.messages
        if m.topic.split("/")[2:3] == [kind]
    ]


async def test_sparkplug_births_then_data_by_alias_in_sequence(gateway: Any) -> None:
    plant, recorder = await gateway(mqtt_format="sparkplug", mqtt_gateway_id="edge-1")
    group = plant.outlet.topics.prefix
    await plant.tick(4)
    await recorder.until(lambda: len(_spb(recorder, "DDATA")) == 12, "4 ticks x 3 devices")
    ((topic, nbirth),) = _spb(recorder, "NBIRTH")
    assert topic == f"spBv1.0/{group}/NBIRTH/edge-1"
    assert nbirth["seq"] == 0
    node_metrics = {m["name"]: m for m in nbirth["metrics"]}
    assert node_metrics["bdSeq"]["value"] == 0
    assert node_metrics["bdSeq"]["datatype"] == 8  # UInt64
    assert node_metrics["Node Control/Rebirth"]["value"] is False
    births = _spb(recorder, "DBIRTH")
    assert [topic.rsplit("/", 1)[1] for topic, _ in births] == list(MACHINES)
    aliases: dict[str, dict[int, str]] = {}
    for topic, birth in births:
        machine_id = topic.rsplit("/", 1)[1]
        described = await (await plant.client.get(f"/machines/{machine_id}")).json()
        by_name = {m["name"]: m for m in birth["metrics"]}
        for sensor in described["sensors"]:
            definition = by_name[sensor["name"]]
            assert definition["datatype"] in (4, 10)  # Int64 or Double
            assert definition["properties"]["engUnit"] == sensor["unit"]
            assert definition["properties"]["engHigh"] == sensor["field_config"]["max"]
        assert by_name["labels/state"]["datatype"] == 12
        assert by_name["seq"]["value"] == 1
        aliases[machine_id] = {m["alias"]: m["name"] for m in birth["metrics"]}
    for topic, data in _spb(recorder, "DDATA"):
        machine_id = topic.rsplit("/", 1)[1]
        assert all(m["name"] is None for m in data["metrics"]), "by alias alone"
        values = {aliases[machine_id][m["alias"]]: m["value"] for m in data["metrics"]}
        history = await (await plant.client.get(f"/machines/{machine_id}/history")).json()
        snapshot = next(s for s in history if s["seq"] == values["seq"])
        assert values["labels/state"] == snapshot["state"]
        for name, shown in snapshot.items():
            if name in values and isinstance(shown, float):
                assert values[name] == pytest.approx(shown, abs=0.06), name
    seqs = [
        p["seq"]
        for _, p in sorted(
            _spb(recorder, "DBIRTH") + _spb(recorder, "DDATA"), key=lambda item: item[1]["seq"]
        )
    ]
    assert seqs == list(range(1, 16)), "every message after NBIRTH counts on from 1"


async def test_sparkplug_rebirth_on_request_keeps_the_session_bdseq(gateway: Any) -> None:
    plant, recorder = await gateway(mqtt_format="sparkplug", mqtt_gateway_id="edge-2")
    group = plant.outlet.topics.prefix
    await plant.tick(2)
    await recorder.until(lambda: len(_spb(recorder, "DDATA")) == 6, "data flows")
    request = Payload(timestamp=1)
    ask = request.metrics.add()
    ask.name, ask.datatype, ask.boolean_value = "Node Control/Rebirth", 11, True
    recorder.publish(f"spBv1.0/{group}/NCMD/edge-2", request.SerializeToString())
    recorder.publish(f"spBv1.0/{group}/NCMD/edge-2", b"\xff\xfe not protobuf")
    for _ in range(100):
        await plant.tick()
        if len(_spb(recorder, "NBIRTH")) == 2:
            break
        await asyncio.sleep(0.01)
    births = [p for _, p in _spb(recorder, "NBIRTH")]
    assert len(births) == 2
    assert births[1]["seq"] == 0
    assert {m["name"]: m["value"] for m in births[1]["metrics"]}["bdSeq"] == 0
    await recorder.until(lambda: len(_spb(recorder, "DBIRTH")) == 6, "the devices again")


async def test_sparkplug_ndeath_is_the_will_with_the_births_bdseq(tmp_path: Path) -> None:
    url = require_shared()
    group = f"test-{uuid.uuid4().hex[:8]}"
    recorder = Recorder(url, f"spBv1.0/{group}/#")
    try:
        async with running_server(
            "--mqtt", url, "--mqtt-prefix", group, "--mqtt-format", "sparkplug",
            "--mqtt-gateway-id", "edge-3",
        ) as (process, _):  # fmt: skip
            await recorder.until(lambda: _spb(recorder, "NBIRTH"), "NBIRTH", 10)
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
            await recorder.until(lambda: _spb(recorder, "NDEATH"), "NDEATH")
        ((_, birth),) = _spb(recorder, "NBIRTH")
        ((topic, death),) = _spb(recorder, "NDEATH")
        assert topic == f"spBv1.0/{group}/NDEATH/edge-3"
        bd_seq = {m["name"]: m["value"] for m in birth["metrics"]}["bdSeq"]
        assert [(m["name"], m["value"]) for m in death["metrics"]] == [("bdSeq", bd_seq)]
    finally:
        recorder.close()


async def test_a_broker_with_tls_and_a_password(gateway: Any, tmp_path: Path) -> None:
    certificate, key = self_signed(tmp_path)
    passwords = OwnMosquitto.password_file(tmp_path, "plant", "s3cret")
    broker = OwnMosquitto(
        tmp_path,
        f"cafile {certificate}\ncertfile {certificate}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {passwords}\n",
    )
    broker.start()
    try:
        url = f"mqtts://plant:s3cret@127.0.0.1:{broker.port}"
        verified, recorder = await gateway(
            url=url, recorder_ca=certificate, mqtt_ca_file=certificate
        )
        await verified.tick(2)
        await recorder.until(lambda: len(recorder.on("/telemetry")) == 9, "over TLS")
        unverified, _ = await gateway(url=url, recorder_ca=certificate, mqtt_tls_verify=False)
        assert unverified.outlet.stats.connected
        wrong = f"mqtts://plant:wrong@127.0.0.1:{broker.port}"
        refused = create_app(
            Settings(seed=TEST_SEED, mqtt_url=wrong, mqtt_ca_file=certificate),
            clock=ManualClock(),
        )
        (outlet,) = refused[outlets_key]
        assert isinstance(outlet, MqttGateway)
        await outlet.start()
        await eventually(lambda: outlet.stats.connection_failures >= 1, what="refused")
        assert not outlet.stats.connected
        await outlet.stop()
    finally:
        broker.stop()
