"""Simulation cost per machine per tick, for fleets from 3 to 1,000,000 machines.

Run: ``python -m bench.sim_cost`` (``--sizes 3,1000`` for a subset). Prints, per fleet
size, the mean and best wall time of one ``Fleet.step()`` and the cost per machine, and,
for comparison in the same run, the original design's cost per reading (the seed's
one-reading-per-call generator in ``shared/baseline``) when that file is beside the repo.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from simulation import Fleet, FleetSpec, MachineSpec
from simulation.models import MODEL_TYPES

DEFAULT_SIZES = (3, 1_000, 100_000, 1_000_000)
TICK_BUDGET_NS = 100.0
BASELINE = Path(__file__).resolve().parents[2] / "shared" / "baseline" / "telemetry_sim.py"


def mixed_fleet(size: int) -> FleetSpec:
    """``size`` machines, the three types in equal shares."""
    types = sorted(MODEL_TYPES)
    return FleetSpec(
        tuple(MachineSpec(f"m{index:07d}", types[index % len(types)]) for index in range(size))
    )


def time_steps(fleet: Fleet, budget_s: float, max_steps: int) -> tuple[float, float, int]:
    """Mean and best seconds per step over at most ``max_steps`` steps or ``budget_s``."""
    for _ in range(3):
        fleet.step()
    durations = []
    deadline = time.perf_counter() + budget_s
    while len(durations) < max_steps and time.perf_counter() < deadline:
        began = time.perf_counter()
        fleet.step()
        durations.append(time.perf_counter() - began)
    return sum(durations) / len(durations), min(durations), len(durations)


def baseline_ns_per_reading(readings: int = 3_000) -> float | None:
    """The seed design's cost of one reading (one call per machine per tick), if available."""
    if not BASELINE.exists():
        return None
    spec = importlib.util.spec_from_file_location("telemetry_sim", BASELINE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    machine_ids = list(module.MACHINES)
    began = time.perf_counter()
    for index in range(readings):
        module.generate_machine_data(machine_ids[index % len(machine_ids)])
    return (time.perf_counter() - began) / readings * 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sim_cost", description=__doc__)
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per size")
    parser.add_argument("--max-steps", type=int, default=200)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"python {sys.version.split()[0]}, dt 0.1 s, machine types in equal shares")
    print(
        f"{'machines':>10} {'steps':>6} {'mean ms/step':>13} {'best ms/step':>13} "
        f"{'ns/machine (mean)':>18} {'ns/machine (best)':>18}"
    )
    for size in sizes:
        fleet = Fleet(mixed_fleet(size), seed=1, dt_s=0.1)
        mean_s, best_s, steps = time_steps(fleet, args.seconds, args.max_steps)
        print(
            f"{size:>10,} {steps:>6} {mean_s * 1e3:>13.3f} {best_s * 1e3:>13.3f} "
            f"{mean_s / size * 1e9:>18.1f} {best_s / size * 1e9:>18.1f}"
        )
    print(f"target: <= {TICK_BUDGET_NS:.0f} ns per machine per tick at 100,000 machines and up")
    baseline = baseline_ns_per_reading()
    if baseline is not None:
        print(
            f"original design (one reading per call, shared/baseline): {baseline:,.0f} ns/reading"
        )


if __name__ == "__main__":
    main()
