"""The plant-control service: change the plant and describe it, with no transport in it.

REST handlers use it today (:mod:`server.plant_api`); an MQTT command topic or a web process
forwarding to a remote simulator use the same interface. Every change is made between two
steps of the simulation (a tick boundary) and answers the ``seq`` of the first frame that
shows it: a client that reads a frame of that ``seq`` or later sees the change.

Refusals are :class:`~simulation.errors.ControlError` (``UnknownMachineError`` for an unknown
id), and :class:`PlantUnavailableError` when a remote simulator cannot be reached; each
transport maps them to its own error answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from server.source import LocalSource
from simulation.catalog import FleetCatalog
from simulation.faults import FaultRecord
from simulation.spec import FaultRequest

Result = TypeVar("Result", covariant=True)


class PlantUnavailableError(Exception):
    """The plant cannot be changed now: the simulator behind a bus is down, silent or broken.

    ``status`` is the HTTP status that says so (503, 504, 502), ``error`` a slug."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error = status, error


@dataclass(frozen=True, slots=True)
class PlantChange(Generic[Result]):
    """What a change did, and the seq of the first frame that shows it."""

    result: Result
    effective_seq: int


class PlantControl(Protocol):
    catalog: FleetCatalog

    async def inject_fault(
        self, machine_id: str, request: FaultRequest
    ) -> PlantChange[FaultRecord]: ...

    async def clear_fault(self, machine_id: str, fault_id: str) -> PlantChange[FaultRecord]: ...

    async def command(self, machine_id: str, command: str) -> PlantChange[str]:
        """Carry out ``start``, ``stop``, ``maintain`` or ``reset``; the result is the new mode."""

    async def active_faults(self, machine_id: str) -> tuple[FaultRecord, ...]: ...


class LocalPlant:
    """Changes the fleet this process simulates, under the source's step lock."""

    def __init__(self, source: LocalSource) -> None:
        self.source = source
        self.catalog = source.catalog

    async def inject_fault(
        self, machine_id: str, request: FaultRequest
    ) -> PlantChange[FaultRecord]:
        async with self.source.lock:
            record = self.source.fleet.inject_fault(machine_id, request)
            return PlantChange(record, self.source.seq + 1)

    async def clear_fault(self, machine_id: str, fault_id: str) -> PlantChange[FaultRecord]:
        async with self.source.lock:
            record = self.source.fleet.clear_fault(machine_id, fault_id)
            return PlantChange(record, self.source.seq + 1)

    async def command(self, machine_id: str, command: str) -> PlantChange[str]:
        async with self.source.lock:
            mode = self.source.fleet.command(machine_id, command)
            return PlantChange(mode, self.source.seq + 1)

    async def active_faults(self, machine_id: str) -> tuple[FaultRecord, ...]:
        async with self.source.lock:
            return self.source.fleet.active_faults(machine_id)


def describe_machine(catalog: FleetCatalog, machine_id: str) -> dict[str, Any]:
    """Type, every sensor's unit, range, thresholds and description (a Grafana field config),
    the labels, the fault types and the commands of a machine, from the catalog alone."""
    machine_type = catalog.machine_type(machine_id)
    sensors = []
    for sensor in machine_type.sensors:
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
        if sensor.warning is not None:
            steps.append({"color": "orange", "value": sensor.warning})
        if sensor.alarm is not None:
            steps.append({"color": "red", "value": sensor.alarm})
        sensors.append(
            {
                "name": sensor.name,
                "unit": sensor.unit,
                "warning": sensor.warning,
                "alarm": sensor.alarm,
                "field_config": {
                    "unit": sensor.grafana_unit,
                    "min": sensor.typical_min,
                    "max": sensor.typical_max,
                    "decimals": 0 if sensor.integer else sensor.decimals,
                    "description": sensor.description,
                    "thresholds": {"mode": "absolute", "steps": steps},
                },
            }
        )
    return {
        "id": machine_id,
        "type": machine_type.name,
        "sensors": sensors,
        "labels": [
            {"name": label.name, "unit": label.unit, "description": label.description}
            for label in catalog.labels
        ],
        "fault_types": list(machine_type.fault_kinds),
        "commands": list(machine_type.commands),
    }
