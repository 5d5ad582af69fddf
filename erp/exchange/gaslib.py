"""GasLib `.net` import: a transmission network instance (gaslib.zib.de) as registry records.

GasLib writes every quantity as `<name value=".." unit=".."/>` and the units vary between and
within files (m / km / mm, Celsius / K, bar absolute), so every value goes through
`convert_unit`, which knows each unit by a table and refuses an unknown one. Mapping:

- `source`, `sink`, `innode` → node (`kind` source / sink / junction), pressure level "high";
  height → `elevation_m`; pressure bounds, flow bounds and gas data → node `props` (SI keys).
- `pipe` → pipe (length, inner diameter, roughness; material "steel");
  `valve` → valve (normal and current state open, drawn midway between its nodes);
  `shortPipe`, `compressorStation`, `resistor`, `controlValve` → link (`kind` short_pipe /
  compressor / resistor / control_valve) with their parameters in `params` (SI keys).
- everything goes into one area, returned first; its id is the file title with `_` and blanks
  turned into `-` (`GasLib_40` → `GasLib-40`).

Coordinates: `geoWGS84Lat` / `geoWGS84Long` where the file has them; otherwise the planar
drawing coordinates `x`, `y` are read as kilometres east / north of the anchor
51.0° N, 10.0° E (an equirectangular map; GasLib's x, y carry no unit and are schematic).
Ids are kept as in the file; `id_prefix` is put before every node and connection id.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erp.domain.rules import FieldError
from erp.errors import ValidationFailed
from erp.services.registry import AssetRecord, ImportSummary, bulk_import

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from erp.services.audit import Actor

__all__ = ["ANCHOR_LAT_DEG", "ANCHOR_LON_DEG", "UNITS", "convert_unit", "import_gaslib_file",
           "parse_gaslib"]

NS_GAS = "http://gaslib.zib.de/Gas"
NS_FRAMEWORK = "http://gaslib.zib.de/Framework"
_G = f"{{{NS_GAS}}}"
_F = f"{{{NS_FRAMEWORK}}}"

ANCHOR_LAT_DEG = 51.0
ANCHOR_LON_DEG = 10.0
EARTH_RADIUS_M = 6371008.8
PRESSURE_LEVEL = "high"
ID_MAX_CHARS = 64

# unit as written in GasLib → (quantity, factor, offset): SI value = value × factor + offset,
# computed exactly on the decimal text and rounded once.
_F1, _F0 = Fraction(1), Fraction(0)
UNITS: Mapping[str, tuple[str, Fraction, Fraction]] = {
    "m": ("length", _F1, _F0),
    "meter": ("length", _F1, _F0),
    "km": ("length", Fraction(1000), _F0),
    "mm": ("length", Fraction(1, 1000), _F0),
    "Pa": ("pressure", _F1, _F0),
    "kPa": ("pressure", Fraction(1000), _F0),
    "MPa": ("pressure", Fraction(10**6), _F0),
    "bar": ("pressure", Fraction(10**5), _F0),
    "K": ("temperature", _F1, _F0),
    "Celsius": ("temperature", _F1, Fraction("273.15")),
    "m_cube_per_hour": ("volume_flow", Fraction(1, 3600), _F0),
    "1000m_cube_per_hour": ("volume_flow", Fraction(1000, 3600), _F0),
    "m_cube_per_s": ("volume_flow", _F1, _F0),
    "MJ_per_m_cube": ("energy_density", Fraction(10**6), _F0),
    "kg_per_m_cube": ("density", _F1, _F0),
    "kg_per_kmol": ("molar_mass", Fraction(1, 1000), _F0),
    "W_per_m_square_per_K": ("heat_transfer_coefficient", _F1, _F0),
}
# SI unit suffix of each quantity, for keys of elements this importer does not know by name.
# Volume flows are at GasLib's normal conditions (0 °C, 1.01325 bar): `_norm`.
_SUFFIX = {"length": "m", "pressure": "pa", "temperature": "k", "volume_flow": "m3s_norm",
           "energy_density": "j_m3", "density": "kg_m3", "molar_mass": "kg_mol",
           "heat_transfer_coefficient": "w_m2k"}

# element tag → (key, quantity); quantity None = dimensionless (no unit attribute).
_KNOWN: Mapping[str, tuple[str, str | None]] = {
    "height": ("elevation_m", "length"),
    "pressureMin": ("pressure_min_pa_abs", "pressure"),
    "pressureMax": ("pressure_max_pa_abs", "pressure"),
    "pressureInMin": ("pressure_in_min_pa_abs", "pressure"),
    "pressureOutMax": ("pressure_out_max_pa_abs", "pressure"),
    "pressureLossIn": ("pressure_loss_in_pa", "pressure"),
    "pressureLossOut": ("pressure_loss_out_pa", "pressure"),
    "pressureDifferentialMin": ("pressure_differential_min_pa", "pressure"),
    "pressureDifferentialMax": ("pressure_differential_max_pa", "pressure"),
    "pseudocriticalPressure": ("pseudocritical_pressure_pa_abs", "pressure"),
    "pseudocriticalTemperature": ("pseudocritical_temperature_k", "temperature"),
    "gasTemperature": ("gas_temperature_k", "temperature"),
    "flowMin": ("flow_min_m3s_norm", "volume_flow"),
    "flowMax": ("flow_max_m3s_norm", "volume_flow"),
    "calorificValue": ("calorific_value_j_m3_norm", "energy_density"),
    "normDensity": ("norm_density_kg_m3", "density"),
    "molarMass": ("molar_mass_kg_mol", "molar_mass"),
    "coefficient-A-heatCapacity": ("heat_capacity_coefficient_a", None),
    "coefficient-B-heatCapacity": ("heat_capacity_coefficient_b", None),
    "coefficient-C-heatCapacity": ("heat_capacity_coefficient_c", None),
    "length": ("length_m", "length"),
    "diameter": ("diameter_m", "length"),
    "diameterIn": ("diameter_in_m", "length"),
    "diameterOut": ("diameter_out_m", "length"),
    "roughness": ("roughness_m", "length"),
    "dragFactor": ("drag_factor", None),
    "dragFactorIn": ("drag_factor_in", None),
    "dragFactorOut": ("drag_factor_out", None),
    "heatTransferCoefficient": ("heat_transfer_coefficient_w_m2k", "heat_transfer_coefficient"),
}
# Units some files leave out: GasLib-24 and GasLib-582 write `<height value=".."/>`; heights
# are metres in every file that states a unit.
_DEFAULT_UNIT = {"height": "m"}
_NODE_KINDS = {"source": "source", "sink": "sink", "innode": "junction"}
_LINK_KINDS = {"shortPipe": "short_pipe", "compressorStation": "compressor",
               "resistor": "resistor", "controlValve": "control_valve"}
# Attributes of connections kept in link params (0/1 flags become booleans).
_LINK_ATTRS = {"fuelGasVertex": "fuel_gas_node_id", "alias": "alias"}
_LINK_FLAGS = {"gasCoolerExisting": "gas_cooler_existing",
               "internalBypassRequired": "internal_bypass_required",
               "gasPreheaterExisting": "gas_preheater_existing"}


def convert_unit(value: float | str, unit: str, quantity: str | None = None) -> float:
    """`value` (a number or its decimal text) given in GasLib `unit` as an SI value.

    With `quantity` (length, pressure, temperature, volume_flow, ...) the unit must measure it.
    Raises ValueError for an unknown unit or one of another quantity.
    """
    try:
        got, factor, offset = UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown unit {unit!r}; known units: {sorted(UNITS)}") from None
    if quantity is not None and got != quantity:
        raise ValueError(f"unit {unit!r} measures {got}, expected a {quantity} unit")
    exact = Fraction(value) if isinstance(value, str) else Fraction(repr(float(value)))
    return float(exact * factor + offset)


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
                  ).strip("_")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class _Reader:
    """Collects errors while reading the quantities of one element's children."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, asset_id: str, field: str, message: str) -> None:
        self.errors.append(FieldError(asset_id, field, message))

    def quantities(self, el: ET.Element, asset_id: str) -> dict[str, float]:
        """Every `<name value unit/>` child of `el` in SI, by key."""
        out: dict[str, float] = {}
        for child in el:
            if not isinstance(child.tag, str):
                continue  # comments and processing instructions
            tag = _local(child.tag)
            raw, unit = child.get("value"), child.get("unit", _DEFAULT_UNIT.get(tag))
            key, quantity = _KNOWN.get(tag, (None, None))
            try:
                if raw is None:
                    raise ValueError("has no value attribute")
                try:
                    value = float(raw)
                except ValueError:
                    raise ValueError(f"value {raw!r} is not a number") from None
                if not math.isfinite(value):
                    raise ValueError(f"value {raw!r} is not finite")
                if unit is None:
                    if quantity is not None:
                        raise ValueError(f"has no unit attribute (a {quantity} is expected)")
                    out[key or _snake(tag)] = value
                    continue
                si = convert_unit(raw.strip(), unit, quantity)
                out[key or f"{_snake(tag)}_{_SUFFIX[UNITS[unit][0]]}"] = si
            except ValueError as exc:
                self.fail(asset_id, tag, str(exc))
        return out


