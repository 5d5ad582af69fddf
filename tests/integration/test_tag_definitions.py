"""Tag definitions generated from the registry, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from erp.adapters.db import session_factory
from erp.services import audit, registry, tags
from erp.services.registry import AssetRecord

ACTOR = audit.Actor("test", "admin")


async def test_tags_follow_the_registry_and_are_idempotent(db_engine: AsyncEngine) -> None:
    recs = [
        AssetRecord("area", "D1", {"name": "D1"}),
        AssetRecord("node", "IN", {"lat": 57.6, "lon": 39.8, "pressure_level": "medium"}),
        AssetRecord("node", "OUT", {"lat": 57.6, "lon": 39.8, "pressure_level": "low"}),
        AssetRecord("station", "GRP-01", {
            "name": "GRP 1", "kind": "GRP", "inlet_node_id": "IN", "outlet_node_id": "OUT",
            "inlet_level": "medium", "outlet_level": "low", "outlet_setpoint_pa_gauge": 2800,
            "capacity_m3h_std": 600, "lat": 57.6, "lon": 39.8, "area_id": "D1"}),
        AssetRecord("skz", "SKZ-01", {"name": "SKZ 1", "lat": 57.6, "lon": 39.8,
                                      "rated_voltage_v": 48, "rated_current_a": 25}),
        AssetRecord("meter", "M-1", {"serial": "1", "model": "EK270",
                                     "kind": "industrial_corrector"}),
        AssetRecord("meter", "M-2", {"serial": "2", "model": "SGBM", "kind": "residential"}),
    ]
    S = session_factory(db_engine)
    async with S.begin() as s:
        await registry.bulk_import(s, recs, ACTOR)
        created = await tags.ensure_tags(s)
    async with S.begin() as s:
        assert await tags.ensure_tags(s) == 0
        defs = {t.path: t for t in await tags.load_tags(s)}
    # station, SKZ, corrector, area D1's leak watch, the town's air temperature
    assert created == len(defs) == 7 + 5 + 5 + 2 + 1
    weather = defs["weather/town/air_t"]
    assert (weather.unit, weather.area_id, weather.asset_kind) == ("degC", None, "weather")
    leak = defs["area/D1/leak"]
    assert (leak.asset_kind, leak.asset_id, leak.area_id, leak.unit) == ("area", "D1", "D1", "m3/h")
    assert leak.expected_period_s is None and leak.source is None  # the twin writes it, no device
    p_out = defs["station/GRP-01/p_out"]
    assert (p_out.unit, p_out.range_high, p_out.area_id) == ("Pa", 5000.0, "D1")
    assert defs["station/GRP-01/flow"].range_high == 600
    assert defs["skz/SKZ-01/i_out"].range_high == 25
    assert defs["skz/SKZ-01/mode"].writable
    assert not any(p.startswith("meter/M-2/") for p in defs)
