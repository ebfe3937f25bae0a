"""The GC tuner freezes settled connections and collects after churn."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from server.gctuning import CHURN_FRACTION, MIN_CHURN, MIN_CONNECTIONS, GcTuner
from server.hub import HubStats


class FakeHub:
    def __init__(self, connections: int) -> None:
        self.connections = {object() for _ in range(connections)}
        self.stats = HubStats()

    def close(self, count: int) -> None:
        for _ in range(count):
            self.connections.pop()
            self.stats.disconnects += 1


@pytest.fixture
def tuner_for() -> Iterator:
    tuners: list[GcTuner] = []

    def make(connections: int) -> tuple[GcTuner, FakeHub]:
        hub = FakeHub(connections)
        tuner = GcTuner(hub)  # type: ignore[arg-type]
        tuners.append(tuner)
        return tuner, hub

    yield make
    for tuner in tuners:
        tuner.release()
    gc.unfreeze()


def test_freezes_once_the_connection_count_settles(tuner_for) -> None:
    tuner, _ = tuner_for(MIN_CONNECTIONS * 2)
    tuner.check()  # first look: nothing to compare with yet
    assert tuner.frozen_connections == 0
    tuner.check()
    assert tuner.frozen_connections == MIN_CONNECTIONS * 2
    assert gc.get_freeze_count() > 0


def test_few_connections_are_left_alone(tuner_for) -> None:
    tuner, _ = tuner_for(MIN_CONNECTIONS - 1)
    tuner.check()
    tuner.check()
    assert tuner.frozen_connections == 0
    assert gc.get_freeze_count() == 0


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_churn_after_a_freeze_triggers_one_full_collection(tuner_for) -> None:
    connections = MIN_CONNECTIONS * 2
    tuner, hub = tuner_for(connections)
    tuner.check()
    node = Node()
    alive = weakref.ref(node)
    del node
    tuner.check()  # freezes the cycle with everything else
    gc.collect()
    assert alive() is not None, "frozen objects are not collected"
    hub.close(max(MIN_CHURN, int(CHURN_FRACTION * connections)) + 1)
    tuner.check()
    assert alive() is None
    assert tuner.frozen_connections == 0
    assert gc.get_freeze_count() == 0
