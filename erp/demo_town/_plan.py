"""The town as built before it becomes registry records: nodes, links, consumers, in local metres.

Builders fill these mutable specs (sizing changes diameters in place); `to_records` turns them
into `AssetRecord`s with ORM field names, WGS84 coordinates and rounded SI values.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from erp.demo_town._geo import elevation_m, to_lat_lon
from erp.demo_town._hydraulics import HydraulicLink
from erp.services.registry import AssetRecord

__all__ = ["ConsumerSpec", "IdMint", "LinkSpec", "NodeSpec", "SerialMint", "TownPlan"]


@dataclass(slots=True)
class NodeSpec:
    """A network node at local point (`x_m`, `y_m`); elevation comes from the terrain."""

    id: str
    x_m: float
    y_m: float
    level: str
    area_id: str
    kind: str = "junction"
    name: str | None = None
    z_m: float = field(init=False)

    def __post_init__(self) -> None:
        self.z_m = elevation_m(self.x_m, self.y_m)


@dataclass(slots=True)
class LinkSpec:
    """A pipe or (`valve`) a valve between nodes `a` and `b` of one pressure level."""

    id: str
    a: str
    b: str
    level: str
    area_id: str
    length_m: float = 0.0
    valve: bool = False
    diameter_m: float = 0.0
    material: str = "pe"
    roughness_m: float = 0.0
    name: str | None = None
    year_laid: int | None = None
    remotely_operable: bool = False

    def hydraulic(self) -> HydraulicLink:
        """This link as the hydraulic solver sees it (valves are lossless)."""
        return HydraulicLink(self.id, self.a, self.b, self.length_m, self.diameter_m,
                             self.roughness_m, self.valve)


@dataclass(slots=True)
class ConsumerSpec:
    """A service point with its meter."""

    id: str
    node_id: str
    area_id: str
    category: str
    name: str
    address: str
    x_m: float
    y_m: float
    peak_m3h: float
    annual_m3: float
    meter_kind: str
    meter_model: str
    meter_serial: str
    verification_due: dt.date
    critical_kind: str | None = None
    min_pressure_pa: float | None = None


class IdMint:
    """Sequential ids per prefix: `IdMint().next("P-D01-", 4)` → `P-D01-0001`."""

    def __init__(self) -> None:
        self._counters: dict[str, int] = {}

    def next(self, prefix: str, width: int) -> str:
        """The next id with `prefix` and a zero-padded counter of `width` digits."""
        n = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = n
        return f"{prefix}{n:0{width}d}"


class SerialMint:
    """Plausible, globally unique device serials: model prefix, year, running number."""

    def __init__(self, rng_seed: str) -> None:
        self._rng = random.Random(rng_seed)
        self._counters: dict[str, int] = {}

    def next(self, prefix: str, year: int) -> str:
        """A new serial for a device of `prefix` made in `year`."""
        if prefix not in self._counters:
            self._counters[prefix] = self._rng.randrange(100_000, 400_000)
        self._counters[prefix] += self._rng.randrange(1, 4)
        return f"{prefix}{year % 100:02d}{self._counters[prefix]:07d}"


@dataclass(slots=True)
class TownPlan:
    """Everything the generator decided, before conversion to records."""

    areas: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    links: list[LinkSpec] = field(default_factory=list)
    stations: list[dict[str, Any]] = field(default_factory=list)
    skz: list[dict[str, Any]] = field(default_factory=list)
    consumers: list[ConsumerSpec] = field(default_factory=list)
    meters: list[dict[str, Any]] = field(default_factory=list)
    equipment: list[dict[str, Any]] = field(default_factory=list)

    def add_node(self, node: NodeSpec) -> NodeSpec:
        """Register `node` and return it."""
        self.nodes[node.id] = node
        return node

    def to_records(self) -> list[AssetRecord]:
        """Registry records in insertion order: areas, nodes, pipes, stations, valves, …"""
        out = [AssetRecord("area", a, {"name": name}) for a, name in self.areas.items()]
        for n in self.nodes.values():
            lat, lon = to_lat_lon(n.x_m, n.y_m)
            out.append(AssetRecord("node", n.id, {
                "name": n.name, "kind": n.kind, "area_id": n.area_id,
                "pressure_level": n.level, "lat": lat, "lon": lon, "elevation_m": n.z_m,
                "status": "in_service"}))
        for p in self.links:
            if not p.valve:
                out.append(AssetRecord("pipe", p.id, {
                    "name": p.name, "from_node_id": p.a, "to_node_id": p.b,
                    "length_m": p.length_m, "inner_diameter_m": p.diameter_m,
                    "material": p.material, "roughness_m": p.roughness_m,
                    "pressure_level": p.level, "year_laid": p.year_laid,
                    "status": "in_service", "area_id": p.area_id}))
        out.extend(AssetRecord("station", s["id"], {k: v for k, v in s.items() if k != "id"})
                   for s in self.stations)
        for v in self.links:
            if v.valve:
                a, b = self.nodes[v.a], self.nodes[v.b]
                lat, lon = to_lat_lon((a.x_m + b.x_m) / 2, (a.y_m + b.y_m) / 2)
                out.append(AssetRecord("valve", v.id, {
                    "name": v.name, "from_node_id": v.a, "to_node_id": v.b,
                    "pressure_level": v.level, "diameter_m": v.diameter_m,
                    "normal_state": "open", "current_state": "open",
                    "remotely_operable": v.remotely_operable, "area_id": v.area_id,
                    "lat": lat, "lon": lon, "status": "in_service"}))
        out.extend(AssetRecord("skz", s["id"], {k: v for k, v in s.items() if k != "id"})
                   for s in self.skz)
        for c in self.consumers:
            lat, lon = to_lat_lon(c.x_m, c.y_m)
            out.append(AssetRecord("service_point", c.id, {
                "name": c.name, "node_id": c.node_id, "area_id": c.area_id,
                "category": c.category, "critical_kind": c.critical_kind, "address": c.address,
                "lat": lat, "lon": lon, "peak_load_m3h_std": c.peak_m3h,
                "annual_volume_m3_std": c.annual_m3, "min_pressure_pa_gauge": c.min_pressure_pa,
                "status": "in_service"}))
        for c in self.consumers:
            out.append(AssetRecord("meter", "M-" + c.id.removeprefix("SP-"), {
                "serial": c.meter_serial, "model": c.meter_model, "kind": c.meter_kind,
                "service_point_id": c.id, "area_id": c.area_id,
                "verification_due": c.verification_due, "status": "in_service"}))
        out.extend(AssetRecord("meter", m["id"], {k: v for k, v in m.items() if k != "id"})
                   for m in self.meters)
        out.extend(AssetRecord("equipment", e["id"], {k: v for k, v in e.items() if k != "id"})
                   for e in self.equipment)
        return out
