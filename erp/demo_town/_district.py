"""A low-pressure district: a jittered street grid of PE mains fed by one GRP or ShRP.

The grid has parks and a ragged edge cut out; gas mains follow the shortest-path tree from the
station (how trunk mains radiate from a GRP) plus a few loop-closing pipes (5–9 % of the pipes).
Valves stand at the station outlet and at the start of the main branches. Consumers are put up
first, then the pipes are sized for the coincident design flow so that every node keeps at
least `DESIGN_MIN_PA` at the winter peak.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass

from erp.demo_town._catalogue import PE_ROUGHNESS_M, PE_SDR11_SIZES, STREET_NAMES
from erp.demo_town._consumers import GridSite, populate_district
from erp.demo_town._geo import to_lat_lon
from erp.demo_town._hydraulics import Tree, elevation_gain_pa, spanning_tree
from erp.demo_town._loads import consumer_group, design_flow_m3h, group_shares_m3h
from erp.demo_town._plan import ConsumerSpec, IdMint, LinkSpec, NodeSpec, SerialMint, TownPlan
from erp.demo_town._sizing import size_low_pressure
from erp.demo_town._stations import add_regulator_station_equipment

__all__ = ["DESIGN_MIN_PA", "DistrictResult", "DistrictSpec", "build_district"]

MIN_PA = 1_800.0  # the farthest consumer at the winter peak (DOMAIN.md)
DESIGN_MIN_PA = MIN_PA + 100.0  # sizing margin
MAX_VELOCITY_M_S = 6.5  # below the 7 m/s low-pressure limit
_MAIN_MIN_M = PE_SDR11_SIZES[2].inner_diameter_m  # 63 mm: the smallest street main
_LANE_MIN_M = PE_SDR11_SIZES[1].inner_diameter_m  # 40 mm: a dead-end lane
_CAPACITIES_M3H = (250, 400, 600, 900, 1_200, 1_600, 2_000, 2_500, 3_200)
_ERAS = {"apartments": (1996, 2016), "mixed": (2000, 2020), "private": (2004, 2024)}


@dataclass(frozen=True, slots=True)
class DistrictSpec:
    """Where and what a district is: number, area, kind, usable rectangle (local m)."""

    number: int
    area_id: str
    name: str
    kind: str
    x0_m: float
    x1_m: float
    y0_m: float
    y1_m: float
    target_service_points: int
    critical_kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DistrictResult:
    """What the medium-pressure network needs to know of a built district."""

    area_id: str
    station_id: str
    inlet_node_id: str
    inlet_x_m: float
    inlet_y_m: float
    design_flow_m3h: float
    min_pressure_pa: float


Cell = tuple[int, int]
XY = tuple[float, float]


def _grid(spec: DistrictSpec, rng: random.Random) -> tuple[dict[Cell, XY], int, int]:
    """Jittered positions of the street corners that survive the parks and the ragged edge."""
    sx, sy = rng.uniform(100.0, 150.0), rng.uniform(100.0, 150.0)
    nx = int((spec.x1_m - spec.x0_m) // sx) + 1
    ny = int((spec.y1_m - spec.y0_m) // sy) + 1
    ox = spec.x0_m + ((spec.x1_m - spec.x0_m) - (nx - 1) * sx) / 2
    oy = spec.y0_m + ((spec.y1_m - spec.y0_m) - (ny - 1) * sy) / 2
    present = {(i, j) for i in range(nx) for j in range(ny)}
    for _ in range(rng.randint(1, 3)):  # parks and ponds: superblocks
        w, h = rng.randint(2, 5), rng.randint(2, 4)
        a, b = rng.randrange(0, nx - w), rng.randrange(0, ny - h)
        present -= {(i, j) for i in range(a + 1, a + w) for j in range(b + 1, b + h)}
    if rng.random() < 0.7:  # a ragged corner
        cw, ch = rng.randint(3, nx // 3 + 1), rng.randint(3, ny // 3 + 1)
        ci = 0 if rng.random() < 0.5 else nx - cw
        cj = 0 if rng.random() < 0.5 else ny - ch
        present -= {(i, j) for i in range(ci, ci + cw) for j in range(cj, cj + ch)}
    pos: dict[Cell, XY] = {}
    for i in range(nx):
        for j in range(ny):
            jitter = (rng.uniform(-8.0, 8.0), rng.uniform(-8.0, 8.0))
            if (i, j) in present:
                pos[(i, j)] = (ox + i * sx + jitter[0], oy + j * sy + jitter[1])
    return pos, nx, ny


def _connected(pos: dict[Cell, XY], root: Cell) -> list[Cell]:
    """The corners reachable from `root` along streets, row by row."""
    seen, stack = {root}, [root]
    while stack:
        i, j = stack.pop()
        for nb in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if nb in pos and nb not in seen:
                seen.add(nb)
                stack.append(nb)
    return sorted(seen, key=lambda ij: (ij[1], ij[0]))


def _mains(grid: list[LinkSpec], root: str, area: str, ids: IdMint,
           rng: random.Random) -> tuple[list[LinkSpec], Tree]:
    """The street segments that get a gas main: the shortest-path tree plus a few loops."""
    tree = spanning_tree(root, [g.hydraulic() for g in grid])
    in_tree = set(tree.parent_link.values())
    spare = [i for i in range(len(grid)) if i not in in_tree]
    share = rng.uniform(0.05, 0.09)
    loops = set(rng.sample(spare, min(len(spare), round(share / (1 - share) * len(in_tree)))))
    kept = [g for i, g in enumerate(grid) if i in in_tree or i in loops]
    for g in kept:
        g.id = ids.next(f"P-{area}-", 4)
    return kept, tree


def _branch_valves(plan: TownPlan, mains: list[LinkSpec], tree: Tree, area: str, ids: IdMint,
                   rng: random.Random) -> list[LinkSpec]:
    """`mains` with a valve (in a chamber 4 m down the pipe) at the start of the big branches:
    those leaving the station's corner and two picked among the deeper ones."""
    counts = dict.fromkeys(tree.order, 1)
    for n in reversed(tree.order[1:]):
        counts[tree.parent[n]] += counts[n]
    size = len(tree.order)
    valve_at = {n for n in tree.order[1:]
                if tree.parent[n] == tree.root and counts[n] >= 0.08 * size}
    deeper = [n for n in tree.order[1:]
              if tree.parent[n] != tree.root and counts[n] >= 0.1 * size]
    valve_at |= set(rng.sample(deeper, min(2, len(deeper))))
    links: list[LinkSpec] = []
    for g in mains:
        child = g.b if tree.parent.get(g.b) == g.a else g.a
        if tree.parent.get(child) not in (g.a, g.b) or child not in valve_at:
            links.append(g)
            continue
        up, down = plan.nodes[tree.parent[child]], plan.nodes[child]
        ux, uy = (down.x_m - up.x_m) / g.length_m, (down.y_m - up.y_m) / g.length_m
        chamber = plan.add_node(NodeSpec(ids.next(f"N-{area}-", 4), up.x_m + 4 * ux,
                                         up.y_m + 4 * uy, "low", area,
                                         name=f"{g.name}, valve chamber"))
        links.append(LinkSpec(ids.next(f"V-{area}-", 2), up.id, chamber.id, "low", area,
                              valve=True, name=f"Branch valve, {g.name}"))
        g.a, g.b, g.length_m = chamber.id, down.id, round(g.length_m - 4.0, 1)
        links.append(g)
    return links


