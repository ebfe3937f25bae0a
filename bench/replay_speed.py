"""Does a replay keep up? Frames per second served against those asked.

    python -m bench.replay_speed                       # 1,000 machines at --speed 100
    python -m bench.replay_speed --machines 10000 --speed 10

Exports ``--machines`` machines for ``--minutes`` simulated minutes at 1 Hz, starts
``python -m server --replay`` on it at ``--speed`` (that many recorded seconds per wall
second, so ``--speed`` ticks per second, at most 100), lets it settle, and counts over
``--window`` seconds the ticks served (``dms_ticks_total``) and the slots it overran
(``dms_tick_overruns_total``), with the server's CPU. Stopped by its pid.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.fanout import (
    REPO,
    cpu_seconds,
    free_port,
    metric,
    scrape_metrics,
    write_fleet,
)
from bench.servers import started_server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay_speed", description=__doc__)
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--speed", type=float, default=100.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--settle", type=float, default=1.0)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    fleet = write_fleet(directory, args.machines)
    export = directory / "export"
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "server", "export", "--fleet", str(fleet), "--seed", "1",
         "--rate", "1", "--duration", f"{args.minutes * 60:g}", "--out", str(export),
         "--quiet"],
        cwd=REPO,
        check=True,
    )  # fmt: skip
    print(f"exported {args.machines:,} machines x {args.minutes:g} min in "
          f"{time.perf_counter() - began:.1f} s")  # fmt: skip
    port = free_port()
    arguments = ["--replay", str(export), "--speed", f"{args.speed:g}", "--loop"]
    with started_server(arguments, directory / "server.log", port=port) as server:
        time.sleep(args.settle)
        first, cpu_first = scrape_metrics(port), cpu_seconds(server.pid)
        time.sleep(args.window)
        last, cpu_last = scrape_metrics(port), cpu_seconds(server.pid)
    asked = min(args.speed, 100.0)
    served = (metric(last, "dms_ticks_total") - metric(first, "dms_ticks_total")) / args.window
    overruns = metric(last, "dms_tick_overruns_total") - metric(first, "dms_tick_overruns_total")
    print(
        f"replay of {args.machines:,} machines at --speed {args.speed:g}: {served:.1f} frames/s "
        f"served of {asked:g} asked ({100 * served / asked:.1f} %), {overruns:.0f} slots "
        f"overrun in {args.window:g} s, server CPU "
        f"{100 * (cpu_last - cpu_first) / args.window:.0f} %"
    )


if __name__ == "__main__":
    main()
