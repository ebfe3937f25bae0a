"""The fleet: seeded determinism, independent streams per type, variety, labels, stability."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import DEFAULT_REPAIR_AFTER_S, Fleet, FleetSpec, Frame, MachineSpec, State
from simulation.fleet_spec import default_fleet
from simulation.models import MODEL_TYPES
from simulation.spec import FaultRequest


def group(machine_type: str, count: int) -> tuple[MachineSpec, ...]:
    return tuple(MachineSpec(f"{machine_type}_{index}", machine_type) for index in range(count))


def run(fleet: Fleet, steps: int) -> list[tuple[np.ndarray, ...]]:
    return [fleet.step().values for _ in range(steps)]


def test_same_seed_gives_identical_samples() -> None:
    first = run(Fleet(seed=11, dt_s=0.1), 300)
    second = run(Fleet(seed=11, dt_s=0.1), 300)
    for values_a, values_b in zip(first, second, strict=True):
        for a, b in zip(values_a, values_b, strict=True):
            np.testing.assert_array_equal(a, b)


def test_different_seeds_give_different_samples() -> None:
    first = Fleet(seed=11, dt_s=0.1).step().values
    second = Fleet(seed=12, dt_s=0.1).step().values
    assert all(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_adding_a_machine_type_leaves_the_others_samples_unchanged() -> None:
    robots_only = Fleet(FleetSpec(group("robotic_arm", 4)), seed=3, dt_s=0.1)
    mixed = Fleet(FleetSpec(group("robotic_arm", 4) + group("cnc_mill", 2)), seed=3, dt_s=0.1)
    robot_slot = mixed.placement["robotic_arm_0"][0]
    for _ in range(50):
        alone, together = robots_only.step(), mixed.step()
        np.testing.assert_array_equal(alone.values[0], together.values[robot_slot])


@pytest.mark.parametrize("machine_type", sorted(MODEL_TYPES))
def test_instances_of_one_type_differ(machine_type: str) -> None:
    fleet = Fleet(FleetSpec(group(machine_type, 2)), seed=5, dt_s=0.1)
    frames = run(fleet, 100)
    readings = np.stack([values[0] for values in frames])  # (steps, sensors, 2)
    assert not np.allclose(readings[..., 0], readings[..., 1])


def test_frames_carry_seq_and_simulated_time() -> None:
    fleet = Fleet(default_fleet(), seed=1, dt_s=0.25)
    frames = [fleet.step() for _ in range(4)]
    assert [frame.seq for frame in frames] == [1, 2, 3, 4]
    assert [frame.time_s for frame in frames] == [0.25, 0.5, 0.75, 1.0]


def test_frames_are_not_changed_by_later_steps() -> None:
    fleet = Fleet(seed=2, dt_s=0.1)
    frame = fleet.step()
    kept = [values.copy() for values in frame.values]
    run(fleet, 20)
    for before, after in zip(kept, frame.values, strict=True):
        np.testing.assert_array_equal(before, after)


def test_frames_carry_labels_per_model() -> None:
    fleet = Fleet(FleetSpec(group("cnc_mill", 3) + group("robotic_arm", 2)), seed=4, dt_s=0.1)
    frame = fleet.step()
    for slot, model in enumerate(fleet.models):
        assert frame.state[slot].shape == (model.count,)
        assert frame.state[slot].dtype == np.int8
        assert set(frame.state[slot].tolist()) <= {int(state) for state in State}
        assert frame.health[slot].dtype == np.float64
        assert np.all((frame.health[slot] >= 0.99) & (frame.health[slot] <= 1.0))
        assert np.all(frame.rul_s[slot] > 0.0)
        assert frame.faults[slot].records == ()
    slot, row = fleet.placement["cnc_mill_2"]
    assert frame.faults[slot].of(row) == ()


def test_labels_in_a_frame_are_not_changed_later() -> None:
    fleet = Fleet(seed=2, dt_s=10.0, fault_rate_per_h=20.0)
    frame = fleet.step()
    kept = [
        [array.copy() for array in labels]
        for labels in (frame.values, frame.state, frame.health, frame.rul_s)
    ]
    faults = frame.faults
    fleet.command("cnc_01", "maintain")
    fleet.inject_fault("robot_01", FaultRequest(kind="overheating", severity=1.0))
    fleet.command("conveyor_01", "stop")
    run(fleet, 360)
    for before, after in zip(
        kept, (frame.values, frame.state, frame.health, frame.rul_s), strict=True
    ):
        for a, b in zip(before, after, strict=True):
            np.testing.assert_array_equal(a, b)
    assert frame.faults is faults
    assert all(faults.records == () for faults in frame.faults)


def test_same_seed_gives_identical_labels_and_faults() -> None:
    def labels(seed: int) -> list[tuple[object, ...]]:
        fleet = Fleet(
            FleetSpec(group("conveyor_belt", 5) + group("cnc_mill", 5)),
            seed=seed,
            dt_s=2.0,
            fault_rate_per_h=10.0,
        )
        frames = [fleet.step() for _ in range(900)]
        return [
            (
                frame.state[0].tobytes(),
                frame.health[1].tobytes(),
                frame.rul_s[0].tobytes(),
                frame.values[1].tobytes(),
                tuple(f.records for f in frame.faults),
            )
            for frame in frames
        ]

    first = labels(8)
    assert first == labels(8)
    assert first != labels(9)


def test_six_hours_at_10_s_steps_with_faults_stays_finite_and_labelled() -> None:
    spec = FleetSpec(group("robotic_arm", 15) + group("cnc_mill", 15) + group("conveyor_belt", 15))
    fleet = Fleet(spec, seed=6, dt_s=10.0, fault_rate_per_h=2.0, repair_after_s=None)
    for _ in range(2160):
        frame = fleet.step()
        for slot, values in enumerate(frame.values):
            if not np.isfinite(values).all():  # only where a sensor has dropped out
                dropped = np.zeros(values.shape, dtype=bool)
                for record in frame.faults[slot].records:
                    if record.kind == "dropout":
                        sensor = fleet.models[slot].sensor_names().index(record.sensor)
                        dropped[sensor, fleet.placement[record.machine_id][1]] = True
                assert np.isfinite(values[~dropped]).all()
    for slot in range(len(fleet.models)):
        assert np.all((frame.health[slot] >= 0.0) & (frame.health[slot] <= 1.0))
    states = np.concatenate(frame.state)
    assert {int(state) for state in State} >= set(states.tolist())
    assert np.count_nonzero(states == State.FAULT) > 0  # no maintenance: failures


def test_a_negative_fault_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="fault_rate_per_h"):
        Fleet(seed=1, dt_s=0.1, fault_rate_per_h=-1.0)


# -- the repair policy --------------------------------------------------------------------------

RUNNING, IDLE, WARNING, FAULT, MAINTENANCE = (int(state) for state in State)


def break_down(fleet: Fleet) -> dict[str, float]:
    """Fail four machines: a full tool breakage at once, three by wear at the next step's
    health refresh; return their failure times."""
    fleet.inject_fault("conveyor_belt_0", FaultRequest(kind="belt_slip", severity=0.5))
    fleet.inject_fault(
        "conveyor_belt_0", FaultRequest(kind="bias", severity=0.2, sensor="motor_load")
    )
    fleet.inject_fault("cnc_mill_0", FaultRequest(kind="tool_breakage", severity=1.0))
    for machine_id in ("conveyor_belt_0", "robotic_arm_1", "robotic_arm_0"):
        slot, row = fleet.placement[machine_id]
        model = fleet.models[slot]
        model.wear.usage_s[row] = model.wear.life_s[row]
    now_s = fleet.seq * fleet.dt_s
    return {
        "conveyor_belt_0": now_s + fleet.dt_s,
        "robotic_arm_1": now_s + fleet.dt_s,
        "robotic_arm_0": now_s + fleet.dt_s,
        "cnc_mill_0": now_s,
    }


def states_of(frames: list[Frame], fleet: Fleet, machine_id: str) -> np.ndarray:
    slot, row = fleet.placement[machine_id]
    return np.array([frame.state[slot][row] for frame in frames])


def test_the_crew_repairs_a_failed_machine_after_repair_after_s() -> None:
    spec = FleetSpec(group("conveyor_belt", 3) + group("cnc_mill", 2) + group("robotic_arm", 2))
    fleet, twin = (Fleet(spec, seed=7, dt_s=10.0, repair_after_s=600.0) for _ in range(2))
    frames, twin_frames = [fleet.step()], [twin.step()]
    failed_s = break_down(fleet)
    break_down(twin)
    mill_slot, mill_row = fleet.placement["cnc_mill_0"]
    tools = fleet.models[mill_slot].tool_changes[mill_row]
    for _ in range(60):
        frames.append(fleet.step())
        twin_frames.append(twin.step())
    assert fleet.command("robotic_arm_0", "maintain") == "maintenance"  # the operator was first
    twin.command("robotic_arm_0", "maintain")
    for _ in range(300):
        frames.append(fleet.step())
        twin_frames.append(twin.step())
    times = np.array([frame.time_s for frame in frames])
    for machine_id in ("conveyor_belt_0", "robotic_arm_1", "cnc_mill_0"):
        states = states_of(frames, fleet, machine_id)
        fault = times[states == FAULT]
        assert fault.max() < failed_s[machine_id] + 600.0 <= fault.max() + fleet.dt_s
        assert np.all(np.diff(fault) == fleet.dt_s)  # one stretch in fault
        repaired = np.flatnonzero(times == failed_s[machine_id] + 600.0)[0]
        assert states[repaired] == MAINTENANCE  # the crew came after 600 s in fault
        assert (
            frames[repaired].health[fleet.placement[machine_id][0]][fleet.placement[machine_id][1]]
            > 0.98
        )
        assert states[-1] in (RUNNING, IDLE)  # and after the maintenance it works again
        assert fleet.auto_repairs(machine_id) == 1
    # The operator's own maintain is not the crew's, and it cancels the crew's visit.
    operator = states_of(frames, fleet, "robotic_arm_0")
    assert fleet.auto_repairs("robotic_arm_0") == 0
    assert np.count_nonzero(np.diff((operator == MAINTENANCE).astype(int)) == 1) == 1
    assert fleet.auto_repairs() == 3
    assert all(fleet.auto_repairs(m) == 0 for m in ("conveyor_belt_1", "cnc_mill_1"))
    # Maintenance cleared the physical faults (the sensor's stays) and put a new tool in.
    assert [record.kind for record in fleet.active_faults("conveyor_belt_0")] == ["bias"]
    assert fleet.active_faults("cnc_mill_0") == ()
    assert fleet.models[mill_slot].tool_changes[mill_row] == tools + 1
    # Deterministic: the same seed and commands give the same readings and labels.
    for frame, other in zip(frames, twin_frames, strict=True):
        for slot in range(len(fleet.models)):
            np.testing.assert_array_equal(frame.values[slot], other.values[slot])
            np.testing.assert_array_equal(frame.state[slot], other.state[slot])
            np.testing.assert_array_equal(frame.health[slot], other.health[slot])
    assert twin.auto_repairs() == 3


@pytest.mark.parametrize("repair_after_s", [None, 0, 0.0])
def test_without_a_repair_policy_a_failed_machine_waits_for_maintain(
    repair_after_s: float | None,
) -> None:
    spec = FleetSpec(group("conveyor_belt", 2) + group("cnc_mill", 1) + group("robotic_arm", 2))
    fleet = Fleet(spec, seed=7, dt_s=60.0, repair_after_s=repair_after_s)
    assert fleet.repair_after_s is None
    frames = [fleet.step()]
    break_down(fleet)
    frames += [fleet.step() for _ in range(6 * 60)]  # six hours: 12 x the default policy
    for machine_id in ("conveyor_belt_0", "robotic_arm_1", "cnc_mill_0"):
        assert set(states_of(frames[2:], fleet, machine_id).tolist()) == {FAULT}
    assert fleet.auto_repairs() == 0
    assert fleet.command("cnc_mill_0", "maintain") == "maintenance"


def test_a_long_running_fleet_keeps_running_with_the_default_policy() -> None:
    """Half a simulated day with many spontaneous faults: failures come and go, none lasts."""
    assert DEFAULT_REPAIR_AFTER_S == 1800.0
    spec = FleetSpec(group("robotic_arm", 8) + group("cnc_mill", 8) + group("conveyor_belt", 8))
    fleet = Fleet(spec, seed=12, dt_s=60.0, fault_rate_per_h=2.0)
    assert fleet.repair_after_s == DEFAULT_REPAIR_AFTER_S
    states = np.stack([np.concatenate(fleet.step().state) for _ in range(12 * 60)])
    fault = states == FAULT
    # No machine is in fault for longer than the policy allows (plus one step).
    longest = np.zeros(fault.shape[1], dtype=int)
    run_length = np.zeros(fault.shape[1], dtype=int)
    for row in fault:
        run_length = np.where(row, run_length + 1, 0)
        np.maximum(longest, run_length, out=longest)
    assert longest.max() * 60.0 <= DEFAULT_REPAIR_AFTER_S + 60.0
    assert longest.max() * 60.0 >= DEFAULT_REPAIR_AFTER_S  # and the crew does wait that long
    assert all(model.auto_repairs.sum() > 0 for model in fleet.models)  # every type failed
    assert fleet.auto_repairs() >= 10
    assert fleet.auto_repairs() == np.count_nonzero(np.diff(fault.astype(int), axis=0) == -1)
    assert fault.mean() < 0.05
    assert np.isin(states[-240:], (RUNNING, WARNING)).mean() > 0.7  # the last 4 h: most work


@pytest.mark.parametrize("repair_after_s", [-1.0, float("nan"), float("inf")])
def test_a_bad_repair_policy_is_refused(repair_after_s: float) -> None:
    with pytest.raises(ValueError, match="repair_after_s"):
        Fleet(seed=1, dt_s=0.1, repair_after_s=repair_after_s)
