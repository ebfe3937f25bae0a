"""The state store: the latest frame, a bounded history of frames, and lazily encoded snapshots.

The store is a frame sink built from the fleet catalog alone: it never sees a fleet or a
model, so it works the same whether the frames come from a local simulation or a bus.
Publishing wakes whoever waits for a newer frame (the fan-out's task).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Iterator

import numpy as np

from server.encoding import SnapshotTemplate, iso_timestamp
from server.labels import LabelEncoder
from simulation import Frame
from simulation.catalog import FleetCatalog

log = logging.getLogger(__name__)

Fields = tuple[str, ...] | None  # a subset of a machine type's fields; None: all of them
Stamped = tuple[Frame, float]  # a frame and its epoch timestamp


class History:
    """A ring of recent frames and their epoch timestamps, addressed by ``seq`` in O(1).

    It keeps ``wanted_frames`` frames unless that would exceed ``max_bytes``; the
    capacity is fixed when the first frame shows how large a frame is. Frames arrive in
    ascending seq; a seq never appended (frames a bus lost) is a hole, skipped by reads.
    """

    def __init__(self, wanted_frames: int, max_bytes: int) -> None:
        self.wanted_frames = max(1, wanted_frames)
        self.max_bytes = max_bytes
        self.capacity = 0
        self._ring: list[Frame | None] = []
        self._timestamps: list[float] = []
        self.newest_seq = 0
        self.oldest_seq = 1

    def append(self, frame: Frame, timestamp_s: float) -> None:
        if not self.capacity:
            self._size_for(frame)
        self._ring[frame.seq % self.capacity] = frame
        self._timestamps[frame.seq % self.capacity] = timestamp_s
        self.newest_seq = frame.seq
        self.oldest_seq = max(self.oldest_seq, frame.seq - self.capacity + 1)

    def after(self, seq: int, until: int | None = None) -> Iterator[Frame]:
        """Held frames with ``seq < frame.seq <= until`` (the newest by default), oldest first."""
        if not self.capacity:
            return
        last = self.newest_seq if until is None else min(until, self.newest_seq)
        for wanted in range(max(seq + 1, self.oldest_seq), last + 1):
            frame = self._ring[wanted % self.capacity]
            if frame is not None and frame.seq == wanted:  # else a hole
                yield frame

    def timestamp_s(self, seq: int) -> float:
        """The epoch time a held frame was published with."""
        frame = self._ring[seq % self.capacity] if self.capacity else None
        if not self.oldest_seq <= seq <= self.newest_seq or frame is None or frame.seq != seq:
            raise LookupError(f"seq {seq} is not held")
        return self._timestamps[seq % self.capacity]

    def _size_for(self, frame: Frame) -> None:
        frame_bytes = frame_nbytes(frame)
        self.capacity = max(1, min(self.wanted_frames, self.max_bytes // frame_bytes))
        self._ring = [None] * self.capacity
        self._timestamps = [0.0] * self.capacity
        if self.capacity < self.wanted_frames:
            log.warning(
                "history holds %d ticks, not %d: %d bytes per tick, bound %d bytes",
                self.capacity,
                self.wanted_frames,
                frame_bytes,
                self.max_bytes,
            )


def frame_nbytes(frame: Frame) -> int:
    """Bytes held by a frame's arrays (readings and labels)."""
    total = 0
    for value in (getattr(frame, name) for name in frame.__slots__):
        arrays = value if isinstance(value, tuple) else (value,)
        total += sum(array.nbytes for array in arrays if isinstance(array, np.ndarray))
    return max(total, 1)


