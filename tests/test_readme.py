"""The README's sensor table agrees with the models' SENSORS.

The table (header ``| Type | Sensor | Unit | Typical range | Model |``) lists every sensor of
every machine type in :data:`simulation.models.MODEL_TYPES` under its type, and no other. A row
with an empty Type cell belongs to the type above it; a Sensor cell may list several sensors in
backticks, separated by commas, and then its Typical range cell lists their ranges in the same
order (``0-350, 0-150, -20-75``). Each row's Unit is the spec's ``unit`` exactly (what the unit
measures, such as RMS, goes in the Model column) and each range is the spec's ``typical_min``
to ``typical_max`` (``min to max`` or ``min-max``, optionally followed by a qualifier such as
``healthy``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from simulation.models import MODEL_TYPES

README = Path(__file__).resolve().parent.parent / "README.md"
HEADER = "| Type | Sensor | Unit | Typical range | Model |"
NAME = re.compile(r"`([a-z0-9_]+)`")
NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
RANGE = re.compile(rf"(?P<low>{NUMBER})(?: to |-)(?P<high>{NUMBER})(?: [a-z].*)?")


@dataclass(frozen=True)
class Documented:
    """What the README says of one sensor, and the line that says it."""

    unit: str
    typical: tuple[float, float]
    line: int


def number(text: str) -> float:
    return float(text.replace(",", ""))


@functools.cache
def sensor_table() -> dict[str, dict[str, Documented]]:
    """The README's sensor table: machine type -> sensor name -> what it documents."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert HEADER in lines, f"README.md has no sensor table with the header {HEADER!r}"
    start = lines.index(HEADER)
    table: dict[str, dict[str, Documented]] = {}
    machine_type: str | None = None
    for line_number, line in enumerate(lines[start + 2 :], start=start + 3):
        if not line.startswith("|"):
            break  # the end of the table
        where = f"README.md:{line_number}"
        cells = [cell.strip() for cell in line.strip()[1:-1].split("|")]
        assert len(cells) == 5, f"{where}: {len(cells)} cells, not 5"
        type_cell, sensor_cell, unit, range_cell, _ = cells
        if type_cell:
            match = NAME.fullmatch(type_cell)
            assert match, f"{where}: the Type cell {type_cell!r} is not one name in backticks"
            machine_type = match.group(1)
        assert machine_type is not None, f"{where}: a row before the first type"
        names = NAME.findall(sensor_cell)
        assert names, f"{where}: no sensor in {sensor_cell!r}"
        assert sensor_cell == ", ".join(f"`{name}`" for name in names), (
            f"{where}: the Sensor cell {sensor_cell!r} is not names in backticks, comma-separated"
        )
        ranges = range_cell.split(", ")
        assert len(ranges) == len(names), (
            f"{where}: {len(ranges)} ranges in {range_cell!r} for {len(names)} sensors"
        )
        sensors = table.setdefault(machine_type, {})
        for name, text in zip(names, ranges, strict=True):
            match = RANGE.fullmatch(text)
            assert match, f"{where}: {text!r} is not a range like '0 to 2.5' or '0-350'"
            assert name not in sensors, f"{where}: {machine_type}.{name} has a row already"
            typical = (number(match["low"]), number(match["high"]))
            sensors[name] = Documented(unit, typical, line_number)
    return table


def test_the_table_lists_exactly_the_machine_types() -> None:
    assert sorted(sensor_table()) == sorted(MODEL_TYPES)


@pytest.mark.parametrize("machine_type", sorted(MODEL_TYPES))
def test_every_sensor_of_a_type_has_a_row_and_no_other(machine_type: str) -> None:
    documented = sensor_table().get(machine_type, {})
    names = MODEL_TYPES[machine_type].sensor_names()
    missing = [name for name in names if name not in documented]
    unknown = [name for name in documented if name not in names]
    assert not missing, f"README.md's sensor table has no row for {machine_type}: {missing}"
    assert not unknown, f"README.md lists sensors {machine_type} does not have: {unknown}"


@pytest.mark.parametrize("machine_type", sorted(MODEL_TYPES))
def test_units_and_typical_ranges_are_the_specs(machine_type: str) -> None:
    documented = sensor_table().get(machine_type, {})
    wrong = []
    for sensor in MODEL_TYPES[machine_type].SENSORS:
        if sensor.name not in documented:
            continue  # reported by the test above
        row = documented[sensor.name]
        where = f"README.md:{row.line}: {machine_type}.{sensor.name}"
        if row.unit != sensor.unit:
            wrong.append(f"{where}: unit {row.unit!r}, the spec's {sensor.unit!r}")
        expected = (float(sensor.typical_min), float(sensor.typical_max))
        if row.typical != expected:
            wrong.append(f"{where}: typical range {row.typical}, the spec's {expected}")
    assert not wrong, "\n".join(wrong)
