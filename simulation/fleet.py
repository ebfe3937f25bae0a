"""A fleet: one vectorised model per machine type, stepped together into immutable frames."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from simulation.fleet_spec import FleetSpec, default_fleet
from simulation.models import MODEL_TYPES, MachineModel


@dataclass(frozen=True, slots=True)
class Frame:
    """Every machine's readings after one step; never mutated once built.

    ``values[k]`` holds the readings of ``Fleet.models[k]`` as ``(sensors, count)``.
    """

    seq: int
    time_s: float
    values: tuple[np.ndarray, ...]


class Fleet:
    """Builds the models a fleet description needs and steps them all at once."""

    def __init__(self, spec: FleetSpec | None = None, *, seed: int, dt_s: float) -> None:
        if not dt_s > 0:
            raise ValueError(f"dt must be positive, got {dt_s!r}")
        spec = spec if spec is not None else default_fleet()
        self.dt_s = dt_s
        self.spec = spec
        self.seed = seed
        type_names = sorted({machine.machine_type for machine in spec.machines})
        counts = {name: 0 for name in type_names}
        self.placement: dict[str, tuple[int, int]] = {}
        slot_of_type = {name: slot for slot, name in enumerate(type_names)}
        for machine in spec.machines:
            slot = slot_of_type[machine.machine_type]
            self.placement[machine.machine_id] = (slot, counts[machine.machine_type])
            counts[machine.machine_type] += 1
        self.models: tuple[MachineModel, ...] = tuple(
            MODEL_TYPES[name](counts[name], _type_rng(seed, name)) for name in type_names
        )
        self.seq = 0

    @property
    def size(self) -> int:
        return len(self.spec)

    def step(self) -> Frame:
        """Advance every machine by one step of ``dt_s`` simulated seconds; return the new frame."""
        values = tuple(model.step(self.dt_s) for model in self.models)
        self.seq += 1
        return Frame(self.seq, self.seq * self.dt_s, values)

    def machine_type(self, machine_id: str) -> str:
        return self.models[self.placement[machine_id][0]].TYPE_NAME


def _type_rng(seed: int, type_name: str) -> np.random.Generator:
    """One stream per machine type, so adding a type leaves the others' samples alone."""
    sequence = np.random.SeedSequence(seed, spawn_key=(zlib.crc32(type_name.encode()),))
    return np.random.default_rng(sequence)
