"""The state store: the latest frame of the whole fleet and its lazily encoded snapshots."""

from __future__ import annotations

from server.encoding import SnapshotTemplate, iso_timestamp
from simulation import Fleet, Frame


class Store:
    """Holds the latest frame; encodes a machine's snapshot at most once per tick, on demand."""

    def __init__(self, fleet: Fleet, *, epoch_s: float) -> None:
        self._placement = fleet.placement
        self._templates = tuple(
            SnapshotTemplate(model.TYPE_NAME, model.SENSORS) for model in fleet.models
        )
        self.machine_types = {
            machine.machine_id: machine.machine_type for machine in fleet.spec.machines
        }
        self.epoch_s = epoch_s
        self.latest: Frame | None = None
        self._timestamp = ""
        self._encoded: dict[str, bytes] = {}
        self.encodes = 0

    def __contains__(self, machine_id: object) -> bool:
        return machine_id in self._placement

    def publish(self, frame: Frame) -> None:
        """Make ``frame`` the latest; snapshots of the previous one are forgotten."""
        self.latest = frame
        self._timestamp = iso_timestamp(self.epoch_s + frame.time_s)
        self._encoded = {}

    def snapshot_bytes(self, machine_id: str) -> bytes:
        """The latest snapshot of ``machine_id`` as JSON bytes, encoded once per tick."""
        encoded = self._encoded.get(machine_id)
        if encoded is None:
            frame = self.latest
            if frame is None:
                raise LookupError("no frame has been published yet")
            slot, row = self._placement[machine_id]
            values = frame.values[slot][:, row].tolist()
            encoded = self._templates[slot].encode(machine_id, self._timestamp, frame.seq, values)
            self._encoded[machine_id] = encoded
            self.encodes += 1
        return encoded
