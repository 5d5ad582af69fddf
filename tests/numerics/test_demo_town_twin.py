"""The twin's what-ifs on the demo town, cross-checked against a breadth-first search of the records.

The demo town (one GRS, a medium-pressure ring with sectioning valves, 14 GRP/ShRP districts,
~20,000 service points) is compiled once. Who loses gas when valves close or stations shut is
found twice: by the twin (`run_scenario`: its supply mask and solve) and by a plain BFS written
here from the registry records alone (pipes and open valves both ways, stations inlet → outlet,
from the source nodes). For bursts, the isolation plan (`IsolationIndex.plan`) is carried out
as a scenario: the consumers cut off must be the plan's, the BFS's and the twin's alike.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from erp.demo_town import generate_demo_town
from erp.services.registry import AssetRecord
from server.twin_model import SHIPPED_LEVEL_MAX_PA_GAUGE, description_from_records
from twin_jax import CompiledNetwork, Status, compile_network, solve_steady
from twin_jax.isolation import IsolationIndex
from twin_jax.scenario import ScenarioSpec, run_scenario


@dataclass
class Town:
    by_kind: Mapping[str, list[AssetRecord]]
    net: CompiledNetwork
    params: Any
    baseline: Any
    index: IsolationIndex

    def service_points(self, area: str | None = None) -> set[str]:
        return {r.id for r in self.by_kind["service_point"]
                if area is None or r.values.get("area_id") == area}

    def record(self, kind: str, rid: str) -> AssetRecord:
        return next(r for r in self.by_kind[kind] if r.id == rid)


@pytest.fixture(scope="module")
def town() -> Town:
    records = generate_demo_town().records
    live = [r for r in records if r.values.get("status") in (None, "in_service")]
    by_kind: dict[str, list[AssetRecord]] = defaultdict(list)
    for r in live:
        by_kind[r.kind].append(r)
    desc = description_from_records(records, level_max_pa_gauge=SHIPPED_LEVEL_MAX_PA_GAUGE)
    net = compile_network(desc)
    params = net.parameters()
    baseline = solve_steady(net, params)
    assert int(baseline.status) == Status.CONVERGED
    assert bool(np.asarray(baseline.state.supplied).all())
    return Town(by_kind, net, params, baseline, IsolationIndex(net))


def bfs_unsupplied(town: Town, closed_valves: Iterable[str] = (),
                   shut_stations: Iterable[str] = ()) -> tuple[set[str], set[str]]:
    """(nodes, service points) no source reaches, from the records alone."""
    closed, shut = set(closed_valves), set(shut_stations)
    by = town.by_kind
    adj: dict[str, list[str]] = defaultdict(list)
    for p in by["pipe"]:
        a, b = p.values["from_node_id"], p.values["to_node_id"]
        adj[a].append(b)
        adj[b].append(a)
    for v in by["valve"]:
        if v.id in closed or v.values.get("current_state", "open") != "open":
            continue
        a, b = v.values["from_node_id"], v.values["to_node_id"]
        adj[a].append(b)
        adj[b].append(a)
    for s in by["station"]:
        if s.id not in shut:
            adj[s.values["inlet_node_id"]].append(s.values["outlet_node_id"])  # one way
    for link in by["link"]:  # the demo town has none; a link would pass gas both ways
        adj[link.values["from_node_id"]].append(link.values["to_node_id"])
        adj[link.values["to_node_id"]].append(link.values["from_node_id"])
    sources = [n.id for n in by["node"] if n.values.get("kind") == "source"]
    assert sources
    seen, queue = set(sources), deque(sources)
    while queue:
        for nxt in adj[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    nodes = {n.id for n in by["node"]} - seen
    consumers = {sp.id for sp in by["service_point"] if sp.values["node_id"] not in seen}
    return nodes, consumers


def twin_unsupplied(town: Town, closed_valves: Sequence[str] = (),
                    shut_stations: Sequence[str] = ()) -> set[str]:
    outcome = run_scenario(town.net, town.params,
                           ScenarioSpec(valve_openings={v: 0.0 for v in closed_valves},
                                        regulators_shut=tuple(shut_stations)),
                           baseline=town.baseline)
    assert outcome.status == Status.CONVERGED, outcome.status.message
    assert outcome.unsupplied == sorted(outcome.unsupplied)
    assert set(outcome.critical_unsupplied) <= set(outcome.unsupplied)
    return set(outcome.unsupplied)


def test_closing_a_district_entry_valve_cuts_off_exactly_that_district(town: Town) -> None:
    valve = town.record("valve", "V-D06-07")
    assert valve.values["name"] == "GRP-06 district entry valve"
    assert valve.values["pressure_level"] == "medium"  # in front of the GRP, on the ring side
    _, expected = bfs_unsupplied(town, ["V-D06-07"])
    district = town.service_points("D06")
    assert expected == district and len(district) > 2_000  # the whole district, nothing else
    assert twin_unsupplied(town, ["V-D06-07"]) == expected


@pytest.mark.parametrize("valves", [
    ["V-D01-07"],              # GRP-01's outlet valve: the whole low-pressure district D01
    ["V-D10-04"],              # a branch valve: part of D10's streets
    ["V-D12-02", "V-MP-11"],   # a street of D12 and one industrial consumer's branch at once
])
def test_closed_valves_cut_off_what_a_graph_search_finds(town: Town, valves: list[str]) -> None:
    _, expected = bfs_unsupplied(town, valves)
    assert expected  # each closure takes gas from someone
    assert expected < town.service_points()
    assert twin_unsupplied(town, valves) == expected


def _burst_pipes(town: Town) -> list[str]:
    """Two sections of the medium-pressure ring (each between two sectioning valves, with the
    districts fed from it) and the middle pipe of districts of every size."""
    chosen = ["P-MP-007", "P-MP-020"]
    for area in ("D03", "D08", "D12", "D02"):
        ids = sorted(p.id for p in town.by_kind["pipe"] if p.values.get("area_id") == area)
        assert ids, area
        chosen.append(ids[len(ids) // 2])
    return chosen


def test_isolating_bursts_cuts_off_the_plans_consumers(town: Town) -> None:
    for pipe in _burst_pipes(town):
        plan = town.index.plan(pipe)
        assert plan.feasible, (pipe, plan.reason)
        assert plan.valves_to_close or plan.regulators_to_shut, pipe
        assert pipe in plan.isolated_pipes
        nodes, expected = bfs_unsupplied(town, plan.valves_to_close, plan.regulators_to_shut)
        # the burst is really cut off from gas: both its ends lose it
        p = town.record("pipe", pipe)
        assert {p.values["from_node_id"], p.values["to_node_id"]} <= nodes, pipe
        assert set(plan.cut_off_nodes) == nodes, pipe
        assert set(plan.cut_off_consumers) == expected, pipe
        assert twin_unsupplied(town, plan.valves_to_close, plan.regulators_to_shut) == expected, pipe
        critical = {sp.id for sp in town.by_kind["service_point"] if sp.values.get("critical_kind")}
        assert set(plan.critical_cut_off) == expected & critical, pipe


def test_a_burst_next_to_the_source_cannot_be_isolated_by_valves(town: Town) -> None:
    source = next(n.id for n in town.by_kind["node"] if n.values.get("kind") == "source")
    pipe = next(p.id for p in town.by_kind["pipe"]
                if source in (p.values["from_node_id"], p.values["to_node_id"]))
    plan = town.index.plan(pipe)
    assert not plan.feasible and source in plan.reason
    assert plan.valves_to_close == [] and plan.cut_off_consumers == []
