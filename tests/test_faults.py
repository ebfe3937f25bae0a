"""Faults: sensor faults on the readings, physical faults through the physics, labels, errors."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import ControlError, Fleet, FleetSpec, MachineSpec
from simulation.faults import BIAS_SPAN, DRIFT_SPAN_PER_H, NOISE_SPAN, RAMP_S
from simulation.models import MODEL_TYPES, MachineModel
from simulation.models.cnc_mill import IMBALANCE_VIBRATION_MM_S, CncMill
from simulation.models.conveyor_belt import DEFECT_VIBRATION_MM_S, ConveyorBelt
from simulation.models.robotic_arm import RoboticArm
from simulation.spec import SENSOR_FAULTS, FaultRequest

SEED = 20261130


def twins(model_type: type[MachineModel], count: int = 20) -> tuple[MachineModel, MachineModel]:
    """Two identical steady models: one to fault, one to compare with."""
    return tuple(  # type: ignore[return-value]
        model_type(count, np.random.default_rng(SEED), steady=True) for _ in range(2)
    )


def run(model: MachineModel, dt_s: float, steps: int) -> np.ndarray:
    return np.stack([model.step(dt_s) for _ in range(steps)])


def span(model: MachineModel, name: str) -> float:
    sensor = model.SENSORS[model.ROW[name]]
    return sensor.typical_max - sensor.typical_min


# -- sensor faults ----------------------------------------------------------------------------


def test_a_stuck_sensor_repeats_its_last_value_until_cleared() -> None:
    arm = RoboticArm(10, np.random.default_rng(SEED), steady=True)
    before = run(arm, 0.1, 50)[-1]
    record = arm.inject_fault(3, FaultRequest(kind="stuck", severity=0.5, sensor="joint_1_angle"))
    stuck = run(arm, 0.1, 100)
    angle, temperature = arm.ROW["joint_1_angle"], arm.ROW["temperature_core"]
    assert np.all(stuck[:, angle, 3] == before[angle, 3])
    assert np.unique(stuck[:, angle, 4]).size > 50  # the others still move
    assert np.unique(stuck[:, temperature, 3]).size > 50  # and so do its other sensors
    arm.clear_fault(3, record.fault_id)
    assert np.unique(run(arm, 0.1, 50)[:, angle, 3]).size > 25


def test_a_dropout_gives_nan_and_only_there() -> None:
    belt = ConveyorBelt(10, np.random.default_rng(SEED), steady=True)
    belt.step(0.1)
    belt.inject_fault(2, FaultRequest(kind="dropout", severity=1.0, sensor="bearing_temperature"))
    belt.inject_fault(5, FaultRequest(kind="dropout", severity=0.5, sensor="motor_load"))
    readings = run(belt, 0.1, 2000)
    bearing, load = belt.ROW["bearing_temperature"], belt.ROW["motor_load"]
    assert np.isnan(readings[:, bearing, 2]).all()
    share = np.isnan(readings[:, load, 5]).mean()
    assert 0.45 < share < 0.55  # severity = probability of a missing sample
    readings[:, bearing, 2] = 0.0
    readings[:, load, 5] = 0.0
    assert np.isfinite(readings).all()


@pytest.mark.parametrize("onset", ["step", "ramp"])
def test_a_bias_adds_a_constant_share_of_the_span(onset: str) -> None:
    faulty, clean = twins(CncMill)
    faulty.inject_fault(
        7, FaultRequest(kind="bias", severity=0.4, onset=onset, sensor="tool_temperature")
    )
    dt_s = 1.0
    tool = faulty.ROW["tool_temperature"]
    offset = run(faulty, dt_s, 900)[:, tool, 7] - run(clean, dt_s, 900)[:, tool, 7]
    full = BIAS_SPAN * span(faulty, "tool_temperature") * 0.4
    elapsed = dt_s * np.arange(1, 901)
    expected = full * (np.minimum(elapsed / RAMP_S, 1.0) if onset == "ramp" else 1.0)
    np.testing.assert_allclose(offset, expected, atol=1e-9)


def test_a_drift_grows_linearly_and_a_duration_ends_it() -> None:
    faulty, clean = twins(ConveyorBelt)
    faulty.inject_fault(
        4, FaultRequest(kind="drift", severity=1.0, duration_s=1800.0, sensor="bearing_temperature")
    )
    dt_s = 10.0
    bearing = faulty.ROW["bearing_temperature"]
    offset = run(faulty, dt_s, 360)[:, bearing, 4] - run(clean, dt_s, 360)[:, bearing, 4]
    elapsed_h = dt_s * np.arange(1, 361) / 3600.0
    drift_per_h = DRIFT_SPAN_PER_H * span(faulty, "bearing_temperature")
    expected = np.where(elapsed_h < 0.5, drift_per_h * elapsed_h, 0.0)
    np.testing.assert_allclose(offset, expected, atol=1e-9)
    assert len(faulty.faults) == 0


def test_a_noise_burst_adds_noise_of_the_stated_size() -> None:
    faulty, clean = twins(RoboticArm)
    faulty.inject_fault(1, FaultRequest(kind="noise", severity=0.5, sensor="power_consumption"))
    power = faulty.ROW["power_consumption"]
    difference = run(faulty, 0.1, 4000)[:, power] - run(clean, 0.1, 4000)[:, power]
    expected_std = NOISE_SPAN * span(faulty, "power_consumption") * 0.5
    assert np.std(difference[:, 1]) == pytest.approx(expected_std, rel=0.05)
    assert abs(np.mean(difference[:, 1])) < 0.1 * expected_std
    assert np.all(difference[:, [0, 2, 3]] == 0.0)  # the other machines are untouched


def test_an_intermittent_fault_comes_and_goes() -> None:
    faulty, clean = twins(RoboticArm)
    faulty.inject_fault(
        0, FaultRequest(kind="bias", severity=1.0, onset="intermittent", sensor="vibration_level")
    )
    vibration = faulty.ROW["vibration_level"]
    offset = run(faulty, 1.0, 3600)[:, vibration, 0] - run(clean, 1.0, 3600)[:, vibration, 0]
    on = offset > 0.0
    np.testing.assert_allclose(offset[on], BIAS_SPAN * span(faulty, "vibration_level"))
    assert 0.15 < on.mean() < 0.55  # its duty cycle is 0.2 to 0.5
    assert np.count_nonzero(np.diff(on.astype(int)) == 1) >= 25  # period 20-120 s


def test_an_integer_sensor_stays_integer_under_bias() -> None:
    belt = ConveyorBelt(5, np.random.default_rng(SEED), steady=True)
    belt.inject_fault(0, FaultRequest(kind="bias", severity=0.3, sensor="items_processed"))
    readings = run(belt, 1.0, 100)[:, belt.ROW["items_processed"]]
    assert np.array_equal(readings, np.round(readings))


# -- physical faults --------------------------------------------------------------------------


def test_a_bearing_defect_drives_bearing_temperature_past_its_alarm_within_25_minutes() -> None:
    """docs/models/conveyor_belt.md: severity 1 passes the 75 °C alarm within 25 min of running."""
    belt = ConveyorBelt(200, np.random.default_rng(SEED), steady=True)
    bearing = belt.ROW["bearing_temperature"]
    alarm = belt.SENSORS[bearing].alarm
    assert alarm is not None
    healthy = run(belt, 10.0, 360)[:, bearing]  # an hour from cold: a healthy bearing stays cool
    assert healthy.max() < belt.SENSORS[bearing].warning
    for instance in range(belt.count):
        belt.inject_fault(instance, FaultRequest(kind="bearing_defect", severity=1.0))
    hot = run(belt, 10.0, 150)[:, bearing]
    assert np.all(hot.max(axis=0) >= alarm)
    first = np.argmax(hot >= alarm, axis=0)
    assert np.all((first + 1) * 10.0 <= 25 * 60)
    assert np.all(belt.state == 2)  # alarm-level readings: warning


def test_a_bearing_defect_raises_the_bearing_vibration_at_once() -> None:
    """Vibration is the early sign: +6 mm/s x severity at full speed, from the next step."""
    faulty, clean = twins(ConveyorBelt, 40)
    run(faulty, 1.0, 60)
    run(clean, 1.0, 60)
    severity = np.linspace(0.1, 1.0, faulty.count)
    for instance in range(faulty.count):
        faulty.inject_fault(
            instance, FaultRequest(kind="bearing_defect", severity=float(severity[instance]))
        )
    vibration = faulty.ROW["vibration_bearing"]
    alarm = faulty.SENSORS[vibration].alarm
    assert alarm is not None
    first = faulty.step(1.0)
    clean.step(1.0)
    assert np.all(first[vibration, -4:] >= alarm)  # severity 0.9 and up: zone D at once
    assert np.all(faulty.state[-4:] == 2)  # an alarm-level reading: warning
    added = run(faulty, 1.0, 600)[:, vibration] - run(clean, 1.0, 600)[:, vibration]
    # The reading's scatter (+-15 %, mean 1) multiplies the whole level.
    np.testing.assert_allclose(added.mean(axis=0), DEFECT_VIBRATION_MM_S * severity, rtol=0.03)
    # Cleared, the bearing of a steady belt (no wear) shakes as before.
    for instance in range(faulty.count):
        (record,) = faulty.faults.of(instance)
        faulty.clear_fault(instance, record.fault_id)
    after = run(faulty, 1.0, 600)[:, vibration] - run(clean, 1.0, 600)[:, vibration]
    assert np.abs(after.mean(axis=0)).max() < 0.05


def test_a_bearing_defect_shortens_the_remaining_life() -> None:
    belt = ConveyorBelt(50, np.random.default_rng(SEED))
    belt.step(1.0)
    before = belt.rul_s.copy()
    belt.inject_fault(3, FaultRequest(kind="bearing_defect", severity=0.5))
    assert belt.rul_s[3] == pytest.approx(before[3] / 3.0, rel=1e-3)  # wears 1 + 4 * 0.5 times
    assert np.array_equal(np.delete(belt.rul_s, 3), np.delete(before, 3))


def test_spindle_imbalance_adds_vibration_growing_with_speed_squared() -> None:
    faulty, clean = twins(CncMill)
    faulty.inject_fault(2, FaultRequest(kind="spindle_imbalance", severity=0.5))
    vibration = faulty.ROW["vibration_spindle"]
    added = (
        run(faulty, 0.1, 3000)[:, vibration, 2] - run(clean, 0.1, 3000)[:, vibration, 2]
    ).mean()
    # The reading's lognormal scatter (mean exp(0.15^2 / 2)) multiplies the whole level.
    scatter_mean = np.exp(0.15**2 / 2)
    speed_ratio = faulty._spindle_rpm[2] / faulty.spindle_setpoint_rpm[2]
    expected = IMBALANCE_VIBRATION_MM_S * 0.5 * scatter_mean * speed_ratio**2
    assert added == pytest.approx(expected, rel=0.05)
    faulty.command(2, "stop")
    run(faulty, 0.1, 50)
    assert faulty.step(0.1)[vibration, 2] < 0.05  # a stopped spindle does not shake


def test_overheating_raises_the_core_temperature_through_the_thermal_lag() -> None:
    faulty, clean = twins(RoboticArm, 50)
    for instance in range(faulty.count):
        faulty.inject_fault(instance, FaultRequest(kind="overheating", severity=1.0))
    core = faulty.ROW["temperature_core"]
    hot = run(faulty, 10.0, 6 * 360)[-60:, core].mean(axis=0)  # after 6 h, > 9 time constants
    cool = run(clean, 10.0, 6 * 360)[-60:, core].mean(axis=0)
    np.testing.assert_allclose(hot - faulty.ambient_c, 2.5 * (cool - clean.ambient_c), rtol=0.03)


def test_belt_slip_slows_the_belt_even_when_empty() -> None:
    faulty, clean = twins(ConveyorBelt)
    for belt in (faulty, clean):
        belt.mean_arrival_rate_per_s[:] = 0.0
        belt.arrival_rate_per_s[:] = 0.0
    faulty.inject_fault(6, FaultRequest(kind="belt_slip", severity=1.0))
    speed = faulty.ROW["belt_speed"]
    ratio = run(faulty, 0.5, 600)[:, speed, 6].mean() / run(clean, 0.5, 600)[:, speed, 6].mean()
    assert ratio == pytest.approx(1.0 - 0.08, abs=0.005)


def test_a_tool_breakage_takes_tool_life_and_a_full_one_fails_the_mill() -> None:
    mill = CncMill(5, np.random.default_rng(SEED))
    mill.step(0.1)
    rul = mill.rul_s.copy()
    mill.inject_fault(0, FaultRequest(kind="tool_breakage", severity=0.5))
    assert mill.rul_s[0] == pytest.approx(rul[0] / 2, rel=0.01)
    mill.inject_fault(1, FaultRequest(kind="tool_breakage", severity=1.0))
    assert mill.health[1] == 0.0
    assert mill.operation.mode[1] == 3  # fault
    mill.step(0.1)
    assert mill.state[1] == 3


# -- labels -----------------------------------------------------------------------------------


def test_labels_carry_what_was_injected() -> None:
    fleet = Fleet(seed=SEED, dt_s=0.1)
    for _ in range(10):
        fleet.step()
    record = fleet.inject_fault(
        "cnc_01", FaultRequest(kind="bearing_defect", severity=0.7, onset="ramp", duration_s=600.0)
    )
    sensor = fleet.inject_fault(
        "cnc_01", FaultRequest(kind="drift", severity=0.2, sensor="tool_temperature")
    )
    other = fleet.inject_fault(
        "robot_01", FaultRequest(kind="stuck", severity=1.0, sensor="vibration_level")
    )
    assert (record.fault_id, sensor.fault_id, other.fault_id) == (
        "cnc_mill-1",
        "cnc_mill-2",
        "robotic_arm-1",
    )
    assert record.kind == "bearing_defect"
    assert record.machine_id == "cnc_01"
    assert record.severity == 0.7
    assert record.onset == "ramp"
    assert record.onset_s == pytest.approx(1.0)
    assert record.duration_s == 600.0
    assert record.sensor is None
    assert record.physical
    assert record.origin == "injected"
    assert sensor.sensor == "tool_temperature"
    assert not sensor.physical
    frame = fleet.step()
    slot, row = fleet.placement["cnc_01"]
    assert frame.faults[slot].of(row) == (record, sensor)
    assert fleet.active_faults("cnc_01") == (record, sensor)
    robot_slot, robot_row = fleet.placement["robot_01"]
    assert frame.faults[robot_slot].of(robot_row) == (other,)
    conveyor_slot, conveyor_row = fleet.placement["conveyor_01"]
    assert frame.faults[conveyor_slot].of(conveyor_row) == ()
    assert fleet.clear_fault("cnc_01", record.fault_id) == record
    later = fleet.step()
    assert later.faults[slot].of(row) == (sensor,)
    assert frame.faults[slot].of(row) == (record, sensor)  # the old frame is unchanged


def test_a_fault_ends_by_itself_after_its_duration() -> None:
    fleet = Fleet(seed=SEED, dt_s=1.0)
    fleet.inject_fault(
        "robot_01",
        FaultRequest(kind="bias", severity=0.1, duration_s=30.0, sensor="power_consumption"),
    )
    frames = [fleet.step() for _ in range(31)]
    slot, row = fleet.placement["robot_01"]
    assert [len(frame.faults[slot].of(row)) for frame in frames] == [1] * 29 + [0, 0]


# -- spontaneous faults -----------------------------------------------------------------------


def fleet_of(*groups: tuple[str, int], seed: int = SEED, rate: float = 6.0) -> Fleet:
    machines = tuple(
        MachineSpec(f"{kind}_{index:03d}", kind) for kind, count in groups for index in range(count)
    )
    return Fleet(FleetSpec(machines), seed=seed, dt_s=1.0, fault_rate_per_h=rate)


def fault_history(fleet: Fleet, steps: int) -> list[tuple[object, ...]]:
    seen: dict[str, tuple[object, ...]] = {}
    for _ in range(steps):
        for faults in fleet.step().faults:
            for record in faults.records:
                seen.setdefault(record.fault_id, (record, record.machine_id))
    return list(seen.values())


def test_the_same_seed_gives_the_same_spontaneous_faults() -> None:
    groups = (("robotic_arm", 20), ("cnc_mill", 20), ("conveyor_belt", 20))
    first = fault_history(fleet_of(*groups), 600)
    assert first == fault_history(fleet_of(*groups), 600)
    assert first != fault_history(fleet_of(*groups, seed=SEED + 1), 600)
    assert 40 < len(first) < 90  # 60 machines, 6 faults per machine-hour, 10 minutes
    records = [record for record, _ in first]
    assert {record.origin for record in records} == {"spontaneous"}
    assert {record.kind for record in records} >= {"bearing_defect", *SENSOR_FAULTS}
    assert all(0.2 <= record.severity <= 1.0 for record in records)
    assert all(record.physical == (record.duration_s is None) for record in records)


def test_a_types_spontaneous_faults_do_not_depend_on_the_other_types() -> None:
    alone = fault_history(fleet_of(("conveyor_belt", 30)), 600)
    mixed = fault_history(fleet_of(("robotic_arm", 10), ("conveyor_belt", 30)), 600)
    conveyor = [entry for entry in mixed if entry[1].startswith("conveyor")]
    assert alone == conveyor
    assert alone


def test_no_fault_rate_means_no_spontaneous_faults() -> None:
    assert fault_history(fleet_of(("cnc_mill", 50), rate=0.0), 600) == []


# -- bad requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine_id", "request_", "field", "words"),
    [
        ("robot_99", {"kind": "bias", "severity": 0.5}, "machine_id", ["robot_99"]),
        ("cnc_01", {"kind": "melting", "severity": 0.5}, "kind", ["melting", "tool_wear"]),
        ("conveyor_01", {"kind": "tool_wear", "severity": 0.5}, "kind", ["belt_slip", "apply"]),
        ("robot_01", {"kind": "overheating", "severity": 1.5}, "severity", ["0 to 1", "1.5"]),
        ("robot_01", {"kind": "overheating", "severity": -0.1}, "severity", ["0 to 1"]),
        ("robot_01", {"kind": "overheating", "severity": "high"}, "severity", ["'high'"]),
        ("robot_01", {"kind": "overheating", "severity": True}, "severity", ["True"]),
        ("robot_01", {"kind": "overheating", "severity": float("nan")}, "severity", ["nan"]),
        ("cnc_01", {"kind": "tool_wear", "severity": 1, "onset": "slow"}, "onset", ["ramp"]),
        ("cnc_01", {"kind": "tool_breakage", "severity": 1, "onset": "ramp"}, "onset", ["step"]),
        ("cnc_01", {"kind": "tool_wear", "severity": 1, "duration_s": 0}, "duration_s", ["0"]),
        ("cnc_01", {"kind": "tool_wear", "severity": 1, "duration_s": -5.0}, "duration_s", []),
        ("robot_01", {"kind": "stuck", "severity": 1}, "sensor", ["needs", "joint_1_angle"]),
        ("robot_01", {"kind": "dropout", "severity": 1, "sensor": "x"}, "sensor", ["'x'", "power"]),
        (
            "robot_01",
            {"kind": "overheating", "severity": 1, "sensor": "vibration_level"},
            "sensor",
            ["omit"],
        ),
    ],
)
def test_every_bad_fault_request_says_what_is_wrong_and_what_is_valid(
    machine_id: str, request_: dict[str, object], field: str, words: list[str]
) -> None:
    fleet = Fleet(seed=SEED, dt_s=0.1)
    with pytest.raises(ControlError) as caught:
        fleet.inject_fault(machine_id, FaultRequest(**request_))  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.field == field
    for word in words:
        assert word in str(error)
    assert all(not model.faults.faults().records for model in fleet.models)


def test_valid_fault_kinds_per_machine_type() -> None:
    physical = {name: model.PHYSICAL_FAULTS for name, model in MODEL_TYPES.items()}
    assert physical == {
        "robotic_arm": ("overheating", "bearing_defect"),
        "cnc_mill": (
            "overheating",
            "bearing_defect",
            "tool_wear",
            "tool_breakage",
            "spindle_imbalance",
        ),
        "conveyor_belt": ("overheating", "bearing_defect", "belt_slip"),
    }
    fleet = Fleet(seed=SEED, dt_s=0.1)
    assert fleet.fault_kinds("conveyor_01") == (
        "overheating",
        "bearing_defect",
        "belt_slip",
        *SENSOR_FAULTS,
    )


def test_clearing_an_unknown_fault_lists_the_active_ones() -> None:
    fleet = Fleet(seed=SEED, dt_s=0.1)
    record = fleet.inject_fault("cnc_01", FaultRequest(kind="overheating", severity=0.3))
    with pytest.raises(ControlError, match="cnc_mill-1") as caught:
        fleet.clear_fault("cnc_01", "cnc_mill-7")
    assert caught.value.field == "fault_id"
    assert caught.value.valid == (record.fault_id,)
    with pytest.raises(ControlError, match="none"):
        fleet.clear_fault("robot_01", record.fault_id)  # another machine's fault
