"""One vectorised model per machine type, registered by its type name."""

from simulation.models.base import MachineModel
from simulation.models.cnc_mill import CncMill
from simulation.models.conveyor_belt import ConveyorBelt
from simulation.models.robotic_arm import RoboticArm

MODEL_TYPES: dict[str, type[MachineModel]] = {
    model.TYPE_NAME: model for model in (RoboticArm, CncMill, ConveyorBelt)
}
# Every physical fault kind some machine type takes, derived from the models.
PHYSICAL_FAULTS: tuple[str, ...] = tuple(
    dict.fromkeys(kind for model in MODEL_TYPES.values() for kind in model.PHYSICAL_FAULTS)
)

__all__ = [
    "MODEL_TYPES",
    "PHYSICAL_FAULTS",
    "CncMill",
    "ConveyorBelt",
    "MachineModel",
    "RoboticArm",
]
