"""Validation rules of the network registry, as pure functions over plain values.

Used by every way data enters the registry (GraphQL mutations, GeoJSON and GasLib import,
the demo seeder), so the same input gets the same answer everywhere. Values are SI: metres,
Pa gauge. Each rule returns a list of `FieldError`s instead of raising, so an importer can
report every problem of a file at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AssetKind",
    "Component",
    "FieldError",
    "LevelBounds",
    "TopologyReport",
    "check_references",
    "topology_report",
    "validate",
]

# Allowed values, in one place so the schema, importers and docs agree.
NODE_KINDS = frozenset({"junction", "source", "sink", "consumer"})
STATUSES = frozenset({"planned", "in_service", "out_of_service", "retired"})
MATERIALS = frozenset({"steel", "pe", "cast_iron", "copper", "other"})
STATION_KINDS = frozenset({"GRS", "GRP", "ShRP"})
VALVE_STATES = frozenset({"open", "closed", "throttled"})
SP_CATEGORIES = frozenset({"household", "commercial", "industrial", "critical"})
CRITICAL_KINDS = frozenset({"hospital", "boiler_house", "school", "kindergarten", "other"})
METER_KINDS = frozenset({
    "residential", "industrial_corrector", "internal_gas", "internal_electricity",
    "internal_water", "internal_heat",
})
EQUIPMENT_KINDS = frozenset({
    "regulator", "filter", "shutoff_valve", "slam_shut_valve", "relief_valve", "meter",
    "heater", "odorizer", "telemetry", "other",
})
LINK_KINDS = frozenset({"short_pipe", "compressor", "resistor", "control_valve"})

DIAMETER_MIN_M = 0.010
DIAMETER_MAX_M = 1.400
ROUGHNESS_MAX_M = 0.01
PIPE_LENGTH_MAX_M = 200_000.0


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem: which asset (id), which field, what is wrong."""

    asset_id: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.asset_id}: {self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class LevelBounds:
    """Gauge pressure bounds of a level, Pa: `min_pa_gauge` < p <= `max_pa_gauge`."""

    code: str
    min_pa_gauge: float
    max_pa_gauge: float
    rank: int


AssetKind = str  # "node" | "pipe" | "station" | "valve" | "skz" | "service_point" | ...


class _Checker:
    """Collects errors for one asset; keeps each rule a one-liner below."""

    def __init__(self, asset_id: str, values: Mapping[str, Any]) -> None:
        self.asset_id = asset_id
        self.values = values
        self.errors: list[FieldError] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append(FieldError(self.asset_id, field, message))

    def required(self, *fields: str) -> None:
        for f in fields:
            v = self.values.get(f)
            if v is None or (isinstance(v, str) and not v.strip()):
                self.fail(f, "is required")

    def number(self, field: str, lo: float | None = None, hi: float | None = None, *,
               lo_open: bool = False, unit: str = "") -> None:
        v = self.values.get(field)
        if v is None:
            return
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
            self.fail(field, f"must be a number, got {v!r}")
            return
        if lo is not None and (v <= lo if lo_open else v < lo):
            self.fail(field, f"{v:g}{unit} is below the allowed {'>' if lo_open else '>='} {lo:g}{unit}")
        if hi is not None and v > hi:
            self.fail(field, f"{v:g}{unit} is above the allowed <= {hi:g}{unit}")

    def choice(self, field: str, allowed: Iterable[str]) -> None:
        v = self.values.get(field)
        allowed = frozenset(allowed)
        if v is not None and v not in allowed:
            self.fail(field, f"{v!r} is not one of {sorted(allowed)}")

    def level(self, field: str, levels: Mapping[str, LevelBounds]) -> None:
        self.choice(field, levels.keys())


def _coords(c: _Checker) -> None:
    c.required("lat", "lon")
    c.number("lat", -90, 90)
    c.number("lon", -180, 180)


def validate(kind: AssetKind, asset_id: str, values: Mapping[str, Any],
             levels: Mapping[str, LevelBounds]) -> list[FieldError]:
    """Check one asset's own fields (ranges, enumerations, required values).

    Arguments: `kind` of asset, its `asset_id`, the `values` by ORM field name (SI units),
    the known pressure `levels`. Returns every problem found, empty when valid.
    """
    c = _Checker(asset_id, values)
    if not asset_id or not str(asset_id).strip():
        c.fail("id", "is required")
    c.choice("status", STATUSES)
    if kind == "area":
        c.required("name")
    elif kind == "node":
        _coords(c)
        c.required("pressure_level")
        c.level("pressure_level", levels)
        c.choice("kind", NODE_KINDS)
        c.number("elevation_m", -500, 9000, unit=" m")
    elif kind == "pipe":
        c.required("from_node_id", "to_node_id", "length_m", "inner_diameter_m", "material",
                   "roughness_m", "pressure_level")
        c.number("length_m", 0, PIPE_LENGTH_MAX_M, lo_open=True, unit=" m")
        c.number("inner_diameter_m", DIAMETER_MIN_M, DIAMETER_MAX_M, unit=" m")
        c.number("roughness_m", 0, ROUGHNESS_MAX_M, unit=" m")
        c.choice("material", MATERIALS)
        c.level("pressure_level", levels)
        c.number("year_laid", 1850, dt.date.today().year + 5)
        if values.get("from_node_id") is not None and values.get("from_node_id") == values.get(
            "to_node_id"
        ):
            c.fail("to_node_id", "a pipe must join two different nodes")
    elif kind == "station":
        c.required("name", "kind", "inlet_node_id", "outlet_node_id", "inlet_level",
                   "outlet_level", "outlet_setpoint_pa_gauge")
        _coords(c)
        c.choice("kind", STATION_KINDS)
        c.level("inlet_level", levels)
        c.level("outlet_level", levels)
        c.number("capacity_m3h_std", 0, lo_open=True, unit=" m3/h")
        inlet, outlet = levels.get(values.get("inlet_level", "")), levels.get(
            values.get("outlet_level", ""))
        if inlet and outlet and inlet.rank < outlet.rank:
            c.fail("outlet_level", f"a station reduces pressure: outlet level {outlet.code!r} "
                                   f"is above inlet level {inlet.code!r}")
        sp = values.get("outlet_setpoint_pa_gauge")
        if outlet and isinstance(sp, int | float) and not (
            outlet.min_pa_gauge < sp <= outlet.max_pa_gauge
        ):
            c.fail("outlet_setpoint_pa_gauge",
                   f"{sp:g} Pa is outside its outlet level {outlet.code!r} "
                   f"({outlet.min_pa_gauge:g} < p <= {outlet.max_pa_gauge:g} Pa gauge)")
        if values.get("inlet_node_id") is not None and values.get("inlet_node_id") == values.get(
            "outlet_node_id"
        ):
            c.fail("outlet_node_id", "inlet and outlet must be different nodes")
    elif kind == "valve":
        c.required("from_node_id", "to_node_id", "pressure_level")
        _coords(c)
        c.level("pressure_level", levels)
        c.choice("normal_state", {"open", "closed"})
        c.choice("current_state", VALVE_STATES)
        c.number("diameter_m", DIAMETER_MIN_M, DIAMETER_MAX_M, unit=" m")
    elif kind == "link":
        c.required("kind", "from_node_id", "to_node_id", "pressure_level")
        c.choice("kind", LINK_KINDS)
        c.level("pressure_level", levels)
    elif kind == "skz":
        c.required("name")
        _coords(c)
        c.number("rated_voltage_v", 0, 100, lo_open=True, unit=" V")
        c.number("rated_current_a", 0, 100, lo_open=True, unit=" A")
    elif kind == "service_point":
        c.required("node_id", "category")
        _coords(c)
        c.choice("category", SP_CATEGORIES)
        c.number("peak_load_m3h_std", 0, 100_000, unit=" m3/h")
        c.number("annual_volume_m3_std", 0, unit=" m3")
        c.number("min_pressure_pa_gauge", 0, unit=" Pa")
        ck = values.get("critical_kind")
        if values.get("category") == "critical":
            c.required("critical_kind")
            c.choice("critical_kind", CRITICAL_KINDS)
        elif ck is not None:
            c.fail("critical_kind", "only a critical consumer has a critical kind")
    elif kind == "meter":
        c.required("serial", "model", "kind")
        c.choice("kind", METER_KINDS)
    elif kind == "equipment":
        c.required("name", "kind", "station_id")
        c.choice("kind", EQUIPMENT_KINDS)
        if values.get("parent_id") is not None and values.get("parent_id") == asset_id:
            c.fail("parent_id", "equipment cannot be its own parent")
    else:
        raise ValueError(f"unknown asset kind {kind!r}")
    return c.errors


# --- references between assets --------------------------------------------------------------


def check_references(
    kind: AssetKind,
    asset_id: str,
    values: Mapping[str, Any],
    node_levels: Mapping[str, str],
    exists: Mapping[str, frozenset[str] | set[str]] | None = None,
) -> list[FieldError]:
    """Check that an asset's references resolve and that pressure levels meet only at stations.

    Arguments: the asset, `node_levels` (node id → its pressure level code) of every node the
    asset may reference, and `exists` (kind → ids) for other referenced kinds
    (`station`, `pipe`, `service_point`, `equipment`, `area`). Returns the problems found.
    """
    c = _Checker(asset_id, values)
    exists = exists or {}

    def node(field: str, level_field: str | None) -> None:
        nid = values.get(field)
        if nid is None:
            return
        if nid not in node_levels:
            c.fail(field, f"unknown node {nid!r} (dangling end)")
            return
        if level_field is not None:
            want = values.get(level_field)
            got = node_levels[nid]
            if want is not None and got != want:
                c.fail(field, f"node {nid!r} is {got!r} pressure but this {kind} is {want!r}; "
                              "levels meet only through a station")

    def ref(field: str, target: str) -> None:
        v = values.get(field)
        if v is not None and target in exists and v not in exists[target]:
            c.fail(field, f"unknown {target.replace('_', ' ')} {v!r}")

    if kind in {"pipe", "valve", "link"}:
        node("from_node_id", "pressure_level")
        node("to_node_id", "pressure_level")
    elif kind == "station":
        node("inlet_node_id", "inlet_level")
        node("outlet_node_id", "outlet_level")
    elif kind == "service_point":
        node("node_id", None)
    elif kind == "meter":
        ref("service_point_id", "service_point")
        ref("station_id", "station")
    elif kind == "equipment":
        ref("station_id", "station")
        ref("parent_id", "equipment")
    elif kind == "skz":
        for pid in values.get("protected_pipe_ids") or ():
            if "pipe" in exists and pid not in exists["pipe"]:
                c.fail("protected_pipe_ids", f"unknown pipe {pid!r}")
    ref("area_id", "area")
    return c.errors


# --- topology -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Component:
    """A connected part of the network."""

    node_count: int
    sample_node_ids: tuple[str, ...]
    has_source: bool


@dataclass(frozen=True, slots=True)
class TopologyReport:
    """Connected components (through pipes, open valves, links and stations)."""

    components: tuple[Component, ...]

    @property
    def disconnected(self) -> tuple[Component, ...]:
        """Parts not reached from any source (GRS outlet or source node)."""
        return tuple(c for c in self.components if not c.has_source)


def topology_report(
    node_ids: Iterable[str],
    edges: Iterable[tuple[str, str]],
    source_node_ids: Iterable[str],
    sample: int = 5,
) -> TopologyReport:
    """Connected components by union–find; the largest first.

    Arguments: every node id, every edge (node id pairs, stations included as inlet→outlet),
    and the nodes where gas enters. Returns components with a few sample ids each.
    """
    parent: dict[str, str] = {n: n for n in node_ids}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        if a in parent and b in parent:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[ra] = rb
    groups: dict[str, list[str]] = {}
    for n in parent:
        groups.setdefault(find(n), []).append(n)
    sources = {find(s) for s in source_node_ids if s in parent}
    comps = [
        Component(len(members), tuple(sorted(members)[:sample]), root in sources)
        for root, members in groups.items()
    ]
    comps.sort(key=lambda c: (-c.node_count, c.sample_node_ids))
    return TopologyReport(tuple(comps))
