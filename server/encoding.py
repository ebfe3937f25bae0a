"""Snapshot JSON and WebSocket frame bytes, each built once and shared by every reader."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime

import numpy as np

from simulation.models import SensorSpec


def iso_timestamp(epoch_s: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-11-30T00:38:02.100Z``."""
    moment = datetime.fromtimestamp(round(epoch_s, 3), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SnapshotTemplate:
    """Formats one machine type's readings (all sensors, or a subset) as a flat snapshot.

    The per-type format string is built once; per machine only the ``machine_id``
    prefix differs, so encoding a snapshot is one ``%`` operation.
    """

    def __init__(
        self, machine_type: str, sensors: tuple[SensorSpec, ...], all_names: tuple[str, ...]
    ) -> None:
        fields = "".join(
            f",{json.dumps(sensor.name)}:{'%d' if sensor.integer else f'%.{sensor.decimals}f'}"
            for sensor in sensors
        )
        self._body = f'"type":{json.dumps(machine_type)},"timestamp":"%s","seq":%d{fields}}}'
        names = tuple(sensor.name for sensor in sensors)
        self._rows = None if names == all_names else [all_names.index(name) for name in names]

    def select(self, column: np.ndarray) -> list[float]:
        """The values this template formats, from one machine's column of readings."""
        return (column if self._rows is None else column[self._rows]).tolist()

    def encode(self, machine_id: str, timestamp: str, seq: int, values: list[float]) -> bytes:
        prefix = '{"machine_id":' + json.dumps(machine_id) + ","
        return (prefix + self._body % (timestamp, seq, *values)).encode()


def websocket_text_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed, final RFC 6455 text frame (server to client)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload
