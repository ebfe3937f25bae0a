"""The pure half of the export: what to simulate, which columns, and the numpy batches.

Nothing here touches a file, a clock or a thread: given a plan (fleet, seed, rate,
duration) :func:`iter_type_batches` steps one machine type's instances and yields its
samples as column arrays, ``(steps x machines)`` blocks flattened step-major, so the rows
of one file run ``seq 1: machine 0..n-1, seq 2: machine 0..n-1, ...``. The I/O shell
(:mod:`server.export.runner`) turns them into Arrow batches and writes them.

Each machine type is simulated by its own :class:`~simulation.Fleet` holding only that
type's machines. That is exact, not an approximation: a fleet draws each type's random
stream from the seed and the type name alone, so a type's samples do not depend on the
other types (``tests/test_fleet.py`` holds the fleet to that, ``tests/test_export.py``
compares an export with stepping the whole fleet). It lets the types run in parallel.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from simulation.faults import FaultRecord, FaultSet
from simulation.fleet import DEFAULT_REPAIR_AFTER_S, Fleet, Frame
from simulation.fleet_spec import MAX_FLEET_SIZE, FleetSpec, MachineSpec
from simulation.models import MODEL_TYPES
from simulation.scenario import Action, Event, Timeline, carry_out
from simulation.spec import LABELS, LabelSpec, SensorSpec

MAX_RATE_HZ = 1000.0
MAX_STEPS = 10**9  # a guard against a typo like --duration 1000d --rate 1000
ROWS_PER_BATCH = 1 << 20  # rows of one record batch and one Parquet row group
MAX_STEPS_PER_BATCH = 1 << 16  # keeps progress moving for small fleets
DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: simulated time 0, in Unix ms
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# The fields of one entry of the ``faults`` label, with their Arrow types.
FAULT_FIELDS = (
    ("fault_id", "string"),
    ("kind", "string"),
    ("sensor", "string"),
    ("severity", "float64"),
    ("onset", "string"),
    ("onset_s", "float64"),
    ("duration_s", "float64"),
    ("origin", "string"),
)
FAULTS_DTYPE = "list<struct<" + ", ".join(f"{n}: {t}" for n, t in FAULT_FIELDS) + ">>"
_LABEL_DTYPES = {"category": np.int8, "float": np.float64}  # as a Frame holds them

Role = Literal["key", "time", "sensor", "label"]


class ExportPlanError(ValueError):
    """Export arguments that cannot be used; the message says what is wrong and what is valid."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ColumnSpec:
    """One column of a machine type's file.

    ``dtype`` is the Arrow type's name (``float32``, ``int64``, ``float64``,
    ``timestamp[ms, tz=UTC]``, ``dictionary<values=string, indices=int32>``);
    ``role`` tells keys and time apart from telemetry (``sensor``) and ground truth (``label``).
    ``categories`` is the fixed dictionary of a categorical label (index = the code).
    """

    name: str
    dtype: str
    role: Role
    unit: str = ""
    description: str = ""
    decimals: int | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportPlan:
    """What one export simulates: build it with :func:`make_plan`, which checks every value."""

    fleet: FleetSpec
    seed: int
    rate_hz: float
    duration_s: float
    steps: int
    start_ms: int = DEFAULT_START_MS
    fault_rate_per_h: float = 0.0
    repair_after_s: float | None = DEFAULT_REPAIR_AFTER_S
    scenario: tuple[Action, ...] = ()  # changes made at tick boundaries, as the server does

    @property
    def dt_s(self) -> float:
        """The simulation step: one output sample per machine per step."""
        return 1.0 / self.rate_hz

    @property
    def samples(self) -> int:
        """Machine-samples (rows) over all files."""
        return self.steps * len(self.fleet)

    def machine_types(self) -> tuple[str, ...]:
        """The fleet's machine types, sorted: one file each."""
        return tuple(sorted({machine.machine_type for machine in self.fleet.machines}))

    def type_fleet(self, machine_type: str) -> FleetSpec:
        """The machines of one type, in fleet order."""
        return FleetSpec(tuple(m for m in self.fleet.machines if m.machine_type == machine_type))


