"""Ground-truth labels in snapshots: state, health, remaining useful life and active faults.

Labels are what the simulation knows and a real plant would not tell: an ML model under
test must not see them as input (``docs/labels.md``). They follow the sensors in every
snapshot and can be left out by asking for ``fields`` without them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from simulation import Frame
from simulation.faults import FaultRecord
from simulation.spec import STATE_NAMES

LABEL_FIELDS = ("state", "health", "rul_s", "faults")

OnsetStamp = Callable[[float], str]  # simulated onset time -> ISO timestamp


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


def label_json(
    frame: Frame, slot: int, row: int, wanted: tuple[str, ...], stamp: OnsetStamp
) -> str:
    """``,"state":...`` fragments of the wanted labels, to close a snapshot with."""
    parts = []
    for name in wanted:
        if name == "state":
            parts.append(f',"state":"{STATE_NAMES[frame.state[slot][row]]}"')
        elif name == "health":
            parts.append(f',"health":{frame.health[slot][row]:.4f}')
        elif name == "rul_s":
            rul_s = float(frame.rul_s[slot][row])
            parts.append(f',"rul_s":{"null" if math.isnan(rul_s) else f"{rul_s:.0f}"}')
        else:
            faults = [fault_json(r, stamp(r.onset_s)) for r in frame.faults[slot].of(row)]
            parts.append(f',"faults":{json.dumps(faults, separators=(",", ":"))}')
    return "".join(parts)


def label_cells(frame: Frame, slot: int, row: int, wanted: tuple[str, ...]) -> list[str]:
    """CSV cells of the wanted labels; faults as ``id:type:severity`` joined by ``;``."""
    cells = []
    for name in wanted:
        if name == "state":
            cells.append(STATE_NAMES[frame.state[slot][row]])
        elif name == "health":
            cells.append(f"{frame.health[slot][row]:.4f}")
        elif name == "rul_s":
            rul_s = float(frame.rul_s[slot][row])
            cells.append("" if math.isnan(rul_s) else f"{rul_s:.0f}")
        else:
            records = frame.faults[slot].of(row)
            cells.append(";".join(f"{r.fault_id}:{r.kind}:{r.severity:g}" for r in records))
    return cells
