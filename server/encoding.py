"""Snapshot JSON and WebSocket frame bytes, each built once and shared by every reader."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime

import numpy as np

from simulation.spec import SensorSpec


def iso_timestamp(epoch_s: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-11-30T00:38:02.100Z``."""
    moment = datetime.fromtimestamp(round(epoch_s, 3), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(timestamp: str) -> float:
    """Epoch seconds of a timestamp made by :func:`iso_timestamp`."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


class SnapshotTemplate:
    """Formats one machine type's readings (all sensors, or a subset) as a flat snapshot.

    The per-type format string is built once; per machine only the ``machine_id``
    prefix differs, so encoding a snapshot is one ``%`` operation. A missing reading
    (NaN, a sensor dropout) is written as JSON ``null`` or an empty CSV cell.
    """

    def __init__(
        self, machine_type: str, sensors: tuple[SensorSpec, ...], all_names: tuple[str, ...]
    ) -> None:
        self.names = tuple(sensor.name for sensor in sensors)
        self._formats = tuple("%d" if s.integer else f"%.{s.decimals}f" for s in sensors)
        self._head = f'"type":{json.dumps(machine_type)},"timestamp":"%s","seq":%d'
        self._keys = tuple(f",{json.dumps(name)}:" for name in self.names)
        fields = "".join(key + fmt for key, fmt in zip(self._keys, self._formats, strict=True))
        self._body = self._head + fields
        self._csv_row = "%s,%d" + "".join("," + fmt for fmt in self._formats)
        rows = [all_names.index(name) for name in self.names]
        self._rows = None if self.names == all_names else rows

    def select(self, column: np.ndarray) -> list[float]:
        """The values this template formats, from one machine's column of readings."""
        return (column if self._rows is None else column[self._rows]).tolist()

    def encode(
        self, machine_id: str, timestamp: str, seq: int, values: list[float], tail: str = ""
    ) -> bytes:
        """The snapshot; ``tail`` (``,"key":value`` pairs, e.g. labels) goes before the ``}``."""
        prefix = '{"machine_id":' + json.dumps(machine_id) + ","
        if any(value != value for value in values):
            cells = self._cells(values, "null")
            body = self._head % (timestamp, seq) + "".join(map(str.__add__, self._keys, cells))
        else:
            body = self._body % (timestamp, seq, *values)
        return (prefix + body + tail + "}").encode()

    def csv_header(self, extra: tuple[str, ...] = ()) -> str:
        return ",".join(("timestamp", "seq", *self.names, *extra)) + "\n"

    def csv_row(
        self, timestamp: str, seq: int, values: list[float], extra: tuple[str, ...] = ()
    ) -> str:
        if any(value != value for value in values):
            row = ",".join((timestamp, str(seq), *self._cells(values, "")))
        else:
            row = self._csv_row % (timestamp, seq, *values)
        return ",".join((row, *extra)) + "\n"

    def _cells(self, values: list[float], missing: str) -> list[str]:
        return [
            missing if value != value else fmt % value
            for fmt, value in zip(self._formats, values, strict=True)
        ]


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
