"""The hydraulic twin's view of a registry network: asset records → `NetworkDescription`.

`description_from_records` turns registry asset records (`erp.services.registry.AssetRecord`,
as the GeoJSON and GasLib readers produce them and as the live twin builds them from database
rows with `row_values`) into the plain, SI description `twin_jax` compiles. `load_network_file`
does the same for a file (`gasops twin solve`), `read_gaslib_scenario` reads a GasLib `.scn`
nomination. Nothing here solves; see `twin_jax` for that.

Mapping (docs/network-format.md, "Solving a network file with the twin"):

- Only assets whose `status` is `in_service` (or absent) take part; an in-service asset joined
  to a node that does not take part is reported by `compile_network` (`NetworkError`), not
  silently dropped.
- node → `Node` (elevation). A node of kind `source` is also a fixed-pressure `Source`; its
  pressure, first found wins: `source_pressure_pa_gauge[node id]`; the node's GasLib
  `pressure_max_pa_abs` (props) made gauge; the maximum of its pressure level
  (`level_max_pa_gauge[level]`, given by the caller, e.g. from the `pressure_levels` table);
  otherwise `ValueError` naming the node. A node of kind `sink` (GasLib exit) is also a
  `Consumer` (id = node id) taking `demand_kg_s[node id]`, 0 when absent.
- pipe → `Pipe` (inner diameter, roughness).
- valve → `Valve`: opening 1 when `current_state` is `open`, else 0 (a `throttled` valve
  counts as shut); diameter from the record or else the largest adjoining pipe's, else 0.1 m;
  loss coefficient `OPEN_VALVE_LOSS_COEFFICIENT`; operable (isolation may use it). GasLib
  valves are registry valves and map the same way.
- station (GRS/GRP/ShRP) → `Regulator` inlet → outlet at `outlet_setpoint_pa_gauge`.
- link `control_valve` → `Regulator`; link `compressor` → `Regulator(boost=True)`: it holds
  its outlet at the set-point whatever the inlet pressure (an ideal compressor station, as
  pandapipes' pressure control is). Set-point, first found wins: `setpoint_pa_gauge[link id]`;
  `params["pressure_out_max_pa_abs"]` (GasLib `pressureOutMax`) made gauge; the highest
  source pressure of the network — for a control valve that is, in effect, a fully open
  one-way link; for a compressor, an outlet held at the supply pressure.
- link `short_pipe` → `Valve` (open, loss 0, diameter `SHORT_PIPE_DIAMETER_M`, not
  operable); link `resistor` → `Valve` with the resistor's drag factor as loss coefficient and
  its diameter (not operable).
- service point → `Consumer` at its node: demand its coincident share of the design flow of
  its area (`peak_load_m3h_std` times the SP 42-101-2003 simultaneity factor of its consumer
  group in that area, `erp.demo_town._loads`: the winter design peak the network is sized
  for; the sum of own peaks would be several times that) × ρ(20 °C, 101.325 kPa) / 3600 kg/s,
  unless `demand_kg_s[service point id]` is given; `min_pressure_pa_gauge` (0 when
  absent); critical when `critical_kind` is set.
- area, meter, equipment and SKZ records play no part.

Units. gasops registry volumes (`…_m3h_std`) are at 20 °C and 101.325 kPa (Russian standard
conditions, docs/network-format.md); GasLib volumes at 0 °C and 1.01325 bar ("normal"). Both are
turned into mass with the density of the description's gas at that reference state,
ρ_ref = ρ_std · (p_ref / p_std) · (T_std / T_ref) (ideal gas between two near-atmospheric states),
so 1 m³ at 20 °C holds 273.15/293.15 of the mass of 1 m³ at 0 °C. GasLib pressures are absolute
bar; GasLib's own gauge convention ("barg") is absolute minus 1.01325 bar, and so is ours here
(`GASLIB_GAUGE_REFERENCE_PA`). At height 0 (every node of GasLib-11 and GasLib-40) that is
exactly gauge against the twin's barometric ambient; on a hill it is off by the ambient's
fall (about 12 Pa per metre), against 40–80 bar.

GasLib set-up (`load_network_file`; `gasops twin solve`; tests/numerics/test_gaslib.py):

- Scenario: the `.scn` next to the `.net` (same stem) unless one is given. Exits take their
  nominated flow (`demand_kg_s`). Entries are fixed-pressure slacks at their nominated *upper*
  pressure bound (GasLib-40: 80 barg); an entry whose nomination has no pressure (GasLib-11)
  takes its node's `pressureMax` (GasLib-11: 70 bar absolute = 68.98675 barg). The entries'
  nominated flows are not imposed: with every entry at a fixed pressure the network decides
  the split (the exits' total is delivered all the same).
- Valves: open (the GasLib reader sets every valve's current state to open).
- Compressor stations: GasLib gives no set-points (a station's mode — active, bypass, closed —
  is what nomination validation decides), so the twin offers two plain set-ups:
  `compressors="boost"` (default): a boost regulator holding its outlet at `pressureOutMax`.
  GasLib-11 solves so: CS01 passes 68.99 barg through, CS02 lifts 65.6 to 68.99 barg.
  `compressors="bypass"`: every station open and lossless (its internal bypass). GasLib-40
  needs this one: its stations' maximum outlet (70 barg) lies below its entries' 80 barg, so
  held there they starve its western half (compressorStation_6's outlet pipe would carry
  nothing and compressorStation_1 would have to feed the half through 200 km of pipe, and
  compressorStation_3 sits in a loop where it would only circulate gas); neither the twin nor
  pandapipes converges on it. In bypass GasLib-40 solves with pressures from
  42.7 to 80 barg. GasLib-11 solves in bypass too.
- Gas: the description's `gas` (default `GasProperties()`, pandapipes' hgas at 10 °C), not the
  GasLib file's gas data (its normDensity 0.785 kg/m³, calorific value and pseudocritical
  data stay in the node props, unused).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from erp.exchange.gaslib import NS_GAS, convert_unit, parse_gaslib
from erp.exchange.geojson import load_json_file, parse_feature_collection
from erp.services.registry import AssetRecord
from twin_jax.network import (
    CompiledNetwork,
    Consumer,
    NetworkDescription,
    Node,
    Pipe,
    Regulator,
    Source,
    Valve,
)
from twin_jax.physics.gas import GasProperties
from twin_jax.solve import Result, Status

__all__ = [
    "COMPRESSOR_MODES",
    "DEFAULT_VALVE_DIAMETER_M",
    "GASLIB_GAUGE_REFERENCE_PA",
    "GASLIB_NORMAL_PRESSURE_PA",
    "GASLIB_NORMAL_TEMPERATURE_K",
    "OPEN_VALVE_LOSS_COEFFICIENT",
    "REGISTRY_STANDARD_PRESSURE_PA",
    "REGISTRY_STANDARD_TEMPERATURE_K",
    "SHIPPED_LEVEL_MAX_PA_GAUGE",
    "SHORT_PIPE_DIAMETER_M",
    "density_at",
    "description_from_records",
    "load_network_file",
    "read_gaslib_scenario",
    "solve_report",
]

REGISTRY_STANDARD_TEMPERATURE_K = 293.15
"""gasops registry volumes (`peak_load_m3h_std`, `capacity_m3h_std`) are at 20 °C …"""
REGISTRY_STANDARD_PRESSURE_PA = 101_325.0
"""… and 101.325 kPa (Russian standard conditions, GOST 2939)."""
GASLIB_NORMAL_TEMPERATURE_K = 273.15
"""GasLib volumes (`1000m_cube_per_hour`, `flow_…_m3s_norm`) are at 0 °C …"""
GASLIB_NORMAL_PRESSURE_PA = 101_325.0
"""… and 1.01325 bar (normal conditions)."""
GASLIB_GAUGE_REFERENCE_PA = 101_325.0
"""GasLib's `barg` is bar absolute minus 1.01325 bar; absolute GasLib values are made gauge so."""

