"""Soak of the wall display: does the page grow over hours? (issue 7)

The demo town (3,969 pipes, 15 stations, 363 field tags) runs at `--rate` times the demo's
update rate — simulated OPC UA stations, Modbus polling, live twin solves and the moving crews
all `rate`× faster — with an alarm raised, acknowledged and cleared every minute/`rate`.
Headless Chromium shows `/wall` as a dispatcher. Every `--sample` minutes the page's garbage is
collected and its JS heap, DOM node count and event listeners are read over the DevTools
protocol. The acceptance compares the end of the run with the sample after `--warmup` minutes (within 10 %).

    .venv/bin/python bench/wall_soak.py                # 60 min at 10x, as in bench/RESULTS.md
    .venv/bin/python bench/wall_soak.py --minutes 3 --warmup 1 --sample 0.5   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from playwright.async_api import async_playwright

from erp.adapters.db import create_engine, migrate, session_factory
from server.app import create_app
from server.field import free_port
from server.seed import seed_demo
from server.settings import Settings

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEMO_POLL_S, DEMO_SIM_S, DEMO_TWIN_S, DEMO_CREW_S = 5.0, 1.0, 10.0, 5.0


async def _seed(settings: Settings) -> dict[str, str]:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        async with session_factory(engine).begin() as s:
            return dict((await seed_demo(s, settings.var_dir)).credentials)
    finally:
        await engine.dispose()


def _serve(settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port,
                            log_level="warning", ws="websockets-sansio", lifespan="on")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True, name="uvicorn").start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.1)
    return server


def _login(url: str, password: str) -> str:
    """The dispatcher's access token."""
    body = httpx.post(url + "/graphql", timeout=30, json={
        "query": "mutation($u: String!, $p: String!) { login(username: $u, password: $p) "
                 "{ ... on LoginSuccess { accessToken } } }",
        "variables": {"u": "dispatcher", "p": password}}).json()
    return str(body["data"]["login"]["accessToken"])


class AlarmChurn:
    """Every `period_s`: a station's door opens (an alarm), the dispatcher acknowledges it, the
    door closes (the alarm clears). Stations take turns."""

    def __init__(self, server: uvicorn.Server, url: str, password: str, period_s: float) -> None:
        self.app: Any = server.config.app
        self.url, self.password, self.period_s = url, password, period_s
        self.raised = 0
        self.failures = 0
        self._token = ""
        self._token_at = -1e9
        self._stop = threading.Event()

    def _headers(self) -> dict[str, str]:
        """A fresh dispatcher token every 5 minutes (access tokens live 15)."""
        if time.monotonic() - self._token_at > 300:
            self._token = _login(self.url, self.password)
            self._token_at = time.monotonic()
        return {"authorization": f"Bearer {self._token}"}

    def _set(self, path: str, value: bool) -> None:
        sim = next(s for s in self.app.state.telemetry.field.simulators if path in s.points)
        sim.freeze(path)
        asyncio.run_coroutine_threadsafe(sim.set_value(path, value), self.app.state.loop).result(5)

    def _ack_all(self) -> None:
        headers = self._headers()
        body = httpx.post(self.url + "/graphql", headers=headers, timeout=30, json={
            "query": "{ activeAlarms { id status } }"}).json()
        for a in body["data"]["activeAlarms"]:
            if a["status"] in ("unack", "rtn_unack"):
                httpx.post(self.url + "/graphql", headers=headers, timeout=30, json={
                    "query": "mutation($id: String!) { acknowledgeAlarm(alarmId: $id) "
                             "{ __typename } }", "variables": {"id": a["id"]}})

    def run(self) -> None:
        doors = sorted(p for s in self.app.state.telemetry.field.simulators
                       for p in s.points if p.endswith("/door"))
        k = 0
        while not self._stop.wait(self.period_s / 2):
            door = doors[k % len(doors)]
            k += 1
            try:
                self._set(door, True)
                self.raised += 1
                if self._stop.wait(self.period_s / 2):
                    break
                self._ack_all()
                self._set(door, False)
            except Exception as e:  # noqa: BLE001 - a soak keeps going; it reports at the end
                self.failures += 1
                print(f"alarm churn: {e!r}", flush=True)

    def start(self) -> None:
        threading.Thread(target=self.run, daemon=True, name="alarm-churn").start()

    def stop(self) -> None:
        self._stop.set()


