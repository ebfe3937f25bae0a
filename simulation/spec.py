"""The simulation's vocabulary, stated once: sensors, states, commands, labels, fault requests.

Everything here is plain, frozen data that every other layer (the models, the fault table,
the fleet catalog, the server's encoders, the export) reads instead of restating it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorSpec:
    """One output channel of a model: its seed name, unit, typical range and thresholds.

    ``warning`` and ``alarm`` are upper thresholds (None where a sensor has none); an
    alarm-level reading puts an operating machine in the ``warning`` state for a few seconds.
    ``grafana_unit`` is the unit id a Grafana field config uses.
    """

    name: str
    unit: str
    description: str
    typical_min: float
    typical_max: float
    decimals: int = 2
    integer: bool = False
    warning: float | None = None
    alarm: float | None = None
    grafana_unit: str = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class DutyCycle:
    """Ranges in seconds from which run periods, idle gaps and maintenance times are drawn."""

    run_s: tuple[float, float]
    idle_s: tuple[float, float]
    maintenance_s: tuple[float, float]


class State(IntEnum):
    """State codes of the ``state`` label (an int8 per machine)."""

    RUNNING = 0
    IDLE = 1
    WARNING = 2
    FAULT = 3
    MAINTENANCE = 4


STATE_NAMES: tuple[str, ...] = tuple(state.name.lower() for state in State)
COMMANDS: tuple[str, ...] = ("start", "stop", "maintain", "reset")
SENSOR_FAULTS: tuple[str, ...] = ("stuck", "drift", "bias", "noise", "dropout")
ONSETS: tuple[str, ...] = ("step", "ramp", "intermittent")

LabelKind = Literal["category", "float", "faults"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelSpec:
    """One ground-truth label: a field of every :class:`~simulation.fleet.Frame` beside the
    telemetry, and of every snapshot, CSV row and exported row.

    ``kind``: ``category`` (int8 codes into ``categories``), ``float`` (float64, NaN where
    undefined, shown with ``decimals``) or ``faults`` (the active fault records).
    """

    name: str
    kind: LabelKind
    unit: str
    description: str
    categories: tuple[str, ...] = ()
    decimals: int = 0


LABELS: tuple[LabelSpec, ...] = (
    LabelSpec(
        name="state",
        kind="category",
        unit="",
        description="Operating state: " + ", ".join(STATE_NAMES),
        categories=STATE_NAMES,
    ),
    LabelSpec(
        name="health",
        kind="float",
        unit="1",
        description="Hidden health of the wearing part: 1 new, 0 failed",
        decimals=4,
    ),
    LabelSpec(
        name="rul_s",
        kind="float",
        unit="s",
        description="Remaining useful life in running seconds at the nominal duty; "
        "null where undefined",
        decimals=0,
    ),
    LabelSpec(
        name="faults",
        kind="faults",
        unit="",
        description="Active faults, oldest first: id, kind, severity, onset shape and time, "
        "duration, target sensor of a sensor fault, origin",
    ),
)
LABEL_NAMES: tuple[str, ...] = tuple(label.name for label in LABELS)


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRequest:
    """What to inject: ``kind`` of fault, ``severity`` 0..1, ``onset`` shape (``step``,
    ``ramp`` or ``intermittent``), ``duration_s`` in simulated seconds (None: until cleared
    or maintained) and, for a sensor fault, the target ``sensor``.

    The values are checked where the request is carried out (a model knows its kinds and
    sensors), so a request may be built from untrusted input as it is.
    """

    kind: str
    severity: float
    onset: str = "step"
    duration_s: float | None = None
    sensor: str | None = None
