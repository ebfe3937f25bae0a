"""The MQTT gateway under load, read by an independent subscriber; and the two clients.

    python -m bench.mqtt                               # 1,000 machines at 10 Hz, 10,000 at 1 Hz
    python -m bench.mqtt --runs 1000x10,10000x1 --window 10
    python -m bench.mqtt --clients                     # aiomqtt against gmqtt, publish cost

A run starts ``python -m server --fleet <N machines> --mqtt <broker>`` on a free loopback
port (its own topic prefix), and a paho-mqtt subscriber in a process of its own subscribed
to the prefix's telemetry. After a settle it counts, for ``--window`` seconds, the messages
that arrive and their delay from the snapshot's ``timestamp`` (the tick's due time) to
receipt; it prints delivered per second against the ideal (machines x rate), the delay's
p50/p99/max, the gateway's own counters (published, unsent), whether a backlog grew (the
delay at the window's end against its start), and the CPU of the server, the broker and the
subscriber. ``--clients`` publishes the same 300-byte message 20,000 times with each client
library at QoS 0 and 1 and prints the CPU per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.fanout import (
    cpu_seconds,
    free_port,
    metric,
    scrape_metrics,
    write_fleet,
)
from bench.servers import started_server

PAYLOAD = (
    b'{"machine_id":"robot_01","type":"robotic_arm","timestamp":"2026-12-03T18:42:51.668Z",'
    b'"seq":39,"joint_1_angle":-29.20,"temperature_core":23.13,"vibration_level":0.777,'
    b'"power_consumption":161.9,"state":"running","health":0.9992,"rul_s":199939,"faults":[]}'
)


def subscribe_and_count(
    url: str, topic: str, start: float, end: float, output: str, pipe: Connection
) -> None:
    """Child process: count messages and their delay in [start, end) (wall clock)."""
    import json
    from datetime import datetime

    import paho.mqtt.client as paho

    from server.mqtt.proto.sparkplug_b_pb2 import Payload

    def due_of(data: bytes) -> float:
        if output == "sparkplug":
            payload = Payload()
            payload.ParseFromString(data)
            return payload.timestamp / 1000
        stamp = json.loads(data)["timestamp"]
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    delays: list[float] = []
    count = [0]

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        now = time.time()
        if not start <= now < end:
            return
        count[0] += 1
        delays.append(now - due_of(message.payload))

    parts = urlsplit(url)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex}")
    client.on_message = on_message
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.subscribe(topic, qos=0)
    client.loop_start()
    pipe.send("ready")
    time.sleep(max(end - time.time(), 0) + 0.5)
    client.loop_stop()
    client.disconnect()
    cpu = time.process_time()
    pipe.send((count[0], delays, cpu))


def broker_pid(url: str) -> int | None:
    """The pid of the broker listening on ``url``'s port, when it runs here (from /proc)."""
    port = urlsplit(url).port or 1883
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
    return None


