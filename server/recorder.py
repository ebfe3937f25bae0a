"""``--record DIR``: the live stream written to Parquet in the export's format, in segments.

A frame sink that only keeps the frames (every one, or every Nth with ``--record-hz``); every
``FLUSH_SECONDS`` of them go to a writer task, which converts and writes them in a worker
thread (pyarrow releases the GIL), so recording never delays the tick. A writer that falls
behind drops whole flushes, counted; a write that fails is counted and logged and the stream
goes on. Each segment (``--record-rotate`` simulated seconds) is a directory
``seq-<first seq>`` with one file per machine type and the export's ``manifest.json``,
written when the segment is closed: a recording of a scenario run holds the rows the export
of the same scenario and seed writes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from server.config import Settings
from simulation import Frame
from simulation.catalog import FleetCatalog
from simulation.export.dataset import FrameBatcher, make_plan
from simulation.fleet_spec import FleetSpec

FLUSH_SECONDS = 10.0  # simulated seconds of frames handed to the writer at once
MAX_WAITING_FLUSHES = 4

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RecorderStats:
    frames: int = 0  # written
    dropped: int = 0  # not written: the writer was behind
    failures: int = 0  # writes that raised
    segments: int = 0  # closed
    bytes: int = 0


class _Segment:
    """One directory of files being written (runs on the writer thread)."""

    def __init__(self, directory: Path, catalog: FleetCatalog, first: Frame, first_ms: int):
        from server.export.runner import BatchConverter, parquet_writer

        self.directory, self.catalog = directory, catalog
        self.first_seq, self.frames = first.seq, 0
        self.start_ms = first_ms - round(first.time_s * 1000)
        directory.mkdir(parents=True, exist_ok=True)
        self.writers = []
        for slot, machine_type in enumerate(catalog.types):
            ids = list(catalog.columns[slot])
            converter = BatchConverter(machine_type.name, ids, "parquet")
            path = directory / f"{machine_type.name}.parquet"
            self.writers.append((converter, parquet_writer(path, converter.schema), path))

    def close(self, every: int) -> None:
        from server.export.runner import ExportResult, FileResult, manifest, write_json

        files = []
        for slot, (_, writer, path) in enumerate(self.writers):
            writer.close()
            machines = len(self.catalog.columns[slot])
            files.append(
                FileResult(
                    self.catalog.types[slot].name,
                    path.name,
                    machines,
                    machines * self.frames,
                    path.stat().st_size,
                )
            )
        step_s = self.catalog.dt_s * every
        plan = make_plan(
            FleetSpec(self.catalog.machines),
            seed=self.catalog.seed,
            rate_hz=1.0 / step_s,
            duration_s=self.frames * step_s,
            start_ms=self.start_ms,
            fault_rate_per_h=self.catalog.fault_rate_per_h,
            repair_after_s=self.catalog.repair_after_s,
        )
        result = ExportResult(tuple(files), plan.samples, 0.0, self.directory)
        document = manifest(plan, result, "parquet", {"source": "recording"})
        document["generator"] = "python -m server --record"
        document["first_seq"] = self.first_seq
        write_json(self.directory / "manifest.json", document)


class RecordingUnavailableError(RuntimeError):
    """``--record`` cannot work here (pyarrow is missing, the directory cannot be made)."""


class Recorder:
    """The recording outlet: its :attr:`sink` takes the frames, a task of its own writes."""

    name = "recorder"

    def __init__(self, settings: Settings, catalog: FleetCatalog) -> None:
        assert settings.record_dir is not None
        try:
            import pyarrow  # noqa: F401  (the writer thread needs it; say so at start-up)
        except ImportError:
            raise RecordingUnavailableError(
                "--record writes Parquet with pyarrow: pip install 'demo-machine-server[export]'"
            ) from None
        try:
            settings.record_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RecordingUnavailableError(
                f"--record {settings.record_dir}: {error.strerror or error}"
            ) from None
        self.directory, self.catalog = settings.record_dir, catalog
        self.every = (
            max(1, round(settings.tick_hz / settings.record_hz)) if settings.record_hz else 1
        )
        step_s = catalog.dt_s * self.every
        self.flush_frames = max(1, round(FLUSH_SECONDS / step_s))
        self.rotate_frames = max(1, round(settings.record_rotate_s / step_s))
        self.batchers = [
            FrameBatcher(kind.name, slot, len(catalog.columns[slot]), self.flush_frames)
            for slot, kind in enumerate(catalog.types)
        ]
        self.stats = RecorderStats()
        self._pending: list[tuple[Frame, int]] = []
        self._waiting: collections.deque[list[tuple[Frame, int]]] = collections.deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._segment: _Segment | None = None

    @property
    def sink(self) -> Recorder:
        return self

    # -- the frame sink (on the tick task: never blocks) -------------------------------------

    def publish(self, frame: Frame, timestamp_s: float) -> None:
        if frame.seq % self.every:
            return
        self._pending.append((frame, round(timestamp_s * 1000)))
        if len(self._pending) >= self.flush_frames:
            self._hand_over()

    def _hand_over(self) -> None:
        frames, self._pending = self._pending, []
        if not frames:
            return
        if len(self._waiting) >= MAX_WAITING_FLUSHES:
            self.stats.dropped += len(frames)
            return
        self._waiting.append(frames)
        self._ready.set()

    # -- lifetime ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recorder")
        log.info("recording to %s (every %d tick(s))", self.directory, self.every)

    async def stop(self) -> None:
        """Write what is held, close the segment (its manifest), stop."""
        if self._task is None or self._task.done():
            return
        self._hand_over()
        self._waiting.append([])  # the end
        self._ready.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._waiting:
                frames = self._waiting.popleft()
                if not frames:
                    await asyncio.to_thread(self._close_segment)
                    return
                try:
                    await asyncio.to_thread(self._write, frames)
                except Exception:
                    self.stats.failures += 1
                    log.exception("recorder: %d frame(s) could not be written", len(frames))

    # -- the writer thread -------------------------------------------------------------------

    def _write(self, frames: list[tuple[Frame, int]]) -> None:
        while frames:
            segment = self._segment
            if segment is None:
                first, first_ms = frames[0]
                path = self.directory / f"seq-{first.seq:012d}"
                segment = self._segment = _Segment(path, self.catalog, first, first_ms)
            room = self.rotate_frames - segment.frames
            taken, frames = frames[:room], frames[room:]
            held = [frame for frame, _ in taken]
            stamps = [stamp for _, stamp in taken]
            for batcher, (converter, writer, _) in zip(self.batchers, segment.writers, strict=True):
                writer.write_batch(converter.convert(batcher.batch(held, stamps)))
            segment.frames += len(taken)
            self.stats.frames += len(taken)
            if segment.frames >= self.rotate_frames:
                self._close_segment()

    def _close_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        began = time.perf_counter()
        segment.close(self.every)
        self.stats.segments += 1
        self.stats.bytes += sum(path.stat().st_size for _, _, path in segment.writers)
        log.info(
            "recorder: closed %s (%d frames) in %.0f ms",
            segment.directory,
            segment.frames,
            (time.perf_counter() - began) * 1e3,
        )

    # -- metrics -----------------------------------------------------------------------------

    def collector(self) -> Collector:
        return _RecorderCollector(self)


class _RecorderCollector(Collector):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[Metric]:
        stats = self.recorder.stats
        counters: tuple[tuple[str, str, Any], ...] = (
            ("dms_record_frames", "Frames written to the recording.", stats.frames),
            ("dms_record_dropped", "Frames not recorded: the writer was behind.", stats.dropped),
            ("dms_record_failures", "Writes of the recording that failed.", stats.failures),
            ("dms_record_segments", "Segments of the recording closed.", stats.segments),
            ("dms_record_bytes", "Bytes of the closed segments.", stats.bytes),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