OPEN_VALVE_LOSS_COEFFICIENT = 0.3
"""ζ of a fully open line valve. Full-bore ball and gate valves, which is what distribution
shut-off valves are, have ζ ≈ 0.1–0.3 open (Idelchik, *Handbook of Hydraulic Resistance*,
diagram 9-1; Crane TP-410: K ≈ 3–8·f_T); 0.3 is the conservative end. It matters little: a
valve's loss is that of about ten diameters of pipe."""
DEFAULT_VALVE_DIAMETER_M = 0.1
"""Bore of a valve whose record has none and that no pipe of the network touches."""
SHORT_PIPE_DIAMETER_M = 1.0
"""Bore given to a GasLib short pipe (a lossless connection: ζ = 0, so its size is moot)."""

SHIPPED_LEVEL_MAX_PA_GAUGE: Mapping[str, float] = {"low": 5_000.0, "medium": 300_000.0,
                                                   "high": 10_000_000.0}
"""The pressure levels' upper bounds as shipped (migration 0001); `load_network_file` uses
them for sources of a GeoJSON file that gives no pressure."""

COMPRESSOR_MODES = ("boost", "bypass")
"""How compressor links are modelled: boost regulators, or open lossless connections."""

_IN_SERVICE = "in_service"


def density_at(gas: GasProperties, temperature_k: float, pressure_pa: float) -> float:
    """Density (kg/m³) of `gas` at a reference state near atmospheric pressure (ideal gas).

    ρ = ρ_std · (p / p_std) · (T_std / T): converts the gas's standard density to another
    metering reference state (20 °C for gasops volumes, 0 °C for GasLib's).
    """
    return (gas.density_std_kg_m3 * (pressure_pa / gas.standard_pressure_pa)
            * (gas.standard_temperature_k / temperature_k))


