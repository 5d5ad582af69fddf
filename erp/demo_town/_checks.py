"""Hydraulic checks of a generated town, computed from its registry records alone.

They rebuild each network from the records (pipes, open valves, stations, service points),
take the design loads from the service points by the coincidence rules of `_loads`, and solve
on the shortest-path tree from the feeding station with the same helpers the generator sized
the pipes with — so they verify the records, not the generator's memory of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from erp.demo_town._hydraulics import (
    STANDARD_PRESSURE_PA,
    HydraulicLink,
    low_pressure_profile_pa,
    medium_pressure_profile_pa,
    spanning_tree,
    tree_flows_m3h,
    velocity_m_s,
)
from erp.demo_town._loads import consumer_group, group_shares_m3h
from erp.demo_town._model import DemoTown

__all__ = [
    "DistrictHydraulics",
    "MediumHydraulics",
    "check_low_pressure",
    "check_medium_pressure",
    "district_design_flows",
    "district_hydraulics",
    "medium_hydraulics",
]


@dataclass(frozen=True, slots=True)
class DistrictHydraulics:
    """A low-pressure district at its design peak (spanning-tree solution).

    Flow in m³/h std; pressures in Pa gauge, by node id; velocity in m/s.
    """

    area_id: str
    station_id: str
    design_flow_m3h: float
    min_pressure_pa: float
    max_velocity_m_s: float
    pressures_pa: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class MediumHydraulics:
    """The medium-pressure network at the design peak: total flow (m³/h std), the lowest node
    pressure (Pa gauge) and the highest working velocity (m/s, at the local pressure)."""

    total_flow_m3h: float
    min_pressure_pa: float
    max_velocity_m_s: float
    pressures_pa: Mapping[str, float]


def _by_kind(town: DemoTown) -> dict[str, list[tuple[str, Mapping[str, Any]]]]:
    out: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for r in town.records:
        if r.values.get("status", "in_service") == "in_service":
            out.setdefault(r.kind, []).append((r.id, r.values))
    return out


def _links(kinds: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]], level: str,
           area_id: str | None) -> list[HydraulicLink]:
    links = [HydraulicLink(i, v["from_node_id"], v["to_node_id"], v["length_m"],
                           v["inner_diameter_m"], v["roughness_m"])
             for i, v in kinds.get("pipe", ())
             if v["pressure_level"] == level and (area_id is None or v["area_id"] == area_id)]
    links += [HydraulicLink(i, v["from_node_id"], v["to_node_id"], 0.0,
                            v.get("diameter_m") or 0.0, 0.0, True)
              for i, v in kinds.get("valve", ())
              if v["pressure_level"] == level and v.get("current_state", "open") == "open"
              and (area_id is None or v["area_id"] == area_id)]
    return links


def _district_loads(kinds: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]],
                    ) -> dict[str, dict[str, float]]:
    """Coincident node loads (m³/h std) of each low-pressure district, by area and node."""
    low = {i for i, v in kinds.get("node", ()) if v["pressure_level"] == "low"}
    points: dict[str, list[Mapping[str, Any]]] = {}
    for _, v in kinds.get("service_point", ()):
        if v["node_id"] in low:
            points.setdefault(v["area_id"], []).append(v)
    out: dict[str, dict[str, float]] = {}
    for area, sps in points.items():
        groups = [(consumer_group(v["category"], v["peak_load_m3h_std"],
                                  v["annual_volume_m3_std"]), v["peak_load_m3h_std"]) for v in sps]
        loads = out.setdefault(area, {})
        for v, q in zip(sps, group_shares_m3h(groups), strict=True):
            loads[v["node_id"]] = loads.get(v["node_id"], 0.0) + q
    return out


def district_design_flows(town: DemoTown) -> dict[str, float]:
    """Design hourly flow (m³/h std) of each low-pressure district, by area id."""
    return {area: sum(loads.values()) for area, loads in _district_loads(_by_kind(town)).items()}


def district_hydraulics(town: DemoTown) -> dict[str, DistrictHydraulics]:
    """Each low-pressure district solved at its design peak on its spanning tree, by area id."""
    kinds = _by_kind(town)
    elevations = {i: v.get("elevation_m", 0.0) for i, v in kinds.get("node", ())}
    loads = _district_loads(kinds)
    out = {}
    for sid, st in kinds.get("station", ()):
        if st["outlet_level"] != "low":
            continue
        area = st["area_id"]
        links = _links(kinds, "low", area)
        tree = spanning_tree(st["outlet_node_id"], links)
        flows = tree_flows_m3h(tree, loads.get(area, {}))
        pressures = low_pressure_profile_pa(tree, links, flows, st["outlet_setpoint_pa_gauge"],
                                            elevations)
        vmax = max((velocity_m_s(q, links[i].diameter_m) for i, q in flows.items()
                    if not links[i].lossless), default=0.0)
        out[area] = DistrictHydraulics(area, sid, sum(loads.get(area, {}).values()),
                                       min(pressures.values()), vmax, pressures)
    return out


def check_low_pressure(town: DemoTown) -> dict[str, float]:
    """The lowest node pressure (Pa gauge) of each low-pressure district at its design peak."""
    return {area: h.min_pressure_pa for area, h in district_hydraulics(town).items()}


def medium_hydraulics(town: DemoTown) -> MediumHydraulics:
    """The medium-pressure network solved at the design peak on the tree from the GRS.

    Loads: industrial and critical consumers at their own peak, and each district station's
    inlet at its district's design flow.
    """
    kinds = _by_kind(town)
    medium = {i for i, v in kinds.get("node", ()) if v["pressure_level"] == "medium"}
    loads: dict[str, float] = {}
    for _, v in kinds.get("service_point", ()):
        if v["node_id"] in medium:
            loads[v["node_id"]] = loads.get(v["node_id"], 0.0) + v["peak_load_m3h_std"]
    flows_by_area = district_design_flows(town)
    root, setpoint = "", 0.0
    for _, st in kinds.get("station", ()):
        if st["inlet_level"] == "medium":
            node = st["inlet_node_id"]
            loads[node] = loads.get(node, 0.0) + flows_by_area.get(st["area_id"], 0.0)
        if st["outlet_level"] == "medium":
            root, setpoint = st["outlet_node_id"], st["outlet_setpoint_pa_gauge"]
    links = _links(kinds, "medium", None)
    tree = spanning_tree(root, links)
    flows = tree_flows_m3h(tree, loads)
    pressures = medium_pressure_profile_pa(tree, links, flows, setpoint)
    vmax = 0.0
    for node, i in tree.parent_link.items():
        if not links[i].lossless:
            ratio = STANDARD_PRESSURE_PA / (pressures[node] + STANDARD_PRESSURE_PA)
            vmax = max(vmax, velocity_m_s(flows[i], links[i].diameter_m) * ratio)
    return MediumHydraulics(sum(loads.values()), min(pressures.values()), vmax, pressures)


def check_medium_pressure(town: DemoTown) -> float:
    """The lowest medium-pressure node pressure (Pa gauge) at the design peak."""
    return medium_hydraulics(town).min_pressure_pa
