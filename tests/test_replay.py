"""``--replay``: an export or a recording served through the same API, as recorded."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from server.export.runner import run_export
from server.fleetfile import load_fleet
from server.replay import ReplayError, ReplaySource, open_recording
from server.scenario import load_scenario
from server.source import SourceExhaustedError
from simulation import Fleet
from simulation.export.dataset import make_plan
from tests.conftest import TEST_SEED, MakeServer

DEMO = Path(__file__).parent.parent / "examples" / "plant-demo.toml"
TYPES = {"robot_01": "robotic_arm", "cnc_01": "cnc_mill", "conveyor_01": "conveyor_belt"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six simulated minutes of the demo scenario at 1 Hz."""
    directory = tmp_path_factory.mktemp("export")
    spec = load_fleet(None)[0]
    plan = make_plan(spec, seed=TEST_SEED, rate_hz=1.0, duration_s=360.0)
    catalog = Fleet(spec, seed=TEST_SEED, dt_s=1.0).catalog
    plan = dataclasses.replace(plan, scenario=load_scenario(DEMO, catalog))
    run_export(plan, directory, workers=1)
    return directory


def rows(directory: Path, machine_id: str) -> list[dict[str, Any]]:
    table = pq.read_table(directory / f"{TYPES[machine_id]}.parquet")
    return [row for row in table.to_pylist() if row["machine_id"] == machine_id]


async def test_a_replay_serves_the_recording_through_the_api(
    make_server: MakeServer, exported: Path
) -> None:
    server = await make_server(replay=exported, speed=10.0)
    await server.clock.tick(359)
    welcome = await (await server.client.get("/")).json()
    assert (welcome["tick_hz"], welcome["seed"], welcome["seq"]) == (10.0, TEST_SEED, 360)
    for machine_id in TYPES:
        response = await server.client.get(f"/machines/{machine_id}/history?seconds=600")
        served = await response.json()
        recorded = rows(exported, machine_id)
        assert [frame["seq"] for frame in served] == [row["seq"] for row in recorded]
        for frame, row in zip(served, recorded, strict=True):
            assert frame["state"] == row["state"]
            assert [f["id"] for f in frame["faults"]] == [f["fault_id"] for f in row["faults"]]
            for name, value in frame.items():
                if name in row and isinstance(value, float) and row[name] is not None:
                    assert value == pytest.approx(row[name], abs=1e-3), (machine_id, name)
    assert any(
        frame["faults"] for frame in await (await server.client.get(
            "/machines/cnc_01/history?seconds=600")).json()
    ), "the scenario's tool breakage is in the recording"  # fmt: skip


async def test_a_replay_refuses_faults_and_commands_and_still_lists_faults(
    make_server: MakeServer, exported: Path
) -> None:
    server = await make_server(replay=exported)
    client = server.client
    for response in (
        await client.post("/machines/cnc_01/faults", json={"type": "tool_wear", "severity": 1}),
        await client.post("/machines/cnc_01/commands", json={"command": "stop"}),
        await client.delete("/machines/cnc_01/faults/cnc_mill-1"),
    ):
        assert response.status == 409
        assert (await response.json())["error"] == "replay"
    assert (await client.get("/machines/cnc_01/faults")).status == 200
    assert (await client.get("/machines/nobody/faults")).status == 404


async def test_start_skips_into_the_recording_and_loop_starts_it_over(exported: Path) -> None:
    recording = open_recording(exported)
    assert recording.steps == 360
    seeking = ReplaySource(recording, start_s=200.0)
    first = await seeking.step()
    assert (first.seq, first.time_s) == (1, 200.0)
    expected = rows(exported, "cnc_01")[199]
    slot, column = recording.catalog.locate("cnc_01")
    assert first.values[slot][0, column] == pytest.approx(expected["spindle_speed"])
    looping = ReplaySource(recording, start_s=358.0, loop=True)
    played = [await looping.step() for _ in range(4)]
    assert [frame.time_s for frame in played] == [358.0, 359.0, 360.0, 361.0]
    beginning = await ReplaySource(recording).step()
    np.testing.assert_array_equal(played[3].values[slot], beginning.values[slot])
    assert played[3].seq == 4, "served seqs go on"
    ended = ReplaySource(recording, start_s=359.0)
    await ended.step()
    await ended.step()
    with pytest.raises(SourceExhaustedError):
        await ended.step()


