"""``python -m server export``: layout, values, formats, reproducibility, errors, nulls."""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from server.export.cli import main
from server.export.runner import run_export
from simulation import STATE_NAMES, Fleet, FleetSpec, Frame
from simulation.export import (
    ExportPlanError,
    make_plan,
    parse_duration,
    synthetic_fleet,
    type_columns,
)
from simulation.fleet_spec import default_fleet
from simulation.models import MODEL_TYPES, MachineModel, RoboticArm
from simulation.models.conveyor_belt import ConveyorBelt

SEED = 20261130
TYPES = sorted(MODEL_TYPES)
Export = Callable[..., Path]


@pytest.fixture
def export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Export:
    """Run the real command line in this process; return the output directory."""
    runs = iter(range(1_000))

    def run(*args: str, out: str | None = None) -> Path:
        directory = tmp_path / (out or f"run{next(runs)}")
        code = main(
            ["export", "--seed", str(SEED), "--out", str(directory), "--workers", "1", *args]
        )
        assert code == 0, capsys.readouterr().err
        return directory

    return run


def read(directory: Path, machine_type: str) -> pa.Table:
    return pq.read_table(directory / f"{machine_type}.parquet")


def step_fleet(spec: FleetSpec | None, *, dt_s: float, steps: int, **kwargs: float) -> list[Frame]:
    """Frames from stepping the whole fleet, as the server does."""
    fleet = Fleet(spec, seed=SEED, dt_s=dt_s, **kwargs)
    return [fleet.step() for _ in range(steps)]


def slot_of(machine_type: str, spec: FleetSpec | None) -> int:
    return sorted({m.machine_type for m in (spec or default_fleet()).machines}).index(machine_type)


def expected_sensor(frames: list[Frame], slot: int, index: int, machine_type: str) -> np.ndarray:
    """The file's column for one sensor: rounded to its decimals, float32 (int64 if integer);
    NaN (a dropout) where the file has a null."""
    sensor = MODEL_TYPES[machine_type].SENSORS[index]
    flat = np.stack([frame.values[slot][index] for frame in frames]).reshape(-1)
    return np.round(flat, 0 if sensor.integer else sensor.decimals).astype(
        np.float64 if sensor.integer else np.float32
    )


