"""GeoJSON exchange of the network registry: parse, export and import a FeatureCollection.

The file format is documented for GIS engineers in `docs/network-format.md`. Each feature is
one asset: `properties.kind` says which, `id` (feature or property) is its stable id. File
units are those a GIS attribute table uses (diameters and roughness in mm, setpoints in Pa or
kPa gauge); they are converted here to the registry's SI fields, so nothing past this module
sees a file unit. The parser checks the file's own structure (geometry, property names and
types, duplicate ids, pipe ends against their nodes) and reports every problem at once;
ranges, enumerations and references are left to `erp.domain.rules`, which `bulk_import` runs.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, select

from erp.adapters import orm
from erp.domain.rules import FieldError
from erp.errors import ValidationFailed
from erp.services.registry import ASSET_MODELS, AssetRecord, ImportSummary, bulk_import

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from erp.services.audit import Actor

__all__ = ["DEFAULT_END_TOLERANCE_M", "EARTH_RADIUS_M", "KINDS", "PROPERTIES", "load_json_file",
           "export_feature_collection", "geodesic_length_m", "import_file",
           "parse_feature_collection"]

EARTH_RADIUS_M = 6371008.8  # mean Earth radius (IUGG), for haversine lengths
DEFAULT_END_TOLERANCE_M = 50.0
ID_MAX_CHARS = 64


@dataclass(frozen=True, slots=True)
class Prop:
    """One file property: the registry field it fills, its JSON type and unit scale.

    `type` is one of str, number, int, bool, date, str_list, object. The SI value is the
    file value × `num` / `den` (mm → m: 1/1000; kPa → Pa: 1000/1). `export` is False for an
    accepted alternative spelling that export never writes.
    """

    field: str
    type: str
    num: int = 1
    den: int = 1
    export: bool = True


def _p(field: str, type_: str = "str", num: int = 1, den: int = 1, export: bool = True) -> Prop:
    return Prop(field, type_, num, den, export)


def _scale(v: float, num: int, den: int) -> float:
    """`v` × num / den on the decimal value `v` was written as, rounded once.

    Scaling the shortest decimal form exactly (not the binary float) makes m → mm → m give
    back the same float for every value written with up to 15 significant digits.
    """
    if num == den:
        return v
    return float(Fraction(repr(float(v))) * num / den)


_STATUS = {"status": _p("status"), "area_id": _p("area_id")}
# Every property each kind accepts (besides `id` and `kind`); anything else is an error.
PROPERTIES: Mapping[str, Mapping[str, Prop]] = {
    "area": {"name": _p("name")},
    "node": {"name": _p("name"), "subtype": _p("kind"), "pressure_level": _p("pressure_level"),
             "elevation_m": _p("elevation_m", "number"), "props": _p("props", "object"),
             **_STATUS},
    "pipe": {"name": _p("name"), "from_node_id": _p("from_node_id"),
             "to_node_id": _p("to_node_id"), "length_m": _p("length_m", "number"),
             "inner_diameter_mm": _p("inner_diameter_m", "number", den=1000),
             "roughness_mm": _p("roughness_m", "number", den=1000),
             "material": _p("material"), "pressure_level": _p("pressure_level"),
             "year_laid": _p("year_laid", "int"), **_STATUS},
    "station": {"name": _p("name"), "subtype": _p("kind"), "inlet_node_id": _p("inlet_node_id"),
                "outlet_node_id": _p("outlet_node_id"), "inlet_level": _p("inlet_level"),
                "outlet_level": _p("outlet_level"),
                "outlet_setpoint_pa_gauge": _p("outlet_setpoint_pa_gauge", "number"),
                "outlet_setpoint_kpa_gauge": _p("outlet_setpoint_pa_gauge", "number",
                                                num=1000, export=False),
                "capacity_m3h_std": _p("capacity_m3h_std", "number"), **_STATUS},
    "valve": {"name": _p("name"), "from_node_id": _p("from_node_id"),
              "to_node_id": _p("to_node_id"), "pressure_level": _p("pressure_level"),
              "diameter_mm": _p("diameter_m", "number", den=1000),
              "normal_state": _p("normal_state"), "current_state": _p("current_state"),
              "remotely_operable": _p("remotely_operable", "bool"), **_STATUS},
    "skz": {"name": _p("name"), "rated_voltage_v": _p("rated_voltage_v", "number"),
            "rated_current_a": _p("rated_current_a", "number"),
            "protected_pipe_ids": _p("protected_pipe_ids", "str_list"), **_STATUS},
    "service_point": {"name": _p("name"), "node_id": _p("node_id"), "category": _p("category"),
                      "critical_kind": _p("critical_kind"), "address": _p("address"),
                      "peak_load_m3h_std": _p("peak_load_m3h_std", "number"),
                      "annual_volume_m3_std": _p("annual_volume_m3_std", "number"),
                      "min_pressure_pa_gauge": _p("min_pressure_pa_gauge", "number"),
                      **_STATUS},
    "meter": {"serial": _p("serial"), "model": _p("model"), "subtype": _p("kind"),
              "service_point_id": _p("service_point_id"), "station_id": _p("station_id"),
              "verification_due": _p("verification_due", "date"), **_STATUS},
    "equipment": {"name": _p("name"), "subtype": _p("kind"), "station_id": _p("station_id"),
                  "parent_id": _p("parent_id"), "model": _p("model"), "serial": _p("serial"),
                  **_STATUS},
    "link": {"subtype": _p("kind"), "from_node_id": _p("from_node_id"),
             "to_node_id": _p("to_node_id"), "pressure_level": _p("pressure_level"),
             "params": _p("params", "object"), **_STATUS},
}
KINDS = tuple(PROPERTIES)
_POINT_KINDS = frozenset({"node", "station", "valve", "skz", "service_point"})
# Export order: referenced kinds first (also the order `bulk_import` inserts in).
_EXPORT_ORDER = ("area", "node", "pipe", "station", "valve", "link", "skz", "service_point",
                 "meter", "equipment")


# --- geometry ---------------------------------------------------------------------------------


def _haversine_m(a: Sequence[float], b: Sequence[float]) -> float:
    """Great-circle distance between two [lon, lat] positions in degrees, metres."""
    lon1, lat1, lon2, lat2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def geodesic_length_m(positions: Sequence[Sequence[float]]) -> float:
    """Length of a LineString of [lon, lat] positions (degrees), metres, by haversine."""
    return sum(_haversine_m(positions[i], positions[i + 1]) for i in range(len(positions) - 1))


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _position(pos: Any, where: str) -> tuple[list[float] | None, str | None]:
    """A checked [lon, lat(, z)] position, or an error message."""
    if not isinstance(pos, list) or not 2 <= len(pos) <= 3:
        return None, f"{where}: a position is [lon, lat] or [lon, lat, elevation], got {pos!r}"
    if not all(_is_number(c) for c in pos):
        return None, f"{where}: coordinates must be finite numbers, got {pos!r}"
    lon, lat = pos[0], pos[1]
    if not -180.0 <= lon <= 180.0:
        return None, f"{where}: longitude {lon!r} is outside [-180, 180]"
    if not -90.0 <= lat <= 90.0:
        return None, f"{where}: latitude {lat!r} is outside [-90, 90]"
    return [float(c) for c in pos], None


def _geometry(kind: str, geom: Any) -> tuple[list[list[float]] | None, list[str]]:
    """The positions of a feature's geometry (one for a Point), or error messages."""
    wants = "Point" if kind in _POINT_KINDS else "LineString" if kind in {"pipe", "link"} else None
    gtype = geom.get("type") if isinstance(geom, Mapping) else None
    what = "null" if geom is None else repr(gtype) if gtype is not None else "no geometry type"
    if geom is None and (wants is None or kind == "link"):
        return None, []
    if wants is None:
        return None, [f"a {kind} has no geometry in the registry; use null, got {what}"]
    if gtype != wants:
        also = " (or null)" if kind == "link" else ""
        return None, [f"a {kind} needs a {wants}{also} geometry, got {what}"]
    coords = geom.get("coordinates")
    if gtype == "Point":
        pos, err = _position(coords, "Point")
        return ([pos] if pos else None), ([err] if err else [])
    if not isinstance(coords, list) or len(coords) < 2:
        n = len(coords) if isinstance(coords, list) else coords
        return None, [f"a LineString needs at least 2 positions, got {n!r}"]
    if kind == "link" and len(coords) != 2:
        return None, [f"a link is drawn as a straight LineString of 2 positions, got {len(coords)}"]
    out, errs = [], []
    for i, c in enumerate(coords):
        pos, err = _position(c, f"position {i}")
        if err:
            errs.append(err)
        elif pos is not None:
            out.append(pos)
    return (out if not errs else None), errs