def test_a_path_that_is_no_recording_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match=r"no manifest\.json"):
        open_recording(tmp_path)
    with pytest.raises(ReplayError, match="outside the recording"):
        ReplaySource(open_recording_of(tmp_path), start_s=1e9)


def open_recording_of(tmp_path: Path) -> Any:
    spec = load_fleet(None)[0]
    plan = make_plan(spec, seed=1, rate_hz=1.0, duration_s=5.0)
    run_export(plan, tmp_path / "small", workers=1)
    return open_recording(tmp_path / "small")


async def test_a_users_csv_with_a_mapping_is_served_on_the_tick_clock_gaps_as_nulls(
    make_server: MakeServer, tmp_path: Path
) -> None:
    (tmp_path / "press.csv").write_text(
        "time,temp_c,vibration_level\n"
        "2026-05-01T08:00:00Z,30.5,0.5\n"
        "2026-05-01T08:00:01.400Z,31.0,\n"  # irregular: between two ticks
        "2026-05-01T08:00:02Z,31.5,0.7\n"
        "2026-05-01T08:00:09Z,40.0,0.9\n"  # after a gap of 7 s
    )
    (tmp_path / "mill.csv").write_text(
        "timestamp,spindle_speed\n1777622400,12000\n1777622405,12500\n"
    )
    (tmp_path / "plant.toml").write_text(
        "rate_hz = 1\nmax_gap_s = 2\n\n"
        '[[machines]]\nid = "press_1"\ntype = "robotic_arm"\nfile = "press.csv"\n'
        'timestamp = "time"\n[machines.sensors]\ntemperature_core = "temp_c"\n\n'
        '[[machines]]\nid = "mill_1"\ntype = "cnc_mill"\nfile = "mill.csv"\n'
    )
    server = await make_server(replay=tmp_path / "plant.toml")
    await server.clock.tick(9)  # ten ticks: 08:00:00 to 08:00:09
    listing = await (await server.client.get("/machines")).json()
    assert {entry["id"] for entry in listing} == {"press_1", "mill_1"}
    press = await (await server.client.get("/machines/press_1/history?seconds=600")).json()
    temperatures = [frame["temperature_core"] for frame in press]
    assert temperatures == [30.5, 30.5, 31.5, 31.5, 31.5, None, None, None, None, 40.0]
    vibration = [frame["vibration_level"] for frame in press]
    assert vibration[:3] == [0.5, 0.5, 0.7], "a blank cell is no reading: the older one holds"
    assert all(frame["joint_1_angle"] is None for frame in press), "a column it lacks"
    assert {(frame["state"], frame["health"], frame["rul_s"]) for frame in press} == {
        ("running", None, None)
    }, "a user's data carries no labels, and none are invented"
    mill = await (await server.client.get("/machines/mill_1/history?seconds=600")).json()
    assert [frame["spindle_speed"] for frame in mill][:8] == [
        12000,
        12000,
        12000,
        None,
        None,
        12500,
        12500,
        12500,
    ]
    response = await server.client.post("/machines/mill_1/commands", json={"command": "stop"})
    assert response.status == 409


def test_a_bad_mapping_is_refused_saying_why(tmp_path: Path) -> None:
    from server.replay_csv import CsvReplaySource

    mapping = tmp_path / "plant.toml"
    mapping.write_text('[[machines]]\nid = "m"\ntype = "lathe"\nfile = "m.csv"\n')
    with pytest.raises(ReplayError, match="lathe"):
        CsvReplaySource(mapping)
    mapping.write_text('[[machines]]\nid = "m"\ntype = "cnc_mill"\nfile = "none.csv"\n')
    with pytest.raises(ReplayError, match="cannot read"):
        CsvReplaySource(mapping)
    (tmp_path / "m.csv").write_text("when,spindle_speed\n1,2\n")
    mapping.write_text('[[machines]]\nid = "m"\ntype = "cnc_mill"\nfile = "m.csv"\n')
    with pytest.raises(ReplayError, match="no timestamp column 'timestamp'"):
        CsvReplaySource(mapping)


