"""A web process's frames: the simulator's ticks read from the bus and handed to its sinks.

One subscription carries the announcements, every shard's ticks and this process's control
replies. It is drained at once (a frame is decoded and handed to the store, which wakes the
fan-out on its own task), so Redis never finds this process a slow subscriber.

On (re)connecting, the feed subscribes first, then reads the announcement and the shards'
capped streams from just after the last seq it holds, so nothing published meanwhile is lost
between the two; the buffered live messages it already has are then skipped. Ticks neither
source still holds are counted as missed: the clients see a jump in seq, never a repeat or a
reordering. A new run of the simulator (a new epoch) starts the store over at its first frame
(:meth:`~server.store.Store.reset`); a run whose fleet differs cannot be served in place, so
the process stops, to be started again on it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.bus.client import Backoff, BusError, redacted
from server.bus.wire import Announcement, BusKeys, Shard, WireError, decode_shard
from server.clock import Clock
from server.engine import EngineStats
from server.sinks import SinkSet
from server.store import Store
from simulation import Frame
from simulation.catalog import FleetCatalog
from simulation.frame_shards import ShardError

READ_TIMEOUT_S = 1.0
WAIT_LOG_EVERY_S = 10.0
HOP_SAMPLES = 2_000  # recent publish-to-receipt delays kept for the percentiles

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FeedStats:
    connected: bool = False
    reconnects: int = 0
    missed_ticks: int = 0  # seqs neither the live channel nor the streams still had
    backfilled_ticks: int = 0  # ticks taken from the streams after a (re)connect
    incomplete_ticks: int = 0  # ticks of which a shard never came
    bad_messages: int = 0
    foreign_messages: int = 0  # shards of a run this process does not serve (yet)
    runs: int = 0  # simulator runs served (1 + resets)
    bytes_received: int = 0
    # publish-to-receipt of each live message, and first shard's publish to the whole
    # tick handed on (what a dashboard waits for)
    hops_s: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=HOP_SAMPLES)
    )
    tick_delays_s: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=HOP_SAMPLES)
    )


class BusFeed:
    """Frames from the bus for this process's sinks; the store is reset on a new run."""

    def __init__(
        self, client: redis.Redis, keys: BusKeys, *, clock: Clock, url: str, process_id: str
    ) -> None:
        self.client, self.keys, self.clock = client, keys, clock
        self.url = redacted(url)
        self.process_id = process_id
        self.stats = EngineStats()
        self.bus = FeedStats()
        self.sinks = SinkSet([])
        self.store: Store | None = None
        self.announcement: Announcement | None = None
        self.on_reply: Callable[[bytes], None] = lambda data: None
        self.on_fatal: Callable[[str], None] = lambda reason: None
        self._pubsub: redis.client.PubSub | None = None
        self._pending_run: Announcement | None = None
        self._parts: list[Shard] = []
        self._task: asyncio.Task[None] | None = None
        self._first_frame = asyncio.Event()
        self._backoff = Backoff()
        self._reread_announcement = False

    # -- FrameFeed ---------------------------------------------------------------------------

    @property
    def catalog(self) -> FleetCatalog:
        assert self.announcement is not None, "open() reads the announcement first"
        return self.announcement.catalog

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Run the feed; return once the first frame is in the store."""
        assert self.store is not None, "the app gives the feed its store"
        self._task = asyncio.create_task(self._run_logged(), name="bus-feed")
        waited = 0.0
        while not self._first_frame.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_frame.wait(), WAIT_LOG_EVERY_S)
            if not self._first_frame.is_set():
                if not self.alive:
                    await self._task  # raises what ended it
                waited += WAIT_LOG_EVERY_S
                log.info("bus: waited %.0f s for the simulator's first tick", waited)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_pubsub()
        await self.sinks.close()
        await self.client.aclose()

    # -- connecting --------------------------------------------------------------------------

    async def open(self) -> Announcement:
        """Subscribe and read the current run's announcement, waiting for a simulator to make
        one (and for Redis to be there) as long as it takes."""
        waited_since = time.monotonic()
        logged_at = 0.0
        while True:
            try:
                await self._subscribe()
                announcement = await self._read_announcement()
                if announcement is None:
                    announcement = await self._wait_announcement(WAIT_LOG_EVERY_S)
                if announcement is not None:
                    self.announcement = announcement
                    await self._subscribe_ticks(announcement)
                    log.info(
                        "bus: serving run %s from %s (%d machines, %g Hz, %d shard(s))",
                        announcement.epoch,
                        self.url,
                        announcement.catalog.size,
                        announcement.tick_hz,
                        announcement.plan.shard_count,
                    )
                    return announcement
                reason = "no simulator has announced a run"
            except BusError as error:
                await self._close_pubsub()
                reason = f"cannot reach it ({error})"
                await asyncio.sleep(self._backoff.next_delay())
            if time.monotonic() - logged_at >= WAIT_LOG_EVERY_S:
                logged_at = time.monotonic()
                log.warning(
                    "bus: waiting for a simulator on %s (prefix %r): %s; %.0f s so far",
                    self.url,
                    self.keys.prefix,
                    reason,
                    logged_at - waited_since,
                )

    async def _subscribe(self) -> None:
        await self._close_pubsub()
        self._pubsub = self.client.pubsub()
        await self._pubsub.subscribe(self.keys.announcements, self.keys.reply(self.process_id))

    async def _subscribe_ticks(self, announcement: Announcement) -> None:
        assert self._pubsub is not None
        channels = [self.keys.ticks(shard) for shard in range(announcement.plan.shard_count)]
        await self._pubsub.subscribe(*channels)

    async def _close_pubsub(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            with contextlib.suppress(*BusError):
                await pubsub.aclose()

    async def _read_announcement(self) -> Announcement | None:
        text = await self.client.get(self.keys.announcement)
        if text is None:
            return None
        try:
            return Announcement.from_json(text)
        except WireError as error:
            self.bus.bad_messages += 1
            log.warning("bus: unreadable announcement: %s", error)
            return None

    async def _wait_announcement(self, timeout_s: float) -> Announcement | None:
        """The next announcement published, within ``timeout_s``."""
        assert self._pubsub is not None
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=min(left, READ_TIMEOUT_S)
            )
            if message is not None and _channel(message) == self.keys.announcements:
                with contextlib.suppress(WireError):
                    return Announcement.from_json(message["data"])
        return None

    # -- running -----------------------------------------------------------------------------

    async def _run_logged(self) -> None:
        try:
            await self._run()
        except Exception:
            log.exception("the bus feed failed; no more ticks will be served")
            raise

    async def _run(self) -> None:
        """Backfill, then take live messages; on a lost link, reconnect with backoff."""
        first = True
        while True:
            try:
                if not first:
                    await self._reconnect()
                first = False
                await self._backfill()
                self.bus.connected = True
                self._backoff.reset()
                await self._listen()
            except BusError as error:
                self.bus.connected = False
                self.bus.reconnects += 1
                delay = self._backoff.next_delay()
                log.warning(
                    "bus: lost %s (%s); clients stay connected, reconnecting in %.1f s",
                    self.url,
                    error,
                    delay,
                )
                await self._close_pubsub()
                await asyncio.sleep(delay)

    async def _reconnect(self) -> None:
        await self._subscribe()
        announcement = await self._read_announcement()
        assert self.announcement is not None
        await self._subscribe_ticks(self.announcement)
        if announcement is not None and announcement.epoch != self.announcement.epoch:
            self._new_run(announcement)
        log.info("bus: reconnected to %s", self.url)

    async def _listen(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        reply_channel = self.keys.reply(self.process_id)
        while True:
            if self._reread_announcement:
                self._reread_announcement = False
                announcement = await self._read_announcement()
                if announcement is not None:
                    self._new_run(announcement)
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=READ_TIMEOUT_S
            )
            if message is None:
                continue
            channel, data = _channel(message), message["data"]
            if channel == reply_channel:
                self.on_reply(data)
            elif channel == self.keys.announcements:
                try:
                    self._new_run(Announcement.from_json(data))
                except WireError as error:
                    self.bus.bad_messages += 1
                    log.warning("bus: unreadable announcement: %s", error)
            else:
                self.bus.bytes_received += len(data)
                self._take_live(data)

    async def _backfill(self) -> None:
        """Every complete tick the streams hold after the last seq handed on, oldest first."""
        announcement = self.announcement
        assert announcement is not None
        count = announcement.plan.shard_count
        # A new run's seqs start over: take its streams from the start.
        after = f"({self.stats.seq}-0" if self.stats.seq and self._pending_run is None else "-"
        by_seq: dict[int, list[Shard | None]] = {}
        for index in range(count):
            entries: Any = await self.client.xrange(self.keys.stream(index), after, "+")
            for entry_id, fields in entries:
                try:
                    seq = int(bytes(entry_id).split(b"-")[0])
                    shard = decode_shard(fields[b"f"])
                except (WireError, KeyError, ValueError, TypeError):
                    self.bus.bad_messages += 1
                    continue
                by_seq.setdefault(seq, [None] * count)[index] = shard
        taken = 0
        for seq in sorted(by_seq):
            parts = by_seq[seq]
            if any(part is None for part in parts):
                continue  # trimmed from one stream already
            taken += self._take([part for part in parts if part is not None], live=False)
        self.bus.backfilled_ticks += taken
        if taken:
            log.info("bus: %d tick(s) taken from the streams, up to seq %d", taken, self.stats.seq)

    # -- frames ------------------------------------------------------------------------------

    def _take_live(self, data: bytes) -> None:
        received_at = time.time()
        try:
            shard = decode_shard(data)
        except WireError as error:
            self.bus.bad_messages += 1
            if self.bus.bad_messages % 100 == 1:
                log.warning("bus: unreadable tick message: %s", error)
            return
        self.bus.hops_s.append(received_at - shard.published_at)
        parts = self._parts
        if parts and (shard.frame.seq != parts[0].frame.seq or shard.index != len(parts)):
            self.bus.incomplete_ticks += 1
            parts.clear()
        if shard.index != len(parts):
            return  # the rest of a tick whose first shards came before this connection
        parts.append(shard)
        if len(parts) == shard.count:
            self._parts = []
            self._take(parts, live=True)

    def _take(self, parts: list[Shard], *, live: bool) -> int:
        """Hand on the frame these shards make; 1 if it was new, else 0."""
        first = parts[0]
        announcement = self.announcement
        assert announcement is not None
        if first.epoch != announcement.epoch:
            pending = self._pending_run
            if pending is None or first.epoch != pending.epoch:
                self.bus.foreign_messages += 1
                self._reread_announcement = True  # a run announced while this was away
                return 0
            frame = self._join(parts, pending)
            if frame is None:
                return 0
            self._start_run(pending, frame, first.timestamp_s)
            return 1
        if first.frame.seq <= self.stats.seq:
            return 0  # held already (from the streams)
        frame = self._join(parts, announcement)
        if frame is None:
            return 0
        if self.stats.seq and frame.seq > self.stats.seq + 1:
            self.bus.missed_ticks += frame.seq - self.stats.seq - 1
            self.stats.skipped_ticks = self.bus.missed_ticks
        self._hand_on(frame, first.timestamp_s)
        if live:
            self.bus.tick_delays_s.append(time.time() - first.published_at)
        return 1

    def _join(self, parts: list[Shard], announcement: Announcement) -> Frame | None:
        try:
            return announcement.plan.join([part.frame for part in parts])
        except ShardError as error:
            self.bus.bad_messages += 1
            log.warning("bus: shards that do not make a tick: %s", error)
            return None

    def _hand_on(self, frame: Frame, timestamp_s: float) -> None:
        began = self.clock.now()
        self.sinks.publish(frame, timestamp_s)
        finished = self.clock.now()
        stats = self.stats
        stats.ticks += 1
        stats.seq = frame.seq
        stats.last_tick_at = finished
        stats.last_tick_s = finished - began
        self._first_frame.set()

    def _new_run(self, announcement: Announcement) -> None:
        """A run was announced: serve it from its first frame, or stop if it cannot be."""
        current = self.announcement
        assert current is not None
        if announcement.epoch == current.epoch:
            return
        if not announcement.serves_as(current):
            self.on_fatal(
                f"the simulator started run {announcement.epoch} with another fleet or rate "
                f"({announcement.catalog.size} machines at {announcement.tick_hz:g} Hz, this "
                f"process serves {current.catalog.size} at {current.tick_hz:g} Hz); a restart "
                "serves it"
            )
            return
        self._pending_run = announcement
        log.info("bus: the simulator announced a new run %s", announcement.epoch)

    def _start_run(self, announcement: Announcement, frame: Frame, timestamp_s: float) -> None:
        assert self.store is not None
        self.announcement, self._pending_run = announcement, None
        self.bus.runs += 1
        self.store.reset(announcement.catalog, announcement.epoch, frame, timestamp_s)
        stats = self.stats
        stats.ticks += 1
        stats.seq = frame.seq
        stats.last_tick_at = self.clock.now()
        log.info(
            "bus: run %s serves from seq %d (a reset for clients)", announcement.epoch, frame.seq
        )

    # -- metrics -----------------------------------------------------------------------------

    def collector(self) -> Collector:
        return _FeedCollector(self)


class _FeedCollector(Collector):
    def __init__(self, feed: BusFeed) -> None:
        self.feed = feed

    def collect(self) -> Iterator[Metric]:
        bus = self.feed.bus
        yield GaugeMetricFamily(
            "dms_bus_connected", "1 while the bus subscription is up.", value=int(bus.connected)
        )
        for name, documentation, value in (
            ("dms_bus_reconnects", "Times the bus link was lost and made again.", bus.reconnects),
            (
                "dms_bus_missed_ticks",
                "Ticks lost to a bus outage (a jump in seq).",
                bus.missed_ticks,
            ),
            (
                "dms_bus_backfilled_ticks",
                "Ticks read from the streams after a (re)connect.",
                bus.backfilled_ticks,
            ),
            (
                "dms_bus_incomplete_ticks",
                "Ticks of which a shard never came.",
                bus.incomplete_ticks,
            ),
            ("dms_bus_bad_messages", "Bus messages that could not be read.", bus.bad_messages),
            ("dms_bus_received_bytes", "Tick bytes received from the bus.", bus.bytes_received),
        ):
            yield CounterMetricFamily(name, documentation, value=value)
        yield _quantiles(
            "dms_bus_hop_seconds",
            "Publish-to-receipt delay of recent tick messages (shards).",
            bus.hops_s,
        )
        yield _quantiles(
            "dms_bus_tick_delay_seconds",
            "From a tick's first message published to the whole tick handed to the store.",
            bus.tick_delays_s,
        )


def _quantiles(name: str, documentation: str, samples: Iterable[float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["quantile"])
    ordered = sorted(samples)
    if len(ordered) >= 2:
        cuts = statistics.quantiles(ordered, n=100)
        family.add_metric(["0.5"], cuts[49])
        family.add_metric(["0.99"], cuts[98])
    return family


def _channel(message: dict[str, object]) -> str:
    channel = message["channel"]
    return channel.decode() if isinstance(channel, bytes) else str(channel)
