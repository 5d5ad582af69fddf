"""GeoJSON parser: file structure, units, geometry and every malformed case (no database)."""

from __future__ import annotations

import copy
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from erp.domain import rules
from erp.errors import ValidationFailed
from erp.exchange.geojson import (
    PROPERTIES,
    _from_si,
    geodesic_length_m,
    parse_feature_collection,
)
from erp.services.registry import ASSET_MODELS, AssetRecord

DATA = Path(__file__).resolve().parents[2] / "data" / "geojson"
SMALL = DATA / "network-small.geojson"

# The pressure levels the first migration seeds (gauge Pa), for running the rules without a DB.
LEVELS = {
    "low": rules.LevelBounds("low", 0.0, 5_000.0, 1),
    "medium": rules.LevelBounds("medium", 5_000.0, 300_000.0, 2),
    "high": rules.LevelBounds("high", 300_000.0, 10_000_000.0, 3),
}


def small() -> dict[str, Any]:
    """The valid sample collection, freshly loaded (tests mutate it)."""
    return json.loads(SMALL.read_text(encoding="utf-8"))


def feature(fc: Mapping[str, Any], fid: str) -> dict[str, Any]:
    """The feature with id `fid`."""
    return next(f for f in fc["features"] if f["id"] == fid)


def errors_of(fc: Any, **kwargs: Any) -> list[rules.FieldError]:
    """The errors the parser raises for `fc` (the test fails if it raises none)."""
    with pytest.raises(ValidationFailed) as exc:
        parse_feature_collection(fc, **kwargs)
    return exc.value.errors


def rule_errors(records: Sequence[AssetRecord]) -> list[rules.FieldError]:
    """What `bulk_import` would report for the batch against an empty database."""
    node_levels = {r.id: r.values["pressure_level"] for r in records if r.kind == "node"}
    exists: dict[str, set[str]] = {}
    for r in records:
        exists.setdefault(r.kind, set()).add(r.id)
    out: list[rules.FieldError] = []
    for r in records:
        out += rules.validate(r.kind, r.id, r.values, LEVELS)
        out += rules.check_references(r.kind, r.id, r.values, node_levels, exists)
    return out


