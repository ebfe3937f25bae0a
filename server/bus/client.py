"""Redis connections for the bus: TLS as the URL asks, timeouts that surface a dead link."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from server.config import Settings

SOCKET_TIMEOUT_S = 2.0  # a command or read with no answer for this long is a dead link
HEALTH_CHECK_S = 2.0  # an idle subscription is pinged this often
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0

BusError = (redis.RedisError, OSError)  # what a lost or refused Redis raises


def connect(settings: Settings, *, client_name: str) -> redis.Redis:
    """A client of the bus (connections are made when first used, and again after a loss).

    The client does not retry on its own: the bus's users count what a loss cost and back
    off themselves (:class:`Backoff`).
    """
    assert settings.bus_url is not None
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SOCKET_TIMEOUT_S,
        "health_check_interval": HEALTH_CHECK_S,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
        # RESP2: under RESP3 redis-py hands every pub/sub message to a push handler that
        # formats it for a debug log line, whatever the level (81 % of a web process's CPU
        # at 100,000 machines; docs/scale-out.md).
        "protocol": 2,
    }
    if settings.bus_url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required" if settings.bus_tls_verify else "none"
        options["ssl_check_hostname"] = settings.bus_tls_verify
        if settings.bus_ca_file is not None:
            options["ssl_ca_certs"] = str(settings.bus_ca_file)
    return redis.Redis.from_url(settings.bus_url, **options)


def redacted(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return parts._replace(netloc=user + netloc).geturl()


class Backoff:
    """Exponential delays with jitter between reconnection attempts, reset on success."""

    def __init__(self, first_s: float = BACKOFF_FIRST_S, most_s: float = BACKOFF_MAX_S) -> None:
        self.first_s, self.most_s = first_s, most_s
        self._next_s = first_s

    def next_delay(self) -> float:
        delay = self._next_s * random.uniform(0.5, 1.0)
        self._next_s = min(self._next_s * 2, self.most_s)
        return delay

    def reset(self) -> None:
        self._next_s = self.first_s
