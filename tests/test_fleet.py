"""The fleet: seeded determinism, independent streams per type, variety, labels, stability."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import Fleet, FleetSpec, MachineSpec, State
from simulation.fleet_spec import default_fleet
from simulation.models import MODEL_TYPES


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
    fleet.inject_fault("robot_01", "overheating", 1.0)
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
    fleet = Fleet(spec, seed=6, dt_s=10.0, fault_rate_per_h=2.0)
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