# --- properties -------------------------------------------------------------------------------


def _max_chars(kind: str, field: str) -> int | None:
    col = ASSET_MODELS[kind].__table__.columns.get(field)  # type: ignore[attr-defined]
    return col.type.length if col is not None and isinstance(col.type, String) else None


def _convert(kind: str, name: str, prop: Prop, v: Any) -> tuple[Any, str | None]:
    """A file value as its registry value, or an error message."""
    t = prop.type
    if t == "str":
        if isinstance(v, int) and not isinstance(v, bool) and prop.field.endswith("_id"):
            v = str(v)  # numeric ids as GIS tools write them
        if not isinstance(v, str):
            return None, f"must be a string, got {v!r}"
        limit = _max_chars(kind, prop.field)
        if limit is not None and len(v) > limit:
            return None, f"is {len(v)} characters long, at most {limit} allowed"
        return v, None
    if t in {"number", "int"}:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None, f"must be a number, got {v!r}"
        if not math.isfinite(v):
            return None, f"must be a finite number, got {v!r}"
        if t == "int":
            if isinstance(v, float) and not v.is_integer():
                return None, f"must be a whole number, got {v!r}"
            return int(v), None
        return _scale(v, prop.num, prop.den), None
    if t == "bool":
        return (v, None) if isinstance(v, bool) else (None, f"must be true or false, got {v!r}")
    if t == "date":
        if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            try:
                return dt.date.fromisoformat(v), None
            except ValueError:
                pass
        return None, f"must be an ISO date YYYY-MM-DD, got {v!r}"
    if t == "str_list":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            return None, f"must be a list of ids (strings), got {v!r}"
        dups = sorted({x for x in v if v.count(x) > 1})
        return (None, f"lists {dups} more than once") if dups else (list(v), None)
    if t == "object":
        if not isinstance(v, dict):
            return None, f"must be a JSON object, got {v!r}"
        return (v, None) if _finite_json(v) else (None, "holds NaN or Infinity")
    raise AssertionError(f"unknown property type {t!r}")