def _coincident_loads(consumers: list[ConsumerSpec]) -> tuple[dict[str, float], float]:
    """Node loads (m³/h std, each consumer's coincident share) and the district design flow."""
    groups = [(consumer_group(c.category, c.peak_m3h, c.annual_m3), c.peak_m3h)
              for c in consumers]
    loads: dict[str, float] = {}
    for c, q in zip(consumers, group_shares_m3h(groups), strict=True):
        loads[c.node_id] = loads.get(c.node_id, 0.0) + q
    return loads, design_flow_m3h(groups)


def build_district(plan: TownPlan, spec: DistrictSpec, ids: IdMint, serials: SerialMint,
                   rng: random.Random, epoch: dt.date) -> DistrictResult:
    """Lay out, populate and size one low-pressure district; append it to `plan`."""
    area = spec.area_id
    pos, nx, ny = _grid(spec, rng)
    ti, tj = nx // 2 + rng.randint(-2, 2), ny // 2 + rng.randint(-2, 2)
    root_ij = min(pos, key=lambda ij: ((ij[0] - ti) ** 2 + (ij[1] - tj) ** 2, ij))
    cells = _connected(pos, root_ij)
    streets = rng.sample(STREET_NAMES, min(len(STREET_NAMES), nx + ny))
    col_street = [streets[i % len(streets)] for i in range(nx)]
    row_street = [streets[(nx + j) % len(streets)] for j in range(ny)]
    year_of = {s: rng.randint(*_ERAS[spec.kind]) for s in streets}

    node_of: dict[Cell, str] = {}
    for ij in cells:
        node = plan.add_node(NodeSpec(ids.next(f"N-{area}-", 4), *pos[ij], "low", area,
                                      name=f"{col_street[ij[0]]} / {row_street[ij[1]]}"))
        node_of[ij] = node.id
    grid: list[LinkSpec] = []
    for (i, j) in cells:
        for (di, dj), street in (((1, 0), row_street[j]), ((0, 1), col_street[i])):
            if (i + di, j + dj) in node_of:
                a, b = plan.nodes[node_of[(i, j)]], plan.nodes[node_of[(i + di, j + dj)]]
                grid.append(LinkSpec("", a.id, b.id, "low", area,
                                     round(math.hypot(b.x_m - a.x_m, b.y_m - a.y_m), 1),
                                     roughness_m=PE_ROUGHNESS_M, name=street,
                                     year_laid=year_of[street]))
    root = node_of[root_ij]
    mains, tree = _mains(grid, root, area, ids, rng)
    links = _branch_valves(plan, mains, tree, area, ids, rng)

    sites = [GridSite(node_of[ij], *pos[ij], (col_street[ij[0]], row_street[ij[1]]))
             for ij in cells]
    consumers = populate_district(area, spec.name, spec.kind, sites, spec.target_service_points,
                                  spec.critical_kinds, ids, serials, rng, epoch)
    plan.consumers.extend(consumers)
    loads, flow = _coincident_loads(consumers)

    # The station, between its inlet (medium) and outlet (low) nodes, next to the root corner.
    kind = "GRP" if spec.kind == "apartments" else "ShRP"  # cabinets in low-rise areas
    station_id = f"{kind}-{spec.number:02d}"
    capacity = next((c for c in _CAPACITIES_M3H if c >= 1.4 * flow), _CAPACITIES_M3H[-1])
    r = plan.nodes[root]
    outlet = plan.add_node(NodeSpec(ids.next(f"N-{area}-", 4), r.x_m + 10, r.y_m + 12, "low",
                                    area, name=f"{station_id} outlet"))
    inlet = plan.add_node(NodeSpec(f"N-{area}-IN", r.x_m - 10, r.y_m + 12, "medium", area,
                                   name=f"{station_id} inlet"))
    links.insert(0, LinkSpec(ids.next(f"V-{area}-", 2), outlet.id, root, "low", area, valve=True,
                             name=f"{station_id} outlet valve"))
    elevations = {n: plan.nodes[n].z_m for link in links for n in (link.a, link.b)}
    setpoint = rng.choice((2_800.0, 3_000.0))
    if min(setpoint - DESIGN_MIN_PA + elevation_gain_pa(z - outlet.z_m)
           for z in elevations.values()) < 800.0:  # a district running downhill needs more
        setpoint = 3_000.0
    pressures = size_low_pressure(
        links, outlet.id, setpoint, DESIGN_MIN_PA, elevations, loads,
        [s.inner_diameter_m for s in PE_SDR11_SIZES], _MAIN_MIN_M,
        _LANE_MIN_M if spec.kind != "apartments" else _MAIN_MIN_M, MAX_VELOCITY_M_S)
    plan.links.extend(links)
    lat, lon = to_lat_lon(outlet.x_m, outlet.y_m)
    plan.stations.append({
        "id": station_id, "name": f"{station_id} {spec.name}", "kind": kind, "area_id": area,
        "inlet_node_id": inlet.id, "outlet_node_id": outlet.id, "inlet_level": "medium",
        "outlet_level": "low", "outlet_setpoint_pa_gauge": setpoint,
        "capacity_m3h_std": float(capacity), "lat": lat, "lon": lon, "status": "in_service"})
    add_regulator_station_equipment(plan, station_id, kind, area, capacity, serials, rng, epoch)
    return DistrictResult(area, station_id, inlet.id, inlet.x_m, inlet.y_m, flow,
                          min(pressures.values()))
