"""The I/O shell of the export: Arrow batches, Parquet/CSV files, worker processes, timing.

Work is split by machine type, one file each: a type runs in its own process (the
simulation is numpy-bound and holds the GIL, so threads alone would not use the second
core), and inside a process the simulation thread hands finished batches through a bounded
queue to a writer thread (pyarrow encodes and compresses with the GIL released). Files are
written under a temporary name and renamed when complete, the manifest last.

Every writer option that could vary between runs is fixed, so the same plan gives
byte-identical files (for the same versions of pyarrow and numpy, which the manifest
records).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import platform
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from simulation.export.dataset import (
    FAULT_FIELDS,
    FAULTS_DTYPE,
    ROWS_PER_BATCH,
    ColumnSpec,
    ExportPlan,
    FaultEntries,
    TypeBatch,
    iter_type_batches,
    type_columns,
)
from simulation.scenario import Event, marker_events

FORMATS = ("parquet", "csv")
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 1  # the fast end of zstd: about 4x smaller than plain, ~1 GB/s
QUEUE_BATCHES = 2  # batches waiting for the writer thread: bounds memory, keeps both busy
_DICTIONARY_TYPES = {
    "dictionary<values=string, indices=int32>": pa.dictionary(pa.int32(), pa.string()),
    "dictionary<values=string, indices=int8>": pa.dictionary(pa.int8(), pa.string()),
}
_TIMESTAMP_TYPE = "timestamp[ms, tz=UTC]"
FAULT_STRUCT = pa.struct([(name, pa.type_for_alias(alias)) for name, alias in FAULT_FIELDS])

Report = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class FileResult:
    machine_type: str
    name: str
    machines: int
    rows: int
    bytes: int
    events: tuple[Event, ...] = ()  # the scenario's changes to this type's machines


@dataclass(frozen=True, slots=True)
class ExportResult:
    files: tuple[FileResult, ...]
    samples: int
    seconds: float
    out_dir: Path

    @property
    def bytes(self) -> int:
        return sum(file.bytes for file in self.files)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("inf")


class _BatchWriter(Protocol):
    def write_batch(self, batch: pa.RecordBatch) -> None: ...
    def close(self) -> None: ...


# ------------------------------------------------------------------------------- Arrow
def arrow_type(column: ColumnSpec, file_format: str) -> pa.DataType:
    """The Arrow type of a column in a file of this format (CSV holds faults as JSON text)."""
    if column.dtype == FAULTS_DTYPE:
        return pa.list_(FAULT_STRUCT) if file_format == "parquet" else pa.string()
    if column.dtype in _DICTIONARY_TYPES:
        return _DICTIONARY_TYPES[column.dtype]
    if column.dtype == _TIMESTAMP_TYPE:
        return pa.timestamp("ms", tz="UTC")
    return pa.type_for_alias(column.dtype)


def arrow_schema(machine_type: str, file_format: str = "parquet") -> pa.Schema:
    """The file schema; each field's metadata carries its role, unit and description."""
    return pa.schema([_arrow_field(c, file_format) for c in type_columns(machine_type)])


def _arrow_field(column: ColumnSpec, file_format: str) -> pa.Field:
    metadata_ = {"role": column.role, "description": column.description}
    if column.unit:
        metadata_["unit"] = column.unit
    if column.decimals is not None:
        metadata_["decimals"] = str(column.decimals)
    nullable = column.role in ("sensor", "label")
    return pa.field(column.name, arrow_type(column, file_format), nullable, metadata_)