def _finite_json(v: Any) -> bool:
    """Whether a decoded JSON value holds no NaN or Infinity (databases refuse them)."""
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(_finite_json(x) for x in v.values())
    if isinstance(v, list):
        return all(_finite_json(x) for x in v)
    return True


@dataclass(slots=True)
class _Feature:
    kind: str
    id: str
    values: dict[str, Any]
    positions: list[list[float]] | None
    index: int


def _feature_id(feat: Mapping[str, Any], props: Mapping[str, Any], label: str,
                errors: list[FieldError]) -> str | None:
    ids = [v for v in (feat.get("id"), props.get("id")) if v is not None]
    for v in ids:
        if isinstance(v, bool) or not isinstance(v, str | int) or (isinstance(v, str)
                                                                  and not v.strip()):
            errors.append(FieldError(label, "id", f"must be a non-empty string, got {v!r}"))
            return None
    strs = [str(v) for v in ids]
    if not strs:
        errors.append(FieldError(label, "id", "is required (feature id or properties.id)"))
        return None
    if len(set(strs)) > 1:
        errors.append(FieldError(strs[0], "id", f"feature id {strs[0]!r} and properties.id "
                                                f"{strs[1]!r} differ"))
        return None
    if len(strs[0]) > ID_MAX_CHARS:
        errors.append(FieldError(strs[0][:ID_MAX_CHARS] + "…", "id",
                                 f"is longer than {ID_MAX_CHARS} characters"))
        return None
    return strs[0]


def _read_feature(i: int, feat: Any, errors: list[FieldError]) -> _Feature | None:
    label = f"features[{i}]"
    if not isinstance(feat, Mapping) or feat.get("type") != "Feature":
        errors.append(FieldError(label, "type", "each entry of features must be a GeoJSON "
                                                "Feature object"))
        return None
    props = feat.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, Mapping):
        errors.append(FieldError(label, "properties", f"must be an object, got {props!r}"))
        return None
    fid = _feature_id(feat, props, label, errors)
    if fid is None:
        return None
    kind = props.get("kind")
    if kind not in PROPERTIES:
        what = "is required" if kind is None else f"unknown kind {kind!r}"
        errors.append(FieldError(fid, "kind", f"{what}; one of {sorted(PROPERTIES)}"))
        return None
    spec = PROPERTIES[kind]
    values: dict[str, Any] = {}
    for name, v in props.items():
        if name in {"id", "kind"}:
            continue
        prop = spec.get(name)
        if prop is None:
            errors.append(FieldError(fid, name, f"unknown property for a {kind}; allowed: "
                                                f"{sorted(spec)}"))
            continue
        if v is None:
            continue  # an empty attribute cell
        if prop.field in values:
            errors.append(FieldError(fid, name, f"gives {prop.field} a second time"))
            continue
        conv, err = _convert(kind, name, prop, v)
        if err:
            errors.append(FieldError(fid, name, err))
        else:
            values[prop.field] = conv
    positions, gerrs = _geometry(kind, feat.get("geometry"))
    errors.extend(FieldError(fid, "geometry", e) for e in gerrs)
    if positions and kind in _POINT_KINDS:
        pt = positions[0]
        values["lon"], values["lat"] = pt[0], pt[1]
        if kind == "node" and len(pt) == 3:
            if "elevation_m" in values and values["elevation_m"] != pt[2]:
                errors.append(FieldError(fid, "elevation_m", f"{values['elevation_m']!r} "
                                         f"differs from the Point's elevation {pt[2]!r}"))
            values.setdefault("elevation_m", pt[2])
    if positions and kind == "pipe":
        interior = [[p[0], p[1]] for p in positions[1:-1]]
        if interior:
            values["vertices"] = interior
        if "length_m" not in values:
            values["length_m"] = geodesic_length_m(positions)
    return _Feature(kind, fid, values, positions, i)


