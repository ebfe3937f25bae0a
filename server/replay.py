"""``--replay PATH``: an export or a recording served through the same REST and WebSocket API.

PATH is an export's directory or a ``--record`` directory (its ``seq-*`` segments in order);
the Parquet files are read a batch at a time, and each tick serves the next recorded
instant of every machine, readings and labels as recorded, renumbered from seq 1 on the tick
clock (``--speed`` times the recording's own rate, at most the server's highest tick rate).
``--start`` skips into the recording (seconds of its simulated time); at the end the ticks
stop, or with ``--loop`` it starts over from its beginning as a new run (a new epoch, its
simulated time going on).
Faults and commands are refused with 409 ``replay``: the plant is a recording.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from server.config import MAX_TICK_HZ
from server.plant import PlantChange, PlantUnavailableError
from server.source import SourceExhaustedError
from server.store import Store
from simulation import Frame
from simulation.catalog import FleetCatalog
from simulation.faults import FaultRecord, FaultSet
from simulation.fleet import catalog_of
from simulation.fleet_spec import FleetSpec, MachineSpec
from simulation.spec import STATE_NAMES, FaultRequest

if TYPE_CHECKING:
    from server.replay_csv import CsvReplaySource

MANIFEST = "manifest.json"
ROWS_PER_READ = 16_384  # rows read at once: a read holds the loop for a few ms


class ReplayError(ValueError):
    """A path that is not a recording this server can replay; the message says why."""


@dataclass(frozen=True, slots=True)
class Recording:
    """What a replay serves: the fleet's catalog and the files of each type, in order."""

    catalog: FleetCatalog
    segments: tuple[Path, ...]
    files: tuple[str, ...]  # per slot, the file name in each segment
    dt_s: float
    steps: int
    file_format: str = "parquet"

    @property
    def duration_s(self) -> float:
        return self.steps * self.dt_s


def open_recording(path: Path) -> Recording:
    """The recording at ``path``: an export's directory or a ``--record`` directory."""
    if (path / MANIFEST).is_file():
        segments = [path]
    else:
        segments = sorted(p for p in path.glob("seq-*") if (p / MANIFEST).is_file())
    if not segments:
        raise ReplayError(f"{path}: no {MANIFEST} (give an export's or a --record directory)")
    manifests = [json.loads((segment / MANIFEST).read_text()) for segment in segments]
    first = manifests[0]
    file_format = first.get("format")
    if file_format not in ("parquet", "csv"):
        raise ReplayError(f"{path}: files of format {file_format!r}; replay reads parquet, csv")
    machines = []
    files = []
    for entry in first["files"]:
        count = int(entry["machines"])
        batch = next(_batches(segments[0] / entry["path"], file_format, count))
        ids = batch.column("machine_id").to_pylist()[:count]
        machines += [MachineSpec(machine_id, entry["machine_type"]) for machine_id in ids]
        files.append(entry["path"])
    catalog = catalog_of(
        FleetSpec(tuple(machines)), seed=int(first["seed"]), dt_s=float(first["dt_s"])
    )
    by_type = {entry["machine_type"]: entry["path"] for entry in first["files"]}
    ordered = tuple(by_type[kind.name] for kind in catalog.types)
    return Recording(catalog, tuple(segments), ordered, float(first["dt_s"]),
                     sum(int(m["steps"]) for m in manifests), file_format)  # fmt: skip


