"""What crosses the Redis bus: key names, the plant announcement and tick shards as bytes.

The simulator announces each run (an *epoch*: a fresh id per simulator run) with the fleet
catalog, the tick rate and the shard plan, and publishes each tick as one message per shard:
a 48-byte envelope (epoch, shard, publish time, simulated epoch time) before the shard's
frame bytes (:mod:`simulation.frame_bytes`). Web processes read nothing else.
"""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass
from typing import Any

from simulation.catalog import CatalogError, FleetCatalog
from simulation.fleet import Frame
from simulation.frame_bytes import FrameBytesError, decode_frame
from simulation.frame_shards import ShardPlan

ANNOUNCEMENT_VERSION = 1
MAGIC = b"DMSB"
VERSION = 1
_ENVELOPE = struct.Struct("<4sBBHH6x16sdd")  # magic, version, flags, shard, shards, epoch, times


class WireError(ValueError):
    """A bus message this version cannot read."""


@dataclass(frozen=True, slots=True)
class BusKeys:
    """Every Redis key and channel of one plant; ``prefix`` lets plants share a Redis."""

    prefix: str

    @property
    def announcement(self) -> str:
        """String key: the current epoch's announcement (JSON)."""
        return f"{self.prefix}:announcement"

    @property
    def announcements(self) -> str:
        """Channel: a new epoch's announcement, as it is made."""
        return f"{self.prefix}:announcements"

    @property
    def lease(self) -> str:
        """String key with expiry: the epoch of the one simulator publishing on this prefix."""
        return f"{self.prefix}:simulator"

    @property
    def control(self) -> str:
        """Channel: plant-control requests to the simulator."""
        return f"{self.prefix}:control"

    def reply(self, process_id: str) -> str:
        """Channel: the simulator's answers to one web process."""
        return f"{self.prefix}:reply:{process_id}"

    def ticks(self, shard: int) -> str:
        """Channel: one shard of every tick, live."""
        return f"{self.prefix}:ticks:{shard}"

    def stream(self, shard: int) -> str:
        """Capped stream: the last ticks of one shard, for late joiners and gap repair."""
        return f"{self.prefix}:stream:{shard}"


@dataclass(frozen=True, slots=True)
class Announcement:
    """A simulator run: its epoch, its fleet, its tick rate and how its ticks are sharded."""

    epoch: str
    catalog: FleetCatalog
    tick_hz: float
    speed: float
    machines_per_shard: int
    started_at: float  # epoch seconds

    @classmethod
    def fresh(
        cls,
        catalog: FleetCatalog,
        *,
        tick_hz: float,
        speed: float,
        machines_per_shard: int,
        started_at: float,
    ) -> Announcement:
        return cls(uuid.uuid4().hex, catalog, tick_hz, speed, machines_per_shard, started_at)

    @property
    def plan(self) -> ShardPlan:
        return ShardPlan.for_catalog(self.catalog, self.machines_per_shard)

    def serves_as(self, other: Announcement) -> bool:
        """Whether a web process built for ``other`` can serve this epoch in place: the same
        machines, types, step and rate (only the seed and the epoch may differ)."""
        ours, theirs = _fleet_document(self), _fleet_document(other)
        return ours == theirs

    def to_json(self) -> str:
        return json.dumps(
            {
                "announcement_version": ANNOUNCEMENT_VERSION,
                "epoch": self.epoch,
                "tick_hz": self.tick_hz,
                "speed": self.speed,
                "machines_per_shard": self.machines_per_shard,
                "started_at": self.started_at,
                "catalog": json.loads(self.catalog.to_json()),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Announcement:
        try:
            document = json.loads(text)
            if document.get("announcement_version") != ANNOUNCEMENT_VERSION:
                raise WireError(
                    f"announcement version {document.get('announcement_version')!r} is not "
                    f"{ANNOUNCEMENT_VERSION}"
                )
            return cls(
                epoch=str(document["epoch"]),
                catalog=FleetCatalog.from_json(json.dumps(document["catalog"])),
                tick_hz=float(document["tick_hz"]),
                speed=float(document["speed"]),
                machines_per_shard=int(document["machines_per_shard"]),
                started_at=float(document["started_at"]),
            )
        except WireError:
            raise
        except (CatalogError, ValueError, TypeError, KeyError, AttributeError) as error:
            raise WireError(f"not an announcement: {error}") from None


def _fleet_document(announcement: Announcement) -> tuple[Any, ...]:
    document = json.loads(announcement.catalog.to_json())
    document.pop("seed")
    return (document, announcement.tick_hz, announcement.speed, announcement.machines_per_shard)


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard of one tick, as read from the bus."""

    epoch: str
    index: int
    count: int
    published_at: float  # epoch seconds when the simulator published it
    timestamp_s: float  # epoch time of the tick's simulated instant
    frame: Frame


def encode_shard(
    epoch: str, index: int, count: int, published_at: float, timestamp_s: float, frame: bytes
) -> bytes:
    envelope = _ENVELOPE.pack(
        MAGIC, VERSION, 0, index, count, bytes.fromhex(epoch), published_at, timestamp_s
    )
    return envelope + frame


def decode_shard(data: bytes) -> Shard:
    """The shard :func:`encode_shard` wrote; :class:`WireError` for anything else."""
    try:
        magic, version, _, index, count, epoch, published_at, timestamp_s = _ENVELOPE.unpack_from(
            data, 0
        )
    except struct.error:
        raise WireError(f"a bus message of {len(data)} bytes is too short") from None
    if magic != MAGIC or version != VERSION:
        raise WireError(f"not a version {VERSION} shard (magic {magic!r}, v{version})")
    if not index < count:
        raise WireError(f"shard {index} of {count}")
    try:
        frame = decode_frame(memoryview(data)[_ENVELOPE.size :])
    except FrameBytesError as error:
        raise WireError(str(error)) from None
    return Shard(epoch.hex(), index, count, published_at, timestamp_s, frame)


ENVELOPE_BYTES = _ENVELOPE.size
