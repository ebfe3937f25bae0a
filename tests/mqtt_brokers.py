"""MQTT for the gateway tests: the shared Mosquitto (``MQTT_URL``, default 127.0.0.1:1883),
or a ``mosquitto`` of the test's own on a free loopback port (stopped by its pid); and an
independent subscriber (paho-mqtt) that records what arrives."""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as paho

from tests.processes import free_port
from tests.redis_servers import unavailable

SHARED_URL = os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883")
START_LIMIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.time() on receipt


class Recorder:
    """A paho-mqtt subscriber on its own thread; ``messages`` in arrival order."""

    def __init__(self, url: str, *topics: str, ca_file: Path | None = None) -> None:
        parts = urlsplit(url)
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"recorder-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        if parts.username:
            self.client.username_pw_set(parts.username, parts.password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.subscribe([(topic, 1) for topic in topics])
        self.client.loop_start()
        if not self._subscribed.wait(START_LIMIT_S):
            raise AssertionError(f"could not subscribe to {topics} on {url}")

    def _on_message(self, client: object, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Received(message.topic, bytes(message.payload), bool(message.retain), time.time())
            )

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [message for message in self.messages if message.topic.endswith(suffix)]

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(START_LIMIT_S)

    async def until(self, predicate: Callable[[], object], what: str, limit_s: float = 5) -> None:
        deadline = time.monotonic() + limit_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {limit_s} s: {what}")
            await asyncio.sleep(0.005)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def require_shared() -> str:
    parts = urlsplit(SHARED_URL)
    try:
        socket.create_connection((parts.hostname, parts.port or 1883), timeout=2).close()
    except OSError as error:
        unavailable(f"no MQTT broker at {SHARED_URL}: {error}")
    return SHARED_URL


class OwnMosquitto:
    """``mosquitto`` on a free loopback port, no persistence; restartable on the same port."""

    def __init__(self, directory: Path, extra: str = "") -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if binary is None:
            unavailable("mosquitto is not installed (Debian: apt-get install mosquitto)")
        assert binary is not None
        self.binary = binary
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        # Started as root, mosquitto drops to user "mosquitto", which cannot read a test's
        # files: it stays the test's own user.
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\npersistence false\nuser {getpass.getuser()}\n"
            + (extra or "allow_anonymous true\n")
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @staticmethod
    def password_file(directory: Path, user: str, password: str) -> Path:
        """A mosquitto password file with one user."""
        path = directory / "passwords"
        subprocess.run(
            ["mosquitto_passwd", "-c", "-b", str(path), user, password],
            check=True,
            capture_output=True,
        )
        return path

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "mosquitto exited at start"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"mosquitto not listening on {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None
