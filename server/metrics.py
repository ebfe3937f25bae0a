"""Prometheus metrics (read from the hub's, engine's and sinks' counters at scrape time) and GC
pauses."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.connections import ConnectionCap
from server.engine import FrameFeed
from server.hub import Hub

TICK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
GC_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)


class ServerCollector(Collector):
    """Exposes the hub's and the feed's plain counters; costs nothing between scrapes. A
    simulator behind a bus has no hub: its metrics are the feed's, the sinks' and GC's."""

    def __init__(
        self, hub: Hub | None, engine: FrameFeed, connections: ConnectionCap, metrics: Metrics
    ) -> None:
        self.hub = hub
        self.engine = engine
        self.connections = connections
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        yield _gauge("dms_machines", "Machines in the fleet.", engine.catalog.size)
        yield _gauge(
            "dms_tcp_connections",
            "Open TCP connections (HTTP and WebSocket) counted against --max-connections.",
            self.connections.open,
        )
        yield _counter(
            "dms_connections_refused",
            "Connections refused (503) at the --max-connections cap.",
            self.connections.refused,
        )
        yield _counter("dms_ticks", "Ticks stepped and handed to the sinks.", engine.stats.ticks)
        yield _counter(
            "dms_tick_overruns",
            "Tick slots skipped because the loop was behind (behind a bus: ticks not received).",
            engine.stats.skipped_ticks,
        )
        yield _gauge("dms_seq", "Latest tick number.", engine.stats.seq)
        yield from _sink_metrics(engine)
        yield _gauge(
            "dms_step_seconds", "Duration of the latest simulation step.", engine.stats.last_step_s
        )
        longest = GaugeMetricFamily(
            "dms_gc_pause_max_seconds", "Longest cyclic GC pause so far.", labels=["generation"]
        )
        for generation, pause_s in enumerate(self.metrics.gc_pause_max_s):
            longest.add_metric([str(generation)], pause_s)
        yield longest
        if self.hub is not None:
            yield from _hub_metrics(self.hub)


def _hub_metrics(hub: Hub) -> Iterator[Metric]:
    """The fan-out's counters."""
    yield _gauge("dms_connections", "Open WebSocket connections.", len(hub.connections))
    yield _gauge(
        "dms_subscriptions",
        "Machine subscriptions over all connections.",
        hub.subscription_count,
    )
    yield _gauge(
        "dms_variants",
        "Distinct (machine, fields, rate) variants encoded per tick.",
        hub.variant_count,
    )
    yield _counter("dms_frames_sent", "WebSocket frames written.", hub.stats.frames_sent)
    yield _counter(
        "dms_frames_dropped",
        "Frames skipped for subscribers over their send buffer bound.",
        hub.stats.frames_dropped,
    )
    yield _counter(
        "dms_slow_consumer_disconnects",
        "Connections closed as slow consumers.",
        hub.stats.slow_disconnects,
    )
    yield _counter("dms_encodes", "Snapshots encoded to JSON.", hub.store.encodes)
    yield _gauge("dms_fanout_seq", "Tick number the fan-out sent last.", hub.seq)
    yield _counter(
        "dms_fanout_skipped",
        "Ticks the fan-out skipped because newer ones were waiting.",
        hub.stats.skipped_ticks,
    )
    yield _counter(
        "dms_fanout_seconds",
        "Time spent broadcasting frames to subscribers.",
        hub.stats.broadcast_seconds_total,
    )
    yield _gauge(
        "dms_fanout_last_seconds",
        "Duration of the latest broadcast.",
        hub.stats.last_broadcast_s,
    )
    yield _counter(
        "dms_resets",
        "New simulator runs the subscribers were told of (a bus only).",
        hub.stats.resets,
    )


class Metrics:
    """The app's own registry (no process-global state) and its histograms."""

    def __init__(
        self,
        hub: Hub | None,
        engine: FrameFeed,
        connections: ConnectionCap,
        collectors: Sequence[Collector] = (),
    ) -> None:
        self._gc_started = 0.0
        self.gc_pause_max_s = [0.0, 0.0, 0.0]
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ServerCollector(hub, engine, connections, self))
        for collector in collectors:
            self.registry.register(collector)
        self.tick_seconds = Histogram(
            "dms_tick_duration_seconds",
            "Step and publish time of one tick (the fan-out runs on its own task).",
            buckets=TICK_BUCKETS_S,
            registry=self.registry,
        )
        self.tick_lateness = Histogram(
            "dms_tick_lateness_seconds",
            "How late a tick started after its due time.",
            buckets=TICK_BUCKETS_S,
            registry=self.registry,
        )
        self.gc_pause = Histogram(
            "dms_gc_pause_seconds",
            "Cyclic garbage collector pauses.",
            ["generation"],
            buckets=GC_BUCKETS_S,
            registry=self.registry,
        )

    def observe_tick(self, duration_s: float, lateness_s: float) -> None:
        self.tick_seconds.observe(duration_s)
        self.tick_lateness.observe(max(lateness_s, 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def watch_gc(self) -> None:
        gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            elapsed = time.perf_counter() - self._gc_started
            generation = info["generation"]
            self.gc_pause.labels(str(generation)).observe(elapsed)
            self.gc_pause_max_s[generation] = max(self.gc_pause_max_s[generation], elapsed)


def _sink_metrics(engine: FrameFeed) -> Iterator[Metric]:
    """Per sink: frames taken, failures, frames dropped behind, and time spent on the tick."""
    families = {
        "frames": CounterMetricFamily("dms_sink_frames", "Frames a sink took.", labels=["sink"]),
        "failures": CounterMetricFamily(
            "dms_sink_failures", "Frames a sink failed to take (it raised).", labels=["sink"]
        ),
        "dropped": CounterMetricFamily(
            "dms_sink_dropped", "Frames a background sink dropped unsent.", labels=["sink"]
        ),
        "delivery_failures": CounterMetricFamily(
            "dms_sink_delivery_failures",
            "Deliveries of a background sink that failed.",
            labels=["sink"],
        ),
        "seconds_total": CounterMetricFamily(
            "dms_sink_publish_seconds", "Time the tick task spent in a sink.", labels=["sink"]
        ),
    }
    max_seconds = GaugeMetricFamily(
        "dms_sink_publish_max_seconds", "Longest time one frame took in a sink.", labels=["sink"]
    )
    for name, stats in engine.sinks.stats.items():
        for attribute, family in families.items():
            family.add_metric([name], getattr(stats, attribute))
        max_seconds.add_metric([name], stats.max_seconds)
    yield from families.values()
    yield max_seconds


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)
