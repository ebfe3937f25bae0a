"""The seams around the tick, on the real app: sinks isolated and counted, the fan-out on its
own task, plant changes answered with the seq from which they show."""

from __future__ import annotations

import asyncio
import json

from server.app import create_app
from server.config import Settings
from server.keys import engine_key, hub_key, store_key
from server.sinks import BackgroundSink
from simulation import Frame
from tests.clock import ManualClock
from tests.conftest import TEST_SEED, MakeServer


class RecordingSink:
    """Keeps the seq of every frame it is handed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seqs: list[int] = []

    def publish(self, frame: Frame, timestamp_s: float) -> None:
        self.seqs.append(frame.seq)


class FailingSink:
    name = "failing"

    def publish(self, frame: Frame, timestamp_s: float) -> None:
        raise RuntimeError("this sink always fails")


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_a_failing_sink_is_counted_and_the_others_get_every_frame(aiohttp_client) -> None:
    clock = ManualClock()
    before, after = RecordingSink("before"), RecordingSink("after")
    app = create_app(Settings(seed=TEST_SEED), clock=clock, sinks=[before, FailingSink(), after])
    client = await aiohttp_client(app)
    async with client.ws_connect("/ws/machines/robot_01") as ws:
        first = (await ws.receive_json())["seq"]
        await clock.tick(5)
        seqs = [(await ws.receive_json())["seq"] for _ in range(5)]
    assert seqs == list(range(first + 1, first + 6))
    assert before.seqs == after.seqs == list(range(1, 7))
    text = await (await client.get("/metrics")).text()
    assert metric(text, 'dms_sink_failures_total{sink="failing"}') == 6
    assert metric(text, 'dms_sink_frames_total{sink="after"}') == 6
    assert metric(text, 'dms_sink_frames_total{sink="store"}') == 6
    assert (await client.get("/health")).status == 200


async def test_a_stuck_background_sink_delays_nothing_and_counts_what_it_drops(
    aiohttp_client,
) -> None:
    clock = ManualClock()
    gate = asyncio.Event()
    delivered: list[int] = []

    async def deliver(frame: Frame, timestamp_s: float) -> None:
        await gate.wait()
        delivered.append(frame.seq)

    sink = BackgroundSink("stuck", deliver, max_pending=2)
    app = create_app(Settings(seed=TEST_SEED), clock=clock, sinks=[sink])
    client = await aiohttp_client(app)
    async with client.ws_connect("/ws/machines/cnc_01") as ws:
        first = (await ws.receive_json())["seq"]
        await clock.tick(10)
        seqs = [(await ws.receive_json())["seq"] for _ in range(10)]
    assert seqs == list(range(first + 1, first + 11))
    assert delivered == []
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    # Seq 1 was taken by the task before it blocked; of the rest only the newest two waited.
    assert delivered == [1, 10, 11]
    await clock.tick()  # the sink's stats are read as the next frame is handed over
    text = await (await client.get("/metrics")).text()
    assert metric(text, 'dms_sink_dropped_total{sink="stuck"}') == 8


async def test_a_slow_fan_out_skips_to_the_newest_frame_and_never_holds_the_tick(
    make_server: MakeServer,
) -> None:
    harness = await make_server()
    hub, store, engine = harness.app[hub_key], harness.app[store_key], harness.app[engine_key]
    gate = asyncio.Event()
    send_all = hub._send_all

    async def slow_send_all(frame: Frame) -> None:
        await gate.wait()
        await send_all(frame)

    async with harness.client.ws_connect("/ws/machines/conveyor_01") as ws:
        first = (await ws.receive_json())["seq"]
        hub._send_all = slow_send_all  # type: ignore[method-assign]
        await harness.clock.tick(6)  # the fan-out is stuck on the first of them
        assert store.latest is not None
        assert store.latest.seq == first + 6
        assert engine.stats.skipped_ticks == 0
        hub._send_all = send_all  # type: ignore[method-assign]
        gate.set()
        seqs = [(await ws.receive_json())["seq"] for _ in range(2)]
    assert seqs == [first + 1, first + 6]
    assert hub.stats.skipped_ticks == 4
    text = await (await harness.client.get("/metrics")).text()
    assert metric(text, "dms_fanout_skipped_total") == 4


async def test_subscribing_during_a_broadcast_never_repeats_or_reorders(
    make_server: MakeServer,
) -> None:
    harness = await make_server()
    hub = harness.app[hub_key]
    hub.yield_every = 1  # the broadcast yields after every write
    # The robot's variant is sent first and takes 30 writes; the mill's comes after it.
    readers = [await harness.client.ws_connect("/ws/machines/robot_01") for _ in range(30)]
    readers.append(await harness.client.ws_connect("/ws/machines/cnc_01"))
    for reader in readers:
        await reader.receive_json()
    late = await harness.client.ws_connect("/ws")
    for step in range(6):
        tick = asyncio.create_task(harness.clock.tick())
        await asyncio.sleep(0)  # the tick is published and the broadcast under way
        await late.send_json({"op": "subscribe", "machines": ["cnc_01"], "id": step})
        await tick
        for reader in readers:
            await reader.receive_json()
    seqs: list[int] = []
    while len(seqs) < 6 or seqs[-1] < hub.seq:
        message = await late.receive_json(timeout=1)
        if message.get("op") != "subscribed":
            seqs.append(message["seq"])
    # Each subscribe answers the frame the hub is on, then the stream goes on from there.
    assert seqs == sorted(set(seqs))
    for ws in [*readers, late]:
        await ws.close()


async def test_a_plant_change_names_the_seq_from_which_it_shows(make_server: MakeServer) -> None:
    harness = await make_server()
    await harness.clock.tick(3)
    response = await harness.client.post(
        "/machines/cnc_01/faults", json={"type": "overheating", "severity": 0.5}
    )
    assert response.status == 201
    fault = await response.json()
    effective = fault["effective_seq"]
    latest = json.loads(await (await harness.client.get("/machines/cnc_01/data")).read())
    assert latest["seq"] == effective - 1
    assert latest["faults"] == []
    await harness.clock.tick()
    shown = await (await harness.client.get("/machines/cnc_01/data")).json()
    assert shown["seq"] == effective
    assert [f["id"] for f in shown["faults"]] == [fault["id"]]

    command = await harness.client.post("/machines/cnc_01/commands", json={"command": "stop"})
    assert (await command.json())["effective_seq"] == effective + 1
    cleared = await harness.client.delete(f"/machines/cnc_01/faults/{fault['id']}")
    assert (await cleared.json())["effective_seq"] == effective + 1
    await harness.clock.tick()
    after = await (await harness.client.get("/machines/cnc_01/data")).json()
    assert (after["seq"], after["state"], after["faults"]) == (effective + 1, "idle", [])
