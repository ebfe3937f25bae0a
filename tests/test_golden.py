"""Seeded runs are pinned to stored digests: a refactor that changes one sample fails here.

Each run steps a seeded fleet with spontaneous faults, injected faults of every kind and
every command, and hashes every frame's telemetry and labels. The digests were taken from
the code before the seams were redesigned; they change only when a model's behaviour is
meant to change (then say so in the commit and take the new digest).

Values are hashed as float32: numpy's vectorised sin, exp and log differ in the last bits
between CPUs (its AVX-512 paths against the others) and between numpy releases, so float64
digests would pin a machine, not the models. At float32 the digests are the same with numpy
1.26 to 2.4, with and without AVX-512 (``NPY_DISABLE_CPU_FEATURES`` checks the latter);
states, fault records, seq and time are hashed exactly.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from simulation import Fleet, FleetSpec, Frame, MachineSpec
from simulation.fleet_spec import default_fleet
from simulation.spec import FaultRequest


def frame_digest(frames: list[Frame]) -> str:
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(np.array([frame.seq, frame.time_s]).tobytes())
        for slot in range(len(frame.values)):
            digest.update(np.asarray(frame.values[slot], dtype=np.float32).tobytes())
            digest.update(frame.state[slot].tobytes())
            digest.update(np.asarray(frame.health[slot], dtype=np.float32).tobytes())
            digest.update(np.asarray(frame.rul_s[slot], dtype=np.float32).tobytes())
            for record in frame.faults[slot].records:
                digest.update(repr(record).encode())
    return digest.hexdigest()


def mixed_fleet(count: int) -> FleetSpec:
    types = ("robotic_arm", "cnc_mill", "conveyor_belt")
    return FleetSpec(
        tuple(MachineSpec(f"m{index:03d}", types[index % 3]) for index in range(count))
    )


def run(fleet: Fleet, steps: int, actions: dict[int, list[tuple[str, str, object]]]) -> str:
    frames = []
    for step in range(steps):
        for machine_id, action, argument in actions.get(step, []):
            if action == "fault":
                assert isinstance(argument, FaultRequest)
                fleet.inject_fault(machine_id, argument)
            else:
                assert isinstance(argument, str)
                fleet.command(machine_id, argument)
        frames.append(fleet.step())
    return frame_digest(frames)


SCRIPT: dict[int, list[tuple[str, str, object]]] = {
    20: [
        ("robot_01", "fault", FaultRequest(kind="overheating", severity=0.8, onset="ramp")),
        ("cnc_01", "fault", FaultRequest(kind="tool_breakage", severity=0.6)),
        ("conveyor_01", "fault", FaultRequest(kind="bearing_defect", severity=0.7)),
    ],
    60: [
        (
            "robot_01",
            "fault",
            FaultRequest(kind="stuck", severity=1.0, sensor="temperature_core", duration_s=8.0),
        ),
        (
            "cnc_01",
            "fault",
            FaultRequest(
                kind="noise", severity=0.5, sensor="vibration_spindle", onset="intermittent"
            ),
        ),
        (
            "conveyor_01",
            "fault",
            FaultRequest(kind="dropout", severity=0.5, sensor="motor_load", duration_s=20.0),
        ),
        ("cnc_01", "fault", FaultRequest(kind="spindle_imbalance", severity=0.4)),
        ("conveyor_01", "fault", FaultRequest(kind="belt_slip", severity=0.9, onset="ramp")),
    ],
    120: [("robot_01", "command", "stop"), ("conveyor_01", "command", "maintain")],
    200: [("robot_01", "command", "start"), ("cnc_01", "command", "maintain")],
    300: [
        ("robot_01", "fault", FaultRequest(kind="drift", severity=0.9, sensor="power_consumption")),
        ("cnc_01", "fault", FaultRequest(kind="bias", severity=0.3, sensor="tool_changes")),
        ("cnc_01", "fault", FaultRequest(kind="tool_wear", severity=1.0)),
    ],
    400: [("cnc_01", "command", "reset")],
}

CASES = {
    # (fleet, seed, dt_s, fault rate, steps, script): digest
    "seed fleet at 10 Hz, scripted": (
        lambda: Fleet(default_fleet(), seed=20261130, dt_s=0.1),
        600,
        SCRIPT,
        "13ae52543de518794211df05a399ef17e68e86ae6a7945e3c0b7262a923b12ad",
    ),
    "30 machines at 1 Hz, spontaneous faults": (
        lambda: Fleet(mixed_fleet(30), seed=7, dt_s=1.0, fault_rate_per_h=2.0, repair_after_s=300),
        3600,
        {},
        "d318c47b4272576a7ed96073ff7d3663aeb02a667eef5cea2eed1828406be54d",
    ),
    "9 machines, 10 s steps, spontaneous faults": (
        lambda: Fleet(mixed_fleet(9), seed=3, dt_s=10.0, fault_rate_per_h=0.5),
        500,
        {},
        "22365e95be8c864bf6cbc081845684426625476c0bd24fcabc825ab959b782a3",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_seeded_runs_match_their_stored_digest(case: str) -> None:
    make, steps, script, expected = CASES[case]
    assert run(make(), steps, script) == expected
