"""Describing machines, injecting and clearing faults, commands, and who may make changes."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

from tests.conftest import Harness, MakeServer


async def snapshot(harness: Harness, machine_id: str) -> dict[str, Any]:
    return await (await harness.client.get(f"/machines/{machine_id}/data")).json()


async def test_describe_gives_units_ranges_thresholds_in_grafana_terms(
    make_server: MakeServer,
) -> None:
    harness = await make_server()
    response = await harness.client.get("/machines/robot_01")
    assert response.status == 200
    body = await response.json()
    assert body["type"] == "robotic_arm"
    vibration = next(s for s in body["sensors"] if s["name"] == "vibration_level")
    config = vibration["field_config"]
    assert config["unit"] == "suffix: mm/s"  # Grafana has no built-in mm/s unit
    temperature = next(s for s in body["sensors"] if s["name"] == "temperature_core")
    assert temperature["field_config"]["unit"] == "celsius"
    assert config["description"]
    assert config["min"] < config["max"]
    steps = config["thresholds"]["steps"]
    assert steps[0] == {"color": "green", "value": None}
    assert [step["value"] for step in steps[1:]] == [vibration["warning"], vibration["alarm"]]
    assert vibration["warning"] < vibration["alarm"]
    assert [label["name"] for label in body["labels"]] == ["state", "health", "rul_s", "faults"]
    assert "stuck" in body["fault_types"]
    assert body["commands"] == ["start", "stop", "maintain", "reset"]
    assert (await harness.client.get("/machines/robot_99")).status == 404


async def test_an_injected_fault_shows_in_the_labels_until_cleared(
    make_server: MakeServer,
) -> None:
    harness = await make_server()
    response = await harness.client.post(
        "/machines/conveyor_01/faults",
        json={"type": "bearing_defect", "severity": 0.7, "onset": "ramp", "duration_s": 3600},
    )
    assert response.status == 201
    fault = await response.json()
    assert fault["type"] == "bearing_defect"
    assert fault["severity"] == 0.7
    assert fault["onset"] == "ramp"
    assert fault["origin"] == "injected"
    assert response.headers["Location"] == f"/machines/conveyor_01/faults/{fault['id']}"
    await harness.clock.tick()
    labels = (await snapshot(harness, "conveyor_01"))["faults"]
    assert [(f["id"], f["type"], f["severity"]) for f in labels] == [
        (fault["id"], "bearing_defect", 0.7)
    ]
    assert labels[0]["onset_time"] == fault["onset_time"]
    listed = await (await harness.client.get("/machines/conveyor_01/faults")).json()
    assert [f["id"] for f in listed["faults"]] == [fault["id"]]
    cleared = await harness.client.delete(f"/machines/conveyor_01/faults/{fault['id']}")
    assert cleared.status == 200
    await harness.clock.tick()
    assert (await snapshot(harness, "conveyor_01"))["faults"] == []


async def test_a_dropout_gives_null_and_a_stuck_sensor_repeats(make_server: MakeServer) -> None:
    harness = await make_server()
    for kind, sensor in (("dropout", "spindle_speed"), ("stuck", "tool_temperature")):
        response = await harness.client.post(
            "/machines/cnc_01/faults", json={"type": kind, "severity": 1.0, "sensor": sensor}
        )
        assert response.status == 201
    readings = []
    for _ in range(5):
        await harness.clock.tick()
        readings.append(await snapshot(harness, "cnc_01"))
    assert all(reading["spindle_speed"] is None for reading in readings)
    assert len({reading["tool_temperature"] for reading in readings}) == 1
    csv = await (await harness.client.get("/machines/cnc_01/history?seconds=0.2&format=csv")).text()
    header, first, *_ = csv.splitlines()
    assert first.split(",")[header.split(",").index("spindle_speed")] == ""


async def test_commands_change_the_operating_state(make_server: MakeServer) -> None:
    harness = await make_server()
    response = await harness.client.post("/machines/robot_01/commands", json={"command": "stop"})
    assert response.status == 200
    assert (await response.json())["mode"] == "idle"
    await harness.clock.tick()
    assert (await snapshot(harness, "robot_01"))["state"] == "idle"
    response = await harness.client.post(
        "/machines/robot_01/commands", json={"command": "maintain"}
    )
    assert (await response.json())["mode"] == "maintenance"
    await harness.clock.tick()
    stopped = await snapshot(harness, "robot_01")
    assert stopped["state"] == "maintenance"
    assert stopped["health"] == pytest.approx(1.0, abs=0.01)


FAULTS = "/machines/robot_01/faults"


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (FAULTS, b"{oops", 400, "malformed_json"),
        (FAULTS, b"[1]", 400, "malformed_body"),
        (FAULTS, b'{"type": "stuck"}', 400, "missing_field"),
        (FAULTS, b'{"type":"stuck","severity":1,"x":1}', 400, "unknown_keys"),
        (FAULTS, b'{"type": "lightning", "severity": 1}', 400, "bad_kind"),
        (FAULTS, b'{"type": "belt_slip", "severity": 1}', 400, "bad_kind"),
        (
            "/machines/robot_01/faults",
            b'{"type": "overheating", "severity": 2}',
            400,
            "bad_severity",
        ),
        (
            "/machines/robot_01/faults",
            b'{"type":"bias","severity":1,"sensor":"rpm"}',
            400,
            "bad_sensor",
        ),
        (
            "/machines/robot_01/faults",
            b'{"type":"overheating","severity":1,"onset":"x"}',
            400,
            "bad_onset",
        ),
        (
            "/machines/robot_99/faults",
            b'{"type": "overheating", "severity": 1}',
            404,
            "unknown_machine",
        ),
        ("/machines/robot_01/commands", b'{"command": "explode"}', 400, "bad_command"),
        ("/machines/robot_01/commands", b'{"cmd": "stop"}', 400, "unknown_keys"),
        (FAULTS, b"x" * 20_000, 413, "body_too_large"),
    ],
)
async def test_bad_requests_say_what_is_wrong(
    make_server: MakeServer, path: str, body: bytes, status: int, error: str
) -> None:
    harness = await make_server()
    response = await harness.client.post(
        path, data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == status
    answer = await response.json()
    assert answer["error"] == error
    assert answer["message"]


async def test_a_refused_fault_type_lists_the_valid_ones(make_server: MakeServer) -> None:
    harness = await make_server()
    response = await harness.client.post(
        "/machines/robot_01/faults", json={"type": "belt_slip", "severity": 1}
    )
    answer = await response.json()
    assert "overheating" in answer["valid"]
    assert "belt_slip" not in answer["valid"]


async def test_clearing_an_unknown_fault_is_404(make_server: MakeServer) -> None:
    harness = await make_server()
    response = await harness.client.delete("/machines/robot_01/faults/robotic_arm-99")
    assert response.status == 404
    assert (await response.json())["error"] == "unknown_fault"


async def test_a_token_guards_every_change(make_server: MakeServer) -> None:
    harness = await make_server(control_token="s3cret")
    fault = {"type": "overheating", "severity": 0.5}
    missing = await harness.client.post("/machines/robot_01/faults", json=fault)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await harness.client.post(
        "/machines/robot_01/faults", json=fault, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status == 403
    right = await harness.client.post(
        "/machines/robot_01/faults", json=fault, headers={"Authorization": "Bearer s3cret"}
    )
    assert right.status == 201
    assert (await harness.client.get("/machines/robot_01/faults")).status == 200


async def test_without_a_token_only_trusted_networks_may_change_the_plant(
    make_server: MakeServer,
) -> None:
    harness = await make_server(control_networks=(ip_network("10.0.0.0/8"),))
    response = await harness.client.post("/machines/robot_01/commands", json={"command": "stop"})
    assert response.status == 403
    assert "CONTROL_TOKEN" in (await response.json())["message"]
    assert (await harness.client.get("/machines/robot_01/faults")).status == 200
    assert (await harness.client.get("/machines/robot_01/data")).status == 200


async def test_spontaneous_faults_are_reproducible_with_the_seed(make_server: MakeServer) -> None:
    runs = []
    for _ in range(2):
        harness = await make_server(fault_rate_per_h=3600.0, speed=10.0)
        await harness.clock.tick(30)
        runs.append(
            [(await snapshot(harness, m))["faults"] for m in ("robot_01", "cnc_01", "conveyor_01")]
        )
    assert runs[0] == runs[1]
    assert any(faults for faults in runs[0])
