"""GasLib `.net` parser: element counts, units, coordinates and malformed files (no database)."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from erp.domain import rules
from erp.errors import ValidationFailed
from erp.exchange.gaslib import ANCHOR_LAT_DEG, ANCHOR_LON_DEG, convert_unit, parse_gaslib
from erp.services.registry import AssetRecord

DATA = Path(__file__).resolve().parents[2] / "data" / "gaslib"
LEVELS = {"high": rules.LevelBounds("high", 300_000.0, 10_000_000.0, 3)}

# Counted in the XML with grep (`grep -c '<pipe ' GasLib-40.net`, ...), not with the parser.
EXPECTED: dict[str, dict[str, Any]] = {
    "GasLib-11": {"source": 3, "sink": 3, "innode": 5, "nodes": 11, "pipe": 8, "valve": 1,
                  "shortPipe": 0, "compressorStation": 2, "controlValve": 0, "resistor": 0,
                  "pipe_length_m": 440_000.0},
    "GasLib-40": {"source": 3, "sink": 29, "innode": 8, "nodes": 40, "pipe": 39, "valve": 0,
                  "shortPipe": 0, "compressorStation": 6, "controlValve": 0, "resistor": 0,
                  "pipe_length_m": 1_112_470.57437748},
}
LINK_KIND = {"shortPipe": "short_pipe", "compressorStation": "compressor",
             "controlValve": "control_valve", "resistor": "resistor"}


def xml_text(path: Path) -> str:
    """The file without XML comments (GasLib-24 comments out an alternative <length>)."""
    return re.sub(r"<!--.*?-->", "", path.read_text(encoding="utf-8"), flags=re.S)


def xml_total_pipe_length_m(path: Path) -> float:
    """Sum of every <pipe>'s <length>, read with regular expressions (independent of the parser)."""
    to_m = {"km": 1000.0, "m": 1.0, "meter": 1.0}
    total = 0.0
    for block in re.findall(r"<pipe\b.*?</pipe>", xml_text(path), flags=re.S):
        tag = re.search(r"<length\b[^>]*>", block)
        assert tag is not None, block
        unit = re.search(r'unit="([^"]*)"', tag.group(0))
        value = re.search(r'value="([^"]*)"', tag.group(0))
        assert unit is not None and value is not None
        total += float(value.group(1)) * to_m[unit.group(1)]
    return total


def xml_count(path: Path, element: str) -> int:
    """How many <element ...> start tags the file has."""
    return len(re.findall(rf"<{element}\b", xml_text(path)))


def records_of(name: str) -> list[AssetRecord]:
    """Parsed records of a shipped instance."""
    return parse_gaslib(DATA / f"{name}.net")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_xml_counts_match_the_hard_coded_numbers(name: str) -> None:
    path = DATA / f"{name}.net"
    for element in ("source", "sink", "innode", "pipe", "valve", "shortPipe",
                    "compressorStation", "controlValve", "resistor"):
        assert xml_count(path, element) == EXPECTED[name][element], element
    assert xml_total_pipe_length_m(path) == pytest.approx(EXPECTED[name]["pipe_length_m"],
                                                          rel=1e-12)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_by_element_type(name: str) -> None:
    exp = EXPECTED[name]
    records = records_of(name)
    kinds = Counter(r.kind for r in records)
    node_kinds = Counter(r.values["kind"] for r in records if r.kind == "node")
    link_kinds = Counter(r.values["kind"] for r in records if r.kind == "link")
    assert kinds["area"] == 1 and records[0].kind == "area" and records[0].id == name
    assert kinds["node"] == exp["nodes"]
    assert node_kinds == {k: v for k, v in (("source", exp["source"]), ("sink", exp["sink"]),
                                            ("junction", exp["innode"])) if v}
    assert kinds["pipe"] == exp["pipe"] and kinds["valve"] == exp["valve"]
    for element, kind in LINK_KIND.items():
        assert link_kinds[kind] == exp[element], element


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_total_pipe_length_in_metres(name: str) -> None:
    total = math.fsum(r.values["length_m"] for r in records_of(name) if r.kind == "pipe")
    assert total == pytest.approx(xml_total_pipe_length_m(DATA / f"{name}.net"), rel=1e-12)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_records_pass_the_registry_rules(name: str) -> None:
    records = records_of(name)
    node_levels = {r.id: r.values["pressure_level"] for r in records if r.kind == "node"}
    exists = {"area": {name}}
    errs = [e for r in records for e in rules.validate(r.kind, r.id, r.values, LEVELS)
            + rules.check_references(r.kind, r.id, r.values, node_levels, exists)]
    assert errs == []
    assert {r.values["area_id"] for r in records if r.kind != "area"} == {name}
    assert {r.values["pressure_level"] for r in records if r.kind != "area"} == {"high"}


