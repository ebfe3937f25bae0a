"""Pure, deterministic, vectorised machine simulation (no I/O, no asyncio, no wall clock)."""

from simulation.errors import ControlError
from simulation.faults import ONSETS, PHYSICAL_FAULTS, SENSOR_FAULTS, FaultRecord, FaultSet
from simulation.fleet import DEFAULT_REPAIR_AFTER_S, Fleet, Frame
from simulation.fleet_spec import FleetSpec, FleetSpecError, MachineSpec, parse_fleet
from simulation.states import COMMANDS, STATE_NAMES, State

__all__ = [
    "COMMANDS",
    "DEFAULT_REPAIR_AFTER_S",
    "ONSETS",
    "PHYSICAL_FAULTS",
    "SENSOR_FAULTS",
    "STATE_NAMES",
    "ControlError",
    "FaultRecord",
    "FaultSet",
    "Fleet",
    "FleetSpec",
    "FleetSpecError",
    "Frame",
    "MachineSpec",
    "State",
    "parse_fleet",
]