class ReplaySource:
    """Frames from a recording, one per tick (a :class:`~server.source.FrameSource`)."""

    def __init__(self, recording: Recording, *, start_s: float = 0.0, loop: bool = False):
        if not 0 <= start_s < recording.duration_s:
            raise ReplayError(
                f"--start {start_s:g} s is outside the recording (0 to {recording.duration_s:g} s)"
            )
        self.recording, self.catalog = recording, recording.catalog
        self.dt_s, self.duration_s = recording.dt_s, recording.duration_s
        self.start_s, self.loop = start_s, loop
        self.loops = 0
        self.new_run = False  # set by a loop: the next frame starts a new run (a new epoch)
        self._seq = 0
        self._instants = self._read(start_s)

    @property
    def seq(self) -> int:
        return self._seq

    async def step(self) -> Frame:
        try:
            instant = next(self._instants)
        except StopIteration:
            if not self.loop:
                raise SourceExhaustedError("the recording has ended") from None
            self.loops += 1
            self.new_run = True
            self._instants = self._read(0.0)  # from the beginning, its time going on
            instant = next(self._instants)
        self._seq += 1
        time_s, values, state, health, rul_s, faults = instant
        time_s += self.loops * self.recording.duration_s
        return Frame(seq=self._seq, time_s=time_s, values=values, state=state, health=health,
                     rul_s=rul_s, faults=faults)  # fmt: skip

    def close(self) -> None:
        self._instants.close()

    def _read(self, start_s: float) -> Generator[tuple[Any, ...], None, None]:
        """Every recorded instant from ``start_s`` on: per slot, its machines' arrays."""
        readers = [self._type_instants(slot) for slot in range(len(self.catalog.types))]
        for instants in zip(*readers, strict=True):
            time_s = instants[0][0]
            if time_s < start_s - 1e-9:
                continue
            yield (
                time_s,
                *(tuple(instant[part] for instant in instants) for part in range(1, 6)),
            )

    def _type_instants(self, slot: int) -> Iterator[tuple[Any, ...]]:
        kind = self.catalog.types[slot]
        count = len(self.catalog.columns[slot])
        sensors = kind.sensor_names
        codes = {name: code for code, name in enumerate(STATE_NAMES)}
        for segment in self.recording.segments:
            path = segment / self.recording.files[slot]
            for batch in _whole_steps(_batches(path, self.recording.file_format, count), count):
                columns = {name: batch.column(name) for name in batch.schema.names}
                steps = batch.num_rows // count
                readings = np.stack(
                    [_floats(columns[name]).reshape(steps, count) for name in sensors]
                )
                states = _codes(columns["state"], codes).reshape(steps, count)
                health = _floats(columns["health"]).reshape(steps, count)
                rul = _floats(columns["rul_s"]).reshape(steps, count)
                times = columns["time_s"].to_numpy()[::count]
                faults = _sparse_faults(columns["faults"])
                for step in range(steps):
                    rows = [faults.get(row) for row in range(step * count, (step + 1) * count)]
                    yield (
                        float(times[step]),
                        readings[:, step, :],
                        states[step],
                        health[step],
                        rul[step],
                        _fault_set(rows, self.catalog.columns[slot]),
                    )


