"""The fleet a run simulates (a fleet file, or the seed's three machines) and its seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulation import FleetSpec, parse_fleet
from simulation.fleet_spec import default_fleet
from simulation.models import MODEL_TYPES


def load_fleet(path: Path | None) -> tuple[FleetSpec, str | None]:
    """The machines of the TOML file at ``path`` (and its text), or the seed's three (and None).

    Raises :class:`~simulation.FleetSpecError` naming the line, or ``OSError``.
    """
    if path is None:
        return default_fleet(), None
    text = path.read_text(encoding="utf-8")
    return parse_fleet(text, str(path), MODEL_TYPES), text


def fresh_seed() -> int:
    """A random seed, so an unseeded run can still be reproduced from its recorded seed."""
    return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
