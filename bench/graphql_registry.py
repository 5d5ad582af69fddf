"""GraphQL registry latency on the demo town: p50/p99 at 1 and 20 concurrent clients, and the
server's peak memory.

Run: `.venv/bin/python bench/graphql_registry.py` (about a minute). It seeds a fresh demo town
in a temporary directory, starts the server in its own process, and measures
- the 100-pipe page with nested end nodes and pressure levels (the issue's target: p99 < 50 ms
  at 20 clients on a 2-core machine),
- `networkSummary`,
- the anchor: the same 100-pipe page as plain JSON from a Starlette route doing the same
  three SQL queries without GraphQL, in the same server — what GraphQL itself costs.
Load comes from `wrk` (Debian package `wrk`: closed-loop keep-alive connections, C, little
CPU) when installed, else from an asyncio + httpx client in this process, which itself takes
several ms of CPU per request and so inflates the figures; the output says which was used.
Both share the 2 cores with the server.
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

from server.field import free_port

ROOT = Path(__file__).resolve().parent.parent
PAGE = """query { pipes(first: 100) { edges { node { id lengthM innerDiameterM material
  pressureLevel { code } fromNode { id lat lon pressureLevel { code } }
  toNode { id lat lon pressureLevel { code } } } } } }"""
SUMMARY = """query { networkSummary { nodes pipes stations valves skzStations servicePoints
  totalPipeLengthKm byPressureLevel { key pipes lengthKm } byMaterial { key pipes lengthKm } } }"""



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


def _wrk(url: str, body: str | None, token: str, clients: int, seconds: int) -> dict[str, float]:
    """One wrk run; latency percentiles in ms and throughput."""
    import json
    import re
    import shutil

    lines = [f'wrk.headers["Authorization"] = {json.dumps("Bearer " + token)}']
    if body is not None:
        lines += ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}",
                  'wrk.headers["Content-Type"] = "application/json"']
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        script = f.name
    try:
        pin = ["taskset", "-c", "1"] if (os.cpu_count() or 1) > 1 and shutil.which("taskset") else []
        out = subprocess.run(
            [*pin, "wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency",
             "-s", script, url], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script)
    if "Non-2xx" in out:
        raise RuntimeError(out)

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m[2]]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    n = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return {"p50_ms": ms("50"), "p99_ms": ms("99"), "rps": rps, "n": n}


def _check(base: str, token: str, body: str | None) -> None:
    """One request first: the load must be measuring real answers, not errors."""
    headers = {"authorization": f"Bearer {token}"}
    r = (httpx.post(base + "/graphql", content=body, headers={
        **headers, "content-type": "application/json"}) if body is not None
         else httpx.get(base + "/bench/raw-pipes?first=100", headers=headers))
    r.raise_for_status()
    assert "errors" not in r.json(), r.text[:500]


def _run_wrk(base: str, token: str, seconds: int, cached: bool,
             ) -> list[tuple[str, int, dict[str, float]]]:
    import json

    mode = "cache on" if cached else "cache off"
    scenarios: list[tuple[str, str, str | None]] = [
        (f"pipes page (100, nested), {mode}", base + "/graphql", json.dumps({"query": PAGE})),
        (f"networkSummary, {mode}", base + "/graphql", json.dumps({"query": SUMMARY}))]
    if not cached:
        scenarios.append(("anchor: same page, plain JSON", base + "/bench/raw-pipes?first=100",
                          None))
    rows = []
    for label, url, body in scenarios:
        _check(base, token, body)
        for clients in (1, 20):
            # Warm-up at this concurrency, discarded: the first burst of 20 concurrent requests
            # all miss the parse/validation caches together and would dominate the tail.
            _wrk(url, body, token, clients, 2)
            rows.append((label, clients, _wrk(url, body, token, clients, seconds)))
            print(f"{label:34s} clients={clients:2d} " + " ".join(
                f"{k}={v:.1f}" for k, v in rows[-1][2].items()), flush=True)
    return rows


async def _run(base: str, token: str, requests: int, cached: bool,
               ) -> list[tuple[str, int, dict[str, float]]]:
    headers = {"authorization": f"Bearer {token}"}

    def gql(query: str):  # type: ignore[no-untyped-def]
        async def send(c: httpx.AsyncClient) -> httpx.Response:
            return await c.post(base + "/graphql", json={"query": query}, headers=headers)
        return send

    async def raw(c: httpx.AsyncClient) -> httpx.Response:
        return await c.get(base + "/bench/raw-pipes?first=100")

    rows = []
    mode = "cache on" if cached else "cache off"
    scenarios = [(f"pipes page (100, nested), {mode}", gql(PAGE)),
                 (f"networkSummary, {mode}", gql(SUMMARY))]
    if not cached:
        scenarios.append(("anchor: same page, plain JSON", raw))
    for label, send in scenarios:
        for clients in (1, 20):
            n = requests if clients == 1 else requests * 4
            rows.append((label, clients, await _measure(label, send, clients, n)))
            print(f"{label:32s} clients={clients:2d} " + " ".join(
                f"{k}={v:.1f}" for k, v in rows[-1][2].items()), flush=True)
    return rows


def main() -> None:
    """Seed, serve, measure, print a Markdown table for bench/RESULTS.md."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100,
                    help="httpx client: requests per scenario at 1 client (4x at 20)")
    ap.add_argument("--seconds", type=int, default=8, help="wrk: seconds per scenario")
    args = ap.parse_args()
    import shutil

    use_wrk = shutil.which("wrk") is not None
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
        rows, peaks = [], []
        for cached in (True, False):
            env["GASOPS_RESPONSE_CACHE_SIZE"] = "512" if cached else "0"
            port = free_port()
            # The server gets core 0 and wrk core 1 (where there are two), so the load generator
            # does not steal the server's CPU and distort its latency.
            pin = ["taskset", "-c", "0"] if use_wrk and shutil.which("taskset") else []
            server = subprocess.Popen([*pin, sys.executable, str(ROOT / "bench" / "_server.py"),
                                       str(var), str(port)], env=env)
            base = f"http://127.0.0.1:{port}"
            try:
                for _ in range(300):
                    try:
                        if httpx.get(base + "/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                login = httpx.post(base + "/graphql", json={
                    "query": "mutation($u: String!, $p: String!) { login(username: $u, password: $p)"
                             " { ... on LoginSuccess { accessToken } } }",
                    "variables": {"u": "dispatcher", "p": creds["dispatcher"]}}).json()
                token = login["data"]["login"]["accessToken"]
                if use_wrk:
                    rows += _run_wrk(base, token, args.seconds, cached)
                else:
                    rows += asyncio.run(_run(base, token, args.requests, cached))
                peaks.append(_peak_rss_mib(server.pid))
            finally:
                server.terminate()
                server.wait(timeout=30)
        peak = max(peaks)
    print()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, SQLite (embedded default); "
          f"demo town seeded in {seed_s:.1f} s; server peak RSS {peak:.0f} MiB; "
          f"load from {'wrk' if use_wrk else 'httpx (in-process)'}")
    print()
    print("| query | clients | p50 ms | p99 ms | req/s |")
    print("|---|---:|---:|---:|---:|")
    for label, clients, r in rows:
        print(f"| {label} | {clients} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['rps']:.0f} |")


if __name__ == "__main__":
    main()
