"""One typed settings object, filled from CLI flags and the environment (flags win).

Each option is declared once, as a field of :class:`Settings` whose metadata holds its flag,
environment variable, parser and help (:func:`option`); the command-line parser is generated
from the fields, and the export command takes the simulation's options from the same fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from simulation import DEFAULT_REPAIR_AFTER_S

DEFAULT_PORT = 7000
DEFAULT_HOST = "0.0.0.0"
DEFAULT_TICK_HZ = 10.0
MAX_TICK_HZ = 100.0
MAX_STEP_S = 10.0  # simulated seconds per tick the models are tested for
MAX_HISTORY_SECONDS = 7 * 86_400.0  # the history's memory bound applies well before this
LOOPBACK_NETWORKS = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
ROLES = ("embedded", "simulator", "web")
BUS_SCHEMES = ("redis", "rediss", "unix")
MQTT_SCHEMES = ("mqtt", "mqtts")
MQTT_FORMATS = ("json", "sparkplug")


@dataclass(frozen=True, slots=True)
class Option:
    """How a setting is given: its flag, its environment variable, how its text is parsed."""

    flag: str
    env: str
    parse: Callable[[str], Any] | None  # None: a switch (--x / --no-x)
    help: str
    choices: tuple[str, ...] | None = None


def option(
    default: Any,
    flag: str,
    env: str,
    parse: Callable[[str], Any] | None,
    help_text: str,
    *,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A :class:`Settings` field with its :class:`Option` as metadata."""
    return dataclasses.field(
        default=default, metadata={"option": Option(flag, env, parse, help_text, choices)}
    )


def _parse_origins(text: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())
    if not origins:
        raise argparse.ArgumentTypeError("give at least one origin, or * for all")
    return origins


def _parse_control_origins(text: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())
    if "*" in origins:
        raise argparse.ArgumentTypeError("name each origin trusted for control; * is not allowed")
    return origins


def _parse_networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    try:
        networks = tuple(ip_network(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not networks:
        raise argparse.ArgumentTypeError("give at least one network, e.g. 127.0.0.0/8")
    return networks


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


def _log_level(text: str) -> str:
    level = text.lower()
    if level not in LOG_LEVELS:  # argparse checks choices for flags, not for env defaults
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {LOG_LEVELS})")
    return level


def _history_seconds(text: str) -> float:
    value = _positive_float(text)
    if value > MAX_HISTORY_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_HISTORY_SECONDS:g} s (7 days), got {text}"
        )
    return value


def _token(text: str) -> str | None:
    return text or None  # an empty CONTROL_TOKEN means none


def _bus_url(text: str) -> str | None:
    if not text:
        return None  # an empty REDIS_URL means none
    scheme = text.partition("://")[0]
    if scheme not in BUS_SCHEMES:
        raise argparse.ArgumentTypeError(
            f"the bus is Redis: give redis://host:port, rediss://... (TLS) or unix://path, "
            f"got {text.split('@')[-1]!r}"  # never echo a password
        )
    return text


def _mqtt_url(text: str) -> str | None:
    if not text:
        return None
    scheme = text.partition("://")[0]
    if scheme not in MQTT_SCHEMES:
        raise argparse.ArgumentTypeError(
            f"give mqtt://host[:port] or mqtts://host[:port] (TLS), got {text.split('@')[-1]!r}"
        )
    return text


def _topic_part(text: str) -> str:
    if not text or any(c in text for c in "+#\0") or text.startswith("$"):
        raise argparse.ArgumentTypeError(
            f"a topic level without wildcards (+, #) or a leading $, got {text!r}"
        )
    return text.strip("/")


def _gateway_id(text: str) -> str:
    return _topic_part(text) if text else ""  # empty: dms-<host name>


def _qos(text: str) -> int:
    value = _int(text)
    if value not in (0, 1, 2):
        raise argparse.ArgumentTypeError(f"QoS is 0, 1 or 2, got {value}")
    return value


def _prefix(text: str) -> str:
    if not text or any(c.isspace() or c in "*?[]" for c in text):
        raise argparse.ArgumentTypeError(f"a key prefix without spaces or wildcards, got {text!r}")
    return text


