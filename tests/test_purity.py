"""``simulation/`` stays pure: no event loop, no web framework, no wall clock, no global RNG."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FORBIDDEN = {"asyncio", "aiohttp", "time", "datetime", "random", "threading", "socket", "server"}
SIMULATION = Path(__file__).resolve().parent.parent / "simulation"
CORE = sorted(SIMULATION.rglob("*.py"))


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(SIMULATION)))
def test_simulation_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(SIMULATION)))
def test_simulation_uses_no_global_numpy_random_state(path: Path) -> None:
    source = path.read_text()
    for legacy in ("np.random.seed", "np.random.rand(", "np.random.normal", "np.random.uniform"):
        assert legacy not in source


SERVER = SIMULATION.parent / "server"
# Where the server may build or change a fleet: the factory, the local frame source, its
# scripted wrapper (a scenario's changes between two steps) and the plant-control service, the
# fleet-file loader (which knows the model types) and the export command (which drives
# simulations of its own). Everything else works from the catalog and the frames.
FLEET_OWNERS = {"app.py", "fleetfile.py", "source.py", "scenario.py", "plant.py", "export"}
FLEET_NAMES = {"Fleet", "MachineModel", "MODEL_TYPES"}
SETTINGS_NAMES = {"settings", "args"}  # ``settings.fleet`` is the fleet file's path


@pytest.mark.parametrize(
    "path",
    sorted(p for p in SERVER.rglob("*.py") if p.relative_to(SERVER).parts[0] not in FLEET_OWNERS),
    ids=lambda p: str(p.relative_to(SERVER)),
)
def test_the_server_reads_catalogs_and_frames_not_fleets(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert not node.module.startswith("simulation.models")
            assert not {alias.name for alias in node.names} & FLEET_NAMES
        elif isinstance(node, ast.Attribute) and node.attr == "fleet":
            owner = node.value.id if isinstance(node.value, ast.Name) else ""
            assert owner in SETTINGS_NAMES, f"{path.name}:{node.lineno} reaches into a fleet"
