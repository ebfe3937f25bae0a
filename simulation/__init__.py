"""Pure, deterministic, vectorised machine simulation (no I/O, no asyncio, no wall clock)."""

from simulation.errors import ControlError, UnknownMachineError
from simulation.faults import FaultRecord, FaultSet
from simulation.fleet import DEFAULT_REPAIR_AFTER_S, Fleet, Frame
from simulation.fleet_spec import FleetSpec, FleetSpecError, MachineSpec, parse_fleet
from simulation.models import PHYSICAL_FAULTS
from simulation.spec import (
    COMMANDS,
    LABEL_NAMES,
    LABELS,
    ONSETS,
    SENSOR_FAULTS,
    STATE_NAMES,
    FaultRequest,
    LabelSpec,
    SensorSpec,
    State,
)

__all__ = [
    "COMMANDS",
    "DEFAULT_REPAIR_AFTER_S",
    "LABELS",
    "LABEL_NAMES",
    "ONSETS",
    "PHYSICAL_FAULTS",
    "SENSOR_FAULTS",
    "STATE_NAMES",
    "ControlError",
    "FaultRecord",
    "FaultRequest",
    "FaultSet",
    "Fleet",
    "FleetSpec",
    "FleetSpecError",
    "Frame",
    "LabelSpec",
    "MachineSpec",
    "SensorSpec",
    "State",
    "UnknownMachineError",
    "parse_fleet",
]
