"""Fleet files: machines and groups, and errors that name the line and the problem."""

from __future__ import annotations

import pytest

from simulation import FleetSpecError, MachineSpec, parse_fleet
from simulation.fleet_spec import default_fleet

TYPES = ("robotic_arm", "cnc_mill", "conveyor_belt")


def test_single_machines_and_groups() -> None:
    text = """
[[machines]]
id = "press_robot"
type = "robotic_arm"

[[machines]]
type = "conveyor_belt"
count = 3
id_prefix = "line1_belt_"

[[machines]]
type = "cnc_mill"
count = 100
start = 7
"""
    spec = parse_fleet(text, "plant.toml", TYPES)
    ids = [machine.machine_id for machine in spec.machines]
    assert ids[:4] == ["press_robot", "line1_belt_01", "line1_belt_02", "line1_belt_03"]
    assert ids[4] == "cnc_mill_007"
    assert ids[-1] == "cnc_mill_106"
    assert len(spec) == 104
    assert spec.machines[0] == MachineSpec("press_robot", "robotic_arm")


def test_default_fleet_is_the_seed_trio() -> None:
    assert [(m.machine_id, m.machine_type) for m in default_fleet().machines] == [
        ("robot_01", "robotic_arm"),
        ("cnc_01", "cnc_mill"),
        ("conveyor_01", "conveyor_belt"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[machines]]\nid = "a"\ntype = "robotic_arm"\n\n'
            '[[machines]]\nid = "b"\ntype = "lathe"\n',
            "plant.toml:5: machines entry 2: unknown or missing type 'lathe'; valid types:",
        ),
        (
            '[[machines]]\nid = "a"\ntype = "cnc_mill"\n'
            '[[machines]]\nid = "a"\ntype = "cnc_mill"\n',
            "plant.toml:4: machines entry 2: duplicate machine id 'a' (first declared in entry 1)",
        ),
        (
            '[[machines]]\nid = "a b"\ntype = "cnc_mill"\n',
            "plant.toml:1: machines entry 1: invalid machine id 'a b'",
        ),
        ('[[machines]]\nid = "a"\ntype = "cnc_mill"\ncolor = "red"\n', "unknown key(s) ['color']"),
        ('[[machines]]\ntype = "cnc_mill"\ncount = 0\n', "'count' must be an integer from 1"),
        ('[[machines]]\ntype = "cnc_mill"\n', "give an 'id', or a 'count'"),
        ('[[machines]]\nid = "x"\ntype = "cnc_mill"\ncount = 2\n', "not both"),
        (
            '[[machines]]\nid = "x"\ntype = "cnc_mill"\nstart = 2\n',
            "'id_prefix' and 'start' need 'count'",
        ),
        ("[machine]\nid = 1\n", "unknown top-level key(s) ['machine']"),
        ("", "plant.toml:1: no [[machines]] entries"),
        ('[[machines]]\nid = "a"\ntype = cnc_mill\n', "(at line 3, column 8)"),
    ],
)
def test_bad_fleet_files_name_the_line_and_problem(text: str, message: str) -> None:
    with pytest.raises(FleetSpecError) as error:
        parse_fleet(text, "plant.toml", TYPES)
    assert message in str(error.value)
