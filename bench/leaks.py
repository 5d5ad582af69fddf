"""Leak detection and localization on the demo town: seeded random leaks, noisy sensors.

Run: `.venv/bin/python bench/leaks.py` (about 4 minutes; `--scenarios 50` for a quick look).

Setup: the demo town (`erp.demo_town`, 3,846 nodes, 20,293 service points) at its design
demand; pressure sensors on 5 % of the service points (one per chosen point's node) plus every
station outlet; sensor noise 50 Pa (σ) in low pressure and 0.5 kPa in medium pressure, per
sample, one sample a minute, a window of 60 samples (the window mean's noise is σ/√60). Each
scenario puts a leak of 0.5–5 % of its district's inflow at a random supplied node (low- or
medium-pressure), solves the plant with the twin's nonlinear model, draws the window's noise,
and hands the residual (measured − modelled without leak) to `twin_jax.leaks.LeakLocator`
(screen every node, refine the best 20 with the nonlinear model). Detection: the best
candidate's χ² improvement above 25 (a Bonferroni bound for ~4,000 candidates × 168 windows a
week at a 1-per-week false-alarm rate); false alarms are counted over a simulated week of
no-leak windows (168 one-hour windows). Distances are along the pipes and through valves
(Dijkstra). Times exclude the one-off jit compilation of the refinement (done before the first
scenario).

Anchor: BattLeDIM 2020 counts a leak as found when the reported position is within 300 m of it.
The model used to simulate is the twin's own (no roughness error): this measures the method
under sensor noise, with a calibrated model (issue 8's estimator provides the calibration).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import scipy.sparse as sparse  # noqa: E402
from scipy.sparse import csgraph  # noqa: E402

from erp.demo_town import generate_demo_town  # noqa: E402
from server.twin_model import description_from_records  # noqa: E402
from twin_jax import compile_network, solve_steady  # noqa: E402
from twin_jax.leaks import LeakLocator  # noqa: E402

LEVELS = {"high": 1.2e6, "medium": 3e5, "low": 5e3}
WINDOW = 60
THRESHOLD = 25.0


def main() -> None:
    """Run and print the figures for bench/RESULTS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    town = generate_demo_town()
    desc = description_from_records(town.records, level_max_pa_gauge=LEVELS)
    net = compile_network(desc)
    params = net.parameters()
    base = jax.block_until_ready(solve_steady(net, params))
    p0 = np.asarray(base.state.pressure_pa_abs)
    gauge = p0 - net.ambient_pa

    sp_nodes = sorted({net.node_ids[n] for n in net.consumer_node})
    chosen = rng.choice(sp_nodes, size=int(0.05 * len(desc.consumers)), replace=False).tolist()
    station_outlets = [net.node_ids[n] for n in net.to_node[net.regulators]]
    sensors = sorted(set(chosen) | set(station_outlets))
    sigma = np.array([50.0 if gauge[net.node_index[s]] < 10_000 else 500.0 for s in sensors])
    t0 = time.perf_counter()
    loc = LeakLocator(net, params, sensors, sigma / np.sqrt(WINDOW), baseline=base)
    build_s = time.perf_counter() - t0
    base_p = p0[loc.sensor_index]

    # along pipes and through valves (a valve counts 1 m)
    lengths = np.concatenate([np.asarray(net.pipe_length_m), np.ones(net.n_valves)])
    ends = slice(0, net.n_pipes + net.n_valves)
    graph = sparse.coo_matrix((lengths, (net.from_node[ends], net.to_node[ends])),
                              shape=(net.n_nodes, net.n_nodes)).tocsr()
    zone_demand = np.bincount(net.zone_of_node[net.consumer_node],
                              weights=np.asarray(params.consumer_demand_kg_s), minlength=net.n_zones)

    loc.refine(np.zeros(len(sensors)), loc.screen(np.zeros(len(sensors)), top=20))  # compile once
    # false alarms: a week of one-hour windows without a leak
    false_alarms = 0
    for _ in range(168):
        noise = rng.normal(0.0, 1.0, len(sensors)) * loc.sigma
        if loc.screen(noise, top=1)[0].score > THRESHOLD:
            false_alarms += 1

    rows = []
    for _ in range(args.scenarios):
        node = int(rng.choice(loc.candidates))
        share = rng.uniform(0.005, 0.05)
        leak = share * zone_demand[net.zone_of_node[node]]
        extra = np.zeros(net.n_nodes)
        extra[node] = leak
        plant = solve_steady(net, params._replace(extra_demand_kg_s=jnp.asarray(extra)), initial=base.state)
        measured = np.asarray(plant.state.pressure_pa_abs)[loc.sensor_index]
        residual = measured + rng.normal(0.0, 1.0, len(sensors)) * loc.sigma - base_p
        t0 = time.perf_counter()
        ranked = loc.refine(residual, loc.screen(residual, top=20))
        elapsed = time.perf_counter() - t0
        dist = csgraph.dijkstra(graph, directed=False, indices=node)
        d = [float(dist[net.node_index[c.node_id]]) for c in ranked[:5]]
        rows.append({"share": share, "detected": ranked[0].score > THRESHOLD, "d1": d[0], "d5": min(d),
                     "t": elapsed, "size_ratio": ranked[0].leak_kg_s / leak,
                     "low": gauge[node] < 10_000})

    def summary(sel: list[dict]) -> str:
        if not sel:
            return "| – | – | – | – | – | – |"
        det = [r for r in sel if r["detected"]]
        return (f"| {len(sel)} | {100 * len(det) / len(sel):.0f} % "
                f"| {100 * np.mean([r['d1'] <= 300 for r in sel]):.0f} % "
                f"| {100 * np.mean([r['d5'] <= 300 for r in sel]):.0f} % "
                f"| {statistics.median(r['d1'] for r in sel):.0f} m "
                f"| {statistics.median(r['size_ratio'] for r in sel):.2f} |")

    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"jax {jax.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"demo town {net.n_nodes:,} nodes; {len(sensors)} pressure sensors; window {WINDOW} samples; "
          f"locator built in {build_s:.1f} s (sensitivities of every sensor to every node)")
    print()
    print("| leaks | scenarios | detected | top-1 within 300 m | top-5 within 300 m | median top-1 distance "
          "| fitted / true size |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("| all, 0.5–5 % of the district inflow " + summary(rows))
    print("| ≥ 1 % of the district inflow " + summary([r for r in rows if r["share"] >= 0.01]))
    print("| ≥ 1 %, low pressure " + summary([r for r in rows if r["share"] >= 0.01 and r["low"]]))
    print("| ≥ 1 %, medium pressure " + summary([r for r in rows if r["share"] >= 0.01 and not r["low"]]))
    print("| < 1 % " + summary([r for r in rows if r["share"] < 0.01]))
    print()
    times = sorted(r["t"] for r in rows)
    print(f"false alarms: {false_alarms} in a simulated week (168 one-hour windows without a leak); "
          f"time to localize (screen + refine): median {statistics.median(times):.2f} s, "
          f"95th percentile {times[int(0.95 * (len(times) - 1))]:.2f} s, max {times[-1]:.2f} s")


if __name__ == "__main__":
    main()
