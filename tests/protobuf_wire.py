"""A protobuf wire-format reader written for the tests from the encoding rules alone, so the
gateway's Sparkplug payloads are checked by a decoder that shares nothing with protoc's code."""

from __future__ import annotations

import struct
from collections import defaultdict
from typing import Any

Fields = dict[int, list[Any]]


def fields(data: bytes) -> Fields:
    """Field number -> values: ints for varints, bytes for length-delimited, floats decoded
    from fixed 64- and 32-bit fields."""
    found: Fields = defaultdict(list)
    offset = 0
    while offset < len(data):
        key, offset = _varint(data, offset)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, offset = _varint(data, offset)
        elif wire == 1:
            (value,) = struct.unpack_from("<d", data, offset)
            offset += 8
        elif wire == 2:
            length, offset = _varint(data, offset)
            value, offset = data[offset : offset + length], offset + length
        elif wire == 5:
            (value,) = struct.unpack_from("<f", data, offset)
            offset += 4
        else:
            raise ValueError(f"wire type {wire}")
        found[number].append(value)
    return dict(found)


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, offset
        shift += 7


def payload(data: bytes) -> dict[str, Any]:
    """A Sparkplug B Payload: timestamp (1), metrics (2), seq (3)."""
    top = fields(data)
    return {
        "timestamp": top.get(1, [None])[0],
        "seq": top.get(3, [None])[0],
        "metrics": [metric(raw) for raw in top.get(2, [])],
    }


def metric(data: bytes) -> dict[str, Any]:
    """A Metric: name 1, alias 2, datatype 4, is_null 7, properties 9, and its value (long 11,
    double 13, boolean 14, string 15)."""
    found = fields(data)
    value: Any = None
    if 11 in found:
        value = found[11][0]
    elif 13 in found:
        value = found[13][0]
    elif 14 in found:
        value = bool(found[14][0])
    elif 15 in found:
        value = found[15][0].decode()
    properties = {}
    if 9 in found:
        inner = fields(found[9][0])
        keys = [key.decode() for key in inner.get(1, [])]
        values = [_property_value(raw) for raw in inner.get(2, [])]
        properties = dict(zip(keys, values, strict=True))
    return {
        "name": found[1][0].decode() if 1 in found else None,
        "alias": found.get(2, [None])[0],
        "datatype": found.get(4, [None])[0],
        "is_null": bool(found.get(7, [0])[0]),
        "value": value,
        "properties": properties,
    }


def _property_value(data: bytes) -> Any:
    found = fields(data)
    if 6 in found:
        return found[6][0]
    if 8 in found:
        return found[8][0].decode()
    return None