def _design_shares_m3h(service_points: Sequence[AssetRecord]) -> dict[str, float]:
    """Each service point's coincident share of its area's design flow, m³/h std (20 °C)."""
    from erp.demo_town._loads import consumer_group, group_shares_m3h

    by_area: dict[Any, list[AssetRecord]] = {}
    for r in service_points:
        by_area.setdefault(r.values.get("area_id"), []).append(r)
    out: dict[str, float] = {}
    for recs in by_area.values():
        pairs = [(consumer_group(str(r.values.get("category") or "household"),
                                 float(r.values.get("peak_load_m3h_std") or 0.0),
                                 float(r.values.get("annual_volume_m3_std") or 0.0)),
                  float(r.values.get("peak_load_m3h_std") or 0.0)) for r in recs]
        out.update(zip((r.id for r in recs), group_shares_m3h(pairs), strict=True))
    return out


def _takes_part(values: Mapping[str, Any]) -> bool:
    return values.get("status") in (None, _IN_SERVICE)


def _num(values: Mapping[str, Any], key: str) -> float | None:
    v = values.get(key)
    return None if v is None else float(v)


def description_from_records(
    records: Sequence[AssetRecord], *, gas: GasProperties | None = None,
    source_pressure_pa_gauge: Mapping[str, float] | None = None,
    demand_kg_s: Mapping[str, float] | None = None,
    setpoint_pa_gauge: Mapping[str, float] | None = None,
    level_max_pa_gauge: Mapping[str, float] | None = None,
    compressors: str = "boost",
) -> NetworkDescription:
    """The twin's description of the network the registry `records` describe.

    Arguments: `records` (any kinds; see the module docstring for what maps to what); `gas`
    (default `GasProperties()`); `source_pressure_pa_gauge` by source node id, overriding the
    records; `demand_kg_s` by service point id or sink node id, overriding the records;
    `setpoint_pa_gauge` by station or link id, overriding the records; `level_max_pa_gauge`
    by pressure level code, the last fallback for a source's pressure; `compressors`:
    `"boost"` (a compressor link holds its outlet set-point) or `"bypass"` (it is an open,
    lossless connection, as a station in bypass mode).
    Raises `ValueError` listing every problem: a source whose pressure cannot be determined,
    a resistor without drag factor or diameter, an unknown link kind, override ids that name
    no asset of the records.
    """
    if compressors not in COMPRESSOR_MODES:
        raise ValueError(f"compressors must be one of {COMPRESSOR_MODES}, got {compressors!r}")
    gas = gas or GasProperties()
    src_p = dict(source_pressure_pa_gauge or {})
    demands = dict(demand_kg_s or {})
    setpoints = dict(setpoint_pa_gauge or {})
    levels = dict(level_max_pa_gauge or {})
    problems: list[str] = []
    all_ids = {r.id for r in records}
    for label, given in (("source_pressure_pa_gauge", src_p), ("demand_kg_s", demands),
                         ("setpoint_pa_gauge", setpoints)):
        unknown = sorted(set(given) - all_ids)
        if unknown:
            problems.append(f"{label}: no asset with id {', '.join(map(repr, unknown))}")

    live = [r for r in records if _takes_part(r.values)]
    by_kind: dict[str, list[AssetRecord]] = {}
    for r in live:
        by_kind.setdefault(r.kind, []).append(r)

    nodes: list[Node] = []
    sources: list[Source] = []
    consumers: list[Consumer] = []
    for r in by_kind.get("node", []):
        v = r.values
        nodes.append(Node(r.id, float(v.get("elevation_m") or 0.0)))
        kind = v.get("kind", "junction")
        if kind == "source":
            pressure = _source_pressure(r, src_p, levels)
            if pressure is None:
                problems.append(
                    f"{r.id}: source node has no pressure: none is given for it, its props hold "
                    f"no GasLib pressure_max_pa_abs, and no maximum is known for its pressure "
                    f"level {v.get('pressure_level')!r}")
            else:
                sources.append(Source(r.id, r.id, pressure))
        elif kind == "sink":
            consumers.append(Consumer(r.id, r.id, float(demands.get(r.id, 0.0))))

    pipes = [Pipe(r.id, r.values["from_node_id"], r.values["to_node_id"],
                  float(r.values["length_m"]), float(r.values["inner_diameter_m"]),
                  float(r.values["roughness_m"]))
             for r in by_kind.get("pipe", [])]
    widest: dict[str, float] = {}
    for p in pipes:
        for n in (p.from_node, p.to_node):
            widest[n] = max(widest.get(n, 0.0), p.diameter_m)

    valves: list[Valve] = []
    for r in by_kind.get("valve", []):
        v = r.values
        a, b = v["from_node_id"], v["to_node_id"]
        diameter = (_num(v, "diameter_m") or max(widest.get(a, 0.0), widest.get(b, 0.0))
                    or DEFAULT_VALVE_DIAMETER_M)
        valves.append(Valve(r.id, a, b, diameter, OPEN_VALVE_LOSS_COEFFICIENT,
                            opening=1.0 if v.get("current_state", "open") == "open" else 0.0,
                            operable=True))

    regulators: list[Regulator] = []
    for r in by_kind.get("station", []):
        v = r.values
        regulators.append(Regulator(
            r.id, v["inlet_node_id"], v["outlet_node_id"],
            float(setpoints.get(r.id, v["outlet_setpoint_pa_gauge"]))))

    supply_pa = max((s.pressure_pa_gauge for s in sources), default=0.0)
    for r in by_kind.get("link", []):
        v = r.values
        kind = v.get("kind")
        params = v.get("params") or {}
        a, b = v["from_node_id"], v["to_node_id"]
        if kind == "compressor" and compressors == "bypass":
            valves.append(Valve(r.id, a, b, SHORT_PIPE_DIAMETER_M, 0.0, opening=1.0,
                                operable=False))
        elif kind in ("compressor", "control_valve"):
            out_max = params.get("pressure_out_max_pa_abs")
            sp = setpoints.get(r.id)
            if sp is None:
                sp = (float(out_max) - GASLIB_GAUGE_REFERENCE_PA if out_max is not None
                      else supply_pa)
            regulators.append(Regulator(r.id, a, b, float(sp), boost=kind == "compressor"))
        elif kind == "short_pipe":
            valves.append(Valve(r.id, a, b, SHORT_PIPE_DIAMETER_M, 0.0, opening=1.0,
                                operable=False))
        elif kind == "resistor":
            drag, diameter = params.get("drag_factor"), params.get("diameter_m")
            if drag is None or diameter is None:
                problems.append(f"{r.id}: resistor needs drag_factor and diameter_m in params")
                continue
            valves.append(Valve(r.id, a, b, float(diameter), float(drag), opening=1.0,
                                operable=False))
        else:
            problems.append(f"{r.id}: unknown link kind {kind!r}")

    rho_std = density_at(gas, REGISTRY_STANDARD_TEMPERATURE_K, REGISTRY_STANDARD_PRESSURE_PA)
    design = _design_shares_m3h(by_kind.get("service_point", []))
    for r in by_kind.get("service_point", []):
        v = r.values
        if r.id in demands:
            demand = float(demands[r.id])
        else:
            demand = design[r.id] * rho_std / 3600.0
        consumers.append(Consumer(
            r.id, v["node_id"], demand,
            min_pressure_pa_gauge=float(v.get("min_pressure_pa_gauge") or 0.0),
            critical=v.get("critical_kind") is not None))

    if problems:
        raise ValueError("cannot build the twin's network: " + "; ".join(problems))
    return NetworkDescription(nodes=nodes, pipes=pipes, sources=sources, valves=valves,
                              regulators=regulators, consumers=consumers, gas=gas)


