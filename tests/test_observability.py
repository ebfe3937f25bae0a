"""``/metrics`` in Prometheus text format and ``/health`` following the tick task."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from server.keys import engine_key
from tests.conftest import MakeServer


async def scrape(harness) -> dict[str, float]:
    response = await harness.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            if not sample.labels:
                samples[sample.name] = sample.value
    return samples


async def test_metrics_count_subscribers_frames_ticks_and_encodes(make_server: MakeServer) -> None:
    harness = await make_server()
    async with (
        harness.client.ws_connect("/ws/machines/robot_01") as first,
        harness.client.ws_connect("/ws/machines/robot_01") as second,
    ):
        await first.receive_str()
        await second.receive_str()
        await harness.clock.tick(3)
        for ws in (first, second):
            for _ in range(3):
                await ws.receive_str()
        samples = await scrape(harness)
    assert samples["dms_connections"] == 2
    assert samples["dms_subscriptions"] == 2
    assert samples["dms_variants"] == 1
    assert samples["dms_frames_sent_total"] == 8
    assert samples["dms_frames_dropped_total"] == 0
    assert samples["dms_slow_consumer_disconnects_total"] == 0
    assert samples["dms_ticks_total"] == 3
    assert samples["dms_tick_overruns_total"] == 0
    assert samples["dms_encodes_total"] == 4
    assert samples["dms_tick_duration_seconds_count"] == 3
    assert samples["dms_seq"] == 4
    assert samples["dms_machines"] == 3


async def test_overruns_are_counted(make_server: MakeServer) -> None:
    harness = await make_server()
    await harness.clock.jump(0.5)
    samples = await scrape(harness)
    assert samples["dms_tick_overruns_total"] == 4
    assert samples["dms_tick_lateness_seconds_sum"] > 0.39


async def test_health_is_ok_while_ticking_and_503_once_stalled(make_server: MakeServer) -> None:
    harness = await make_server()
    await harness.clock.tick()
    response = await harness.client.get("/health")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok"
    assert body["seq"] == 2
    harness.clock.stall(3.0)
    response = await harness.client.get("/health")
    assert response.status == 503
    assert (await response.json())["status"] == "stalled"
    await harness.clock.tick()
    assert (await harness.client.get("/health")).status == 200


async def test_health_is_503_when_the_tick_task_has_died(make_server: MakeServer) -> None:
    harness = await make_server()
    engine = harness.app[engine_key]
    await engine.stop()
    response = await harness.client.get("/health")
    assert response.status == 503
    assert (await response.json())["tick_task_alive"] is False
