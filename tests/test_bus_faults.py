"""Faults of the bus, each on a Redis of the test's own: a restart, a killed connection, TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

from server.bus.client import connect
from server.config import Settings
from server.keys import hub_key
from tests.bus_plant import BusPlant, Simulator, Web
from tests.certificates import self_signed
from tests.conftest import TEST_SEED
from tests.redis_servers import eventually, own_redis

RECOVERY_TICKS = 200  # ticks at most while the plant finds its bus again


class Reader:
    """A dashboard on a web process: every seq it receives, and how its socket ended."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seqs: list[int] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            self.seqs.append(json.loads(message.data)["seq"])


async def tick_until(simulator: Simulator, condition: Any, what: str) -> None:
    """Tick (the simulator keeps its pace whatever the bus does) until ``condition()``."""
    for _ in range(RECOVERY_TICKS):
        await simulator.tick()
        if condition():
            return
        await asyncio.sleep(0.02)  # the reconnections are real I/O with backoff
    raise AssertionError(f"not after {RECOVERY_TICKS} ticks: {what}")


async def test_a_redis_restart_keeps_every_client_and_counts_the_gap(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    async with own_redis(tmp_path) as server:
        plant = BusPlant(aiohttp_client, server.url, "restart", seed=TEST_SEED)
        simulator = await plant.simulator()
        web = await plant.web()
        reader = Reader(await web.client.ws_connect("/ws/machines/robot_01"))
        await simulator.tick(5)
        await web.reaches(6)
        server.stop()
        await simulator.tick(10)  # stepped, not published
        assert simulator.publisher.stats.unpublished == 10
        server.start()  # empty: no announcement, no streams
        down_at = web.seq
        await tick_until(simulator, lambda: web.seq > down_at + 2, "web process fed again")
        await eventually(lambda: len(reader.seqs) and reader.seqs[-1] == web.seq)
        assert not reader.ws.closed, "the dashboard stayed connected"
        assert reader.seqs == sorted(set(reader.seqs)), "no repeat, no reordering"
        jumps = [b - a - 1 for a, b in zip(reader.seqs, reader.seqs[1:], strict=False) if b > a + 1]
        bus = web.feed.bus
        assert bus.reconnects >= 1
        assert bus.missed_ticks >= 10
        held = [frame.seq for frame in web.store.history.after(0)]
        assert web.seq - len(held) == bus.missed_ticks, "the gap counted is the ticks not held"
        hub = web.app[hub_key]
        assert sum(jumps) == hub.stats.skipped_ticks >= bus.missed_ticks, "the client's jump"
        assert web.store.epoch == simulator.publisher.epoch, "the same run: no reset"
        metrics = await (await web.client.get("/metrics")).text()
        assert f"dms_bus_missed_ticks_total {float(bus.missed_ticks)}" in metrics
        simulator_metrics = await (await simulator.client.get("/metrics")).text()
        assert "dms_bus_unpublished_ticks_total" in simulator_metrics
        await reader.ws.close()


async def test_a_killed_connection_is_made_again_and_the_streams_fill_the_gap(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    async with own_redis(tmp_path) as server:
        plant = BusPlant(aiohttp_client, server.url, "kill", seed=TEST_SEED)
        simulator = await plant.simulator()
        web: Web = await plant.web()
        await simulator.tick(5)
        await web.reaches(6)
        admin = redis.Redis.from_url(server.url)
        try:
            killed = 0
            for client in await admin.client_list():
                if client["name"].startswith("dms-web-"):
                    killed += await admin.client_kill_filter(_id=client["id"])
            assert killed >= 1
            await simulator.tick(5)  # published while the web process is away
        finally:
            await admin.aclose()
        await tick_until(simulator, lambda: web.seq >= 13, "web process fed again")
        bus = web.feed.bus
        assert 1 <= bus.reconnects <= killed, "once per killed connection at most"
        assert bus.missed_ticks == 0, "the streams held what the live channel lost"
        held = [frame.seq for frame in web.store.history.after(0)]
        assert held == list(range(1, web.seq + 1))


async def test_a_tls_bus_with_a_self_signed_certificate(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    certificate, key = self_signed(tmp_path)
    tls = [
        "--tls-cert-file", str(certificate), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(certificate), "--tls-auth-clients", "no",
    ]  # fmt: skip
    async with own_redis(tmp_path, tls, tls_port=True) as server:
        assert server.url.startswith("rediss://")
        prefix = uuid.uuid4().hex[:8]
        verifying = connect(Settings(bus_url=server.url), client_name="verify")
        with pytest.raises((ssl.SSLError, redis.ConnectionError)):
            await verifying.ping()  # not signed by a CA the system knows
        await verifying.aclose()
        plant = BusPlant(aiohttp_client, server.url, prefix, seed=TEST_SEED)
        simulator = await plant.simulator(bus_ca_file=certificate)  # verified against it
        web = await plant.web(bus_tls_verify=False)  # Heroku style: encrypted, not verified
        await simulator.tick(3)
        await web.reaches(4)
        answer = await (await web.client.get("/machines/robot_01/data")).json()
        assert answer["seq"] == 4
