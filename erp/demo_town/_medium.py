"""The supply side: main-pipeline tie-in, GRS, the steel medium-pressure ring and its spurs.

The ring follows the streets between the inner four districts and the outer ones (a rectangle
with chamfered corners, a node every ~450 m, six sectioning valves). A feeder main brings gas
from the GRS outside the town; each district is fed by a spur from the nearest ring node
through a remotely operated valve; industry and boiler houses hang on short branches. Steel
mains are sized for the design flows on the shortest-path tree from the GRS and protected by
SKZ stations every 1.2–2 km of pipe.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from erp.demo_town._catalogue import INDUSTRIAL_NAMES, STEEL_ROUGHNESS_M, STEEL_SIZES
from erp.demo_town._consumers import industrial_site
from erp.demo_town._district import DistrictResult
from erp.demo_town._geo import to_lat_lon
from erp.demo_town._plan import IdMint, LinkSpec, NodeSpec, SerialMint, TownPlan
from erp.demo_town._sizing import size_medium_pressure
from erp.demo_town._stations import add_grs_equipment

__all__ = ["GRS_ID", "GRS_SETPOINT_PA", "MP_DESIGN_MIN_PA", "MediumResult", "build_medium"]

GRS_ID = "GRS-1"
GRS_SETPOINT_PA = 250_000.0
MP_DESIGN_MIN_PA = 160_000.0  # every medium-pressure node at the design peak (check: 150 kPa)
MAX_WORKING_VELOCITY_M_S = 15.0
AREA = "MP"
_RING_SPACING_M = 450.0
_RING_MIN_BORE_M = STEEL_SIZES[2].inner_diameter_m  # 273x7: the ring backbone
_ERA = (1968, 1995)


@dataclass(frozen=True, slots=True)
class MediumResult:
    """Outcome of the supply side: the lowest medium-pressure node at the design peak."""

    min_pressure_pa: float
    total_flow_m3h: float


def _width(prefix: str) -> int:
    """Digits of a counter: `N-MP-001` on the supply side, `N-D03-M01` on a district spur."""
    return 2 if prefix.endswith("-M") else 3


class _Builder:
    def __init__(self, plan: TownPlan, ids: IdMint, rng: random.Random) -> None:
        self.plan, self.ids, self.rng = plan, ids, rng
        self.links: list[LinkSpec] = []

    def node(self, x: float, y: float, area: str, prefix: str, name: str | None = None,
             level: str = "medium", kind: str = "junction") -> NodeSpec:
        return self.plan.add_node(NodeSpec(self.ids.next(prefix, _width(prefix)), x, y, level,
                                           area, kind, name))

    def pipe(self, a: NodeSpec, b: NodeSpec, area: str, prefix: str, name: str,
             level: str = "medium") -> LinkSpec:
        link = LinkSpec(self.ids.next(prefix, _width(prefix)), a.id, b.id, level,
                        area, round(math.hypot(b.x_m - a.x_m, b.y_m - a.y_m), 1),
                        material="steel", roughness_m=STEEL_ROUGHNESS_M, name=name,
                        year_laid=self.rng.randint(*_ERA))
        self.links.append(link)
        return link

    def valve(self, a: NodeSpec, toward: tuple[float, float], area: str, valve_id: str,
              name: str, node_prefix: str, remote: bool) -> NodeSpec:
        """A valve out of `a`, its far side 5 m toward `toward`; returns the far-side node."""
        d = math.hypot(toward[0] - a.x_m, toward[1] - a.y_m) or 1.0
        far = self.node(a.x_m + 5 * (toward[0] - a.x_m) / d, a.y_m + 5 * (toward[1] - a.y_m) / d,
                        area, node_prefix, f"{name}, far side")
        self.links.append(LinkSpec(valve_id, a.id, far.id, "medium", area, valve=True,
                                   name=name, remotely_operable=remote))
        return far

    def route(self, start: NodeSpec, end: NodeSpec, area: str, node_prefix: str,
              pipe_prefix: str, name: str, x_first: bool) -> None:
        """Pipes from `start` to `end` along an L-shaped street route, a node every ≤ 500 m."""
        corner = (end.x_m, start.y_m) if x_first else (start.x_m, end.y_m)
        points: list[tuple[float, float]] = []
        for (x0, y0), (x1, y1) in (((start.x_m, start.y_m), corner), (corner, (end.x_m, end.y_m))):
            length = math.hypot(x1 - x0, y1 - y0)
            steps = max(1, math.ceil(length / 500.0))
            points += [(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps)
                       for k in range(1, steps + 1)]
        points = [p for p in points[:-1] if math.hypot(p[0] - start.x_m, p[1] - start.y_m) > 20
                  and math.hypot(p[0] - end.x_m, p[1] - end.y_m) > 20]
        prev = start
        for x, y in points:
            nxt = self.node(x, y, area, node_prefix)
            self.pipe(prev, nxt, area, pipe_prefix, name)
            prev = nxt
        self.pipe(prev, end, area, pipe_prefix, name)


def _ring_points(x1: float, x2: float, y1: float, y2: float,
                 rng: random.Random) -> list[tuple[float, float]]:
    c = 250.0
    corners = [(x1 + c, y1), (x2 - c, y1), (x2, y1 + c), (x2, y2 - c), (x2 - c, y2), (x1 + c, y2),
               (x1, y2 - c), (x1, y1 + c)]
    sides = list(zip(corners, corners[1:] + corners[:1], strict=True))
    lengths = [math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in sides]
    total = sum(lengths)
    n = round(total / _RING_SPACING_M)
    out = []
    for k in range(n):
        s = (k + rng.uniform(-0.12, 0.12)) * total / n % total
        for (a, b), length in zip(sides, lengths, strict=True):
            if s <= length:
                t = s / length
                out.append((a[0] + t * (b[0] - a[0]) + rng.uniform(-10, 10),
                            a[1] + t * (b[1] - a[1]) + rng.uniform(-10, 10)))
                break
            s -= length
    return out


def build_medium(plan: TownPlan, districts: Sequence[DistrictResult], xb: Sequence[float],
                 yb: Sequence[float], ids: IdMint, serials: SerialMint, rng: random.Random,
                 epoch: dt.date) -> MediumResult:
    """Lay the supply side around the districts' station inlets; size it; add GRS and SKZ."""
    b = _Builder(plan, ids, rng)
    # Ring with sectioning valves.
    pts = _ring_points(xb[1], xb[3], yb[1], yb[3], rng)
    ring = [b.node(x, y, AREA, "N-MP-", f"MP ring, node {k + 1}") for k, (x, y) in enumerate(pts)]
    n = len(ring)
    sectioning = sorted({round(k * n / 6) % n for k in range(6)})
    for k, a in enumerate(ring):
        z = ring[(k + 1) % n]
        start = a
        if k in sectioning:
            start = b.valve(a, (z.x_m, z.y_m), AREA, ids.next("V-MP-", 2),
                            f"Ring sectioning valve {sectioning.index(k) + 1}", "N-MP-", False)
        b.pipe(start, z, AREA, "P-MP-", f"MP ring, section {k + 1}")

    # Main-pipeline tie-in, GRS and its feeder main to the nearest ring node.
    gx, gy = xb[0] + 500.0, yb[0] + 400.0
    source = b.node(xb[0] - 800.0, yb[0] - 700.0, AREA, "N-MP-",
                    "Main pipeline tie-in (Yaroslavl branch)", "high", "source")
    grs_in = b.node(gx - 15, gy, AREA, "N-MP-", f"{GRS_ID} inlet", "high")
    grs_out = b.node(gx + 15, gy, AREA, "N-MP-", f"{GRS_ID} outlet")
    hp = b.pipe(source, grs_in, AREA, "P-MP-", "GRS-1 high-pressure branch", "high")
    hp.diameter_m = STEEL_SIZES[2].inner_diameter_m
    entry = min(ring, key=lambda r: (math.hypot(r.x_m - gx, r.y_m - gy), r.id))
    far = b.valve(grs_out, (entry.x_m, entry.y_m), AREA, ids.next("V-MP-", 2),
                  f"{GRS_ID} outlet valve", "N-MP-", True)
    b.route(far, entry, AREA, "N-MP-", "P-MP-", f"{GRS_ID} feeder main", x_first=True)
    lat, lon = to_lat_lon(gx, gy)
    plan.stations.append({
        "id": GRS_ID, "name": f"{GRS_ID} Yaroslavl-South city gate", "kind": "GRS",
        "area_id": AREA, "inlet_node_id": grs_in.id, "outlet_node_id": grs_out.id,
        "inlet_level": "high", "outlet_level": "medium",
        "outlet_setpoint_pa_gauge": GRS_SETPOINT_PA, "capacity_m3h_std": 30_000.0,
        "lat": lat, "lon": lon, "status": "in_service"})
    add_grs_equipment(plan, GRS_ID, AREA, serials, rng, epoch)

    # District spurs through smart entry valves.
    loads: dict[str, float] = {}
    for d in districts:
        inlet = plan.nodes[d.inlet_node_id]
        r = min(ring, key=lambda r: (math.hypot(r.x_m - inlet.x_m, r.y_m - inlet.y_m), r.id))
        x_first = abs(r.x_m - inlet.x_m) >= abs(r.y_m - inlet.y_m)  # leave across the ring
        toward = (inlet.x_m, r.y_m) if x_first else (r.x_m, inlet.y_m)
        far = b.valve(r, toward, d.area_id, ids.next(f"V-{d.area_id}-", 2),
                      f"{d.station_id} district entry valve", f"N-{d.area_id}-M", True)
        b.route(far, inlet, d.area_id, f"N-{d.area_id}-M", f"P-{d.area_id}-M",
                f"{d.station_id} feeder", x_first)
        loads[inlet.id] = d.design_flow_m3h

    # Industry and boiler houses on branches off the ring.
    sites = [ring[round((k + 0.5) * n / 14) % n] for k in range(14)]
    critical = set(rng.sample(range(14), 2))
    names = iter(rng.sample(INDUSTRIAL_NAMES, 12))
    for k, r in enumerate(sites):
        out = (r.x_m, r.y_m)
        norm = math.hypot(*out) or 1.0
        reach = rng.uniform(250.0, 800.0)
        end_xy = (r.x_m + reach * out[0] / norm, r.y_m + reach * out[1] / norm)
        if k in critical:
            name, category, peak, hours, ck, p_min = (
                f"District boiler house No. {rng.randint(3, 40)}", "critical",
                rng.uniform(350.0, 700.0), 2_600.0, "boiler_house", 50_000.0)
        else:
            name, category, peak, hours, ck, p_min = (
                next(names), "industrial",
                math.exp(rng.uniform(math.log(50.0), math.log(500.0))),
                rng.uniform(3_000.0, 6_000.0), None, None)
        far = b.valve(r, end_xy, AREA, ids.next("V-MP-", 2), f"Branch valve, {name}", "N-MP-",
                      ck is not None)
        site = b.node(*end_xy, AREA, "N-MP-", name, kind="consumer")
        b.route(far, site, AREA, "N-MP-", "P-MP-", f"Branch to {name}", rng.random() < 0.5)
        consumer = industrial_site(AREA, site.id, site.x_m, site.y_m, name,
                                   f"ul. Promyshlennaya, {2 * k + 1}", category, peak, hours, ids,
                                   serials, rng, epoch, ck, p_min)
        plan.consumers.append(consumer)
        loads[site.id] = consumer.peak_m3h

    mp = [link for link in b.links if link.level == "medium"]
    ring_ids = {link.id for link in mp if link.name and link.name.startswith("MP ring")}
    pressures = size_medium_pressure(
        mp, grs_out.id, GRS_SETPOINT_PA, MP_DESIGN_MIN_PA, loads,
        [s.inner_diameter_m for s in STEEL_SIZES], dict.fromkeys(ring_ids, _RING_MIN_BORE_M),
        MAX_WORKING_VELOCITY_M_S)
    plan.links.extend(b.links)
    _add_skz(plan, b.links, (source.id, grs_out.id), rng)
    return MediumResult(min(pressures.values()), sum(loads.values()))


