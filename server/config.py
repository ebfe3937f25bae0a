"""One typed settings object, filled from CLI flags and the environment (flags win)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

from simulation import DEFAULT_REPAIR_AFTER_S

DEFAULT_PORT = 7000
DEFAULT_HOST = "0.0.0.0"
DEFAULT_TICK_HZ = 10.0
MAX_TICK_HZ = 100.0
MAX_STEP_S = 10.0  # simulated seconds per tick the models are tested for
LOOPBACK_NETWORKS = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tick_hz: float = DEFAULT_TICK_HZ
    speed: float = 1.0
    fault_rate_per_h: float = 0.0
    repair_after_s: float = DEFAULT_REPAIR_AFTER_S
    seed: int | None = None
    fleet: Path | None = None
    cors_origins: tuple[str, ...] = ("*",)
    control_token: str | None = None
    control_networks: tuple[IPv4Network | IPv6Network, ...] = LOOPBACK_NETWORKS
    log_level: str = "info"
    send_buffer_bytes: int = 64 * 1024
    socket_send_buffer_bytes: int = 128 * 1024
    stall_timeout_s: float = 5.0
    max_subscriptions: int = 1000
    history_seconds: float = 600.0
    history_max_bytes: int = 512 * 1024 * 1024
    heartbeat_s: float = 20.0
    shutdown_timeout_s: float = 5.0
    gc_freeze: bool = True

    @property
    def tick_period_s(self) -> float:
        return 1.0 / self.tick_hz

    @property
    def step_s(self) -> float:
        """Simulated seconds per tick: the tick period times ``speed``."""
        return self.speed / self.tick_hz

    @property
    def cors_allows_all(self) -> bool:
        return "*" in self.cors_origins


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Parse ``argv`` with defaults from ``environ``; exits with a usage error on bad values."""
    parser = build_parser(environ)
    args = parser.parse_args(list(argv))
    if args.speed / args.tick_hz > MAX_STEP_S:
        parser.error(
            f"--speed {args.speed:g} at {args.tick_hz:g} Hz would step "
            f"{args.speed / args.tick_hz:g} simulated seconds per tick; the models are "
            f"checked up to {MAX_STEP_S:g} s: lower --speed or raise --tick-hz"
        )
    return Settings(
        host=args.host,
        port=args.port,
        tick_hz=args.tick_hz,
        speed=args.speed,
        fault_rate_per_h=args.fault_rate,
        repair_after_s=args.repair_after,
        seed=args.seed,
        fleet=args.fleet,
        cors_origins=args.cors_origins,
        control_token=args.control_token or None,
        control_networks=args.control_networks,
        log_level=args.log_level,
        send_buffer_bytes=args.send_buffer_bytes,
        socket_send_buffer_bytes=args.socket_send_buffer_bytes,
        stall_timeout_s=args.stall_timeout,
        max_subscriptions=args.max_subscriptions,
        history_seconds=args.history_seconds,
        history_max_bytes=args.history_max_bytes,
        heartbeat_s=args.heartbeat,
        shutdown_timeout_s=args.shutdown_timeout,
        gc_freeze=args.gc_freeze,
    )


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description=(
            "Demo machine server: simulated industrial machines stepped at a fixed tick rate, "
            "served over REST and WebSocket. Every option can also be set by the environment "
            "variable named in its help; a flag wins over the environment."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def option(flag: str, env: str, default: str | None, help_text: str, **kwargs: object) -> None:
        parser.add_argument(
            flag, default=environ.get(env, default), help=f"{help_text} [env {env}]", **kwargs
        )

    option("--host", "HOST", DEFAULT_HOST, "interface to listen on")
    option("--port", "PORT", str(DEFAULT_PORT), "TCP port to listen on", type=_port)
    option(
        "--tick-hz",
        "TICK_HZ",
        str(DEFAULT_TICK_HZ),
        f"simulation steps (and WebSocket frames) per second, 0 < hz <= {MAX_TICK_HZ:g}",
        type=_tick_hz,
    )
    option(
        "--speed",
        "SPEED",
        "1",
        "simulated seconds per wall-clock second (timestamps are simulated time); "
        f"speed / tick-hz may not exceed {MAX_STEP_S:g} s per step",
        type=_positive_float,
    )
    option(
        "--fault-rate",
        "FAULT_RATE",
        "0",
        "spontaneous faults per machine per simulated hour (seeded, so reproducible)",
        type=_non_negative_float,
    )
    option(
        "--repair-after",
        "REPAIR_AFTER",
        f"{DEFAULT_REPAIR_AFTER_S:g}",
        "simulated seconds a machine stays in fault before a maintenance crew restores it "
        "(0: never; then only a 'maintain' command does)",
        type=_non_negative_float,
    )
    option(
        "--seed",
        "SEED",
        None,
        "seed for every random stream; the same seed and fleet give the same samples at the "
        "same seq (default: a fresh seed, logged at start-up and shown by GET /)",
        type=_seed,
    )
    option(
        "--fleet",
        "FLEET",
        None,
        "TOML fleet file declaring the machines (default: robot_01, cnc_01, conveyor_01)",
        type=Path,
    )
    option(
        "--cors-origins",
        "CORS_ORIGINS",
        "*",
        "comma-separated origins allowed by CORS and for WebSocket handshakes; * allows all",
        type=_origins,
    )
    option(
        "--control-token",
        "CONTROL_TOKEN",
        None,
        "bearer token required by the endpoints that change the plant (faults, commands); "
        "without one they are accepted only from --control-networks",
    )
    option(
        "--control-networks",
        "CONTROL_NETWORKS",
        ",".join(map(str, LOOPBACK_NETWORKS)),
        "comma-separated networks trusted to change the plant when no token is set",
        type=_networks,
    )
    option("--log-level", "LOG_LEVEL", "info", "logging level", type=str.lower, choices=LOG_LEVELS)
    option(
        "--send-buffer-bytes",
        "SEND_BUFFER_BYTES",
        str(64 * 1024),
        "per-subscriber bound on bytes queued in the server; past it a subscriber skips frames",
        type=_positive_int,
    )
    option(
        "--socket-send-buffer-bytes",
        "SOCKET_SEND_BUFFER_BYTES",
        str(128 * 1024),
        "kernel send buffer (SO_SNDBUF) of each WebSocket subscriber, bounding what a stalled "
        "peer holds in the kernel",
        type=_positive_int,
    )
    option(
        "--stall-timeout",
        "STALL_TIMEOUT",
        "5",
        "seconds a subscriber may stay over its send buffer bound before it is closed "
        "(1008, 'slow consumer')",
        type=_positive_float,
    )
    option(
        "--max-subscriptions",
        "MAX_SUBSCRIPTIONS",
        "1000",
        "machines one /ws connection may subscribe to",
        type=_positive_int,
    )
    option(
        "--history-seconds",
        "HISTORY_SECONDS",
        "600",
        "seconds of past ticks kept for resuming clients and history reads",
        type=_positive_float,
    )
    option(
        "--history-max-bytes",
        "HISTORY_MAX_BYTES",
        str(512 * 1024 * 1024),
        "memory bound of the history; a large fleet keeps fewer seconds than asked (logged)",
        type=_positive_int,
    )
    option(
        "--heartbeat",
        "HEARTBEAT",
        "20",
        "seconds between WebSocket pings; a peer that misses the pong is dropped",
        type=_positive_float,
    )
    option(
        "--shutdown-timeout",
        "SHUTDOWN_TIMEOUT",
        "5",
        "seconds to wait for connections to finish on SIGTERM/Ctrl+C",
        type=_positive_float,
    )
    parser.add_argument(
        "--gc-freeze",
        action=argparse.BooleanOptionalAction,
        default=environ.get("GC_FREEZE", "1").lower() not in ("0", "false", "no", "off"),
        help="freeze long-lived objects once connections settle, so full GC passes stay short "
        "with thousands of connections [env GC_FREEZE]",
    )
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if level != "debug":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _tick_hz(text: str) -> float:
    value = _float(text)
    if not 0 < value <= MAX_TICK_HZ:
        raise argparse.ArgumentTypeError(
            f"tick rate must be in (0, {MAX_TICK_HZ:g}] Hz, got {text}"
        )
    return value


def _seed(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {value}")
    return value


def _origins(text: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())
    if not origins:
        raise argparse.ArgumentTypeError("give at least one origin, or * for all")
    return origins


def _networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    try:
        networks = tuple(ip_network(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not networks:
        raise argparse.ArgumentTypeError("give at least one network, e.g. 127.0.0.0/8")
    return networks


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value