@dataclass(frozen=True, slots=True)
class FaultEntries:
    """A batch's active-faults label as a flat list column.

    Row ``r``'s faults are ``records[record_index[offsets[r]:offsets[r + 1]]]``: ``offsets``
    (int32, rows + 1), ``record_index`` (int32, one per list element) and ``records`` (the
    distinct fault records of the batch, each converted once however many rows share it).
    """

    offsets: np.ndarray
    record_index: np.ndarray
    records: tuple[FaultRecord, ...]


Column = tuple[np.ndarray, np.ndarray | None]


@dataclass(frozen=True, slots=True)
class TypeBatch:
    """``steps`` consecutive steps of one machine type, ``steps * count`` rows.

    ``columns`` maps every array column of :func:`type_columns` except ``machine_id`` to
    ``(values, nulls)``: a 1-D array and a boolean null mask, or ``None`` when no value
    is null; ``faults`` holds the list columns. ``machine_index`` is the row's machine
    (0..count-1, fleet order); the ``machine_id`` column is the fleet's ids indexed by it.
    """

    machine_type: str
    first_seq: int
    steps: int
    count: int
    machine_index: np.ndarray
    columns: dict[str, Column]
    faults: dict[str, FaultEntries]
    events: tuple[Event, ...] = ()  # a scenario's changes made before the batch's first step

    @property
    def rows(self) -> int:
        return self.steps * self.count


# ---------------------------------------------------------------------------- arguments
def parse_duration(text: str) -> float:
    """Seconds from ``3600``, ``90s``, ``90m``, ``24h``, ``1d`` or ``1.5h``."""
    match = _DURATION.match(text)
    if match is None:
        raise ExportPlanError(
            f"invalid duration {text!r}; give seconds or a number with a unit s, m, h or d "
            "(e.g. 3600, 90m, 24h, 1d)"
        )
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not seconds > 0:
        raise ExportPlanError(f"duration must be positive, got {text!r}")
    return seconds


def synthetic_fleet(count: int, types: tuple[str, ...] | None = None) -> FleetSpec:
    """``count`` machines in equal shares of ``types`` (all model types by default).

    The first types in sorted order take the remainder; ids are ``<type>_<number>`` from 1,
    zero-padded as a fleet file's ``count`` groups are.
    """
    if not 1 <= count <= MAX_FLEET_SIZE:
        raise ExportPlanError(f"machine count must be from 1 to {MAX_FLEET_SIZE:,}, got {count:,}")
    names = tuple(sorted(MODEL_TYPES if types is None else types))
    share, remainder = divmod(count, len(names))
    machines: list[MachineSpec] = []
    for position, name in enumerate(names):
        type_count = share + (position < remainder)
        width = max(2, len(str(type_count)))
        machines += [
            MachineSpec(f"{name}_{number:0{width}d}", name) for number in range(1, type_count + 1)
        ]
    return FleetSpec(tuple(machines))