def run(
    url: str, machines: int, hz: float, window_s: float, settle_s: float, output: str
) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    arguments = ["--fleet", str(write_fleet(directory, machines)), "--seed", "1"]
    arguments += ["--mqtt", url, "--mqtt-prefix", prefix, "--mqtt-hz", f"{hz:g}"]
    arguments += ["--mqtt-format", output]
    port = free_port()
    with started_server(arguments, directory / "server.log", port=port) as process:
        start = time.time() + settle_s
        end = start + window_s
        parent, child = multiprocessing.Pipe()
        topic = (
            f"spBv1.0/{prefix}/DDATA/+/+" if output == "sparkplug" else f"{prefix}/+/+/telemetry"
        )
        counter = multiprocessing.Process(
            target=subscribe_and_count, args=(url, topic, start, end, output, child)
        )
        counter.start()
        parent.recv()
        time.sleep(max(start - time.time(), 0))
        broker = broker_pid(url)
        began = (cpu_seconds(process.pid), cpu_seconds(broker) if broker else None)
        metrics_began = scrape_metrics(port)
        time.sleep(max(end - time.time(), 0))
        ended = (cpu_seconds(process.pid), cpu_seconds(broker) if broker else None)
        metrics_ended = scrape_metrics(port)
        count, delays, subscriber_cpu = parent.recv()
        counter.join(10)
    published = metric(metrics_ended, "dms_mqtt_published_total") - metric(
        metrics_began, "dms_mqtt_published_total"
    )
    unsent = metric(metrics_ended, "dms_mqtt_unsent_total") - metric(
        metrics_began, "dms_mqtt_unsent_total"
    )
    ordered = sorted(delays)
    cuts = statistics.quantiles(ordered, n=100) if len(ordered) >= 2 else [float("nan")] * 99
    tenth = max(1, len(delays) // 10)
    return {
        "machines": machines,
        "hz": hz,
        "format": output,
        "ideal_per_s": machines * hz,
        "delivered_per_s": count / window_s,
        "published_per_s": published / window_s,
        "unsent": unsent,
        "p50_ms": 1e3 * cuts[49],
        "p99_ms": 1e3 * cuts[98],
        "max_ms": 1e3 * ordered[-1] if ordered else float("nan"),
        "first_tenth_p50_ms": 1e3 * statistics.median(delays[:tenth]) if delays else float("nan"),
        "last_tenth_p50_ms": 1e3 * statistics.median(delays[-tenth:]) if delays else float("nan"),
        "server_cpu_pct": 100 * (ended[0] - began[0]) / window_s,
        "broker_cpu_pct": None
        if began[1] is None or ended[1] is None
        else 100 * (ended[1] - began[1]) / window_s,
        "subscriber_cpu_pct": 100 * subscriber_cpu / (window_s + settle_s),
    }


COLUMNS = (
    ("machines", "{:>8,}", "machines"),
    ("Hz", "{:>4g}", "hz"),
    ("format", "{:>6}", "format"),
    ("ideal/s", "{:>8,.0f}", "ideal_per_s"),
    ("published/s", "{:>11,.0f}", "published_per_s"),
    ("delivered/s", "{:>11,.0f}", "delivered_per_s"),
    ("unsent", "{:>6,.0f}", "unsent"),
    ("p50 ms", "{:>6.1f}", "p50_ms"),
    ("p99 ms", "{:>6.1f}", "p99_ms"),
    ("max ms", "{:>6.1f}", "max_ms"),
    ("p50 1st/10", "{:>10.1f}", "first_tenth_p50_ms"),
    ("p50 last/10", "{:>11.1f}", "last_tenth_p50_ms"),
    ("server CPU%", "{:>11.0f}", "server_cpu_pct"),
    ("broker CPU%", "{:>11.0f}", "broker_cpu_pct"),
    ("subscriber CPU%", "{:>15.0f}", "subscriber_cpu_pct"),
)


def compare_clients(url: str, count: int) -> None:
    """Publish ``count`` messages with aiomqtt and with gmqtt; a paho subscriber in a process
    of its own counts them. The CPU is the publishing process's alone."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883

    async def with_aiomqtt(topic: str, qos: int) -> None:
        import aiomqtt

        async with aiomqtt.Client(host, port, max_queued_outgoing_messages=None) as client:
            for index in range(count):
                await client.publish(f"{topic}/{index % 1000}", PAYLOAD, qos=qos)

    async def with_gmqtt(topic: str, qos: int) -> None:
        import gmqtt

        client = gmqtt.Client(f"bench-{uuid.uuid4().hex[:8]}")
        await client.connect(host, port)
        for index in range(count):
            while True:
                try:
                    client.publish(f"{topic}/{index % 1000}", PAYLOAD, qos=qos)
                    break
                except OverflowError:  # every packet id in flight: wait for acknowledgements
                    await asyncio.sleep(0.001)
            if index % 256 == 255:
                await asyncio.sleep(0)  # as the gateway yields
        await asyncio.sleep(0.5)
        await client.disconnect()

    print(f"{'client':>8} {'QoS':>3} {'msg/s':>8} {'us CPU/msg':>10} {'received':>8}")
    for name, publish in (("aiomqtt", with_aiomqtt), ("gmqtt", with_gmqtt)):
        for qos in (0, 1):
            topic = f"bench-clients-{uuid.uuid4().hex[:8]}"
            parent, child = multiprocessing.Pipe()
            counter = multiprocessing.Process(
                target=count_messages, args=(host, port, f"{topic}/#", count, child)
            )
            counter.start()
            parent.recv()
            began, cpu = time.perf_counter(), time.process_time()
            asyncio.run(publish(topic, qos))
            wall, used = time.perf_counter() - began, time.process_time() - cpu
            received = parent.recv() if parent.poll(30) else 0
            counter.join(10)
            print(
                f"{name:>8} {qos:>3} {count / wall:>8,.0f} {1e6 * used / count:>10.1f} "
                f"{received:>8,}"
            )


def count_messages(host: str, port: int, topic: str, count: int, pipe: Connection) -> None:
    """Child process: receive ``count`` messages (or give up after 30 s); send how many."""
    import paho.mqtt.client as paho

    received = [0]
    done = threading.Event()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        received[0] += 1
        if received[0] >= count:
            done.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_subscribe = lambda *_: pipe.send("ready")
    client.connect(host, port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    done.wait(30)
    client.loop_stop()
    client.disconnect()
    pipe.send(received[0])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mqtt", description=__doc__)
    parser.add_argument("--broker", default=os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883"))
    parser.add_argument("--runs", default="1000x10,10000x1", help="machines x Hz, comma list")
    parser.add_argument("--formats", default="json")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--clients", action="store_true", help="compare aiomqtt and gmqtt")
    parser.add_argument("--client-messages", type=int, default=20_000)
    args = parser.parse_args(argv)
    if args.clients:
        compare_clients(args.broker, args.client_messages)
        return
    rows = []
    for output in args.formats.split(","):
        for spec in args.runs.split(","):
            machines, hz = spec.split("x")
            print(f"{int(machines):,} machines at {hz} Hz, {output} ...", flush=True)
            rows.append(
                run(args.broker, int(machines), float(hz), args.window, args.settle, output)
            )
    table = [
        ["-" if row.get(key) is None else fmt.format(row[key]) for _, fmt, key in COLUMNS]
        for row in rows
    ]
    widths = [
        max([len(title), *(len(cells[index]) for cells in table)])
        for index, (title, _, _) in enumerate(COLUMNS)
    ]
    print(
        " ".join(title.rjust(width) for (title, _, _), width in zip(COLUMNS, widths, strict=True))
    )
    for cells in table:
        print(" ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True)))


if __name__ == "__main__":
    main()
