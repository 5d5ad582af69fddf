"""Registry records → the twin's network description: the conversion rules of server/twin_model.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from erp.services.registry import AssetRecord
from server.twin_model import (
    DEFAULT_VALVE_DIAMETER_M,
    OPEN_VALVE_LOSS_COEFFICIENT,
    description_from_records,
    load_network_file,
    read_gaslib_scenario,
)
from twin_jax import GasProperties, compile_network

GASLIB = Path(__file__).resolve().parents[2] / "data" / "gaslib"
GEOJSON = Path(__file__).resolve().parents[2] / "data" / "geojson"


def node(nid: str, kind: str = "junction", **values: Any) -> AssetRecord:
    return AssetRecord("node", nid, {"kind": kind, "pressure_level": "medium", **values})


def pipe(pid: str, a: str, b: str, diameter: float = 0.2, **values: Any) -> AssetRecord:
    return AssetRecord("pipe", pid, {"from_node_id": a, "to_node_id": b, "length_m": 100.0,
                                     "inner_diameter_m": diameter, "roughness_m": 1e-4, **values})


def valve(vid: str, a: str, b: str, **values: Any) -> AssetRecord:
    return AssetRecord("valve", vid, {"from_node_id": a, "to_node_id": b, "diameter_m": None,
                                      "current_state": "open", **values})


def link(lid: str, a: str, b: str, kind: str, **params: Any) -> AssetRecord:
    return AssetRecord("link", lid, {"from_node_id": a, "to_node_id": b, "kind": kind,
                                     "params": params or None})


SOURCE = {"S": 300_000.0}


def test_only_in_service_assets_take_part() -> None:
    records = [
        AssetRecord("area", "A", {"name": "North"}),
        node("S", "source"), node("A", status="in_service"), node("B"),
        node("OLD", status="retired"), node("NEW", status="planned"),
        pipe("P1", "S", "A"), pipe("P2", "A", "B", status="in_service"),
        pipe("P3", "A", "B", status="out_of_service"),
        valve("V1", "A", "B", status="retired"),
        AssetRecord("station", "GRP-OFF", {"inlet_node_id": "A", "outlet_node_id": "B",
                                           "outlet_setpoint_pa_gauge": 3000.0,
                                           "status": "out_of_service"}),
        AssetRecord("service_point", "SP-GONE", {"node_id": "B", "peak_load_m3h_std": 5.0,
                                                 "status": "retired"}),
        AssetRecord("meter", "M1", {"service_point_id": "SP-GONE"}),
        AssetRecord("skz", "SKZ1", {"name": "x"}),
    ]
    desc = description_from_records(records, source_pressure_pa_gauge=SOURCE)
    assert [n.id for n in desc.nodes] == ["S", "A", "B"]
    assert [p.id for p in desc.pipes] == ["P1", "P2"]
    assert not desc.valves and not desc.regulators and not desc.consumers
    assert [(s.id, s.node, s.pressure_pa_gauge) for s in desc.sources] == [("S", "S", 300_000.0)]
    compile_network(desc)  # a consistent network


def test_in_service_pipe_on_a_retired_node_is_reported_by_compile() -> None:
    records = [node("S", "source"), node("A", status="retired"), pipe("P1", "S", "A")]
    desc = description_from_records(records, source_pressure_pa_gauge=SOURCE)
    with pytest.raises(ValueError, match="P1: to_node 'A' is not a node"):
        compile_network(desc)


def test_valves_opening_diameter_and_loss() -> None:
    records = [
        node("S", "source"), node("A"), node("B"), node("C"), node("D"), node("E"),
        pipe("P1", "S", "A", diameter=0.15), pipe("P2", "A", "B", diameter=0.3),
        valve("V-OPEN", "A", "B"),
        valve("V-SHUT", "B", "C", current_state="closed", diameter_m=0.05),
        valve("V-THROTTLED", "B", "C", current_state="throttled"),
        valve("V-BARE", "D", "E"),
    ]
    v = {x.id: x for x in description_from_records(records, source_pressure_pa_gauge=SOURCE).valves}
    assert v["V-OPEN"].opening == 1.0 and v["V-OPEN"].diameter_m == 0.3  # widest adjoining pipe
    assert v["V-SHUT"].opening == 0.0 and v["V-SHUT"].diameter_m == 0.05  # the record's own
    assert v["V-THROTTLED"].opening == 0.0  # only "open" counts as open
    assert v["V-BARE"].diameter_m == DEFAULT_VALVE_DIAMETER_M  # no pipe touches it
    assert all(x.loss_coefficient == OPEN_VALVE_LOSS_COEFFICIENT and x.operable for x in v.values())


def test_station_becomes_a_regulator() -> None:
    records = [node("S", "source"), node("IN"), node("OUT"), pipe("P1", "S", "IN"),
               AssetRecord("station", "GRP-1", {"kind": "GRP", "inlet_node_id": "IN",
                                                "outlet_node_id": "OUT",
                                                "outlet_setpoint_pa_gauge": 3000.0})]
    (reg,) = description_from_records(records, source_pressure_pa_gauge=SOURCE).regulators
    assert (reg.id, reg.inlet_node, reg.outlet_node, reg.setpoint_pa_gauge, reg.boost) == (
        "GRP-1", "IN", "OUT", 3000.0, False)
    (reg,) = description_from_records(records, source_pressure_pa_gauge=SOURCE,
                                      setpoint_pa_gauge={"GRP-1": 2500.0}).regulators
    assert reg.setpoint_pa_gauge == 2500.0


def test_gaslib_links() -> None:
    records = [node("S", "source", props={"pressure_max_pa_abs": 7_101_325.0}),
               node("A"), node("B"), node("C"), node("D"), node("E"),
               link("CS", "S", "A", "compressor", pressure_out_max_pa_abs=6_101_325.0),
               link("CV", "A", "B", "control_valve"),
               link("SHORT", "B", "C", "short_pipe"),
               link("R", "C", "D", "resistor", drag_factor=2.5, diameter_m=0.6)]
    desc = description_from_records(records)
    reg = {r.id: r for r in desc.regulators}
    assert reg["CS"].boost and reg["CS"].setpoint_pa_gauge == pytest.approx(6_000_000.0)
    # no pressureOutMax: held at the highest source pressure, i.e. a fully open one-way link
    assert not reg["CV"].boost and reg["CV"].setpoint_pa_gauge == pytest.approx(7_000_000.0)
    val = {v.id: v for v in desc.valves}
    assert (val["SHORT"].opening, val["SHORT"].loss_coefficient, val["SHORT"].diameter_m) == (
        1.0, 0.0, 1.0)
    assert (val["R"].loss_coefficient, val["R"].diameter_m, val["R"].operable) == (2.5, 0.6, False)
    bypass = description_from_records(records, compressors="bypass")
    assert [r.id for r in bypass.regulators] == ["CV"]
    cs = next(v for v in bypass.valves if v.id == "CS")
    assert (cs.from_node, cs.to_node, cs.opening, cs.loss_coefficient) == ("S", "A", 1.0, 0.0)
    with pytest.raises(ValueError, match="compressors must be one of"):
        description_from_records(records, compressors="off")


def test_link_problems_are_listed() -> None:
    records = [node("S", "source"), node("A"),
               link("R", "S", "A", "resistor", drag_factor=1.0),
               link("X", "S", "A", "wormhole")]
    with pytest.raises(ValueError) as err:
        description_from_records(records, source_pressure_pa_gauge=SOURCE)
    assert "R: resistor needs drag_factor and diameter_m" in str(err.value)
    assert "X: unknown link kind 'wormhole'" in str(err.value)


def test_service_point_demand_is_converted_from_20_degrees() -> None:
    gas = GasProperties(density_std_kg_m3=0.73, standard_temperature_k=273.15)
    records = [node("S", "source"), node("A"), pipe("P1", "S", "A"),
               AssetRecord("service_point", "SP-1", {"node_id": "A", "category": "household",
                                                     "critical_kind": None,
                                                     "peak_load_m3h_std": 360.0,
                                                     "min_pressure_pa_gauge": None}),
               AssetRecord("service_point", "SP-2", {"node_id": "A", "category": "critical",
                                                     "critical_kind": "hospital",
                                                     "peak_load_m3h_std": 100.0,
                                                     "min_pressure_pa_gauge": 1500.0})]
    c = {x.id: x for x in description_from_records(records, gas=gas,
                                                    source_pressure_pa_gauge=SOURCE).consumers}
    # 100 m³/h at 20 °C = 1/36 m³/s × 0.73 kg/m³ × 273.15/293.15 (a critical consumer is
    # designed for its own peak); a lone flat with stove and water heater (peak 360 m³/h > 1.6)
    # counts with SP 42-101's simultaneity factor 0.7
    assert c["SP-2"].demand_kg_s == pytest.approx(100 / 3600 * 0.73 * 273.15 / 293.15, rel=1e-12)
    assert c["SP-1"].demand_kg_s == pytest.approx(0.7 * 0.1 * 0.73 * 273.15 / 293.15, rel=1e-12)
    assert (c["SP-1"].node, c["SP-1"].min_pressure_pa_gauge, c["SP-1"].critical) == ("A", 0.0, False)
    assert (c["SP-2"].min_pressure_pa_gauge, c["SP-2"].critical) == (1500.0, True)
    given = description_from_records(records, gas=gas, source_pressure_pa_gauge=SOURCE,
                                     demand_kg_s={"SP-2": 0.5}).consumers
    assert [x.demand_kg_s for x in given if x.id == "SP-2"] == [0.5]


def test_sink_nodes_take_their_demand_from_the_argument() -> None:
    records = [node("S", "source"), node("X1", "sink"), node("X2", "sink"), pipe("P", "S", "X1")]
    c = {x.id: x for x in description_from_records(records, source_pressure_pa_gauge=SOURCE,
                                                    demand_kg_s={"X1": 12.5}).consumers}
    assert (c["X1"].node, c["X1"].demand_kg_s) == ("X1", 12.5)
    assert c["X2"].demand_kg_s == 0.0  # not nominated


def test_source_pressure_sources_in_order() -> None:
    records = [node("S", "source", props={"pressure_max_pa_abs": 5_101_325.0})]
    desc = description_from_records(records)
    assert desc.sources[0].pressure_pa_gauge == pytest.approx(5_000_000.0)  # GasLib abs → gauge
    desc = description_from_records(records, source_pressure_pa_gauge={"S": 4e6})
    assert desc.sources[0].pressure_pa_gauge == 4e6  # the argument wins
    desc = description_from_records([node("S", "source")], level_max_pa_gauge={"medium": 3e5})
    assert desc.sources[0].pressure_pa_gauge == 3e5  # the level's maximum, last


def test_missing_source_pressure_names_the_node() -> None:
    records = [node("N-SRC", "source"), node("A"), pipe("P", "N-SRC", "A")]
    with pytest.raises(ValueError, match="N-SRC: source node has no pressure"):
        description_from_records(records, level_max_pa_gauge={"low": 5000.0})


def test_overrides_must_name_assets() -> None:
    with pytest.raises(ValueError, match="demand_kg_s: no asset with id 'SP-TYPO'"):
        description_from_records([node("S", "source")], source_pressure_pa_gauge=SOURCE,
                                 demand_kg_s={"SP-TYPO": 1.0})


def test_read_gaslib_scenarios() -> None:
    gas = GasProperties()
    demand, pressure = read_gaslib_scenario(GASLIB / "GasLib-40.scn", gas=gas)
    assert len(demand) == 29 and set(pressure) == {"source_1", "source_2", "source_3"}
    # 75 000 m³/h at 0 °C, 1.01325 bar × the gas's normal density
    assert demand["sink_1"] == pytest.approx(75_000 / 3600 * gas.density_std_kg_m3, rel=1e-12)
    assert pressure["source_1"] == pytest.approx(8_000_000.0)  # the upper bound, 80 barg
    demand, pressure = read_gaslib_scenario(GASLIB / "GasLib-11.scn", gas=gas)
    assert demand == pytest.approx({k: v / 3.6 * gas.density_std_kg_m3
                                    for k, v in {"exit01": 100.0, "exit02": 120.0,
                                                 "exit03": 80.0}.items()})
    assert pressure == {}  # GasLib-11 nominates no entry pressure


def test_read_gaslib_scenario_rejects_other_xml(tmp_path: Path) -> None:
    bad = tmp_path / "x.scn"
    bad.write_text("<network/>")
    with pytest.raises(ValueError, match="not a GasLib scenario"):
        read_gaslib_scenario(bad)


def test_load_gaslib_file_with_its_scenario() -> None:
    desc = load_network_file(GASLIB / "GasLib-11.net")
    assert len(desc.nodes) == 11 and len(desc.pipes) == 8 and len(desc.valves) == 1
    assert {s.id: round(s.pressure_pa_gauge) for s in desc.sources} == dict.fromkeys(
        ["entry01", "entry02", "entry03"], 6_898_675)  # pressureMax 70 bar abs
    assert {c.id for c in desc.consumers} == {"exit01", "exit02", "exit03"}
    assert all(c.demand_kg_s > 0 for c in desc.consumers)
    assert {(r.id, r.boost, round(r.setpoint_pa_gauge)) for r in desc.regulators} == {
        ("CS01_entry03_N01", True, 6_898_675), ("CS02_N04_N05", True, 6_898_675)}
    compile_network(desc)


def test_load_geojson_uses_the_shipped_level_maximum() -> None:
    desc = load_network_file(GEOJSON / "network-small.geojson")
    assert [(s.id, s.pressure_pa_gauge) for s in desc.sources] == [("N-100", 300_000.0)]
    assert [r.setpoint_pa_gauge for r in desc.regulators] == [3000.0]
    compile_network(desc)


def test_load_rejects_unknown_files(tmp_path: Path) -> None:
    other = tmp_path / "net.csv"
    other.write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown network file type"):
        load_network_file(other)
    with pytest.raises(FileNotFoundError):
        load_network_file(tmp_path / "missing.net")
