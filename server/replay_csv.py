"""``--replay mapping.toml``: a user's own CSV files, served on the tick clock.

The mapping names each machine, its type (whose sensors, units and thresholds it takes), its
file and which column holds which sensor::

    rate_hz = 1            # the replay's tick clock (default 1)
    max_gap_s = 5          # a reading older than this is missing (default: 2 ticks)

    [[machines]]
    id = "press_1"
    type = "robotic_arm"
    file = "press_1.csv"   # relative to the mapping file
    timestamp = "time"     # ISO-8601 or epoch seconds (default column: timestamp)
    [machines.sensors]     # sensor = column (default: the sensor's own name)
    temperature_core = "temp_c"

Tick k serves, for each sensor, the latest reading at or before ``t0 + k / rate_hz`` (``t0``
the earliest timestamp of all files) if it is at most ``max_gap_s`` old; else null. Nothing is
interpolated or invented. A user's data carries no ground truth: ``state`` is reported as
``running``, ``health`` and ``rul_s`` as null, no faults.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from server.replay import ReplayError
from server.source import SourceExhaustedError
from simulation import Frame
from simulation.catalog import FleetCatalog
from simulation.faults import FaultSet
from simulation.fleet import catalog_of
from simulation.fleet_spec import FleetSpec, MachineSpec
from simulation.spec import State

MACHINE_KEYS = ("id", "type", "file", "timestamp", "sensors")


@dataclass(frozen=True, slots=True)
class _Series:
    """One machine's readings: sorted epoch seconds, and per sensor its values (NaN: none)."""

    times: np.ndarray
    values: np.ndarray  # (sensors, samples)


