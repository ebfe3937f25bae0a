"""The fleet: seeded determinism, independent streams per type, per-instance variety, stability."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import Fleet, FleetSpec, MachineSpec
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
