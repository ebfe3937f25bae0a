"""Frames as bytes: an exact round trip, NaN dropouts and faults included; bad bytes refused."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import FaultRequest, Fleet, FleetSpec, Frame, MachineSpec
from simulation.frame_bytes import FrameBytesError, decode_frame, encode_frame
from simulation.spec import LABELS


def assert_same_frame(decoded: Frame, frame: Frame) -> None:
    assert (decoded.seq, decoded.time_s) == (frame.seq, frame.time_s)
    for name in ("values", *(label.name for label in LABELS if label.kind != "faults")):
        ours, theirs = getattr(decoded, name), getattr(frame, name)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert a.dtype == b.dtype
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b)  # NaN equals NaN here
    for ours, theirs in zip(decoded.faults, frame.faults, strict=True):
        assert ours.records == theirs.records
        np.testing.assert_array_equal(ours.instances, theirs.instances)


def faulty_fleet() -> Fleet:
    types = ("robotic_arm", "cnc_mill", "conveyor_belt")
    spec = FleetSpec(tuple(MachineSpec(f"m{i:02d}", types[i % 3]) for i in range(12)))
    fleet = Fleet(spec, seed=3, dt_s=0.5, fault_rate_per_h=30.0)
    fleet.inject_fault("m02", FaultRequest(kind="dropout", severity=1.0, sensor="motor_load"))
    fleet.inject_fault("m01", FaultRequest(kind="tool_breakage", severity=0.4))
    fleet.inject_fault("m00", FaultRequest(kind="overheating", severity=0.5, duration_s=60.0))
    return fleet


def test_frames_round_trip_exactly_with_dropouts_and_faults() -> None:
    fleet = faulty_fleet()
    for _ in range(200):
        frame = fleet.step()
        assert_same_frame(decode_frame(encode_frame(frame)), frame)
    slot, column = fleet.placement["m02"]
    assert np.isnan(decode_frame(encode_frame(frame)).values[slot][1, column])
    assert sum(len(faults.records) for faults in frame.faults) >= 3


def test_decoded_arrays_are_read_only_views() -> None:
    frame = decode_frame(encode_frame(faulty_fleet().step()))
    with pytest.raises(ValueError, match="read-only"):
        frame.values[0][0, 0] = 1.0


def test_a_frame_is_its_arrays_plus_a_small_header() -> None:
    fleet = Fleet(
        FleetSpec(tuple(MachineSpec(f"c{i}", "conveyor_belt") for i in range(1000))),
        seed=1,
        dt_s=0.1,
    )
    frame = fleet.step()
    arrays = sum(a.nbytes for a in frame.values + frame.state + frame.health + frame.rul_s)
    assert arrays < len(encode_frame(frame)) <= arrays + 64


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"XXXX" + data[4:],
        lambda data: data[:4] + b"\x09" + data[5:],
        lambda data: data[:-3],
        lambda data: data[:40],
        lambda data: data + b"\x00",
        lambda data: b"",
    ],
    ids=["magic", "version", "truncated", "header only", "trailing", "empty"],
)
def test_damaged_bytes_are_refused_with_a_clear_error(damage) -> None:
    data = encode_frame(faulty_fleet().step())
    with pytest.raises(FrameBytesError):
        decode_frame(damage(data))
