"""One vectorised model per machine type, registered by its type name."""

from simulation.models.base import MachineModel, SensorSpec
from simulation.models.cnc_mill import CncMill
from simulation.models.conveyor_belt import ConveyorBelt
from simulation.models.robotic_arm import RoboticArm

MODEL_TYPES: dict[str, type[MachineModel]] = {
    model.TYPE_NAME: model for model in (RoboticArm, CncMill, ConveyorBelt)
}

__all__ = ["MODEL_TYPES", "CncMill", "ConveyorBelt", "MachineModel", "RoboticArm", "SensorSpec"]
