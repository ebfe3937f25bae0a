"""Ground-truth labels in snapshots and CSV rows, formatted from the label catalogue.

Labels are what the simulation knows and a real plant would not tell: an ML model under
test must not see them as input (``docs/labels.md``). They follow the sensors in every
snapshot and can be left out by asking for ``fields`` without them. Which labels there are,
and how each is shown, comes from :data:`simulation.spec.LABELS` (through the catalog).

A fault's JSON here is the REST and WebSocket shape, fixed by the API: its ``id`` is the
record's ``fault_id`` and its ``type`` the record's ``kind``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from server.encoding import iso_timestamp
from simulation import Frame
from simulation.faults import FaultRecord
from simulation.spec import LabelSpec


def fault_json(record: FaultRecord, onset_timestamp: str) -> dict[str, Any]:
    return {
        "id": record.fault_id,
        "type": record.kind,
        "severity": record.severity,
        "onset": record.onset,
        "onset_time": onset_timestamp,
        "onset_s": record.onset_s,
        "duration_s": record.duration_s,
        "sensor": record.sensor,
        "origin": record.origin,
    }


class LabelEncoder:
    """Writes a machine's labels of one frame as JSON pairs or CSV cells."""

    def __init__(self, labels: tuple[LabelSpec, ...]) -> None:
        self.specs = {label.name: label for label in labels}
        self.names = tuple(self.specs)

    def wanted(self, fields: tuple[str, ...] | None) -> tuple[str, ...]:
        """The labels a variant carries: all of them, or those named in its fields."""
        return self.names if fields is None else tuple(n for n in self.names if n in fields)

    def json(
        self, frame: Frame, slot: int, column: int, wanted: tuple[str, ...], epoch_offset_s: float
    ) -> str:
        """``,"state":...`` pairs of the wanted labels, to close a snapshot with.

        ``epoch_offset_s`` turns a fault's simulated onset into epoch seconds.
        """
        parts = []
        for name in wanted:
            label = self.specs[name]
            value = getattr(frame, name)[slot]
            if label.kind == "category":
                parts.append(f',"{name}":"{label.categories[value[column]]}"')
            elif label.kind == "float":
                parts.append(f',"{name}":{_number(float(value[column]), label.decimals, "null")}')
            else:
                faults = [
                    fault_json(record, iso_timestamp(epoch_offset_s + record.onset_s))
                    for record in value.of(column)
                ]
                parts.append(f',"{name}":{json.dumps(faults, separators=(",", ":"))}')
        return "".join(parts)

    def cells(
        self, frame: Frame, slot: int, column: int, wanted: tuple[str, ...]
    ) -> tuple[str, ...]:
        """CSV cells of the wanted labels; faults as ``id:kind:severity`` joined by ``;``."""
        cells = []
        for name in wanted:
            label = self.specs[name]
            value = getattr(frame, name)[slot]
            if label.kind == "category":
                cells.append(label.categories[value[column]])
            elif label.kind == "float":
                cells.append(_number(float(value[column]), label.decimals, ""))
            else:
                records = value.of(column)
                cells.append(";".join(f"{r.fault_id}:{r.kind}:{r.severity:g}" for r in records))
        return tuple(cells)


def _number(value: float, decimals: int, missing: str) -> str:
    return missing if math.isnan(value) else f"{value:.{decimals}f}"
