"""Fan-out: each variant's frame built once per tick, written to every subscriber's transport.

A *variant* is what a subscription asks for: one machine, a set of fields, a rate.
However many connections share a variant, its snapshot is encoded and framed once
per tick. A connection subscribed to several machines gets all of its frames of a
tick in one write.

Slow consumers: a connection whose transport holds more than ``send_buffer_bytes``
unsent skips frames (latest-value semantics: it gets the next tick it can take,
never a backlog). Once it has stayed over that bound for ``stall_timeout_s`` it is
closed with 1008 "slow consumer". The fan-out yields to the event loop every
``yield_every`` writes so handshakes and REST reads are not held behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from server.clock import Clock
from server.encoding import websocket_text_frame
from server.store import Fields, Store

SLOW_CONSUMER_CODE = 1008
SLOW_CONSUMER_REASON = "slow consumer"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VariantKey:
    machine_id: str
    fields: Fields
    every: int  # send on ticks whose seq is a multiple of this


@dataclass(eq=False, slots=True)
class Variant:
    key: VariantKey
    members: set[Connection] = field(default_factory=set)


@dataclass(eq=False, slots=True, kw_only=True)
class Connection:
    """One WebSocket and what it subscribed to."""

    peer: str
    transport: asyncio.WriteTransport
    close: Callable[[int, str], Awaitable[object]]
    subscriptions: dict[str, Variant] = field(default_factory=dict)
    pending: list[bytes] = field(default_factory=list)
    sent: int = 0
    dropped: int = 0
    over_bound_since: float | None = None
    evicted: bool = False


@dataclass(slots=True)
class HubStats:
    frames_sent: int = 0
    frames_dropped: int = 0
    slow_disconnects: int = 0
    disconnects: int = 0


@dataclass(slots=True)
class Hub:
    store: Store
    clock: Clock
    send_buffer_bytes: int
    stall_timeout_s: float
    yield_every: int = 256
    close_grace_s: float = 1.0
    stats: HubStats = field(default_factory=HubStats)
    connections: set[Connection] = field(default_factory=set)
    _variants: dict[VariantKey, Variant] = field(default_factory=dict)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def subscription_count(self) -> int:
        return sum(len(connection.subscriptions) for connection in self.connections)

    @property
    def variant_count(self) -> int:
        return len(self._variants)

    def connect(self, connection: Connection) -> None:
        self.connections.add(connection)

    def disconnect(self, connection: Connection) -> None:
        """Forget ``connection`` and every subscription it held."""
        self.unsubscribe(connection, list(connection.subscriptions))
        self.connections.discard(connection)
        self.stats.disconnects += 1

    def subscribe(self, connection: Connection, key: VariantKey) -> None:
        """Subscribe ``connection`` to ``key``, replacing its subscription to that machine."""
        self.unsubscribe(connection, [key.machine_id])
        variant = self._variants.get(key)
        if variant is None:
            variant = self._variants[key] = Variant(key)
        variant.members.add(connection)
        connection.subscriptions[key.machine_id] = variant

    def unsubscribe(self, connection: Connection, machine_ids: list[str]) -> None:
        for machine_id in machine_ids:
            variant = connection.subscriptions.pop(machine_id, None)
            if variant is None:
                continue
            variant.members.discard(connection)
            if not variant.members:
                del self._variants[variant.key]

    def answer(self, connection: Connection, payloads: list[bytes]) -> None:
        """Send answers to the client's own request (JSON texts) in one write.

        Answers go out past the send buffer bound: they are rate-limited and bounded
        in size (acks, errors, at most ``MAX_RESUME_FRAMES`` resumed frames), and
        skipping one would leave the client without the answer it waits for.
        """
        if not payloads or connection.evicted or connection.transport.is_closing():
            return
        connection.transport.write(b"".join(websocket_text_frame(text) for text in payloads))
        connection.sent += len(payloads)
        self.stats.frames_sent += len(payloads)

    async def broadcast(self) -> None:
        """Send every variant due at the latest tick to its subscribers."""
        frame_seq = self.store.latest.seq if self.store.latest is not None else 0
        now = self.clock.now()
        written = 0
        gathering: list[Connection] = []
        for variant in list(self._variants.values()):
            key = variant.key
            if frame_seq % key.every:
                continue
            frame = websocket_text_frame(self.store.snapshot_bytes(key.machine_id, key.fields))
            for connection in tuple(variant.members):
                if len(connection.subscriptions) == 1:
                    self._deliver(connection, frame, 1, now)
                    written += 1
                    if written % self.yield_every == 0:
                        await asyncio.sleep(0)
                else:
                    if not connection.pending:
                        gathering.append(connection)
                    connection.pending.append(frame)
        for connection in gathering:
            frames = connection.pending
            connection.pending = []
            self._deliver(connection, b"".join(frames), len(frames), now)
            written += 1
            if written % self.yield_every == 0:
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Wait for slow-consumer closes still under way."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _deliver(self, connection: Connection, data: bytes, frames: int, now: float) -> None:
        transport = connection.transport
        if connection.evicted or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.send_buffer_bytes:
            connection.dropped += frames
            self.stats.frames_dropped += frames
            if connection.over_bound_since is None:
                connection.over_bound_since = now
            elif now - connection.over_bound_since >= self.stall_timeout_s:
                self._evict(connection)
            return
        connection.over_bound_since = None
        transport.write(data)
        connection.sent += frames
        self.stats.frames_sent += frames

    def _evict(self, connection: Connection) -> None:
        connection.evicted = True
        self.stats.slow_disconnects += 1
        log.warning(
            "closing slow consumer %s after %.1f s over its send buffer bound",
            connection.peer,
            self.stall_timeout_s,
        )
        task = asyncio.create_task(self._close_slow(connection))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_slow(self, connection: Connection) -> None:
        """Queue the close frame; a peer that has not taken it within the grace is aborted."""
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(
                connection.close(SLOW_CONSUMER_CODE, SLOW_CONSUMER_REASON), self.close_grace_s
            )
        connection.transport.abort()
