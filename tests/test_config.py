"""Settings from flags and the environment: defaults, precedence and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import Settings, build_parser, load_settings


def test_defaults_match_the_seed() -> None:
    settings = load_settings([], {})
    assert (settings.host, settings.port, settings.tick_hz) == ("0.0.0.0", 7000, 10.0)
    assert settings.cors_origins == ("*",)
    assert settings.seed is None
    assert settings == Settings()


def test_environment_fills_every_option() -> None:
    environ = {
        "PORT": "5001",
        "HOST": "127.0.0.1",
        "TICK_HZ": "20",
        "SEED": "42",
        "FLEET": "plant.toml",
        "CORS_ORIGINS": "http://a.example/, http://b.example",
        "LOG_LEVEL": "DEBUG",
    }
    settings = load_settings([], environ)
    assert settings.port == 5001
    assert settings.host == "127.0.0.1"
    assert settings.tick_hz == 20.0
    assert settings.seed == 42
    assert settings.fleet == Path("plant.toml")
    assert settings.cors_origins == ("http://a.example", "http://b.example")
    assert settings.log_level == "debug"


def test_control_settings_come_from_the_environment() -> None:
    settings = load_settings([], {"CONTROL_TOKEN": "s3cret", "CONTROL_NETWORKS": "10.0.0.0/8"})
    assert settings.control_token == "s3cret"
    assert [str(network) for network in settings.control_networks] == ["10.0.0.0/8"]
    assert load_settings([], {}).control_token is None


def test_repair_policy_defaults_to_a_crew_and_can_be_turned_off() -> None:
    assert load_settings([], {}).repair_after_s == 1800.0
    assert load_settings([], {"REPAIR_AFTER": "0"}).repair_after_s == 0.0


def test_speed_scales_the_simulated_step() -> None:
    assert load_settings(["--speed", "60"], {}).step_s == 6.0


def test_flags_win_over_the_environment() -> None:
    settings = load_settings(["--port", "6000", "--seed", "1"], {"PORT": "5001", "SEED": "9"})
    assert (settings.port, settings.seed) == (6000, 1)


@pytest.mark.parametrize(
    ("argv", "environ", "complaint"),
    [
        ([], {"PORT": "web"}, "--port: not an integer: 'web'"),
        (["--port", "70000"], {}, "port must be 0..65535"),
        (["--tick-hz", "0"], {}, "tick rate must be in"),
        (["--tick-hz", "nan"], {}, "not a finite number"),
        (["--seed", "-3"], {}, "seed must be a non-negative integer"),
        (["--log-level", "loud"], {}, "invalid choice: 'loud'"),
        ([], {"LOG_LEVEL": "loud"}, "invalid choice: 'loud'"),
        (["--cors-origins", " , "], {}, "give at least one origin"),
        (["--stall-timeout", "0"], {}, "must be a positive number"),
        (["--speed", "500"], {}, "would step 50 simulated seconds per tick"),
        ([], {"CONTROL_NETWORKS": "10.0.0.0/33"}, "10.0.0.0/33"),
    ],
)
def test_bad_values_stop_with_a_usage_error(
    argv: list[str], environ: dict[str, str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        load_settings(argv, environ)
    assert stopped.value.code == 2
    assert complaint in capsys.readouterr().err


def test_help_names_each_environment_variable() -> None:
    text = " ".join(build_parser({}).format_help().split())  # as wrapped for any width
    for variable in ("PORT", "HOST", "TICK_HZ", "SEED", "FLEET", "CORS_ORIGINS", "LOG_LEVEL"):
        assert f"[env {variable}]" in text


def test_the_export_takes_the_simulation_options_from_the_same_declarations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from server.export.cli import build_parser as export_parser

    server_help = build_parser({}).format_help()
    export_help = export_parser()._subparsers._group_actions[0].choices["export"].format_help()
    for flag in ("--fleet", "--seed", "--fault-rate", "--repair-after"):
        assert flag in server_help
        assert flag in export_help
    assert "[env" not in export_help  # an export is reproducible from its arguments alone
    with pytest.raises(SystemExit):
        export_parser().parse_args(["export", "--out", "x", "--seed", "-3"])
    assert "seed must be a non-negative integer" in capsys.readouterr().err


def test_web_concurrency_sets_the_web_processes_of_a_web_dyno_only() -> None:
    bus = {"REDIS_URL": "redis://127.0.0.1:6379"}
    heroku = bus | {"WEB_CONCURRENCY": "3"}
    assert load_settings(["--role", "web"], heroku).workers == 3
    assert load_settings(["--role", "web", "--workers", "2"], heroku).workers == 2
    assert load_settings(["--role", "web"], heroku | {"WORKERS": "4"}).workers == 4
    # The embedded default ignores it: a buildpack's WEB_CONCURRENCY never needs a bus.
    assert load_settings([], {"WEB_CONCURRENCY": "3"}).workers == 1
    assert load_settings([], heroku).role == "embedded"


def test_a_bus_url_is_redis_and_never_echoes_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        load_settings(["--bus", "http://user:secret@example.com"], {})
    error = capsys.readouterr().err
    assert "the bus is Redis" in error
    assert "secret" not in error
