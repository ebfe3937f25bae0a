"""Report by exception: which machines of a frame moved enough to be published again.

A machine is due when a sensor moved by more than ``deadband`` times its typical range since
it was last published, when its state or its active faults changed, or when it has gone
``max_silence_s`` of simulated time unpublished (industrial gateways call this a deadband
with an integrity period). Vectorised per machine type, like the models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation import Frame
from simulation.catalog import FleetCatalog


@dataclass(slots=True)
class _Published:
    """What one machine type's machines were last published with."""

    values: np.ndarray
    states: np.ndarray
    faults: np.ndarray  # active faults per machine
    at_s: np.ndarray  # simulated time


class ExceptionFilter:
    def __init__(self, catalog: FleetCatalog, deadband: float, max_silence_s: float) -> None:
        self.max_silence_s = max_silence_s
        self._bands = [
            deadband
            * np.array(
                [max(sensor.typical_max - sensor.typical_min, 1e-9) for sensor in kind.sensors]
            )[:, None]
            for kind in catalog.types
        ]
        self._published: list[_Published | None] = [None] * len(catalog.types)

    def due(self, frame: Frame, *, every_machine: bool = False) -> list[np.ndarray]:
        """Per slot, the columns to publish now (all with ``every_machine``); they count as
        published from this frame."""
        due = []
        for slot, values in enumerate(frame.values):
            count = values.shape[1]
            faults = np.bincount(frame.faults[slot].instances, minlength=count)
            states = frame.state[slot]
            last = self._published[slot]
            if last is None:
                self._published[slot] = _Published(
                    values.copy(), states.copy(), faults, np.full(count, frame.time_s)
                )
                due.append(np.arange(count))
                continue
            moved = np.abs(values - last.values) > self._bands[slot]
            dropped = np.isnan(values) != np.isnan(last.values)
            mask = (moved | dropped).any(axis=0)
            mask |= states != last.states
            mask |= faults != last.faults
            mask |= frame.time_s - last.at_s >= self.max_silence_s - 1e-9
            mask |= every_machine
            columns = np.flatnonzero(mask)
            last.values[:, columns] = values[:, columns]
            last.states[columns] = states[columns]
            last.faults[columns] = faults[columns]
            last.at_s[columns] = frame.time_s
            due.append(columns)
        return due
