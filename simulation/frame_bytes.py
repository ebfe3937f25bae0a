"""Frames as bytes, to cross a process boundary: versioned, compact, exact.

Layout (little-endian), version 1::

    header   "DMSF", version u8, flags u8, slots u16, seq i64, time_s f64   (24 bytes)
    shapes   per slot: sensors u16, count u32, then zero padding to 8 bytes
    floats   per slot: values (sensors x count f64, row-major), then every float label
             (count f64 each, in LABELS order)
    codes    per slot: every category label (count i8 each, in LABELS order)
    faults   u32 length, then a JSON array per slot of the active faults, sparse:
             [column, then every field of a FaultRecord in declaration order]

Readings and labels are the arrays' own bytes (NaN dropouts included), so a round trip is
exact; decoding makes read-only views into the message, not copies.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

import numpy as np

from simulation.faults import FaultRecord, FaultSet
from simulation.fleet import Frame
from simulation.spec import LABELS

MAGIC = b"DMSF"
VERSION = 1
_HEADER = struct.Struct("<4sBBHqd")
_SHAPE = struct.Struct("<HI")
_LENGTH = struct.Struct("<I")
_FLOAT_LABELS = tuple(label.name for label in LABELS if label.kind == "float")
_CATEGORY_LABELS = tuple(label.name for label in LABELS if label.kind == "category")
_FAULT_LABELS = tuple(label.name for label in LABELS if label.kind == "faults")
_FAULT_FIELDS = tuple(field.name for field in dataclasses.fields(FaultRecord))
_F8 = np.dtype("<f8")
_I1 = np.dtype("i1")


class FrameBytesError(ValueError):
    """Bytes that are not a frame of this version."""


def encode_frame(frame: Frame) -> bytes:
    """``frame`` as one message of :data:`VERSION`."""
    slots = len(frame.values)
    parts: list[Any] = [_HEADER.pack(MAGIC, VERSION, 0, slots, frame.seq, frame.time_s)]
    parts += [_SHAPE.pack(*values.shape) for values in frame.values]
    parts.append(bytes(-(_HEADER.size + _SHAPE.size * slots) % 8))
    for slot in range(slots):
        parts.append(_raw(frame.values[slot], _F8))
        parts += [_raw(getattr(frame, name)[slot], _F8) for name in _FLOAT_LABELS]
    for slot in range(slots):
        parts += [_raw(getattr(frame, name)[slot], _I1) for name in _CATEGORY_LABELS]
    fault_rows = json.dumps(
        [
            [
                _fault_row(int(column), record)
                for column, record in zip(faults.instances, faults.records, strict=True)
            ]
            for faults in getattr(frame, _FAULT_LABELS[0])
        ],
        separators=(",", ":"),
    ).encode()
    parts += [_LENGTH.pack(len(fault_rows)), fault_rows]
    return b"".join(parts)


def decode_frame(data: bytes | bytearray | memoryview) -> Frame:
    """The frame :func:`encode_frame` wrote; :class:`FrameBytesError` for anything else."""
    buffer = memoryview(data).cast("B")
    try:
        magic, version, _, slots, seq, time_s = _HEADER.unpack_from(buffer, 0)
        if magic != MAGIC or version != VERSION:
            raise FrameBytesError(f"not a version {VERSION} frame (magic {magic!r}, v{version})")
        shapes = [_SHAPE.unpack_from(buffer, _HEADER.size + _SHAPE.size * k) for k in range(slots)]
        offset = _HEADER.size + _SHAPE.size * slots
        offset += -offset % 8
        values: list[np.ndarray] = []
        floats: dict[str, list[np.ndarray]] = {name: [] for name in _FLOAT_LABELS}
        for sensors, count in shapes:
            array, offset = _view(buffer, offset, _F8, sensors * count)
            values.append(array.reshape(sensors, count))
            for name in _FLOAT_LABELS:
                array, offset = _view(buffer, offset, _F8, count)
                floats[name].append(array)
        codes: dict[str, list[np.ndarray]] = {name: [] for name in _CATEGORY_LABELS}
        for _, count in shapes:
            for name in _CATEGORY_LABELS:
                array, offset = _view(buffer, offset, _I1, count)
                codes[name].append(array)
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += _LENGTH.size
        if offset + length != len(buffer):
            raise FrameBytesError(f"{len(buffer) - offset - length} bytes past the frame's end")
        fault_rows = json.loads(bytes(buffer[offset:]))
        if len(fault_rows) != slots:
            raise FrameBytesError(f"faults for {len(fault_rows)} slots, not {slots}")
        faults = {_FAULT_LABELS[0]: tuple(_fault_set(rows) for rows in fault_rows)}
    except (struct.error, ValueError, TypeError, IndexError) as error:
        if isinstance(error, FrameBytesError):
            raise
        raise FrameBytesError(f"not a frame: {error}") from None
    labels: dict[str, Any] = {name: tuple(arrays) for name, arrays in (floats | codes).items()}
    labels |= faults
    return Frame(seq=seq, time_s=time_s, values=tuple(values), **labels)


def _raw(array: np.ndarray, dtype: np.dtype[Any]) -> bytes | memoryview:
    if not array.size:  # an empty slot of a shard: a zero-length view cannot be cast
        return b""
    return np.ascontiguousarray(array, dtype=dtype).data.cast("B")


def _view(
    buffer: memoryview, offset: int, dtype: np.dtype[Any], count: int
) -> tuple[np.ndarray, int]:
    end = offset + count * dtype.itemsize
    if end > len(buffer):
        raise FrameBytesError("the frame is cut short")
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
    array.flags.writeable = False
    return array, end


def _fault_row(column: int, record: FaultRecord) -> list[Any]:
    return [column, *(getattr(record, name) for name in _FAULT_FIELDS)]


def _fault_set(rows: list[list[Any]]) -> FaultSet:
    records = tuple(FaultRecord(**dict(zip(_FAULT_FIELDS, row[1:], strict=True))) for row in rows)
    return FaultSet(records, np.array([row[0] for row in rows], dtype=np.int64))
