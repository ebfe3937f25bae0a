"""Pure, deterministic, vectorised machine simulation (no I/O, no asyncio, no wall clock)."""

from simulation.fleet import Fleet, Frame
from simulation.fleet_spec import FleetSpec, FleetSpecError, MachineSpec, parse_fleet

__all__ = ["Fleet", "FleetSpec", "FleetSpecError", "Frame", "MachineSpec", "parse_fleet"]
