"""Pressure management (DSS-1): the schedule lowers pressure and, re-simulated, keeps every minimum.

A two-level synthetic town (a 3-bar medium-pressure grid fed by sources, two low-pressure
districts behind regulators at 3 kPa) over a household day: 24 hourly demand vectors, the
design demand times 1.5 times the household hourly shape. Low-pressure consumers must keep
1.8 kPa; set-points stay within the low level (0–5 kPa). The schedule is checked with the plain
`solve_steady`, hour by hour — not with the optimiser's own batch.
"""

from __future__ import annotations

from dataclasses import replace

import jax.numpy as jnp
import numpy as np
import pytest

from server.twin_model import SHIPPED_LEVEL_MAX_PA_GAUGE
from twin_jax import (
    Consumer,
    NetworkDescription,
    Node,
    Pipe,
    Regulator,
    Source,
    Status,
    Valve,
    compile_network,
    solve_steady,
)
from twin_jax.demand import CATEGORIES as PROFILES
from twin_jax.demand import HOURLY_SHAPE, customer_value, daily_factor
from twin_jax.optimize import (
    Controls,
    OptimizeStatus,
    PressureProblem,
    delivery_minimum_pa_gauge,
    hourly_demands_kg_s,
    optimize_pressure,
    setpoint_bounds,
    zone_levels,
)
from twin_jax.synthetic import synthetic_city

LEVELS = {"low": (0.0, 5_000.0), "medium": (5_000.0, 300_000.0), "high": (300_000.0, 10_000_000.0)}
NIGHT, PEAK = 3, 19  # the household shape's lowest and highest hours


@pytest.fixture(scope="module")
def town():
    desc = synthetic_city(150, seed=5, low_pressure_districts=2, district_nodes=60)
    net = compile_network(desc)
    params = net.parameters()
    shape = HOURLY_SHAPE["household"] * 24
    demands = np.asarray(params.consumer_demand_kg_s)[None, :] * (1.5 * shape[:, None])
    p_min = delivery_minimum_pa_gauge(net, {"low": 1_800.0}, SHIPPED_LEVEL_MAX_PA_GAUGE)
    bounds = setpoint_bounds(net, LEVELS)
    schedule = optimize_pressure(net, params, demands, min_pressure_pa_gauge=p_min, bounds_pa_gauge=bounds)
    return net, params, demands, p_min, bounds, schedule


def _resimulate(net, params, demands, setpoints):
    """Gauge pressures [T, n_nodes] of each hour, solved alone with the plain solver."""
    out = []
    for h in range(len(demands)):
        prm = params._replace(
            consumer_demand_kg_s=jnp.asarray(demands[h]), setpoint_pa_gauge=jnp.asarray(setpoints[h])
        )
        res = solve_steady(net, prm)
        assert int(res.status) == Status.CONVERGED
        out.append(np.asarray(res.state.pressure_pa_abs) - net.ambient_pa)
    return np.array(out)


def _managed_length_weights(net) -> np.ndarray:
    ends = slice(0, net.n_pipes)
    w = (
        np.bincount(net.from_node[ends], weights=net.pipe_length_m, minlength=net.n_nodes)
        + np.bincount(net.to_node[ends], weights=net.pipe_length_m, minlength=net.n_nodes)
    ) / 2
    managed = np.isin(net.zone_of_node, net.zone_of_node[net.to_node[net.regulators]])
    return w * managed


def test_levels_and_minima_come_from_the_pressure_levels(town) -> None:
    net, _, _, p_min, bounds, _ = town
    levels = zone_levels(net, SHIPPED_LEVEL_MAX_PA_GAUGE)
    assert sorted(levels) == ["high", "low", "low"]  # the grid's sources sit at 298–302 kPa
    low = np.array([levels[z] == "low" for z in net.zone_of_node[net.consumer_node]])
    assert (p_min[low] == 1_800.0).all() and (p_min[~low] == 0.0).all()
    np.testing.assert_array_equal(bounds, [[0.0, 5_000.0], [0.0, 5_000.0]])


