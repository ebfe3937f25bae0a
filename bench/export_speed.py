"""End-to-end export speed against issue 4's two targets.

Run: ``python -m bench.export_speed`` (``--quick`` for a simulated hour instead of a day,
``--format csv`` for CSV, ``--simulation-only`` to also time stepping the fleets alone).
Each run writes a real data set into a temporary directory (removed afterwards) through the
same code as ``python -m server export`` and prints machine-samples per second, the wall
and CPU time, the ratio to real time, the bytes written and the load average before it.

Targets (Parquet): 1,000 machines x 1 simulated day at 1 Hz (86.4 million samples) in
under 45 s, i.e. at least 2 million samples/s; the default three machines x 1 simulated day
at 10 Hz in under 60 s, i.e. at least 1,440x real time.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from server.export.runner import ExportResult, run_export
from simulation.export.dataset import ExportPlan, make_plan, synthetic_fleet
from simulation.fleet import Fleet
from simulation.fleet_spec import default_fleet

DAY_S = 86_400.0
HOUR_S = 3_600.0


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    plan: ExportPlan
    max_seconds: float  # for a full simulated day; scaled by the duration for --quick


def targets(duration_s: float, seed: int) -> list[Target]:
    return [
        Target(
            "1,000 machines, 1 Hz",
            make_plan(synthetic_fleet(1_000), seed=seed, rate_hz=1.0, duration_s=duration_s),
            45.0,
        ),
        Target(
            "default fleet (3), 10 Hz",
            make_plan(default_fleet(), seed=seed, rate_hz=10.0, duration_s=duration_s),
            60.0,
        ),
    ]


def simulation_cpu_s(plan: ExportPlan) -> float:
    """CPU seconds of stepping the plan's fleet alone (no export), here, type after type."""
    began = cpu_seconds()
    for machine_type in plan.machine_types():
        fleet = Fleet(
            plan.type_fleet(machine_type),
            seed=plan.seed,
            dt_s=plan.dt_s,
            fault_rate_per_h=plan.fault_rate_per_h,
        )
        for _ in range(plan.steps):
            fleet.step()
    return cpu_seconds() - began


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished worker processes."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def measure(
    target: Target, file_format: str, workers: int | None, base: Path
) -> tuple[ExportResult, float]:
    """The export's result and the CPU seconds it used (all processes)."""
    began = cpu_seconds()
    with tempfile.TemporaryDirectory(dir=base, prefix="export-speed-") as directory:
        result = run_export(target.plan, Path(directory), file_format=file_format, workers=workers)
    return result, cpu_seconds() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.export_speed", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a simulated hour instead of a day")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--workers", type=int, help="processes (default: one per machine type)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--simulation-only",
        action="store_true",
        help="also time stepping each fleet without exporting (the floor the export stands on)",
    )
    args = parser.parse_args(argv)
    duration_s = HOUR_S if args.quick else DAY_S
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pyarrow {pa.__version__}, "
        f"{os.cpu_count()} cores; {args.format}, simulated {duration_s:,.0f} s per run"
    )
    print(
        "cpu s: all processes' CPU time; load: the 1-minute load average before the run "
        "(above 0.5 means something else shared the cores)"
    )
    print(
        f"{'run':<26} {'samples':>12} {'wall s':>7} {'cpu s':>7} {'samples/s':>11} "
        f"{'x real':>7} {'MB':>8} {'load':>5} {'target s':>8}  verdict"
    )
    for target in targets(duration_s, args.seed):
        load = os.getloadavg()[0]
        result, cpu_s = measure(target, args.format, args.workers, args.dir)
        limit_s = target.max_seconds * duration_s / DAY_S
        verdict = "meets" if result.seconds < limit_s else "MISSES"
        print(
            f"{target.name:<26} {result.samples:>12,} {result.seconds:>7.1f} {cpu_s:>7.1f} "
            f"{result.samples_per_s:>11,.0f} {duration_s / result.seconds:>7,.0f} "
            f"{result.bytes / 1e6:>8,.1f} {load:>5.2f} {limit_s:>8.1f}  {verdict}",
            flush=True,
        )
        if args.simulation_only:
            print(
                f"{'  stepping alone':<26} {'':>12} {'':>7} "
                f"{simulation_cpu_s(target.plan):>7.1f}  (one process, no export)",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
