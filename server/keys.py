"""Typed application keys, declared once."""

from __future__ import annotations

import asyncio

from aiohttp import web

from server.config import Settings
from server.connections import ConnectionCap
from server.engine import FrameFeed
from server.hub import Hub
from server.metrics import Metrics
from server.plant import PlantControl
from server.shutdown import Shutdown
from server.sinks import Outlet
from server.store import Store
from simulation.catalog import FleetCatalog

settings_key = web.AppKey("settings", Settings)
catalog_key = web.AppKey("catalog", FleetCatalog)
store_key = web.AppKey("store", Store)
hub_key = web.AppKey("hub", Hub)
engine_key = web.AppKey("engine", FrameFeed)
plant_key = web.AppKey("plant", PlantControl)
metrics_key = web.AppKey("metrics", Metrics)
machines_json_key = web.AppKey("machines_json", bytes)
history_gate_key = web.AppKey("history_gate", asyncio.Semaphore)
connection_cap_key = web.AppKey("connection_cap", ConnectionCap)
shutdown_key = web.AppKey("shutdown", Shutdown)
outlets_key = web.AppKey("outlets", tuple[Outlet, ...])
