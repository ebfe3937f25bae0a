"""The MQTT gateway: every machine's snapshot published to a broker, as an edge gateway would.

It is a frame sink on a task of its own (:class:`~server.sinks.BackgroundSink`, one pending
frame), so a slow or absent broker never delays the tick: while the broker is away, or while
the connection still holds more than :data:`MAX_BACKLOG_BYTES` unsent, the frames are counted
as unsent and skipped, and the gateway publishes the newest values once it can, not a
backlog. The payload is the WebSocket's snapshot, encoded once per tick for both.

On each connection it sets its status topic ``online`` (retained; the last will sets it
``offline``), publishes every machine's metadata retained, and, with ``--mqtt-commands``,
subscribes to the command topics. A lost connection is made again with backoff.

The client is gmqtt (``docs/mqtt.md`` has the measurement against aiomqtt).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import gmqtt
from gmqtt.mqtt.handler import MQTTError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.bus.client import Backoff
from server.config import Settings
from server.errors import unknown_machines_message, valid_ids
from server.mqtt.commands import carry_out
from server.mqtt.exception import ExceptionFilter
from server.mqtt.sparkplug import SparkplugNode, catalog_devices
from server.mqtt.topics import Topics
from server.plant import PlantControl, describe_machine
from server.sinks import BackgroundSink
from server.store import Store
from simulation import Frame

KEEPALIVE_S = 15
CONNECT_TIMEOUT_S = 5.0
MAX_BACKLOG_BYTES = 4 * 1024 * 1024  # unsent bytes in the connection past which ticks skip
YIELD_EVERY = 256  # publishes between two turns of the event loop
MAX_PENDING_COMMANDS = 64
IN_FLIGHT_WAIT_S = 1.0  # QoS > 0: how long one message may wait for the broker's acks
IN_FLIGHT_POLL_S = 0.0005
STATUS_QOS = 1

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GatewayStats:
    connected: bool = False
    connects: int = 0
    connection_failures: int = 0
    published: int = 0  # telemetry messages handed to the connection
    unsent: int = 0  # telemetry messages not sent: no connection, or its backlog was full
    skipped_by_exception: int = 0  # machines not due under report by exception
    commands: dict[str, int] = field(
        default_factory=lambda: {"accepted": 0, "refused": 0, "dropped": 0}
    )
    last_publish_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Broker:
        assert settings.mqtt_url is not None
        parts = urlsplit(settings.mqtt_url)
        secure = parts.scheme == "mqtts"
        context = None
        if secure:
            context = ssl.create_default_context(
                cafile=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
            )
            if not settings.mqtt_tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if secure else 1883),
            tls=context,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class MqttGateway:
    """Publishes the plant in ``store`` to a broker; takes commands for ``plant``."""

    def __init__(self, settings: Settings, store: Store, plant: PlantControl) -> None:
        self.store, self.plant = store, plant
        self.broker = Broker.from_settings(settings)
        gateway_id = settings.mqtt_gateway_id or f"dms-{socket.gethostname()}"
        self.topics = Topics(settings.mqtt_prefix, gateway_id)
        self.client_id = f"{gateway_id}-{uuid.uuid4().hex[:6]}"
        self.qos, self.retain = settings.mqtt_qos, settings.mqtt_retain
        self.commands_enabled = settings.mqtt_commands
        self.every = max(1, round(settings.tick_hz / settings.mqtt_hz)) if settings.mqtt_hz else 1
        catalog = store.catalog
        self.sparkplug = (
            SparkplugNode(store, settings.mqtt_prefix, gateway_id)
            if settings.mqtt_format == "sparkplug"
            else None
        )
        self._rebirth = False  # an NCMD asked for the births again: made before the next data
        self._death = b""  # the NDEATH of the current connection
        self.exceptions = (
            ExceptionFilter(catalog, settings.mqtt_deadband, settings.mqtt_max_silence_s)
            if settings.mqtt_deadband > 0
            else None
        )
        self._telemetry = [
            [
                node.device_topic("DDATA", machine_id)
                if (node := self.sparkplug) is not None
                else self.topics.telemetry(kind.name, machine_id)
                for machine_id in ids
            ]
            for kind, ids in zip(catalog.types, catalog.columns, strict=True)
        ]
        self.sink = BackgroundSink("mqtt", self.deliver, max_pending=1)
        self.stats = GatewayStats()
        self._client: gmqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._commands: set[asyncio.Task[None]] = set()
        self._backoff = Backoff()
        self._last_seq = 0  # the newest frame published: never one twice, never an older one

    # -- lifetime ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_connected(), name="mqtt-gateway")

    async def stop(self) -> None:
        """Say ``offline`` (retained) and disconnect; the last will is for an unclean end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._commands):
            task.cancel()
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            if self.sparkplug is not None:  # a clean end: the death, as the will would say
                death = self.sparkplug.node_topic("NDEATH")
                client.publish(death, self._death, qos=STATUS_QOS)
            else:
                client.publish(self.topics.status, b"offline", qos=STATUS_QOS, retain=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), CONNECT_TIMEOUT_S)

    async def _keep_connected(self) -> None:
        while True:
            lost = asyncio.Event()
            client = gmqtt.Client(self.client_id, will_message=self._will())
            client.set_config({"reconnect_retries": 0})  # this loop reconnects
            client.on_disconnect = lambda *_, lost=lost: lost.set()
            client.on_message = self._on_message
            if self.broker.username is not None:
                client.set_auth_credentials(self.broker.username, self.broker.password)
            try:
                await asyncio.wait_for(
                    client.connect(
                        self.broker.host,
                        self.broker.port,
                        ssl=self.broker.tls or False,
                        keepalive=KEEPALIVE_S,
                    ),
                    CONNECT_TIMEOUT_S,
                )
            except (OSError, TimeoutError, MQTTError) as error:
                self.stats.connection_failures += 1
                delay = self._backoff.next_delay()
                if self.stats.connection_failures % 20 == 1:
                    log.warning(
                        "mqtt: cannot connect to %s (%s); the plant goes on, again in %.1f s",
                        self.broker,
                        error,
                        delay,
                    )
                with contextlib.suppress(Exception):
                    await client.disconnect()
                await asyncio.sleep(delay)
                continue
            try:
                await self._announce(client)
            except (OSError, MQTTError, OverflowError) as error:
                log.warning("mqtt: could not announce on %s (%s); reconnecting", self.broker, error)
                with contextlib.suppress(Exception):
                    await client.disconnect()
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self._client = client
            self.stats.connected = True
            self.stats.connects += 1
            self._backoff.reset()
            log.info("mqtt: publishing to %s as gateway %s", self.broker, self.topics.gateway_id)
            if self.sparkplug is None and self.store.latest is not None:
                # the latest values at once, not a backlog (Sparkplug: the births have them)
                await self._publish(client, self.store.latest, every_machine=True)
            await lost.wait()
            self._client = None
            self.stats.connected = False
            log.warning("mqtt: lost %s; reconnecting", self.broker)
            await asyncio.sleep(self._backoff.next_delay())

    def _will(self) -> gmqtt.Message:
        """The last will of a new connection: NDEATH with its new ``bdSeq``, or ``offline``."""
        if self.sparkplug is not None:
            self._death = self.sparkplug.next_session()
            return gmqtt.Message(
                self.sparkplug.node_topic("NDEATH"), self._death, qos=STATUS_QOS, retain=False
            )
        return gmqtt.Message(self.topics.status, b"offline", qos=STATUS_QOS, retain=True)

    async def _announce(self, client: gmqtt.Client) -> None:
        """Sparkplug: the births and the NCMD subscription. JSON: status ``online`` and every
        machine's metadata (retained). Both: the command topics, if enabled."""
        if self.commands_enabled:
            client.subscribe(self.topics.commands, qos=1)
        if self.sparkplug is not None:
            client.subscribe(self.sparkplug.node_topic("NCMD"), qos=1)
            await self._births(client)
            return
        client.publish(self.topics.status, b"online", qos=STATUS_QOS, retain=True)
        catalog = self.store.catalog
        for index, machine in enumerate(catalog.machines):
            meta = json.dumps(describe_machine(catalog, machine.machine_id)).encode()
            topic = self.topics.meta(machine.machine_type, machine.machine_id)
            client.publish(topic, meta, qos=0, retain=True)  # retained whatever the QoS
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)

    async def _births(self, client: gmqtt.Client) -> None:
        """NBIRTH, then a DBIRTH per machine with the latest frame's values."""
        node, frame = self.sparkplug, self.store.latest
        assert node is not None
        assert frame is not None
        self._rebirth = False
        stamp = round(self.store.history.timestamp_s(frame.seq) * 1000)
        client.publish(node.node_topic("NBIRTH"), node.nbirth(stamp), qos=0)
        for index, (slot, column, machine_id) in enumerate(catalog_devices(self.store.catalog)):
            topic = node.device_topic("DBIRTH", machine_id)
            client.publish(topic, node.dbirth(frame, slot, column), qos=0)
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        self._last_seq = frame.seq

    # -- telemetry ---------------------------------------------------------------------------

    async def deliver(self, frame: Frame, timestamp_s: float) -> None:
        """Publish the machines due at ``frame``, or count them unsent."""
        if frame.seq % self.every or frame.seq <= self._last_seq:
            return
        client = self._client
        if client is None or not client.is_connected or _backlog(client) > MAX_BACKLOG_BYTES:
            self.stats.unsent += self.store.catalog.size
            return
        if self._rebirth:
            await self._births(client)
            return
        await self._publish(client, frame, every_machine=False)

    async def _publish(self, client: gmqtt.Client, frame: Frame, *, every_machine: bool) -> None:
        """Each machine's snapshot, or under report by exception those that are due (every
        one at a (re)connection, so a new subscriber has every value)."""
        began = time.perf_counter()
        self._last_seq = frame.seq
        due: list[Collection[int]]
        if self.exceptions is not None:
            due = list(self.exceptions.due(frame, every_machine=every_machine))
            self.stats.skipped_by_exception += self.store.catalog.size - sum(map(len, due))
        else:
            due = [range(len(ids)) for ids in self.store.catalog.columns]
        sent = 0
        for slot, columns in enumerate(due):
            ids, topics = self.store.catalog.columns[slot], self._telemetry[slot]
            for column in columns:
                if self.sparkplug is None:
                    payload = self.store.snapshot_of(frame, ids[column])
                else:
                    payload = self.sparkplug.ddata(frame, slot, column)
                if not await self._send(client, topics[column], payload):
                    self.stats.unsent += sum(map(len, due)) - sent
                    self.stats.published += sent
                    return
                sent += 1
                if sent % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                    if not client.is_connected:
                        return
        self.stats.published += sent
        self.stats.last_publish_s = time.perf_counter() - began

    async def _send(self, client: gmqtt.Client, topic: str, payload: bytes) -> bool:
        """Publish one telemetry message; False if the connection cannot take it now."""
        if not self.qos:
            client.publish(topic, payload, qos=0, retain=self.retain)
            return True
        # QoS 1 and 2: the broker allows only so many unacknowledged messages (Mosquitto's
        # receive maximum is 20); past them gmqtt has no packet id left: wait for acks.
        deadline = time.monotonic() + IN_FLIGHT_WAIT_S
        while True:
            try:
                client.publish(topic, payload, qos=self.qos, retain=self.retain)
                return True
            except OverflowError:
                if time.monotonic() > deadline or not client.is_connected:
                    return False
                await asyncio.sleep(IN_FLIGHT_POLL_S)

    # -- commands ----------------------------------------------------------------------------

    def _on_message(
        self, client: gmqtt.Client, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        """Take a command message; carried out on a task of its own, bounded in number."""
        node = self.sparkplug
        if node is not None and topic == node.node_topic("NCMD"):
            self._rebirth = self._rebirth or node.rebirth_requested(payload)
            return 0
        if len(self._commands) >= MAX_PENDING_COMMANDS:
            self.stats.commands["dropped"] += 1
            return 0
        task = asyncio.ensure_future(self._command(client, topic, payload, properties or {}))
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)
        return 0

    async def _command(
        self, client: gmqtt.Client, topic: str, payload: bytes, properties: dict[str, Any]
    ) -> None:
        place = self.topics.machine_of(topic)
        if place is None:
            return
        machine_type, machine_id = place
        catalog = self.plant.catalog
        if machine_id not in catalog or catalog.machine_type(machine_id).name != machine_type:
            answer: dict[str, Any] = {
                "id": None,
                "ok": False,
                "status": 404,
                "error": "unknown_machine",
                "message": unknown_machines_message([machine_id]) + f" of type {machine_type!r}",
                "machine_id": machine_id,
                "valid_ids": valid_ids(catalog),
            }
        else:
            answer = await carry_out(payload, machine_id, self.plant, self.store)
        self.stats.commands["accepted" if answer["ok"] else "refused"] += 1
        reply = _first(properties.get("response_topic")) or self.topics.reply(
            machine_type, machine_id
        )
        extra = {}
        correlation = _first(properties.get("correlation_data"))
        if correlation is not None:
            extra["correlation_data"] = correlation
        if client.is_connected:
            client.publish(reply, json.dumps(answer).encode(), qos=1, **extra)

    # -- metrics -----------------------------------------------------------------------------

    def collector(self) -> Collector:
        return _GatewayCollector(self)


