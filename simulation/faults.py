"""Faults: the kinds there are, how a request is checked, and the sparse table of active ones.

Physical faults act through a model's physics: the table keeps, per applicable kind, a dense
*intensity* per instance (the sum of the effective severities of that kind's active faults,
at most 1) that the model reads only when it recomputes its per-instance factors. Sensor
faults change the readings after the physics. Either way a step costs nothing when there are
no faults, and O(active faults) otherwise: the faults themselves live in a small table.

Effective severity = severity x shape(t), with t the time since onset:
``step`` 1; ``ramp`` t / ramp_s up to 1 (ramp_s = 600 s, or the duration if shorter);
``intermittent`` 1 for a share ``duty`` of each ``period`` and 0 otherwise (period 20-120 s,
duty 0.2-0.5, drawn per fault).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulation.errors import ControlError
from simulation.spec import ONSETS, SENSOR_FAULTS, FaultRequest, SensorSpec

STEP, RAMP, INTERMITTENT = range(3)  # indices into ONSETS
MAX_DURATION_S = 1e9  # s, about 30 years of simulated time
MAX_ACTIVE_FAULTS = 16  # per machine: more are refused (injected) or not drawn (spontaneous)

RAMP_S = 600.0  # s, a ramp reaches the full severity after this long (or its duration)
INTERMITTENT_PERIOD_S = (20.0, 120.0)
INTERMITTENT_DUTY = (0.2, 0.5)
BIAS_SPAN = 0.25  # bias at severity 1, as a share of the sensor's typical span
DRIFT_SPAN_PER_H = 0.5  # drift per simulated hour at severity 1, share of the span
NOISE_SPAN = 0.1  # extra noise (1 sigma) at severity 1, share of the span
SPONTANEOUS_SEVERITY = (0.2, 1.0)
SPONTANEOUS_ONSET_P = (0.4, 0.4, 0.2)  # step, ramp, intermittent
SPONTANEOUS_SENSOR_FAULT_S = (300.0, 3600.0)  # a sensor fault clears by itself after this
SPONTANEOUS_PHYSICAL_SHARE = 0.5  # of spontaneous faults, where the type has physical kinds

_COLUMNS = np.dtype(
    [
        ("instance", np.int64),
        ("code", np.int64),  # index into FaultTable.kinds: physical kinds first
        ("severity", np.float64),
        ("shape", np.int64),
        ("onset_s", np.float64),
        ("end_s", np.float64),  # inf: until cleared
        ("ramp_s", np.float64),
        ("period_s", np.float64),
        ("duty", np.float64),
        ("row", np.int64),  # sensor row, -1 for a physical fault
        ("held", np.float64),  # the value a stuck sensor repeats (NaN until known)
    ]
)
_NONE = np.empty(0, dtype=np.int64)
_STUCK, _DRIFT, _BIAS, _NOISE, _DROPOUT = range(5)  # indices into SENSOR_FAULTS
# Offset per unit of span and effective severity: bias, drift (per hour) and noise (1 sigma).
_SENSOR_SCALE = np.array([0.0, DRIFT_SPAN_PER_H, BIAS_SPAN, NOISE_SPAN, 0.0])


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRecord:
    """One active fault, as the labels and the control API report it.

    ``fault_id`` is ``"<machine type>-<n>"``, n counting that type's faults from 1: unique in
    the fleet and independent of the other machine types. ``onset_s`` is the simulated time of
    the injection (or of the spontaneous occurrence); ``sensor`` is None for physical faults.
    """

    fault_id: str
    machine_id: str
    kind: str
    severity: float
    onset: str
    onset_s: float
    duration_s: float | None
    sensor: str | None
    origin: str

    @property
    def physical(self) -> bool:
        return self.sensor is None


@dataclass(frozen=True, slots=True)
class FaultSet:
    """The active faults of one model's instances at one step, sorted by instance; immutable."""

    records: tuple[FaultRecord, ...]
    instances: np.ndarray  # int64, ascending, parallel to ``records``

    def of(self, instance: int) -> tuple[FaultRecord, ...]:
        """The faults of one instance (a machine's row in its model), oldest first."""
        first, last = np.searchsorted(self.instances, (instance, instance + 1))
        return self.records[first:last]