def _batches(path: Path, file_format: str, count: int) -> Iterator[Any]:
    """Record batches of a type file: Parquet by whole steps, CSV as the reader blocks it."""
    if file_format == "parquet":
        import pyarrow.parquet as pq

        rows = max(count, ROWS_PER_READ // count * count)
        yield from pq.ParquetFile(path).iter_batches(batch_size=rows)
        return
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    options = pa_csv.ConvertOptions(
        column_types={"state": pa.string(), "faults": pa.string(), "machine_id": pa.string()}
    )
    yield from pa_csv.open_csv(path, convert_options=options)


def _whole_steps(batches: Iterator[Any], count: int) -> Iterator[Any]:
    """The rows again, cut at whole steps (``count`` rows each), leftovers carried over."""
    import pyarrow as pa

    held = None
    for batch in batches:
        table = pa.Table.from_batches([batch]) if held is None else pa.concat_tables(
            [held, pa.Table.from_batches([batch])])  # fmt: skip
        whole = table.num_rows // count * count
        if whole:
            yield table.slice(0, whole).combine_chunks().to_batches()[0]
        held = table.slice(whole) if whole < table.num_rows else None
    if held is not None and held.num_rows:
        raise ReplayError(f"{held.num_rows} rows past the last whole step of {count} machines")


def _codes(column: Any, codes: dict[str, int]) -> np.ndarray:
    """State codes of a column: by a dictionary's indices (no string per row), or by name."""
    if hasattr(column, "dictionary"):
        names = column.dictionary.to_pylist()
        mapping = np.array([codes[name] for name in names], dtype=np.int8)
        return mapping[column.indices.to_numpy(zero_copy_only=False)]
    return np.array([codes[name] for name in column.to_pylist()], dtype=np.int8)


def _sparse_faults(column: Any) -> dict[int, list[dict[str, Any]]]:
    """Row -> its faults, for the rows that have any (most have none); a CSV file holds them
    as JSON text ("[]" for none)."""
    if not hasattr(column, "offsets"):
        return {
            row: json.loads(text)
            for row, text in enumerate(column.to_pylist())
            if text and text != "[]"
        }
    offsets = column.offsets.to_numpy()
    rows = np.flatnonzero(np.diff(offsets) > 0)
    if not len(rows):
        return {}
    return dict(zip(rows.tolist(), column.take(rows).to_pylist(), strict=True))


def _floats(column: Any) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _fault_set(rows: list[list[dict[str, Any]] | None], ids: tuple[str, ...]) -> FaultSet:
    """The active faults of one recorded instant (the file leaves out the machine id)."""
    records, instances = [], []
    for column, faults in enumerate(rows):
        for fault in faults or ():
            records.append(
                FaultRecord(
                    fault_id=fault["fault_id"],
                    machine_id=ids[column],
                    kind=fault["kind"],
                    severity=fault["severity"],
                    onset=fault["onset"],
                    onset_s=fault["onset_s"],
                    duration_s=fault["duration_s"],
                    sensor=fault["sensor"],
                    origin=fault["origin"],
                )
            )
            instances.append(column)
    return FaultSet(tuple(records), np.array(instances, dtype=np.int64))


class RunStore:
    """The store as a replay's sink: the first frame of each loop starts a new run (a new
    epoch: the history of the last one dropped, every subscriber told, ``GET /`` shows it)."""

    name = "store"

    def __init__(self, store: Store, source: ReplaySource | CsvReplaySource) -> None:
        self.store, self.source = store, source

    def publish(self, frame: Frame, timestamp_s: float) -> None:
        if self.source.new_run:
            self.source.new_run = False
            self.store.reset(self.store.catalog, uuid.uuid4().hex, frame, timestamp_s)
        else:
            self.store.publish(frame, timestamp_s)


class ReplayPlant:
    """A recording cannot be changed: every fault and command is refused (409)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.catalog = store.catalog

    async def inject_fault(
        self, machine_id: str, request: FaultRequest
    ) -> PlantChange[FaultRecord]:
        raise _refused()

    async def clear_fault(self, machine_id: str, fault_id: str) -> PlantChange[FaultRecord]:
        raise _refused()

    async def command(self, machine_id: str, command: str) -> PlantChange[str]:
        raise _refused()

    async def active_faults(self, machine_id: str) -> tuple[FaultRecord, ...]:
        slot, column = self.catalog.locate(machine_id)
        frame = self.store.latest
        assert frame is not None
        return frame.faults[slot].of(column)


def _refused() -> PlantUnavailableError:
    return PlantUnavailableError(
        409, "replay", "the plant is a recording (--replay): faults and commands are refused"
    )


def replay_tick_hz(dt_s: float, speed: float) -> float:
    """Ticks per second that serve a recording of step ``dt_s`` at ``speed`` times its rate."""
    return min(MAX_TICK_HZ, speed / dt_s)


def open_replay(path: Path, *, start_s: float, loop: bool) -> ReplaySource | CsvReplaySource:
    """The source ``--replay PATH`` names: a user's CSV mapping (a ``.toml`` file), or an
    export's or a recording's directory."""
    if path.suffix == ".toml":
        from server.replay_csv import CsvReplaySource

        return CsvReplaySource(path, start_s=start_s, loop=loop)
    return ReplaySource(open_recording(path), start_s=start_s, loop=loop)