async def soak(a: argparse.Namespace) -> None:
    var = Path(tempfile.mkdtemp(prefix="gasops-soak-"))
    settings = Settings(var_dir=var, port=free_port(), simulate_field=True,
                        poll_period_s=DEMO_POLL_S / a.rate, sim_period_s=DEMO_SIM_S / a.rate,
                        twin_period_s=DEMO_TWIN_S / a.rate,
                        crew_sim_period_s=DEMO_CREW_S / a.rate, log_level="WARNING")
    credentials = await _seed(settings)
    server = await asyncio.to_thread(_serve, settings)
    url = f"http://127.0.0.1:{settings.port}"
    churn = AlarmChurn(server, url, credentials["dispatcher"], 60.0 / a.rate)
    frames = 0

    def count(_: Any) -> None:
        nonlocal frames
        frames += 1

    samples: list[tuple[float, float, float, float, int]] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=a.chromium, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1920, "height": 1080})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("websocket", lambda ws: ws.on("framereceived", count))
        await page.goto(url + "/wall")
        await page.fill("input[name=u]", "dispatcher")
        await page.fill("input[name=p]", credentials["dispatcher"])
        await page.click("button[type=submit]")
        await page.wait_for_selector("#app:not([hidden])")
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Performance.enable")
        churn.start()
        t0 = time.monotonic()
        print(f"soak: {a.minutes} min at {a.rate:g}x on {url}; minute, heap MB, DOM nodes, "
              "listeners, WS frames", flush=True)
        while (elapsed := (time.monotonic() - t0) / 60) < a.minutes:
            await asyncio.sleep(min(a.sample * 60, max(0.0, (a.minutes - elapsed) * 60)))
            await cdp.send("HeapProfiler.collectGarbage")
            m = {x["name"]: x["value"] for x in (await cdp.send("Performance.getMetrics"))["metrics"]}
            row = ((time.monotonic() - t0) / 60, m["JSHeapUsedSize"] / 2**20, m["Nodes"],
                   m["JSEventListeners"], frames)
            samples.append(row)
            print(f"  {row[0]:6.1f} {row[1]:8.2f} {row[2]:7.0f} {row[3]:7.0f} {row[4]:9d}", flush=True)
        churn.stop()
        await browser.close()
    server.should_exit = True

    base = next((s for s in samples if s[0] >= a.warmup), samples[0])
    end = samples[-1]
    print()
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} cores; rate {a.rate:g}x "
          f"(stations {settings.sim_period_s:g} s, Modbus {settings.poll_period_s:g} s, "
          f"twin {settings.twin_period_s:g} s, crews {settings.crew_sim_period_s:g} s), "
          f"{churn.raised} alarms raised and acknowledged ({churn.failures} churn steps failed)")
    print(f"| | after {base[0]:.0f} min | after {end[0]:.0f} min | change |")
    print("|---|---|---|---|")
    for name, i, digits in (("JS heap (MB, after GC)", 1, 2), ("DOM nodes", 2, 0),
                            ("event listeners", 3, 0)):
        change = (end[i] / base[i] - 1) * 100 if base[i] else float("nan")
        print(f"| {name} | {base[i]:.{digits}f} | {end[i]:.{digits}f} | {change:+.1f} % |")
    print(f"| WebSocket frames received | {base[4]} | {end[4]} | |")
    print(f"console errors: {len(errors)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=5.0, help="baseline sample (minutes)")
    ap.add_argument("--sample", type=float, default=5.0, help="minutes between samples")
    ap.add_argument("--rate", type=float, default=10.0, help="times the demo's update rate")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(soak(ap.parse_args()))


if __name__ == "__main__":
    main()
