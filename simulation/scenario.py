"""Scenario files: a timeline of plant changes and markers on the simulation's own clock.

A TOML file of ``[[actions]]`` entries, each one of::

    inject = {type = "bearing_defect", severity = 0.6, onset = "ramp", duration_s = 600}
    clear = "tool_breakage"        # the active faults of that kind ("all": every one)
    command = "stop"               # start, stop, maintain, reset
    marker = "shift change"        # a labelled instant, no change

with when (``at``: seconds, or a duration such as ``"14m32s"``, ``"1h"``; or ``tick``: the
seq of the first frame that shows it), optional repeats (``every`` a duration, ``count``
times; ``every`` without ``count`` repeats to the end), and for the changes the machines it
applies to: ``machine = "cnc_01"``, ``machines = "line1_*"`` (an id glob), ``type =
"conveyor_belt"`` (``type`` and ``machines`` together narrow each other).

Every occurrence is due at a seq: an action at simulated time ``t`` is made before the step
of the first frame whose time is ``t`` or later, and shows from that frame on, so a seeded run
of a scenario is the same every time. Everything is checked when the file is read; an error
names the file, the line of the entry and the problem.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import heapq
import math
import re
import tomllib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from simulation.catalog import FleetCatalog
from simulation.errors import ControlError
from simulation.faults import FaultRecord
from simulation.spec import COMMANDS, FaultRequest

KINDS = ("inject", "clear", "command", "marker")
WHEN = ("at", "tick")
TARGETS = ("machine", "machines", "type")
REPEATS = ("every", "count")
FAULT_KEYS = ("type", "severity", "onset", "duration_s", "sensor")
MAX_ACTIONS = 100_000
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?")
_ENTRY_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*actions[ \t]*\]\]", re.MULTILINE)


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the line and the problem."""


@dataclass(frozen=True, slots=True)
class Action:
    """One entry of the file: what, to which machines, from which seq, how often."""

    number: int  # entry number, from 1
    line: int
    kind: str  # one of KINDS
    machine_ids: tuple[str, ...]  # empty for a marker
    fault: FaultRequest | None = None
    clear: str | None = None  # a fault kind, or "all"
    command: str | None = None
    marker: str | None = None
    first_seq: int = 1
    every_ticks: int | None = None
    count: int | None = 1  # None: to the end

    @property
    def summary(self) -> str:
        what = {
            "inject": f"inject {self.fault.kind if self.fault else ''}",
            "clear": f"clear {self.clear}",
            "command": f"command {self.command}",
            "marker": f"marker {self.marker!r}",
        }[self.kind]
        targets = f" on {len(self.machine_ids)} machine(s)" if self.machine_ids else ""
        return what + targets


@dataclass(frozen=True, slots=True)
class Occurrence:
    seq: int
    action: Action
    repetition: int  # from 0


class Timeline:
    """The occurrences of a scenario in seq order (ties: file order), repeats expanded as
    they come due, never all at once."""

    def __init__(self, actions: tuple[Action, ...]) -> None:
        self.actions = actions
        self._heap: list[tuple[int, int, int]] = [
            (action.first_seq, index, 0) for index, action in enumerate(actions)
        ]
        heapq.heapify(self._heap)

    def due(self, seq: int) -> Iterator[Occurrence]:
        """Every occurrence due at or before ``seq`` not yet taken, in order."""
        while self._heap and self._heap[0][0] <= seq:
            at, index, repetition = heapq.heappop(self._heap)
            action = self.actions[index]
            yield Occurrence(at, action, repetition)
            following = repetition + 1
            if action.every_ticks is not None and (
                action.count is None or following < action.count
            ):
                heapq.heappush(self._heap, (at + action.every_ticks, index, following))

    def upcoming(self, limit: int) -> list[Occurrence]:
        """The next ``limit`` occurrences, without taking them."""
        return [
            Occurrence(at, self.actions[index], repetition)
            for at, index, repetition in heapq.nsmallest(limit, self._heap)
        ]