def column_values(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as numpy, nulls as NaN."""
    column = table.column(name)
    if pa.types.is_integer(column.type):
        column = column.cast(pa.float64())
    return column.to_numpy()


# ------------------------------------------------------------------------------- layout
def test_small_export_has_one_file_per_type_with_the_right_rows_and_columns(
    export: Export,
) -> None:
    directory = export("--duration", "60", "--rate", "10")
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [f"{t}.parquet" for t in TYPES] + ["manifest.json"]
    )
    ids = {m.machine_type: m.machine_id for m in default_fleet().machines}
    for machine_type in TYPES:
        table = read(directory, machine_type)
        assert table.num_rows == 600
        assert table.column_names == [c.name for c in type_columns(machine_type)]
        assert table.column("machine_id").to_pylist() == [ids[machine_type]] * 600
        assert pa.types.is_dictionary(table.schema.field("machine_id").type)
        assert table.column("seq").to_pylist() == list(range(1, 601))
        np.testing.assert_array_equal(table.column("time_s").to_numpy(), np.arange(1, 601) * 0.1)
        timestamps = table.column("timestamp").cast(pa.int64()).to_numpy()
        np.testing.assert_array_equal(np.diff(timestamps), 100)
        assert str(table.column("timestamp")[0]) == "2026-01-01 00:00:00.100000+00:00"


def test_sensor_columns_carry_their_unit_and_role_in_the_field_metadata(export: Export) -> None:
    directory = export("--duration", "1")
    for machine_type in TYPES:
        schema = pq.read_schema(directory / f"{machine_type}.parquet")
        for sensor in MODEL_TYPES[machine_type].SENSORS:
            field = schema.field(sensor.name)
            assert field.metadata[b"unit"].decode() == sensor.unit
            assert field.metadata[b"role"] == b"sensor"
            assert field.type == (pa.int64() if sensor.integer else pa.float32())
        assert schema.field("time_s").metadata[b"unit"] == b"s"


def test_rows_run_by_seq_then_machine_in_fleet_order(export: Export) -> None:
    directory = export("--machines", "7", "--duration", "3", "--rate", "2")
    for machine_type in TYPES:
        table = read(directory, machine_type)
        ids = [m.machine_id for m in synthetic_fleet(7).machines if m.machine_type == machine_type]
        count = len(ids)
        assert table.num_rows == 6 * count
        seq = table.column("seq").to_numpy()
        assert np.all(np.diff(seq) >= 0)
        np.testing.assert_array_equal(seq, np.repeat(np.arange(1, 7), count))
        assert table.column("machine_id").to_pylist() == ids * 6


# ------------------------------------------------------------------------------- values
@pytest.mark.parametrize(
    ("fleet_args", "spec"),
    [((), None), (("--machines", "8", "--fault-rate", "40"), synthetic_fleet(8))],
    ids=["default", "8-machines-with-faults"],
)
def test_values_and_labels_equal_stepping_the_whole_fleet_with_the_same_seed(
    export: Export, fleet_args: tuple[str, ...], spec: FleetSpec | None
) -> None:
    directory = export(*fleet_args, "--duration", "60", "--rate", "10")
    rate = 40.0 if spec else 0.0
    frames = step_fleet(spec, dt_s=0.1, steps=600, fault_rate_per_h=rate)
    fault_rows = 0
    for machine_type in TYPES:
        table, slot = read(directory, machine_type), slot_of(machine_type, spec)
        for index, sensor in enumerate(MODEL_TYPES[machine_type].SENSORS):
            np.testing.assert_array_equal(
                column_values(table, sensor.name),
                expected_sensor(frames, slot, index, machine_type),
                err_msg=f"{machine_type}.{sensor.name}",
            )
        states = np.concatenate([frame.state[slot] for frame in frames])
        assert table.column("state").to_pylist() == [STATE_NAMES[code] for code in states]
        for name in ("health", "rul_s"):
            expected = np.concatenate([getattr(frame, name)[slot] for frame in frames])
            np.testing.assert_array_equal(
                column_values(table, name), expected.astype(np.float32), err_msg=name
            )
        expected_faults = [
            [record.fault_id for record in frame.faults[slot].of(row)]
            for frame in frames
            for row in range(len(frame.values[slot][0]))
        ]
        faults = table.column("faults").to_pylist()
        assert [[entry["fault_id"] for entry in row] for row in faults] == expected_faults
        fault_rows += sum(map(bool, faults))
    assert (fault_rows > 0) == bool(spec), "the fault-rate run should have some faults"


def test_rate_sets_the_simulation_step(export: Export) -> None:
    directory = export("--duration", "20", "--rate", "1")
    frames = step_fleet(None, dt_s=1.0, steps=20)
    table = read(directory, "robotic_arm")
    assert table.column("time_s").to_pylist() == [float(s) for s in range(1, 21)]
    np.testing.assert_array_equal(
        column_values(table, "power_consumption"),
        expected_sensor(frames, slot_of("robotic_arm", None), 3, "robotic_arm"),
    )


def test_parquet_and_csv_hold_the_same_values(export: Export) -> None:
    args = ("--machines", "6", "--duration", "60", "--fault-rate", "60")
    parquet_dir, csv_dir = export(*args), export(*args, "--format", "csv")
    for machine_type in TYPES:
        expected = read(parquet_dir, machine_type)
        types = {f.name: f.type for f in expected.schema}
        types |= {"machine_id": pa.string(), "state": pa.string(), "faults": pa.string()}
        actual = pa_csv.read_csv(
            csv_dir / f"{machine_type}.csv",
            convert_options=pa_csv.ConvertOptions(column_types=types),
        )
        assert actual.column_names == expected.column_names
        for name in expected.column_names:
            column = expected.column(name)
            if name == "faults":
                parsed = [json.loads(text) for text in actual.column(name).to_pylist()]
                assert parsed == column.to_pylist(), machine_type
            else:
                if pa.types.is_dictionary(column.type):
                    column = column.cast(pa.string())
                assert actual.column(name).equals(column), f"{machine_type}.{name}"


# ------------------------------------------------------------------------ reproducibility
def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_same_seed_gives_byte_identical_files(export: Export, file_format: str) -> None:
    args = ("--machines", "6", "--duration", "90s", "--format", file_format)
    first, second = files_of(export(*args)), files_of(export(*args))
    assert first == second
    other = files_of(export(*args[:-2], "--format", file_format, "--seed", str(SEED + 1)))
    assert other[f"robotic_arm.{file_format}"] != first[f"robotic_arm.{file_format}"]


def test_worker_processes_write_the_same_bytes_as_one_process(tmp_path: Path) -> None:
    plan = make_plan(synthetic_fleet(6), seed=SEED, rate_hz=10.0, duration_s=30.0)
    reported: list[int] = []
    together = run_export(plan, tmp_path / "processes", workers=3, report=reported.append)
    alone = run_export(plan, tmp_path / "here", workers=1)
    assert sum(reported) == plan.samples == together.samples
    assert files_of(tmp_path / "processes") == files_of(tmp_path / "here")
    assert together.files == alone.files


# ---------------------------------------------------------------------------- manifest
def test_manifest_says_how_the_data_set_was_made(export: Export, tmp_path: Path) -> None:
    fleet_file = tmp_path / "plant.toml"
    fleet_file.write_text('[[machines]]\ntype = "cnc_mill"\ncount = 3\n')
    directory = export("--fleet", str(fleet_file), "--duration", "2m", "--rate", "5")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["seed"] == SEED
    assert manifest["rate_hz"] == 5.0
    assert manifest["dt_s"] == 0.2
    assert manifest["duration_s"] == 120.0
    assert manifest["steps"] == 600
    assert manifest["samples"] == 1800
    assert manifest["fleet"]["source"] == "file"
    assert manifest["fleet"]["name"] == "plant.toml"
    assert manifest["fleet"]["types"] == {"cnc_mill": 3}
    assert "count = 3" in manifest["fleet"]["toml"]
    assert set(manifest["versions"]) >= {"python", "numpy", "pyarrow", "demo-machine-server"}
    (entry,) = manifest["files"]
    assert entry["path"] == "cnc_mill.parquet"
    assert entry["rows"] == 1800
    assert entry["bytes"] == (directory / "cnc_mill.parquet").stat().st_size
    columns = {column["name"]: column for column in entry["columns"]}
    assert columns["tool_temperature"]["unit"] == "°C"
    assert columns["tool_temperature"]["role"] == "sensor"
    assert entry["labels"] == ["state", "health", "rul_s", "faults"]
    assert columns["state"]["categories"] == list(STATE_NAMES)
    assert columns["rul_s"]["unit"] == "s"


def test_summary_line_and_quiet(export: Export, capsys: pytest.CaptureFixture[str]) -> None:
    export("--duration", "10")
    out, err = capsys.readouterr()
    assert out.startswith("exported 300 samples (3 machines x 100 steps at 10 Hz, seed")
    assert "samples/s" in out
    assert "real time" in out
    assert err == ""  # no progress bar when stderr is not a terminal
    export("--duration", "10", "--quiet")
    assert capsys.readouterr() == ("", "")


# ------------------------------------------------------------------------------- nulls
def test_nan_readings_become_nulls(export: Export, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dropout (NaN) is a null in Parquet and an empty field in CSV, for floats and counters."""
    dropping = {"robotic_arm": ("joint_1_angle", "power_consumption")}
    dropping["conveyor_belt"] = ("belt_speed", "items_processed")  # an integer counter

    def with_dropouts(model: type[MachineModel]) -> Callable[..., np.ndarray]:
        step = model.step
        rows = [model.sensor_names().index(name) for name in dropping[model.TYPE_NAME]]
        calls: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()

        def wrapped(self: object, dt_s: float) -> np.ndarray:
            readings = step(self, dt_s)
            calls[self] = calls.get(self, -1) + 1  # counted per model instance
            if calls[self] % 4 == 0:
                readings[rows] = np.nan  # these sensors drop out every 4th step
            return readings

        return wrapped

    monkeypatch.setattr(RoboticArm, "step", with_dropouts(RoboticArm))
    monkeypatch.setattr(ConveyorBelt, "step", with_dropouts(ConveyorBelt))
    parquet_dir = export("--duration", "2")
    csv_dir = export("--duration", "2", "--format", "csv")
    for machine_type, names in dropping.items():
        table = read(parquet_dir, machine_type)
        csv_table = pa_csv.read_csv(csv_dir / f"{machine_type}.csv")
        for name in names:
            nulls = table.column(name).is_null().to_pylist()
            assert nulls == [seq % 4 == 1 for seq in range(1, 21)], name
            assert csv_table.column(name).is_null().to_pylist() == nulls, name
    assert read(parquet_dir, "cnc_mill").column("vibration_spindle").null_count == 0


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "soon"], "invalid duration"),
        (["--duration", "0"], "duration must be positive"),
        (["--duration=-5m"], "invalid duration"),
        (["--rate", "0"], "rate must be in"),
        (["--rate", "5000"], "rate must be in"),
        (["--rate", "nan"], "rate must be in"),
        (["--duration", "1", "--rate", "0.3"], "whole number of steps"),
        (["--machines", "0"], "machine count must be from 1"),
        (["--seed", "-1"], "seed must be a non-negative integer"),
        (["--format", "xml"], "invalid choice"),
        (["--fleet", "missing.toml"], "missing.toml"),
        (["--fleet", "x.toml", "--machines", "3"], "not allowed with argument"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--start", "yesterday"], "invalid --start"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--out", str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "usage: python -m server export" in err
    assert not (tmp_path / "out").exists()


def test_a_bad_fleet_file_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet_file = tmp_path / "bad.toml"
    fleet_file.write_text(
        '[[machines]]\nid = "a"\ntype = "robotic_arm"\n\n[[machines]]\ntype = "x"\n'
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--out", str(tmp_path / "out"), "--fleet", str(fleet_file)])
    assert exit_info.value.code == 2
    assert "bad.toml:5: machines entry 2: unknown or missing type 'x'" in capsys.readouterr().err


def test_a_non_empty_output_directory_needs_overwrite(
    export: Export, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = export("--duration", "1", out="data")
    with pytest.raises(SystemExit) as exit_info:
        export("--duration", "1", out="data")
    assert exit_info.value.code == 2
    assert "is not empty" in capsys.readouterr().err
    export("--duration", "2", "--overwrite", out="data")
    assert read(directory, "cnc_mill").num_rows == 20


def test_missing_command_and_out_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["export"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err


# ------------------------------------------------------------------------ pure helpers
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600.0),
        ("90s", 90.0),
        ("90m", 5400.0),
        ("24h", 86400.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        (" 2 m ", 120.0),
        (".5s", 0.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_synthetic_fleet_has_equal_shares_and_unique_ids() -> None:
    fleet = synthetic_fleet(1000)
    counts = {t: sum(m.machine_type == t for m in fleet.machines) for t in TYPES}
    assert counts == {"cnc_mill": 334, "conveyor_belt": 333, "robotic_arm": 333}
    assert len({m.machine_id for m in fleet.machines}) == 1000
    assert fleet.machines[0].machine_id == "cnc_mill_001"


def test_plan_rejects_a_duration_that_is_not_whole_steps() -> None:
    with pytest.raises(ExportPlanError, match="whole number of steps"):
        make_plan(default_fleet(), seed=1, rate_hz=3.0, duration_s=0.5)
    plan = make_plan(default_fleet(), seed=1, rate_hz=3.0, duration_s=1.0)
    assert (plan.steps, plan.samples) == (3, 9)