def _first(value: Any) -> Any:
    """gmqtt hands MQTT 5 properties as lists."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _backlog(client: gmqtt.Client) -> int:
    """Bytes the connection still holds unsent (gmqtt has no public flow-control API; its
    transport is asyncio's, whose buffer size is)."""
    connection = getattr(client, "_connection", None)
    transport = getattr(connection, "_transport", None)
    return int(transport.get_write_buffer_size()) if transport is not None else 0


class _GatewayCollector(Collector):
    def __init__(self, gateway: MqttGateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        stats = self.gateway.stats
        yield GaugeMetricFamily(
            "dms_mqtt_connected", "1 while connected to the broker.", value=int(stats.connected)
        )
        counters = (
            ("dms_mqtt_connects", "Connections made to the broker.", stats.connects),
            (
                "dms_mqtt_connection_failures",
                "Attempts to connect that failed.",
                stats.connection_failures,
            ),
            ("dms_mqtt_published", "Telemetry messages published.", stats.published),
            (
                "dms_mqtt_unsent",
                "Telemetry messages not sent: no connection, or its backlog was full.",
                stats.unsent,
            ),
            (
                "dms_mqtt_skipped_by_exception",
                "Machines not published under report by exception.",
                stats.skipped_by_exception,
            ),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
        commands = CounterMetricFamily(
            "dms_mqtt_commands", "Command messages, by outcome.", labels=["outcome"]
        )
        for outcome, count in stats.commands.items():
            commands.add_metric([outcome], count)
        yield commands
        yield GaugeMetricFamily(
            "dms_mqtt_publish_seconds",
            "Time the latest published tick took to hand to the connection.",
            value=stats.last_publish_s,
        )