def parse_scenario(text: str, source: str, catalog: FleetCatalog) -> tuple[Action, ...]:
    """The actions of a scenario file for the fleet ``catalog`` describes."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{source}: not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"actions"})
    if unknown:
        raise ScenarioError(f"{source}: unknown top-level key(s) {unknown}; a scenario holds "
                            "only [[actions]] entries")  # fmt: skip
    entries = document.get("actions")
    if not isinstance(entries, list) or not entries:
        raise ScenarioError(f"{source}:1: no [[actions]] entries")
    if len(entries) > MAX_ACTIONS:
        raise ScenarioError(f"{source}: more than {MAX_ACTIONS:,} actions")
    lines = _header_lines(text)
    actions = []
    for number, entry in enumerate(entries, start=1):
        line = lines[number - 1] if number <= len(lines) else 1
        where = f"{source}:{line}: actions entry {number}"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where}: expected a table")
        actions.append(_action(entry, number, line, where, catalog))
    return tuple(actions)


def _header_lines(text: str) -> list[int]:
    """The line of each ``[[actions]]`` header, counted in one pass."""
    lines, line, offset = [], 1, 0
    for match in _ENTRY_HEADER.finditer(text):
        line += text.count("\n", offset, match.start())
        offset = match.start()
        lines.append(line)
    return lines


def _action(
    entry: dict[str, Any], number: int, line: int, where: str, catalog: FleetCatalog
) -> Action:
    unknown = sorted(set(entry) - {*KINDS, *WHEN, *TARGETS, *REPEATS})
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key(s) {unknown}; an action has one of {list(KINDS)}, "
            f"when ({' or '.join(WHEN)}), targets {list(TARGETS)}, repeats {list(REPEATS)}"
        )
    kinds = [kind for kind in KINDS if kind in entry]
    if len(kinds) != 1:
        raise ScenarioError(f"{where}: give exactly one of {list(KINDS)}, got {kinds or 'none'}")
    kind = kinds[0]
    first_seq = _first_seq(entry, where, catalog.dt_s)
    every_ticks, count = _repeats(entry, where, catalog.dt_s)
    if kind == "marker":
        if set(entry) & set(TARGETS):
            raise ScenarioError(f"{where}: a marker applies to no machine")
        label = entry["marker"]
        if not isinstance(label, str) or not label:
            raise ScenarioError(f"{where}: marker must be a non-empty string")
        return Action(number, line, kind, (), marker=label, first_seq=first_seq,
                      every_ticks=every_ticks, count=count)  # fmt: skip
    machine_ids = _targets(entry, where, catalog)
    base = Action(number, line, kind, machine_ids, first_seq=first_seq,
                  every_ticks=every_ticks, count=count)  # fmt: skip
    if kind == "command":
        command = entry["command"]
        if command not in COMMANDS:
            raise ScenarioError(f"{where}: unknown command {command!r}; valid: {list(COMMANDS)}")
        return dataclasses.replace(base, command=command)
    types = {catalog.machine_type(machine_id) for machine_id in machine_ids}
    if kind == "clear":
        clear = entry["clear"]
        valid = sorted({k for t in types for k in t.fault_kinds})
        if clear != "all" and clear not in valid:
            raise ScenarioError(f"{where}: clear names a fault kind or 'all'; valid: {valid}")
        return dataclasses.replace(base, clear=clear)
    fault = _fault(entry["inject"], where)
    for machine_type in types:
        if fault.kind not in machine_type.fault_kinds:
            raise ScenarioError(
                f"{where}: {machine_type.name} has no fault {fault.kind!r}; valid: "
                f"{list(machine_type.fault_kinds)}"
            )
    return dataclasses.replace(base, fault=fault)


def _fault(value: Any, where: str) -> FaultRequest:
    if not isinstance(value, dict) or not {"type", "severity"} <= set(value):
        raise ScenarioError(f"{where}: inject is a table with at least type and severity")
    unknown = sorted(set(value) - set(FAULT_KEYS))
    if unknown:
        raise ScenarioError(f"{where}: unknown inject key(s) {unknown}; valid: {list(FAULT_KEYS)}")
    severity = value["severity"]
    if (
        isinstance(severity, bool)
        or not isinstance(severity, int | float)
        or not 0 <= severity <= 1
    ):
        raise ScenarioError(f"{where}: severity must be a number in [0, 1], got {severity!r}")
    duration = value.get("duration_s")
    if duration is not None:
        duration = _seconds(duration, where, "duration_s")
    return FaultRequest(
        kind=str(value["type"]),
        severity=float(severity),
        onset=str(value.get("onset", "step")),
        duration_s=duration,
        sensor=value.get("sensor"),
    )


def _targets(entry: dict[str, Any], where: str, catalog: FleetCatalog) -> tuple[str, ...]:
    if not set(entry) & set(TARGETS):
        raise ScenarioError(f"{where}: name the machines: one of {list(TARGETS)}")
    if "machine" in entry:
        if {"machines", "type"} & set(entry):
            raise ScenarioError(f"{where}: machine names one machine; drop machines and type")
        machine_id = entry["machine"]
        if machine_id not in catalog:
            raise ScenarioError(f"{where}: unknown machine {machine_id!r}")
        return (machine_id,)
    ids = [machine.machine_id for machine in catalog.machines]
    if "type" in entry:
        names = [kind.name for kind in catalog.types]
        if entry["type"] not in names:
            raise ScenarioError(f"{where}: no machine of type {entry['type']!r}; types: {names}")
        ids = [i for i in ids if catalog.machine_type(i).name == entry["type"]]
    if "machines" in entry:
        pattern = entry["machines"]
        if not isinstance(pattern, str):
            raise ScenarioError(f"{where}: machines is an id glob such as 'line1_*'")
        ids = [i for i in ids if fnmatch.fnmatchcase(i, pattern)]
    if not ids:
        raise ScenarioError(f"{where}: the targets match no machine")
    return tuple(ids)


def _first_seq(entry: dict[str, Any], where: str, dt_s: float) -> int:
    if ("at" in entry) == ("tick" in entry):
        raise ScenarioError(f"{where}: give when, as at (simulated time) or tick (a seq)")
    if "tick" in entry:
        tick = entry["tick"]
        if isinstance(tick, bool) or not isinstance(tick, int) or tick < 1:
            raise ScenarioError(f"{where}: tick is a seq, 1 or more; got {tick!r}")
        return tick
    return max(1, math.ceil(_seconds(entry["at"], where, "at") / dt_s - 1e-9))


def _repeats(entry: dict[str, Any], where: str, dt_s: float) -> tuple[int | None, int | None]:
    if "every" not in entry:
        if "count" in entry:
            raise ScenarioError(f"{where}: count repeats an action every so often: give every")
        return None, 1
    every = max(1, round(_seconds(entry["every"], where, "every") / dt_s))
    count = entry.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ScenarioError(f"{where}: count is a whole number, 1 or more; got {count!r}")
    return every, count


def _seconds(value: Any, where: str, key: str) -> float:
    """Seconds from a number or a duration such as "1h30m", "90s", "2.5m"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value and (match := _DURATION.fullmatch(value.strip())):
        hours, minutes, secs = (float(part) if part else 0.0 for part in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ScenarioError(
            f"{where}: {key} is seconds or a duration such as '90s', '14m32s', '1h'; got {value!r}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ScenarioError(f"{where}: {key} must be zero or more, got {value!r}")
    return seconds


class Plant(Protocol):
    """What a scenario changes: a :class:`~simulation.fleet.Fleet` (between two steps)."""

    def inject_fault(self, machine_id: str, request: FaultRequest) -> FaultRecord: ...

    def clear_fault(self, machine_id: str, fault_id: str) -> FaultRecord: ...

    def command(self, machine_id: str, name: str) -> str: ...

    def active_faults(self, machine_id: str) -> tuple[FaultRecord, ...]: ...


@dataclass(frozen=True, slots=True)
class Event:
    """What one occurrence did to one machine (or, for a marker, to none)."""

    seq: int
    entry: int
    line: int
    repetition: int
    kind: str
    machine_id: str | None
    detail: dict[str, Any]  # the change made, or {"refused": why}

    @property
    def refused(self) -> bool:
        return "refused" in self.detail


def carry_out(
    occurrence: Occurrence,
    plant: Plant,
    *,
    machines: Collection[str] | None = None,
    markers: bool = True,
) -> list[Event]:
    """Make one occurrence's changes (to those of its machines in ``machines``, if given) and
    say what each did; a change the plant refuses is an event with the reason, not an error.
    Call it between two steps: the changes show from ``occurrence.seq`` on."""
    action = occurrence.action
    if action.kind == "marker":
        return [_event(occurrence, None, {"marker": action.marker})] if markers else []
    events = []
    for machine_id in action.machine_ids:
        if machines is not None and machine_id not in machines:
            continue
        try:
            detail = _change(action, machine_id, plant)
        except ControlError as error:
            detail = {"refused": str(error)}
        events.append(_event(occurrence, machine_id, detail))
    return events


def marker_events(actions: tuple[Action, ...], last_seq: int) -> list[Event]:
    """The markers of a run of ``last_seq`` ticks (they change nothing, so need no plant)."""
    return [
        _event(occurrence, None, {"marker": occurrence.action.marker})
        for occurrence in Timeline(actions).due(last_seq)
        if occurrence.action.kind == "marker"
    ]


def _event(occurrence: Occurrence, machine_id: str | None, detail: dict[str, Any]) -> Event:
    action = occurrence.action
    return Event(occurrence.seq, action.number, action.line, occurrence.repetition,
                 action.kind, machine_id, detail)  # fmt: skip


def _change(action: Action, machine_id: str, plant: Plant) -> dict[str, Any]:
    if action.kind == "inject":
        assert action.fault is not None
        return {"fault_id": plant.inject_fault(machine_id, action.fault).fault_id}
    if action.kind == "command":
        assert action.command is not None
        return {"mode": plant.command(machine_id, action.command)}
    cleared = [
        plant.clear_fault(machine_id, record.fault_id).fault_id
        for record in plant.active_faults(machine_id)
        if action.clear in ("all", record.kind)
    ]
    return {"cleared": cleared}
