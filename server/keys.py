"""Typed application keys, declared once."""

from __future__ import annotations

import weakref

from aiohttp import web

from server.config import Settings
from server.engine import Engine
from server.hub import Hub
from server.metrics import Metrics
from server.store import Store

settings_key = web.AppKey("settings", Settings)
store_key = web.AppKey("store", Store)
hub_key = web.AppKey("hub", Hub)
engine_key = web.AppKey("engine", Engine)
metrics_key = web.AppKey("metrics", Metrics)
machines_json_key = web.AppKey("machines_json", bytes)
websockets_key = web.AppKey("websockets", weakref.WeakSet[web.WebSocketResponse])
