"""The contract every vectorised machine model follows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorSpec:
    """One output channel of a model: its seed name, unit and typical range."""

    name: str
    unit: str
    description: str
    typical_min: float
    typical_max: float
    decimals: int = 2
    integer: bool = False


class MachineModel(ABC):
    """All instances of one machine type, stepped together as numpy arrays.

    A model owns its state arrays (one element per instance) and its own seeded
    ``numpy.random.Generator``. ``step`` advances every instance by ``dt_s``
    simulated seconds and returns a *new* float64 array of shape
    ``(len(SENSORS), count)`` that the caller may keep: the model never writes to
    an array it has returned.
    """

    TYPE_NAME: ClassVar[str]
    SENSORS: ClassVar[tuple[SensorSpec, ...]]

    def __init__(self, count: int, rng: np.random.Generator) -> None:
        if count < 1:
            raise ValueError("a model needs at least one instance")
        self.count = count
        self.rng = rng

    @classmethod
    def sensor_names(cls) -> tuple[str, ...]:
        return tuple(sensor.name for sensor in cls.SENSORS)

    @abstractmethod
    def step(self, dt_s: float) -> np.ndarray:
        """Advance all instances by ``dt_s`` seconds; return readings ``(sensors, count)``."""