def make_plan(
    fleet: FleetSpec,
    *,
    seed: int,
    rate_hz: float,
    duration_s: float,
    start_ms: int = DEFAULT_START_MS,
    fault_rate_per_h: float = 0.0,
    repair_after_s: float | None = DEFAULT_REPAIR_AFTER_S,
) -> ExportPlan:
    """Check the arguments and count the steps; the duration must be whole steps."""
    if seed < 0:
        raise ExportPlanError(f"seed must be a non-negative integer, got {seed}")
    if not (math.isfinite(fault_rate_per_h) and fault_rate_per_h >= 0):
        raise ExportPlanError(
            "fault rate must be a finite number >= 0 (spontaneous faults per machine per "
            f"simulated hour), got {fault_rate_per_h:g}"
        )
    if repair_after_s is not None and not (math.isfinite(repair_after_s) and repair_after_s >= 0):
        raise ExportPlanError(
            "repair delay must be a finite number of simulated seconds >= 0 (0: no automatic "
            f"repairs), got {repair_after_s:g}"
        )
    if not (math.isfinite(rate_hz) and 0 < rate_hz <= MAX_RATE_HZ):
        raise ExportPlanError(f"rate must be in (0, {MAX_RATE_HZ:g}] Hz, got {rate_hz:g}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ExportPlanError(f"duration must be a positive number of seconds, got {duration_s}")
    exact_steps = duration_s * rate_hz
    steps = round(exact_steps)
    if steps < 1 or abs(exact_steps - steps) > 1e-9 * max(1.0, exact_steps):
        raise ExportPlanError(
            f"duration {duration_s:g} s at {rate_hz:g} Hz is {exact_steps:g} steps; "
            "give a duration that is a whole number of steps (duration x rate)"
        )
    if steps > MAX_STEPS:
        raise ExportPlanError(f"{steps:,} steps is more than the limit of {MAX_STEPS:,}")
    unknown = sorted({m.machine_type for m in fleet.machines} - set(MODEL_TYPES))
    if unknown:
        raise ExportPlanError(f"unknown machine type(s) {unknown}; valid: {sorted(MODEL_TYPES)}")
    return ExportPlan(
        fleet=fleet,
        seed=seed,
        rate_hz=rate_hz,
        duration_s=duration_s,
        steps=steps,
        start_ms=start_ms,
        fault_rate_per_h=fault_rate_per_h,
        repair_after_s=repair_after_s or None,
    )


# ------------------------------------------------------------------------------ columns
KEY_COLUMNS = (
    ColumnSpec(
        name="machine_id",
        dtype="dictionary<values=string, indices=int32>",
        role="key",
        description="Machine id, as in the fleet",
    ),
    ColumnSpec(
        name="seq",
        dtype="int64",
        role="time",
        description="Step number from 1, the same for every machine at one instant",
    ),
    ColumnSpec(
        name="time_s",
        dtype="float64",
        role="time",
        unit="s",
        description="Simulated seconds since the start: seq x dt_s (dt_s = 1 / rate)",
    ),
    ColumnSpec(
        name="timestamp",
        dtype="timestamp[ms, tz=UTC]",
        role="time",
        description="Simulated wall time: the plan's start plus time_s, in milliseconds",
    ),
)


def sensor_column(sensor: SensorSpec) -> ColumnSpec:
    """A sensor as a column: integer counters as ``int64``, the rest as ``float32``."""
    return ColumnSpec(
        name=sensor.name,
        dtype="int64" if sensor.integer else "float32",
        role="sensor",
        unit=sensor.unit,
        description=sensor.description,
        decimals=0 if sensor.integer else sensor.decimals,
    )


def type_columns(machine_type: str) -> tuple[ColumnSpec, ...]:
    """Every column of one machine type's file, in file order: keys, time, sensors, labels."""
    model = MODEL_TYPES[machine_type]
    sensors = tuple(sensor_column(sensor) for sensor in model.SENSORS)
    return KEY_COLUMNS + sensors + tuple(_label_column(label) for label in LABELS)


def _label_column(label: LabelSpec) -> ColumnSpec:
    """A label as a column: categories as a dictionary, floats as float32, faults as lists."""
    dtype = {
        "category": "dictionary<values=string, indices=int8>",
        "float": "float32",
        "faults": FAULTS_DTYPE,
    }[label.kind]
    return ColumnSpec(
        name=label.name,
        dtype=dtype,
        role="label",
        unit=label.unit,
        description=label.description,
        categories=label.categories,
    )


# ------------------------------------------------------------------------------ batches
def steps_per_batch(count: int, steps: int) -> int:
    """About :data:`ROWS_PER_BATCH` rows per batch, never more, at least one step."""
    return max(1, min(steps, MAX_STEPS_PER_BATCH, ROWS_PER_BATCH // count))


class _Buffers:
    """Preallocated ``(steps x count)`` blocks that one batch of steps is copied into."""

    def __init__(self, sensors: int, steps: int, count: int) -> None:
        self.readings = np.empty((sensors, steps, count))
        self.arrays = {
            label.name: np.empty((steps, count), dtype=_LABEL_DTYPES[label.kind])
            for label in LABELS
            if label.kind != "faults"
        }
        self.fault_fields = tuple(label.name for label in LABELS if label.kind == "faults")
        # Per fault field: (step, set) whenever the set differs from the step before.
        self.fault_changes: dict[str, list[tuple[int, FaultSet]]] = {}

    def fill(self, frames: Iterable[Frame], slot: int = 0) -> None:
        """The hot loop: a few copies of slot ``slot`` of each frame (a fleet stepping, or
        frames that come from elsewhere), nothing else."""
        readings, arrays = self.readings, tuple(self.arrays.items())
        changes: dict[str, list[tuple[int, FaultSet]]] = {name: [] for name in self.fault_fields}
        last: dict[str, FaultSet | None] = dict.fromkeys(self.fault_fields)
        for index, frame in enumerate(frames):
            readings[:, index] = frame.values[slot]
            for name, block in arrays:
                block[index] = getattr(frame, name)[slot]
            for name, found in changes.items():
                fault_set = getattr(frame, name)[slot]
                if fault_set is not last[name]:  # a fault set is the same object until it changes
                    found.append((index, fault_set))
                    last[name] = fault_set
        self.fault_changes = changes


def iter_type_batches(plan: ExportPlan, machine_type: str) -> Iterator[TypeBatch]:
    """Step one machine type through the whole plan, yielding column batches in seq order."""
    spec = plan.type_fleet(machine_type)
    fleet = Fleet(
        spec,
        seed=plan.seed,
        dt_s=plan.dt_s,
        fault_rate_per_h=plan.fault_rate_per_h,
        repair_after_s=plan.repair_after_s,
    )
    sensors = MODEL_TYPES[machine_type].SENSORS
    count = len(spec)
    batch_steps = steps_per_batch(count, plan.steps)
    buffers = _Buffers(len(sensors), batch_steps, count)
    machine_index = np.tile(np.arange(count, dtype=np.int32), batch_steps)
    timeline = Timeline(plan.scenario)
    ours = {machine.machine_id for machine in spec.machines}
    done = 0
    while done < plan.steps:
        first_seq = fleet.seq + 1
        events = tuple(
            event
            for occurrence in timeline.due(first_seq)
            for event in carry_out(occurrence, fleet, machines=ours, markers=False)
        )
        steps = min(batch_steps, plan.steps - done)
        upcoming = timeline.upcoming(1)
        if upcoming:  # a batch ends before the next change, which is made between two steps
            steps = min(steps, upcoming[0].seq - first_seq)
        buffers.fill(fleet.step() for _ in range(steps))
        columns = _time_columns(plan, first_seq, steps, count)
        values, faults = _value_columns(buffers, sensors, steps, count)
        columns |= values
        rows = steps * count
        yield TypeBatch(
            machine_type, first_seq, steps, count, machine_index[:rows], columns, faults, events
        )
        done += steps


def _value_columns(
    buffers: _Buffers, sensors: tuple[SensorSpec, ...], steps: int, count: int
) -> tuple[dict[str, Column], dict[str, FaultEntries]]:
    """The sensor and label columns of the ``steps`` filled, and the faults list columns."""
    columns = _sensor_columns(sensors, buffers.readings[:, :steps])
    columns |= {name: _label_values(block[:steps]) for name, block in buffers.arrays.items()}
    faults = {
        name: _fault_entries(found, steps, count) for name, found in buffers.fault_changes.items()
    }
    return columns, faults


def _time_columns(plan: ExportPlan, first_seq: int, steps: int, count: int) -> dict[str, Column]:
    seq = np.arange(first_seq, first_seq + steps, dtype=np.int64)
    time_s = seq * plan.dt_s  # the same product as Frame.time_s
    timestamp_ms = plan.start_ms + np.rint(time_s * 1000.0).astype(np.int64)
    return {
        "seq": (np.repeat(seq, count), None),
        "time_s": (np.repeat(time_s, count), None),
        "timestamp": (np.repeat(timestamp_ms, count), None),
    }


def _sensor_columns(sensors: tuple[SensorSpec, ...], block: np.ndarray) -> dict[str, Column]:
    """Each sensor rounded to the resolution it reports (its ``decimals``), NaN as null."""
    columns: dict[str, Column] = {}
    for sensor, readings in zip(sensors, block, strict=True):
        flat = readings.reshape(-1)
        mask = _nulls(flat)
        if sensor.integer:
            values = np.rint(flat)
            if mask is not None:
                values[mask] = 0.0
            columns[sensor.name] = (values.astype(np.int64), mask)
        else:
            columns[sensor.name] = (np.round(flat, sensor.decimals).astype(np.float32), mask)
    return columns


def _label_values(block: np.ndarray) -> Column:
    """A label array as a column: floats as float32 (NaN as null), other dtypes unchanged."""
    flat = block.reshape(-1)
    if flat.dtype.kind == "f":
        return flat.astype(np.float32), _nulls(flat)
    return flat.copy(), None


def _nulls(values: np.ndarray) -> np.ndarray | None:
    nulls = np.isnan(values)
    return nulls if nulls.any() else None


def _fault_entries(changes: list[tuple[int, FaultSet]], steps: int, count: int) -> FaultEntries:
    """Flatten runs of steps that share one fault set into list offsets, with numpy."""
    records: list[FaultRecord] = []
    rows: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    indices: list[np.ndarray] = [np.empty(0, dtype=np.int32)]
    ends = [index for index, _ in changes[1:]] + [steps]
    for (first, fault_set), end in zip(changes, ends, strict=True):
        if not fault_set.records:
            continue
        base = len(records)
        records += fault_set.records
        step_rows = np.arange(first, end, dtype=np.int64)[:, None] * count
        rows.append((step_rows + fault_set.instances[None, :]).reshape(-1))
        entries = np.arange(base, len(records), dtype=np.int32)
        indices.append(np.tile(entries, end - first))
    offsets = np.zeros(steps * count + 1, dtype=np.int32)
    if records:  # most batches have none: every list is empty
        np.cumsum(np.bincount(np.concatenate(rows), minlength=steps * count), out=offsets[1:])
    return FaultEntries(offsets, np.concatenate(indices), tuple(records))


class FrameBatcher:
    """One machine type's batches, in the export's columns, from frames of a whole fleet
    (slot ``slot`` of each): what a recorder of a live stream writes."""

    def __init__(self, machine_type: str, slot: int, count: int, max_steps: int) -> None:
        self.machine_type, self.slot, self.count = machine_type, slot, count
        self.sensors = MODEL_TYPES[machine_type].SENSORS
        self.max_steps = max(1, max_steps)
        self._buffers = _Buffers(len(self.sensors), self.max_steps, count)
        self._machine_index = np.tile(np.arange(count, dtype=np.int32), self.max_steps)

    def batch(self, frames: list[Frame], timestamps_ms: list[int]) -> TypeBatch:
        """The rows of ``frames`` (at most ``max_steps``, any seqs in ascending order), each
        stamped with its epoch time in ms."""
        steps, count = len(frames), self.count
        buffers = self._buffers
        buffers.fill(frames, self.slot)
        seq = np.array([frame.seq for frame in frames], dtype=np.int64)
        time_s = np.array([frame.time_s for frame in frames])
        columns: dict[str, Column] = {
            "seq": (np.repeat(seq, count), None),
            "time_s": (np.repeat(time_s, count), None),
            "timestamp": (np.repeat(np.array(timestamps_ms, dtype=np.int64), count), None),
        }
        values, faults = _value_columns(buffers, self.sensors, steps, count)
        columns |= values
        index = self._machine_index[: steps * count]
        return TypeBatch(self.machine_type, int(seq[0]), steps, count, index, columns, faults)
