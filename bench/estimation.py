"""State estimation on the demo town: hidden demand scales and roughness factors, noisy sensors, bad data.

Run: `.venv/bin/python bench/estimation.py` (about 10 minutes; `--trials 5` for a quick look).

Setup: the demo town (`erp.demo_town`, 3,846 nodes, 20,293 service points) at its design
demand. Parameters (`twin_jax.estimation`): one demand scale and one roughness factor per area
(14 low-pressure districts of PE pipe and the steel medium-pressure ring `MP`): 30 factors.
Each trial draws a hidden plant: every factor uniform in 0.7…1.3, solved with the twin's
nonlinear model. Sensors, configuration A: every station's outlet gauge and flow meter, and a
gauge on 5 % of the service points (one per chosen point's node); configuration B adds every
station's inlet gauge (all on the medium-pressure ring). Noise: 50 Pa (σ, low pressure) / 0.5 kPa
(medium) per one-minute sample, and the estimator gets one-hour window means (σ/√60); flow
meters 1 % of the design flow. Recovery is scored against the hidden factors, for the
parameters the estimator reports observable (posterior σ of the log-factor ≤ 0.1/3).

Bad data: in each trial one randomly chosen service-point gauge gets a bias of ±3σ (σ of its
per-sample noise) on the window mean; a hit is that gauge flagged by the largest normalized
residual test (threshold 4). The same on single snapshots (σ per sample, no averaging) with
biases of 3σ and 6σ, to show why a 3σ bias needs the window. False flags: flags in the unbiased
trials.

Model error (the last rows, `--hetero-trials`): the plant perturbed as `server/plant.py` does it —
every pipe's roughness by its own factor (0.7…1.3) and every consumer's demand by its own
lognormal factor (σ 0.3) on top of the group factors — which the grouped model cannot
represent; demand is scored against each district's true total. Run once with the sensors'
noise only, once with a model-error term added to σ in quadrature (30 Pa low, 300 Pa medium).

Times exclude the one-off jit compilation (reported separately).
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

from erp.demo_town import generate_demo_town  # noqa: E402
from server.twin_model import description_from_records  # noqa: E402
from twin_jax import compile_network, solve_steady  # noqa: E402
from twin_jax.estimation import Estimate, ParameterGroups, Sensors, StateEstimator  # noqa: E402

LEVELS = {"high": 1.2e6, "medium": 3e5, "low": 5e3}
WINDOW = 60
LOW_PA, MEDIUM_PA = 50.0, 500.0
FLOW_SHARE = 0.01
MODEL_LOW_PA, MODEL_MEDIUM_PA = 30.0, 300.0


def main() -> None:
    """Run and print the figures for bench/RESULTS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--hetero-trials", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    town = generate_demo_town()
    desc = description_from_records(town.records, level_max_pa_gauge=LEVELS)
    net = compile_network(desc)
    params = net.parameters()
    values = {r.id: r.values for r in town.records}
    groups = ParameterGroups.from_labels(
        [values[c].get("area_id") for c in net.consumer_ids], [values[p].get("area_id") for p in net.pipe_ids]
    )
    base = jax.block_until_ready(solve_steady(net, params))
    gauge = np.asarray(base.state.pressure_pa_abs) - net.ambient_pa
    setup_s = time.perf_counter() - t0

    sp_nodes = sorted({net.node_ids[n] for n in net.consumer_node})
    chosen = sorted(rng.choice(sp_nodes, size=int(0.05 * len(desc.consumers)), replace=False).tolist())
    outlets = [net.node_ids[n] for n in net.to_node[net.regulators]]
    inlets = [net.node_ids[n] for n in net.from_node[net.regulators]]
    design_flow = np.asarray(base.state.mass_flow_kg_s)[net.regulators]

    def sample_sigma(nodes: list[str]) -> np.ndarray:
        return np.array([LOW_PA if gauge[net.node_index[n]] < 10_000 else MEDIUM_PA for n in nodes])

    def estimator(nodes: list[str], window: int, model_error: bool = False) -> StateEstimator:
        sigma = sample_sigma(nodes) / np.sqrt(window)
        if model_error:
            model = np.array([MODEL_LOW_PA if s == LOW_PA else MODEL_MEDIUM_PA for s in sample_sigma(nodes)])
            sigma = np.hypot(sigma, model)
        sensors = Sensors(nodes, sigma, net.regulator_ids, FLOW_SHARE * design_flow)
        return StateEstimator(net, params, groups, sensors)

    config_a = outlets + chosen
    config_b = outlets + inlets + chosen
    est_a, est_b = estimator(config_a, WINDOW), estimator(config_b, WINDOW)
    snap_a = estimator(config_a, 1)
    sp_sensors = [config_a.index(n) for n in chosen]  # same positions in A and in the snapshot set
    names = groups.names
    nd = len(groups.demand_names)

    t0 = time.perf_counter()
    est_a.estimate(est_a.measure(base.state))  # compile (one trace serves every call with these shapes)
    compile_a = time.perf_counter() - t0
    t0 = time.perf_counter()
    est_b.estimate(est_b.measure(base.state))
    compile_b = time.perf_counter() - t0

    rows: dict[str, list[dict]] = {"A": [], "B": []}
    bad_rows: list[dict] = []
    for trial in range(args.trials):
        truth = rng.uniform(0.7, 1.3, groups.n_parameters)
        plant_params = est_a.apply(truth)
        plant = solve_steady(net, plant_params)
        assert int(plant.status) == 0, "the hidden plant did not solve"
        for label, est in (("A", est_a), ("B", est_b)):
            y = est.measure(plant.state) + rng.normal(0.0, 1.0, len(est.sigma)) * est.sigma
            t0 = time.perf_counter()
            fit = est.estimate(y)
            rows[label].append(_score(fit, truth, time.perf_counter() - t0))
            if label != "A":
                continue
            # bad data on the window means: ±3 σ_sample on one service-point gauge
            k = int(rng.choice(sp_sensors))
            biased = y.copy()
            biased[k] += rng.choice([-1.0, 1.0]) * 3.0 * est.sigma[k] * np.sqrt(WINDOW)
            t0 = time.perf_counter()
            flagged = est.estimate(biased)
            shift = np.abs(flagged.log_factor - fit.log_factor)[fit.observable] / fit.std_log[fit.observable]
            bad_rows.append(
                {
                    "kind": "window 3σ",
                    "hit": est.names[k] in flagged.bad_sensors,
                    "only": flagged.bad_sensors == (est.names[k],),
                    "shift": float(shift.max()),
                    "t": time.perf_counter() - t0,
                    "false": len(fit.bad_sensors),
                }
            )
            # single snapshots: σ per sample
            y1 = snap_a.measure(plant.state) + rng.normal(0.0, 1.0, len(snap_a.sigma)) * snap_a.sigma
            clean1 = snap_a.estimate(y1)
            for mult in (3.0, 6.0):
                b1 = y1.copy()
                b1[k] += rng.choice([-1.0, 1.0]) * mult * snap_a.sigma[k]
                got = snap_a.estimate(b1, start=clean1)
                bad_rows.append(
                    {
                        "kind": f"snapshot {mult:.0f}σ",
                        "hit": snap_a.names[k] in got.bad_sensors,
                        "only": got.bad_sensors == (snap_a.names[k],),
                        "shift": float("nan"),
                        "t": float("nan"),
                        "false": len(clean1.bad_sensors) if mult == 3.0 else 0,
                    }
                )
        print(f"trial {trial + 1}/{args.trials} done", file=sys.stderr)

    hetero: dict[str, list[dict]] = {"noise only": [], "noise + model error": []}
    est_m = estimator(config_a, WINDOW, model_error=True)
    for _ in range(args.hetero_trials):
        truth = rng.uniform(0.7, 1.3, groups.n_parameters)
        grouped = est_a.apply(truth)
        demand = np.asarray(grouped.consumer_demand_kg_s) * rng.lognormal(0.0, 0.3, len(net.consumer_ids))
        rough = np.asarray(grouped.roughness_m) * rng.uniform(0.7, 1.3, net.n_pipes)
        plant = solve_steady(
            net, grouped._replace(consumer_demand_kg_s=jnp.asarray(demand), roughness_m=jnp.asarray(rough))
        )
        assert int(plant.status) == 0
        dg = groups.demand_group
        true_demand = np.bincount(dg, weights=demand, minlength=nd) / np.bincount(
            dg, weights=np.asarray(params.consumer_demand_kg_s), minlength=nd
        )
        noise = rng.normal(0.0, 1.0, len(est_a.sigma))
        for label, est in (("noise only", est_a), ("noise + model error", est_m)):
            y = est.measure(plant.state) + noise * est_a.sigma
            t0 = time.perf_counter()
            fit = est.estimate(y)
            elapsed = time.perf_counter() - t0
            err = np.where(fit.observable[:nd], np.abs(fit.factor[:nd] / true_demand - 1.0), 0.0)
            hetero[label].append(
                {
                    "chi2_dof": fit.chi2 / fit.dof,
                    "flags": len(fit.bad_sensors),
                    "demand_err": float(err.max()),
                    "worst": names[int(np.argmax(err))],
                    "t": elapsed,
                    "converged": fit.converged,
                }
            )

    _print(
        args,
        net,
        names,
        nd,
        len(config_a),
        len(config_b),
        setup_s,
        compile_a,
        compile_b,
        rows,
        bad_rows,
        hetero,
    )