class CsvReplaySource:
    """Frames from a user's CSV files through a mapping (a :class:`~server.source.FrameSource`)."""

    def __init__(self, mapping: Path, *, start_s: float = 0.0, loop: bool = False) -> None:
        document = _read_mapping(mapping)
        rate_hz = document.get("rate_hz", 1.0)
        if not isinstance(rate_hz, int | float) or not 0 < rate_hz <= 100:
            raise ReplayError(f"{mapping}: rate_hz must be in (0, 100], got {rate_hz!r}")
        self.dt_s = 1.0 / rate_hz
        max_gap_s = document.get("max_gap_s", 2 * self.dt_s)
        if not isinstance(max_gap_s, int | float) or max_gap_s < 0:
            raise ReplayError(f"{mapping}: max_gap_s must be seconds, got {max_gap_s!r}")
        self.max_gap_s = float(max_gap_s)
        entries = document.get("machines")
        if not isinstance(entries, list) or not entries:
            raise ReplayError(f"{mapping}: no [[machines]] entries")
        machines = []
        for number, entry in enumerate(entries, start=1):
            if not isinstance(entry, dict) or not {"id", "type", "file"} <= set(entry):
                raise ReplayError(f"{mapping}: machines entry {number}: give id, type and file")
            unknown = sorted(set(entry) - set(MACHINE_KEYS))
            if unknown:
                raise ReplayError(f"{mapping}: machines entry {number}: unknown key(s) {unknown}")
            machines.append(MachineSpec(str(entry["id"]), str(entry["type"])))
        try:
            self.catalog: FleetCatalog = catalog_of(FleetSpec(tuple(machines)), seed=0,
                                                    dt_s=self.dt_s)  # fmt: skip
        except (ValueError, KeyError) as error:
            raise ReplayError(f"{mapping}: {error}") from None
        self.series: dict[str, _Series] = {
            str(entry["id"]): self._load(mapping, number, entry)
            for number, entry in enumerate(entries, start=1)
        }
        self.t0 = min(float(series.times[0]) for series in self.series.values())
        self.ticks = 1 + math.floor(
            (max(float(series.times[-1]) for series in self.series.values()) - self.t0) / self.dt_s
            + 1e-9
        )
        self.first_tick = math.floor(start_s / self.dt_s + 1e-9)
        if not 0 <= self.first_tick < self.ticks:
            raise ReplayError(f"--start {start_s:g} s is outside the data (0 to "
                              f"{(self.ticks - 1) * self.dt_s:g} s)")  # fmt: skip
        self.loop = loop
        self.new_run = False  # set by a loop: the next frame starts a new run (a new epoch)
        self._tick = self.first_tick
        self._seq = 0
        self._loops = 0

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def duration_s(self) -> float:
        return self.ticks * self.dt_s

    async def step(self) -> Frame:
        if self._tick >= self.ticks:
            if not self.loop:
                raise SourceExhaustedError("the data has ended")
            self._tick, self._loops = 0, self._loops + 1
            self.new_run = True
        moment = self.t0 + self._tick * self.dt_s
        values, states, unknown, faults = [], [], [], []
        for ids in self.catalog.columns:
            readings = np.stack([self._at(self.series[machine_id], moment) for machine_id in ids],
                                axis=1)  # fmt: skip
            values.append(readings)
            states.append(np.full(len(ids), int(State.RUNNING), dtype=np.int8))
            unknown.append(np.full(len(ids), np.nan))
            faults.append(FaultSet((), np.empty(0, dtype=np.int64)))
        self._seq += 1
        time_s = (self._tick + self._loops * self.ticks) * self.dt_s
        self._tick += 1
        return Frame(seq=self._seq, time_s=time_s, values=tuple(values), state=tuple(states),
                     health=tuple(unknown), rul_s=tuple(unknown), faults=tuple(faults))  # fmt: skip

    def close(self) -> None:
        """Nothing is held open: the files were read at start."""

    def _at(self, series: _Series, moment: float) -> np.ndarray:
        """Each sensor's latest reading at or before ``moment``, if recent enough; else NaN."""
        index = int(np.searchsorted(series.times, moment + 1e-9, side="right")) - 1
        if index < 0 or moment - series.times[index] > self.max_gap_s + 1e-9:
            return np.full(series.values.shape[0], np.nan)
        return series.values[:, index]

    def _load(self, mapping: Path, number: int, entry: dict[str, object]) -> _Series:
        import pyarrow.csv as pa_csv

        where = f"{mapping}: machines entry {number}"
        path = mapping.parent / str(entry["file"])
        try:
            table = pa_csv.read_csv(path)
        except (OSError, ValueError) as error:
            raise ReplayError(f"{where}: cannot read {path}: {error}") from None
        kind = self.catalog.machine_type(str(entry["id"]))
        columns = {name: name for name in kind.sensor_names}
        given = entry.get("sensors", {})
        if not isinstance(given, dict) or set(given) - set(columns):
            raise ReplayError(f"{where}: sensors maps sensor names of {kind.name} "
                              f"({list(kind.sensor_names)}) to columns")  # fmt: skip
        columns |= {str(sensor): str(column) for sensor, column in given.items()}
        stamp = str(entry.get("timestamp", "timestamp"))
        if stamp not in table.column_names:
            raise ReplayError(f"{where}: {path.name} has no timestamp column {stamp!r}")
        times = np.array([_epoch_s(value, where) for value in table.column(stamp).to_pylist()])
        values = np.full((len(columns), len(times)), np.nan)
        for row, sensor in enumerate(kind.sensor_names):
            column = columns[sensor]
            if column in table.column_names:  # a sensor the file lacks is missing throughout
                values[row] = np.array(
                    [np.nan if value in (None, "") else float(value)
                     for value in table.column(column).to_pylist()]
                )  # fmt: skip
        if not len(times):
            raise ReplayError(f"{where}: {path.name} has no rows")
        order = np.argsort(times, kind="stable")
        return _Series(times[order], values[:, order])


def _read_mapping(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ReplayError(f"{path}: not a readable TOML mapping: {error}") from None


def _epoch_s(value: object, where: str) -> float:
    """Epoch seconds of a timestamp cell: a number, or a time (UTC unless it has an offset)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    moment = value
    if not isinstance(moment, datetime):
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ReplayError(f"{where}: a timestamp that is no time: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
