"""The simulator's outlet on the bus: announce the run, then publish every tick once.

Each tick goes out as one message per shard, on the shard's channel (live) and appended to
the shard's capped stream (late joiners, gap repair), in one pipelined round trip. The work
runs on a :class:`~server.sinks.BackgroundSink`, so a slow or absent Redis never delays the
tick: while Redis is down the ticks are counted as unpublished, and after each failure the
next attempt waits a backoff (the ticks meanwhile are not queued: the bus gets the newest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis.asyncio as redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.bus.client import Backoff, BusError, redacted
from server.bus.wire import Announcement, BusKeys, encode_shard
from server.sinks import BackgroundSink
from simulation import Frame
from simulation.frame_bytes import encode_frame

LEASE_S = 5.0  # the simulator's claim on its prefix lapses this long after its last tick
LEASE_RENEW_S = 1.0
MIN_STREAM_ENTRIES = 2
PIPELINE_FLUSH_BYTES = 256 * 1024  # past this, the shards encoded so far are sent at once

log = logging.getLogger(__name__)


class LeaseHeldError(RuntimeError):
    """Another simulator publishes on this prefix."""


@dataclass(slots=True)
class PublisherStats:
    published: int = 0  # ticks published
    unpublished: int = 0  # ticks not published: Redis down, or waiting out a backoff
    failures: int = 0  # publish attempts that failed
    announcements: int = 0
    bytes_last_tick: int = 0
    bytes_total: int = 0
    messages_per_tick: int = 0
    largest_message_bytes: int = 0
    last_publish_s: float = 0.0
    stream_entries: int = 0  # the cap of each shard's stream


class BusPublisher:
    """Publishes one run's ticks; :attr:`sink` is the frame sink the engine is given."""

    def __init__(
        self,
        client: redis.Redis,
        keys: BusKeys,
        announcement: Announcement,
        *,
        url: str,
        stream_seconds: float,
        stream_max_bytes: int,
    ) -> None:
        self.client, self.keys, self.announcement = client, keys, announcement
        self.url = redacted(url)
        self.plan = announcement.plan
        self.stream_seconds, self.stream_max_bytes = stream_seconds, stream_max_bytes
        self.stats = PublisherStats()
        self.sink = BackgroundSink("bus", self.deliver, max_pending=2)
        self._announced = False
        self._cleared_streams = False
        self._retry_at = 0.0
        self._down_since: float | None = None
        self._lease_renewed_at = 0.0
        self._backoff = Backoff()

    @property
    def epoch(self) -> str:
        return self.announcement.epoch

    @property
    def connected(self) -> bool:
        return self._down_since is None and self._announced

    async def announce(self) -> None:
        """Claim the prefix, clear the streams of an earlier run, publish the announcement."""
        keys, epoch = self.keys, self.epoch
        claimed = await self.client.set(keys.lease, epoch, nx=True, px=int(LEASE_S * 1000))
        if not claimed:
            holder = _text(await self.client.get(keys.lease))
            if holder is not None and holder != epoch:
                raise LeaseHeldError(
                    f"another simulator (run {holder}) publishes on prefix "
                    f"{keys.prefix!r} of {self.url}; one simulator per plant, or give this one "
                    "another --bus-prefix"
                )
        if not self._cleared_streams:
            old = await self.client.get(keys.announcement)
            shards = self.plan.shard_count
            if old is not None:
                with contextlib.suppress(ValueError):
                    shards = max(shards, Announcement.from_json(old).plan.shard_count)
            await self.client.delete(*(keys.stream(shard) for shard in range(shards)))
            self._cleared_streams = True
        text = self.announcement.to_json()
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.announcement, text)
        pipe.publish(keys.announcements, text)
        await pipe.execute()
        self._announced = True
        self.stats.announcements += 1

    async def release(self) -> None:
        """Give up the prefix at shutdown, so the next simulator need not wait for the lease."""
        with contextlib.suppress(*BusError):
            if _text(await self.client.get(self.keys.lease)) == self.epoch:
                await self.client.delete(self.keys.lease)

    async def claim_at_start(self, timeout_s: float) -> None:
        """The first announcement, waiting out a lapsing lease of a simulator that just
        stopped; :class:`LeaseHeldError` if another one is still publishing. An unreachable
        Redis is logged, not fatal: the simulation steps and publishes once it is back."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.announce()
                log.info(
                    "bus: publishing run %s on %s (prefix %r, %d shard(s) of at most %d machines)",
                    self.epoch,
                    self.url,
                    self.keys.prefix,
                    self.plan.shard_count,
                    self.plan.machines_per_shard,
                )
                return
            except LeaseHeldError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(LEASE_RENEW_S / 2)
            except BusError as error:
                self._went_down(error)
                return

    async def deliver(self, frame: Frame, timestamp_s: float) -> None:
        now = time.time()
        if now < self._retry_at:
            self.stats.unpublished += 1
            return
        began = time.perf_counter()
        try:
            if not self._announced:
                await self.announce()
            pipe = self.client.pipeline(transaction=False)
            if now - self._lease_renewed_at >= LEASE_RENEW_S:
                pipe.set(self.keys.lease, self.epoch, px=int(LEASE_S * 1000))
                self._lease_renewed_at = now
            total = largest = pending = 0
            count = self.plan.shard_count
            for index, part in enumerate(self.plan.split(frame)):
                message = encode_shard(
                    self.epoch, index, count, time.time(), timestamp_s, encode_frame(part)
                )
                # Stream first: a web process that reads the streams before this entry is
                # subscribed by then, so it gets the live message; one that reads after has it.
                pipe.xadd(
                    self.keys.stream(index),
                    {b"f": message},
                    id=f"{frame.seq}-0",
                    maxlen=self._stream_entries(len(message)),
                    approximate=True,
                )
                pipe.publish(self.keys.ticks(index), message)
                total += len(message)
                pending += len(message)
                largest = max(largest, len(message))
                if pending >= PIPELINE_FLUSH_BYTES:  # a large tick goes out as it is encoded
                    await pipe.execute()
                    pending = 0
            await pipe.execute()
        except (*BusError, LeaseHeldError) as error:
            self.stats.failures += 1
            self.stats.unpublished += 1
            self._went_down(error)
            return
        if self._down_since is not None:
            log.info(
                "bus: publishing again after %.1f s down (%d tick(s) unpublished so far)",
                now - self._down_since,
                self.stats.unpublished,
            )
            self._down_since = None
            self._backoff.reset()
        stats = self.stats
        stats.published += 1
        stats.bytes_last_tick, stats.largest_message_bytes = total, largest
        stats.bytes_total += total
        stats.messages_per_tick = count
        stats.last_publish_s = time.perf_counter() - began

    def _went_down(self, error: BaseException) -> None:
        """Count an outage once, and wait a backoff before the next attempt; the announcement
        is made again then (a restarted Redis may have lost it)."""
        self._announced = False
        self._retry_at = time.time() + self._backoff.next_delay()
        if self._down_since is None:
            self._down_since = time.time()
            log.warning(
                "bus: cannot publish to %s (%s); the simulation goes on, ticks are counted "
                "as unpublished until it is back",
                self.url,
                error,
            )

    def collector(self) -> Collector:
        return _PublisherCollector(self)

    def _stream_entries(self, message_bytes: int) -> int:
        """Entries each shard's stream keeps: the seconds asked, within the byte bound."""
        by_time = round(self.stream_seconds * self.announcement.tick_hz)
        by_bytes = self.stream_max_bytes // (self.plan.shard_count * max(message_bytes, 1))
        entries = max(MIN_STREAM_ENTRIES, min(by_time, by_bytes))
        self.stats.stream_entries = entries
        return entries


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class _PublisherCollector(Collector):
    def __init__(self, publisher: BusPublisher) -> None:
        self.publisher = publisher

    def collect(self) -> Iterator[Metric]:
        publisher = self.publisher
        stats = publisher.stats
        yield GaugeMetricFamily(
            "dms_bus_connected",
            "1 while ticks are being published on the bus.",
            value=int(publisher.connected),
        )
        counters = (
            ("dms_bus_published_ticks", "Ticks published on the bus.", stats.published),
            (
                "dms_bus_unpublished_ticks",
                "Ticks not published: the bus was down (or backing off).",
                stats.unpublished,
            ),
            ("dms_bus_publish_failures", "Publish attempts that failed.", stats.failures),
            ("dms_bus_published_bytes", "Tick bytes published on the bus.", stats.bytes_total),
            ("dms_bus_announcements", "Announcements of this run made.", stats.announcements),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
        gauges = (
            ("dms_bus_tick_bytes", "Bytes the latest tick took on the bus.", stats.bytes_last_tick),
            ("dms_bus_tick_messages", "Messages (shards) per tick.", stats.messages_per_tick),
            (
                "dms_bus_message_max_bytes",
                "Largest message of the latest tick.",
                stats.largest_message_bytes,
            ),
            (
                "dms_bus_stream_entries",
                "Ticks each shard's capped stream keeps.",
                stats.stream_entries,
            ),
            (
                "dms_bus_publish_seconds",
                "Time the latest tick took to encode and publish.",
                stats.last_publish_s,
            ),
        )
        gauge_value: float
        for name, documentation, gauge_value in gauges:
            yield GaugeMetricFamily(name, documentation, value=gauge_value)
