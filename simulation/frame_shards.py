"""Frames cut into shards of at most N machines, and joined back: exact, in any fleet size.

A bus message carries one shard, so no message grows with the fleet. The machines are taken
in slot order (slot 0's columns, then slot 1's, ...) and cut every ``machines_per_shard``;
a shard is itself a :class:`~simulation.fleet.Frame` with every slot, each holding its
column range of that shard (often empty), so it crosses the bus as frame bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simulation.catalog import FleetCatalog
from simulation.faults import FaultSet
from simulation.fleet import Frame
from simulation.spec import LABELS

_ARRAY_LABELS = tuple(label.name for label in LABELS if label.kind in ("float", "category"))
_FAULT_LABELS = tuple(label.name for label in LABELS if label.kind == "faults")

Bounds = tuple[tuple[int, int], ...]  # per slot, the half-open column range of one shard


class ShardError(ValueError):
    """Shards that do not make up one frame of this plan."""


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """Which columns of which slot each shard holds, for a fleet of ``counts`` per slot."""

    counts: tuple[int, ...]
    machines_per_shard: int
    bounds: tuple[Bounds, ...]

    @classmethod
    def for_counts(cls, counts: Sequence[int], machines_per_shard: int) -> ShardPlan:
        if machines_per_shard < 1:
            raise ValueError("a shard holds at least one machine")
        total = sum(counts)
        shards = max(1, -(-total // machines_per_shard))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        bounds = tuple(
            tuple(
                (
                    int(np.clip(shard * machines_per_shard - offsets[slot], 0, count)),
                    int(np.clip((shard + 1) * machines_per_shard - offsets[slot], 0, count)),
                )
                for slot, count in enumerate(counts)
            )
            for shard in range(shards)
        )
        return cls(tuple(counts), machines_per_shard, bounds)

    @classmethod
    def for_catalog(cls, catalog: FleetCatalog, machines_per_shard: int) -> ShardPlan:
        return cls.for_counts([len(ids) for ids in catalog.columns], machines_per_shard)

    @property
    def shard_count(self) -> int:
        return len(self.bounds)

    def shard_of(self, slot: int, column: int) -> int:
        """The shard that holds column ``column`` of slot ``slot``."""
        return (sum(self.counts[:slot]) + column) // self.machines_per_shard

    def split(self, frame: Frame) -> list[Frame]:
        """``frame`` as :attr:`shard_count` frames (views where numpy allows)."""
        return [self._part(frame, bounds) for bounds in self.bounds]

    def join(self, parts: Sequence[Frame]) -> Frame:
        """The frame whose shards ``parts`` are (every shard of one seq, in shard order)."""
        if len(parts) != self.shard_count:
            raise ShardError(f"{len(parts)} shards, the plan has {self.shard_count}")
        first = parts[0]
        for shard, (part, bounds) in enumerate(zip(parts, self.bounds, strict=True)):
            if part.seq != first.seq:
                raise ShardError(f"shard {shard} is of seq {part.seq}, not {first.seq}")
            widths = tuple(values.shape[1] for values in part.values)
            if widths != tuple(high - low for low, high in bounds):
                raise ShardError(f"shard {shard} holds {widths} machines per slot, not its plan's")
        if len(parts) == 1:
            return first
        slots = range(len(self.counts))
        labels: dict[str, tuple[object, ...]] = {
            name: tuple(
                np.concatenate([getattr(part, name)[slot] for part in parts]) for slot in slots
            )
            for name in _ARRAY_LABELS
        }
        for name in _FAULT_LABELS:
            labels[name] = tuple(
                _join_faults(
                    [getattr(part, name)[slot] for part in parts],
                    [bounds[slot][0] for bounds in self.bounds],
                )
                for slot in slots
            )
        values = tuple(
            np.concatenate([part.values[slot] for part in parts], axis=1) for slot in slots
        )
        return Frame(seq=first.seq, time_s=first.time_s, values=values, **labels)  # type: ignore[arg-type]

    def _part(self, frame: Frame, bounds: Bounds) -> Frame:
        labels: dict[str, tuple[object, ...]] = {
            name: tuple(
                array[low:high]
                for array, (low, high) in zip(getattr(frame, name), bounds, strict=True)
            )
            for name in _ARRAY_LABELS
        }
        for name in _FAULT_LABELS:
            labels[name] = tuple(
                _slice_faults(faults, low, high)
                for faults, (low, high) in zip(getattr(frame, name), bounds, strict=True)
            )
        values = tuple(
            values[:, low:high] for values, (low, high) in zip(frame.values, bounds, strict=True)
        )
        return Frame(seq=frame.seq, time_s=frame.time_s, values=values, **labels)  # type: ignore[arg-type]


def _slice_faults(faults: FaultSet, low: int, high: int) -> FaultSet:
    first, last = np.searchsorted(faults.instances, (low, high))
    return FaultSet(faults.records[first:last], faults.instances[first:last] - low)


def _join_faults(parts: Sequence[FaultSet], lows: Sequence[int]) -> FaultSet:
    records = tuple(record for part in parts for record in part.records)
    instances = np.concatenate(
        [part.instances + low for part, low in zip(parts, lows, strict=True)]
    ).astype(np.int64, copy=False)
    return FaultSet(records, instances)