def _switch(text: str) -> bool:
    return text.lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    host: str = option(DEFAULT_HOST, "--host", "HOST", str, "interface to listen on")
    port: int = option(DEFAULT_PORT, "--port", "PORT", _port, "TCP port to listen on")
    tick_hz: float = option(
        DEFAULT_TICK_HZ,
        "--tick-hz",
        "TICK_HZ",
        _tick_hz,
        f"simulation steps (and WebSocket frames) per second, 0 < hz <= {MAX_TICK_HZ:g}",
    )
    speed: float = option(
        1.0,
        "--speed",
        "SPEED",
        _positive_float,
        "simulated seconds per wall-clock second (timestamps are simulated time); "
        f"speed / tick-hz may not exceed {MAX_STEP_S:g} s per step",
    )
    fault_rate_per_h: float = option(
        0.0,
        "--fault-rate",
        "FAULT_RATE",
        _non_negative_float,
        "spontaneous faults per machine per simulated hour (seeded, so reproducible)",
    )
    repair_after_s: float = option(
        DEFAULT_REPAIR_AFTER_S,
        "--repair-after",
        "REPAIR_AFTER",
        _non_negative_float,
        "simulated seconds a machine stays in fault before a maintenance crew restores it "
        "(0: never; then only a 'maintain' command does)",
    )
    seed: int | None = option(
        None,
        "--seed",
        "SEED",
        _seed,
        "seed for every random stream; the same seed and fleet give the same samples at the "
        "same seq (default: a fresh seed, recorded: the server logs it and shows it on GET /, "
        "the export writes it to its manifest)",
    )
    fleet: Path | None = option(
        None,
        "--fleet",
        "FLEET",
        Path,
        "TOML fleet file declaring the machines (default: robot_01, cnc_01, conveyor_01)",
    )
    scenario: Path | None = option(
        None,
        "--scenario",
        "SCENARIO",
        Path,
        "TOML scenario: faults, commands and markers on the simulated clock, made at tick "
        "boundaries (shown at GET /scenario)",
    )
    replay: Path | None = option(
        None,
        "--replay",
        "REPLAY",
        Path,
        "serve an export's or a --record directory instead of simulating (faults and commands "
        "refused); --speed times its own rate",
    )
    replay_start_s: float = option(
        0.0,
        "--start",
        "REPLAY_START",
        _non_negative_float,
        "with --replay: seconds of simulated time into the recording to start at",
    )
    replay_loop: bool = option(
        False, "--loop", "REPLAY_LOOP", None, "with --replay: start over at the end"
    )
    record_dir: Path | None = option(
        None,
        "--record",
        "RECORD",
        Path,
        "directory to record the live stream to, as Parquet in the export's format, in "
        "segments with a manifest each",
    )
    record_hz: float = option(
        0.0,
        "--record-hz",
        "RECORD_HZ",
        _non_negative_float,
        "frames recorded per second, at most the tick rate (0: every frame)",
    )
    record_rotate_s: float = option(
        3600.0,
        "--record-rotate",
        "RECORD_ROTATE",
        _positive_float,
        "simulated seconds per segment of the recording",
    )
    cors_origins: tuple[str, ...] = option(
        ("*",),
        "--cors-origins",
        "CORS_ORIGINS",
        _parse_origins,
        "comma-separated origins allowed by CORS and for WebSocket handshakes; * allows all",
    )
    control_token: str | None = option(
        None,
        "--control-token",
        "CONTROL_TOKEN",
        _token,
        "bearer token required by the endpoints that change the plant (faults, commands); "
        "without one they are accepted only from --control-networks",
    )
    control_origins: tuple[str, ...] = option(
        (),
        "--control-origins",
        "CONTROL_ORIGINS",
        _parse_control_origins,
        "comma-separated origins (scheme://host:port) whose web pages may change the plant, "
        "besides the server's own; none by default",
    )
    control_networks: tuple[IPv4Network | IPv6Network, ...] = option(
        LOOPBACK_NETWORKS,
        "--control-networks",
        "CONTROL_NETWORKS",
        _parse_networks,
        "comma-separated networks trusted to change the plant when no token is set",
    )
    log_level: str = option(
        "info", "--log-level", "LOG_LEVEL", _log_level, "logging level", choices=LOG_LEVELS
    )
    send_buffer_bytes: int = option(
        64 * 1024,
        "--send-buffer-bytes",
        "SEND_BUFFER_BYTES",
        _positive_int,
        "per-subscriber bound on bytes queued in the server; past it a subscriber skips frames",
    )
    socket_send_buffer_bytes: int = option(
        128 * 1024,
        "--socket-send-buffer-bytes",
        "SOCKET_SEND_BUFFER_BYTES",
        _positive_int,
        "kernel send buffer (SO_SNDBUF) of each WebSocket subscriber, bounding what a stalled "
        "peer holds in the kernel",
    )
    stall_timeout_s: float = option(
        5.0,
        "--stall-timeout",
        "STALL_TIMEOUT",
        _positive_float,
        "seconds a subscriber may stay over its send buffer bound before it is closed "
        "(1008, 'slow consumer')",
    )
    max_subscriptions: int = option(
        1000,
        "--max-subscriptions",
        "MAX_SUBSCRIPTIONS",
        _positive_int,
        "machines one /ws connection may subscribe to",
    )
    history_seconds: float = option(
        600.0,
        "--history-seconds",
        "HISTORY_SECONDS",
        _history_seconds,
        "seconds of past ticks kept for resuming clients and history reads",
    )
    history_max_bytes: int = option(
        512 * 1024 * 1024,
        "--history-max-bytes",
        "HISTORY_MAX_BYTES",
        _positive_int,
        "memory bound of the history; a large fleet keeps fewer seconds than asked (logged)",
    )
    heartbeat_s: float = option(
        20.0,
        "--heartbeat",
        "HEARTBEAT",
        _positive_float,
        "seconds between WebSocket pings; a peer that misses the pong is dropped",
    )
    keepalive_timeout_s: float = option(
        15.0,
        "--keepalive-timeout",
        "KEEPALIVE_TIMEOUT",
        _positive_float,
        "seconds an HTTP connection may stay idle (between requests, or before its first one) "
        "before the server closes it, keeping file descriptors for real clients",
    )
    max_connections: int = option(
        10_000,
        "--max-connections",
        "MAX_CONNECTIONS",
        _positive_int,
        "open TCP connections (HTTP and WebSocket) at most; past it a new one gets 503 and "
        "the log says so (the file-descriptor limit is raised to fit, or caps it lower)",
    )
    shutdown_timeout_s: float = option(
        5.0,
        "--shutdown-timeout",
        "SHUTDOWN_TIMEOUT",
        _positive_float,
        "seconds to wait for connections to finish on SIGTERM/Ctrl+C",
    )
    role: str = option(
        "embedded",
        "--role",
        "ROLE",
        str,
        "embedded: simulate and serve in this process; simulator: step the fleet and publish "
        "it on the bus (HTTP: /health and /metrics only); web: serve the plant the bus carries",
        choices=ROLES,
    )
    bus_url: str | None = option(
        None,
        "--bus",
        "REDIS_URL",
        _bus_url,
        "Redis URL of the bus between a simulator and web processes (redis://, rediss:// for "
        "TLS, unix://); needed by --role simulator|web and --workers",
    )
    bus_prefix: str = option(
        "dms", "--bus-prefix", "BUS_PREFIX", _prefix, "prefix of every Redis key of this plant"
    )
    bus_tls_verify: bool = option(
        True,
        "--bus-tls-verify",
        "BUS_TLS_VERIFY",
        None,
        "verify the certificate of a rediss:// bus; --no-bus-tls-verify for a self-signed one "
        "such as Heroku Redis's (the traffic is still encrypted)",
    )
    bus_ca_file: Path | None = option(
        None,
        "--bus-ca-file",
        "BUS_CA_FILE",
        Path,
        "CA certificate (PEM) to verify a rediss:// bus against, instead of the system's",
    )
    bus_shard_machines: int = option(
        5_000,
        "--bus-shard-machines",
        "BUS_SHARD_MACHINES",
        _positive_int,
        "machines per bus message: each tick is published as one message per shard",
    )
    bus_stream_seconds: float = option(
        30.0,
        "--bus-stream-seconds",
        "BUS_STREAM_SECONDS",
        _positive_float,
        "seconds of ticks the bus keeps (a capped Redis Stream per shard) for web processes "
        "that join late or reconnect",
    )
    bus_stream_max_bytes: int = option(
        64 * 1024 * 1024,
        "--bus-stream-max-bytes",
        "BUS_STREAM_MAX_BYTES",
        _positive_int,
        "bound on the bytes those streams keep in Redis; a large fleet keeps fewer seconds",
    )
    bus_command_timeout_s: float = option(
        2.0,
        "--bus-command-timeout",
        "BUS_COMMAND_TIMEOUT",
        _positive_float,
        "seconds a web process waits for the simulator to answer a fault or command (504 past it)",
    )
    workers: int = option(
        1,
        "--workers",
        "WORKERS",
        _positive_int,
        "processes serving the port: with N > 1, one simulator and N web processes on the bus "
        "(--role web: N web processes; WEB_CONCURRENCY is read for --role web)",
    )
    reuse_port: bool = option(
        False,
        "--reuse-port",
        "REUSE_PORT",
        None,
        "listen with SO_REUSEPORT, so several web processes share the port (--workers sets it)",
    )
    simulator_port: int = option(
        0,
        "--simulator-port",
        "SIMULATOR_PORT",
        _port,
        "with --workers: the simulator's /health and /metrics port (0: --port + 1)",
    )
    mqtt_url: str | None = option(
        None,
        "--mqtt",
        "MQTT_URL",
        _mqtt_url,
        "MQTT broker to publish the plant to (gateway mode): mqtt://[user:password@]host[:port] "
        "or mqtts:// for TLS",
    )
    mqtt_prefix: str = option(
        "factory",
        "--mqtt-prefix",
        "MQTT_PREFIX",
        _topic_part,
        "first topic level: {prefix}/{type}/{machine_id}/telemetry",
    )
    mqtt_format: str = option(
        "json",
        "--mqtt-format",
        "MQTT_FORMAT",
        str,
        "payloads: json (the WebSocket's snapshot on {prefix}/{type}/{id}/telemetry) or "
        "sparkplug (Sparkplug B 3.0: spBv1.0/{prefix}/DDATA/{gateway}/{id}, births and death)",
        choices=MQTT_FORMATS,
    )
    mqtt_hz: float = option(
        0.0,
        "--mqtt-hz",
        "MQTT_HZ",
        _non_negative_float,
        "telemetry messages per machine per second, at most the tick rate (0: the tick rate)",
    )
    mqtt_qos: int = option(0, "--mqtt-qos", "MQTT_QOS", _qos, "QoS of telemetry (0, 1 or 2)")
    mqtt_retain: bool = option(
        False, "--mqtt-retain", "MQTT_RETAIN", None, "publish telemetry retained"
    )
    mqtt_deadband: float = option(
        0.0,
        "--mqtt-deadband",
        "MQTT_DEADBAND",
        _non_negative_float,
        "report by exception: publish a machine only when a sensor moved by more than this "
        "fraction of its typical range, its state or faults changed, or --mqtt-max-silence "
        "passed (0: publish every machine every time)",
    )
    mqtt_max_silence_s: float = option(
        10.0,
        "--mqtt-max-silence",
        "MQTT_MAX_SILENCE",
        _positive_float,
        "with --mqtt-deadband: simulated seconds a machine goes unpublished at most",
    )
    mqtt_commands: bool = option(
        False,
        "--mqtt-commands",
        "MQTT_COMMANDS",
        None,
        "take faults and commands on {prefix}/{type}/{machine_id}/cmd (anyone who may publish "
        "there can change the plant); answers on .../cmd/reply",
    )
    mqtt_gateway_id: str = option(
        "",
        "--mqtt-gateway-id",
        "MQTT_GATEWAY_ID",
        _gateway_id,
        "this gateway's name in {prefix}/status/{gateway} and its client id (default: "
        "dms-<host name>)",
    )
    mqtt_tls_verify: bool = option(
        True,
        "--mqtt-tls-verify",
        "MQTT_TLS_VERIFY",
        None,
        "verify an mqtts:// broker's certificate",
    )
    mqtt_ca_file: Path | None = option(
        None, "--mqtt-ca-file", "MQTT_CA_FILE", Path, "CA (PEM) to verify an mqtts:// broker"
    )
    gc_freeze: bool = option(
        True,
        "--gc-freeze",
        "GC_FREEZE",
        None,
        "freeze long-lived objects once connections settle, so full GC passes stay short "
        "with thousands of connections",
    )

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

    @property
    def uses_bus(self) -> bool:
        return self.role != "embedded" or self.workers > 1