class BatchConverter:
    """Turns one machine type's numpy batches into record batches of its file's schema."""

    def __init__(self, machine_type: str, machine_ids: list[str], file_format: str) -> None:
        self.columns = type_columns(machine_type)
        self.schema = arrow_schema(machine_type, file_format)
        self.file_format = file_format
        self.ids = pa.array(machine_ids, type=pa.string())
        self.categories = {
            c.name: pa.array(c.categories, type=pa.string()) for c in self.columns if c.categories
        }

    def convert(self, batch: TypeBatch) -> pa.RecordBatch:
        """Wrap the numpy columns, mostly without copying (a null mask becomes a bitmap)."""
        arrays = [
            self._array(column, field, batch)
            for column, field in zip(self.columns, self.schema, strict=True)
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _array(self, column: ColumnSpec, field: pa.Field, batch: TypeBatch) -> pa.Array:
        if column.name == "machine_id":
            indices = pa.array(batch.machine_index, type=pa.int32())
            return pa.DictionaryArray.from_arrays(indices, self.ids, safe=False)
        if column.name in batch.faults:
            return self._faults(batch.faults[column.name])
        values, nulls = batch.columns[column.name]
        if column.name in self.categories:  # codes outside the dictionary are an error
            codes = pa.array(values, type=field.type.index_type, mask=nulls)
            return pa.DictionaryArray.from_arrays(codes, self.categories[column.name])
        if pa.types.is_timestamp(field.type):
            return pa.array(values, type=pa.int64()).view(field.type)
        return pa.array(values, type=field.type, mask=nulls)

    def _faults(self, entries: FaultEntries) -> pa.Array:
        """Parquet: a list of structs per row. CSV: a JSON array per row ("[]" for none)."""
        offsets = pa.array(entries.offsets, type=pa.int32())
        index = pa.array(entries.record_index, type=pa.int32())
        records = [dataclasses.asdict(record) for record in entries.records]
        if self.file_format == "parquet":
            table = pa.array(
                [{name: record[name] for name, _ in FAULT_FIELDS} for record in records],
                type=FAULT_STRUCT,
            )
            return pa.ListArray.from_arrays(offsets, table.take(index))
        texts = pa.array(
            [
                json.dumps({name: record[name] for name, _ in FAULT_FIELDS}, separators=(",", ":"))
                for record in records
            ],
            type=pa.string(),
        )
        joined = pc.binary_join(pa.ListArray.from_arrays(offsets, texts.take(index)), ",")
        return pc.binary_join_element_wise("[", joined, "]", "")


# ----------------------------------------------------------------------------- writers
def parquet_writer(path: Path, schema: pa.Schema) -> _BatchWriter:
    """Options pinned so the bytes depend on the data alone."""
    float_names = [f.name for f in schema if pa.types.is_floating(f.type)]
    dictionary_names = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    for field in schema:  # the string leaves of the faults lists
        if pa.types.is_list(field.type):
            struct = field.type.value_type
            dictionary_names += [
                f"{field.name}.list.element.{leaf.name}"
                for leaf in struct
                if pa.types.is_string(leaf.type)
            ]
    return pq.ParquetWriter(
        path,
        schema,
        compression=PARQUET_COMPRESSION,
        compression_level=PARQUET_COMPRESSION_LEVEL,
        use_dictionary=dictionary_names,
        column_encoding={"seq": "DELTA_BINARY_PACKED", "timestamp": "DELTA_BINARY_PACKED"}
        | dict.fromkeys(float_names, "BYTE_STREAM_SPLIT"),
        version="2.6",
        data_page_version="1.0",
        write_statistics=[f.name for f in schema if f.metadata[b"role"] in (b"key", b"time")],
        store_schema=True,
        write_page_index=False,
        sorting_columns=[pq.SortingColumn(schema.get_field_index("seq"))],
    )


def _csv_writer(path: Path, schema: pa.Schema) -> _BatchWriter:
    """Header once; strings quoted (the faults column holds JSON), nulls as empty fields."""
    options = pa_csv.WriteOptions(include_header=True, delimiter=",", quoting_style="needed")
    return pa_csv.CSVWriter(str(path), schema, write_options=options)


_WRITERS: dict[str, Callable[[Path, pa.Schema], _BatchWriter]] = {
    "parquet": parquet_writer,
    "csv": _csv_writer,
}


def write_type_file(
    plan: ExportPlan, machine_type: str, path: Path, file_format: str, report: Report
) -> FileResult:
    """Simulate one machine type and write its file; ``report(rows)`` after each batch."""
    ids = [machine.machine_id for machine in plan.type_fleet(machine_type).machines]
    converter = BatchConverter(machine_type, ids, file_format)
    partial = path.with_name(f".{path.name}.partial")
    writer = _WRITERS[file_format](partial, converter.schema)
    rows = 0
    events: list[Event] = []
    try:

        def sink(batch: TypeBatch) -> None:
            nonlocal rows
            writer.write_batch(converter.convert(batch))
            events.extend(batch.events)
            rows += batch.rows
            report(batch.rows)

        _pipe(iter_type_batches(plan, machine_type), sink)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(partial, path)
    size = path.stat().st_size
    return FileResult(machine_type, path.name, len(ids), rows, size, tuple(events))


def _pipe(batches: Iterator[TypeBatch], sink: Callable[[TypeBatch], None]) -> None:
    """Produce on this thread, consume on a writer thread, at most QUEUE_BATCHES in between."""
    handoff: queue.Queue[TypeBatch | None] = queue.Queue(maxsize=QUEUE_BATCHES)
    failures: list[BaseException] = []

    def consume() -> None:
        while (batch := handoff.get()) is not None:
            if failures:
                continue  # drain, so the producer never blocks on a dead consumer
            try:
                sink(batch)
            except BaseException as error:  # re-raised on the producer's thread
                failures.append(error)

    writer = threading.Thread(target=consume, name="export-writer", daemon=True)
    writer.start()
    try:
        for batch in batches:
            if failures:
                break
            handoff.put(batch)
    finally:
        handoff.put(None)
        writer.join()
    if failures:
        raise failures[0]


# ------------------------------------------------------------------------- the export
def run_export(
    plan: ExportPlan,
    out_dir: Path,
    *,
    file_format: str = "parquet",
    workers: int | None = None,
    fleet_info: Mapping[str, Any] | None = None,
    report: Report | None = None,
) -> ExportResult:
    """Write one file per machine type and ``manifest.json`` into ``out_dir`` (created).

    ``workers`` processes run the types (default: one per type; 1 runs them here, one
    after another). ``report(rows)`` is called as rows are written (possibly from a writer
    thread: it must be thread-safe, as ``tqdm.update`` is).
    """
    if file_format not in FORMATS:
        raise ValueError(f"unknown format {file_format!r}; valid: {list(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    types = plan.machine_types()
    workers = len(types) if workers is None else max(1, min(workers, len(types)))
    report = report or (lambda rows: None)
    began = time.perf_counter()
    jobs = [(t, out_dir / f"{t}.{file_format}") for t in types]
    if workers == 1:
        files = [write_type_file(plan, t, path, file_format, report) for t, path in jobs]
    else:
        files = _run_in_processes(plan, jobs, file_format, workers, report)
    result = ExportResult(tuple(files), plan.samples, time.perf_counter() - began, out_dir)
    events = None
    if plan.scenario:
        events = write_events(plan, files, out_dir / f"{EVENTS_NAME}.{file_format}", file_format)
    document = manifest(plan, result, file_format, fleet_info or {})
    if events is not None:
        document["events"] = events
    write_json(out_dir / MANIFEST_NAME, document)
    return result


EVENTS_NAME = "events"
EVENT_SCHEMA = pa.schema(
    [
        pa.field(name, kind, nullable, {"role": role, "description": description})
        for name, kind, nullable, role, description in (
            ("seq", pa.int64(), False, "time", "the first frame that shows it"),
            ("time_s", pa.float64(), False, "time", "its simulated time, s"),
            ("timestamp", pa.timestamp("ms", tz="UTC"), False, "time", "its wall time"),
            ("entry", pa.int32(), False, "key", "the scenario entry, from 1"),
            ("line", pa.int32(), False, "key", "the entry's line in the file"),
            ("repetition", pa.int32(), False, "key", "the occurrence of a repeated entry"),
            ("kind", pa.string(), False, "key", "inject, clear, command or marker"),
            ("machine_id", pa.string(), True, "key", "the machine; null for a marker"),
            ("detail", pa.string(), False, "event", "JSON: the change made, or why refused"),
        )
    ]
)


def write_events(
    plan: ExportPlan, files: list[FileResult], path: Path, file_format: str
) -> dict[str, Any]:
    """The events table: every scenario change (from the type files' runs) and marker, in
    seq, entry and fleet order (the order the server makes them in); its manifest entry."""
    position = {machine.machine_id: index for index, machine in enumerate(plan.fleet.machines)}
    events = sorted(
        [event for file in files for event in file.events]
        + marker_events(plan.scenario, plan.steps),
        key=lambda event: (
            event.seq,
            event.entry,
            event.repetition,
            -1 if event.machine_id is None else position[event.machine_id],
        ),
    )
    columns = {
        "seq": [event.seq for event in events],
        "time_s": [event.seq * plan.dt_s for event in events],
        "timestamp": [plan.start_ms + round(event.seq * plan.dt_s * 1000) for event in events],
        "entry": [event.entry for event in events],
        "line": [event.line for event in events],
        "repetition": [event.repetition for event in events],
        "kind": [event.kind for event in events],
        "machine_id": [event.machine_id for event in events],
        "detail": [json.dumps(event.detail, sort_keys=True) for event in events],
    }
    table = pa.Table.from_pydict(columns, schema=EVENT_SCHEMA)
    writer = _WRITERS[file_format](path, EVENT_SCHEMA)
    try:
        for batch in table.to_batches():
            writer.write_batch(batch)
    finally:
        writer.close()
    return {
        "path": path.name,
        "rows": len(events),
        "refused": sum(event.refused for event in events),
        "columns": [field.name for field in EVENT_SCHEMA],
    }


def _run_in_processes(
    plan: ExportPlan,
    jobs: list[tuple[str, Path]],
    file_format: str,
    workers: int,
    report: Report,
) -> list[FileResult]:
    """One task per type in a pool of fresh ("spawn") processes; progress comes back by queue."""
    context = multiprocessing.get_context("spawn")
    progress = context.Queue()
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(progress,)
    ) as pool:
        futures = [
            pool.submit(_worker, plan, machine_type, str(path), file_format)
            for machine_type, path in jobs
        ]
        pending: set[Future[FileResult]] = set(futures)
        reported = 0
        while pending:
            _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            reported += _drain(progress, report)
        files = [future.result() for future in futures]
    # Progress and results travel by different pipes: settle what has not arrived yet.
    late = sum(file.rows for file in files) - reported
    if late > 0:
        report(late)
    return files


def _drain(progress: Any, report: Report) -> int:
    """Pass on the progress that has arrived; return how many rows it was."""
    rows = 0
    while True:
        try:
            arrived = progress.get_nowait()
        except queue.Empty:
            return rows
        report(arrived)
        rows += arrived


_worker_progress: Any = None  # the worker process's end of the progress queue


def _init_worker(progress: Any) -> None:
    global _worker_progress  # one per worker process, set once when it starts
    _worker_progress = progress


def _worker(plan: ExportPlan, machine_type: str, path: str, file_format: str) -> FileResult:
    return write_type_file(plan, machine_type, Path(path), file_format, _worker_progress.put)


# --------------------------------------------------------------------------- manifest
def manifest(
    plan: ExportPlan, result: ExportResult, file_format: str, fleet_info: Mapping[str, Any]
) -> dict[str, Any]:
    """How the data set was made and what it holds; no wall-clock values, so it is reproducible."""
    files = []
    for file in result.files:
        columns = type_columns(file.machine_type)
        files.append(
            {
                "machine_type": file.machine_type,
                "path": file.name,
                "machines": file.machines,
                "rows": file.rows,
                "bytes": file.bytes,
                "columns": [_column_entry(column, file_format) for column in columns],
                "labels": [c.name for c in columns if c.role == "label"],
            }
        )
    return {
        "manifest_version": MANIFEST_VERSION,
        "generator": "python -m server export",
        "versions": _versions(),
        "seed": plan.seed,
        "fault_rate_per_h": plan.fault_rate_per_h,
        "repair_after_s": plan.repair_after_s,
        "fleet": {
            **fleet_info,
            "machines": len(plan.fleet),
            "types": {t: len(plan.type_fleet(t)) for t in plan.machine_types()},
        },
        "rate_hz": plan.rate_hz,
        "dt_s": plan.dt_s,
        "duration_s": plan.duration_s,
        "steps": plan.steps,
        "start": _iso_ms(plan.start_ms),
        "samples": result.samples,
        "format": file_format,
        "writer": _writer_options(file_format),
        "row_order": "seq, then machine in fleet order",
        "files": files,
    }


def _column_entry(column: ColumnSpec, file_format: str) -> dict[str, Any]:
    dtype = column.dtype
    if dtype == FAULTS_DTYPE and file_format == "csv":
        dtype = "string (a JSON array of " + FAULTS_DTYPE.removeprefix("list<").removesuffix(">")
        dtype += ")"
    entry: dict[str, Any] = {"name": column.name, "type": dtype, "role": column.role}
    if column.unit:
        entry["unit"] = column.unit
    if column.decimals is not None:
        entry["decimals"] = column.decimals
    if column.categories:
        entry["categories"] = list(column.categories)
    entry["description"] = column.description
    return entry


def _writer_options(file_format: str) -> dict[str, Any]:
    if file_format == "csv":
        return {"header": True, "delimiter": ",", "null": "", "quoting": "strings"}
    return {
        "compression": PARQUET_COMPRESSION,
        "compression_level": PARQUET_COMPRESSION_LEVEL,
        "max_row_group_rows": ROWS_PER_BATCH,
        "float_encoding": "BYTE_STREAM_SPLIT",
        "statistics": "key and time columns",
    }


def _versions() -> dict[str, str]:
    try:
        package = metadata.version("demo-machine-server")
    except metadata.PackageNotFoundError:
        package = "unknown"
    return {
        "demo-machine-server": package,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
    }


def _iso_ms(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000.0, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")
    os.replace(partial, path)
