"""GraphiQL in real headless Chromium: a live subscription shows field values within 30 s.

The acceptance point: within 30 s of start, values flow from the simulators over real OPC UA
and Modbus into the tag store, the historian and a GraphiQL subscription. The server starts with
the demo field (simulated OPC UA station and Modbus devices on loopback); an operator opens the
GraphiQL page the server itself serves, puts a bearer token in GraphiQL's headers editor (sent
as the `connection_init` payload of graphql-transport-ws) and runs a `tagUpdates` subscription.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.async_api import Page, async_playwright

from server.vendor import VendorAssets
from tests._live import LiveServer, start_live_server
from tests._services import SERVICE_SKIP_PREFIX, skip_or_fail
from tests.e2e._browser import CHROMIUM_ARGS, Browsing
from tests.e2e.test_field_demo import _seed

pytestmark = [pytest.mark.services, pytest.mark.slow]

BUDGET_S = 30.0  # from server start to values in the tag store, historian and GraphiQL
PRESSURE = "station/GRP-01/p_out"  # read over OPC UA
MODBUS = ("meter/M-C1/vb", "skz/SKZ-01/potential")  # read over Modbus TCP and RTU-over-TCP
_PATHS = ", ".join(json.dumps(p) for p in (PRESSURE, *MODBUS))
SUBSCRIPTION = (f"subscription Live {{\n  tagUpdates(paths: [{_PATHS}], maxRate: 2) {{\n"
                "    resync\n    updates { path value quality good sourceTs }\n  }\n}\n")
STORED = ("query($p: [String!]!, $s: DateTime!, $e: DateTime!) {"
          " tags(filter: {paths: $p}) { path current { value good } }"
          " history(paths: $p, start: $s, end: $e) { path points { ts value quality } } }")
# GraphiQL 3's editors are CodeMirror 5 instances; the response pane (`.result-window`) is a
# read-only one whose text is the latest payload of a subscription (each replaces the last).
EDITOR_JS = ("(scope) => { const el = document.querySelector(scope + ' .CodeMirror');"
             " return el && el.CodeMirror ? el.CodeMirror.getValue() : null; }")


def _readings(text: str | None) -> list[dict[str, Any]]:
    """The tag readings in one payload of the response pane (none while it shows no data)."""
    if not text:
        return []
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return []
    batch = (body.get("data") or {}).get("tagUpdates") if isinstance(body, dict) else None
    return list(batch["updates"]) if batch else []


async def test_graphiql_subscription_shows_field_values_within_30s(
        tmp_path: Path, chromium_path: str) -> None:
    """Server start → GraphiQL (token in its headers editor) → live OPC UA and Modbus values,
    also in the tag store and the historian, all within 30 s; the page stays on loopback and
    logs no error.

    The clock starts before `start_live_server`, so the 30 s also pay for the test's own setup
    there (one user per role created and logged in); the browser is launched before it.
    """
    if not VendorAssets().installed:
        skip_or_fail(f"{SERVICE_SKIP_PREFIX} npm assets not installed")
    url = f"sqlite+aiosqlite:///{tmp_path / 'gasops.sqlite3'}"
    _seed(url)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            page = await context.new_page()
            seen = Browsing(context, page)
            since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            started = time.monotonic()
            live = await asyncio.to_thread(start_live_server, tmp_path, url, simulate_field=True,
                                           poll_period_s=0.2)
            try:
                await _subscribe_in_graphiql(page, live)
                await _watch_response_pane(page, started + BUDGET_S)
                await _check_store_and_historian(live, since, started + BUDGET_S)
            finally:
                await context.close()
                await asyncio.to_thread(live.stop)
        finally:
            await browser.close()
    assert seen.errors == []
    assert seen.off_host() == [], seen.urls
    assert any(u.startswith("ws://127.0.0.1:") for u in seen.urls), seen.urls
    # The token really went where the server reads it: the connection_init payload.
    assert seen.connection_init() == {"Authorization": f"Bearer {live.tokens['operator']}"}


async def _subscribe_in_graphiql(page: Page, live: LiveServer) -> None:
    """Open GraphiQL with the subscription, put the operator's token in the headers editor,
    press the run button."""
    # GraphiQL's URL parameter `q` (read by the served page) fills the query editor: no typing,
    # so no auto-closed brackets to fight with.
    await page.goto(f"{live.graphql_url}?q={quote(SUBSCRIPTION)}", wait_until="load")
    await page.locator(".graphiql-query-editor .CodeMirror").wait_for()
    assert await page.evaluate(EDITOR_JS, ".graphiql-query-editor") == SUBSCRIPTION
    # GraphiQL sends the headers editor's JSON as HTTP headers, and as the connection_init
    # payload of a subscription's WebSocket, where the server reads `Authorization`.
    headers = json.dumps({"Authorization": f"Bearer {live.tokens['operator']}"})
    await page.get_by_role("button", name="Headers").click()
    editor = ".graphiql-editor-tool .graphiql-editor:not(.hidden)"
    await page.locator(f"{editor} .CodeMirror").click()
    await page.keyboard.press("ControlOrMeta+a")
    await page.keyboard.insert_text(headers)
    assert await page.evaluate(EDITOR_JS, editor) == headers
    await page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()


async def _watch_response_pane(page: Page, deadline: float) -> None:
    """Read the response pane until it has shown two pressures and a Modbus value."""
    pressure: dict[str, Any] = {}  # source timestamp → value
    modbus: dict[str, Any] = {}
    shown: list[str] = []
    while len(set(pressure.values())) < 2 or not modbus:
        assert time.monotonic() < deadline, (
            f"after {BUDGET_S} s: pressure updates {pressure}, Modbus values {modbus}; "
            f"the pane showed {shown[-3:]}")
        text = await page.evaluate(EDITOR_JS, ".result-window")
        if text and (not shown or text != shown[-1]):
            shown.append(text)
            for r in _readings(text):
                if r["good"] and r["path"] == PRESSURE:
                    pressure[r["sourceTs"]] = r["value"]
                elif r["good"] and r["path"] in MODBUS:
                    modbus[r["path"]] = r["value"]
        await asyncio.sleep(0.05)
    assert all(1000 < v < 5000 for v in pressure.values()), pressure  # low pressure, Pa gauge
    assert all(isinstance(v, int | float) for v in modbus.values()), modbus


async def _check_store_and_historian(live: LiveServer, since: dt.datetime,
                                     deadline: float) -> None:
    """Wait until the tag store holds good values of the three tags and `history` returns
    stored points of the pressure and of a Modbus tag."""
    end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    current: dict[str, Any] = {}
    counts: dict[str, int] = {}
    while (not all(c and c["good"] for c in current.values()) or counts.get(PRESSURE, 0) < 2
           or not any(counts.get(p) for p in MODBUS)):
        assert time.monotonic() < deadline, (
            f"after {BUDGET_S} s the tag store holds {current}, the historian {counts} points")
        body = await asyncio.to_thread(live.gql, STORED, {
            "p": [PRESSURE, *MODBUS], "s": since.isoformat(), "e": end.isoformat()}, "operator")
        assert "errors" not in body, body
        current = {t["path"]: t["current"] for t in body["data"]["tags"]}
        assert sorted(current) == sorted([PRESSURE, *MODBUS]), current
        counts = {s["path"]: len(s["points"]) for s in body["data"]["history"]}
        await asyncio.sleep(0.3)