def test_pipe_units_are_read() -> None:
    p = {r.id: r.values for r in records_of("GasLib-11")}["pipe01_entry01_entry03"]
    assert p["length_m"] == 55_000.0  # 55 km
    assert p["inner_diameter_m"] == 0.5  # 500 mm
    assert p["roughness_m"] == 0.0001  # 0.1 mm
    assert p["material"] == "steel"
    assert (p["from_node_id"], p["to_node_id"]) == ("entry01", "entry03")


def test_node_props_are_si() -> None:
    n = {r.id: r.values for r in records_of("GasLib-11")}["entry01"]
    assert n["kind"] == "source" and n["elevation_m"] == 0.0
    props = n["props"]
    assert props["pressure_min_pa_abs"] == 40e5 and props["pressure_max_pa_abs"] == 70e5
    assert props["flow_max_m3s_norm"] == pytest.approx(750e3 / 3600)
    assert props["gas_temperature_k"] == pytest.approx(283.15)
    assert props["calorific_value_j_m3_norm"] == pytest.approx(36.4543670654e6)
    assert props["molar_mass_kg_mol"] == pytest.approx(0.0185674)
    assert props["pseudocritical_temperature_k"] == pytest.approx(188.549758911)
    assert props["heat_capacity_coefficient_a"] == pytest.approx(31.8251781464)


def test_compressor_params_are_si() -> None:
    v = {r.id: r.values for r in records_of("GasLib-11")}
    cs = v["CS01_entry03_N01"]
    assert cs["kind"] == "compressor"
    assert cs["params"]["pressure_in_min_pa_abs"] == 40e5
    assert cs["params"]["pressure_out_max_pa_abs"] == 70e5
    assert cs["params"]["pressure_loss_in_pa"] == 0.0
    assert cs["params"]["flow_max_m3s_norm"] == pytest.approx(1100e3 / 3600)
    assert cs["params"]["fuel_gas_node_id"] == "N01"
    valve = v["V01_N01_N03"]
    assert valve["normal_state"] == valve["current_state"] == "open"
    n1, n3 = v["N01"], v["N03"]
    assert valve["lat"] == pytest.approx((n1["lat"] + n3["lat"]) / 2)


def test_wgs84_coordinates_are_used_where_given() -> None:
    n = {r.id: r.values for r in records_of("GasLib-40")}["source_1"]
    assert (n["lat"], n["lon"]) == (48.9636070987, 6.83756607565)


def test_planar_coordinates_are_kilometres_around_the_anchor() -> None:
    v = {r.id: r.values for r in records_of("GasLib-11")}
    assert (v["entry01"]["lat"], v["entry01"]["lon"]) == (ANCHOR_LAT_DEG, ANCHOR_LON_DEG)
    r = 6371008.8
    east = v["entry03"]  # x = 200, y = 0
    assert east["lat"] == ANCHOR_LAT_DEG
    assert east["lon"] - ANCHOR_LON_DEG == pytest.approx(
        math.degrees(200_000 / (r * math.cos(math.radians(ANCHOR_LAT_DEG)))))
    south = v["entry02"]  # x = 600, y = -300
    assert south["lat"] - ANCHOR_LAT_DEG == pytest.approx(math.degrees(-300_000 / r))


def test_id_prefix() -> None:
    records = parse_gaslib(DATA / "GasLib-11.net", id_prefix="G11:")
    assert records[0].id == "GasLib-11"
    assert all(r.id.startswith("G11:") for r in records[1:])
    cs = next(r for r in records if r.id == "G11:CS01_entry03_N01")
    assert (cs.values["from_node_id"], cs.values["params"]["fuel_gas_node_id"]) == (
        "G11:entry03", "G11:N01")


# --- unit conversion ----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "unit", "si"), [
    ("55", "km", 55_000.0), ("10", "m", 10.0), ("0", "meter", 0.0), ("500.0", "mm", 0.5),
    ("0.05", "mm", 5e-05), ("70", "bar", 7e6), ("10", "Celsius", 283.15), ("188.5", "K", 188.5),
    ("1100", "1000m_cube_per_hour", 1100e3 / 3600), ("36.4", "MJ_per_m_cube", 36.4e6),
    ("18.5674", "kg_per_kmol", 0.0185674), ("2", "W_per_m_square_per_K", 2.0),
])
def test_convert_unit(value: str, unit: str, si: float) -> None:
    assert convert_unit(value, unit) == pytest.approx(si, rel=1e-15)