def _check_ends(feats: Sequence[_Feature], tolerance_m: float) -> list[FieldError]:
    """Pipe and link ends drawn within `tolerance_m` of their nodes' Points (same file)."""
    nodes = {f.id: f.positions[0] for f in feats if f.kind == "node" and f.positions}
    errors = []
    for f in feats:
        if f.kind not in {"pipe", "link"} or not f.positions:
            continue
        for end, pos in (("from_node_id", f.positions[0]), ("to_node_id", f.positions[-1])):
            nid = f.values.get(end)
            if nid in nodes:
                d = _haversine_m(pos, nodes[nid])
                if d > tolerance_m:
                    which = "first" if end == "from_node_id" else "last"
                    errors.append(FieldError(f.id, "geometry", f"{which} vertex is {d:.1f} m from "
                                             f"{end.split('_')[0]} node {nid!r} (tolerance "
                                             f"{tolerance_m:g} m)"))
    return errors


def _parents_first(equipment: list[_Feature]) -> tuple[list[_Feature], list[FieldError]]:
    """Equipment ordered so each parent in the file precedes its children; cycles reported."""
    by_id = {f.id: f for f in equipment}
    done: set[str] = set()
    out: list[_Feature] = []
    errors: list[FieldError] = []
    for f in equipment:
        chain: list[_Feature] = []
        cur: _Feature | None = f
        while cur is not None and cur.id not in done:
            if cur in chain:
                errors.append(FieldError(cur.id, "parent_id", "equipment parents form a cycle: "
                                         + " → ".join(c.id for c in chain)))
                break
            chain.append(cur)
            cur = by_id.get(cur.values.get("parent_id") or "")
        for c in reversed(chain):
            if c.id not in done:
                done.add(c.id)
                out.append(c)
    return out, errors


def _check_crs(obj: Mapping[str, Any]) -> list[FieldError]:
    crs = obj.get("crs")
    if crs is None:
        return []
    name = crs.get("properties", {}).get("name", "") if isinstance(crs, Mapping) else ""
    if isinstance(name, str) and re.search(r"(CRS84|EPSG:{1,2}4326)$", name):
        return []
    return [FieldError("FeatureCollection", "crs",
                       f"coordinates must be WGS84 longitude/latitude (CRS84), got {crs!r}")]


def parse_feature_collection(obj: Mapping[str, Any], *,
                             end_tolerance_m: float = DEFAULT_END_TOLERANCE_M
                             ) -> list[AssetRecord]:
    """A GeoJSON FeatureCollection (parsed JSON) as registry records, SI values.

    Arguments: `obj`, the decoded JSON; `end_tolerance_m`, how far (metres) a pipe's first or
    last vertex may lie from its node's Point when that node is in the same file. Returns the
    records in file order (equipment parents before children). Raises `ValidationFailed`
    naming every feature id and property at fault.
    """
    if not isinstance(obj, Mapping) or obj.get("type") != "FeatureCollection":
        got = obj.get("type") if isinstance(obj, Mapping) else type(obj).__name__
        raise ValidationFailed([FieldError("FeatureCollection", "type",
                                           f"expected a GeoJSON FeatureCollection, got {got!r}")])
    raw = obj.get("features")
    if not isinstance(raw, list):
        raise ValidationFailed([FieldError("FeatureCollection", "features",
                                           "must be a list of Feature objects")])
    errors = _check_crs(obj)
    feats: list[_Feature] = []
    first_seen: dict[tuple[str, str], int] = {}
    serials: dict[str, str] = {}
    for i, item in enumerate(raw):
        f = _read_feature(i, item, errors)
        if f is None:
            continue
        key = (f.kind, f.id)
        if key in first_seen:
            errors.append(FieldError(f.id, "id", f"duplicate {f.kind} id in the file "
                                                 f"(features[{first_seen[key]}] and [{i}])"))
            continue
        first_seen[key] = i
        serial = f.values.get("serial")
        if f.kind == "meter" and serial is not None:
            if serial in serials:
                errors.append(FieldError(f.id, "serial", f"serial {serial!r} is also meter "
                                                         f"{serials[serial]!r}'s"))
            serials.setdefault(serial, f.id)
        feats.append(f)
    errors.extend(_check_ends(feats, end_tolerance_m))
    ordered, cycle_errors = _parents_first([f for f in feats if f.kind == "equipment"])
    errors.extend(cycle_errors)
    if errors:
        raise ValidationFailed(errors)
    others = [f for f in feats if f.kind != "equipment"]
    return [AssetRecord(f.kind, f.id, f.values) for f in others + ordered]


