"""The contract every vectorised machine model follows, and the machinery they share.

A model steps all instances of one machine type as numpy arrays. Around its physics
(:meth:`MachineModel._advance`) the base class runs what every type has: the operating states
(:mod:`simulation.states`), the hidden health (:mod:`simulation.health`), the faults
(:mod:`simulation.faults`) and the ground-truth labels of each step.

Writing a model means one subclass with class attributes ``TYPE_NAME``, ``SENSORS``,
``PHYSICAL_FAULTS`` (and ``INSTANT_FAULTS`` among them, if any) and ``DUTY``, and these hooks,
which the base calls in this order at construction: :meth:`MachineModel._setup` (draw the
parameters and the initial state; set ``_wear_driver_nominal``), then :meth:`_new_life_s` for
the first parts, then :meth:`_update_factors` for every instance. Each step calls
:meth:`_advance` (the physics), which writes its readings by name (``out[self.ROW["name"]]``).
The base applies ``steady`` itself: a steady model's usage rate is 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from simulation.errors import ControlError
from simulation.faults import MAX_ACTIVE_FAULTS, FaultKinds, FaultRecord, FaultTable
from simulation.health import Degradation
from simulation.spec import COMMANDS, DutyCycle, FaultRequest, SensorSpec, State
from simulation.states import Operation

REFRESH_S = 1.0  # s of simulated time between recomputations of health, RUL and wear factors
HEALTH_WARNING = 0.25  # an operating machine below this health reports 'warning'
ALARM_HOLD_S = 5.0  # s an alarm-level reading keeps an operating machine in 'warning'


class MachineModel(ABC):
    """All instances of one machine type, stepped together as numpy arrays.

    A model owns its state arrays (one element per instance) and two seeded generators: ``rng``
    for the physics and ``events`` (spawned from it) for the schedule, part renewals and
    faults, so commands and faults never shift the physics' noise. ``step`` advances every
    instance by ``dt_s`` simulated seconds and returns a *new* float64 array of shape
    ``(len(SENSORS), count)`` that the caller may keep: the model never writes to an array it
    has returned. After a step the labels are ``state`` (int8 codes of
    :class:`~simulation.states.State`), ``health`` (0..1) and ``rul_s`` (remaining useful life
    in running seconds at the nominal duty; NaN where the machine does not wear); the model
    replaces these arrays rather than changing them, so a kept reference stays valid.

    ``steady=True`` gives machines that run without idle gaps and do not wear (health stays 1,
    RUL is NaN): the steady physics, for studies and tests. Faults and commands still work.

    ``repair_after_s`` (None by default; the fleet sets it) is the repair policy: an instance
    that has been in ``fault`` for that many simulated seconds is maintained automatically, as
    a maintenance crew would, and counted in ``auto_repairs`` (int64 per instance).
    """

    TYPE_NAME: ClassVar[str]
    SENSORS: ClassVar[tuple[SensorSpec, ...]]
    ROW: ClassVar[Mapping[str, int]]  # a sensor's row in the readings, by name (generated)
    PHYSICAL_FAULTS: ClassVar[tuple[str, ...]]  # the order of the fault intensity rows
    INSTANT_FAULTS: ClassVar[frozenset[str]] = frozenset()  # physical kinds with no onset shape
    DUTY: ClassVar[DutyCycle]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.ROW = {sensor.name: row for row, sensor in enumerate(cls.SENSORS)}

    def __init__(
        self,
        count: int,
        rng: np.random.Generator,
        *,
        steady: bool = False,
        machine_ids: Sequence[str] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("a model needs at least one instance")
        self.count = count
        self.rng = rng
        self.events = rng.spawn(1)[0]
        self.steady = steady
        self.machine_ids = machine_ids
        self.time_s = 0.0
        self.fault_rate_per_h = 0.0
        self.repair_after_s: float | None = None
        self.auto_repairs = np.zeros(count, dtype=np.int64)
        self.operation = Operation(count, self.DUTY, self.events, scheduled_stops=not steady)
        self.faults = FaultTable(
            self.fault_table_kinds(), self.SENSORS, count, self.events, self.machine_id
        )
        self.health = np.ones(count)
        self.rul_s = np.full(count, np.nan)
        self.state = self.operation.mode.copy()
        self._wear_gain = np.ones(count)  # how many times faster than nominal the part wears
        # The model's wear driver at the nominal duty (set by _setup): driver / nominal is
        # usage seconds per running second, times the gain of the faults; 0 when steady.
        self._wear_driver_nominal = np.ones(count)
        self._usage_rate = np.zeros(count)
        self._health_warning = np.zeros(count, dtype=bool)
        # The rows from the first to the last sensor with an alarm level (a view, not a copy),
        # and their levels: NaN for a sensor without one (no reading compares >= NaN).
        rows = [row for row, sensor in enumerate(self.SENSORS) if sensor.alarm is not None]
        self._alarm_rows = slice(rows[0], rows[-1] + 1) if rows else slice(0)
        self._alarm_levels = np.array(
            [[np.nan if s.alarm is None else s.alarm] for s in self.SENSORS[self._alarm_rows]]
        )
        self._alarm_until_s = np.full(count, -np.inf)
        self._alarms_until_s = -np.inf  # the latest alarm hold of any instance
        self._health_version = 0  # counts changes of the health warnings
        self._state_inputs = (-1, -1)  # what the last state labels were computed from
        self._state_latched = False
        self._refresh_pending_s = 0.0
        self._last_readings: np.ndarray | None = None
        self._setup()
        self.wear = Degradation(self._new_life_s(np.arange(count)), self.events, wear=not steady)
        self._refresh()

    @classmethod
    def sensor_names(cls) -> tuple[str, ...]:
        return tuple(sensor.name for sensor in cls.SENSORS)

    @classmethod
    def fault_table_kinds(cls) -> FaultKinds:
        """The faults this machine type takes, and the sensors a sensor fault can target."""
        return FaultKinds(
            cls.TYPE_NAME, cls.PHYSICAL_FAULTS, cls.INSTANT_FAULTS, cls.sensor_names()
        )

    @classmethod
    def fault_kinds(cls) -> tuple[str, ...]:
        """The fault types that apply to this machine type: physical ones, then sensor ones."""
        return cls.fault_table_kinds().all

    def machine_id(self, instance: int) -> str:
        if self.machine_ids is None:
            return f"{self.TYPE_NAME}_{instance}"
        return self.machine_ids[instance]

    # -- stepping ----------------------------------------------------------------------------

    def step(self, dt_s: float) -> np.ndarray:
        """Advance all instances by ``dt_s`` seconds; return readings ``(sensors, count)``."""
        self.time_s += dt_s
        ended, repair = self.operation.advance(self.time_s)
        if ended.size:
            self._end_run(ended)
        if repair.size:
            self._repair(repair)
        if self.fault_rate_per_h > 0.0:
            for instance, request in self.faults.draw_spontaneous(self.fault_rate_per_h, dt_s):
                if len(self.faults.of(instance)) < MAX_ACTIVE_FAULTS:
                    self._add_fault(instance, request, origin="spontaneous")
        self.faults.expire(self.time_s)
        self._sync_faults()
        readings = self._advance(dt_s)
        self._refresh_pending_s += dt_s
        if self._refresh_pending_s >= REFRESH_S:
            self._refresh()
        self.faults.apply_to_readings(readings, self.time_s)
        self.state = self._reported_state(readings)
        self._last_readings = readings
        return readings

    def _sync_faults(self) -> None:
        """Bring the physical fault intensities, and the factors they set, up to date."""
        touched = self.faults.update_intensity(self.time_s)
        if touched.size:
            self._factors(touched)

    def _refresh(self) -> None:
        """Recompute health, RUL and the wear factors; fail the machines whose health ran out."""
        self._accrue_wear(self._refresh_pending_s)
        self._refresh_pending_s = 0.0
        self.health = self.wear.health()
        if self.wear.wear:
            self.rul_s = self.wear.remaining_s() / self._wear_gain
        worn_out = (self.health <= 0.0).nonzero()[0]
        if worn_out.size:
            self._fail(worn_out[self.operation.mode[worn_out] <= State.IDLE])  # operating ones
        health_warning = self.health < HEALTH_WARNING
        if np.count_nonzero(health_warning != self._health_warning):
            self._health_warning = health_warning
            self._health_version += 1
        self._factors(slice(None))

    def _fail(self, idx: np.ndarray) -> None:
        """Instances ``idx`` (running or idle) are worn out: they stop in the fault state."""
        if idx.size:
            repair_s = self.time_s + self.repair_after_s if self.repair_after_s else np.inf
            self.operation.fail(idx, repair_s)
            self._stop_cycle(idx)

    def _renewed(self, idx: np.ndarray) -> None:
        """Parts of ``idx`` were renewed during a step: their labels and factors, at once."""
        self.health = self.health.copy()  # frames keep the old arrays: never change those
        self.health[idx] = self.wear.health(idx)
        if self.wear.wear:
            self.rul_s = self.rul_s.copy()
            self.rul_s[idx] = self.wear.remaining_s(idx) / self._wear_gain[idx]
        self._health_warning[idx] = self.health[idx] < HEALTH_WARNING
        self._health_version += 1
        self._factors(idx)

    def _factors(self, idx: np.ndarray | slice) -> None:
        """The model's factors for ``idx``, and the usage rate its wear gain sets."""
        gain = self._update_factors(idx)
        self._wear_gain[idx] = gain
        if self.steady:
            self._usage_rate[idx] = 0.0
        else:
            self._usage_rate[idx] = gain / self._wear_driver_nominal[idx]

    def _reported_state(self, readings: np.ndarray) -> np.ndarray:
        """State codes of this step: alarm-level readings and low health mean 'warning'."""
        hits = readings[self._alarm_rows] >= self._alarm_levels
        if np.count_nonzero(hits):
            hit = np.flatnonzero(hits.any(axis=0))
            self._alarm_until_s[hit] = self.time_s + ALARM_HOLD_S
            self._alarms_until_s = self.time_s + ALARM_HOLD_S
        inputs = (self.operation.changes, self._health_version)
        latched = self._alarms_until_s > self.time_s  # some warning is held by an alarm
        if inputs == self._state_inputs and not (latched or self._state_latched):
            return self.state  # nothing it depends on has changed: the same (unchanged) array
        self._state_inputs, self._state_latched = inputs, latched
        warning = self._alarm_until_s > self.time_s
        warning |= self._health_warning
        return self.operation.reported(warning)

    # -- control (between steps) -------------------------------------------------------------

    def inject_fault(self, instance: int, request: FaultRequest) -> FaultRecord:
        """Start a fault on one instance now; a bad request raises :class:`ControlError`."""
        self.fault_table_kinds().check(request)
        active = len(self.faults.of(instance))
        if active >= MAX_ACTIVE_FAULTS:
            raise ControlError(
                f"{self.machine_id(instance)} has {active} active faults, the most a machine may "
                "have; clear one first",
                field="faults",
            )
        record = self._add_fault(instance, request, origin="injected")
        self._sync_faults()
        self._refresh()
        return record

    def clear_fault(self, instance: int, fault_id: str) -> FaultRecord:
        """End one active fault of an instance; the physical damage it did stays."""
        record = self.faults.remove(instance, fault_id)
        if record is None:
            active = tuple(record.fault_id for record in self.faults.of(instance))
            listing = ", ".join(active) if active else "none"
            raise ControlError(
                f"no active fault {fault_id!r} on {self.machine_id(instance)}; "
                f"its active faults: {listing}",
                field="fault_id",
                valid=active,
            )
        self._sync_faults()
        self._refresh()
        return record

    def command(self, instance: int, name: str) -> State:
        """Carry out a command (see :data:`~simulation.states.COMMANDS`); return the new mode."""
        idx = np.array([instance])
        if name == "start":
            self.operation.start(instance, self.time_s)
        elif name == "stop":
            self.operation.stop(instance)
            self._stop_cycle(idx)
        elif name == "maintain":
            self._maintain(idx)
        elif name == "reset":
            if self.health[instance] <= 0.0:
                raise ControlError(
                    f"cannot reset: {self.machine_id(instance)} is worn out (health 0); "
                    "send 'maintain' to repair it",
                    field="state",
                    valid=("maintain",),
                )
            self.faults.clear(idx)
            self.operation.reset(instance, self.time_s)
        else:
            raise ControlError(
                f"unknown command {name!r}; valid commands: {', '.join(COMMANDS)}",
                field="command",
                valid=COMMANDS,
            )
        self._sync_faults()
        self._refresh()
        return State(self.operation.mode[instance])

    def _maintain(self, idx: np.ndarray) -> None:
        """Renew the worn part of ``idx``, clear its physical faults, stop it for maintenance.

        Labels and factors are left to the caller (:meth:`_refresh` or :meth:`_renewed`).
        """
        self.wear.renew(idx, self._new_life_s(idx))
        self.faults.clear(idx, self.PHYSICAL_FAULTS)
        self._on_maintain(idx)
        self.operation.maintain(idx, self.time_s)
        self._stop_cycle(idx)

    def _repair(self, idx: np.ndarray) -> None:
        """The crew maintains ``idx``, in fault for ``repair_after_s`` (during a step, counted).

        Only ``idx`` is touched: the faults cleared here are synchronised later in the step.
        """
        self.auto_repairs[idx] += 1
        self._maintain(idx)
        self._renewed(idx)

    def _add_fault(self, instance: int, request: FaultRequest, *, origin: str) -> FaultRecord:
        record = self.faults.add(
            instance,
            request,
            now_s=self.time_s,
            origin=origin,
            last_readings=self._last_readings,
        )
        self._on_fault(instance, request.kind, float(request.severity))
        return record

    # -- what each model provides ------------------------------------------------------------

    @abstractmethod
    def _setup(self) -> None:
        """Draw the instances' parameters and initial state; set ``_wear_driver_nominal``.

        Runs once, at construction, after the base's state and before the first parts' lives
        are drawn (:meth:`_new_life_s`).
        """

    @abstractmethod
    def _advance(self, dt_s: float) -> np.ndarray:
        """The physics of one step: return the new readings ``(sensors, count)``."""

    @abstractmethod
    def _update_factors(self, idx: np.ndarray | slice) -> np.ndarray:
        """Recompute the per-instance factors that health and faults set, for ``idx``.

        Return the wear gain of ``idx``: how many times faster than nominal the faults make
        the part wear (>= 1).
        """

    @abstractmethod
    def _new_life_s(self, idx: np.ndarray) -> np.ndarray:
        """Lives (usage seconds) of new parts for instances ``idx``."""

    def _end_run(self, idx: np.ndarray) -> None:
        """Run periods of ``idx`` ended: by default they go idle at once."""
        self.operation.go_idle(idx, self.time_s)

    def _accrue_wear(self, elapsed_s: float) -> None:  # noqa: B027 (an optional hook)
        """Advance usage clocks that run at the refresh cadence, by ``elapsed_s``."""

    def _stop_cycle(self, idx: np.ndarray) -> None:  # noqa: B027 (an optional hook)
        """Instances ``idx`` stopped by a command or a fault: forget any cycle being finished."""

    def _on_fault(self, instance: int, kind: str, severity: float) -> None:  # noqa: B027
        """A fault just started on ``instance`` (for faults that do damage at once)."""

    def _on_maintain(self, idx: np.ndarray) -> None:  # noqa: B027 (an optional hook)
        """Instances ``idx`` were just maintained (after their parts were renewed)."""