@dataclass(frozen=True, slots=True)
class FaultKinds:
    """The faults one machine type takes: its physical kinds (those in ``instant`` happen at
    once, so their onset is always ``step``) and the sensors a sensor fault can target."""

    type_name: str
    physical: tuple[str, ...]
    instant: frozenset[str]
    sensors: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        """Every kind: the physical ones, then the sensor ones."""
        return self.physical + SENSOR_FAULTS

    def check(self, request: FaultRequest) -> None:
        """Raise :class:`ControlError` saying what is wrong with ``request``, if anything."""
        kind, severity, onset = request.kind, request.severity, request.onset
        duration_s, sensor = request.duration_s, request.sensor
        valid = self.all
        if kind not in valid:
            raise ControlError(
                f"fault type {kind!r} does not apply to a {self.type_name}; "
                f"valid types: {', '.join(valid)}",
                field="kind",
                valid=valid,
            )
        if (
            isinstance(severity, bool)
            or not isinstance(severity, int | float)
            or not 0.0 <= severity <= 1.0
        ):
            raise ControlError(
                f"severity must be a number from 0 to 1, got {_short(severity)}", field="severity"
            )
        if onset not in ONSETS:
            raise ControlError(
                f"unknown onset {onset!r}; valid onsets: {', '.join(ONSETS)}",
                field="onset",
                valid=ONSETS,
            )
        if kind in self.instant and onset != "step":
            raise ControlError(
                f"a {kind} happens at once: its onset must be 'step', got {onset!r}",
                field="onset",
                valid=("step",),
            )
        if duration_s is not None and (
            isinstance(duration_s, bool)
            or not isinstance(duration_s, int | float)
            or not 0.0 < duration_s <= MAX_DURATION_S
        ):
            raise ControlError(
                f"duration_s must be a number of simulated seconds in (0, {MAX_DURATION_S:g}], "
                f"or omitted for a fault that lasts until it is cleared; got {_short(duration_s)}",
                field="duration_s",
            )
        if kind in SENSOR_FAULTS and sensor not in self.sensors:
            what = (
                "needs a target sensor" if sensor is None else f"names an unknown sensor {sensor!r}"
            )
            raise ControlError(
                f"a {kind} fault {what}; valid sensors of a {self.type_name}: "
                f"{', '.join(self.sensors)}",
                field="sensor",
                valid=self.sensors,
            )
        if kind in self.physical and sensor is not None:
            raise ControlError(
                f"a {kind} fault acts on the machine, not on one sensor: omit 'sensor' "
                f"(sensor faults: {', '.join(SENSOR_FAULTS)})",
                field="sensor",
            )


