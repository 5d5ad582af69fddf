"""Telemetry tag definitions derived from the registry: which measurements each asset has.

Each asset class has a template (station pressures, temperature, flow, door, valve state; SKZ
output and polarization potential; corrector volumes, pressure, temperature, alarms; internal
meters; per area, the live twin's leak watch, which no device reports). `ensure_tags` creates
the missing definitions for every in-service asset, idempotently,
so a new station gets its tags the moment it is registered and `gasops seed-demo` can run twice.
Residential smart meters (tens of thousands) get their tags when they first report (push driver).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm

__all__ = ["TagTemplate", "ensure_tags", "load_tags", "templates_for"]


@dataclass(frozen=True, slots=True)
class TagTemplate:
    """One measurement of an asset class (units in the name's sense: Pa gauge, °C, m³/h std)."""

    name: str
    unit: str
    description: str
    data_type: str = "float"
    deadband_kind: str = "none"
    deadband_value: float = 0.0
    range_low: float | None = None
    range_high: float | None = None
    expected_period_s: float | None = 60.0
    writable: bool = False


_STATION = [
    TagTemplate("p_in", "Pa", "inlet pressure, gauge", deadband_kind="absolute",
                deadband_value=500.0, range_low=0.0, range_high=1.2e6, expected_period_s=10),
    TagTemplate("p_out", "Pa", "outlet pressure, gauge", deadband_kind="absolute",
                deadband_value=10.0, range_low=0.0, expected_period_s=10),
    TagTemplate("t_gas", "degC", "gas temperature", deadband_kind="absolute",
                deadband_value=0.2, range_low=-40.0, range_high=60.0, expected_period_s=10),
    # 0.05 % of the station's capacity: the gas balance and the twin's leak watch need the
    # flow to about a tenth of the meter's 1 % (0.5 % of a GRS's 30,000 m3/h would hide
    # 150 m3/h, more than a district's leak)
    TagTemplate("flow", "m3/h", "flow at standard conditions (20 degC, 101.325 kPa)",
                deadband_kind="percent", deadband_value=0.05, range_low=0.0,
                expected_period_s=10),
    TagTemplate("door", "", "door / intrusion contact (true = open)", data_type="bool",
                expected_period_s=10),
    TagTemplate("valve_pos", "%", "outlet valve position", deadband_kind="absolute",
                deadband_value=0.5, range_low=0.0, range_high=100.0, expected_period_s=10,
                writable=True),
    # The regulator's outlet set-point as the station controller holds it: written by
    # `set_outlet_setpoint` commands (and pressure plans) and read back from the same tag.
    TagTemplate("p_out_sp", "Pa", "outlet pressure set-point, gauge", deadband_kind="absolute",
                deadband_value=1.0, range_low=0.0, expected_period_s=10, writable=True),
]
_SKZ = [
    TagTemplate("u_out", "V", "rectifier output voltage", deadband_kind="absolute",
                deadband_value=0.1, range_low=0.0, expected_period_s=60),
    TagTemplate("i_out", "A", "rectifier output current", deadband_kind="absolute",
                deadband_value=0.05, range_low=0.0, expected_period_s=60),
    TagTemplate("potential", "V", "polarization potential vs Cu/CuSO4 electrode",
                deadband_kind="absolute", deadband_value=0.005, range_low=-3.0,
                range_high=0.0, expected_period_s=60),
    TagTemplate("mode", "", "0 constant current, 1 constant voltage, 2 automatic potential",
                data_type="int", expected_period_s=60, writable=True),
    TagTemplate("setpoint", "V", "potential set-point of automatic mode, vs Cu/CuSO4",
                expected_period_s=60, writable=True),
]
_CORRECTOR = [
    TagTemplate("vb", "m3", "volume at standard conditions (counter)", expected_period_s=60),
    TagTemplate("vm", "m3", "volume at working conditions (counter)", expected_period_s=60),
    TagTemplate("p", "Pa", "gas pressure, absolute", deadband_kind="absolute",
                deadband_value=100.0, expected_period_s=60),
    TagTemplate("t", "degC", "gas temperature", deadband_kind="absolute", deadband_value=0.2,
                expected_period_s=60),
    TagTemplate("alarm", "", "corrector alarm bits", data_type="int", expected_period_s=60),
]
_INTERNAL = {
    "internal_gas": [TagTemplate("vb", "m3", "own-needs gas volume, standard conditions",
                                 expected_period_s=3600)],
    "internal_electricity": [TagTemplate("energy", "kWh", "active energy (counter)",
                                         expected_period_s=3600)],
    "internal_water": [TagTemplate("volume", "m3", "water volume (counter)",
                                   expected_period_s=3600)],
    "internal_heat": [TagTemplate("energy", "GJ", "heat energy (counter)",
                                  expected_period_s=3600)],
}
_VALVE = [
    TagTemplate("position", "%", "valve position (0 closed, 100 open)", range_low=0.0,
                range_high=100.0, expected_period_s=30, writable=True),
    TagTemplate("remote", "", "actuator selector in REMOTE (false: LOCAL or OFF, commands "
                "from here are ignored)", data_type="bool", expected_period_s=30),
    TagTemplate("fault", "", "actuator fault (torque trip, motor thermostat, phase loss)",
                data_type="bool", expected_period_s=30),
]


# Written by the live twin's leak watch (`server/leak_watch.py`), not by a device: no expected
# period (the twin's cycle is a setting) and no source.
_AREA = [
    TagTemplate("leak", "m3/h", "leak suspected by the twin: estimated leak at standard "
                "conditions (20 degC); 0 while none is suspected", range_low=0.0,
                expected_period_s=None),
    TagTemplate("leak_level", "", "the twin's leak detector for this area: its statistic over "
                "the alarm threshold (1 raises 'leak suspected')", range_low=0.0,
                expected_period_s=None),
]


# The town's air temperature (a weather service's feed, or the demo's history): what the
# demand forecasts fit the metered consumption against.
_WEATHER = [
    TagTemplate("air_t", "degC", "daily mean air temperature of the town", range_low=-60.0,
                range_high=50.0, expected_period_s=None),
]


class _Town:
    """The asset the weather tag belongs to."""

    id = "town"
    area_id = None


def templates_for(asset_kind: str, subtype: str | None) -> Sequence[TagTemplate]:
    """The tag templates of an asset (kind + its own kind), empty when it has no telemetry."""
    if asset_kind == "area":
        return _AREA
    if asset_kind == "weather":
        return _WEATHER
    if asset_kind == "station":
        return _STATION
    if asset_kind == "skz":
        return _SKZ
    if asset_kind == "valve":
        return _VALVE
    if asset_kind == "meter" and subtype == "industrial_corrector":
        return _CORRECTOR
    if asset_kind == "meter" and subtype in _INTERNAL:
        return _INTERNAL[subtype]
    return ()


def _rows(asset_kind: str, prefix: str, asset: Any, subtype: str | None,
          range_high: dict[str, float]) -> Iterable[dict[str, Any]]:
    area_id = asset.id if asset_kind == "area" else asset.area_id
    for t in templates_for(asset_kind, subtype):
        yield {
            "path": f"{prefix}/{asset.id}/{t.name}", "asset_kind": asset_kind,
            "asset_id": asset.id, "area_id": area_id, "name": t.name,
            "description": t.description, "unit": t.unit, "data_type": t.data_type,
            "scale": 1.0, "offset": 0.0, "deadband_kind": t.deadband_kind,
            "deadband_value": t.deadband_value, "range_low": t.range_low,
            "range_high": range_high.get(t.name, t.range_high),
            "expected_period_s": t.expected_period_s, "writable": t.writable, "source": None,
        }


async def ensure_tags(session: AsyncSession) -> int:
    """Create the missing tag definitions of every in-service asset; returns how many."""
    existing = set((await session.execute(select(orm.TagDefinition.path))).scalars())
    rows: list[dict[str, Any]] = []
    live = "retired"
    for st in (await session.execute(select(orm.Station).where(orm.Station.status != live))
               ).scalars():
        level_max = 5_000.0 if st.outlet_level == "low" else 300_000.0 if (
            st.outlet_level == "medium") else 1.2e6
        rows += _rows("station", "station", st, None, {
            "p_out": level_max, "flow": st.capacity_m3h_std or 10_000.0})
    for skz in (await session.execute(select(orm.SkzStation).where(
            orm.SkzStation.status != live))).scalars():
        rows += _rows("skz", "skz", skz, None, {"u_out": skz.rated_voltage_v,
                                                  "i_out": skz.rated_current_a})
    for v in (await session.execute(select(orm.Valve).where(
            orm.Valve.status != live, orm.Valve.remotely_operable.is_(True)))).scalars():
        rows += _rows("valve", "valve", v, None, {})
    for m in (await session.execute(select(orm.Meter).where(
            orm.Meter.status != live, orm.Meter.kind != "residential"))).scalars():
        rows += _rows("meter", "meter", m, m.kind, {})
    areas = list((await session.execute(select(orm.Area))).scalars())
    for area in areas:
        rows += _rows("area", "area", area, None, {})
    if areas:  # the town's weather: one tag, in no area (the forecasts read its history)
        rows += _rows("weather", "weather", _Town(), None, {})
    new = [r for r in rows if r["path"] not in existing]
    if new:
        await session.execute(insert(orm.TagDefinition), new)
    return len(new)


async def load_tags(session: AsyncSession) -> list[orm.TagDefinition]:
    """Every tag definition, by path."""
    return list((await session.execute(
        select(orm.TagDefinition).order_by(orm.TagDefinition.path))).scalars())