async def test_a_recording_replays_as_it_was_recorded(
    make_server: MakeServer, tmp_path: Path
) -> None:
    from server.keys import outlets_key
    from tests.redis_servers import eventually

    recording = tmp_path / "recording"
    live = await make_server(scenario=DEMO, speed=10.0, record_dir=recording,
                             record_rotate_s=100.0)  # fmt: skip
    (recorder,) = live.app[outlets_key]
    for chunk in range(25):  # 250 ticks, in the writer's stride
        await live.clock.tick(9 if chunk == 0 else 10)
        await eventually(lambda chunk=chunk: recorder.stats.frames == 10 * (chunk + 1))
    await recorder.stop()
    assert len(list(recording.iterdir())) == 3, "segments of 100 s"
    replay = await make_server(replay=recording, speed=10.0)
    await replay.clock.tick(249)
    for machine_id in TYPES:
        path = f"/machines/{machine_id}/history?seconds=600"
        recorded = await (await live.client.get(path)).json()
        replayed = await (await replay.client.get(path)).json()
        assert len(replayed) == len(recorded) == 250
        for old, new in zip(recorded, replayed, strict=True):
            assert new["seq"] == old["seq"]
            assert new["state"] == old["state"]
            assert [f["id"] for f in new["faults"]] == [f["id"] for f in old["faults"]]
            for name, value in old.items():
                if isinstance(value, float):
                    assert new[name] == pytest.approx(value, abs=1e-3), name


async def test_an_export_in_csv_replays_as_its_parquet_twin(exported: Path, tmp_path: Path) -> None:
    spec = load_fleet(None)[0]
    plan = make_plan(spec, seed=TEST_SEED, rate_hz=1.0, duration_s=360.0)
    catalog = Fleet(spec, seed=TEST_SEED, dt_s=1.0).catalog
    plan = dataclasses.replace(plan, scenario=load_scenario(DEMO, catalog))
    run_export(plan, tmp_path / "csv", file_format="csv", workers=1)
    from_csv = ReplaySource(open_recording(tmp_path / "csv"))
    from_parquet = ReplaySource(open_recording(exported))
    for _ in range(360):
        ours, theirs = await from_csv.step(), await from_parquet.step()
        assert ours.time_s == theirs.time_s
        for name in ("values", "state", "health", "rul_s"):
            for a, b in zip(getattr(ours, name), getattr(theirs, name), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        assert [f.records for f in ours.faults] == [f.records for f in theirs.faults]


async def test_a_loop_starts_a_new_run_that_clients_are_told_of(
    make_server: MakeServer, tmp_path: Path
) -> None:
    open_recording_of(tmp_path)  # five seconds at 1 Hz
    server = await make_server(replay=tmp_path / "small", replay_loop=True)
    ws = await server.client.ws_connect("/ws")
    await ws.send_json({"op": "subscribe", "machines": ["robot_01"], "id": 1})
    first_epoch = (await (await server.client.get("/")).json())["epoch"]
    await server.clock.tick(6)  # seq 7: the second run's second frame
    messages = []
    while not any(m.get("op") == "reset" for m in messages) or "machine_id" not in messages[-1]:
        messages.append(await ws.receive_json(timeout=5))
    notice = next(m for m in messages if m.get("op") == "reset")
    welcome = await (await server.client.get("/")).json()
    assert notice["epoch"] == welcome["epoch"] != first_epoch
    assert notice["seq"] == 6
    history = await (await server.client.get("/machines/robot_01/history?seconds=600")).json()
    assert [frame["seq"] for frame in history] == [6, 7], "the first run's frames are gone"
    await ws.close()
