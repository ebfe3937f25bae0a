"""A large fleet on the Redis bus: is every tick published, and how long is the hop?

    python -m bench.bus_fleet                            # 100,000 machines, 5,000 per shard
    python -m bench.bus_fleet --machines 10000,100000 --shard-machines 2000,5000,20000

Per (fleet size, shard size) it starts ``python -m server --role simulator`` and one
``--role web`` process on free loopback ports (a prefix of their own on ``--bus-url``), lets
them settle, then measures for ``--window`` seconds: ticks stepped and published, the bytes
and messages of a tick and its largest message, the simulator's publish time, the web
process's publish-to-receipt hop (p50/p99 of its last 2,000 messages), ticks it missed, and
the CPU of the simulator, the web process and Redis. Both are stopped by their pids.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from bench.fanout import cpu_seconds, free_port, metric, scrape_metrics, write_fleet
from bench.servers import started_server


def redis_pid(url: str) -> int | None:
    try:
        return int(redis.Redis.from_url(url).info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None


def measure(
    url: str, machines: int, shard_machines: int, window_s: float, settle_s: float, tick_hz: float
) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="bus-fleet-"))
    fleet = write_fleet(directory, machines)
    prefix = f"bench-fleet-{os.getpid()}-{machines}-{shard_machines}"
    common = ["--bus", url, "--bus-prefix", prefix, "--fleet", str(fleet), "--seed", "1"]
    simulator_port, web_port = free_port(), free_port()
    simulator_args = [
        "--role", "simulator", "--tick-hz", f"{tick_hz:g}",
        "--bus-shard-machines", str(shard_machines), *common,
    ]  # fmt: skip
    simulator_log, web_log = directory / "simulator.log", directory / "web.log"
    with (
        started_server(simulator_args, simulator_log, port=simulator_port) as simulator,
        started_server(["--role", "web", *common], web_log, port=web_port) as web,
    ):
        time.sleep(settle_s)
        redis_process = redis_pid(url)
        pids = {"simulator": simulator.pid, "web": web.pid, "redis": redis_process}
        cpu_began = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
        sim_began, web_began = scrape_metrics(simulator_port), scrape_metrics(web_port)
        time.sleep(window_s)
        cpu_ended = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
        sim_ended, web_ended = scrape_metrics(simulator_port), scrape_metrics(web_port)

    def delta(samples: tuple[Any, Any], name: str) -> float:
        return metric(samples[1], name) - metric(samples[0], name)

    simulated, served = (sim_began, sim_ended), (web_began, web_ended)
    return {
        "machines": machines,
        "shard_machines": shard_machines,
        "ticks_per_s": delta(simulated, "dms_ticks_total") / window_s,
        "overruns": delta(simulated, "dms_tick_overruns_total"),
        "published_per_s": delta(simulated, "dms_bus_published_ticks_total") / window_s,
        "unpublished": delta(simulated, "dms_bus_unpublished_ticks_total"),
        "dropped": metric(sim_ended, "dms_sink_dropped_total", sink="bus")
        - metric(sim_began, "dms_sink_dropped_total", sink="bus"),
        "received_per_s": delta(served, "dms_ticks_total") / window_s,
        "missed": delta(served, "dms_bus_missed_ticks_total"),
        "tick_mb": metric(sim_ended, "dms_bus_tick_bytes") / 1e6,
        "messages": metric(sim_ended, "dms_bus_tick_messages"),
        "largest_kb": metric(sim_ended, "dms_bus_message_max_bytes") / 1e3,
        "stream_entries": metric(sim_ended, "dms_bus_stream_entries"),
        "step_ms": 1e3 * metric(sim_ended, "dms_step_seconds"),
        "publish_ms": 1e3 * metric(sim_ended, "dms_bus_publish_seconds"),
        "hop_p50_ms": 1e3 * metric(web_ended, "dms_bus_hop_seconds", quantile="0.5"),
        "hop_p99_ms": 1e3 * metric(web_ended, "dms_bus_hop_seconds", quantile="0.99"),
        "tick_p50_ms": 1e3 * metric(web_ended, "dms_bus_tick_delay_seconds", quantile="0.5"),
        "tick_p99_ms": 1e3 * metric(web_ended, "dms_bus_tick_delay_seconds", quantile="0.99"),
        **{
            f"{name}_cpu_pct": 100.0 * (cpu_ended[name] - cpu_began[name]) / window_s
            for name in cpu_began
        },
    }


COLUMNS = (
    ("machines", "{:>9,}", "machines"),
    ("per shard", "{:>9,}", "shard_machines"),
    ("ticks/s", "{:>7.2f}", "ticks_per_s"),
    ("published/s", "{:>11.2f}", "published_per_s"),
    ("received/s", "{:>10.2f}", "received_per_s"),
    ("missed", "{:>6.0f}", "missed"),
    ("MB/tick", "{:>7.2f}", "tick_mb"),
    ("msgs", "{:>4.0f}", "messages"),
    ("largest KB", "{:>10.0f}", "largest_kb"),
    ("stream", "{:>6.0f}", "stream_entries"),
    ("step ms", "{:>7.1f}", "step_ms"),
    ("publish ms", "{:>10.1f}", "publish_ms"),
    ("hop p50", "{:>7.2f}", "hop_p50_ms"),
    ("hop p99", "{:>7.2f}", "hop_p99_ms"),
    ("tick p50", "{:>8.2f}", "tick_p50_ms"),
    ("tick p99", "{:>8.2f}", "tick_p99_ms"),
    ("sim CPU%", "{:>8.0f}", "simulator_cpu_pct"),
    ("web CPU%", "{:>8.0f}", "web_cpu_pct"),
    ("redis CPU%", "{:>10.0f}", "redis_cpu_pct"),
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bus_fleet", description=__doc__)
    parser.add_argument("--machines", default="100000", help="one fleet size or a comma list")
    parser.add_argument("--shard-machines", default="5000", help="one or a comma list")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--tick-hz", type=float, default=10.0)
    parser.add_argument(
        "--bus-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args(argv)
    rows = []
    for machines in (int(part) for part in args.machines.split(",")):
        for shard in (int(part) for part in args.shard_machines.split(",")):
            print(f"{machines:,} machines, {shard:,} per shard ...", flush=True)
            rows.append(
                measure(args.bus_url, machines, shard, args.window, args.settle, args.tick_hz)
            )
    print(" ".join(title.rjust(len(fmt.format(0))) for title, fmt, _ in COLUMNS))
    for row in rows:
        print(" ".join(fmt.format(row.get(key, float("nan"))) for _, fmt, key in COLUMNS))


if __name__ == "__main__":
    main()
