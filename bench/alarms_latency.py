"""Alarm latency: a value crossing a limit → `alarmEvents` subscriber, with 5,000 tags live.

Run: `.venv/bin/python bench/alarms_latency.py` (about 80 s; defaults `--seconds 60 --subscribers 10`).

Setup: 1,000 GRP stations (10 areas) registered through the registry service, their tags from
`erp.services.tags.ensure_tags` (6 per station: 6,000 tags) and their default alarm definitions
from `erp.services.alarms.ensure_alarm_definitions` (9 per station). A server process runs the
real app (`server.app.create_app`, default embedded settings: SQLite, DuckDB historian in its
child process, in-process bus) under uvicorn; a feeder task on its loop plays the simulator: it
hands every tag a new value once a second, in `--batches` batches a second, straight to
`pipeline.on_values` — p_in, p_out, t_gas, flow and valve_pos change every second (5,000
changes/s, all within their limits), the doors are reported closed (no change). A pusher task
on the same loop opens one station door at a time (`--pushes` over `--seconds`, a different
station each time, closed again half an interval later), taking `time.time()` just before it
hands the value to the pipeline. The door alarm (discrete {true}, priority high) is the default
rule with no on-delay, so what is measured is the system, not a configured delay (the p_out
HI/LO rules wait 5 s before they raise).

In this process, `--subscribers` graphql-transport-ws clients hold
`alarmEvents(minPriority: high)` (all areas, as wall displays and consoles would) and record the
arrival of each door's `activated` event; latency = arrival - handoff. Anchor in the same run:
one `tagUpdates` subscriber (maxRate 20) on the door tags, timing the same changes down the plain
telemetry path. Also printed: how late the pusher woke (the loop busy with other work), i.e.
what a value arriving from a driver at that moment would wait before its handoff; it is not in
the latency figures. Target (acceptance): p99 < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PASSWORD = "bench-password-1"
N_AREAS = 10
SETPOINT = 2800.0  # Pa gauge: HI at 3080, LO at 2520 (the default rules)


def station_id(i: int) -> str:
    """The id of station `i`."""
    return f"GRP-{i:04d}"


def door(i: int) -> str:
    """The door tag of station `i`."""
    return f"station/{station_id(i)}/door"


# --- seeding (this process, before the server starts) -----------------------------------------


async def seed(url: str, n_stations: int) -> tuple[int, int]:
    """Migrate, register the stations, their tags and alarm definitions, and a dispatcher."""
    from sqlalchemy import func, select

    from erp.adapters import orm
    from erp.adapters.db import create_engine, migrate, session_factory
    from erp.services import accounts, audit, registry, tags
    from erp.services import alarms as alarm_service
    from erp.services.registry import AssetRecord

    recs = [AssetRecord("area", f"A{a:02d}", {"name": f"Bench area {a}"}) for a in range(N_AREAS)]
    for i in range(n_stations):
        sid, area = station_id(i), f"A{i % N_AREAS:02d}"
        lat, lon = 57.6 + (i // 40) * 1e-3, 39.8 + (i % 40) * 1e-3
        recs += [
            AssetRecord("node", f"{sid}-IN", {"lat": lat, "lon": lon, "pressure_level": "medium",
                                              "area_id": area}),
            AssetRecord("node", f"{sid}-OUT", {"lat": lat, "lon": lon, "pressure_level": "low",
                                               "area_id": area}),
            AssetRecord("station", sid, {
                "name": sid, "kind": "GRP", "inlet_node_id": f"{sid}-IN",
                "outlet_node_id": f"{sid}-OUT", "inlet_level": "medium", "outlet_level": "low",
                "outlet_setpoint_pa_gauge": SETPOINT, "capacity_m3h_std": 600, "lat": lat,
                "lon": lon, "area_id": area}),
        ]
    engine = create_engine(url)
    try:
        await migrate(engine)
        actor = audit.Actor("bench", "admin")
        async with session_factory(engine).begin() as s:
            await registry.bulk_import(s, recs, actor)
            await tags.ensure_tags(s)
            await alarm_service.ensure_alarm_definitions(s)
            await accounts.create_user(s, "bench", PASSWORD, "dispatcher", actor, all_areas=True)
        async with session_factory(engine)() as s:
            n_tags = (await s.execute(select(func.count()).select_from(orm.TagDefinition))).scalar()
            n_defs = (await s.execute(select(func.count()).select_from(orm.AlarmDefinitionRow))
                      ).scalar()
        return int(n_tags or 0), int(n_defs or 0)
    finally:
        await engine.dispose()


# --- the server process (`--serve`) -----------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    """The real app under uvicorn, plus the feeder and the pusher on its loop."""
    import uvicorn

    from realtime.model import Quality, TagValue
    from server.app import create_app
    from server.settings import Settings

    var = Path(args.var)
    app = create_app(Settings(var_dir=var, port=args.port, log_level="WARNING"))
    n = args.stations
    good = Quality.GOOD
    held: set[str] = set()  # doors the pusher holds open: the feeder leaves them alone
    stats = {"fed": 0, "changes": 0}

    def count_changes(changes: Any) -> None:
        stats["changes"] += len(changes)

    async def feeder() -> None:
        """Every tag once a second, in `batches` batches spread over the second."""
        tel = app.state.telemetry
        loop = asyncio.get_running_loop()
        groups = [range(n)[k::args.batches] for k in range(args.batches)]
        names = [(f"station/{station_id(i)}/", i % 7) for i in range(n)]
        period = 1.0 / args.batches
        due = loop.time()
        second = 0
        while True:
            sign = 1.0 if second % 2 else -1.0
            for group in groups:
                now = dt.datetime.now(dt.UTC)
                batch: dict[str, TagValue] = {}
                for i in group:
                    prefix, wobble = names[i]
                    batch[prefix + "p_out"] = TagValue(SETPOINT + sign * 50.0 + wobble, good, now, now)
                    batch[prefix + "p_in"] = TagValue(300_000.0 + sign * 2_000.0, good, now, now)
                    batch[prefix + "t_gas"] = TagValue(8.0 + sign * 0.5, good, now, now)
                    batch[prefix + "flow"] = TagValue(300.0 + sign * 20.0 + wobble, good, now, now)
                    batch[prefix + "valve_pos"] = TagValue(50.0 + sign * 2.0, good, now, now)
                    if prefix + "door" not in held:
                        batch[prefix + "door"] = TagValue(False, good, now, now)
                tel.pipeline.on_values(batch)
                stats["fed"] += len(batch)
                due += period
                lag = loop.time() - due
                if lag > 1.0:  # far behind: do not burst to catch up, just go on
                    due = loop.time()
                await asyncio.sleep(max(0.0, due - loop.time()))
            second += 1

    async def pusher() -> None:
        """Wait for the bench's go, then open one door at a time; write what was done."""
        tel = app.state.telemetry
        loop = asyncio.get_running_loop()
        go, done = var / "go", var / "pushes.json"
        while not go.exists():  # noqa: ASYNC110 - the go is a file the bench process writes
            await asyncio.sleep(0.05)
        interval = args.seconds / args.pushes
        rng = random.Random(7)
        order = list(range(n))
        rng.shuffle(order)  # spread over areas and over the feeder's batches
        pushes: list[tuple[str, float]] = []
        late: list[float] = []  # how long the loop kept the pusher waiting past its time
        fed0, changes0, t0, start = stats["fed"], stats["changes"], time.time(), loop.time()

        def close(path: str) -> None:
            now = dt.datetime.now(dt.UTC)
            tel.pipeline.on_values({path: TagValue(False, good, now, now)})
            held.discard(path)

        for k in range(args.pushes):
            target = start + (k + rng.uniform(0, 0.25)) * interval
            await asyncio.sleep(max(0.0, target - loop.time()))
            late.append(max(0.0, loop.time() - target))
            path = door(order[k % n])
            held.add(path)
            now = dt.datetime.now(dt.UTC)
            stamp = time.time()
            tel.pipeline.on_values({path: TagValue(True, good, now, now)})
            pushes.append((path, stamp))
            loop.call_later(interval / 2, close, path)
        await asyncio.sleep(max(0.0, start + args.pushes * interval - loop.time()))
        elapsed = time.time() - t0
        bus = app.state.services.bus
        subs = getattr(bus, "_subs", {})  # the in-process bus's queues: did anything drop?
        dropped = {topic: sum(s.dropped for s in subs.get(topic, ())) for topic in ("alarms", "tags")}
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps({
            "pushes": pushes, "late": late, "elapsed": elapsed, "fed": stats["fed"] - fed0,
            "changes": stats["changes"] - changes0, "tags": len(tel.store.known),
            "definitions": len(app.state.alarms.engine.definitions), "dropped": dropped,
            "journal_failures": app.state.alarms.journal_failures}))
        tmp.rename(done)

    orig = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> Any:
        async with orig(a):
            unlisten = app.state.telemetry.store.listen(count_changes)
            tasks = [asyncio.create_task(feeder()), asyncio.create_task(pusher())]
            try:
                yield
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                unlisten()

    app.router.lifespan_context = lifespan
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", ws="websockets-sansio")