def by_id(records: Sequence[AssetRecord]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Record values by (kind, id)."""
    return {(r.kind, r.id): r.values for r in records}


# --- the valid file ---------------------------------------------------------------------------


def test_sample_parses_with_every_kind_and_passes_the_rules() -> None:
    records = parse_feature_collection(small())
    assert Counter(r.kind for r in records) == {
        "area": 1, "node": 7, "pipe": 4, "station": 1, "valve": 1, "skz": 1,
        "service_point": 1, "meter": 1, "equipment": 2}
    assert rule_errors(records) == []


def test_file_units_become_si_fields() -> None:
    v = by_id(parse_feature_collection(small()))
    p200 = v["pipe", "P-200"]
    assert p200["inner_diameter_m"] == 0.09 and p200["roughness_m"] == 7e-06
    assert p200["length_m"] == 210.5 and p200["year_laid"] == 2015
    assert v["station", "GRP-1"]["outlet_setpoint_pa_gauge"] == 3000.0  # from 3.0 kPa
    assert v["station", "GRP-1"]["kind"] == "GRP"  # `subtype` fills the registry's kind
    assert v["valve", "V-200"]["diameter_m"] == 0.08
    assert v["valve", "V-200"]["remotely_operable"] is False
    assert (v["valve", "V-200"]["lon"], v["valve", "V-200"]["lat"]) == (35.91005, 56.86305)
    assert v["skz", "SKZ-1"]["protected_pipe_ids"] == ["P-100"]
    assert str(v["meter", "M-1"]["verification_due"]) == "2027-05-31"
    assert v["pipe", "P-202"]["status"] == "retired"


def test_node_elevation_from_third_coordinate() -> None:
    v = by_id(parse_feature_collection(small()))
    assert v["node", "N-100"]["elevation_m"] == 142.0
    assert v["node", "N-101"]["elevation_m"] == 141.5  # from the property


def test_pipe_interior_vertices_and_geodesic_length() -> None:
    fc = small()
    coords = feature(fc, "P-100")["geometry"]["coordinates"]
    v = by_id(parse_feature_collection(fc))
    p100 = v["pipe", "P-100"]
    assert p100["vertices"] == [coords[1]]
    assert "from_node_id" in p100 and "lat" not in p100
    # Independent haversine, R = 6371008.8 m.
    r = 6371008.8
    total = 0.0
    for (lon1, lat1), (lon2, lat2) in zip(coords, coords[1:], strict=False):
        p1, p2 = math.radians(lat1), math.radians(lat2)
        dp, dl = p2 - p1, math.radians(lon2 - lon1)
        a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        total += 2 * r * math.atan2(math.sqrt(a), math.sqrt(1 - a))
    assert p100["length_m"] == pytest.approx(total, rel=1e-12)
    assert "vertices" not in v["pipe", "P-200"]  # a straight pipe has none


def test_geodesic_length_of_one_degree_of_meridian() -> None:
    assert geodesic_length_m([[0.0, 0.0], [0.0, 1.0]]) == pytest.approx(
        6371008.8 * math.pi / 180, rel=1e-12)
    assert geodesic_length_m([[10.0, 50.0], [10.0, 50.0]]) == 0.0


def test_equipment_parents_come_before_children() -> None:
    records = parse_feature_collection(small())
    eq = [r.id for r in records if r.kind == "equipment"]
    assert eq == ["EQ-1", "EQ-2"]  # EQ-2 comes first in the file


def test_id_from_properties_and_numeric_ids() -> None:
    fc = small()
    n = feature(fc, "N-201")
    del n["id"]
    n["properties"]["id"] = "N-201"
    area = feature(fc, "A-NORTH")
    area["id"] = 7
    for f in fc["features"]:
        if f["properties"].get("area_id") == "A-NORTH":
            f["properties"]["area_id"] = 7
    records = parse_feature_collection(fc)
    assert ("node", "N-201") in by_id(records)
    assert by_id(records)["area", "7"]["name"] == "North district"
    assert by_id(records)["node", "N-100"]["area_id"] == "7"


def test_null_property_is_absent_and_crs84_accepted() -> None:
    fc = small()
    fc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}
    feature(fc, "P-200")["properties"]["year_laid"] = None
    assert "year_laid" not in by_id(parse_feature_collection(fc))["pipe", "P-200"]


def test_every_registry_field_has_a_file_property() -> None:
    """A column added to the ORM must be given a file property (or a geometry) here."""
    from_geometry = {"lat", "lon", "vertices"}
    for kind, model in ASSET_MODELS.items():
        cols = {c.key for c in model.__table__.columns} - {"id", "created_at", "updated_at"}
        fields = {p.field for p in PROPERTIES[kind].values()}
        assert cols - fields - from_geometry == set(), kind


def test_mm_round_trip_is_exact_for_written_values() -> None:
    """m → file mm (export) → m (import) gives the same float for values of <= 15 digits."""
    rnd = random.Random(1)
    prop = PROPERTIES["pipe"]["inner_diameter_mm"]
    pipe = feature(small(), "P-200")
    for _ in range(3000):
        si = float(f"{rnd.uniform(0.001, 1.5):.{rnd.randint(1, 15)}g}")
        pipe["properties"]["inner_diameter_mm"] = _from_si(si, prop)
        fc = {"type": "FeatureCollection", "features": [pipe]}
        assert parse_feature_collection(fc)[0].values["inner_diameter_m"] == si


# --- malformed files: the parser names the feature and the field ------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set_geometry(fid: str, geometry: Any) -> Mutation:
    def m(fc: dict[str, Any]) -> None:
        feature(fc, fid)["geometry"] = geometry
    return m


def _set_prop(fid: str, name: str, value: Any) -> Mutation:
    def m(fc: dict[str, Any]) -> None:
        feature(fc, fid)["properties"][name] = value
    return m


def _move_first_vertex(fc: dict[str, Any]) -> None:
    feature(fc, "P-200")["geometry"]["coordinates"][0] = [35.9052, 56.8622]  # ~111 m north


def _duplicate_node(fc: dict[str, Any]) -> None:
    fc["features"].append(copy.deepcopy(feature(fc, "N-201")))


def _rename_kind(fc: dict[str, Any]) -> None:
    feature(fc, "N-201")["properties"]["kind"] = "nod"


def _drop_id(fc: dict[str, Any]) -> None:
    del feature(fc, "N-201")["id"]


def _meter_serial_twice(fc: dict[str, Any]) -> None:
    m2 = copy.deepcopy(feature(fc, "M-1"))
    m2["id"] = "M-2"
    fc["features"].append(m2)


def _long_id(fc: dict[str, Any]) -> None:
    feature(fc, "N-204")["id"] = "N" * 65


def _equipment_cycle(fc: dict[str, Any]) -> None:
    feature(fc, "EQ-1")["properties"]["parent_id"] = "EQ-2"


PARSER_CASES: list[tuple[str, Mutation, str, str]] = [
    ("linestring-one-position", _set_geometry(
        "P-200", {"type": "LineString", "coordinates": [[35.9052, 56.8612]]}), "P-200", "geometry"),
    ("latitude-out-of-range", _set_geometry(
        "N-201", {"type": "Point", "coordinates": [35.908, 95.0]}), "N-201", "geometry"),
    ("longitude-out-of-range", _set_geometry(
        "N-201", {"type": "Point", "coordinates": [190.0, 56.0]}), "N-201", "geometry"),
    ("nan-coordinate", _set_geometry(
        "N-202", {"type": "Point", "coordinates": [float("nan"), 56.863]}), "N-202", "geometry"),
    ("string-coordinate", _set_geometry(
        "N-202", {"type": "Point", "coordinates": ["35.91", "56.863"]}), "N-202", "geometry"),
    ("point-without-coordinates", _set_geometry("N-202", {"type": "Point"}), "N-202", "geometry"),
    ("node-without-geometry", _set_geometry("N-202", None), "N-202", "geometry"),
    ("pipe-as-point", _set_geometry(
        "P-201", {"type": "Point", "coordinates": [35.908, 56.862]}), "P-201", "geometry"),
    ("node-as-linestring", _set_geometry("N-201", {"type": "LineString", "coordinates": [
        [35.908, 56.862], [35.909, 56.862]]}), "N-201", "geometry"),
    ("meter-with-point", _set_geometry(
        "M-1", {"type": "Point", "coordinates": [35.9, 56.86]}), "M-1", "geometry"),
    ("pipe-end-far-from-node", _move_first_vertex, "P-200", "geometry"),
    ("duplicate-id", _duplicate_node, "N-201", "id"),
    ("unknown-kind", _rename_kind, "N-201", "kind"),
    ("feature-without-id", _drop_id, "features[4]", "id"),
    ("unknown-property", _set_prop("P-200", "inner_diametre_mm", 90.0), "P-200",
     "inner_diametre_mm"),
    ("property-of-another-kind", _set_prop("N-201", "material", "pe"), "N-201", "material"),
    ("string-for-number", _set_prop("P-200", "inner_diameter_mm", "90"), "P-200",
     "inner_diameter_mm"),
    ("bool-for-number", _set_prop("P-200", "length_m", True), "P-200", "length_m"),
    ("fractional-year", _set_prop("P-200", "year_laid", 2015.5), "P-200", "year_laid"),
    ("string-for-bool", _set_prop("V-200", "remotely_operable", "yes"), "V-200",
     "remotely_operable"),
    ("non-iso-date", _set_prop("M-1", "verification_due", "31.05.2027"), "M-1",
     "verification_due"),
    ("impossible-date", _set_prop("M-1", "verification_due", "2027-02-30"), "M-1",
     "verification_due"),
    ("ids-not-a-list", _set_prop("SKZ-1", "protected_pipe_ids", "P-100"), "SKZ-1",
     "protected_pipe_ids"),
    ("pipe-listed-twice", _set_prop("SKZ-1", "protected_pipe_ids", ["P-100", "P-100"]), "SKZ-1",
     "protected_pipe_ids"),
    ("props-not-an-object", _set_prop("N-201", "props", [1, 2]), "N-201", "props"),
    ("props-with-nan", _set_prop("N-201", "props", {"a": [float("nan")]}), "N-201", "props"),
    ("id-too-long", _long_id, "N" * 64 + "…", "id"),
    ("name-too-long", _set_prop("N-201", "name", "x" * 201), "N-201", "name"),
    ("setpoint-twice", _set_prop("GRP-1", "outlet_setpoint_pa_gauge", 3000.0), "GRP-1",
     "outlet_setpoint_pa_gauge"),
    ("elevation-disagrees", _set_prop("N-100", "elevation_m", 10.0), "N-100", "elevation_m"),
    ("ids-differ", _set_prop("N-201", "id", "N-999"), "N-201", "id"),
    ("duplicate-meter-serial", _meter_serial_twice, "M-2", "serial"),
    ("equipment-parent-cycle", _equipment_cycle, "EQ-2", "parent_id"),
]


@pytest.mark.parametrize(("mutate", "asset_id", "field"),
                         [c[1:] for c in PARSER_CASES], ids=[c[0] for c in PARSER_CASES])
def test_malformed_feature_is_named(mutate: Mutation, asset_id: str, field: str) -> None:
    fc = small()
    mutate(fc)
    errs = errors_of(fc)
    assert any(e.asset_id == asset_id and e.field == field for e in errs), errs
    assert all(e.asset_id == asset_id for e in errs), errs  # nothing else is blamed


def test_message_names_feature_and_field() -> None:
    fc = small()
    _set_prop("P-200", "inner_diametre_mm", 90.0)(fc)
    with pytest.raises(ValidationFailed, match=r"P-200: inner_diametre_mm: unknown property"):
        parse_feature_collection(fc)


def test_end_tolerance_is_a_parameter() -> None:
    fc = small()
    _move_first_vertex(fc)
    errs = errors_of(fc)
    assert "from node 'N-200'" in errs[0].message and "tolerance 50 m" in errs[0].message
    assert parse_feature_collection(fc, end_tolerance_m=200.0)
    assert parse_feature_collection(small(), end_tolerance_m=0.0)  # ends drawn on the nodes


def test_every_problem_is_reported_at_once() -> None:
    fc = small()
    _set_prop("P-200", "inner_diametre_mm", 90.0)(fc)
    _set_geometry("N-202", None)(fc)
    _duplicate_node(fc)
    _rename_kind(fc)
    _set_prop("V-200", "remotely_operable", "yes")(fc)
    got = {(e.asset_id, e.field) for e in errors_of(fc)}
    assert {("P-200", "inner_diametre_mm"), ("N-202", "geometry"), ("N-201", "kind"),
            ("V-200", "remotely_operable")} <= got


@pytest.mark.parametrize("obj", [
    [], {"type": "Feature"}, {"type": "FeatureCollection"},
    {"type": "FeatureCollection", "features": {}},
])
def test_not_a_feature_collection(obj: Any) -> None:
    errs = errors_of(obj)
    assert errs[0].asset_id == "FeatureCollection"


def test_projected_crs_refused() -> None:
    fc = small()
    fc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32637"}}
    assert errors_of(fc)[0].field == "crs"


def test_entry_that_is_not_a_feature() -> None:
    fc = small()
    fc["features"].insert(0, {"type": "Point", "coordinates": [0, 0]})
    assert [(e.asset_id, e.field) for e in errors_of(fc)] == [("features[0]", "type")]


# --- range and reference rules: the parser passes values through so the rules fire -------------


def test_negative_diameter_reaches_the_rules() -> None:
    fc = small()
    _set_prop("P-200", "inner_diameter_mm", -90.0)(fc)
    records = parse_feature_collection(fc)
    assert by_id(records)["pipe", "P-200"]["inner_diameter_m"] == -0.09
    errs = rule_errors(records)
    assert [(e.asset_id, e.field) for e in errs] == [("P-200", "inner_diameter_m")]


def test_unknown_node_reference_reaches_the_rules() -> None:
    fc = small()
    _set_prop("P-201", "to_node_id", "N-999")(fc)
    errs = rule_errors(parse_feature_collection(fc))
    assert [(e.asset_id, e.field) for e in errs] == [("P-201", "to_node_id")]
    assert "N-999" in errs[0].message


def test_mixed_pressure_levels_without_station_reach_the_rules() -> None:
    fc = small()
    # P-200 (low) now starts at N-101 (medium): levels meet only through a station.
    _set_prop("P-200", "from_node_id", "N-101")(fc)
    feature(fc, "P-200")["geometry"]["coordinates"][0] = [35.9050, 56.8610]
    errs = rule_errors(parse_feature_collection(fc))
    assert [(e.asset_id, e.field) for e in errs] == [("P-200", "from_node_id")]
    assert "through a station" in errs[0].message


def test_unknown_enumeration_value_reaches_the_rules() -> None:
    fc = small()
    _set_prop("P-200", "material", "wood")(fc)
    errs = rule_errors(parse_feature_collection(fc))
    assert [(e.asset_id, e.field) for e in errs] == [("P-200", "material")]


def test_documented_example_is_valid() -> None:
    """The complete example of docs/network-format.md parses and passes the rules."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "network-format.md").read_text("utf-8")
    example = doc.split("## 4.", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    records = parse_feature_collection(json.loads(example))
    assert rule_errors(records) == []
    assert Counter(r.kind for r in records)["pipe"] == 2
    assert by_id(records)["pipe", "P-100"]["length_m"] == pytest.approx(356, abs=1)