def _source_pressure(r: AssetRecord, given: Mapping[str, float],
                     levels: Mapping[str, float]) -> float | None:
    if r.id in given:
        return float(given[r.id])
    props = r.values.get("props") or {}
    if props.get("pressure_max_pa_abs") is not None:
        return float(props["pressure_max_pa_abs"]) - GASLIB_GAUGE_REFERENCE_PA
    level = r.values.get("pressure_level")
    if level in levels:
        return float(levels[level])
    return None


# --- GasLib scenarios -------------------------------------------------------------------------


def _scn_pressure_pa_gauge(el: ET.Element, where: str) -> float:
    raw, unit = el.get("value"), el.get("unit")
    if raw is None or unit is None:
        raise ValueError(f"{where}: pressure needs value and unit")
    if unit == "barg":
        return convert_unit(raw.strip(), "bar", "pressure")
    return convert_unit(raw.strip(), unit, "pressure") - GASLIB_GAUGE_REFERENCE_PA


def read_gaslib_scenario(path: str | Path, *, gas: GasProperties | None = None
                         ) -> tuple[dict[str, float], dict[str, float]]:
    """A GasLib `.scn` nomination as `(demand_kg_s, source_pressure_pa_gauge)` by node id.

    Only the file's first `scenario` is read. Exits: their nominated flow (`bound="both"`, or
    the mean of the lower and upper bound) in 1000 m³/h (or any GasLib flow unit) at normal
    conditions (0 °C, 1.01325 bar), × the normal density of `gas` (default `GasProperties()`)
    → kg/s. Entries: the nominated *upper* pressure bound (`both` if so given, the lower bound
    if it is the only one), `barg` as is, absolute units minus 1.01325 bar; an entry without
    pressure bounds is left out (its node's own data decides). Entries' flows are not read: the
    twin holds entries at a fixed pressure. Raises `ValueError` for a malformed file.
    """
    path = Path(path)
    gas = gas or GasProperties()
    rho_n = density_at(gas, GASLIB_NORMAL_TEMPERATURE_K, GASLIB_NORMAL_PRESSURE_PA)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path.name}: not well-formed XML: {exc}") from None
    g = f"{{{NS_GAS}}}"
    scenario = root.find(f"{g}scenario")
    if root.tag != f"{g}boundaryValue" or scenario is None:
        raise ValueError(f"{path.name}: not a GasLib scenario (boundaryValue/scenario in "
                         f"namespace {NS_GAS})")
    demand: dict[str, float] = {}
    pressure: dict[str, float] = {}
    for node in scenario.iterfind(f"{g}node"):
        nid, kind = node.get("id"), node.get("type")
        if not nid or kind not in ("entry", "exit"):
            raise ValueError(f"{path.name}: scenario node {nid!r} needs an id and type "
                             f"entry or exit")
        where = f"{path.name}: {nid}"
        if kind == "exit":
            flows = {el.get("bound"): el for el in node.iterfind(f"{g}flow")}
            if "both" in flows:
                picked = [flows["both"]]
            elif "lower" in flows and "upper" in flows:
                picked = [flows["lower"], flows["upper"]]
            else:
                raise ValueError(f"{where}: exit needs a flow with bound both, or lower and upper")
            values = []
            for el in picked:
                raw, unit = el.get("value"), el.get("unit")
                if raw is None or unit is None:
                    raise ValueError(f"{where}: flow needs value and unit")
                values.append(convert_unit(raw.strip(), unit, "volume_flow"))
            demand[nid] = sum(values) / len(values) * rho_n
        else:
            bounds = {el.get("bound"): el for el in node.iterfind(f"{g}pressure")}
            el = bounds.get("upper", bounds.get("both", bounds.get("lower")))
            if el is not None:
                pressure[nid] = _scn_pressure_pa_gauge(el, where)
    return demand, pressure


