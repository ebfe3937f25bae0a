"""Fan-out: each variant's frame built once per tick, written to every subscriber's transport.

The hub runs on a task of its own (:meth:`Hub.run`), woken by the store when a frame is
published: a slow broadcast never delays the tick. If frames arrive faster than it can send
them, it sends the newest and skips the ones between (subscribers see the jump in ``seq``;
the history still holds them, for ``since`` resumes). Every answer to a client's own request
(the first snapshot, resumed frames) is taken from the frame the hub is on, and a
subscription made during a broadcast joins after it, so no subscriber ever gets a ``seq``
twice or out of order.

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
from simulation import Frame

SLOW_CONSUMER_CODE = 1008
SLOW_CONSUMER_REASON = "slow consumer"
RESET_CODE = 1012  # service restart: reconnect for the new run's frames
RESET_REASON = "plant reset: a new simulator run"

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
    transport: asyncio.Transport
    close: Callable[[int, str], Awaitable[object]]
    # Told of a new simulator run before its first frame; None: closed with RESET_CODE.
    on_reset: Callable[[Frame], None] | None = None
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
    skipped_ticks: int = 0  # published frames the fan-out passed over for a newer one
    resets: int = 0  # new simulator runs the subscribers were told of
    broadcast_seconds_total: float = 0.0
    last_broadcast_s: float = 0.0


class Hub:
    """Variants, their subscribers and the slow-consumer policy; broadcasts on its own task."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        send_buffer_bytes: int,
        stall_timeout_s: float,
        yield_every: int = 256,
        close_grace_s: float = 1.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.send_buffer_bytes = send_buffer_bytes
        self.stall_timeout_s = stall_timeout_s
        self.yield_every = yield_every
        self.close_grace_s = close_grace_s
        self.stats = HubStats()
        self.connections: set[Connection] = set()
        self.frame: Frame | None = None  # the frame broadcast last, or being broadcast
        self.generation = 0  # the store's generation the hub stands on
        self._variants: dict[VariantKey, Variant] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._broadcasting = False
        self._joining: list[tuple[Connection, Variant]] = []

    @property
    def seq(self) -> int:
        """The seq of :attr:`frame` (0 before the first)."""
        return self.frame.seq if self.frame is not None else 0

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
        """Subscribe ``connection`` to ``key``, replacing its subscription to that machine.

        During a broadcast the connection joins the variant once the broadcast is over.
        """
        self.unsubscribe(connection, [key.machine_id])
        variant = self._variants.get(key)
        if variant is None:
            variant = self._variants[key] = Variant(key)
        connection.subscriptions[key.machine_id] = variant
        if self._broadcasting:
            self._joining.append((connection, variant))
        else:
            variant.members.add(connection)

    def unsubscribe(self, connection: Connection, machine_ids: list[str]) -> None:
        for machine_id in machine_ids:
            variant = connection.subscriptions.pop(machine_id, None)
            if variant is None:
                continue
            variant.members.discard(connection)
            if not variant.members and self._variants.get(variant.key) is variant:
                del self._variants[variant.key]

    def answer(self, connection: Connection, payloads: list[bytes]) -> None:
        """Send answers to the client's own request (JSON texts) in one write.

        Answers are bounded in size (acks, errors, resumed frames up to the send buffer
        bound) and rate-limited; skipping one would leave the client without the answer it
        waits for, so a client that asks while it is over its send buffer bound (it does not
        read) is closed with 1008 instead: its memory stays bounded whatever it sends.
        """
        if not payloads or connection.evicted or connection.transport.is_closing():
            return
        if connection.transport.get_write_buffer_size() > self.send_buffer_bytes:
            # It asks while it does not read what it was sent: answering would grow the
            # buffer without bound, so it is closed as a slow consumer instead.
            self._evict(connection, "asks while over its send buffer bound")
            return
        connection.transport.write(b"".join(websocket_text_frame(text) for text in payloads))
        connection.sent += len(payloads)
        self.stats.frames_sent += len(payloads)

    def snapshot(self, machine_id: str, fields: Fields) -> bytes:
        """A machine's snapshot of the hub's current frame, for an answer."""
        assert self.frame is not None, "the hub starts on the store's first frame"
        return self.store.snapshot_of(self.frame, machine_id, fields)

    def start(self) -> None:
        """Stand on the store's latest frame (the first one), before any subscriber."""
        self.frame = self.store.latest
        self.generation = self.store.generation

    async def run(self) -> None:
        """Broadcast each newer frame the store publishes, the newest first, until cancelled."""
        while True:
            frame = await self.store.wait_newer(self.seq, self.generation)
            if self.store.generation != self.generation:
                self._reset(frame)
            await self.broadcast(frame)

    def _reset(self, frame: Frame) -> None:
        """A new run: tell each subscriber before its first frame (or close it, 1012), so no
        one gets frames of two runs without knowing."""
        self.generation = self.store.generation
        self.frame = None
        self.stats.resets += 1
        for connection in list(self.connections):
            if connection.on_reset is not None:
                connection.on_reset(frame)
            elif not connection.evicted:
                connection.evicted = True
                self._close_soon(connection, RESET_CODE, RESET_REASON)

    async def broadcast(self, frame: Frame) -> None:
        """Send every variant due at ``frame`` to its subscribers; then let new ones join."""
        if self.frame is not None and frame.seq > self.frame.seq + 1:
            self.stats.skipped_ticks += frame.seq - self.frame.seq - 1
        self.frame = frame
        self._broadcasting = True
        began = self.clock.now()
        try:
            await self._send_all(frame)
        finally:
            self._broadcasting = False
            self._join()
        elapsed = self.clock.now() - began
        self.stats.last_broadcast_s = elapsed
        self.stats.broadcast_seconds_total += elapsed

    def _join(self) -> None:
        joining, self._joining = self._joining, []
        for connection, variant in joining:
            if connection.subscriptions.get(variant.key.machine_id) is not variant:
                continue  # unsubscribed, replaced or disconnected meanwhile
            current = self._variants.setdefault(variant.key, variant)
            current.members.add(connection)
            connection.subscriptions[variant.key.machine_id] = current

    async def _send_all(self, frame: Frame) -> None:
        frame_seq = frame.seq
        now = self.clock.now()
        written = 0
        gathering: list[Connection] = []
        for variant in list(self._variants.values()):
            key = variant.key
            if frame_seq % key.every:
                continue
            data = websocket_text_frame(self.store.snapshot_of(frame, key.machine_id, key.fields))
            for connection in tuple(variant.members):
                if len(connection.subscriptions) == 1:
                    self._deliver(connection, data, 1, now)
                    written += 1
                    if written % self.yield_every == 0:
                        await asyncio.sleep(0)
                else:
                    if not connection.pending:
                        gathering.append(connection)
                    connection.pending.append(data)
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

    async def close_all(self, code: int, reason: str, *, timeout_s: float) -> None:
        """Close every connection at once (on shutdown: 1001, going away); abort those whose
        close has not completed within ``timeout_s`` (stalled or half-open peers)."""
        closing = {
            asyncio.ensure_future(connection.close(code, reason)): connection
            for connection in list(self.connections)
        }
        if not closing:
            return
        _, late = await asyncio.wait(closing, timeout=timeout_s)
        for task in late:
            closing[task].transport.abort()
            task.cancel()
        await asyncio.gather(*closing, return_exceptions=True)
        if late:
            log.warning(
                "aborted %d connection(s) that did not close in %.1f s", len(late), timeout_s
            )

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

    def _evict(self, connection: Connection, why: str | None = None) -> None:
        connection.evicted = True
        self.stats.slow_disconnects += 1
        why = why or f"{self.stall_timeout_s:.1f} s over its send buffer bound"
        log.warning("closing slow consumer %s: %s", connection.peer, why)
        # Nothing it sends now is read: its queue of unread messages stops growing, and no
        # late message re-arms aiohttp's heartbeat timer, which would keep the closed
        # socket (and that queue) alive for a heartbeat interval.
        connection.transport.pause_reading()
        self._close_soon(connection, SLOW_CONSUMER_CODE, SLOW_CONSUMER_REASON)

    def _close_soon(self, connection: Connection, code: int, reason: str) -> None:
        task = asyncio.create_task(self._close(connection, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, connection: Connection, code: int, reason: str) -> None:
        """Queue the close frame; a peer that has not taken it within the grace is aborted."""
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(connection.close(code, reason), self.close_grace_s)
        connection.transport.abort()
