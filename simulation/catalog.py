"""The fleet catalog: a frozen, serialisable description of a fleet, enough to read its frames.

A process that serves a fleet's frames without simulating it (a web process fed by a bus, a
replay) builds everything from the catalog: which machine is which column of which slot,
every sensor's spec, the labels, the faults and commands each type takes, the step and the
seed. It round-trips through JSON exactly (:meth:`FleetCatalog.to_json`,
:meth:`FleetCatalog.from_json`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from simulation.errors import UnknownMachineError
from simulation.fleet_spec import MachineSpec
from simulation.spec import LABELS, LabelSpec, SensorSpec

CATALOG_VERSION = 1


class CatalogError(ValueError):
    """A catalog document that cannot be read: wrong version, shape or values."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineType:
    """What one machine type reports and takes."""

    name: str
    sensors: tuple[SensorSpec, ...]
    physical_faults: tuple[str, ...]
    fault_kinds: tuple[str, ...]  # physical, then sensor faults
    commands: tuple[str, ...]

    @property
    def sensor_names(self) -> tuple[str, ...]:
        return tuple(sensor.name for sensor in self.sensors)


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetCatalog:
    """Every machine (fleet order), the types in slot order, the labels, the step and the seed.

    Slot ``k`` of a frame belongs to ``types[k]``; its machines are the fleet's machines of
    that type in fleet order, column 0 first (``placement[machine_id] == (k, column)``).
    """

    machines: tuple[MachineSpec, ...]
    types: tuple[MachineType, ...]
    labels: tuple[LabelSpec, ...] = LABELS
    dt_s: float
    seed: int
    fault_rate_per_h: float = 0.0
    repair_after_s: float | None = None
    placement: Mapping[str, tuple[int, int]] = field(init=False, compare=False, repr=False)
    columns: tuple[tuple[str, ...], ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        slot_of = {machine_type.name: slot for slot, machine_type in enumerate(self.types)}
        columns: list[list[str]] = [[] for _ in self.types]
        placement: dict[str, tuple[int, int]] = {}
        for machine in self.machines:
            slot = slot_of.get(machine.machine_type)
            if slot is None:
                raise CatalogError(f"machine {machine.machine_id!r} has an undeclared type")
            if machine.machine_id in placement:
                raise CatalogError(f"duplicate machine id {machine.machine_id!r}")
            placement[machine.machine_id] = (slot, len(columns[slot]))
            columns[slot].append(machine.machine_id)
        object.__setattr__(self, "placement", MappingProxyType(placement))
        object.__setattr__(self, "columns", tuple(tuple(ids) for ids in columns))

    @property
    def size(self) -> int:
        return len(self.machines)

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    def __contains__(self, machine_id: object) -> bool:
        return machine_id in self.placement

    def locate(self, machine_id: str) -> tuple[int, int]:
        """``(slot, column)`` of a machine; :class:`UnknownMachineError` if there is none."""
        place = self.placement.get(machine_id)
        if place is None:
            raise UnknownMachineError(machine_id, self.size)
        return place

    def machine_type(self, machine_id: str) -> MachineType:
        return self.types[self.locate(machine_id)[0]]

    def field_names(self, machine_id: str) -> tuple[str, ...]:
        """Everything a snapshot of this machine carries: its sensors, then the labels."""
        return self.machine_type(machine_id).sensor_names + self.label_names

    # -- serialisation -----------------------------------------------------------------------

    def to_json(self) -> str:
        """The catalog as one JSON document (machines as parallel id and type-index lists)."""
        slot_of = {machine_type.name: slot for slot, machine_type in enumerate(self.types)}
        document = {
            "catalog_version": CATALOG_VERSION,
            "dt_s": self.dt_s,
            "seed": self.seed,
            "fault_rate_per_h": self.fault_rate_per_h,
            "repair_after_s": self.repair_after_s,
            "labels": [dataclasses.asdict(label) for label in self.labels],
            "types": [dataclasses.asdict(machine_type) for machine_type in self.types],
            "machine_ids": [machine.machine_id for machine in self.machines],
            "machine_types": [slot_of[machine.machine_type] for machine in self.machines],
        }
        return json.dumps(document, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> FleetCatalog:
        """The catalog :meth:`to_json` wrote; :class:`CatalogError` for anything else."""
        try:
            document = json.loads(text)
            if document.get("catalog_version") != CATALOG_VERSION:
                raise CatalogError(
                    f"catalog version {document.get('catalog_version')!r} is not {CATALOG_VERSION}"
                )
            types = tuple(_machine_type(entry) for entry in document["types"])
            names = [machine_type.name for machine_type in types]
            machines = tuple(
                MachineSpec(machine_id, names[slot])
                for machine_id, slot in zip(
                    document["machine_ids"], document["machine_types"], strict=True
                )
            )
            return cls(
                machines=machines,
                types=types,
                labels=tuple(_label(entry) for entry in document["labels"]),
                dt_s=float(document["dt_s"]),
                seed=int(document["seed"]),
                fault_rate_per_h=float(document["fault_rate_per_h"]),
                repair_after_s=document["repair_after_s"],
            )
        except CatalogError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            raise CatalogError(f"not a fleet catalog: {error!r}") from None


def _machine_type(entry: dict[str, Any]) -> MachineType:
    return MachineType(
        name=entry["name"],
        sensors=tuple(SensorSpec(**sensor) for sensor in entry["sensors"]),
        physical_faults=tuple(entry["physical_faults"]),
        fault_kinds=tuple(entry["fault_kinds"]),
        commands=tuple(entry["commands"]),
    )


def _label(entry: dict[str, Any]) -> LabelSpec:
    return LabelSpec(**{**entry, "categories": tuple(entry["categories"])})
