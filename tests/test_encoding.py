"""Snapshot and CSV encoding, including missing readings, and WebSocket frame headers."""

from __future__ import annotations

import json
import math
import struct

import numpy as np

from server.encoding import SnapshotTemplate, websocket_text_frame
from simulation.spec import SensorSpec

SENSORS = (
    SensorSpec(name="speed", unit="m/s", description="", typical_min=0, typical_max=3, decimals=3),
    SensorSpec(
        name="count", unit="items", description="", typical_min=0, typical_max=9, integer=True
    ),
)


def template() -> SnapshotTemplate:
    return SnapshotTemplate("belt", SENSORS, ("speed", "count"))


def test_snapshot_is_flat_json_rounded_per_sensor() -> None:
    encoded = template().encode("b1", "2026-01-01T00:00:00.000Z", 7, [1.23456, 42.0])
    assert json.loads(encoded) == {
        "machine_id": "b1",
        "type": "belt",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "seq": 7,
        "speed": 1.235,
        "count": 42,
    }


def test_a_missing_reading_is_null_in_json_and_empty_in_csv() -> None:
    snapshot = json.loads(template().encode("b1", "t", 1, [math.nan, 3.0]))
    assert snapshot["speed"] is None
    assert snapshot["count"] == 3
    assert template().csv_row("t", 1, [math.nan, 3.0]) == "t,1,,3\n"
    assert template().csv_row("t", 1, [0.5, 3.0]) == "t,1,0.500,3\n"
    assert template().csv_header() == "timestamp,seq,speed,count\n"


def test_a_subset_of_fields_selects_their_rows() -> None:
    subset = SnapshotTemplate("belt", SENSORS[1:], ("speed", "count"))
    values = subset.select(np.array([9.9, 5.0]))
    assert json.loads(subset.encode("b1", "t", 1, values))["count"] == 5
    assert "speed" not in json.loads(subset.encode("b1", "t", 1, values))


def test_websocket_frame_lengths() -> None:
    assert websocket_text_frame(b"x" * 125)[:2] == bytes([0x81, 125])
    assert websocket_text_frame(b"x" * 126)[:4] == bytes([0x81, 126]) + struct.pack("!H", 126)
    big = websocket_text_frame(b"x" * 70_000)
    assert big[:2] == bytes([0x81, 127])
    assert struct.unpack("!Q", big[2:10])[0] == 70_000
