"""Frames cut into shards and joined back exactly, through frame bytes as on the bus."""

from __future__ import annotations

import pytest

from simulation.frame_bytes import decode_frame, encode_frame
from simulation.frame_shards import ShardError, ShardPlan
from tests.test_frame_bytes import assert_same_frame, faulty_fleet


@pytest.mark.parametrize("machines_per_shard", [1, 2, 5, 7, 12, 100])
def test_shards_through_bytes_join_to_the_same_frame(machines_per_shard: int) -> None:
    fleet = faulty_fleet()
    plan = ShardPlan.for_catalog(fleet.catalog, machines_per_shard)
    assert plan.shard_count == -(-fleet.size // machines_per_shard)
    for _ in range(50):
        frame = fleet.step()
        parts = [decode_frame(encode_frame(part)) for part in plan.split(frame)]
        assert [sum(v.shape[1] for v in part.values) for part in parts] == [
            min(machines_per_shard, fleet.size - k * machines_per_shard)
            for k in range(plan.shard_count)
        ]
        assert_same_frame(plan.join(parts), frame)
    assert sum(len(faults.records) for faults in frame.faults) >= 3


def test_every_machine_is_in_the_shard_the_plan_names() -> None:
    fleet = faulty_fleet()
    plan = ShardPlan.for_catalog(fleet.catalog, 5)
    frame = fleet.step()
    parts = plan.split(frame)
    for machine_id, (slot, column) in fleet.placement.items():
        shard = plan.shard_of(slot, column)
        low, high = plan.bounds[shard][slot]
        assert low <= column < high, machine_id
        assert (
            parts[shard].values[slot][:, column - low].tolist()
            == (frame.values[slot][:, column].tolist())
            or machine_id == "m02"
        )  # a dropout's NaN is not equal to itself


def test_shards_of_two_seqs_or_a_missing_shard_are_refused() -> None:
    fleet = faulty_fleet()
    plan = ShardPlan.for_catalog(fleet.catalog, 5)
    older, newer = plan.split(fleet.step()), plan.split(fleet.step())
    with pytest.raises(ShardError, match="of seq"):
        plan.join([older[0], newer[1], older[2]])
    with pytest.raises(ShardError, match="2 shards"):
        plan.join(older[:2])
    with pytest.raises(ShardError, match="machines per slot"):
        plan.join([older[1], older[0], older[2]])
