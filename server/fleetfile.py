"""The fleet a run simulates (a fleet file, or the seed's three machines) and its seed."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np

from simulation import FleetSpec, FleetSpecError, parse_fleet
from simulation.fleet_spec import default_fleet
from simulation.models import MODEL_TYPES

MAX_FLEET_FILE_BYTES = 16 * 1024 * 1024  # a fleet of millions is a few group entries


def load_fleet(path: Path | None) -> tuple[FleetSpec, str | None]:
    """The machines of the TOML file at ``path`` (and its text), or the seed's three (and None).

    Raises :class:`~simulation.FleetSpecError` naming the line or the problem (not a regular
    file, too large, not UTF-8), or ``OSError`` when it cannot be read.
    """
    if path is None:
        return default_fleet(), None
    text = read_text_file(path, MAX_FLEET_FILE_BYTES, FleetSpecError)
    return parse_fleet(text, str(path), MODEL_TYPES), text


def read_text_file(path: Path, max_bytes: int, error: type[ValueError]) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``; ``error`` saying what is
    wrong otherwise (``OSError`` when it cannot be read)."""
    if not stat.S_ISREG(path.stat().st_mode):  # before opening: a FIFO would block the open
        raise error(f"{path}: not a regular file")
    with path.open("rb") as file:
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{path}: larger than {max_bytes // (1024 * 1024)} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as decoding:
        raise error(f"{path}: not UTF-8 text (byte {decoding.start})") from None


def fresh_seed() -> int:
    """A random seed, so an unseeded run can still be reproduced from its recorded seed."""
    return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