def _planar_to_wgs84(x_km: float, y_km: float) -> tuple[float, float]:
    """Drawing coordinates (km east, km north of the anchor) → (lat, lon) in degrees."""
    lat = ANCHOR_LAT_DEG + math.degrees(y_km * 1000.0 / EARTH_RADIUS_M)
    lon = ANCHOR_LON_DEG + math.degrees(
        x_km * 1000.0 / (EARTH_RADIUS_M * math.cos(math.radians(ANCHOR_LAT_DEG))))
    return lat, lon


def _position(el: ET.Element, asset_id: str, rd: _Reader) -> tuple[float, float] | None:
    def num(attr: str) -> float | None:
        raw = el.get(attr)
        if raw is None:
            return None
        try:
            v = float(raw)
        except ValueError:
            v = math.nan
        if not math.isfinite(v):
            rd.fail(asset_id, attr, f"{raw!r} is not a number")
            return None
        return v

    lat, lon = num("geoWGS84Lat"), num("geoWGS84Long")
    if lat is not None and lon is not None:
        return lat, lon
    x, y = num("x"), num("y")
    if x is not None and y is not None:
        return _planar_to_wgs84(x, y)
    rd.fail(asset_id, "geometry", "node has neither geoWGS84Lat/geoWGS84Long nor x/y")
    return None