def test_schedule_lowers_the_mean_pressure(town) -> None:
    net, params, demands, _, _, schedule = town
    assert schedule.status == OptimizeStatus.CONVERGED, schedule.message
    assert schedule.converged
    assert schedule.setpoint_pa_gauge.shape == (24, net.n_regulators)
    assert (schedule.mean_pressure_after_pa < schedule.mean_pressure_before_pa).all()
    assert schedule.reduction_percent > 10.0
    # independently: fixed set-points against the schedule, plain solver, length-weighted means
    w = _managed_length_weights(net)
    fixed = _resimulate(net, params, demands, np.tile(np.asarray(params.setpoint_pa_gauge), (24, 1)))
    after = _resimulate(net, params, demands, schedule.setpoint_pa_gauge)
    mean_fixed, mean_after = fixed @ w / w.sum(), after @ w / w.sum()
    assert (mean_after < mean_fixed).all()
    np.testing.assert_allclose(mean_after, schedule.mean_pressure_after_pa, rtol=1e-9)
    np.testing.assert_allclose(mean_fixed, schedule.mean_pressure_before_pa, rtol=1e-9)
    reduction = 100.0 * (1.0 - mean_after.sum() / mean_fixed.sum())
    assert reduction == pytest.approx(schedule.reduction_percent, rel=1e-9)


def test_no_consumer_under_its_minimum_when_resimulated(town) -> None:
    net, params, demands, p_min, _, schedule = town
    gauge = _resimulate(net, params, demands, schedule.setpoint_pa_gauge)
    margin = gauge[:, net.consumer_node] - p_min[None, :]
    assert margin.min() >= 0.0
    # the schedule keeps the safety margin it aimed for (up to SLSQP's tolerance) and no more:
    # every hour some consumer sits right at minimum + margin
    worst = margin.min(axis=1)
    assert (worst >= schedule.margin_pa - 1.0).all()
    assert (worst <= schedule.margin_pa + 10.0).all()
    np.testing.assert_allclose(worst, schedule.min_margin_pa, atol=1e-6)
    # the binding node of each district is a consumer of that district at the lowest margin
    for h in (NIGHT, PEAK):
        for k, node in enumerate(schedule.critical_node[h]):
            assert node is not None and node.startswith(f"D{k}.")
            i = net.node_index[node]
            zone = net.consumer_node[net.zone_of_node[net.consumer_node] == net.zone_of_node[i]]
            assert gauge[h, i] == pytest.approx(gauge[h, zone].min(), abs=1e-6)


def test_setpoints_stay_within_their_bounds(town) -> None:
    _, _, _, _, bounds, schedule = town
    assert (schedule.setpoint_pa_gauge >= bounds[:, 0] - 1e-9).all()
    assert (schedule.setpoint_pa_gauge <= bounds[:, 1] + 1e-9).all()
    assert schedule.controlled.all()


def test_night_setpoints_are_lower_than_at_the_peak(town) -> None:
    _, _, demands, _, _, schedule = town
    assert demands[NIGHT].sum() < demands[PEAK].sum()
    sp = schedule.setpoint_pa_gauge
    assert (sp[NIGHT] < sp[PEAK] - 100.0).all()
    # and they follow the demand: hour by hour, more demand never gets a lower set-point
    order = np.argsort(demands.sum(axis=1))
    assert (np.diff(sp[order], axis=0) >= -1.0).all()


def test_objective_gradient_matches_finite_differences(town) -> None:
    net, params, demands, p_min, bounds, _ = town
    problem = PressureProblem(net, params, demands, min_pressure_pa_gauge=p_min, bounds_pa_gauge=bounds)
    x = problem.fixed_controls() - 400.0 * np.linspace(0.0, 1.0, 24)[:, None]
    grad = problem.gradient(x)
    assert grad.shape == (24, net.n_regulators)
    h = 5.0
    for t, k in [(0, 0), (NIGHT, 1), (PEAK, 0), (23, 1)]:
        up, down = x.copy(), x.copy()
        up[t, k] += h
        down[t, k] -= h
        fd = (problem.objective(up) - problem.objective(down)) / (2 * h)
        assert grad[t, k] == pytest.approx(fd, rel=1e-5)
        assert grad[t, k] > 0  # raising a set-point raises the mean
    # the soft-minimum constraints too: a district's constraint moves with its own set-point
    jac = problem.jacobian(x)
    base = problem.evaluate(x)["soft"]
    up = x.copy()
    up[PEAK, 1] += h
    fd = (problem.evaluate(up)["soft"][PEAK] - base[PEAK]) / h
    np.testing.assert_allclose(jac[PEAK, 1:, 1], fd, rtol=1e-4, atol=1e-6)