# --- the clients (this process) ---------------------------------------------------------------


async def _ws(url: str, token: str, query: str, variables: dict[str, Any],
              arrivals: list[tuple[float, dict[str, Any]]], ready: asyncio.Event,
              stop: asyncio.Event) -> None:
    """One graphql-transport-ws client: subscribe, then keep (arrival time, payload) pairs."""
    import websockets

    async with websockets.connect(url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                                  max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"Authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe",
                                  "payload": {"query": query, "variables": variables}}))
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            now = time.time()
            msg = json.loads(raw)
            if msg.get("type") == "next":
                arrivals.append((now, msg["payload"]))
            elif msg.get("type") in ("error", "complete"):
                raise RuntimeError(f"subscription ended: {msg}")


ALARM_Q = "subscription { alarmEvents(minPriority: high) { alarmId kind } }"
TAGS_Q = ("subscription($p: [String!]) { tagUpdates(paths: $p, maxRate: 20) "
          "{ resync updates { path value } } }")


async def clients(args: argparse.Namespace, port: int, var: Path,
                  server: subprocess.Popen[bytes]) -> tuple[list[list[Any]], list[Any], dict[str, Any]]:
    """Subscribe, give the go, wait for the pushes to end (+ 2 s), return what arrived."""
    import httpx

    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(600):
            if server.poll() is not None:
                raise RuntimeError("the server exited at start")
            try:
                if (await client.get(base + "/health")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        body = await client.post(base + "/graphql", json={
            "query": 'mutation($p: String!) { login(username: "bench", password: $p) '
                     '{ ... on LoginSuccess { accessToken } } }', "variables": {"p": PASSWORD}})
    token = body.json()["data"]["login"]["accessToken"]
    url = f"ws://127.0.0.1:{port}/graphql"
    stop = asyncio.Event()
    alarm_arrivals: list[list[Any]] = [[] for _ in range(args.subscribers)]
    tag_arrivals: list[Any] = []
    readies = [asyncio.Event() for _ in range(args.subscribers + 1)]
    tasks = [asyncio.create_task(_ws(url, token, ALARM_Q, {}, alarm_arrivals[i], readies[i], stop))
             for i in range(args.subscribers)]
    tasks.append(asyncio.create_task(_ws(
        url, token, TAGS_Q, {"p": [door(i) for i in range(args.stations)]}, tag_arrivals,
        readies[-1], stop)))
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
        await asyncio.sleep(3)  # subscriptions registered on the bus; the feeder settled
        (var / "go").touch()
        done = var / "pushes.json"
        deadline = time.monotonic() + args.seconds + 60
        while not done.exists():
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not finish the pushes")
            if any(t.done() for t in tasks):
                await asyncio.gather(*tasks)  # raises the client's error
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # late deliveries still count (and show in max)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return alarm_arrivals, tag_arrivals, json.loads(done.read_text())


def match(pushes: list[tuple[str, float]], arrivals: list[tuple[str, float]]) -> tuple[list[float], int]:
    """Latencies of the n-th push of each tag to the n-th arrival for it; how many never came."""
    got: dict[str, list[float]] = defaultdict(list)
    for path, t in arrivals:
        got[path].append(t)
    seen: dict[str, int] = defaultdict(int)
    lat, missing = [], 0
    for path, stamp in pushes:
        k = seen[path]
        seen[path] += 1
        if k < len(got[path]):
            lat.append(got[path][k] - stamp)
        else:
            missing += 1
    return lat, missing


def figures(lat: list[float]) -> str:
    """p50 / p99 / max in ms."""
    if len(lat) < 2:
        return "too few samples"
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return f"p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms"


def main() -> None:
    """Seed, start the server, measure, print the figures for bench/RESULTS.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the pushes go on")
    ap.add_argument("--subscribers", type=int, default=10, help="alarmEvents subscribers")
    ap.add_argument("--pushes", type=int, default=200, help="door openings over --seconds")
    ap.add_argument("--stations", type=int, default=1000, help="stations (6 tags each)")
    ap.add_argument("--batches", type=int, default=10, help="background batches per second")
    ap.add_argument("--serve", nargs=2, metavar=("VAR", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        args.var, args.port = args.serve[0], int(args.serve[1])
        serve(args)
        return
    from server.field import free_port

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="gasops-alarm-bench-") as tmp:
        var = Path(tmp)
        t0 = time.perf_counter()
        n_tags, n_defs = asyncio.run(seed(f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}",
                                          args.stations))
        seeded = time.perf_counter() - t0
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(var), str(port),
             "--seconds", str(args.seconds), "--pushes", str(args.pushes),
             "--stations", str(args.stations), "--batches", str(args.batches)],
            env=env, cwd=ROOT, start_new_session=True)
        try:
            alarm_arrivals, tag_arrivals, run = asyncio.run(clients(args, port, var, server))
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
            with contextlib.suppress(ProcessLookupError):  # the historian child, if it lingers
                os.killpg(server.pid, signal.SIGKILL)
    pushes = [(p, s) for p, s in run["pushes"]]
    alarm_pushes = [(f"{p}:discrete", s) for p, s in pushes]
    lat: list[float] = []
    missing = 0
    for arrivals in alarm_arrivals:
        got = [(e["alarmId"], t) for t, payload in arrivals
               if (e := payload["data"]["alarmEvents"])["kind"] == "activated"]
        one, miss = match(alarm_pushes, got)
        lat += one
        missing += miss
    updates = [(u["path"], t) for t, payload in tag_arrivals
               if not (b := payload["data"]["tagUpdates"])["resync"]
               for u in b["updates"] if u["value"] is True]
    anchor, anchor_missing = match(pushes, updates)
    n_subs = args.subscribers
    print(f"alarm latency: door value -> alarmEvents 'activated' (station door alarm: discrete, "
          f"high, no on-delay), {len(pushes)} pushes over {run['elapsed']:.0f} s x {n_subs} "
          f"subscribers: {figures(lat)} ({len(lat):,} deliveries, {missing} missing)")
    print(f"anchor: the same changes -> tagUpdates subscriber (maxRate 20, {args.stations:,} door "
          f"tags): {figures(anchor)} ({len(anchor)} values, {anchor_missing} missing)")
    print(f"loop wait before handoff (pusher woken late: what a value arriving then waits, not in "
          f"the figures above): {figures(run['late'])}")
    print(f"background: {run['tags']:,} tags live ({args.stations:,} stations), fed "
          f"{run['fed'] / run['elapsed']:,.0f} values/s, {run['changes'] / run['elapsed']:,.0f} "
          f"changes/s, {args.batches} batches/s; {n_defs:,} alarm definitions ({run['definitions']:,}"
          f" in the engine); bus drops {run['dropped']}, journal failures "
          f"{run['journal_failures']}; seeding {seeded:.1f} s ({n_tags:,} tags)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
