"""``--scenario FILE``: a timeline of changes made through the plant-control service, each
just before the step of the first frame that shows it (``simulation/scenario.py``).

:class:`ScriptedSource` wraps the local source: before each step it carries out every
occurrence due at that frame's seq with the local plant-control service, as a REST call
would, so a seeded run of a scenario gives the same frames every time, whatever the wall
clock does. What fired (and what was refused, with the reason) is kept for ``GET /scenario``.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from server.errors import json_error
from server.fleetfile import read_text_file
from server.plant import LocalPlant
from server.source import LocalSource
from simulation import Frame
from simulation.catalog import FleetCatalog
from simulation.errors import ControlError
from simulation.scenario import Action, Occurrence, ScenarioError, Timeline, parse_scenario

MAX_SCENARIO_BYTES = 16 * 1024 * 1024
FIRED_KEPT = 1_000
UPCOMING_SHOWN = 20

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def load_scenario(path: Path, catalog: FleetCatalog) -> tuple[Action, ...]:
    """The actions of the scenario file at ``path``; :class:`ScenarioError` naming the line."""
    text = read_text_file(path, MAX_SCENARIO_BYTES, ScenarioError)
    return parse_scenario(text, str(path), catalog)


@dataclass(frozen=True, slots=True)
class Fired:
    seq: int
    action: Action
    repetition: int
    machine_id: str | None
    result: dict[str, Any]  # what it did, or {"refused": message}


class ScriptedSource:
    """The local source, with a scenario's changes made before each step they are due at."""

    def __init__(self, inner: LocalSource, plant: LocalPlant, actions: tuple[Action, ...],
                 *, path: Path) -> None:  # fmt: skip
        self.inner, self.plant, self.path = inner, plant, path
        self.catalog = inner.catalog
        self.lock = inner.lock
        self.timeline = Timeline(actions)
        self.fired: collections.deque[Fired] = collections.deque(maxlen=FIRED_KEPT)
        self.fired_count = self.refused_count = 0

    @property
    def seq(self) -> int:
        return self.inner.seq

    async def step(self) -> Frame:
        for occurrence in self.timeline.due(self.inner.seq + 1):
            await self._carry_out(occurrence)
        return await self.inner.step()

    def close(self) -> None:
        self.inner.close()

    async def _carry_out(self, occurrence: Occurrence) -> None:
        action = occurrence.action
        if action.kind == "marker":
            self._record(occurrence, None, {"marker": action.marker})
            return
        for machine_id in action.machine_ids:
            try:
                result = await self._change(action, machine_id)
            except ControlError as error:
                self.refused_count += 1
                result = {"refused": str(error)}
            self._record(occurrence, machine_id, result)

    async def _change(self, action: Action, machine_id: str) -> dict[str, Any]:
        plant = self.plant
        if action.kind == "inject":
            assert action.fault is not None
            injected = await plant.inject_fault(machine_id, action.fault)
            return {"fault_id": injected.result.fault_id, "effective_seq": injected.effective_seq}
        if action.kind == "command":
            assert action.command is not None
            changed = await plant.command(machine_id, action.command)
            return {"mode": changed.result, "effective_seq": changed.effective_seq}
        cleared, effective_seq = [], self.inner.seq + 1
        for record in await plant.active_faults(machine_id):
            if action.clear in ("all", record.kind):
                change = await plant.clear_fault(machine_id, record.fault_id)
                cleared.append(change.result.fault_id)
        return {"cleared": cleared, "effective_seq": effective_seq}

    def _record(
        self, occurrence: Occurrence, machine_id: str | None, result: dict[str, Any]
    ) -> None:
        self.fired_count += 1
        self.fired.append(
            Fired(occurrence.seq, occurrence.action, occurrence.repetition, machine_id, result)
        )
        action = occurrence.action
        log.info(
            "scenario: seq %d, entry %d (line %d): %s%s: %s",
            occurrence.seq,
            action.number,
            action.line,
            action.summary,
            "" if machine_id is None else f" [{machine_id}]",
            result,
        )


scenario_key = web.AppKey("scenario", ScriptedSource)


@routes.get("/scenario")
async def scenario(request: web.Request) -> web.Response:
    """The timeline: every action, what has fired (the last 1,000) and what is next."""
    scripted = request.app.get(scenario_key)
    if scripted is None:
        return json_error(404, "no_scenario", "the server runs no scenario (see --scenario)")
    dt_s = scripted.catalog.dt_s
    return web.json_response(
        {
            "file": str(scripted.path),
            "seq": scripted.seq,
            "actions": [_describe(action, dt_s) for action in scripted.timeline.actions],
            "fired_count": scripted.fired_count,
            "refused_count": scripted.refused_count,
            "fired": [
                {
                    "seq": fired.seq,
                    "time_s": round(fired.seq * dt_s, 6),
                    "entry": fired.action.number,
                    "repetition": fired.repetition,
                    "what": fired.action.kind,
                    "machine_id": fired.machine_id,
                    **fired.result,
                }
                for fired in scripted.fired
            ],
            "next": [
                {
                    "seq": occurrence.seq,
                    "time_s": round(occurrence.seq * dt_s, 6),
                    "entry": occurrence.action.number,
                    "repetition": occurrence.repetition,
                    "what": occurrence.action.summary,
                }
                for occurrence in scripted.timeline.upcoming(UPCOMING_SHOWN)
            ],
        }
    )


def _describe(action: Action, dt_s: float) -> dict[str, Any]:
    described: dict[str, Any] = {
        "entry": action.number,
        "line": action.line,
        "what": action.kind,
        "first_seq": action.first_seq,
        "first_time_s": round(action.first_seq * dt_s, 6),
        "every_s": None if action.every_ticks is None else action.every_ticks * dt_s,
        "count": action.count,
        "machines": list(action.machine_ids),
    }
    if action.fault is not None:
        described["inject"] = {
            "type": action.fault.kind,
            "severity": action.fault.severity,
            "onset": action.fault.onset,
            "duration_s": action.fault.duration_s,
            "sensor": action.fault.sensor,
        }
    for key in ("clear", "command", "marker"):
        if getattr(action, key) is not None:
            described[key] = getattr(action, key)
    return described
