"""Frames as bytes: size per machine per tick and encode/decode time, against the arrays' size.

Run: ``python -m bench.frame_bytes`` (``--sizes 3,1000,100000``). Prints, per fleet size,
the message size, the bytes of the frame's own arrays (readings and labels), the overhead,
and the best and median encode and decode times over ``--repeat`` runs of one stepped frame
with a few active faults.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from simulation import FaultRequest, Fleet, FleetSpec, Frame, MachineSpec
from simulation.frame_bytes import decode_frame, encode_frame
from simulation.models import MODEL_TYPES

DEFAULT_SIZES = (3, 1_000, 100_000)
AIM_MS = 5.0


def mixed_fleet(size: int) -> FleetSpec:
    types = sorted(MODEL_TYPES)
    return FleetSpec(
        tuple(MachineSpec(f"m{index:07d}", types[index % len(types)]) for index in range(size))
    )


def sample_frame(size: int) -> Frame:
    fleet = Fleet(mixed_fleet(size), seed=1, dt_s=0.1)
    for index in range(min(size, 10)):
        fleet.inject_fault(f"m{index:07d}", FaultRequest(kind="overheating", severity=0.5))
    fleet.step()
    return fleet.step()


def timed(action: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best and median milliseconds of ``repeat`` runs."""
    durations = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        durations.append((time.perf_counter() - began) * 1e3)
    return min(durations), statistics.median(durations)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.frame_bytes", description=__doc__)
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    print(
        f"{'machines':>9} {'bytes':>11} {'arrays':>11} {'overhead':>9} {'B/machine':>10} "
        f"{'encode ms best/med':>19} {'decode ms best/med':>19}"
    )
    for size in (int(text) for text in args.sizes.split(",")):
        frame = sample_frame(size)
        data = encode_frame(frame)
        arrays = sum(a.nbytes for a in frame.values + frame.state + frame.health + frame.rul_s)
        encode = timed(lambda frame=frame: encode_frame(frame), args.repeat)
        decode = timed(lambda data=data: decode_frame(data), args.repeat)
        print(
            f"{size:>9,} {len(data):>11,} {arrays:>11,} {len(data) - arrays:>9,} "
            f"{len(data) / size:>10.1f} {encode[0]:>9.3f}/{encode[1]:<9.3f} "
            f"{decode[0]:>9.3f}/{decode[1]:<9.3f}"
        )
    print(f"aim: at most the arrays plus a small header, under {AIM_MS:g} ms each way at 100,000")


if __name__ == "__main__":
    main()