SIMULATION_OPTIONS = ("fleet", "seed", "fault_rate_per_h", "repair_after_s")  # shared with export


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
    workers_given = "WORKERS" in environ or any(
        argument == "--workers" or argument.startswith("--workers=") for argument in argv
    )
    if args.role == "web" and not workers_given and "WEB_CONCURRENCY" in environ:
        try:  # Heroku's processes per dyno, for the web dynos
            args.workers = _positive_int(environ["WEB_CONCURRENCY"])
        except argparse.ArgumentTypeError as error:
            parser.error(f"WEB_CONCURRENCY: {error}")
    if (args.role != "embedded" or args.workers > 1) and args.bus_url is None:
        what = f"--role {args.role}" if args.role != "embedded" else f"--workers {args.workers}"
        parser.error(
            f"{what} runs on a Redis bus: give --bus redis://host:port or set REDIS_URL "
            "(without a bus, python -m server simulates and serves in one process)"
        )
    if args.record_hz > args.tick_hz:
        parser.error(f"--record-hz {args.record_hz:g} is above the tick rate {args.tick_hz:g} Hz")
    if args.mqtt_hz > args.tick_hz:
        parser.error(f"--mqtt-hz {args.mqtt_hz:g} is above the tick rate {args.tick_hz:g} Hz")
    if args.role == "simulator" and args.workers > 1:
        parser.error("--role simulator is one process: --workers applies to embedded and web")
    return Settings(
        **{field.name: getattr(args, field.name) for field in dataclasses.fields(Settings)}
    )


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description=(
            "Demo machine server: simulated industrial machines stepped at a fixed tick rate, "
            "served over REST and WebSocket. Every option can also be set by the environment "
            "variable named in its help; a flag wins over the environment. "
            "'python -m server export --help' describes the data-set export."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_options(parser, (field.name for field in dataclasses.fields(Settings)), environ)
    return parser


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    names: Iterable[str],
    environ: Mapping[str, str] | None,
) -> None:
    """Add the options of the named settings; defaults from ``environ`` when it is given."""
    fields = {field.name: field for field in dataclasses.fields(Settings)}
    for name in names:
        field = fields[name]
        spec: Option = field.metadata["option"]
        text = None if environ is None else environ.get(spec.env)
        help_text = spec.help if environ is None else f"{spec.help} [env {spec.env}]"
        if spec.parse is None:
            default = field.default if text is None else _switch(text)
            parser.add_argument(
                spec.flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_text,
            )
        else:
            default = field.default
            if isinstance(default, tuple):  # given (and shown in --help) as a comma list
                default = ",".join(map(str, default))
            parser.add_argument(
                spec.flag,
                dest=name,
                metavar=None
                if spec.choices
                else spec.flag.removeprefix("--").upper().replace("-", "_"),
                type=spec.parse,
                default=default if text is None else text,
                choices=spec.choices,
                help=help_text,
            )


def configure_logging(level: str, *, tag: str = "") -> None:
    """Log lines on stderr; ``tag`` (a role) and the pid tell processes of one plant apart."""
    where = f"[{tag} %(process)d] " if tag else ""
    logging.basicConfig(
        level=level.upper(), format=f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s"
    )
    if level != "debug":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        logging.getLogger("gmqtt").setLevel(logging.WARNING)  # a line per packet at info
