"""What a scenario costs the tick: parsing, and carrying out its actions between steps.

    python -m bench.scenario_cost                 # 10,000 actions on the default fleet
    python -m bench.scenario_cost --actions 100000

Builds a scenario of N actions (markers, fault injections, clears and commands in turn, one
due every tick, and a repeated marker every tick on top), parses it, then steps the fleet
through it as the server's scripted source does, timing the scenario's work (the timeline
and the changes) apart from the steps, against the 100 ms tick period at 10 Hz.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from server.fleetfile import load_fleet
from simulation import Fleet
from simulation.scenario import Timeline, carry_out, parse_scenario

TICK_S = 0.1
KINDS = (
    'marker = "step {n}"',
    'machine = "cnc_01"\ninject = {{type = "overheating", severity = 0.2, duration_s = 0.5}}',
    'machine = "cnc_01"\nclear = "all"',
    'machines = "*"\ncommand = "start"',
)


def scenario_text(actions: int) -> str:
    entries = [f"[[actions]]\ntick = {n + 1}\n{KINDS[n % len(KINDS)].format(n=n)}\n"
               for n in range(actions - 1)]  # fmt: skip
    entries.append('[[actions]]\ntick = 1\nevery = 0.1\nmarker = "every tick"\n')
    return "\n".join(entries)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scenario_cost", description=__doc__)
    parser.add_argument("--actions", type=int, default=10_000)
    args = parser.parse_args(argv)
    fleet = Fleet(load_fleet(None)[0], seed=1, dt_s=TICK_S)
    text = scenario_text(args.actions)
    began = time.perf_counter()
    actions = parse_scenario(text, "bench.toml", fleet.catalog)
    parse_s = time.perf_counter() - began
    timeline = Timeline(actions)
    scenario_s = step_s = 0.0
    worst_s = 0.0
    events = 0
    for _ in range(args.actions):
        began = time.perf_counter()
        for occurrence in timeline.due(fleet.seq + 1):
            events += len(carry_out(occurrence, fleet))
        spent = time.perf_counter() - began
        scenario_s += spent
        worst_s = max(worst_s, spent)
        began = time.perf_counter()
        fleet.step()
        step_s += time.perf_counter() - began
    ticks = args.actions
    print(f"{len(actions):,} actions parsed in {parse_s * 1e3:.0f} ms")
    print(
        f"{ticks:,} ticks, {events:,} events: scenario {scenario_s / ticks * 1e6:.1f} µs per "
        f"tick (worst {worst_s * 1e6:.0f} µs) = {100 * scenario_s / ticks / TICK_S:.3f} % of a "
        f"{TICK_S * 1e3:.0f} ms tick; the step itself {step_s / ticks * 1e6:.0f} µs"
    )


if __name__ == "__main__":
    main()