class Store:
    """Holds the latest frame and its history; encodes a snapshot at most once per tick.

    ``epoch`` names the run of the simulation the frames come from; a new one (a restarted
    simulator behind a bus) starts over with :meth:`reset`, and ``generation`` counts those.
    """

    name = "store"

    def __init__(
        self,
        catalog: FleetCatalog,
        *,
        history_frames: int,
        history_max_bytes: int,
        epoch: str | None = None,
    ) -> None:
        self.catalog = catalog
        self.dt_s = catalog.dt_s
        self.epoch = epoch if epoch is not None else uuid.uuid4().hex
        self.generation = 0
        self.labels = LabelEncoder(catalog.labels)
        self._templates: dict[tuple[int, Fields], SnapshotTemplate] = {}
        self._history_frames, self._history_max_bytes = history_frames, history_max_bytes
        self.history = History(history_frames, history_max_bytes)
        self.latest: Frame | None = None
        self._encoded: dict[tuple[str, Fields], bytes] = {}
        self._published = asyncio.Event()  # set, and replaced, on every publish
        self.encodes = 0

    def reset(self, catalog: FleetCatalog, epoch: str, frame: Frame, timestamp_s: float) -> None:
        """Start over on ``epoch``'s first frame: the history of the old run is dropped, never
        mixed with the new one. ``catalog`` places its machines as the old one did."""
        self.catalog, self.epoch = catalog, epoch
        self.generation += 1
        self.history = History(self._history_frames, self._history_max_bytes)
        self.latest = None
        self.publish(frame, timestamp_s)

    def __contains__(self, machine_id: object) -> bool:
        return machine_id in self.catalog

    def publish(self, frame: Frame, timestamp_s: float) -> None:
        """Make ``frame`` the latest and keep it in the history, stamped ``timestamp_s`` (epoch)."""
        self.latest = frame
        self.history.append(frame, timestamp_s)
        self._encoded = {}
        published, self._published = self._published, asyncio.Event()
        published.set()

    async def wait_newer(self, seq: int, generation: int | None = None) -> Frame:
        """The latest frame, once its seq is greater than ``seq``, or at once after a reset
        since ``generation``."""
        generation = self.generation if generation is None else generation
        while self.latest is None or (self.latest.seq <= seq and self.generation == generation):
            await self._published.wait()
        return self.latest

    def snapshot_bytes(self, machine_id: str, fields: Fields = None) -> bytes:
        """The latest snapshot of ``machine_id`` as JSON, encoded once per tick per variant."""
        if self.latest is None:
            raise LookupError("no frame has been published yet")
        return self.snapshot_of(self.latest, machine_id, fields)

    def snapshot_of(self, frame: Frame, machine_id: str, fields: Fields = None) -> bytes:
        """One machine's snapshot of a held frame: cached when it is the latest."""
        if frame is not self.latest:
            return self.encode(frame, machine_id, fields)
        key = (machine_id, fields)
        encoded = self._encoded.get(key)
        if encoded is None:
            encoded = self._encoded[key] = self.encode(frame, machine_id, fields)
        return encoded

    @property
    def held_seconds(self) -> float:
        """Simulated seconds the history can hold (fewer than asked for a large fleet)."""
        return self.history.capacity * self.dt_s

    def recent(self, seconds: float) -> list[Stamped]:
        """Held frames within ``seconds`` of simulated time before the latest, oldest first,
        each with its epoch timestamp (so they can be encoded after the ring has moved on)."""
        latest = self.latest
        if latest is None:
            return []
        ticks = math.floor(seconds / self.dt_s + 1e-9)
        return [
            (frame, self.history.timestamp_s(frame.seq))
            for frame in self.history.after(latest.seq - ticks - 1)
        ]

    def csv(
        self, stamped: list[Stamped], machine_id: str, fields: Fields = None, *, header: bool = True
    ) -> str:
        """Frames of one machine as CSV text, after a header line if ``header``."""
        slot, column = self.catalog.locate(machine_id)
        template = self._template(slot, fields)
        labels = self.labels.wanted(fields)
        lines = [template.csv_header(labels)] if header else []
        for frame, epoch_s in stamped:
            values = template.select(frame.values[slot][:, column])
            cells = self.labels.cells(frame, slot, column, labels)
            lines.append(template.csv_row(iso_timestamp(epoch_s), frame.seq, values, cells))
        return "".join(lines)

    def encode(
        self,
        frame: Frame,
        machine_id: str,
        fields: Fields = None,
        *,
        epoch_s: float | None = None,
    ) -> bytes:
        """One machine's snapshot from a frame: the latest, a held one, or one taken from the
        history earlier with its ``epoch_s``."""
        slot, column = self.catalog.locate(machine_id)
        template = self._template(slot, fields)
        values = template.select(frame.values[slot][:, column])
        self.encodes += 1
        if epoch_s is None:
            epoch_s = self.history.timestamp_s(frame.seq)
        wanted = self.labels.wanted(fields)
        tail = self.labels.json(frame, slot, column, wanted, _epoch_offset_s(frame, epoch_s))
        return template.encode(machine_id, iso_timestamp(epoch_s), frame.seq, values, tail)

    def onset_timestamp(self, onset_s: float) -> str:
        """The timestamp of a simulated instant, on the latest frame's clock."""
        assert self.latest is not None
        latest = self.latest
        offset_s = _epoch_offset_s(latest, self.history.timestamp_s(latest.seq))
        return iso_timestamp(offset_s + onset_s)

    def _template(self, slot: int, fields: Fields) -> SnapshotTemplate:
        template = self._templates.get((slot, fields))
        if template is None:
            machine_type = self.catalog.types[slot]
            sensors = machine_type.sensors
            if fields is not None:
                sensors = tuple(sensor for sensor in sensors if sensor.name in fields)
            template = SnapshotTemplate(machine_type.name, sensors, machine_type.sensor_names)
            self._templates[(slot, fields)] = template
        return template


def _epoch_offset_s(frame: Frame, epoch_s: float) -> float:
    """Epoch seconds minus simulated seconds, on a frame's (millisecond) clock."""
    return round(epoch_s, 3) - frame.time_s
