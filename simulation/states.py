"""Operating states of all instances of one model: the run/idle schedule, maintenance, commands.

Each instance is in one *mode* (:attr:`Operation.mode`): running, idle, fault or maintenance.
Only a running machine moves; :attr:`Operation.running` (1.0 or 0.0) is the gate the physics
multiplies by. ``warning`` is not a mode: it is reported (see :meth:`Operation.reported`) for
a running or idle machine whose health is low or that has just read an alarm-level value.

The schedule alternates run periods and idle gaps drawn from the model's :class:`DutyCycle`.
When a run period ends the model decides when the machine actually goes idle (a belt stops at
once, an arm or a mill first finishes its cycle) and calls :meth:`Operation.go_idle`.

A machine in fault may have a repair due (a maintenance crew arriving at a given time, see
:meth:`Operation.fail`): the same timers carry it, so the schedule costs nothing extra.
"""

from __future__ import annotations

import numpy as np

from simulation.errors import ControlError
from simulation.spec import DutyCycle, State

_RUNNING, _IDLE, _WARNING, _FAULT, _MAINTENANCE = (np.int8(state) for state in State)
_NONE = np.empty(0, dtype=np.intp)


class Operation:
    """Modes, schedule timers and the ``stop`` hold of every instance, as arrays.

    ``due_s`` is the simulated time at which the current run period, idle gap or maintenance
    ends, or at which a machine in fault is repaired (``inf`` when nothing is due: held, in a
    fault nobody repairs, finishing a cycle, or unscheduled). ``next_due_s`` is the earliest of
    them, so a step in which nothing falls due costs one comparison. With
    ``scheduled_stops=False`` machines run until a command or a fault stops them.
    """

    def __init__(
        self, count: int, duty: DutyCycle, rng: np.random.Generator, *, scheduled_stops: bool
    ) -> None:
        self.duty = duty
        self.rng = rng
        self.scheduled_stops = scheduled_stops
        self.mode = np.full(count, State.RUNNING, dtype=np.int8)
        self.running = np.ones(count)
        self.operating = np.ones(count, dtype=bool)  # running or idle: may report 'warning'
        self.changes = 0  # counts mode changes, so reported states can be reused until one
        self.held = np.zeros(count, dtype=bool)
        self.due_s = np.full(count, np.inf)
        if scheduled_stops:  # the fleet starts part-way through its run periods
            self.due_s = rng.uniform(0.0, duty.run_s[1], count)
        self.next_due_s = float(self.due_s.min())

    def advance(self, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Apply the timers due at ``now_s``; return two index arrays (ascending).

        The first holds the instances whose run period just ended, the second those in fault
        whose repair is due (their timer is cleared: the model maintains them). Idle gaps and
        maintenance that end start a new run period (or leave a held machine idle).
        """
        if now_s < self.next_due_s:
            return _NONE, _NONE
        due = (self.due_s <= now_s).nonzero()[0]
        mode = self.mode[due]
        ended = due[mode == _RUNNING]
        self.due_s[ended] = np.inf
        repair = due[mode == _FAULT]
        self.due_s[repair] = np.inf
        resume = due[(mode == _IDLE) | (mode == _MAINTENANCE)]
        if resume.size:
            held = self.held[resume]
            self._idle(resume[held], None)
            self._run(resume[~held], now_s)
        self.next_due_s = float(self.due_s.min())
        return ended, repair

    def go_idle(self, idx: np.ndarray, now_s: float) -> None:
        """Running instances ``idx`` reached the end of their run: idle for a drawn gap."""
        self._idle(idx, now_s)

    def fail(self, idx: np.ndarray, repair_s: float = np.inf) -> None:
        """Instances ``idx`` stop in the fault state until a ``reset`` or ``maintain``.

        ``repair_s`` is the simulated time at which a repair falls due (:meth:`advance` reports
        it), ``inf`` for none.
        """
        self._set(idx, State.FAULT, repair_s)

    def reported(self, warning: np.ndarray) -> np.ndarray:
        """State codes as a new int8 array: the mode, or WARNING for an operating machine."""
        codes = self.mode.copy()
        warning &= self.operating
        np.putmask(codes, warning, _WARNING)
        return codes

    # -- commands (between steps) ---------------------------------------------------------

    def start(self, i: int, now_s: float) -> None:
        """Run now (a new run period) and lift a ``stop`` hold; refused in fault or maintenance."""
        mode = State(self.mode[i])
        if mode == State.FAULT:
            raise ControlError(
                "cannot start: the machine is in fault; send 'reset' to clear the fault state "
                "or 'maintain' to repair it",
                field="state",
                valid=("reset", "maintain"),
            )
        if mode == State.MAINTENANCE:
            left = self.due_s[i] - now_s
            raise ControlError(
                f"cannot start: the machine is under maintenance for another {left:.0f} s "
                "(simulated); it resumes by itself",
                field="state",
            )
        self.held[i] = False
        if mode == State.IDLE:
            self._run(np.array([i]), now_s)

    def stop(self, i: int) -> None:
        """Stop now and stay idle until ``start`` (a machine in fault or maintenance stays so)."""
        self.held[i] = True
        if self.mode[i] in (State.RUNNING, State.IDLE):
            self._set(np.array([i]), State.IDLE, np.inf)

    def maintain(self, idx: np.ndarray, now_s: float) -> None:
        """Instances ``idx`` stop for a drawn maintenance time each, then run again (or stay
        idle if held)."""
        duration_s = self.rng.uniform(*self.duty.maintenance_s, idx.size)
        self._set(idx, State.MAINTENANCE, now_s + duration_s)

    def reset(self, i: int, now_s: float) -> None:
        """Leave the fault state: run again, or stay idle if held; other modes are unchanged."""
        if self.mode[i] == State.FAULT:
            idx = np.array([i])
            if self.held[i]:
                self._idle(idx, None)
            else:
                self._run(idx, now_s)

    # -- internals --------------------------------------------------------------------------

    def _run(self, idx: np.ndarray, now_s: float) -> None:
        due_s = np.full(idx.size, np.inf)
        if self.scheduled_stops:
            due_s = now_s + self.rng.uniform(*self.duty.run_s, idx.size)
        self._set(idx, State.RUNNING, due_s)

    def _idle(self, idx: np.ndarray, now_s: float | None) -> None:
        """Idle; for a drawn gap from ``now_s``, or until a command when ``now_s`` is None."""
        due_s: np.ndarray | float = np.inf
        if now_s is not None and self.scheduled_stops:
            due_s = now_s + self.rng.uniform(*self.duty.idle_s, idx.size)
        self._set(idx, State.IDLE, due_s)

    def _set(self, idx: np.ndarray, mode: State, due_s: np.ndarray | float) -> None:
        self.changes += 1
        self.mode[idx] = mode
        self.running[idx] = 1.0 if mode == State.RUNNING else 0.0
        self.operating[idx] = mode in (State.RUNNING, State.IDLE)
        self.due_s[idx] = due_s
        self.next_due_s = float(self.due_s.min())
