"""``--scenario FILE``: a timeline of changes, each made just before the step of the first
frame that shows it (``simulation/scenario.py``).

:class:`ScriptedSource` wraps the local source: before each step, under the step lock the
plant-control service takes, it makes every occurrence due at that frame's seq with the
fleet operations a REST call makes, so a seeded run of a scenario gives the same frames every
time, whatever the wall clock does (and the export, which makes the same changes, the same
data). What fired (and what was refused, with the reason) is kept for ``GET /scenario``.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from server.errors import json_error
from server.fleetfile import read_text_file
from server.source import LocalSource
from simulation import Frame
from simulation.catalog import FleetCatalog
from simulation.scenario import Action, Event, ScenarioError, Timeline, carry_out, parse_scenario

MAX_SCENARIO_BYTES = 16 * 1024 * 1024
FIRED_KEPT = 1_000
UPCOMING_SHOWN = 20

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def load_scenario(path: Path, catalog: FleetCatalog) -> tuple[Action, ...]:
    """The actions of the scenario file at ``path``; :class:`ScenarioError` naming the line."""
    text = read_text_file(path, MAX_SCENARIO_BYTES, ScenarioError)
    return parse_scenario(text, str(path), catalog)


class ScriptedSource:
    """The local source, with a scenario's changes made before each step they are due at."""

    def __init__(self, inner: LocalSource, actions: tuple[Action, ...], *, path: Path) -> None:
        self.inner, self.path = inner, path
        self.catalog = inner.catalog
        self.timeline = Timeline(actions)
        self.fired: collections.deque[Event] = collections.deque(maxlen=FIRED_KEPT)
        self.fired_count = self.refused_count = 0

    @property
    def seq(self) -> int:
        return self.inner.seq

    async def step(self) -> Frame:
        async with self.inner.lock:  # as the plant-control service changes the fleet
            for occurrence in self.timeline.due(self.inner.seq + 1):
                for event in carry_out(occurrence, self.inner.fleet):
                    self._record(event)
        return await self.inner.step()

    def close(self) -> None:
        self.inner.close()

    def _record(self, event: Event) -> None:
        self.fired_count += 1
        self.refused_count += event.refused
        self.fired.append(event)
        log.info(
            "scenario: seq %d, entry %d (line %d): %s%s: %s",
            event.seq,
            event.entry,
            event.line,
            event.kind,
            "" if event.machine_id is None else f" [{event.machine_id}]",
            event.detail,
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
                    "seq": event.seq,
                    "time_s": round(event.seq * dt_s, 6),
                    "entry": event.entry,
                    "repetition": event.repetition,
                    "what": event.kind,
                    "machine_id": event.machine_id,
                    **event.detail,
                }
                for event in scripted.fired
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
