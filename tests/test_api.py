"""REST endpoints over a real socket: the seed's contract, its errors, CORS, no stepping."""

from __future__ import annotations

import json
import re

from server.keys import engine_key
from tests.conftest import TEST_SEED, MakeServer

SEED_MACHINES = [
    {"id": "robot_01", "type": "robotic_arm"},
    {"id": "cnc_01", "type": "cnc_mill"},
    {"id": "conveyor_01", "type": "conveyor_belt"},
]
SEED_SENSORS = {
    "robotic_arm": ["joint_1_angle", "temperature_core", "vibration_level", "power_consumption"],
    "cnc_mill": [
        "spindle_speed",
        "tool_temperature",
        "axis_x_position",
        "axis_y_position",
        "axis_z_position",
        "vibration_spindle",
    ],
    "conveyor_belt": ["belt_speed", "motor_load", "bearing_temperature", "items_processed"],
}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_welcome_names_version_machines_and_rate(make_server: MakeServer) -> None:
    harness = await make_server()
    response = await harness.client.get("/")
    assert response.status == 200
    body = await response.json()
    assert "Welcome" in body["message"]
    assert body["machines"] == 3
    assert body["tick_hz"] == 10.0
    assert body["seed"] == TEST_SEED
    assert body["version"]


async def test_machines_lists_the_seed_fleet(make_server: MakeServer) -> None:
    harness = await make_server()
    response = await harness.client.get("/machines")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == SEED_MACHINES


async def test_machine_data_is_a_flat_snapshot_with_seed_sensors(make_server: MakeServer) -> None:
    harness = await make_server()
    for machine in SEED_MACHINES:
        response = await harness.client.get(f"/machines/{machine['id']}/data")
        assert response.status == 200
        snapshot = await response.json()
        assert list(snapshot)[:4] == ["machine_id", "type", "timestamp", "seq"]
        assert snapshot["machine_id"] == machine["id"]
        assert snapshot["type"] == machine["type"]
        assert ISO_MS.match(snapshot["timestamp"])
        assert snapshot["seq"] == 1
        sensors, labels = list(snapshot)[4:-4], list(snapshot)[-4:]
        assert set(SEED_SENSORS[machine["type"]]) <= set(sensors)
        assert all(isinstance(snapshot[name], int | float) for name in sensors)
        assert labels == ["state", "health", "rul_s", "faults"]
        assert snapshot["state"] in ("running", "idle", "warning", "fault", "maintenance")
        assert 0.0 <= snapshot["health"] <= 1.0
        assert snapshot["faults"] == []


async def test_items_processed_is_an_integer(make_server: MakeServer) -> None:
    harness = await make_server()
    response = await harness.client.get("/machines/conveyor_01/data")
    assert isinstance((await response.json())["items_processed"], int)


async def test_unknown_machine_is_404_naming_the_valid_ids(make_server: MakeServer) -> None:
    harness = await make_server()
    response = await harness.client.get("/machines/robot_99/data")
    assert response.status == 404
    body = await response.json()
    assert body["error"] == "unknown_machine"
    assert body["machine_id"] == "robot_99"
    assert body["valid_ids"] == ["robot_01", "cnc_01", "conveyor_01"]
    assert "robot_99" in body["message"]


async def test_unknown_route_and_wrong_method_answer_json(make_server: MakeServer) -> None:
    harness = await make_server()
    response = await harness.client.get("/nowhere")
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
    response = await harness.client.post("/machines")
    assert response.status == 405
    assert (await response.json())["error"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


async def test_rest_reads_never_step_the_simulation(make_server: MakeServer) -> None:
    harness = await make_server()
    engine = harness.app[engine_key]
    bodies = [await (await harness.client.get("/machines/cnc_01/data")).read() for _ in range(20)]
    assert len(set(bodies)) == 1
    assert json.loads(bodies[0])["seq"] == 1
    assert engine.source.seq == 1
    await harness.clock.tick()
    response = await harness.client.get("/machines/cnc_01/data")
    assert (await response.json())["seq"] == 2


async def test_timestamps_follow_the_tick_schedule_even_after_overruns(
    make_server: MakeServer,
) -> None:
    harness = await make_server()
    first = await (await harness.client.get("/machines/robot_01/data")).json()
    assert first["timestamp"] == _iso(harness.clock.wall())
    await harness.clock.tick(5)
    later = await (await harness.client.get("/machines/robot_01/data")).json()
    assert later["seq"] == first["seq"] + 5
    assert later["timestamp"] == _ms_after(first["timestamp"], 500)
    await harness.clock.jump(0.3)  # the tick at +0.6 s runs at +0.8 s; +0.7 and +0.8 are skipped
    after_overrun = await (await harness.client.get("/machines/robot_01/data")).json()
    assert after_overrun["seq"] == later["seq"] + 1
    assert after_overrun["timestamp"] == _ms_after(first["timestamp"], 800)


def _iso(epoch_s: float) -> str:
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms_after(timestamp: str, milliseconds: int) -> str:
    from datetime import datetime, timedelta

    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    shifted = moment + timedelta(milliseconds=milliseconds)
    return shifted.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_cors_allows_every_origin_by_default(make_server: MakeServer) -> None:
    harness = await make_server()
    response = await harness.client.get("/machines", headers={"Origin": "http://dash.example"})
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "http://dash.example")
    preflight = await harness.client.options(
        "/machines/robot_01/data",
        headers={"Origin": "http://dash.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 200


async def test_cors_origins_restricts_to_the_listed_origins(make_server: MakeServer) -> None:
    harness = await make_server(cors_origins=("http://dash.example",))
    allowed = await harness.client.get("/machines", headers={"Origin": "http://dash.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://dash.example"
    other = await harness.client.get("/machines", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_speed_runs_simulated_time_faster_than_the_wall_clock(
    make_server: MakeServer,
) -> None:
    harness = await make_server(speed=60.0)
    first = await (await harness.client.get("/machines/cnc_01/data")).json()
    await harness.clock.tick(10)  # one wall-clock second
    later = await (await harness.client.get("/machines/cnc_01/data")).json()
    assert later["timestamp"] == _ms_after(first["timestamp"], 60_000)
    assert (await (await harness.client.get("/")).json())["speed"] == 60.0
