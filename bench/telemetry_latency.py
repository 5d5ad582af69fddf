"""(b) Latency from a value change to a WebSocket subscriber: 5,000 tags changing every second,
100 GraphQL subscribers (graphql-transport-ws, `tagUpdates`, each on its own 50 tags).

Run: `.venv/bin/python bench/telemetry_latency.py` (~40 s). A server process (the real app,
in-process bus) gets 5,000 tag definitions and a feeder task that changes all of them once a
second, stamping each value with the time of the change; 100 subscribers in this process
record `arrival - stamp` for every value they receive (`maxRate: 10`, so up to 100 ms of
the latency is the coalescing window itself). Target (issue 3): p99 < 500 ms. The clients run
in this process on the same 2 cores as the server. (No anchor yet.)
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
N_TAGS, N_SUBS, PER_SUB = 5000, 100, 50

SERVER = r'''
import asyncio, datetime as dt, sys, time, uvicorn
from realtime.model import Quality, TagDef, TagValue
from server.app import create_app
from server.settings import Settings
var, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
app = create_app(Settings(var_dir=var, port=port, log_level="WARNING",
                          secret_key="bench-secret-key-of-at-least-32-bytes", response_cache_size=0))
async def feeder():
    tel = app.state.telemetry
    for k in range(n):
        tel.store.define(TagDef(f"bench/T{k:05d}/v", area_id=None))
    while True:
        now = dt.datetime.now(dt.UTC)
        stamp = time.time()
        tel.pipeline.on_values({f"bench/T{k:05d}/v": TagValue(stamp + k * 1e-9, Quality.GOOD,
                                now, now) for k in range(n)})
        await asyncio.sleep(1.0)
orig = app.router.lifespan_context
import contextlib
@contextlib.asynccontextmanager
async def lifespan(a):
    async with orig(a):
        task = asyncio.create_task(feeder())
        yield
        task.cancel()
app.router.lifespan_context = lifespan
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio")
'''


async def subscriber(url: str, token: str, paths: list[str], lat: list[float],
                     stop: asyncio.Event) -> None:
    """One graphql-transport-ws client recording latencies."""
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                                  max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"Authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription($p: [String!]) { tagUpdates(paths: $p, maxRate: 10) "
                     "{ resync updates { value } } }", "variables": {"p": paths}}}))
        while not stop.is_set():
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
            except TimeoutError:
                continue
            now = time.time()
            data = msg.get("payload", {}).get("data", {}).get("tagUpdates")
            if data and not data["resync"]:
                lat.extend(now - u["value"] for u in data["updates"])


def main() -> None:
    """Start the server, subscribe, measure for 20 s."""
    from server.field import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory() as var:
        subprocess.run([str(Path(sys.executable).with_name("gasops")), "migrate"], check=True,
                       env={**env, "GASOPS_VAR_DIR": var}, capture_output=True)
        subprocess.run([str(Path(sys.executable).with_name("gasops")), "user", "add", "bench",
                        "--role", "dispatcher", "--password", "bench-password",
                        "--all-areas"], check=True, env={**env, "GASOPS_VAR_DIR": var},
                       capture_output=True)
        server = subprocess.Popen([sys.executable, "-c", SERVER, var, str(port), str(N_TAGS)],
                                  env=env)
        try:
            lat = asyncio.run(_run(port))
        finally:
            server.terminate()
            server.wait(30)
    q = statistics.quantiles(lat, n=100)
    print(f"(b) change -> WebSocket subscriber, {N_SUBS} subscribers x {PER_SUB} tags of "
          f"{N_TAGS} changing each second: p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms "
          f"({len(lat):,} values)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")


async def _run(port: int) -> list[float]:
    import httpx

    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                if (await client.get(base + "/health")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        body = await client.post(base + "/graphql", json={
            "query": 'mutation { login(username: "bench", password: "bench-password") '
                     '{ ... on LoginSuccess { accessToken } } }'})
    token = body.json()["data"]["login"]["accessToken"]
    lat: list[float] = []
    stop = asyncio.Event()
    subs = [asyncio.create_task(subscriber(
        f"ws://127.0.0.1:{port}/graphql", token,
        [f"bench/T{(i * PER_SUB + k) % N_TAGS:05d}/v" for k in range(PER_SUB)], lat, stop))
        for i in range(N_SUBS)]
    await asyncio.sleep(5)  # warm-up: connect, snapshot
    lat.clear()
    await asyncio.sleep(20)
    stop.set()
    await asyncio.gather(*subs, return_exceptions=True)
    return lat


if __name__ == "__main__":
    main()