# --- files ------------------------------------------------------------------------------------


def load_network_file(path: str | Path, scenario: str | Path | None = None, *,
                      gas: GasProperties | None = None, compressors: str = "boost"
                      ) -> NetworkDescription:
    """The twin's description of a network file, by extension.

    `.net`: GasLib (`parse_gaslib`), with the nominations of `scenario` or, when none is
    given, of the `.scn` of the same stem next to it if there is one (see the module
    docstring for the set-up); `compressors` as in `description_from_records`.
    `.geojson` / `.json`: a GeoJSON FeatureCollection (`parse_feature_collection`); sources
    without pressure take their level's shipped maximum (`SHIPPED_LEVEL_MAX_PA_GAUGE`); a
    scenario is not accepted.
    Raises `FileNotFoundError`, `ValidationFailed` (the file breaks its format; every problem
    listed) or `ValueError` (unknown extension, a bad scenario, a network the twin cannot
    model).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if suffix == ".net":
        records = parse_gaslib(path)
        scn = Path(scenario) if scenario is not None else path.with_suffix(".scn")
        if scenario is not None or scn.is_file():
            if not scn.is_file():
                raise FileNotFoundError(f"no such file: {scn}")
            demand, pressure = read_gaslib_scenario(scn, gas=gas)
        else:
            demand, pressure = {}, {}
        return description_from_records(records, gas=gas, source_pressure_pa_gauge=pressure,
                                        demand_kg_s=demand, compressors=compressors)
    if suffix in (".geojson", ".json"):
        if scenario is not None:
            raise ValueError("a scenario applies to GasLib .net files only")
        return description_from_records(parse_feature_collection(load_json_file(path)), gas=gas,
                                        level_max_pa_gauge=SHIPPED_LEVEL_MAX_PA_GAUGE,
                                        compressors=compressors)
    raise ValueError(f"{path.name}: unknown network file type {path.suffix!r}; expected .net "
                     f"(GasLib), .geojson or .json (GeoJSON)")


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def solve_report(net: CompiledNetwork, result: Result) -> dict[str, Any]:
    """A solve's outcome as plain JSON-ready data (`gasops twin solve` writes it).

    `{"status", "message", "iterations", "residual", "nodes": {id: {"pressure_pa_gauge",
    "supplied"}}, "branches": {id: {"mass_flow_kg_s"}}, "consumers_below_minimum": [ids]}`:
    gauge against the ambient at each node's elevation; flows positive from a branch's
    from-node (inlet) to its to-node (outlet); a consumer is below its minimum when its node's
    pressure is under its `min_pressure_pa_gauge`. Non-finite numbers become null.
    """
    status = Status(int(result.status))
    gauge = np.asarray(result.state.pressure_pa_abs) - net.ambient_pa
    supplied = np.asarray(result.state.supplied)
    flow = np.asarray(result.state.mass_flow_kg_s)
    below = [cid for cid, node, minimum in zip(
        net.consumer_ids, net.consumer_node.tolist(), net.consumer_min_pa_gauge.tolist(),
        strict=True) if not gauge[node] >= minimum]
    return {
        "status": status.name.lower(),
        "message": status.message,
        "iterations": int(result.iterations),
        "residual": _finite_or_none(float(result.residual)),
        "nodes": {nid: {"pressure_pa_gauge": _finite_or_none(float(gauge[i])),
                        "supplied": bool(supplied[i])} for i, nid in enumerate(net.node_ids)},
        "branches": {bid: {"mass_flow_kg_s": _finite_or_none(float(flow[k]))}
                     for k, bid in enumerate(net.branch_ids)},
        "consumers_below_minimum": below,
    }
