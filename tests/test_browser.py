"""A real browser (headless Chromium through Playwright) against the real server: pages of
other origins cannot change the plant, whatever CORS allows; the server's own pages can."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import Harness, MakeServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REBINDING_HOST = "rebound.example"  # a name the browser resolves to 127.0.0.1

if CHROMIUM is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("the browser tests need Chromium: .ci/run installs it")
    pytest.skip("Chromium is not installed (CI installs it)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.async_api")

ATTEMPTS = """async ([target]) => {
  const results = {};
  let faultPath = "/machines/robot_01/faults/none";
  const attempt = async (name, run) => {
    try {
      const response = await run();
      results[name] = response.status;
      if (response.status === 201) faultPath = response.headers.get("Location");
    } catch (error) { results[name] = "blocked"; }
  };
  await attempt("json_fault", () => fetch(target + "/machines/robot_01/faults", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({type: "overheating", severity: 0.5})}));
  await attempt("simple_command", () => fetch(target + "/machines/cnc_01/commands", {
    method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
    body: JSON.stringify({command: "stop"})}));
  await attempt("delete_fault", () => fetch(target + faultPath, {method: "DELETE"}));
  return results;
}"""
FORM_PAGE = """<!doctype html><title>elsewhere</title>
<form id="f" method="post" enctype="text/plain" action="{target}/machines/conveyor_01/commands">
<input name='{{"command":"stop","x":"' value='"}}'></form>"""


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--host-resolver-rules=MAP {REBINDING_HOST} 127.0.0.1",
            ],
        )
        yield browser
        await browser.close()


@contextlib.asynccontextmanager
async def _other_origin(target: str) -> AsyncIterator[TestServer]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=FORM_PAGE.format(target=target), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def _plant_after_next_tick(harness: Harness) -> dict[str, Any]:
    """Each machine's state and active faults once the next tick has applied any change."""
    await harness.clock.tick()
    plant = {}
    for machine in ("robot_01", "cnc_01", "conveyor_01"):
        snapshot = await (await harness.client.get(f"/machines/{machine}/data")).json()
        plant[machine] = (snapshot["state"], [fault["type"] for fault in snapshot["faults"]])
    return plant


UNTOUCHED = {
    "robot_01": ("running", []),
    "cnc_01": ("running", []),
    "conveyor_01": ("running", []),
}


async def test_pages_of_other_origins_cannot_change_the_plant(
    make_server: MakeServer, browser: Any
) -> None:
    harness = await make_server()  # defaults: CORS allows every origin, loopback is trusted
    target = str(harness.client.make_url("")).rstrip("/")
    page = await browser.new_page()
    async with _other_origin(target) as other:
        await page.goto(str(other.make_url("/")))
        results = await page.evaluate(ATTEMPTS, [target])
        # the fault and the delete passed CORS (the preflight allowed them) and were refused;
        # the simple request is opaque to the page (status 0) and was refused too
        assert results == {"json_fault": 403, "simple_command": 0, "delete_fault": 403}
        async with page.expect_navigation():
            await page.evaluate("document.getElementById('f').submit()")
        assert "cross_origin" in await page.content()  # the form post was refused
    assert await _plant_after_next_tick(harness) == UNTOUCHED


async def test_a_rebound_name_is_not_the_servers_own_origin(
    make_server: MakeServer, browser: Any
) -> None:
    harness = await make_server()
    rebound = f"http://{REBINDING_HOST}:{harness.client.port}"
    page = await browser.new_page()
    await page.goto(rebound + "/")  # the server's own page, under a name it does not answer to
    results = await page.evaluate(ATTEMPTS, [rebound])
    assert results == {"json_fault": 403, "simple_command": 403, "delete_fault": 403}
    assert await _plant_after_next_tick(harness) == UNTOUCHED


async def test_the_servers_own_pages_can_change_the_plant(
    make_server: MakeServer, browser: Any
) -> None:
    harness = await make_server()
    own = str(harness.client.make_url("")).rstrip("/")
    page = await browser.new_page()
    await page.goto(own + "/")
    results = await page.evaluate(ATTEMPTS, [own])
    assert results == {"json_fault": 201, "simple_command": 200, "delete_fault": 200}
    # the fault was injected, then cleared; the mill stopped
    assert await _plant_after_next_tick(harness) == UNTOUCHED | {"cnc_01": ("idle", [])}
