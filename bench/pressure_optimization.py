"""Pressure management (issue 8, DSS-1) on the demo town: a winter day's set-point schedule.

Run: `.venv/bin/python bench/pressure_optimization.py` (about a minute, most of it jit compilation).

Setup: the demo town (`erp.demo_town`: one GRS from a 10 MPa offtake into the medium-pressure
ring at 250 kPa, 14 GRP/ShRP feeding low-pressure districts at 2.8–3.0 kPa, 20,293 service
points). Demand: the twin's SigLinDe forecast (`twin_jax.optimize.hourly_demands_kg_s`, the
profiles the live twin uses) for every service point, from its category and annual volume (a
point without annual volume: 2,000 full-load hours of its peak), for a winter day with daily
mean air temperature `--temperature` (default −15 °C), hour by hour. Minimum delivery
pressure: each service point's own, and at least 1.8 kPa in low pressure (DOMAIN.md: the
farthest consumer at the winter peak) and 150 kPa in medium pressure (the demo's medium-pressure
design check; it also keeps every district station's inlet in its working range); district
stations keep 10 kPa over their set-point at the inlet. Set-point bounds: the outlet level's
(low 0–5 kPa, medium 5–300 kPa). Safety margin 100 Pa. Objective: length-weighted mean gauge
pressure of the 15 regulated zones.

Anchor in the same run: the fixed set-points of the registry (the GRS at 250 kPa, districts at
2.8–3.0 kPa) under the same demands. Each schedule is re-simulated hour by hour with the plain
`solve_steady` (not the optimiser's batch) for the figures below. Times: the first call
(includes jit compilation) and a second, warm call.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from erp.demo_town import generate_demo_town  # noqa: E402
from server.twin_model import (  # noqa: E402
    REGISTRY_STANDARD_PRESSURE_PA,
    REGISTRY_STANDARD_TEMPERATURE_K,
    SHIPPED_LEVEL_MAX_PA_GAUGE,
    density_at,
    description_from_records,
)
from twin_jax import Status, compile_network, solve_steady  # noqa: E402
from twin_jax.optimize import (  # noqa: E402
    PressureProblem,
    delivery_minimum_pa_gauge,
    hourly_demands_kg_s,
    optimize_pressure,
    setpoint_bounds,
    zone_levels,
)

LEVELS = {"low": (0.0, 5_000.0), "medium": (5_000.0, 300_000.0), "high": (300_000.0, 10_000_000.0)}
DELIVERY_MIN = {"low": 1_800.0, "medium": 150_000.0}


def main() -> None:
    """Run and print the figures for bench/RESULTS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--temperature", type=float, default=-15.0, help="daily mean air temperature, °C")
    args = ap.parse_args()

    town = generate_demo_town()
    desc = description_from_records(town.records, level_max_pa_gauge=SHIPPED_LEVEL_MAX_PA_GAUGE)
    net = compile_network(desc)
    params = net.parameters()
    sp = {r.id: r.values for r in town.records if r.kind == "service_point"}
    cats = [str(sp[c].get("category") or "household") for c in net.consumer_ids]
    annual = np.array([float(sp[c].get("annual_volume_m3_std") or 0.0) for c in net.consumer_ids])
    peak = np.array([float(sp[c].get("peak_load_m3h_std") or 0.0) for c in net.consumer_ids])
    annual = np.where(annual > 0, annual, peak * 2_000.0)
    rho = density_at(net.gas, REGISTRY_STANDARD_TEMPERATURE_K, REGISTRY_STANDARD_PRESSURE_PA)
    demands = hourly_demands_kg_s(cats, annual, args.temperature, rho)

    level_max = {c: hi for c, (_, hi) in LEVELS.items()}
    p_min = delivery_minimum_pa_gauge(net, DELIVERY_MIN, level_max)
    bounds = setpoint_bounds(net, LEVELS)

    t0 = time.perf_counter()
    first = optimize_pressure(net, params, demands, min_pressure_pa_gauge=p_min, bounds_pa_gauge=bounds)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sched = optimize_pressure(net, params, demands, min_pressure_pa_gauge=p_min, bounds_pa_gauge=bounds)
    warm_s = time.perf_counter() - t0
    assert np.allclose(first.setpoint_pa_gauge, sched.setpoint_pa_gauge)

    # independent re-simulation: plain solve_steady, hour by hour
    levels = zone_levels(net, level_max)
    weight = _length_weights(net)
    managed = np.zeros(net.n_zones, dtype=bool)
    managed[net.zone_of_node[net.to_node[net.regulators]]] = True
    rows = []
    for label, setpoints in (
        ("fixed set-points", np.tile(sched.fixed_setpoint_pa_gauge, (24, 1))),
        ("optimised schedule", sched.setpoint_pa_gauge),
    ):
        means, margins, by_level, statuses = [], [], {"low": [], "medium": []}, []
        for h in range(24):
            prm = params._replace(
                consumer_demand_kg_s=jnp.asarray(demands[h]), setpoint_pa_gauge=jnp.asarray(setpoints[h])
            )
            res = solve_steady(net, prm)
            statuses.append(int(res.status))
            g = np.asarray(res.state.pressure_pa_abs) - net.ambient_pa
            w = weight * managed[net.zone_of_node]
            means.append(float(np.sum(w * g) / np.sum(w)))
            margins.append(g[net.consumer_node] - p_min)
            for lv in by_level:
                sel = w * np.array([levels[z] == lv for z in net.zone_of_node])
                by_level[lv].append(float(np.sum(sel * g) / np.sum(sel)))
        rows.append(
            (
                label,
                np.array(means),
                np.array(margins),
                {k: np.array(v) for k, v in by_level.items()},
                statuses,
            )
        )

    (_, m0, mg0, lv0, st0), (_, m1, mg1, lv1, st1) = rows
    under0, under1 = int(np.sum(mg0 < 0)), int(np.sum(mg1 < 0))  # service-point-hours under the minimum
    mg0, mg1 = mg0.min(axis=1), mg1.min(axis=1)
    size = PressureProblem(net, params, demands, min_pressure_pa_gauge=p_min, bounds_pa_gauge=bounds)
    assert all(s == Status.CONVERGED for s in st0 + st1)
    hours = np.arange(24)
    quietest, busiest = int(np.argmin(demands.sum(1))), int(np.argmax(demands.sum(1)))
    grs = net.regulator_ids.index("GRS-1")
    low = [k for k in range(net.n_regulators) if k != grs]
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"jax {jax.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"demo town {net.n_nodes:,} nodes, {net.n_regulators} regulators, {len(net.consumer_ids):,} "
        f"service points; winter day at {args.temperature:g} °C: demand {demands.sum(1).min():.2f}–"
        f"{demands.sum(1).max():.2f} kg/s (design peak {float(np.sum(params.consumer_demand_kg_s)):.2f})"
    )
    print(
        f"status: {sched.status.name} — {sched.message}; SLSQP iterations {sched.iterations}, "
        f"rounds {sched.rounds}"
    )
    print(
        f"problem: 24 h × {size.n_controls} set-points = {24 * size.n_controls} variables; "
        f"{len(size.point_node):,} constraint points (service points and station inlets) in "
        f"{len(size.group_zone)} zones → 24 × {len(size.group_zone)} soft-min constraints"
    )
    print(f"time to optimise: {cold_s:.1f} s first call (incl. jit), {warm_s:.1f} s warm")
    print()
    print("| | fixed set-points | optimised | change |")
    print("|---|---:|---:|---:|")
    print(
        f"| mean gauge pressure, regulated zones (length-weighted, day) | {m0.mean() / 1e3:.2f} kPa "
        f"| {m1.mean() / 1e3:.2f} kPa | **{100 * (m1.mean() / m0.mean() - 1):+.1f} %** |"
    )
    for lv in ("medium", "low"):
        print(
            f"| mean gauge pressure, {lv}-pressure zones | {lv0[lv].mean() / 1e3:.2f} kPa "
            f"| {lv1[lv].mean() / 1e3:.2f} kPa | {100 * (lv1[lv].mean() / lv0[lv].mean() - 1):+.1f} % |"
        )
    print(
        f"| lowest margin over the minimum, any service point, any hour (re-simulated) "
        f"| {mg0.min():.0f} Pa | {mg1.min():.0f} Pa | |"
    )
    print(f"| service-point-hours under their minimum | {under0} | {under1} | |")
    print()
    print(
        "| hour | demand kg/s | GRS-1 kPa | districts kPa (min–max) | mean before kPa | after kPa | "
        "lowest margin Pa |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for h in sorted({*hours[::3].tolist(), 19}):
        s = sched.setpoint_pa_gauge[h]
        print(
            f"| {h:02d} | {demands[h].sum():.2f} | {s[grs] / 1e3:.1f} | {s[low].min() / 1e3:.2f}–"
            f"{s[low].max() / 1e3:.2f} | {m0[h] / 1e3:.2f} | {m1[h] / 1e3:.2f} | {mg1[h]:.0f} |"
        )
    print()
    crit = sched.critical_node
    for h in (quietest, busiest):
        print(
            f"binding nodes at {h:02d}:00: GRS-1 → {crit[h][grs]}; districts → "
            f"{', '.join(f'{net.regulator_ids[k]} {crit[h][k]}' for k in low[:3])}, …"
        )
    drop = sched.setpoint_pa_gauge[busiest] - sched.setpoint_pa_gauge[quietest]
    print(
        f"set-points at the busiest hour ({busiest:02d}:00) above the quietest ({quietest:02d}:00): "
        f"GRS-1 +{drop[grs] / 1e3:.1f} kPa, districts +{drop[low].min():.0f}…+{drop[low].max():.0f} Pa"
    )
    print(
        f"optimiser's own prediction: reduction {sched.reduction_percent:.1f} %, "
        f"lowest margin {sched.min_margin_pa.min():.0f} Pa"
    )


def _length_weights(net) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Half the length of the pipes at each node (the optimiser's default weights)."""
    ends = slice(0, net.n_pipes)
    return (
        np.bincount(net.from_node[ends], weights=net.pipe_length_m, minlength=net.n_nodes)
        + np.bincount(net.to_node[ends], weights=net.pipe_length_m, minlength=net.n_nodes)
    ) / 2


if __name__ == "__main__":
    main()