# --- export -----------------------------------------------------------------------------------


def _from_si(si: float, prop: Prop) -> float:
    """The file value of an SI value (m → mm), by the same exact decimal scaling as import."""
    return _scale(si, prop.den, prop.num)


def _export_value(v: Any, prop: Prop) -> Any:
    if isinstance(v, dt.date):
        return v.isoformat()
    if prop.type == "number" and isinstance(v, int | float):
        return _from_si(float(v), prop)
    return v


async def export_feature_collection(session: AsyncSession) -> dict[str, Any]:
    """Every registry asset (retired ones included, with their status) as a FeatureCollection.

    Same format as `parse_feature_collection` reads, so exporting and importing into an empty
    database gives the same rows. Features are ordered by kind, then id.
    """
    tables = {k: ASSET_MODELS[k].__table__ for k in _EXPORT_ORDER}  # type: ignore[attr-defined]
    rows: dict[str, list[Mapping[str, Any]]] = {}
    for kind, table in tables.items():
        res = await session.execute(select(table).order_by(table.c.id))
        rows[kind] = list(res.mappings())
    assoc = orm.skz_protected_pipes
    protected: dict[str, list[str]] = {}
    for skz_id, pipe_id in await session.execute(
        select(assoc.c.skz_id, assoc.c.pipe_id).order_by(assoc.c.skz_id, assoc.c.pipe_id)
    ):
        protected.setdefault(skz_id, []).append(pipe_id)
    node_pos = {r["id"]: [r["lon"], r["lat"]] for r in rows["node"]}
    features: list[dict[str, Any]] = []
    for kind in _EXPORT_ORDER:
        spec = PROPERTIES[kind]
        for r in rows[kind]:
            props: dict[str, Any] = {"id": r["id"], "kind": kind}
            for name, prop in spec.items():
                v = protected.get(r["id"]) if prop.field == "protected_pipe_ids" else r[prop.field]
                if prop.export and v is not None:
                    props[name] = _export_value(v, prop)
            geometry: dict[str, Any] | None = None
            if kind in _POINT_KINDS:
                geometry = {"type": "Point", "coordinates": [r["lon"], r["lat"]]}
            elif kind in {"pipe", "link"}:
                a, b = node_pos.get(r["from_node_id"]), node_pos.get(r["to_node_id"])
                if a is not None and b is not None:
                    inner = (r["vertices"] or []) if kind == "pipe" else []
                    geometry = {"type": "LineString", "coordinates": [a, *inner, b]}
            features.append({"type": "Feature", "id": r["id"], "geometry": geometry,
                             "properties": props})
    return {"type": "FeatureCollection", "features": features}


# --- import -----------------------------------------------------------------------------------


def load_json_file(path: Path) -> Any:
    """A UTF-8 JSON file (a byte-order mark tolerated); `ValidationFailed` naming the file if not."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed([FieldError(path.name, "file", f"not UTF-8 text: {exc}")]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed([FieldError(
            path.name, "file", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        )]) from None


async def import_file(session: AsyncSession, path: str | Path, actor: Actor, *,
                      end_tolerance_m: float = DEFAULT_END_TOLERANCE_M) -> ImportSummary:
    """Read, parse and write a GeoJSON file all-or-nothing in the caller's transaction.

    Raises `ValidationFailed` (invalid JSON with line and column, or every problem of the
    file); the caller then rolls back. Audited as `network.import.geojson`.
    """
    records = parse_feature_collection(load_json_file(Path(path)), end_tolerance_m=end_tolerance_m)
    return await bulk_import(session, records, actor, operation="network.import.geojson")