def test_unreachable_minimum_is_reported_not_raised(town) -> None:
    net, params, demands, p_min, bounds, _ = town
    heavy = demands * np.where(np.arange(24) == PEAK, 2.2, 1.0)[:, None]  # ~4.8 × the design demand
    schedule = optimize_pressure(net, params, heavy, min_pressure_pa_gauge=p_min, bounds_pa_gauge=bounds)
    assert schedule.status == OptimizeStatus.INFEASIBLE
    districts = set(net.zone_of_node[net.to_node[net.regulators]].tolist())
    assert set(schedule.infeasible) == {(PEAK, z) for z in districts}
    assert schedule.min_margin_pa[PEAK] < 0
    # the starved hour is held at the top of the range; the others are still optimised
    np.testing.assert_allclose(schedule.setpoint_pa_gauge[PEAK], bounds[:, 1], atol=1.0)
    assert (np.delete(schedule.min_margin_pa, PEAK) >= schedule.margin_pa[0] - 1.0).all()


def test_a_throttle_lowers_the_area_behind_it() -> None:
    """A regulator must hold 2.5 kPa at a critical consumer near it; the street behind a throttle
    needs only 1.8 kPa, so a half-closed throttle lowers the street's pressure further."""
    nodes = [Node(n) for n in ("IN", "B", "C", "D", "E", "F")]
    pipes = [
        Pipe("P1", "B", "C", 100.0, 0.1, 1e-5),
        Pipe("P2", "D", "E", 300.0, 0.1, 1e-5),
        Pipe("P3", "E", "F", 300.0, 0.1, 1e-5),
    ]
    desc = NetworkDescription(
        nodes=nodes,
        pipes=pipes,
        sources=[Source("S", "IN", 300_000.0)],
        valves=[Valve("V", "C", "D", 0.05, loss_coefficient=0.3)],
        regulators=[Regulator("R", "IN", "B", 3_000.0)],
        consumers=[
            Consumer("hospital", "C", 0.01, min_pressure_pa_gauge=2_500.0, critical=True),
            *(Consumer(f"house-{n}", n, 0.01, min_pressure_pa_gauge=1_800.0) for n in "DEF"),
        ],
    )
    net = compile_network(desc)
    params = net.parameters()
    demands = np.asarray(params.consumer_demand_kg_s)[None, :] * np.array([[0.3], [0.6], [1.0]])
    bounds = np.array([[0.0, 5_000.0]])
    # the throttle held open (bounds 1…1) against the throttle free to close: same problem shape
    alone = optimize_pressure(
        net,
        params,
        demands,
        bounds_pa_gauge=bounds,
        controls=Controls(throttles=["V"], opening_bounds=(1.0, 1.0)),
    )
    both = optimize_pressure(
        net,
        params,
        demands,
        bounds_pa_gauge=bounds,
        controls=Controls(throttles=["V"], opening_bounds=(0.05, 1.0)),
    )
    assert alone.converged and both.converged, (alone.message, both.message)
    assert (alone.valve_opening == 1.0).all()
    assert (both.valve_opening[:2] < 0.9).all()  # light load: the street needs less than the hospital
    assert (both.mean_pressure_after_pa[:2] < alone.mean_pressure_after_pa[:2] - 50.0).all()
    assert (both.mean_pressure_after_pa <= alone.mean_pressure_after_pa + 1.0).all()
    for h in range(len(demands)):  # re-simulated, every consumer keeps its minimum
        prm = params._replace(
            consumer_demand_kg_s=jnp.asarray(demands[h]),
            setpoint_pa_gauge=jnp.asarray(both.setpoint_pa_gauge[h]),
            valve_opening=jnp.asarray(both.valve_opening[h]),
        )
        res = solve_steady(net, prm)
        gauge = np.asarray(res.state.pressure_pa_abs) - net.ambient_pa
        assert (gauge[net.consumer_node] >= net.consumer_min_pa_gauge).all()
    assert replace(desc) == desc  # the description is untouched


def test_hourly_demands_spread_the_days_volume_over_the_hours() -> None:
    annual = np.array([1_000.0, 20_000.0])
    out = hourly_demands_kg_s(["household", "commercial"], annual, -10.0, 0.7)
    assert out.shape == (24, 2)
    for k, cat in enumerate(["household", "commercial"]):
        day_m3 = annual[k] * customer_value(PROFILES[cat], 1.0) * float(daily_factor(PROFILES[cat], -10.0))
        assert out[:, k].sum() * 3600.0 / 0.7 == pytest.approx(day_m3, rel=1e-12)
        assert np.argmax(out[:, k]) == np.argmax(HOURLY_SHAPE[cat])
