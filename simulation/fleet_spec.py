"""Fleet descriptions: the default seed fleet and TOML fleet files, validated with line numbers."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MACHINE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # the whole id (fullmatch)
MAX_FLEET_SIZE = 5_000_000
_ENTRY_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*machines[ \t]*\]\]", re.MULTILINE)
_ENTRY_KEYS = frozenset({"id", "type", "count", "id_prefix", "start"})


class FleetSpecError(ValueError):
    """A fleet description that cannot be used; the message names the line and the problem."""


@dataclass(frozen=True, slots=True)
class MachineSpec:
    machine_id: str
    machine_type: str


@dataclass(frozen=True, slots=True)
class FleetSpec:
    machines: tuple[MachineSpec, ...]

    def __len__(self) -> int:
        return len(self.machines)


def default_fleet() -> FleetSpec:
    """The seed document's three machines."""
    return FleetSpec(
        (
            MachineSpec("robot_01", "robotic_arm"),
            MachineSpec("cnc_01", "cnc_mill"),
            MachineSpec("conveyor_01", "conveyor_belt"),
        )
    )


def parse_fleet(text: str, source: str, known_types: Iterable[str]) -> FleetSpec:
    """Parse a TOML fleet file; every error names ``source:line`` and what is wrong.

    Each ``[[machines]]`` entry is either one machine (``id`` and ``type``) or a
    group (``type``, ``count``, optional ``id_prefix`` and ``start``) expanded to
    ids ``<prefix><number>`` with the number zero-padded to a common width.
    """
    types = tuple(sorted(known_types))
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise FleetSpecError(f"{source}: not valid TOML: {error}") from None
    unknown_tables = sorted(set(document) - {"machines"})
    if unknown_tables:
        raise FleetSpecError(
            f"{source}: unknown top-level key(s) {unknown_tables}; a fleet file holds "
            "only [[machines]] entries"
        )
    entries = document.get("machines")
    if not isinstance(entries, list) or not entries:
        raise FleetSpecError(f"{source}:1: no [[machines]] entries; declare at least one machine")
    header_lines = [
        text.count("\n", 0, match.start()) + 1 for match in _ENTRY_HEADER.finditer(text)
    ]
    machines: list[MachineSpec] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries):
        line = header_lines[number] if number < len(header_lines) else 1
        where = f"{source}:{line}: machines entry {number + 1}"
        for machine in _expand_entry(entry, where, types):
            if machine.machine_id in seen:
                raise FleetSpecError(
                    f"{where}: duplicate machine id {machine.machine_id!r} "
                    f"(first declared in entry {seen[machine.machine_id] + 1})"
                )
            seen[machine.machine_id] = number
            machines.append(machine)
            if len(machines) > MAX_FLEET_SIZE:
                raise FleetSpecError(f"{where}: fleet exceeds {MAX_FLEET_SIZE:,} machines")
    return FleetSpec(tuple(machines))


def _expand_entry(entry: Any, where: str, types: tuple[str, ...]) -> list[MachineSpec]:
    if not isinstance(entry, Mapping):
        raise FleetSpecError(f"{where}: expected a table")
    extra = sorted(set(entry) - _ENTRY_KEYS)
    if extra:
        raise FleetSpecError(f"{where}: unknown key(s) {extra}; valid keys: {sorted(_ENTRY_KEYS)}")
    machine_type = entry.get("type")
    if machine_type not in types:
        raise FleetSpecError(
            f"{where}: unknown or missing type {machine_type!r}; valid types: {list(types)}"
        )
    if "count" not in entry:
        if "id" not in entry:
            raise FleetSpecError(f"{where}: give an 'id', or a 'count' for a group of machines")
        if "id_prefix" in entry or "start" in entry:
            raise FleetSpecError(f"{where}: 'id_prefix' and 'start' need 'count'")
        return [MachineSpec(_checked_id(entry["id"], where), machine_type)]
    if "id" in entry:
        raise FleetSpecError(
            f"{where}: give either 'id' (one machine) or 'count' (a group), not both"
        )
    count, start = entry["count"], entry.get("start", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_FLEET_SIZE:
        raise FleetSpecError(
            f"{where}: 'count' must be an integer from 1 to {MAX_FLEET_SIZE:,}, got {count!r}"
        )
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise FleetSpecError(f"{where}: 'start' must be a non-negative integer, got {start!r}")
    prefix = entry.get("id_prefix", f"{machine_type}_")
    if not isinstance(prefix, str):
        raise FleetSpecError(f"{where}: 'id_prefix' must be a string, got {prefix!r}")
    width = max(2, len(str(start + count - 1)))
    ids = [f"{prefix}{number:0{width}d}" for number in range(start, start + count)]
    _checked_id(ids[0], where)
    return [MachineSpec(machine_id, machine_type) for machine_id in ids]


def _checked_id(machine_id: Any, where: str) -> str:
    if not isinstance(machine_id, str) or not MACHINE_ID_PATTERN.fullmatch(machine_id):
        raise FleetSpecError(
            f"{where}: invalid machine id {machine_id!r}; use 1 to 64 letters, digits, '_', '.' "
            "or '-', starting with a letter or digit"
        )
    return machine_id
