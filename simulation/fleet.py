"""A fleet: one vectorised model per machine type, stepped together into immutable frames.

Besides stepping, the fleet is the control surface the server calls between steps (never
while a step runs): inject and clear faults, list a machine's active faults, send commands,
describe a machine's sensors. Every refusal is a :class:`~simulation.errors.ControlError`
(a ``ValueError``) whose message says what is wrong and what would be valid.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from simulation.catalog import FleetCatalog, MachineType
from simulation.errors import UnknownMachineError
from simulation.faults import FaultRecord, FaultSet
from simulation.fleet_spec import FleetSpec, default_fleet
from simulation.models import MODEL_TYPES, MachineModel
from simulation.spec import COMMANDS, FaultRequest, SensorSpec

DEFAULT_REPAIR_AFTER_S = 1800.0  # s of simulated time in fault before the crew maintains


@dataclass(frozen=True, slots=True)
class Frame:
    """Every machine's readings and ground-truth labels after one step; never mutated once built.

    Slot ``k`` of each tuple belongs to ``Fleet.models[k]``; a machine is column ``column`` of
    its slot (``Fleet.placement[machine_id] == (k, column)``; the model calls it an instance):

    - ``values[k]``: telemetry ``(sensors, count)`` float64, in ``SENSORS`` order; NaN where
      a sensor dropped out (a dropout fault).
    - ``state[k]``: int8 codes of :class:`~simulation.states.State` (``STATE_NAMES[code]``).
    - ``health[k]``: float64 0..1, the hidden health (1 new, 0 failed).
    - ``rul_s[k]``: float64, remaining useful life in running seconds; NaN where undefined.
    - ``faults[k]``: the active faults, ``faults[k].of(column)`` those of one machine.

    Everything but ``values`` is ground truth a model under test must not see as input
    (``docs/labels.md``). Label arrays may be shared between frames: they are never changed.
    """

    seq: int
    time_s: float
    values: tuple[np.ndarray, ...]
    state: tuple[np.ndarray, ...]
    health: tuple[np.ndarray, ...]
    rul_s: tuple[np.ndarray, ...]
    faults: tuple[FaultSet, ...]


class Fleet:
    """Builds the models a fleet description needs and steps them all at once.

    ``fault_rate_per_h`` is the rate of spontaneous faults per machine per simulated hour
    (0 for none); they are drawn from each type's own seeded stream, so a seeded run is
    reproducible, and one type's faults do not depend on the other types.

    ``repair_after_s`` is the repair policy: a machine that has been in ``fault`` (its health
    ran out, or a fault broke it) for that many simulated seconds is maintained automatically,
    as by a maintenance crew, and counted (:meth:`auto_repairs`). ``None`` or 0 disables it:
    a failed machine then stays in fault until a ``maintain`` or ``reset`` command. The default,
    30 minutes, keeps a long-running demo alive (a fault shows for half an hour, then the
    maintenance, then the machine runs again) and costs nothing per step.
    """

    def __init__(
        self,
        spec: FleetSpec | None = None,
        *,
        seed: int,
        dt_s: float,
        fault_rate_per_h: float = 0.0,
        repair_after_s: float | None = DEFAULT_REPAIR_AFTER_S,
    ) -> None:
        if not dt_s > 0:
            raise ValueError(f"dt must be positive, got {dt_s!r}")
        if not 0.0 <= fault_rate_per_h < math.inf:
            raise ValueError(
                "fault_rate_per_h must be a finite number >= 0 (spontaneous faults per machine "
                f"per simulated hour), got {fault_rate_per_h!r}"
            )
        if repair_after_s is not None and not 0.0 <= repair_after_s < math.inf:
            raise ValueError(
                "repair_after_s must be a finite number of simulated seconds >= 0 (0 or None: "
                f"no automatic repairs), got {repair_after_s!r}"
            )
        spec = spec if spec is not None else default_fleet()
        self.dt_s = dt_s
        self.spec = spec
        self.seed = seed
        self.fault_rate_per_h = fault_rate_per_h
        self.repair_after_s = repair_after_s or None
        type_names = sorted({machine.machine_type for machine in spec.machines})
        self.catalog = FleetCatalog(
            machines=spec.machines,
            types=tuple(_machine_type(MODEL_TYPES[name]) for name in type_names),
            dt_s=dt_s,
            seed=seed,
            fault_rate_per_h=fault_rate_per_h,
            repair_after_s=self.repair_after_s,
        )
        self.placement = self.catalog.placement
        self.models: tuple[MachineModel, ...] = tuple(
            MODEL_TYPES[name](len(ids), _type_rng(seed, name), machine_ids=ids)
            for name, ids in zip(type_names, self.catalog.columns, strict=True)
        )
        for model in self.models:
            model.fault_rate_per_h = fault_rate_per_h
            model.repair_after_s = self.repair_after_s
        self.seq = 0

    @property
    def size(self) -> int:
        return len(self.spec)

    def step(self) -> Frame:
        """Advance every machine by one step of ``dt_s`` simulated seconds; return the new frame."""
        models = self.models
        values = tuple([model.step(self.dt_s) for model in models])
        self.seq += 1
        return Frame(
            self.seq,
            self.seq * self.dt_s,
            values,
            tuple([model.state for model in models]),
            tuple([model.health for model in models]),
            tuple([model.rul_s for model in models]),
            tuple([model.faults.faults() for model in models]),
        )

    # -- description -------------------------------------------------------------------------

    def machine_type(self, machine_id: str) -> str:
        return self._locate(machine_id)[0].TYPE_NAME

    def sensors(self, machine_id: str) -> tuple[SensorSpec, ...]:
        """Each sensor's name, unit, typical range, thresholds and description."""
        return self._locate(machine_id)[0].SENSORS

    def fault_kinds(self, machine_id: str) -> tuple[str, ...]:
        """The fault types that can be injected into this machine."""
        return self._locate(machine_id)[0].fault_kinds()

    # -- control (between steps) -------------------------------------------------------------

    def inject_fault(self, machine_id: str, request: FaultRequest) -> FaultRecord:
        """Start a fault now (it acts from the next step) and return its record.

        ``request.kind`` is one of :meth:`fault_kinds`; a sensor fault (``stuck``, ``drift``,
        ``bias``, ``noise``, ``dropout``) names its target ``sensor``, a physical one none.
        """
        model, column = self._locate(machine_id)
        return model.inject_fault(column, request)

    def clear_fault(self, machine_id: str, fault_id: str) -> FaultRecord:
        """End one of the machine's active faults; return its record."""
        model, column = self._locate(machine_id)
        return model.clear_fault(column, fault_id)

    def active_faults(self, machine_id: str) -> tuple[FaultRecord, ...]:
        """The machine's active faults, oldest first."""
        model, column = self._locate(machine_id)
        return model.faults.of(column)

    def command(self, machine_id: str, name: str) -> str:
        """Send ``start``, ``stop``, ``maintain`` or ``reset``; return the machine's new mode.

        ``start``: run now (refused in fault or maintenance). ``stop``: stop now and stay idle
        until ``start``. ``maintain``: renew the worn part (health back to about 1), clear the
        physical faults, stop for a while, then run again (or stay idle after a ``stop``).
        ``reset``: clear the fault state and all faults (refused while health is 0).
        """
        model, column = self._locate(machine_id)
        return model.command(column, name).name.lower()

    def auto_repairs(self, machine_id: str | None = None) -> int:
        """Automatic repairs so far: of one machine, or of the whole fleet (``None``)."""
        if machine_id is None:
            return sum(int(model.auto_repairs.sum()) for model in self.models)
        model, column = self._locate(machine_id)
        return int(model.auto_repairs[column])

    def _locate(self, machine_id: str) -> tuple[MachineModel, int]:
        place = self.placement.get(machine_id)
        if place is None:
            raise UnknownMachineError(machine_id, self.size)
        slot, column = place
        return self.models[slot], column


def _machine_type(model: type[MachineModel]) -> MachineType:
    return MachineType(
        name=model.TYPE_NAME,
        sensors=model.SENSORS,
        physical_faults=model.PHYSICAL_FAULTS,
        fault_kinds=model.fault_kinds(),
        commands=COMMANDS,
    )


def _type_rng(seed: int, type_name: str) -> np.random.Generator:
    """One stream per machine type, so adding a type leaves the others' samples alone."""
    sequence = np.random.SeedSequence(seed, spawn_key=(zlib.crc32(type_name.encode()),))
    return np.random.default_rng(sequence)


def catalog_of(spec: FleetSpec, *, seed: int, dt_s: float) -> FleetCatalog:
    """The catalog a fleet of ``spec`` would have (for a process that reads its frames from
    elsewhere, such as a replay)."""
    return Fleet(spec, seed=seed, dt_s=dt_s).catalog
