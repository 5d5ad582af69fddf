"""GraphQL registry latency on the demo town: p50/p99 at 1 and 20 concurrent clients, and the
server's peak memory.

Run: `.venv/bin/python bench/graphql_registry.py` (about a minute). It seeds a fresh demo town
in a temporary directory, starts the server in its own process, and measures
- the 100-pipe page with nested end nodes and pressure levels (the issue's target: p99 < 50 ms
  at 20 clients on a 2-core machine),
- `networkSummary`,
- the anchor: the same 100-pipe page as plain JSON from a Starlette route doing the same
  three SQL queries without GraphQL, in the same server — what GraphQL itself costs.
Clients run in this process (asyncio + httpx keep-alive), so on 2 cores they share the CPU
with the server, as they would on a small control-room box.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PAGE = """query { pipes(first: 100) { edges { node { id lengthM innerDiameterM material
  pressureLevel { code } fromNode { id lat lon pressureLevel { code } }
  toNode { id lat lon pressureLevel { code } } } } } }"""
SUMMARY = """query { networkSummary { nodes pipes stations valves skzStations servicePoints
  totalPipeLengthKm byPressureLevel { key pipes lengthKm } byMaterial { key pipes lengthKm } } }"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _measure(name: str, send, clients: int, requests: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    per_client = requests // clients

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in range(per_client):
            t0 = time.perf_counter()
            r = await send(client)
            latencies.append(time.perf_counter() - t0)
            r.raise_for_status()
            if b'"errors"' in r.content[:200]:
                raise RuntimeError(r.text[:500])

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for _ in range(10):  # warm-up
            await send(client)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "rps": len(latencies) / wall,
            "n": len(latencies)}


async def _run(base: str, token: str, requests: int) -> list[tuple[str, int, dict[str, float]]]:
    headers = {"authorization": f"Bearer {token}"}

    def gql(query: str):  # type: ignore[no-untyped-def]
        async def send(c: httpx.AsyncClient) -> httpx.Response:
            return await c.post(base + "/graphql", json={"query": query}, headers=headers)
        return send

    async def raw(c: httpx.AsyncClient) -> httpx.Response:
        return await c.get(base + "/bench/raw-pipes?first=100")

    rows = []
    for label, send in (("pipes page (100, nested)", gql(PAGE)),
                        ("networkSummary", gql(SUMMARY)),
                        ("anchor: same page, plain JSON", raw)):
        for clients in (1, 20):
            n = requests if clients == 1 else requests * 4
            rows.append((label, clients, await _measure(label, send, clients, n)))
            print(f"{label:32s} clients={clients:2d} " + " ".join(
                f"{k}={v:.1f}" for k, v in rows[-1][2].items()), flush=True)
    return rows


def main() -> None:
    """Seed, serve, measure, print a Markdown table for bench/RESULTS.md."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200, help="per scenario at 1 client")
    args = ap.parse_args()
    env = {**os.environ, "GASOPS_LOG_LEVEL": "WARNING"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="gasops-bench-") as tmp:
        var = Path(tmp)
        env["GASOPS_VAR_DIR"] = str(var)
        gasops = str(Path(sys.executable).with_name("gasops"))
        t0 = time.perf_counter()
        subprocess.run([gasops, "seed-demo"], env=env, check=True, capture_output=True)
        seed_s = time.perf_counter() - t0
        creds = dict(line.split(" ", 1) for line in
                     (var / "demo-credentials.txt").read_text().splitlines())
        port = _free_port()
        server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_server.py"), str(var),
                                   str(port)], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(base + "/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            login = httpx.post(base + "/graphql", json={"query": (
                'mutation { login(username: "dispatcher", password: "%s") '
                '{ ... on LoginSuccess { accessToken } } }' % creds["dispatcher"])}).json()
            token = login["data"]["login"]["accessToken"]
            rows = asyncio.run(_run(base, token, args.requests))
            peak = _peak_rss_mib(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, SQLite (embedded default); "
          f"demo town seeded in {seed_s:.1f} s; server peak RSS {peak:.0f} MiB")
    print()
    print("| query | clients | p50 ms | p99 ms | req/s |")
    print("|---|---:|---:|---:|---:|")
    for label, clients, r in rows:
        print(f"| {label} | {clients} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['rps']:.0f} |")


if __name__ == "__main__":
    main()