def test_convert_unit_refuses_unknown_and_mismatched_units() -> None:
    with pytest.raises(ValueError, match="unknown unit 'furlong'"):
        convert_unit(1.0, "furlong")
    with pytest.raises(ValueError, match="measures pressure, expected a length"):
        convert_unit(1.0, "bar", "length")


# --- hand-written files: other elements and malformed input --------------------------------------

HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
        '<network xmlns="http://gaslib.zib.de/Gas" '
        'xmlns:framework="http://gaslib.zib.de/Framework">\n'
        '<framework:information><framework:title>Test net</framework:title>'
        '</framework:information>\n')


def write_net(tmp_path: Path, nodes: str, connections: str) -> Path:
    """A small `.net` file with the given node and connection elements."""
    path = tmp_path / "test.net"
    path.write_text(f"{HEAD}<framework:nodes>{nodes}</framework:nodes>\n"
                    f"<framework:connections>{connections}</framework:connections>\n</network>\n",
                    encoding="utf-8")
    return path


NODES = ('<source id="a" x="0" y="0"><height value="12"/></source>'
         '<innode id="b" x="1" y="0" geoWGS84Lat="52.0" geoWGS84Long="13.0">'
         '<height value="3" unit="m"/></innode>'
         '<sink id="c" x="2" y="0"><height value="0" unit="m"/></sink>')


def test_other_connection_kinds(tmp_path: Path) -> None:
    path = write_net(tmp_path, NODES, """
      <shortPipe id="sp" from="a" to="b">
        <flowMax unit="1000m_cube_per_hour" value="36"/></shortPipe>
      <resistor id="re" from="b" to="c"><dragFactor value="5.4"/>
        <diameter value="900" unit="mm"/></resistor>
      <controlValve id="cv" from="b" to="c" gasPreheaterExisting="0" internalBypassRequired="1">
        <pressureDifferentialMax unit="bar" value="10"/><pressureInMin unit="bar" value="20"/>
      </controlValve>
      <pipe id="p" from="a" to="c"><length unit="m" value="10"/><diameter unit="m" value="0.9"/>
        <roughness unit="m" value="8e-06"/></pipe>""")
    v = {r.id: r.values for r in parse_gaslib(path)}
    assert v["Test-net"] == {"name": "Test net"}
    assert v["a"]["elevation_m"] == 12.0  # height without a unit is metres
    assert (v["b"]["lat"], v["b"]["lon"]) == (52.0, 13.0)
    assert v["sp"]["kind"] == "short_pipe"
    assert v["sp"]["params"] == {"flow_max_m3s_norm": 10.0}
    assert v["re"]["params"] == {"drag_factor": 5.4, "diameter_m": 0.9}
    assert v["cv"]["kind"] == "control_valve"
    assert v["cv"]["params"] == {"pressure_differential_max_pa": 1e6,
                                 "pressure_in_min_pa_abs": 2e6,
                                 "gas_preheater_existing": False,
                                 "internal_bypass_required": True}
    assert (v["p"]["length_m"], v["p"]["inner_diameter_m"], v["p"]["roughness_m"]) == (
        10.0, 0.9, 8e-06)


def test_every_bad_unit_and_value_is_named(tmp_path: Path) -> None:
    path = write_net(tmp_path, NODES.replace('<height value="3" unit="m"/>',
                                             '<height value="3" unit="furlong"/>'), """
      <pipe id="p1" from="a" to="c"><length unit="bar" value="10"/>
        <diameter unit="mm" value="wide"/><roughness value="0.01"/></pipe>
      <pipe id="p2" from="a" to="c"><length unit="km" value="NaN"/></pipe>
      <teleporter id="t1" from="a" to="c"/>""")
    with pytest.raises(ValidationFailed) as exc:
        parse_gaslib(path)
    got = {(e.asset_id, e.field): e.message for e in exc.value.errors}
    assert "unknown unit 'furlong'" in got["b", "height"]
    assert "measures pressure" in got["p1", "length"]
    assert "not a number" in got["p1", "diameter"]
    assert "no unit" in got["p1", "roughness"]
    assert "not finite" in got["p2", "length"]
    assert "unknown connection type 'teleporter'" in got["t1", "kind"]
    assert len(got) == 6


def test_not_well_formed_xml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.net"
    path.write_text(HEAD + "<framework:nodes><source id='a'>\n</framework:nodes>", "utf-8")
    with pytest.raises(ValidationFailed, match=r"broken.net: file: not well-formed XML at line 5"):
        parse_gaslib(path)


def test_not_a_gaslib_network(tmp_path: Path) -> None:
    path = tmp_path / "other.xml"
    path.write_text("<svg xmlns='http://www.w3.org/2000/svg'/>", "utf-8")
    with pytest.raises(ValidationFailed, match="not a GasLib network"):
        parse_gaslib(path)
