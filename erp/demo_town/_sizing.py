"""Pipe sizing the way designers do it: route the design flow over the spanning tree, pick
the smallest standard bore per pipe, then upsize along the worst path until every node holds
its minimum pressure.

Low pressure: each tree pipe gets the smallest bore whose friction gradient stays within the
allowed gradient of every node it feeds, `(p_set − p_min + elevation gain) / path length`
(the pressure budget spread evenly over the path), and whose velocity stays below the limit.
Medium pressure: the smallest steel bore keeping the working velocity below the limit. Loop
closures get the smaller bore of the tree pipes at their ends; valves the bore of their
largest neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from erp.demo_town._hydraulics import (
    STANDARD_PRESSURE_PA,
    HydraulicLink,
    Tree,
    elevation_gain_pa,
    low_pressure_drop_pa,
    low_pressure_profile_pa,
    medium_pressure_profile_pa,
    spanning_tree,
    tree_flows_m3h,
    velocity_m_s,
)
from erp.demo_town._plan import LinkSpec

__all__ = ["size_low_pressure", "size_medium_pressure"]

Profile = Callable[[Sequence[HydraulicLink]], dict[str, float]]


def _subtree_counts(tree: Tree) -> dict[str, int]:
    count = dict.fromkeys(tree.order, 1)
    for node in reversed(tree.order[1:]):
        count[tree.parent[node]] += count[node]
    return count


def _finish(links: list[LinkSpec], tree: Tree, floor_m: float) -> None:
    """Bores of loop closures and valves, from the tree pipes around them."""
    feeding: dict[str, float] = {}
    for node, i in tree.parent_link.items():
        if not links[i].valve:
            feeding[node] = links[i].diameter_m
    in_tree = set(tree.parent_link.values())
    for i, link in enumerate(links):
        if i not in in_tree and not link.valve:
            ends = [feeding[n] for n in (link.a, link.b) if n in feeding]
            link.diameter_m = max(floor_m, min(ends)) if ends else floor_m
    touching: dict[str, float] = {}
    for link in links:
        if not link.valve:
            for n in (link.a, link.b):
                touching[n] = max(touching.get(n, 0.0), link.diameter_m)
    for link in links:
        if link.valve:
            link.diameter_m = max(touching.get(link.a, 0.0), touching.get(link.b, 0.0)) or floor_m


def _upsize_worst_path(links: list[LinkSpec], tree: Tree, sizes_m: Sequence[float],
                       profile: Profile, design_min_pa: float) -> dict[str, float]:
    """Step up the pipe losing most pressure on the path to the worst node until it holds."""
    pressures: dict[str, float] = {}
    for _ in range(2_000):
        pressures = profile([link.hydraulic() for link in links])
        worst = min(tree.order, key=lambda n: (pressures[n], n))
        if pressures[worst] >= design_min_pa:
            break
        best, best_drop = -1, -math.inf
        node = worst
        while node != tree.root:
            i = tree.parent_link[node]
            drop = pressures[tree.parent[node]] - pressures[node]
            if not links[i].valve and links[i].diameter_m < sizes_m[-1] and drop > best_drop:
                best, best_drop = i, drop
            node = tree.parent[node]
        if best < 0:
            break
        links[best].diameter_m = next(d for d in sizes_m if d > links[best].diameter_m)
    return pressures


def size_low_pressure(links: list[LinkSpec], root: str, setpoint_pa: float, design_min_pa: float,
                      elevations_m: Mapping[str, float], loads_m3h: Mapping[str, float],
                      sizes_m: Sequence[float], main_min_m: float, leaf_min_m: float,
                      max_velocity_m_s: float) -> dict[str, float]:
    """Set the bore of every link of a low-pressure district in place.

    Arguments: the district's `links` (pipes and valves), the station outlet `root` at
    `setpoint_pa` (Pa gauge), the pressure every node must keep (`design_min_pa`, Pa gauge),
    node elevations (m) and loads (m³/h std), the standard bores `sizes_m` (ascending, m), the
    smallest bore of a main (`main_min_m`) and of a dead-end pipe (`leaf_min_m`), and the
    velocity limit (m/s). Returns the node pressures (Pa gauge) at the design flow.
    """
    tree = spanning_tree(root, [link.hydraulic() for link in links])
    flows = tree_flows_m3h(tree, loads_m3h)
    counts = _subtree_counts(tree)
    z0 = elevations_m[root]
    allowed = {}
    for node in tree.order[1:]:
        budget = setpoint_pa - design_min_pa + elevation_gain_pa(elevations_m[node] - z0)
        dist = tree.distance_m[node]
        allowed[node] = max(budget, 1.0) / dist if dist > 0 else math.inf
    for node in reversed(tree.order[1:]):
        up = tree.parent[node]
        if up != root:
            allowed[up] = min(allowed[up], allowed[node])
    for node in tree.order[1:]:
        i = tree.parent_link[node]
        link = links[i]
        if link.valve:
            continue
        q = flows[i]
        floor = main_min_m if counts[node] > 1 else leaf_min_m
        link.diameter_m = next(
            (d for d in sizes_m if d >= floor and velocity_m_s(q, d) <= max_velocity_m_s
             and low_pressure_drop_pa(q, 1.0, d, link.roughness_m) <= allowed[node]),
            sizes_m[-1])
    _finish(links, tree, main_min_m)

    def profile(hl: Sequence[HydraulicLink]) -> dict[str, float]:
        return low_pressure_profile_pa(tree, hl, flows, setpoint_pa, elevations_m)

    return _upsize_worst_path(links, tree, sizes_m, profile, design_min_pa)


def size_medium_pressure(links: list[LinkSpec], root: str, setpoint_pa: float,
                         design_min_pa: float, loads_m3h: Mapping[str, float],
                         sizes_m: Sequence[float], min_bore_m: Mapping[str, float],
                         max_velocity_m_s: float) -> dict[str, float]:
    """Set the bore of every link of the medium-pressure network in place.

    Arguments: the `links`, the GRS outlet `root` at `setpoint_pa` (Pa gauge), the pressure
    every node must keep (Pa gauge), node loads (m³/h std), standard steel bores (m, ascending),
    a minimum bore per link id (m; default the smallest size) and the limit of the working
    velocity (m/s), taken at the design minimum pressure. Returns node pressures (Pa gauge).
    """
    tree = spanning_tree(root, [link.hydraulic() for link in links])
    flows = tree_flows_m3h(tree, loads_m3h)
    working = (design_min_pa + STANDARD_PRESSURE_PA) / STANDARD_PRESSURE_PA
    for node in tree.order[1:]:
        i = tree.parent_link[node]
        link = links[i]
        if link.valve:
            continue
        floor = min_bore_m.get(link.id, sizes_m[0])
        link.diameter_m = next(
            (d for d in sizes_m
             if d >= floor and velocity_m_s(flows[i], d) / working <= max_velocity_m_s),
            sizes_m[-1])
    in_tree = set(tree.parent_link.values())
    for i, link in enumerate(links):
        if i not in in_tree and not link.valve:
            link.diameter_m = min_bore_m.get(link.id, sizes_m[0])
    _finish(links, tree, sizes_m[0])

    def profile(hl: Sequence[HydraulicLink]) -> dict[str, float]:
        return medium_pressure_profile_pa(tree, hl, flows, setpoint_pa)

    return _upsize_worst_path(links, tree, sizes_m, profile, design_min_pa)
