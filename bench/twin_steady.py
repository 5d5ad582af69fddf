"""Steady-state solve of the JAX twin against pandapipes' `pipeflow` on the same networks.

Run: `.venv/bin/python bench/twin_steady.py` (about 4 minutes; `--sizes 1000 10000` for a
quick look, `--sizes ... 100000` to add the largest).

Networks: `twin_jax.synthetic.synthetic_city(n)` — a medium-pressure street grid, a random
spanning tree plus one loop per ~16 nodes, one infeed per 2,500 nodes (at least 3), a demand
at every node, pipes sized by the flow they carry; Colebrook–White friction, pandapipes' hgas
gas and compressibility model on both sides (squared-pressure form everywhere).

Per size: pandapipes `pipeflow` (hydraulics, no numba — the anchor of the issue; tolerances
1e-8) warm (a second call on the built net, so pandas setup of the first call is excluded as
far as pandapipes allows); ours compiled once (reported separately), then the best and median
of several warm solves from scratch (no warm start); Newton iterations of both; the largest
pressure difference between the two, as a share of the network's pressure drop. Then a batch
of 256 scenarios (demand factors 0.6–1.4 and set-point changes) through `jax.vmap` on the 1k
network, and the gradient of the lowest pressure with respect to all demands.
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

from tests.numerics._pandapipes import reference_gas, run_pandapipes, to_pandapipes  # noqa: E402
from twin_jax import FrictionLaw, Physics, Status, compile_network, solve_steady  # noqa: E402
from twin_jax.synthetic import synthetic_city  # noqa: E402


def timed(fn, repeat: int) -> list[float]:
    """Wall seconds of `repeat` calls (results blocked on)."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return out


def one_size(n: int, repeat: int) -> dict:
    """pandapipes against ours on one synthetic city of n nodes."""
    gas = reference_gas()
    desc = synthetic_city(n, seed=1, gas=gas)
    t0 = time.perf_counter()
    net = compile_network(desc, Physics(friction=FrictionLaw.COLEBROOK, low_pressure_incompressible=False))
    compile_net_s = time.perf_counter() - t0
    params = net.parameters()
    t0 = time.perf_counter()
    result = jax.block_until_ready(solve_steady(net, params))
    first_s = time.perf_counter() - t0
    ours = timed(lambda: solve_steady(net, params), repeat)

    pp_net, junction = to_pandapipes(desc)
    pp_times = []
    for _ in range(2 if n >= 50_000 else 3):
        t0 = time.perf_counter()
        run_pandapipes(pp_net, "colebrook", tol=1e-8)
        pp_times.append(time.perf_counter() - t0)
    pp_iter = int(pp_net["_internal_results"].get("iterations_hydraulics", -1))
    gauge = np.asarray(result.state.pressure_pa_abs) - net.ambient_pa
    ref = pp_net.res_junction.p_bar.to_numpy()[[junction[i] for i in net.node_ids]] * 1e5
    drop = gauge.max() - gauge.min()
    return {
        "n": n, "branches": net.n_branches, "loops": net.n_branches - net.n_nodes + len(net.source_ids),
        "pp_warm_s": min(pp_times[1:]), "pp_first_s": pp_times[0], "pp_iterations": pp_iter,
        "compile_s": compile_net_s, "jit_first_s": first_s, "ours_best_s": min(ours),
        "ours_median_s": statistics.median(ours), "iterations": int(result.iterations),
        "status": Status(int(result.status)).name, "max_diff_pa": float(np.abs(gauge - ref).max()),
        "drop_pa": float(drop),
    }


def batch(n: int, scenarios: int, repeat: int) -> dict:
    """`vmap` of `scenarios` demand/set-point scenarios on an n-node network."""
    desc = synthetic_city(n, seed=2, low_pressure_districts=2, district_nodes=50, gas=reference_gas())
    net = compile_network(desc, Physics(friction=FrictionLaw.COLEBROOK))
    base = net.parameters()
    rng = np.random.default_rng(0)
    factor = jnp.asarray(rng.uniform(0.6, 1.4, scenarios))
    dsp = jnp.asarray(rng.uniform(-500.0, 500.0, (scenarios, net.n_regulators)))
    batched = base._replace(
        consumer_demand_kg_s=base.consumer_demand_kg_s[None, :] * factor[:, None],
        extra_demand_kg_s=jnp.broadcast_to(base.extra_demand_kg_s, (scenarios, net.n_nodes)),
        source_pressure_pa_gauge=jnp.broadcast_to(base.source_pressure_pa_gauge,
                                                  (scenarios, len(net.source_ids))),
        setpoint_pa_gauge=base.setpoint_pa_gauge[None, :] + dsp,
        regulator_in_service=jnp.broadcast_to(base.regulator_in_service, (scenarios, net.n_regulators)),
        valve_opening=jnp.broadcast_to(base.valve_opening, (scenarios, net.n_valves)),
        roughness_m=jnp.broadcast_to(base.roughness_m, (scenarios, net.n_pipes)),
        temperature_k=jnp.broadcast_to(base.temperature_k, (scenarios,)),
    )
    run = jax.jit(jax.vmap(lambda prm: solve_steady(net, prm)))
    t0 = time.perf_counter()
    res = jax.block_until_ready(run(batched))
    first_s = time.perf_counter() - t0
    times = timed(lambda: run(batched), repeat)
    one = timed(lambda: solve_steady(net, base), repeat)

    def lowest(prm):
        r = solve_steady(net, prm)
        return jnp.min(r.state.pressure_pa_abs - net.ambient_pa)

    grad = jax.jit(jax.grad(lowest))
    jax.block_until_ready(grad(base))
    g_times = timed(lambda: grad(base), repeat)
    return {"n": net.n_nodes, "scenarios": scenarios, "batch_first_s": first_s, "batch_best_s": min(times),
            "single_best_s": min(one), "converged": int(jnp.sum(res.status == 0)),
            "grad_best_s": min(g_times)}


def main() -> None:
    """Run and print a Markdown table for bench/RESULTS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--scenarios", type=int, default=256)
    args = ap.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"jax {jax.__version__}, {time.strftime('%Y-%m-%d')}")
    print("| nodes | loops | pandapipes warm s | iters | ours warm s (best / median) | iters | speed-up "
          "| compile s (network / jit) | max |Δp| Pa | share of drop |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        r = one_size(n, args.repeat)
        print(f"| {r['n']:,} | {r['loops']:,} | {r['pp_warm_s']:.3f} | {r['pp_iterations']} "
              f"| {r['ours_best_s'] * 1e3:.1f} ms / {r['ours_median_s'] * 1e3:.1f} ms | {r['iterations']} "
              f"| {r['pp_warm_s'] / r['ours_best_s']:.0f}× | {r['compile_s']:.2f} / {r['jit_first_s']:.2f} "
              f"| {r['max_diff_pa']:.2e} | {r['max_diff_pa'] / r['drop_pa']:.1e} |", flush=True)
    b = batch(1_000, args.scenarios, args.repeat)
    print(f"\nvmap batch: {b['scenarios']} scenarios on {b['n']:,} nodes (with 2 low-pressure districts): "
          f"{b['batch_best_s']:.3f} s warm ({b['batch_first_s']:.1f} s first call incl. jit), "
          f"{b['converged']}/{b['scenarios']} converged; "
          f"one scenario alone {b['single_best_s'] * 1e3:.1f} ms; "
          f"gradient of the lowest pressure w.r.t. all parameters {b['grad_best_s'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
