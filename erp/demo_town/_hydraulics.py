"""Steady-state gas hydraulics of tree networks, as used to size and to check the demo town.

SI inside: Pa, m, m/s, kg/m³; flows are given in m³/h at standard conditions (20 °C,
101.325 kPa) because that is how loads are stated, and converted on entry.

- Low pressure (≤ 5 kPa gauge): the gas is treated as incompressible at its standard density,
  Darcy–Weisbach `Δp = f·(L/D)·ρ·v²/2`, plus the elevation term `g·(ρ_air − ρ_gas)·Δz`: natural
  gas is lighter than air, so its gauge pressure *rises* going uphill.
- Medium pressure (5 kPa – 0.3 MPa): isothermal compressible flow in squared-pressure form,
  `p1² − p2² = f·(L/D)·ρ_n·p_n·v_n²` with absolute pressures and `v_n` the velocity of the
  standard-condition volume flow (gas taken at the standard temperature, which is conservative
  for winter gas at about 5 °C); elevation is negligible at these pressures and left out.
- Friction: laminar `64/Re` below Re = 2300, otherwise Colebrook–White solved by fixed-point
  iteration started from Swamee–Jain.

Networks are solved on a spanning tree: the shortest-path tree from the feeding station
(Dijkstra over lengths, ties broken by node id), loop-closing pipes carrying nothing. That is
the conservative way street networks are sized; a looped solve only gives higher pressures.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "GAS_DENSITY_STD_KG_M3",
    "HydraulicLink",
    "STANDARD_PRESSURE_PA",
    "Tree",
    "elevation_gain_pa",
    "friction_factor",
    "low_pressure_drop_pa",
    "low_pressure_profile_pa",
    "medium_pressure_end_pa_abs",
    "medium_pressure_profile_pa",
    "spanning_tree",
    "tree_flows_m3h",
    "velocity_m_s",
]

GAS_DENSITY_STD_KG_M3 = 0.70
AIR_DENSITY_STD_KG_M3 = 1.20
GAS_DYNAMIC_VISCOSITY_PA_S = 1.1e-5
GRAVITY_M_S2 = 9.81
STANDARD_PRESSURE_PA = 101_325.0
_LAMINAR_RE = 2_300.0


class HydraulicLink(NamedTuple):
    """A pipe (or, `lossless`, a valve) between nodes `a` and `b`; SI units."""

    id: str
    a: str
    b: str
    length_m: float
    diameter_m: float
    roughness_m: float
    lossless: bool = False


@dataclass(frozen=True, slots=True)
class Tree:
    """A spanning tree rooted at `root`: nodes in order of distance, each with its parent link.

    `parent_link[n]` is the index (into the link list the tree was built from) of the link that
    feeds node `n`; `parent[n]` the upstream node; `distance_m[n]` the pipe length from the root.
    """

    root: str
    order: tuple[str, ...]
    parent: Mapping[str, str]
    parent_link: Mapping[str, int]
    distance_m: Mapping[str, float]


def velocity_m_s(flow_m3h_std: float, diameter_m: float) -> float:
    """Mean velocity (m/s) of a standard-condition flow (m³/h) in a bore of `diameter_m`."""
    return abs(flow_m3h_std) / 3600.0 / (math.pi * diameter_m * diameter_m / 4.0)


def friction_factor(reynolds: float, relative_roughness: float) -> float:
    """Darcy friction factor (–) for Reynolds number `reynolds` and roughness ε/D."""
    if reynolds <= 0.0:
        return 0.0
    if reynolds < _LAMINAR_RE:
        return 64.0 / reynolds
    f = 0.25 / math.log10(relative_roughness / 3.7 + 5.74 / reynolds**0.9) ** 2  # Swamee–Jain
    for _ in range(50):
        x = -2.0 * math.log10(relative_roughness / 3.7 + 2.51 / (reynolds * math.sqrt(f)))
        f_new = 1.0 / (x * x)
        if abs(f_new - f) < 1e-12:
            return f_new
        f = f_new
    return f


def _friction_term(flow_m3h_std: float, length_m: float, diameter_m: float,
                   roughness_m: float) -> tuple[float, float]:
    """(f·L/D, v) for a standard-condition flow."""
    v = velocity_m_s(flow_m3h_std, diameter_m)
    re = GAS_DENSITY_STD_KG_M3 * v * diameter_m / GAS_DYNAMIC_VISCOSITY_PA_S
    return friction_factor(re, roughness_m / diameter_m) * length_m / diameter_m, v


def low_pressure_drop_pa(flow_m3h_std: float, length_m: float, diameter_m: float,
                         roughness_m: float) -> float:
    """Friction pressure drop (Pa) of a low-pressure pipe: Darcy–Weisbach at standard density."""
    if flow_m3h_std == 0.0 or length_m == 0.0:
        return 0.0
    k, v = _friction_term(flow_m3h_std, length_m, diameter_m, roughness_m)
    return k * GAS_DENSITY_STD_KG_M3 * v * v / 2.0


def elevation_gain_pa(rise_m: float) -> float:
    """Gauge pressure gained (Pa) by gas rising `rise_m` metres: g·(ρ_air − ρ_gas)·Δz."""
    return GRAVITY_M_S2 * (AIR_DENSITY_STD_KG_M3 - GAS_DENSITY_STD_KG_M3) * rise_m


def medium_pressure_end_pa_abs(start_pa_abs: float, flow_m3h_std: float, length_m: float,
                               diameter_m: float, roughness_m: float) -> float:
    """Absolute end pressure (Pa) of a medium-pressure pipe; 0 when the flow cannot pass."""
    if flow_m3h_std == 0.0 or length_m == 0.0:
        return start_pa_abs
    k, v = _friction_term(flow_m3h_std, length_m, diameter_m, roughness_m)
    sq = start_pa_abs * start_pa_abs - k * GAS_DENSITY_STD_KG_M3 * STANDARD_PRESSURE_PA * v * v
    return math.sqrt(sq) if sq > 0.0 else 0.0


def spanning_tree(root: str, links: Sequence[HydraulicLink]) -> Tree:
    """The shortest-path tree from `root` over `links` (lengths; ties by node id)."""
    adjacency: dict[str, list[tuple[str, int]]] = {}
    for i, link in enumerate(links):
        adjacency.setdefault(link.a, []).append((link.b, i))
        adjacency.setdefault(link.b, []).append((link.a, i))
    distance = {root: 0.0}
    parent: dict[str, str] = {}
    parent_link: dict[str, int] = {}
    done: set[str] = set()
    order: list[str] = []
    heap: list[tuple[float, str]] = [(0.0, root)]
    while heap:
        d, node = heapq.heappop(heap)
        if node in done:
            continue
        done.add(node)
        order.append(node)
        for other, i in adjacency.get(node, ()):
            if other in done:
                continue
            nd = d + links[i].length_m
            if nd < distance.get(other, math.inf):
                distance[other] = nd
                parent[other] = node
                parent_link[other] = i
                heapq.heappush(heap, (nd, other))
    return Tree(root, tuple(order), parent, parent_link, distance)


def tree_flows_m3h(tree: Tree, loads_m3h: Mapping[str, float]) -> dict[int, float]:
    """Flow (m³/h std) in each tree link, by link index: the sum of the loads it feeds."""
    carried = {n: loads_m3h.get(n, 0.0) for n in tree.order}
    flows: dict[int, float] = {}
    for node in reversed(tree.order[1:]):
        flows[tree.parent_link[node]] = carried[node]
        carried[tree.parent[node]] += carried[node]
    return flows


def low_pressure_profile_pa(tree: Tree, links: Sequence[HydraulicLink],
                            flows_m3h: Mapping[int, float], root_pa_gauge: float,
                            elevations_m: Mapping[str, float]) -> dict[str, float]:
    """Gauge pressure (Pa) at every tree node of a low-pressure network, root at its set-point."""
    pressure = {tree.root: root_pa_gauge}
    for node in tree.order[1:]:
        up = tree.parent[node]
        link = links[tree.parent_link[node]]
        drop = 0.0 if link.lossless else low_pressure_drop_pa(
            flows_m3h[tree.parent_link[node]], link.length_m, link.diameter_m, link.roughness_m)
        pressure[node] = (pressure[up] - drop
                          + elevation_gain_pa(elevations_m[node] - elevations_m[up]))
    return pressure


def medium_pressure_profile_pa(tree: Tree, links: Sequence[HydraulicLink],
                               flows_m3h: Mapping[int, float],
                               root_pa_gauge: float) -> dict[str, float]:
    """Gauge pressure (Pa) at every tree node of a medium-pressure network (squared form)."""
    absolute = {tree.root: root_pa_gauge + STANDARD_PRESSURE_PA}
    for node in tree.order[1:]:
        link = links[tree.parent_link[node]]
        start = absolute[tree.parent[node]]
        absolute[node] = start if link.lossless else medium_pressure_end_pa_abs(
            start, flows_m3h[tree.parent_link[node]], link.length_m, link.diameter_m,
            link.roughness_m)
    return {n: p - STANDARD_PRESSURE_PA for n, p in absolute.items()}
