"""``python -m server export``: arguments, progress bar and summary around the runner."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from server.config import add_options
from server.fleetfile import fresh_seed, load_fleet
from server.scenario import load_scenario
from simulation import Fleet
from simulation.export.dataset import (
    DEFAULT_START_MS,
    ExportPlan,
    ExportPlanError,
    make_plan,
    parse_duration,
    synthetic_fleet,
)
from simulation.fleet_spec import FleetSpec, FleetSpecError
from simulation.scenario import ScenarioError

if TYPE_CHECKING:  # the runner imports pyarrow: only when the command runs
    from server.export.runner import ExportResult

PROG = "python -m server"
INSTALL_HINT = "pip install 'demo-machine-server[export]' (pyarrow and tqdm)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Offline tools of the machine simulation."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    export = commands.add_parser(
        "export",
        help="write a labelled data set (Parquet or CSV) for a fleet, faster than real time",
        description=(
            "Simulate a fleet for a simulated duration and write one file per machine type "
            "plus manifest.json. The same arguments give byte-identical files: unlike the "
            "server, the export reads no environment variables."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fleet = export.add_mutually_exclusive_group()
    add_options(fleet, ("fleet",), None)
    fleet.add_argument(
        "--machines", type=int, help="a synthetic fleet of N machines in equal shares of the types"
    )
    add_options(export, ("seed", "fault_rate_per_h", "repair_after_s", "scenario"), None)
    export.add_argument(
        "--duration", default="1h", help="simulated time: seconds, or with a unit: 90m, 24h, 1d"
    )
    export.add_argument(
        "--rate", type=float, default=10.0, help="samples per machine per simulated second (Hz)"
    )
    export.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    export.add_argument("--out", type=Path, required=True, help="output directory (created)")
    export.add_argument(
        "--start",
        default=_iso(DEFAULT_START_MS),
        help="simulated wall time of time_s = 0, ISO-8601 (UTC unless it has an offset)",
    )
    export.add_argument(
        "--workers", type=int, help="processes, one machine type each (default: one per type)"
    )
    export.add_argument(
        "--overwrite", action="store_true", help="allow a non-empty output directory"
    )
    export.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    export.set_defaults(command_parser=export)  # its .error() prints its usage and exits 2
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Run the command; 0 on success, 1 when writing failed (argument errors exit with 2)."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        plan, fleet_info = _plan_from_args(args)
        _check_out_dir(args.out, args.overwrite)
        if args.workers is not None and args.workers < 1:
            raise ExportPlanError(f"--workers must be at least 1, got {args.workers}")
    except (ExportPlanError, FleetSpecError, ScenarioError, OSError) as error:
        args.command_parser.error(str(error))
    try:
        from tqdm import tqdm

        from server.export.runner import run_export
    except ImportError as error:
        print(f"{PROG} export: {error}; install the export extra: {INSTALL_HINT}", file=sys.stderr)
        return 1
    show_progress = not args.quiet and sys.stderr.isatty()
    with tqdm(
        total=plan.samples,
        unit="samples",
        unit_scale=True,
        disable=not show_progress,
        file=sys.stderr,
        mininterval=0.5,
    ) as bar:
        try:
            result = run_export(
                plan,
                args.out,
                file_format=args.format,
                workers=args.workers,
                fleet_info=fleet_info,
                report=bar.update,
            )
        except (OSError, BrokenProcessPool) as error:
            print(f"{PROG} export: error: {error}", file=sys.stderr)
            return 1
    if not args.quiet:
        print(summary(plan, result), file=stdout or sys.stdout)
    return 0


def _plan_from_args(args: argparse.Namespace) -> tuple[ExportPlan, dict[str, Any]]:
    fleet, fleet_info = _fleet_from_args(args)
    seed = fresh_seed() if args.seed is None else args.seed
    plan = make_plan(
        fleet,
        seed=seed,
        rate_hz=args.rate,
        duration_s=parse_duration(args.duration),
        start_ms=_parse_start(args.start),
        fault_rate_per_h=args.fault_rate_per_h,
        repair_after_s=args.repair_after_s,
    )
    if args.scenario is not None:
        # The catalog the server would build for this fleet and step: ids, types, fault kinds.
        catalog = Fleet(fleet, seed=seed, dt_s=plan.dt_s).catalog
        plan = dataclasses.replace(plan, scenario=load_scenario(args.scenario, catalog))
        text = args.scenario.read_text()
        fleet_info = fleet_info | {
            "scenario": {
                "name": args.scenario.name,
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
                "toml": text,
            }
        }
    return plan, fleet_info


def _fleet_from_args(args: argparse.Namespace) -> tuple[FleetSpec, dict[str, Any]]:
    if args.machines is not None:
        return synthetic_fleet(args.machines), {"source": "synthetic", "count": args.machines}
    fleet, text = load_fleet(args.fleet)
    if text is None:
        return fleet, {"source": "default"}
    digest = hashlib.sha256(text.encode()).hexdigest()
    return fleet, {"source": "file", "name": args.fleet.name, "sha256": digest, "toml": text}


def _parse_start(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ExportPlanError(
            f"invalid --start {text!r}; give an ISO-8601 time such as 2026-01-01T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportPlanError(f"--out {out} exists and is not a directory")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise ExportPlanError(
            f"--out {out} is not empty; choose a new directory or pass --overwrite"
        )


def summary(plan: ExportPlan, result: ExportResult) -> str:
    """One line: what was written, how long it took, how fast."""
    realtime = plan.duration_s / result.seconds if result.seconds > 0 else float("inf")
    return (
        f"exported {result.samples:,} samples ({len(plan.fleet):,} machines x {plan.steps:,} "
        f"steps at {plan.rate_hz:g} Hz, seed {plan.seed}) in {result.seconds:.1f} s: "
        f"{result.samples_per_s:,.0f} samples/s, {realtime:,.0f}x real time; "
        f"{len(result.files)} files, {result.bytes / 1e6:,.1f} MB in {result.out_dir}"
    )


def _iso(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000.0, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
