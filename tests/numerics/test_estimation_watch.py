"""The live loop's state estimation (`server/estimation_watch.py`) on the small town of
`test_estimation`: cycles of noisy readings in, a window's estimate out — the hidden demand
scales recovered where observable, a gauge that reads 600 Pa high named and left out."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from server.estimation_watch import EstimationWatch
from tests.numerics.test_estimation import LOAD, TRUTH, _district, town  # noqa: F401  (fixture)
from twin_jax import solve_steady

CYCLES = 20
BIASED_NODE_PA = 600.0


def _watch(town) -> tuple[EstimationWatch, np.ndarray, list[str]]:  # noqa: F811
    net, params, groups = town
    base = solve_steady(net, params)
    infeeds = {int(i) for i in net.source_node}
    nodes = [k for k in range(net.n_nodes) if k not in infeeds]
    pressure = [(f"gauge/{net.node_ids[k]}/p", k, False) for k in nodes]
    flows = [(f"station/{r}/flow", r) for r in net.regulator_ids]
    rho = 0.7  # kg/m³ at the meters' standard conditions: any fixed factor will do here
    watch = EstimationWatch(net, base.state, consumer_area=[_district(c) for c in net.consumer_ids],
                            pipe_area=[_district(p) for p in net.pipe_ids], pressure_sensors=pressure,
                            flow_sensors=flows, flow_m3h_to_kg_s=rho / 3600.0, every_s=60.0)
    assert watch.groups.names == groups.names
    return watch, np.array(nodes), [p for p, _, _ in pressure]


def _plant(town, watch: EstimationWatch):  # noqa: F811
    net, params, _ = town
    from twin_jax.estimation import ParameterGroups

    g = ParameterGroups.from_labels([_district(c) for c in net.consumer_ids],
                                    [_district(p) for p in net.pipe_ids])
    truth = np.log(np.array([TRUTH[n] for n in g.names]))
    d, r = g.slots()
    ext = np.concatenate([truth, [0.0]])
    hidden = params._replace(consumer_demand_kg_s=params.consumer_demand_kg_s * np.exp(ext[d]),
                             roughness_m=params.roughness_m * np.exp(ext[r]))
    plant = solve_steady(net, hidden)
    assert int(plant.status) == 0
    return plant.state


def _feed(town, watch, nodes, paths, *, bias: dict[str, float]) -> None:  # noqa: F811
    net = town[0]
    state = _plant(town, watch)
    gauge = np.asarray(state.pressure_pa_abs)[nodes] - net.ambient_pa[nodes]
    flow_m3h = np.asarray(state.mass_flow_kg_s)[net.regulators] / watch.to_kg_s
    rng = np.random.default_rng(7)
    for k in range(CYCLES):
        noise = np.where(gauge < 10_000, 50.0, 300.0) * rng.normal(size=len(nodes))
        reading = {p: float(v) + bias.get(p, 0.0) for p, v in zip(paths, gauge + noise, strict=True)}
        reading |= {f"station/{r}/flow": float(q * (1 + 0.01 * rng.normal()))
                    for r, q in zip(net.regulator_ids, flow_m3h, strict=True)}
        watch.add(reading, 1_000.0 + 10.0 * k)


def test_a_window_recovers_the_demands_and_names_the_gauge_that_reads_high(town) -> None:  # noqa: F811
    watch, nodes, paths = _watch(town)
    low = [p for p, k in zip(paths, nodes, strict=True) if _district(town[0].node_ids[k]) == "D0"]
    bad = low[len(low) // 2]
    _feed(town, watch, nodes, paths, bias={bad: BIASED_NODE_PA})
    assert not watch.due(1_059.0)  # the window began at the first cycle, 1,000 s
    assert watch.due(1_060.0)
    window = watch.take_window()
    assert window.shape == (CYCLES, len(paths) + len(town[0].regulator_ids))
    assert not watch.samples and not watch.due(10_000.0)  # the next window starts empty
    at = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
    est = watch.estimate(town[1], window, at)
    assert est.converged and est.at == at and est.cycles == CYCLES
    assert [s.path for s in est.bad_sensors] == [bad]
    assert est.bad_sensors[0].normalized_residual > 4.0
    assert est.bad_sensors[0].residual == pytest.approx(BIASED_NODE_PA, abs=150.0)
    factors = {f.name: f for f in est.factors}
    for name in ("demand:D0", "demand:D1", "demand:MP"):
        assert factors[name].observable, factors[name]
        assert factors[name].factor == pytest.approx(TRUTH[name], rel=0.1), name
    assert est.chi2_per_dof is not None and est.chi2_per_dof < 3.0
    assert watch.latest is est


def test_a_clean_window_flags_nothing(town) -> None:  # noqa: F811
    watch, nodes, paths = _watch(town)
    _feed(town, watch, nodes, paths, bias={})
    est = watch.estimate(town[1], watch.take_window(), dt.datetime(2026, 12, 4, tzinfo=dt.UTC))
    assert est.converged and est.bad_sensors == []
    assert not est.missing_sensors