def _add_skz(plan: TownPlan, links: Sequence[LinkSpec], starts: Sequence[str],
             rng: random.Random) -> None:
    """Cathodic protection: walk the steel network depth-first, an SKZ per 1.2–2 km of pipe."""
    adjacency: dict[str, list[int]] = {}
    for i, link in enumerate(links):
        adjacency.setdefault(link.a, []).append(i)
        adjacency.setdefault(link.b, []).append(i)
    seen_links: set[int] = set()
    order: list[LinkSpec] = []
    stack, visited = [starts[0]], {starts[0]}
    for nxt in starts[1:]:  # the GRS joins the high- and medium-pressure parts
        stack.insert(0, nxt)
        visited.add(nxt)
    while stack:
        node = stack.pop()
        for i in reversed(adjacency.get(node, [])):
            if i in seen_links:
                continue
            seen_links.add(i)
            link = links[i]
            if not link.valve:
                order.append(link)
            other = link.b if link.a == node else link.a
            if other not in visited:
                visited.add(other)
                stack.append(other)
    groups: list[list[LinkSpec]] = [[]]
    reach, covered = rng.uniform(1_200.0, 2_000.0), 0.0
    for link in order:
        if covered >= reach:
            groups.append([])
            reach, covered = rng.uniform(1_200.0, 2_000.0), 0.0
        groups[-1].append(link)
        covered += link.length_m
    for k, group in enumerate(groups, start=1):
        mid = group[len(group) // 2]
        a, z = plan.nodes[mid.a], plan.nodes[mid.b]
        lat, lon = to_lat_lon((a.x_m + z.x_m) / 2 + 25.0, (a.y_m + z.y_m) / 2 + 25.0)
        length = sum(link.length_m for link in group)
        plan.skz.append({
            "id": f"SKZ-{k:02d}", "name": f"SKZ-{k:02d} ({mid.name})", "area_id": AREA,
            "lat": lat, "lon": lon, "rated_voltage_v": 48.0,
            "rated_current_a": 10.0 if length < 1_500 else 16.0 if length < 1_900 else 25.0,
            "status": "in_service", "protected_pipe_ids": [link.id for link in group]})
