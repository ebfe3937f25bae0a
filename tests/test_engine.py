"""The tick task's schedule: drift-free deadlines, late ticks counted and never made up."""

from __future__ import annotations

import pytest

from server.keys import engine_key
from server.source import THREAD_STEP_MIN_MACHINES
from tests.conftest import MakeServer


async def test_deadlines_are_fixed_multiples_of_the_period(make_server: MakeServer) -> None:
    harness = await make_server(tick_hz=20.0)
    await harness.clock.tick(50)
    deadlines = harness.clock.deadlines
    start = deadlines[0] - 0.05
    assert deadlines[:50] == pytest.approx([start + 0.05 * k for k in range(1, 51)], abs=1e-9)


async def test_a_late_tick_is_counted_and_not_made_up_in_a_burst(make_server: MakeServer) -> None:
    harness = await make_server(tick_hz=10.0)
    engine = harness.app[engine_key]
    await harness.clock.tick(2)
    seq_before = engine.source.seq
    await harness.clock.jump(0.35)  # past the deadlines at +0.1, +0.2 and +0.3
    assert engine.stats.last_lateness_s == pytest.approx(0.25)
    assert engine.stats.skipped_ticks == 2
    assert engine.source.seq == seq_before + 1
    next_deadline = harness.clock.deadlines[-1]
    assert next_deadline > harness.clock.now()
    start = harness.clock.deadlines[0] - 0.1
    assert (next_deadline - start) / 0.1 == pytest.approx(round((next_deadline - start) / 0.1))


async def test_large_fleets_step_in_a_worker_thread(make_server: MakeServer, tmp_path) -> None:
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(
        f'[[machines]]\ntype = "conveyor_belt"\ncount = {THREAD_STEP_MIN_MACHINES}\n'
    )
    harness = await make_server(fleet=fleet_file)
    engine = harness.app[engine_key]
    assert engine.source.uses_worker_thread
    async with harness.client.ws_connect("/ws/machines/conveyor_belt_0042") as ws:
        first = await ws.receive_json()
        await harness.clock.tick(3)
        seqs = [(await ws.receive_json())["seq"] for _ in range(3)]
    assert seqs == [first["seq"] + 1, first["seq"] + 2, first["seq"] + 3]


async def test_small_fleets_step_on_the_loop(make_server: MakeServer) -> None:
    harness = await make_server()
    assert not harness.app[engine_key].source.uses_worker_thread
