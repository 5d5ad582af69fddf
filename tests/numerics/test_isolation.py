"""Burst isolation on hand-made networks, and cross-checks against an independent BFS on a city."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import jax.numpy as jnp
import numpy as np
import pytest

from twin_jax import (
    CompiledNetwork,
    Consumer,
    NetworkDescription,
    Node,
    Pipe,
    Regulator,
    Source,
    Valve,
    compile_network,
)
from twin_jax.isolation import IsolationIndex, IsolationPlan
from twin_jax.solve import supplied_nodes
from twin_jax.synthetic import synthetic_city


def build(pipes: Iterable[tuple[str, str, str]], *, sources: Iterable[str] = ("S",),
          valves: Iterable[tuple[str, str, str, bool]] = (), regulators: Iterable[tuple[str, str, str]] = (),
          consumers: Iterable[tuple[str, str, bool]] = (), closed: Iterable[str] = ()) -> CompiledNetwork:
    """A network from (id, from, to) pipes, (id, from, to, operable) valves, (id, inlet, outlet)
    regulators and (id, node, critical) consumers; nodes are whatever these name."""
    pipes, valves, regulators, consumers = list(pipes), list(valves), list(regulators), list(consumers)
    sources, closed = list(sources), set(closed)
    names: dict[str, None] = {}
    for _, a, b in pipes:
        names |= {a: None, b: None}
    for _, a, b, _ in valves:
        names |= {a: None, b: None}
    for _, a, b in regulators:
        names |= {a: None, b: None}
    names |= {n: None for n in sources}
    return compile_network(NetworkDescription(
        nodes=[Node(n) for n in names],
        pipes=[Pipe(pid, a, b, 100.0, 0.1, 1e-4) for pid, a, b in pipes],
        sources=[Source(f"src-{n}", n, 300_000.0) for n in sources],
        valves=[Valve(vid, a, b, 0.1, operable=op, opening=0.0 if vid in closed else 1.0)
                for vid, a, b, op in valves],
        regulators=[Regulator(rid, a, b, 3_000.0) for rid, a, b in regulators],
        consumers=[Consumer(cid, n, 0.01, critical=crit) for cid, n, crit in consumers]))


# S ─p0─ A ─V1─ B ─pb─ C ─V2─ D ─pd─ E          C ─RX─ X1 ─px─ X2 (a district fed only from C)
#        └─pl1─ F ─pl2─ G ─pl3───────┘ (the loop keeps D and E fed)
def looped() -> CompiledNetwork:
    return build(
        [("p0", "S", "A"), ("pb", "B", "C"), ("pd", "D", "E"), ("pl1", "A", "F"), ("pl2", "F", "G"),
         ("pl3", "G", "E"), ("px", "X1", "X2")],
        valves=[("V1", "A", "B", True), ("V2", "C", "D", True)],
        regulators=[("RX", "C", "X1")],
        consumers=[("c-B", "B", False), ("c-C", "C", False), ("c-D", "D", False), ("c-E", "E", False),
                   ("c-X2", "X2", True)])


def test_burst_between_two_operable_valves_closes_exactly_those() -> None:
    plan = IsolationIndex(looped()).plan("pb")
    assert isinstance(plan, IsolationPlan)
    assert plan.feasible and plan.reason == ""
    assert plan.valves_to_close == ["V1", "V2"]
    assert plan.regulators_to_shut == []  # RX leaves the region: gas cannot come back through it
    assert plan.isolated_pipes == ["pb"]
    assert plan.inoperable_valves_crossed == []
    # B and C go, and with them the district only C feeds; D and E stay fed around the loop.
    assert plan.cut_off_nodes == ["B", "C", "X1", "X2"]
    assert plan.cut_off_consumers == ["c-B", "c-C", "c-X2"]
    assert plan.critical_cut_off == ["c-X2"]


def test_burst_in_a_district_shuts_the_regulator_feeding_it() -> None:
    plan = IsolationIndex(looped()).plan("px")
    assert plan.feasible
    assert plan.valves_to_close == []
    assert plan.regulators_to_shut == ["RX"]
    assert plan.cut_off_consumers == ["c-X2"] and plan.critical_cut_off == ["c-X2"]


def test_valves_already_closed_need_no_action() -> None:
    index = IsolationIndex(looped())
    plan = index.plan("pb", closed_valves=["V2"])
    assert plan.valves_to_close == ["V1"]
    assert plan.cut_off_consumers == ["c-B", "c-C", "c-X2"]
    # The description's own closed valves count as closed too.
    net = build([("p0", "S", "A"), ("pb", "B", "C"), ("pd", "D", "E"), ("pl1", "A", "E")],
                valves=[("V1", "A", "B", True), ("V2", "C", "D", True)], closed=["V2"],
                consumers=[("c-C", "C", False)])
    plan = IsolationIndex(net).plan("pb")
    assert plan.valves_to_close == ["V1"] and plan.cut_off_consumers == ["c-C"]


def test_inoperable_valve_grows_the_region_to_the_next_valve() -> None:
    # S ─p0─ A ─V1─ B ─pb─ C ─V2(seized)─ D ─pd─ E ─V3─ F ─pr2─ R1 ─pr1─ S
    net = build(
        [("p0", "S", "A"), ("pb", "B", "C"), ("pd", "D", "E"), ("pr1", "S", "R1"), ("pr2", "R1", "F")],
        valves=[("V1", "A", "B", True), ("V2", "C", "D", False), ("V3", "E", "F", True)],
        consumers=[("c-C", "C", False), ("c-E", "E", False), ("c-R1", "R1", False)])
    plan = IsolationIndex(net).plan("pb")
    assert plan.feasible
    assert plan.valves_to_close == ["V1", "V3"]
    assert plan.isolated_pipes == ["pb", "pd"]
    assert plan.inoperable_valves_crossed == ["V2"]
    assert plan.cut_off_consumers == ["c-C", "c-E"]


def test_regulator_feeding_the_region_is_shut_and_a_dead_end_beyond_is_cut_off() -> None:
    # S ─p0─ A ─R─ L1 ─pl─ L2 ─V1─ L3 ─pl3─ L4 (a low-pressure dead end behind the burst)
    pipes = [("p0", "S", "A"), ("pl", "L1", "L2"), ("pl3", "L3", "L4")]
    consumers = [("c-L2", "L2", False), ("c-L4", "L4", True), ("c-A", "A", False)]
    plan = IsolationIndex(build(pipes, valves=[("V1", "L2", "L3", True)], regulators=[("R", "A", "L1")],
                                consumers=consumers)).plan("pl")
    assert plan.feasible
    assert plan.regulators_to_shut == ["R"]
    assert plan.valves_to_close == []  # nothing beyond V1 feeds the region: closing it is not needed
    assert plan.cut_off_consumers == ["c-L2", "c-L4"]
    assert plan.critical_cut_off == ["c-L4"]
    # A second regulator feeding L4 makes V1 a boundary that must close, and keeps L4 supplied.
    plan = IsolationIndex(build(pipes, valves=[("V1", "L2", "L3", True)],
                                regulators=[("R", "A", "L1"), ("R2", "A", "L4")],
                                consumers=consumers)).plan("pl")
    assert plan.regulators_to_shut == ["R"] and plan.valves_to_close == ["V1"]
    assert plan.cut_off_consumers == ["c-L2"] and plan.critical_cut_off == []


def test_burst_in_a_source_segment_cannot_be_isolated_by_valves() -> None:
    plan = IsolationIndex(looped()).plan("pl2")
    assert not plan.feasible
    assert "src-S" in plan.reason and "pl2" in plan.reason
    assert plan.valves_to_close == [] and plan.cut_off_consumers == []
    # Growing across a seized valve into the source segment is just as hopeless.
    net = build([("p0", "S", "A"), ("pb", "B", "C")], valves=[("V1", "A", "B", False)])
    plan = IsolationIndex(net).plan("pb")
    assert not plan.feasible and "V1" in plan.reason and "src-S" in plan.reason


def test_unknown_ids_are_named_in_the_error() -> None:
    index = IsolationIndex(looped())
    with pytest.raises(KeyError, match="no-such-pipe"):
        index.plan("no-such-pipe")
    with pytest.raises(KeyError, match="V1.*valve"):
        index.plan("V1")
    with pytest.raises(KeyError, match="V9"):
        index.plan("pb", closed_valves=["V9"])
    with pytest.raises(KeyError, match="R9"):
        index.unsupplied(shut_regulators=["R9"])


def test_unsupplied_follows_valves_and_regulator_direction() -> None:
    index = IsolationIndex(looped())
    assert index.unsupplied() == ([], [])
    assert index.unsupplied(["V1"]) == ([], [])  # C is still fed through V2
    assert index.unsupplied(["V1", "V2"]) == (["B", "C", "X1", "X2"], ["c-B", "c-C", "c-X2"])
    assert index.unsupplied((), ["RX"]) == (["X1", "X2"], ["c-X2"])


# --------------------------------------------------------------------------------------------
# Cross-checks on a synthetic city with valves


def with_valves(desc: NetworkDescription, fraction: float, seed: int) -> NetworkDescription:
    """`desc` with `fraction` of its pipes turned into valves, a quarter of them inoperable."""
    rng = np.random.default_rng(seed)
    pick = rng.random(len(desc.pipes)) < fraction
    stuck = rng.random(len(desc.pipes)) < 0.25
    pipes = [p for p, v in zip(desc.pipes, pick, strict=True) if not v]
    valves = [Valve(p.id, p.from_node, p.to_node, diameter_m=p.diameter_m, operable=not s)
              for p, v, s in zip(desc.pipes, pick, stuck, strict=True) if v]
    return NetworkDescription(nodes=desc.nodes, pipes=pipes, sources=desc.sources, valves=valves,
                              regulators=desc.regulators, consumers=desc.consumers, gas=desc.gas)


def reached(net: CompiledNetwork, closed: set[str], shut: set[str]) -> np.ndarray:
    """Bool per node, by plain BFS over nodes: pipes and open valves both ways, regulators forward."""
    adj: list[list[int]] = [[] for _ in range(net.n_nodes)]
    open_branch = ([True] * net.n_pipes + [v not in closed for v in net.valve_ids]
                   + [r not in shut for r in net.regulator_ids])
    n_two_way = net.n_pipes + net.n_valves
    for k, (a, b) in enumerate(zip(net.from_node.tolist(), net.to_node.tolist(), strict=True)):
        if open_branch[k]:
            adj[a].append(b)
            if k < n_two_way:
                adj[b].append(a)
    seen = np.zeros(net.n_nodes, dtype=bool)
    seen[net.source_node] = True
    queue = deque(net.source_node.tolist())
    while queue:
        for v in adj[queue.popleft()]:
            if not seen[v]:
                seen[v] = True
                queue.append(v)
    return seen


@pytest.fixture(scope="module")
def city() -> CompiledNetwork:
    desc = synthetic_city(2_000, seed=3, low_pressure_districts=3, district_nodes=40)
    return compile_network(with_valves(desc, 0.15, seed=4))


def test_plans_agree_with_an_independent_bfs(city: CompiledNetwork) -> None:
    net, index = city, IsolationIndex(city)
    assert reached(net, set(), set()).all()  # the baseline city is fully supplied
    rng = np.random.default_rng(5)
    pipe_of = {pid: k for k, pid in enumerate(net.pipe_ids)}
    operable = dict(zip(net.valve_ids, net.valve_operable.tolist(), strict=True))
    feasible = grown = 0
    for pipe_id in rng.choice(net.pipe_ids, size=20, replace=False).tolist():
        plan = index.plan(pipe_id)
        ends = [int(net.from_node[pipe_of[pipe_id]]), int(net.to_node[pipe_of[pipe_id]])]
        if not plan.feasible:
            # Pipes and seized valves alone join the burst pipe to a source.
            seized = {v for v, op in operable.items() if not op}
            stuck_net = reached(net, {v for v in net.valve_ids if v not in seized}, set(net.regulator_ids))
            assert stuck_net[ends].all(), pipe_id
            continue
        feasible += 1
        grown += bool(plan.inoperable_valves_crossed)
        closed, shut = set(plan.valves_to_close), set(plan.regulators_to_shut)
        assert all(operable[v] for v in closed)
        after = reached(net, closed, shut)
        assert not after[ends].any(), pipe_id
        for v in closed:  # every valve is needed: re-opening any one feeds the burst again
            assert reached(net, closed - {v}, shut)[ends].all(), (pipe_id, v)
        for r in shut:
            assert reached(net, closed, shut - {r})[ends].all(), (pipe_id, r)
        lost = {cid for cid, n in zip(net.consumer_ids, net.consumer_node.tolist(), strict=True)
                if not after[n]}
        assert set(plan.cut_off_consumers) == lost, pipe_id
        assert set(plan.cut_off_nodes) == {nid for nid, ok in zip(net.node_ids, after, strict=True) if not ok}
        assert plan.isolated_pipes and pipe_id in plan.isolated_pipes
    assert feasible >= 10 and grown >= 3  # the sample exercises growth across seized valves


def test_unsupplied_agrees_with_the_solver_supply_mask(city: CompiledNetwork) -> None:
    net, index = city, IsolationIndex(city)
    rng = np.random.default_rng(6)
    base = net.parameters()
    for _ in range(4):
        closed = rng.random(net.n_valves) < 0.15
        shut = rng.random(net.n_regulators) < 0.3
        params = base._replace(
            valve_opening=jnp.where(jnp.asarray(closed), 0.0, base.valve_opening),
            regulator_in_service=jnp.where(jnp.asarray(shut), 0.0, base.regulator_in_service))
        expected = np.asarray(supplied_nodes(net, params))
        closed_ids = [v for v, c in zip(net.valve_ids, closed, strict=True) if c]
        shut_ids = [r for r, s in zip(net.regulator_ids, shut, strict=True) if s]
        np.testing.assert_array_equal(index.supplied_mask(closed_ids, shut_ids), expected)
        nodes, consumers = index.unsupplied(closed_ids, shut_ids)
        assert nodes == sorted(np.asarray(net.node_ids)[~expected].tolist())
        assert consumers == sorted(np.asarray(net.consumer_ids)[~expected[net.consumer_node]].tolist())
        np.testing.assert_array_equal(expected, reached(net, set(closed_ids), set(shut_ids)))
