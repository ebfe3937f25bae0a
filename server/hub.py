"""Fan-out: per machine, one encoded frame written to every subscriber's transport.

Policy for slow consumers: a subscriber whose transport holds more than
``send_buffer_bytes`` unsent skips frames (latest-value semantics: it gets the
next frame it can take, never a backlog). Once it has stayed over that bound for
``stall_timeout_s`` it is closed with 1008 "slow consumer". The fan-out yields to
the event loop every ``yield_every`` writes so handshakes and REST reads are not
held behind a whole broadcast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from server.clock import Clock
from server.encoding import websocket_text_frame
from server.store import Store

SLOW_CONSUMER_CODE = 1008
SLOW_CONSUMER_REASON = "slow consumer"

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True, kw_only=True)
class Subscriber:
    """One WebSocket receiving one machine's frames."""

    machine_id: str
    peer: str
    transport: asyncio.WriteTransport
    close: Callable[[int, str], Awaitable[object]]
    sent: int = 0
    dropped: int = 0
    over_bound_since: float | None = None
    evicted: bool = False


@dataclass(slots=True)
class HubStats:
    frames_sent: int = 0
    frames_dropped: int = 0
    slow_disconnects: int = 0


@dataclass(slots=True)
class Hub:
    store: Store
    clock: Clock
    send_buffer_bytes: int
    stall_timeout_s: float
    yield_every: int = 256
    close_grace_s: float = 1.0
    stats: HubStats = field(default_factory=HubStats)
    _by_machine: dict[str, set[Subscriber]] = field(default_factory=dict)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def subscriber_count(self) -> int:
        return sum(len(subscribers) for subscribers in self._by_machine.values())

    def subscribe(self, subscriber: Subscriber) -> None:
        """Register ``subscriber`` and send it the latest snapshot at once."""
        self._by_machine.setdefault(subscriber.machine_id, set()).add(subscriber)
        if self.store.latest is not None:
            frame = websocket_text_frame(self.store.snapshot_bytes(subscriber.machine_id))
            self._deliver(subscriber, frame, self.clock.now())

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscribers = self._by_machine.get(subscriber.machine_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._by_machine[subscriber.machine_id]

    async def broadcast(self) -> None:
        """Send the latest snapshot of every watched machine to its subscribers."""
        now = self.clock.now()
        written = 0
        for machine_id, subscribers in list(self._by_machine.items()):
            frame = websocket_text_frame(self.store.snapshot_bytes(machine_id))
            for subscriber in tuple(subscribers):
                self._deliver(subscriber, frame, now)
                written += 1
                if written % self.yield_every == 0:
                    await asyncio.sleep(0)

    async def close(self) -> None:
        """Wait for slow-consumer closes still under way."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _deliver(self, subscriber: Subscriber, frame: bytes, now: float) -> None:
        transport = subscriber.transport
        if subscriber.evicted or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.send_buffer_bytes:
            subscriber.dropped += 1
            self.stats.frames_dropped += 1
            if subscriber.over_bound_since is None:
                subscriber.over_bound_since = now
            elif now - subscriber.over_bound_since >= self.stall_timeout_s:
                self._evict(subscriber)
            return
        subscriber.over_bound_since = None
        transport.write(frame)
        subscriber.sent += 1
        self.stats.frames_sent += 1

    def _evict(self, subscriber: Subscriber) -> None:
        subscriber.evicted = True
        self.stats.slow_disconnects += 1
        log.warning(
            "closing slow consumer %s of %s after %.1f s over its send buffer bound",
            subscriber.peer,
            subscriber.machine_id,
            self.stall_timeout_s,
        )
        task = asyncio.create_task(self._close_slow(subscriber))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_slow(self, subscriber: Subscriber) -> None:
        """Queue the close frame; a peer that has not taken it within the grace is aborted."""
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(
                subscriber.close(SLOW_CONSUMER_CODE, SLOW_CONSUMER_REASON), self.close_grace_s
            )
        subscriber.transport.abort()
