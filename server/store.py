"""The state store: the latest frame, a bounded history of frames, and lazily encoded snapshots."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np

from server.encoding import SnapshotTemplate, iso_timestamp, parse_timestamp
from server.labels import LABEL_FIELDS, OnsetStamp, label_cells, label_json
from simulation import Fleet, Frame

log = logging.getLogger(__name__)

Fields = tuple[str, ...] | None  # a subset of a machine type's sensors, or all of them


class History:
    """A ring of recent frames, addressed by ``seq`` in O(1).

    It keeps ``wanted_frames`` frames unless that would exceed ``max_bytes``; the
    capacity is fixed when the first frame shows how large a frame is.
    """

    def __init__(self, wanted_frames: int, max_bytes: int) -> None:
        self.wanted_frames = max(1, wanted_frames)
        self.max_bytes = max_bytes
        self.capacity = 0
        self._ring: list[Frame | None] = []
        self._timestamps: list[str] = []
        self.newest_seq = 0
        self.oldest_seq = 1

    def append(self, frame: Frame, timestamp: str) -> None:
        if not self.capacity:
            self._size_for(frame)
        self._ring[frame.seq % self.capacity] = frame
        self._timestamps[frame.seq % self.capacity] = timestamp
        self.newest_seq = frame.seq
        self.oldest_seq = max(self.oldest_seq, frame.seq - self.capacity + 1)

    def after(self, seq: int) -> Iterator[Frame]:
        """Held frames with a ``seq`` greater than ``seq``, oldest first."""
        for wanted in range(max(seq + 1, self.oldest_seq), self.newest_seq + 1):
            frame = self._ring[wanted % self.capacity]
            assert frame is not None
            assert frame.seq == wanted
            yield frame

    def timestamp(self, seq: int) -> str:
        """The ISO timestamp a held frame was published with."""
        if not self.oldest_seq <= seq <= self.newest_seq:
            raise LookupError(f"seq {seq} is not held")
        return self._timestamps[seq % self.capacity]

    def _size_for(self, frame: Frame) -> None:
        frame_bytes = frame_nbytes(frame)
        self.capacity = max(1, min(self.wanted_frames, self.max_bytes // frame_bytes))
        self._ring = [None] * self.capacity
        self._timestamps = [""] * self.capacity
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
    """Holds the latest frame and its history; encodes a snapshot at most once per tick."""

    def __init__(self, fleet: Fleet, *, history_frames: int, history_max_bytes: int) -> None:
        self._placement = fleet.placement
        self.dt_s = fleet.dt_s
        self._models = fleet.models
        self._templates: dict[tuple[int, Fields], SnapshotTemplate] = {}
        self.machine_types = {
            machine.machine_id: machine.machine_type for machine in fleet.spec.machines
        }
        self.history = History(history_frames, history_max_bytes)
        self.latest: Frame | None = None
        self._encoded: dict[tuple[str, Fields], bytes] = {}
        self.encodes = 0

    def __contains__(self, machine_id: object) -> bool:
        return machine_id in self._placement

    def sensor_names(self, machine_id: str) -> tuple[str, ...]:
        return self._models[self._placement[machine_id][0]].sensor_names()

    def field_names(self, machine_id: str) -> tuple[str, ...]:
        """Everything a snapshot of this machine carries: its sensors, then the labels."""
        return self.sensor_names(machine_id) + LABEL_FIELDS

    def publish(self, frame: Frame, timestamp_s: float) -> None:
        """Make ``frame`` the latest and keep it in the history, stamped ``timestamp_s`` (epoch)."""
        self.latest = frame
        self.history.append(frame, iso_timestamp(timestamp_s))
        self._encoded = {}

    def snapshot_bytes(self, machine_id: str, fields: Fields = None) -> bytes:
        """The latest snapshot of ``machine_id`` as JSON, encoded once per tick per variant."""
        key = (machine_id, fields)
        encoded = self._encoded.get(key)
        if encoded is None:
            if self.latest is None:
                raise LookupError("no frame has been published yet")
            encoded = self.encode(self.latest, machine_id, fields)
            self._encoded[key] = encoded
        return encoded

    def recent(self, seconds: float) -> list[Frame]:
        """Held frames within ``seconds`` of simulated time before the latest, oldest first."""
        latest = self.latest
        if latest is None:
            return []
        ticks = math.floor(seconds / self.dt_s + 1e-9)
        return list(self.history.after(latest.seq - ticks - 1))

    def csv(self, frames: list[Frame], machine_id: str, fields: Fields = None) -> str:
        """``frames`` of one machine as CSV text with a header line."""
        slot, row = self._placement[machine_id]
        template = self._template(slot, fields)
        labels = _labels(fields)
        lines = [template.csv_header(labels)]
        for frame in frames:
            values = template.select(frame.values[slot][:, row])
            cells = tuple(label_cells(frame, slot, row, labels)) if frame.state else ()
            timestamp = self.history.timestamp(frame.seq)
            lines.append(template.csv_row(timestamp, frame.seq, values, cells))
        return "".join(lines)

    def encode(self, frame: Frame, machine_id: str, fields: Fields = None) -> bytes:
        """One machine's snapshot from any frame (the latest or a held one)."""
        slot, row = self._placement[machine_id]
        template = self._template(slot, fields)
        values = template.select(frame.values[slot][:, row])
        self.encodes += 1
        timestamp = self.history.timestamp(frame.seq)
        tail = ""
        if frame.state:
            tail = label_json(frame, slot, row, _labels(fields), self._onset_stamp(frame))
        return template.encode(machine_id, timestamp, frame.seq, values, tail)

    def onset_timestamp(self, onset_s: float) -> str:
        """The timestamp of a simulated instant, on the latest frame's clock."""
        assert self.latest is not None
        return self._onset_stamp(self.latest)(onset_s)

    def _onset_stamp(self, frame: Frame) -> OnsetStamp:
        def stamp(onset_s: float) -> str:
            frame_epoch_s = parse_timestamp(self.history.timestamp(frame.seq))
            return iso_timestamp(frame_epoch_s - (frame.time_s - onset_s))

        return stamp

    def _template(self, slot: int, fields: Fields) -> SnapshotTemplate:
        template = self._templates.get((slot, fields))
        if template is None:
            model = self._models[slot]
            sensors = model.SENSORS
            if fields is not None:
                sensors = tuple(sensor for sensor in sensors if sensor.name in fields)
            template = SnapshotTemplate(model.TYPE_NAME, sensors, model.sensor_names())
            self._templates[(slot, fields)] = template
        return template


def _labels(fields: Fields) -> tuple[str, ...]:
    """The labels a variant carries: all of them, or those named in its fields."""
    return LABEL_FIELDS if fields is None else tuple(n for n in LABEL_FIELDS if n in fields)