class FaultTable:
    """The active faults of one model: a small column table, intensities and records.

    ``kinds`` are the faults that apply to the model; ``machine_id`` names an instance for
    the records. ``rng`` draws the intermittent patterns, the noise of noise
    bursts, dropouts and spontaneous faults (the model's event stream, not its physics stream).
    """

    def __init__(
        self,
        kinds: FaultKinds,
        sensors: tuple[SensorSpec, ...],
        count: int,
        rng: np.random.Generator,
        machine_id: Callable[[int], str],
    ) -> None:
        self.type_name = kinds.type_name
        self.physical = kinds.physical
        self.instant = kinds.instant
        self.kinds = kinds.all
        self.sensor_names = tuple(sensor.name for sensor in sensors)
        self.count = count
        self.rng = rng
        self.machine_id = machine_id
        self.intensity = np.zeros((len(self.physical), count))
        self._span = np.array([sensor.typical_max - sensor.typical_min for sensor in sensors])
        self._integer = np.array([sensor.integer for sensor in sensors])
        self._rows = np.empty(0, dtype=_COLUMNS)
        self._records: list[FaultRecord] = []
        self._numbered = 0
        self._dirty = _NONE  # instances whose intensities must be recomputed
        self._physical = self._rows  # the physical faults' rows
        self._varying_rows = self._rows  # physical faults of instances with a ramp/intermittent
        self._varying_instances = _NONE  # ... and those instances
        self._sensor_rows = _NONE  # table rows of the sensor faults
        self._next_end_s = math.inf
        self._set: FaultSet | None = None

    def __len__(self) -> int:
        return len(self._records)

    # -- queries -----------------------------------------------------------------------------

    def faults(self) -> FaultSet:
        """The active faults as an immutable set; the same object until the table changes."""
        if self._set is None:
            order = np.argsort(self._rows["instance"], kind="stable")
            self._set = FaultSet(
                tuple(self._records[i] for i in order), self._rows["instance"][order]
            )
        return self._set

    def of(self, instance: int) -> tuple[FaultRecord, ...]:
        return self.faults().of(instance)

    # -- changes -----------------------------------------------------------------------------

    def add(
        self,
        instance: int,
        request: FaultRequest,
        *,
        now_s: float,
        origin: str,
        last_readings: np.ndarray | None,
    ) -> FaultRecord:
        """Add a checked fault (see :meth:`FaultKinds.check`) that starts at ``now_s``."""
        kind, severity, onset = request.kind, request.severity, request.onset
        duration_s, sensor = request.duration_s, request.sensor
        shape = ONSETS.index(onset)
        row = -1 if sensor is None else self.sensor_names.index(sensor)
        period_s, duty = 0.0, 0.0
        if shape == INTERMITTENT:
            period_s = float(self.rng.uniform(*INTERMITTENT_PERIOD_S))
            duty = float(self.rng.uniform(*INTERMITTENT_DUTY))
        held = math.nan
        if row >= 0 and last_readings is not None:
            held = float(last_readings[row, instance])
        end_s = math.inf if duration_s is None else now_s + duration_s
        ramp_s = RAMP_S if duration_s is None else min(RAMP_S, duration_s)
        entry = (
            instance,
            self.kinds.index(kind),
            severity,
            shape,
            now_s,
            end_s,
            ramp_s,
            period_s,
            duty,
            row,
            held,
        )
        self._numbered += 1
        record = FaultRecord(
            fault_id=f"{self.type_name}-{self._numbered}",
            machine_id=self.machine_id(instance),
            kind=kind,
            severity=float(severity),
            onset=onset,
            onset_s=round(now_s, 6),
            duration_s=None if duration_s is None else float(duration_s),
            sensor=sensor,
            origin=origin,
        )
        self._rows = np.concatenate([self._rows, np.array([entry], dtype=_COLUMNS)])
        self._records.append(record)
        self._changed()
        return record

    def remove(self, instance: int, fault_id: str) -> FaultRecord | None:
        """Clear one fault of ``instance`` by id; None if it has no such active fault."""
        for index, record in enumerate(self._records):
            if record.fault_id == fault_id and self._rows["instance"][index] == instance:
                self._drop(np.arange(len(self._records)) == index)
                return record
        return None

    def clear(self, idx: np.ndarray, kinds: tuple[str, ...] | None = None) -> None:
        """Clear the faults of instances ``idx`` (of ``kinds`` only, if given)."""
        if not self._records:
            return
        drop = np.isin(self._rows["instance"], idx)
        if kinds is not None:
            drop &= np.isin(self._rows["code"], [self.kinds.index(kind) for kind in kinds])
        if drop.any():
            self._drop(drop)

    def expire(self, now_s: float) -> None:
        """Clear the faults whose duration has run out by ``now_s``."""
        if now_s >= self._next_end_s:
            self._drop(self._rows["end_s"] <= now_s)

    def draw_spontaneous(self, rate_per_h: float, dt_s: float) -> list[tuple[int, FaultRequest]]:
        """Faults that occur by chance in a step, as ``(instance, request)`` pairs.

        Each instance fails at ``rate_per_h`` per simulated hour (a Poisson process); half the
        faults are physical (where the type has physical kinds), half are sensor faults that
        clear by themselves after 5 to 60 minutes. Physical faults last until maintained.
        """
        rng = self.rng
        drawn: list[tuple[int, FaultRequest]] = []
        for _ in range(rng.poisson(rate_per_h * self.count * dt_s / 3600.0)):
            instance = int(rng.integers(self.count))
            physical = bool(self.physical) and rng.random() < SPONTANEOUS_PHYSICAL_SHARE
            kinds = self.physical if physical else SENSOR_FAULTS
            kind = kinds[int(rng.integers(len(kinds)))]
            severity = round(float(rng.uniform(*SPONTANEOUS_SEVERITY)), 3)
            onset = ONSETS[int(rng.choice(len(ONSETS), p=SPONTANEOUS_ONSET_P))]
            if kind in self.instant:
                onset = "step"
            duration_s, sensor = None, None
            if not physical:
                duration_s = round(float(rng.uniform(*SPONTANEOUS_SENSOR_FAULT_S)))
                sensor = self.sensor_names[int(rng.integers(len(self.sensor_names)))]
            request = FaultRequest(
                kind=kind, severity=severity, onset=onset, duration_s=duration_s, sensor=sensor
            )
            drawn.append((instance, request))
        return drawn

    # -- effects -----------------------------------------------------------------------------

    def update_intensity(self, now_s: float) -> np.ndarray:
        """Recompute the intensities that may have changed; return those instances (sorted)."""
        if self._dirty.size:
            touched = np.union1d(self._dirty, self._varying_instances)
            rows = self._physical[np.isin(self._physical["instance"], touched)]
            self._dirty = _NONE
        elif self._varying_instances.size:
            touched, rows = self._varying_instances, self._varying_rows
        else:
            return _NONE
        self.intensity[:, touched] = 0.0
        effective = rows["severity"] * self._shape(rows, now_s)
        np.add.at(self.intensity, (rows["code"], rows["instance"]), effective)
        self.intensity[:, touched] = np.minimum(self.intensity[:, touched], 1.0)
        return touched

    def apply_to_readings(self, readings: np.ndarray, now_s: float) -> None:
        """Let the sensor faults change this step's ``readings`` (sensors, count) in place."""
        if self._sensor_rows.size == 0:
            return
        held_unknown = self._sensor_rows[np.isnan(self._rows["held"][self._sensor_rows])]
        if held_unknown.size:  # a stuck value not yet known: the first reading after onset
            unknown = self._rows[held_unknown]
            self._rows["held"][held_unknown] = readings[unknown["row"], unknown["instance"]]
        rows = self._rows[self._sensor_rows]
        code = rows["code"] - len(self.physical)  # index into SENSOR_FAULTS
        effective = rows["severity"] * self._shape(rows, now_s)
        scale = self._span[rows["row"]] * effective
        scale *= _SENSOR_SCALE[code]
        drift = code == _DRIFT
        scale[drift] *= (now_s - rows["onset_s"][drift]) / 3600.0
        noise = np.flatnonzero(code == _NOISE)
        scale[noise] *= self.rng.standard_normal(noise.size)
        at = (rows["row"], rows["instance"])
        np.add.at(readings, at, scale)
        stuck = (code == _STUCK) & (effective > 0.0)
        readings[at[0][stuck], at[1][stuck]] = rows["held"][stuck]
        dropout = np.flatnonzero(code == _DROPOUT)
        dropped = dropout[self.rng.random(dropout.size) < effective[dropout]]
        readings[at[0][dropped], at[1][dropped]] = np.nan
        integer = self._integer[rows["row"]]
        if integer.any():
            rounded = (at[0][integer], at[1][integer])
            readings[rounded] = np.round(readings[rounded])

    # -- internals ---------------------------------------------------------------------------

    def _shape(self, rows: np.ndarray, now_s: float) -> np.ndarray:
        """The onset shape factor (0..1) of each fault in ``rows`` at ``now_s``."""
        elapsed = now_s - rows["onset_s"]
        factor = np.ones(rows.size)
        ramp = rows["shape"] == RAMP
        factor[ramp] = np.clip(elapsed[ramp] / rows["ramp_s"][ramp], 0.0, 1.0)
        burst = rows["shape"] == INTERMITTENT
        period = rows["period_s"][burst]
        factor[burst] = np.fmod(elapsed[burst], period) < rows["duty"][burst] * period
        return factor

    def _drop(self, drop: np.ndarray) -> None:
        physical = drop & (self._rows["code"] < len(self.physical))
        self._dirty = np.union1d(self._dirty, self._rows["instance"][physical])
        self._rows = self._rows[~drop]
        self._records = [
            record for record, gone in zip(self._records, drop, strict=True) if not gone
        ]
        self._changed()

    def _changed(self) -> None:
        rows = self._rows
        physical = rows["code"] < len(self.physical)
        self._physical = rows[physical]
        self._dirty = np.union1d(self._dirty, self._physical["instance"])
        varying = self._physical["shape"] != STEP
        self._varying_instances = np.unique(self._physical["instance"][varying])
        self._varying_rows = self._physical[
            np.isin(self._physical["instance"], self._varying_instances)
        ]
        self._sensor_rows = np.flatnonzero(~physical)
        self._next_end_s = float(rows["end_s"].min()) if rows.size else math.inf
        self._set = None


def _short(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 4,000-digit number is not echoed)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
