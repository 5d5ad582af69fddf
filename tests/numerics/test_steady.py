"""Steady solve on small networks kept as code: physics, supply, regulators, gradients, traces."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from twin_jax import (
    Consumer,
    FrictionLaw,
    NetworkDescription,
    NetworkError,
    Node,
    Physics,
    Pipe,
    Regulator,
    Source,
    Status,
    Valve,
    compile_network,
    solve_steady,
)

#   S ── p1 ── n1 ── p2 ── n2 ─┐
#               └── p3 ── n3 ──p4┘ (a loop)   n3 ── R ── d0 ── q1 ── d1 ── V ── d2 (low pressure)
NODES = [Node("S"), Node("n1"), Node("n2"), Node("n3", elevation_m=12.0), Node("d0", 12.0),
         Node("d1", 20.0), Node("d2", 25.0)]
PIPES = [Pipe("p1", "S", "n1", 1_200, 0.2, 1e-4), Pipe("p2", "n1", "n2", 900, 0.15, 1e-4),
         Pipe("p3", "n1", "n3", 700, 0.15, 1e-4), Pipe("p4", "n2", "n3", 500, 0.1, 1e-4),
         Pipe("q1", "d0", "d1", 300, 0.1, 1e-5), Pipe("q2", "d1", "d2x", 200, 0.08, 1e-5)]


def town(opening: float = 1.0, setpoint: float = 3_000.0, source: float = 300_000.0) -> NetworkDescription:
    nodes = [*NODES, Node("d2x", 25.0)]
    return NetworkDescription(
        nodes=nodes, pipes=PIPES, sources=[Source("grs", "S", source)],
        valves=[Valve("V", "d2x", "d2", 0.08, loss_coefficient=0.5, opening=opening)],
        regulators=[Regulator("R", "n3", "d0", setpoint)],
        consumers=[Consumer("c-n2", "n2", 0.25), Consumer("c-n3", "n3", 0.05),
                   Consumer("c-d1", "d1", 0.02, min_pressure_pa_gauge=1_800.0),
                   Consumer("c-d2", "d2", 0.01, min_pressure_pa_gauge=1_800.0, critical=True)])


def gauge(net, result) -> dict[str, float]:
    p = np.asarray(result.state.pressure_pa_abs) - net.ambient_pa
    return dict(zip(net.node_ids, p.tolist(), strict=True))


def test_solves_and_conserves_mass() -> None:
    net = compile_network(town())
    r = solve_steady(net, net.parameters())
    assert Status(int(r.status)) is Status.CONVERGED
    m = np.asarray(r.state.mass_flow_kg_s)
    flows = dict(zip(net.branch_ids, m.tolist(), strict=True))
    assert flows["p1"] == pytest.approx(0.33, rel=1e-9)  # everything comes through the first pipe
    assert flows["R"] == pytest.approx(0.03, rel=1e-9)
    assert flows["p2"] + flows["p3"] == pytest.approx(0.33, rel=1e-9)
    p = gauge(net, r)
    assert p["d0"] == pytest.approx(3_000.0, abs=0.05)  # the regulator holds its set-point
    assert 300_000 > p["n1"] > p["n2"] > 200_000
    assert p["d1"] < p["d0"] + 40  # friction wins over the uphill gain at this flow


def test_low_pressure_gas_gains_gauge_pressure_uphill_without_flow() -> None:
    desc = town()
    desc = NetworkDescription(desc.nodes, desc.pipes, desc.sources, desc.valves, desc.regulators,
                              [c for c in desc.consumers if not c.id.startswith("c-d")])
    net = compile_network(desc)
    p = gauge(net, solve_steady(net, net.parameters()))
    # (ρ_air − ρ_gas)·g·Δz with Δz = 13 m ≈ 0.5 kg/m³ · 9.81 · 13 ≈ 65 Pa
    gain = p["d2"] - p["d0"]
    assert 50.0 < gain < 80.0


def test_closed_valve_cuts_off_what_lies_behind_it() -> None:
    net = compile_network(town(opening=0.0))
    r = solve_steady(net, net.parameters())
    assert Status(int(r.status)) is Status.CONVERGED
    supplied = dict(zip(net.node_ids, np.asarray(r.state.supplied).tolist(), strict=True))
    assert not supplied["d2"] and supplied["d2x"] and supplied["d1"]
    flows = dict(zip(net.branch_ids, np.asarray(r.state.mass_flow_kg_s).tolist(), strict=True))
    assert flows["V"] == 0.0
    assert flows["R"] == pytest.approx(0.02, rel=1e-9)  # the cut-off consumer takes nothing
    assert gauge(net, r)["d2"] == pytest.approx(0.0, abs=1e-6)


def test_regulator_passes_the_inlet_through_when_it_is_too_low() -> None:
    net = compile_network(town(setpoint=3_000.0, source=2_500.0))
    params = net.parameters()._replace(consumer_demand_kg_s=jnp.asarray([0.001, 0.001, 0.001, 0.001]))
    r = solve_steady(net, params)
    assert Status(int(r.status)) is Status.CONVERGED
    p = gauge(net, r)
    assert p["d0"] < 2_700.0  # the inlet (2.5 kPa plus the uphill gain), not the 3 kPa set-point
    assert p["d0"] == pytest.approx(p["n3"], abs=1.0)


def test_throttled_valve_loses_more_pressure_than_an_open_one() -> None:
    net = compile_network(town())
    base = net.parameters()
    open_ = gauge(net, solve_steady(net, base))
    throttled = gauge(net, solve_steady(net, base._replace(valve_opening=jnp.asarray([0.2]))))
    assert throttled["d2"] < open_["d2"] - 1.0
    assert throttled["d1"] == pytest.approx(open_["d1"], abs=1e-6)  # upstream of it: unchanged


def test_friction_laws_agree_roughly_and_differ_exactly() -> None:
    results = {}
    for law in FrictionLaw:
        net = compile_network(town(), Physics(friction=law))
        results[law] = gauge(net, solve_steady(net, net.parameters()))["n2"]
    drops = {law: 300_000 - v for law, v in results.items()}
    assert max(drops.values()) / min(drops.values()) < 1.25
    assert len(set(results.values())) == len(FrictionLaw)


def test_bad_description_lists_every_problem() -> None:
    desc = NetworkDescription(
        nodes=[Node("a"), Node("a"), Node("b")],
        pipes=[Pipe("p", "a", "zz", -5, 0.1, 1e-4), Pipe("q", "b", "b", 10, 0.1, 1e-4)],
        sources=[], valves=[Valve("v", "a", "b", 0.1, opening=1.5)])
    with pytest.raises(NetworkError) as err:
        compile_network(desc)
    text = "; ".join(err.value.problems)
    for fragment in ("a: duplicate node id", "p: to_node 'zz'", "p: length_m", "q: pipe starts and ends",
                     "v: opening", "no source"):
        assert fragment in text


def test_one_trace_serves_every_scenario() -> None:
    net = compile_network(town())
    base = net.parameters()

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def lowest(params):
        r = solve_steady(net, params)
        return jnp.min(r.state.pressure_pa_abs - net.ambient_pa), r.status

    for change in (base, base._replace(valve_opening=jnp.asarray([0.0])),
                   base._replace(setpoint_pa_gauge=jnp.asarray([2_500.0])),
                   base._replace(consumer_demand_kg_s=base.consumer_demand_kg_s * 1.3),
                   base._replace(roughness_m=base.roughness_m * 2)):
        _, status = lowest(change)
        assert int(status) == Status.CONVERGED


def test_vmap_matches_single_solves() -> None:
    net = compile_network(town())
    base = net.parameters()
    factors = jnp.asarray([0.5, 1.0, 1.5])
    batched = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (3, *jnp.shape(x))), base)
    batched = batched._replace(consumer_demand_kg_s=base.consumer_demand_kg_s[None] * factors[:, None])
    many = jax.vmap(lambda prm: solve_steady(net, prm))(batched)
    for k in range(3):
        one = solve_steady(net, base._replace(consumer_demand_kg_s=base.consumer_demand_kg_s * factors[k]))
        np.testing.assert_allclose(many.state.pressure_pa_abs[k], one.state.pressure_pa_abs, rtol=1e-12)


FIELDS = ["consumer_demand_kg_s", "setpoint_pa_gauge", "roughness_m", "source_pressure_pa_gauge",
          "valve_opening"]


@pytest.fixture(scope="module")
def gradient_case():
    """A network with a throttled valve, an objective, and its gradient in every parameter."""
    net = compile_network(town(opening=0.7))
    base = net.parameters()
    weights = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, net.n_nodes))

    def objective(prm) -> jnp.ndarray:  # a weighted sum of gauge pressures and one flow
        r = solve_steady(net, prm)
        return jnp.sum(weights * (r.state.pressure_pa_abs - net.ambient_pa)) + 1e3 * r.state.mass_flow_kg_s[2]

    return base, objective, jax.grad(objective)(base)


@pytest.mark.parametrize("field", FIELDS)
def test_gradients_agree_with_finite_differences(field: str, gradient_case) -> None:
    base, objective, full_grad = gradient_case
    grad = getattr(full_grad, field)
    x0 = np.asarray(getattr(base, field))
    assert x0.size > 0
    for k in range(x0.size):
        h = 1e-6 * max(abs(x0[k]), 1e-3)
        up = base._replace(**{field: jnp.asarray(x0).at[k].add(h)})
        down = base._replace(**{field: jnp.asarray(x0).at[k].add(-h)})
        fd = (float(objective(up)) - float(objective(down))) / (2 * h)
        assert abs(fd) > 0 or field == "consumer_demand_kg_s"
        assert float(grad[k]) == pytest.approx(fd, rel=1e-4, abs=1e-6 * max(1.0, abs(fd))), (field, k)


@pytest.mark.parametrize("law", list(FrictionLaw))
def test_closed_form_partials_equal_autodiff(law: FrictionLaw) -> None:
    from twin_jax.solve import _branch_residual_on_ends, _linearized

    # hills, a low-pressure zone (incompressible pipes), a throttled valve, a regulator
    net = compile_network(town(opening=0.6), Physics(friction=law))
    params = net.parameters()
    r = solve_steady(net, params)
    rng = np.random.default_rng(1)
    m = r.state.mass_flow_kg_s * jnp.asarray(rng.uniform(0.5, 1.5, net.n_branches))
    m = m.at[1].set(1e-7)  # a nearly stagnant pipe: the laminar branch
    p = r.state.pressure_pa_abs + jnp.asarray(rng.uniform(-50.0, 50.0, net.n_nodes))
    f, f_m, f_pf, f_pt = _linearized(net, params, m, p)

    def total(m_, pf_, pt_):
        f_ = _branch_residual_on_ends(net, params, m_, pf_, pt_)
        return jnp.sum(f_), f_

    (g_m, g_pf, g_pt), f_ad = jax.grad(total, argnums=(0, 1, 2), has_aux=True)(
        m, p[net.from_node], p[net.to_node])
    np.testing.assert_allclose(f, f_ad, rtol=1e-12, atol=1e-9)
    for closed_form, autodiff in ((f_m, g_m), (f_pf, g_pf), (f_pt, g_pt)):
        np.testing.assert_allclose(closed_form, autodiff, rtol=1e-9, atol=1e-12)