def _area_id(title: str) -> str:
    return re.sub(r"[\s_]+", "-", title.strip())[:64] or "GasLib"


def _load(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        raise ValidationFailed([FieldError(
            path.name, "file", f"not well-formed XML at line {line}, column {col + 1}: {exc}")]
        ) from None
    if root.tag != f"{_G}network":
        raise ValidationFailed([FieldError(
            path.name, "file", f"not a GasLib network: root element is {root.tag!r}, expected "
                               f"'network' in namespace {NS_GAS}")])
    return root


def parse_gaslib(path: str | Path, *, id_prefix: str = "") -> list[AssetRecord]:
    """A GasLib `.net` file as registry records: its area first, then nodes, then connections.

    Arguments: `path` of the `.net` XML file; `id_prefix` put before every node and connection
    id. Values are SI (metres, Pa absolute for pressure bounds, m³/s at normal conditions for
    flows, K). Raises `ValidationFailed` naming every element and field at fault.
    """
    path = Path(path)
    root = _load(path)
    rd = _Reader()
    title = (root.findtext(f"{_F}information/{_F}title") or path.stem).strip()
    doc = (root.findtext(f"{_F}information/{_F}documentation") or "").strip()
    area_id = _area_id(title)
    name = f"{title}: {doc}" if doc else title
    records = [AssetRecord("area", area_id, {"name": name[:200]})]
    positions: dict[str, tuple[float, float]] = {}

    for el in root.iterfind(f"{_F}nodes/*"):
        tag = _local(el.tag)
        raw_id = el.get("id")
        if tag not in _NODE_KINDS or not raw_id:
            rd.fail(raw_id or f"nodes/{tag}", "id" if tag in _NODE_KINDS else "kind",
                    "node without id" if tag in _NODE_KINDS else f"unknown node type {tag!r}")
            continue
        nid = id_prefix + raw_id
        if len(nid) > ID_MAX_CHARS:
            rd.fail(nid, "id", f"is longer than {ID_MAX_CHARS} characters")
            continue
        q = rd.quantities(el, nid)
        values: dict[str, Any] = {"kind": _NODE_KINDS[tag], "pressure_level": PRESSURE_LEVEL,
                                  "area_id": area_id, "elevation_m": q.pop("elevation_m", 0.0)}
        if el.get("alias"):
            values["name"] = el.get("alias", "")[:200]
        pos = _position(el, nid, rd)
        if pos is not None:
            values["lat"], values["lon"] = pos
            positions[nid] = pos
        values["props"] = dict(sorted(q.items())) or None
        records.append(AssetRecord("node", nid, values))

    for el in root.iterfind(f"{_F}connections/*"):
        tag = _local(el.tag)
        raw_id = el.get("id")
        if not raw_id:
            rd.fail(f"connections/{tag}", "id", "connection without id")
            continue
        cid = id_prefix + raw_id
        if len(cid) > ID_MAX_CHARS:
            rd.fail(cid, "id", f"is longer than {ID_MAX_CHARS} characters")
            continue
        ends = {f"{end}_node_id": id_prefix + el.get(end, "") if el.get(end) else None
                for end in ("from", "to")}
        q = rd.quantities(el, cid)
        common = {**ends, "pressure_level": PRESSURE_LEVEL, "area_id": area_id}
        if tag == "pipe":
            records.append(AssetRecord("pipe", cid, {
                **common, "length_m": q.get("length_m"), "inner_diameter_m": q.get("diameter_m"),
                "roughness_m": q.get("roughness_m"), "material": "steel"}))
        elif tag == "valve":
            a = positions.get(ends["from_node_id"] or "")
            b = positions.get(ends["to_node_id"] or "")
            values = {**common, "normal_state": "open", "current_state": "open"}
            if a and b:
                values["lat"], values["lon"] = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
            records.append(AssetRecord("valve", cid, values))
        elif tag in _LINK_KINDS:
            params: dict[str, Any] = dict(q)
            for attr, key in _LINK_ATTRS.items():
                if el.get(attr):
                    params[key] = (id_prefix if attr == "fuelGasVertex" else "") + el.get(attr, "")
            for attr, key in _LINK_FLAGS.items():
                if el.get(attr) is not None:
                    params[key] = el.get(attr) not in {"0", "false"}
            records.append(AssetRecord("link", cid, {**common, "kind": _LINK_KINDS[tag],
                                                     "params": dict(sorted(params.items()))}))
        else:
            rd.fail(cid, "kind", f"unknown connection type {tag!r}")
    if rd.errors:
        raise ValidationFailed(rd.errors)
    return records


async def import_gaslib_file(session: AsyncSession, path: str | Path, actor: Actor, *,
                             id_prefix: str = "") -> ImportSummary:
    """Parse a GasLib `.net` file and write it all-or-nothing in the caller's transaction."""
    records = parse_gaslib(path, id_prefix=id_prefix)
    return await bulk_import(session, records, actor, operation="network.import.gaslib")
