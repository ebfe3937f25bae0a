"""Keep full cyclic-GC passes off the event loop while thousands of connections are open.

A full collection walks every tracked object; with thousands of WebSockets that is
millions of objects and a pause of 100 ms or more, which stalls the tick. Once the
connection count has settled, ``gc.freeze()`` moves every live object to the
permanent generation, which collections skip. A closed connection leaves cyclic
garbage (aiohttp's transport, protocol and request refer to each other), and what was
frozen is not collected; so after enough frozen connections have closed, the tuner
unfreezes, collects once at a moment it chooses, and freezes again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from server.hub import Hub

CHECK_INTERVAL_S = 5.0
SETTLED_CHANGE = 0.05  # connection count within 5 % of the last check counts as settled
MIN_CONNECTIONS = 500  # below this a full pass is short enough to leave alone
CHURN_FRACTION = 0.25  # of the frozen connections closed before a full collection
MIN_CHURN = 200

log = logging.getLogger(__name__)


class GcTuner:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.frozen_connections = 0
        self._disconnects_at_collect = 0
        self._last_count = 0

    def check(self) -> None:
        """Freeze once connections settle; unfreeze and collect after enough churn."""
        count = len(self.hub.connections)
        closed = self.hub.stats.disconnects - self._disconnects_at_collect
        if self.frozen_connections and closed > max(
            MIN_CHURN, CHURN_FRACTION * self.frozen_connections
        ):
            began = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            log.info(
                "gc: %d connections closed since the freeze; a full collection freed %d "
                "objects in %.0f ms",
                closed,
                found,
                (time.perf_counter() - began) * 1e3,
            )
            self.frozen_connections = 0
        settled = abs(count - self._last_count) <= SETTLED_CHANGE * max(count, 1)
        self._last_count = count
        if settled and count >= MIN_CONNECTIONS and count > self.frozen_connections:
            if not self.frozen_connections:
                self._disconnects_at_collect = self.hub.stats.disconnects
            gc.freeze()
            self.frozen_connections = count
            log.info("gc: froze %d objects with %d connections open", gc.get_freeze_count(), count)

    def release(self) -> None:
        """Hand every frozen object back to the collector (at shutdown)."""
        if self.frozen_connections:
            gc.unfreeze()
            self.frozen_connections = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            self.check()
