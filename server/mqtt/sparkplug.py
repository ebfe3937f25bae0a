"""Sparkplug B 3.0 for the gateway: the topic namespace, birth, data and death payloads.

The gateway is one edge node (``--mqtt-gateway-id``) of the group ``--mqtt-prefix``; each
machine is a device. Topics: ``spBv1.0/{group}/{NBIRTH|NDEATH|NDATA|NCMD}/{node}`` and
``spBv1.0/{group}/{DBIRTH|DDATA|DCMD}/{node}/{device}``.

- NDEATH is the connection's last will; it carries the ``bdSeq`` of the NBIRTH made on that
  connection (0..255, one more on each connection).
- NBIRTH (``seq`` 0) carries ``bdSeq`` and ``Node Control/Rebirth``; then a DBIRTH per machine
  with every metric's name, alias, datatype and value, and its properties (unit, typical
  range, warning and alarm, description). ``seq`` counts every later message, 0..255.
- DDATA carries each due machine's metrics by alias alone, timestamped with the tick.
- An NCMD setting ``Node Control/Rebirth`` true makes the node publish its births again.

Readings are Double (Int64 where the sensor reports whole numbers), a dropout is
``is_null``; the labels (``labels/state``, ``labels/health``, ``labels/rul_s``,
``labels/faults`` as the JSON list of active faults) and ``seq`` (UInt64) follow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from server.labels import fault_json
from server.mqtt.proto.sparkplug_b_pb2 import Payload
from server.store import Store
from simulation import Frame
from simulation.catalog import FleetCatalog
from simulation.spec import STATE_NAMES, SensorSpec

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"

# Sparkplug B data types (specification, section 6.4.16)
INT64, UINT64, DOUBLE, BOOLEAN, STRING = 4, 8, 10, 11, 12


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    name: str
    alias: int
    datatype: int
    sensor: SensorSpec | None = None


class SparkplugNode:
    """One edge node's messages for the fleet in ``store``; holds ``bdSeq`` and ``seq``."""

    def __init__(self, store: Store, group_id: str, node_id: str) -> None:
        self.store, self.group_id, self.node_id = store, group_id, node_id
        self.bd_seq = -1  # one more on each connection: 0 on the first
        self.seq = 0
        self.definitions = [_definitions(kind.sensors) for kind in store.catalog.types]

    # -- topics ------------------------------------------------------------------------------

    def node_topic(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.node_id}"

    def device_topic(self, kind: str, machine_id: str) -> str:
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.node_id}/{machine_id}"

    # -- session -----------------------------------------------------------------------------

    def next_session(self) -> bytes:
        """The NDEATH payload to register as the last will of a new connection."""
        self.bd_seq = (self.bd_seq + 1) % 256
        payload = Payload()
        _metric(payload, BD_SEQ, UINT64, self.bd_seq)
        return payload.SerializeToString()

    def nbirth(self, timestamp_ms: int) -> bytes:
        self.seq = 0
        payload = Payload(timestamp=timestamp_ms, seq=0)
        _metric(payload, BD_SEQ, UINT64, self.bd_seq)
        _metric(payload, REBIRTH, BOOLEAN, False)
        return payload.SerializeToString()

    def dbirth(self, frame: Frame, slot: int, column: int) -> bytes:
        """Every metric of one machine, with its definition and current value."""
        payload = self._next(frame)
        for definition, value in zip(
            self.definitions[slot], self._values(frame, slot, column), strict=True
        ):
            metric = _metric(
                payload, definition.name, definition.datatype, value, alias=definition.alias
            )
            if definition.sensor is not None:
                _properties(metric, definition.sensor)
        return payload.SerializeToString()

    def ddata(self, frame: Frame, slot: int, column: int) -> bytes:
        """One machine's metrics by alias."""
        payload = self._next(frame)
        for definition, value in zip(
            self.definitions[slot], self._values(frame, slot, column), strict=True
        ):
            _metric(payload, None, definition.datatype, value, alias=definition.alias)
        return payload.SerializeToString()

    def rebirth_requested(self, data: bytes) -> bool:
        """Whether an NCMD payload sets ``Node Control/Rebirth``; False for anything else."""
        payload = Payload()
        try:
            payload.ParseFromString(data)
        except Exception:  # a malformed protobuf: not a command of ours
            return False
        return any(m.name == REBIRTH and m.boolean_value for m in payload.metrics)

    # -- values ------------------------------------------------------------------------------

    def _next(self, frame: Frame) -> Any:
        self.seq = (self.seq + 1) % 256
        return Payload(timestamp=self._timestamp_ms(frame), seq=self.seq)

    def _timestamp_ms(self, frame: Frame) -> int:
        return round(self.store.history.timestamp_s(frame.seq) * 1000)

    def _values(self, frame: Frame, slot: int, column: int) -> list[Any]:
        readings = frame.values[slot][:, column]
        faults = frame.faults[slot].of(column)
        onset = self.store.onset_timestamp
        return [
            *(float(value) for value in readings),
            STATE_NAMES[int(frame.state[slot][column])],
            float(frame.health[slot][column]),
            float(frame.rul_s[slot][column]),
            json.dumps([fault_json(record, onset(record.onset_s)) for record in faults]),
            frame.seq,
        ]


def _definitions(sensors: tuple[SensorSpec, ...]) -> list[MetricDefinition]:
    definitions = [
        MetricDefinition(sensor.name, alias, INT64 if sensor.integer else DOUBLE, sensor)
        for alias, sensor in enumerate(sensors, start=1)
    ]
    labels = (
        ("labels/state", STRING),
        ("labels/health", DOUBLE),
        ("labels/rul_s", DOUBLE),
        ("labels/faults", STRING),
        ("seq", UINT64),
    )
    start = len(definitions) + 1
    definitions += [
        MetricDefinition(name, alias, datatype)
        for alias, (name, datatype) in enumerate(labels, start=start)
    ]
    return definitions


def _metric(
    payload: Any, name: str | None, datatype: int, value: Any, *, alias: int | None = None
) -> Any:
    metric = payload.metrics.add()
    if name is not None:
        metric.name = name
    if alias is not None:
        metric.alias = alias
    metric.datatype = datatype
    if value is None or (isinstance(value, float) and math.isnan(value)):
        metric.is_null = True
    elif datatype == DOUBLE:
        metric.double_value = value
    elif datatype == INT64:
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF  # two's complement, as specified
    elif datatype == UINT64:
        metric.long_value = int(value)
    elif datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    else:
        metric.string_value = str(value)
    return metric


def _properties(metric: Any, sensor: SensorSpec) -> None:
    """Unit, typical range, thresholds and description, as Sparkplug properties."""
    entries: list[tuple[str, int, Any]] = [
        ("engUnit", STRING, sensor.unit),
        ("engLow", DOUBLE, sensor.typical_min),
        ("engHigh", DOUBLE, sensor.typical_max),
        ("description", STRING, sensor.description),
    ]
    if sensor.warning is not None:
        entries.append(("warning", DOUBLE, sensor.warning))
    if sensor.alarm is not None:
        entries.append(("alarm", DOUBLE, sensor.alarm))
    for key, datatype, value in entries:
        metric.properties.keys.append(key)
        property_value = metric.properties.values.add()
        property_value.type = datatype
        if datatype == DOUBLE:
            property_value.double_value = float(value)
        else:
            property_value.string_value = str(value)


def catalog_devices(catalog: FleetCatalog) -> list[tuple[int, int, str]]:
    """(slot, column, machine id) of every device, in fleet order."""
    return [(*catalog.locate(m.machine_id), m.machine_id) for m in catalog.machines]
