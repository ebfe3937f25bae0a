"""Scenario files: parsed with line-numbered errors, carried out at tick boundaries through the
plant-control service, the same frames run after run."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from server.fleetfile import load_fleet
from simulation import Fleet
from simulation.scenario import ScenarioError, Timeline, parse_scenario
from tests.conftest import TEST_SEED, Harness, MakeServer
from tests.redis_servers import eventually

MACHINES = ("robot_01", "cnc_01", "conveyor_01")

DEMO = """
[[actions]]
at = "0.5s"
marker = "shift start"

[[actions]]
at = 1
machine = "cnc_01"
inject = {type = "tool_breakage", severity = 0.7}

[[actions]]
tick = 15
type = "conveyor_belt"
command = "stop"

[[actions]]
at = "2s"
every = "1s"
count = 3
machines = "robot_*"
inject = {type = "overheating", severity = 0.3, duration_s = "0.5s"}

[[actions]]
at = "2.5s"
machine = "cnc_01"
clear = "all"

[[actions]]
tick = 12
machine = "robot_01"
inject = {type = "dropout", severity = 1.0}
"""


def catalog(dt_s: float = 0.1) -> Any:
    return Fleet(load_fleet(None)[0], seed=1, dt_s=dt_s).catalog


async def scripted_server(make_server: MakeServer, tmp_path: Path, text: str) -> Harness:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return await make_server(scenario=path)


async def history(server: Harness, machine_id: str) -> list[dict[str, Any]]:
    response = await server.client.get(f"/machines/{machine_id}/history?seconds=600")
    return list(await response.json())


async def test_each_action_shows_from_the_frame_it_is_due_at(
    make_server: MakeServer, tmp_path: Path
) -> None:
    server = await scripted_server(make_server, tmp_path, DEMO)
    await server.clock.tick(38)  # seq 39 (the first frame is made at start-up)
    cnc = {frame["seq"]: frame for frame in await history(server, "cnc_01")}
    assert cnc[9]["faults"] == []
    assert [fault["type"] for fault in cnc[10]["faults"]] == ["tool_breakage"]
    assert cnc[24]["faults"] != []
    assert cnc[25]["faults"] == [], "cleared from seq 25 (2.5 s)"
    belt = {frame["seq"]: frame for frame in await history(server, "conveyor_01")}
    assert belt[14]["state"] == "running"
    assert belt[15]["state"] == "idle"
    robot = {frame["seq"]: frame for frame in await history(server, "robot_01")}
    overheated = [seq for seq, frame in robot.items() if any(
        fault["type"] == "overheating" for fault in frame["faults"])]  # fmt: skip
    assert overheated[0] == 20
    assert {20, 30} <= set(overheated)
    assert not any(f["type"] == "overheating" for f in robot[27]["faults"]), "0.5 s each"
    timeline = await (await server.client.get("/scenario")).json()
    fired = [(entry["seq"], entry["entry"], entry["what"]) for entry in timeline["fired"]]
    assert fired == [
        (5, 1, "marker"),
        (10, 2, "inject"),
        (12, 6, "inject"),
        (15, 3, "command"),
        (20, 4, "inject"),
        (25, 5, "clear"),
        (30, 4, "inject"),
    ]
    refused = [entry for entry in timeline["fired"] if "refused" in entry]
    assert [entry["entry"] for entry in refused] == [6]
    assert "sensor" in refused[0]["refused"], "a sensor fault without a sensor, refused"
    assert timeline["refused_count"] == 1
    assert [(entry["seq"], entry["entry"]) for entry in timeline["next"]] == [(40, 4)]
    assert timeline["actions"][3]["every_s"] == pytest.approx(1.0)


async def test_a_seeded_scenario_gives_the_same_frames_every_run(
    make_server: MakeServer, tmp_path: Path
) -> None:
    runs = []
    for _ in range(2):
        server = await scripted_server(make_server, tmp_path, DEMO)
        await server.clock.tick(45)
        runs.append([await history(server, machine) for machine in MACHINES])
    assert runs[0] == runs[1]
    plain = await make_server()
    await plain.clock.tick(45)
    assert [await history(plain, machine) for machine in MACHINES] != runs[0]


async def test_without_a_scenario_get_scenario_is_a_json_404(make_server: MakeServer) -> None:
    server = await make_server()
    response = await server.client.get("/scenario")
    assert response.status == 404
    assert (await response.json())["error"] == "no_scenario"


def test_repeats_without_a_count_go_on_and_the_timeline_never_expands_them_all() -> None:
    actions = parse_scenario(
        '[[actions]]\nat = 0\nevery = "0.1s"\nmarker = "tick"\n', "s.toml", catalog()
    )
    timeline = Timeline(actions)
    assert [o.seq for o in timeline.due(5)] == [1, 2, 3, 4, 5]
    assert [o.seq for o in timeline.upcoming(3)] == [6]
    assert [o.repetition for o in timeline.due(1_000_000)][-1] == 999_999


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[actions]]\nat = 1\n", ":1: actions entry 1: give exactly one of"),
        ('[[actions]]\nmarker = "m"\n', "give when, as at"),
        ('[[actions]]\nat = 1\ntick = 3\nmarker = "m"\n', "give when, as at"),
        ('[[actions]]\nat = "soon"\nmarker = "m"\n', "at is seconds or a duration"),
        ('[[actions]]\nat = -1\nmarker = "m"\n', "must be zero or more"),
        ('[[actions]]\ntick = 0\nmarker = "m"\n', "tick is a seq"),
        ('\n\n[[actions]]\nat = 1\nmachine = "lathe_9"\ncommand = "stop"\n',
         ":3: actions entry 1: unknown machine 'lathe_9'"),
        ('[[actions]]\nat = 1\nmachine = "cnc_01"\ncommand = "fly"\n', "unknown command 'fly'"),
        ('[[actions]]\nat = 1\nmachines = "press_*"\ncommand = "stop"\n', "match no machine"),
        ('[[actions]]\nat = 1\ntype = "lathe"\ncommand = "stop"\n', "no machine of type"),
        ('[[actions]]\nat = 1\ntype = "cnc_mill"\ninject = {type = "belt_slip", severity = 1}\n',
         "cnc_mill has no fault 'belt_slip'"),
        ('[[actions]]\nat = 1\nmachine = "cnc_01"\ninject = {type = "tool_breakage", '
         "severity = 2}\n", "severity must be a number in [0, 1]"),
        ('[[actions]]\nat = 1\nmachine = "cnc_01"\nclear = "meteor"\n', "clear names a fault"),
        ('[[actions]]\nat = 1\ncount = 2\nmarker = "m"\n', "give every"),
        ('[[actions]]\nat = 1\nmarker = "m"\nmachine = "cnc_01"\n', "a marker applies to no"),
        ('[[actions]]\nat = 1\nmarker = "m"\nwhen = 3\n', "unknown key(s) ['when']"),
        ("[[actions]]\nat = 1\nmarker = \n", "not valid TOML"),
        ("[settings]\n", "unknown top-level key(s) ['settings']"),
        ("", "no [[actions]] entries"),
    ],
)  # fmt: skip
def test_a_bad_scenario_names_the_file_the_line_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=None) as raised:
        parse_scenario(text, "plant.toml", catalog())
    assert str(raised.value).startswith("plant.toml")
    assert message in str(raised.value)


@pytest.mark.parametrize("name", ["plant-demo.toml", "test-fixture.toml"])
def test_the_shipped_examples_parse_for_the_default_fleet(name: str) -> None:
    from server.scenario import load_scenario

    path = Path(__file__).parent.parent / "examples" / name
    assert load_scenario(path, catalog())


async def test_the_ten_minute_demo_runs_through_without_a_refusal(
    make_server: MakeServer,
) -> None:
    demo = Path(__file__).parent.parent / "examples" / "plant-demo.toml"
    server = await make_server(scenario=demo, speed=10.0)  # a simulated second per tick
    await server.clock.tick(601)
    timeline = await (await server.client.get("/scenario")).json()
    assert timeline["refused_count"] == 0, [f for f in timeline["fired"] if "refused" in f]
    assert timeline["fired_count"] == 10
    assert timeline["next"] == []
    failures = {
        machine: {f["type"] for frame in await history(server, machine) for f in frame["faults"]}
        for machine in MACHINES
    }
    assert failures == {
        "robot_01": {"overheating"},
        "cnc_01": {"tool_breakage"},
        "conveyor_01": {"bearing_defect", "dropout"},
    }


async def test_the_export_of_a_scenario_is_what_the_server_streamed(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """One scenario and seed: the server at a simulated second per tick, and the export at
    1 Hz, give the same states, faults and readings at every seq, and the events table."""
    import dataclasses
    import json as jsonlib

    import pyarrow.parquet as pq

    from server.export.runner import run_export
    from simulation.export.dataset import make_plan

    demo = Path(__file__).parent.parent / "examples" / "plant-demo.toml"
    server = await make_server(scenario=demo, speed=10.0)
    await server.clock.tick(599)  # seq 600: the whole demo
    plan = make_plan(load_fleet(None)[0], seed=TEST_SEED, rate_hz=1.0,
                     duration_s=600.0)  # fmt: skip
    from server.scenario import load_scenario

    plan = dataclasses.replace(plan, scenario=load_scenario(demo, catalog(dt_s=1.0)))
    run_export(plan, tmp_path / "export", workers=1)
    for machine_id, machine_type in zip(MACHINES, ("robotic_arm", "cnc_mill", "conveyor_belt"),
                                        strict=True):  # fmt: skip
        rows = [
            row
            for row in pq.read_table(tmp_path / "export" / f"{machine_type}.parquet").to_pylist()
            if row["machine_id"] == machine_id
        ]
        streamed = await history(server, machine_id)
        assert [row["seq"] for row in rows] == [frame["seq"] for frame in streamed]
        for row, frame in zip(rows, streamed, strict=True):
            assert row["state"] == frame["state"], (machine_id, frame["seq"])
            assert [f["fault_id"] for f in row["faults"]] == [f["id"] for f in frame["faults"]], (
                machine_id,
                frame["seq"],
            )
            assert row["health"] == pytest.approx(frame["health"], abs=1e-4)
    events = pq.read_table(tmp_path / "export" / "events.parquet").to_pylist()
    timeline = await (await server.client.get("/scenario")).json()
    assert [(e["seq"], e["entry"], e["machine_id"]) for e in events] == [
        (f["seq"], f["entry"], f["machine_id"]) for f in timeline["fired"]
    ]
    assert all("refused" not in jsonlib.loads(e["detail"]) for e in events)
    manifest = jsonlib.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["events"]["rows"] == len(events) == 10


def test_the_export_refuses_a_bad_scenario_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.export.cli import main as export

    bad = tmp_path / "bad.toml"
    bad.write_text('[[actions]]\nat = "1m"\nmachine = "cnc_01"\ncommand = "fly"\n')
    with pytest.raises(SystemExit) as exited:
        export(["export", "--scenario", str(bad), "--out", str(tmp_path / "out"), "--quiet"])
    assert exited.value.code == 2
    assert "bad.toml:1: actions entry 1: unknown command 'fly'" in capsys.readouterr().err


async def test_a_recording_of_a_scenario_run_holds_the_rows_of_its_export(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """--record writes the live stream in the export's format, rotated into segments with a
    manifest each; together they hold exactly the export's rows for the same scenario."""
    import dataclasses
    import json as jsonlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from server.export.runner import run_export
    from server.keys import outlets_key
    from server.scenario import load_scenario
    from simulation.export.dataset import make_plan

    demo = Path(__file__).parent.parent / "examples" / "plant-demo.toml"
    record = tmp_path / "recording"
    server = await make_server(scenario=demo, speed=10.0, record_dir=record, record_rotate_s=250.0)
    (recorder,) = server.app[outlets_key]
    for chunk in range(60):  # to seq 600, at the pace the writer takes (a burst drops, counted)
        await server.clock.tick(9 if chunk == 0 else 10)
        await eventually(lambda chunk=chunk: recorder.stats.frames == 10 * (chunk + 1))
    await recorder.stop()  # as at shutdown: the last segment is closed
    segments = sorted(record.iterdir())
    assert [path.name for path in segments] == [
        "seq-000000000001",
        "seq-000000000251",
        "seq-000000000501",
    ]
    manifests = [jsonlib.loads((path / "manifest.json").read_text()) for path in segments]
    assert [m["steps"] for m in manifests] == [250, 250, 100]
    assert len({m["start"] for m in manifests}) == 1
    start_ms = round(datetime.fromisoformat(manifests[0]["start"].replace("Z", "+00:00"))
                     .timestamp() * 1000)  # fmt: skip
    plan = make_plan(load_fleet(None)[0], seed=TEST_SEED, rate_hz=1.0, duration_s=600.0,
                     start_ms=start_ms)  # fmt: skip
    plan = dataclasses.replace(plan, scenario=load_scenario(demo, catalog(dt_s=1.0)))
    run_export(plan, tmp_path / "export", workers=1)
    for machine_type in ("robotic_arm", "cnc_mill", "conveyor_belt"):
        recorded = pa.concat_tables(
            [pq.read_table(path / f"{machine_type}.parquet") for path in segments]
        )
        exported = pq.read_table(tmp_path / "export" / f"{machine_type}.parquet")
        assert recorded.num_rows == exported.num_rows == 600
        assert recorded.to_pylist() == exported.to_pylist(), machine_type
    metrics = await (await server.client.get("/metrics")).text()
    assert "dms_record_frames_total 600.0" in metrics
    assert "dms_record_dropped_total 0.0" in metrics
