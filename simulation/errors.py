"""The errors a fault or command request raises: what is wrong, and what would be valid."""

from __future__ import annotations


class ControlError(ValueError):
    """A fault or command request the simulation cannot carry out.

    ``field`` names the input at fault (``machine_id``, ``kind``, ``severity``, ``onset``,
    ``duration_s``, ``sensor``, ``fault_id``, ``command``, ``state`` or ``faults``, when the
    machine already has as many active faults as it may); ``valid`` lists the
    accepted values when they are a short list (empty otherwise). The message says both in
    words, so it can be shown to a user as it is.
    """

    def __init__(self, message: str, *, field: str, valid: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.valid = valid


class UnknownMachineError(ControlError):
    """A request names a machine the fleet does not have."""

    def __init__(self, machine_id: str, fleet_size: int) -> None:
        super().__init__(
            f"unknown machine {machine_id!r}; the fleet has {fleet_size} machines",
            field="machine_id",
        )
        self.machine_id = machine_id