def _score(fit: Estimate, truth: np.ndarray, elapsed: float) -> dict:
    return {
        "err": fit.factor / truth - 1.0,
        "obs": fit.observable.copy(),
        "std": fit.std_log.copy(),
        "t": elapsed,
        "it": fit.total_iterations,
        "conv": fit.converged,
        "chi2_dof": fit.chi2 / fit.dof,
        "false": len(fit.bad_sensors),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _print(
    args: argparse.Namespace,
    net,
    names: tuple[str, ...],
    nd: int,
    n_a: int,
    n_b: int,
    setup_s: float,
    compile_a: float,
    compile_b: float,
    rows: dict[str, list[dict]],
    bad_rows: list[dict],
    hetero: dict[str, list[dict]],
) -> None:
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"jax {jax.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"demo town {net.n_nodes:,} nodes; {len(names)} factors ({nd} demand scales, "
        f"{len(names) - nd} roughness factors); {args.trials} trials; set-up {setup_s:.1f} s"
    )
    print(
        f"sensors: A = {n_a} gauges + {net.n_regulators} flow meters; B = {n_b} gauges + "
        f"{net.n_regulators} flow meters; compile (first estimate): A {compile_a:.1f} s, "
        f"B {compile_b:.1f} s"
    )
    classes = {
        "demand, 14 low-pressure districts": [k for k in range(nd) if names[k] != "demand:MP"],
        "demand, medium-pressure ring": [names.index("demand:MP")],
        "roughness, 14 PE districts": [k for k in range(nd, len(names)) if names[k] != "roughness:MP"],
        "roughness, steel MP ring": [names.index("roughness:MP")],
    }
    for label, rs in rows.items():
        print()
        print(f"Configuration {label}:")
        print(
            "| parameters | estimates | reported observable | within 10 % (of observable) "
            "| median / max error (observable) | median posterior σ | median / max error (unobservable) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for cls, ks in classes.items():
            err = np.concatenate([r["err"][ks] for r in rs])
            obs = np.concatenate([r["obs"][ks] for r in rs])
            std = np.concatenate([r["std"][ks] for r in rs])
            eo, eu = np.abs(err[obs]), np.abs(err[~obs])
            within = f"{100 * np.mean(eo < 0.1):.0f} %" if eo.size else "–"
            med_o = f"{_pct(np.median(eo))} / {_pct(eo.max())}" if eo.size else "–"
            med_u = f"{_pct(np.median(eu))} / {_pct(eu.max())}" if eu.size else "–"
            print(
                f"| {cls} | {err.size} | {100 * obs.mean():.0f} % | {within} | {med_o} "
                f"| {_pct(float(np.median(std)))} | {med_u} |"
            )
        times = sorted(r["t"] for r in rs)
        print(
            f"time per estimation: median {statistics.median(times):.2f} s, max {times[-1]:.2f} s; "
            f"LM iterations median {statistics.median(r['it'] for r in rs):.0f}; converged "
            f"{sum(r['conv'] for r in rs)}/{len(rs)}; χ²/dof median "
            f"{statistics.median(r['chi2_dof'] for r in rs):.2f}; "
            f"false flags {sum(r['false'] for r in rs)}"
        )
    print()
    print("Bad data (configuration A, one service-point gauge biased per trial; threshold |rᴺ| > 4):")
    print(
        "| measurements | bias | trials | flagged | flagged alone | false flags in the unbiased fits "
        "| max shift of observable factors (posterior σ) | time with removal, median |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind in ("window 3σ", "snapshot 3σ", "snapshot 6σ"):
        sel = [r for r in bad_rows if r["kind"] == kind]
        if not sel:
            continue
        meas, bias = kind.split(" ")
        shifts = [r["shift"] for r in sel if np.isfinite(r["shift"])]
        ts = [r["t"] for r in sel if np.isfinite(r["t"])]
        shift = f"{max(shifts):.2f}" if shifts else "–"
        t_med = f"{statistics.median(ts):.2f} s" if ts else "–"
        print(
            f"| {'one-hour window means' if meas == 'window' else 'single samples'} | {bias} of σ_sample "
            f"| {len(sel)} | {100 * np.mean([r['hit'] for r in sel]):.0f} % "
            f"| {100 * np.mean([r['only'] for r in sel]):.0f} % | {sum(r['false'] for r in sel)} "
            f"| {shift} | {t_med} |"
        )
    if any(hetero.values()):
        print()
        print("Model error (plant as server/plant.py: per-pipe roughness and per-consumer demand factors):")
        print(
            "| σ used | trials | χ²/dof median | sensors flagged per estimate (median / max) "
            "| max demand-scale error (observable) | time median |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for label, rs in hetero.items():
            flags = [r["flags"] for r in rs]
            worst = max(rs, key=lambda r: r["demand_err"])
            print(
                f"| {label} | {len(rs)} | {statistics.median(r['chi2_dof'] for r in rs):.1f} "
                f"| {statistics.median(flags):.0f} / {max(flags)} "
                f"| {_pct(worst['demand_err'])} ({worst['worst']}) "
                f"| {statistics.median(r['t'] for r in rs):.2f} s |"
            )


if __name__ == "__main__":
    main()
