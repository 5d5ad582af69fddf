"""Alarm definitions generated from the registry, and the alarm journal, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from erp.adapters import orm
from erp.adapters.db import alembic_config, current_revision, head_revision, session_factory
from erp.services import alarms, audit, registry, tags
from erp.services.registry import AssetRecord

ACTOR = audit.Actor("test", "admin")
T0 = dt.datetime(2026, 1, 15, 6, 0, tzinfo=dt.UTC)
ALARM_TABLES = {"alarm_definitions", "alarm_events"}

RECORDS = [
    AssetRecord("area", "D1", {"name": "D1"}),
    AssetRecord("area", "D2", {"name": "D2"}),
    AssetRecord("node", "HP", {"lat": 57.6, "lon": 39.8, "pressure_level": "high"}),
    AssetRecord("node", "IN", {"lat": 57.6, "lon": 39.8, "pressure_level": "medium"}),
    AssetRecord("node", "IN2", {"lat": 57.6, "lon": 39.8, "pressure_level": "medium"}),
    AssetRecord("node", "OUT", {"lat": 57.6, "lon": 39.8, "pressure_level": "low"}),
    AssetRecord("station", "GRS-1", {
        "name": "GRS 1", "kind": "GRS", "inlet_node_id": "HP", "outlet_node_id": "IN",
        "inlet_level": "high", "outlet_level": "medium", "outlet_setpoint_pa_gauge": 250_000,
        "capacity_m3h_std": 20_000, "lat": 57.6, "lon": 39.8, "area_id": "D2"}),
    AssetRecord("station", "GRP-01", {
        "name": "GRP 1", "kind": "GRP", "inlet_node_id": "IN", "outlet_node_id": "OUT",
        "inlet_level": "medium", "outlet_level": "low", "outlet_setpoint_pa_gauge": 2800,
        "capacity_m3h_std": 600, "lat": 57.6, "lon": 39.8, "area_id": "D1"}),
    AssetRecord("valve", "V-1", {"from_node_id": "IN", "to_node_id": "IN2",
                                 "pressure_level": "medium", "remotely_operable": True,
                                 "lat": 57.6, "lon": 39.8, "area_id": "D1"}),
    AssetRecord("valve", "V-2", {"from_node_id": "IN", "to_node_id": "IN2",
                                 "pressure_level": "medium", "lat": 57.6, "lon": 39.8}),
    AssetRecord("skz", "SKZ-01", {"name": "SKZ 1", "lat": 57.6, "lon": 39.8, "area_id": "D1",
                                  "rated_voltage_v": 48, "rated_current_a": 25}),
    AssetRecord("meter", "M-1", {"serial": "1", "model": "EK270", "kind": "industrial_corrector",
                                 "area_id": "D1"}),
    AssetRecord("meter", "M-2", {"serial": "2", "model": "SGBM", "kind": "residential"}),
    AssetRecord("meter", "M-3", {"serial": "3", "model": "Mercury", "kind": "internal_electricity",
                                 "station_id": "GRP-01"}),
]


async def _seed(engine: AsyncEngine) -> int:
    async with session_factory(engine).begin() as s:
        await registry.bulk_import(s, RECORDS, ACTOR)
        await tags.ensure_tags(s)
        return await alarms.ensure_alarm_definitions(s)


async def _defs(engine: AsyncEngine) -> dict[str, orm.AlarmDefinitionRow]:
    async with session_factory(engine)() as s:
        rows = (await s.execute(select(orm.AlarmDefinitionRow))).scalars().all()
    return {d.id: d for d in rows}


def _event(alarm_id: str, ts: dt.datetime, kind: str = "activated", **more: Any) -> dict[str, Any]:
    return {"alarm_id": alarm_id, "kind": kind, "ts": ts, "status": "unack", "mode": "in_service",
            "active": kind == "activated", "priority": 2, **more}


async def _append(engine: AsyncEngine, events: list[dict[str, Any]]) -> list[int]:
    async with session_factory(engine).begin() as s:
        return await alarms.append_alarm_events(s, events)


# --- migration -------------------------------------------------------------------------------


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_migration_0005_downgrades_and_upgrades_again(db_engine: AsyncEngine) -> None:
    cfg = alembic_config(db_engine.url.render_as_string(hide_password=False))

    def step(conn: Connection, direction: str, target: str) -> set[str]:
        cfg.attributes["connection"] = conn
        getattr(command, direction)(cfg, target)
        return _tables(conn)

    async with db_engine.connect() as conn:
        assert ALARM_TABLES <= await conn.run_sync(_tables)
    async with db_engine.begin() as conn:
        after_down = await conn.run_sync(step, "downgrade", "0004")
    assert not ALARM_TABLES & after_down and "tags" in after_down
    assert await current_revision(db_engine) == "0004"
    async with db_engine.begin() as conn:
        assert ALARM_TABLES <= await conn.run_sync(step, "upgrade", "head")
    assert await current_revision(db_engine) == head_revision()

    def seq_type(conn: Connection) -> str:
        cols = {c["name"]: c for c in inspect(conn).get_columns("alarm_events")}
        return str(cols["seq"]["type"])

    async with db_engine.connect() as conn:
        expected = "BIGINT" if db_engine.dialect.name == "postgresql" else "INTEGER"
        assert await conn.run_sync(seq_type) == expected
    assert await _seed(db_engine) > 0  # the re-created tables work


# --- definitions -----------------------------------------------------------------------------


async def test_default_definitions_follow_the_registry(db_engine: AsyncEngine) -> None:
    created = await _seed(db_engine)
    defs = await _defs(db_engine)
    assert created == len(defs) == 2 * 9 + 4 + 2 + 2 + 2  # … and each area's leak watch
    assert {d.asset_id for d in defs.values()} == {"GRS-1", "GRP-01", "SKZ-01", "M-1", "V-1", "D1", "D2"}
    leak = defs["area/D1/leak:hi"]
    assert (leak.priority, leak.area_id, leak.limit_value) == (2, "D1", pytest.approx(0.05))
    assert "leak suspected" in leak.message
    assert all(d.source == "default" and d.enabled for d in defs.values())

    grp = "station/GRP-01"
    limits = {k: defs[f"{grp}/p_out:{k}"].limit_value for k in ("hihi", "hi", "lo", "lolo")}
    assert limits == pytest.approx({"hihi": 3500, "hi": 3080, "lo": 2520, "lolo": 2100})
    hi = defs[f"{grp}/p_out:hi"]
    assert (hi.kind, hi.priority, hi.tag, hi.area_id, hi.asset_id) == (
        "hi", 3, f"{grp}/p_out", "D1", "GRP-01")
    assert (hi.deadband, hi.on_delay_s, hi.off_delay_s, hi.latching) == (
        pytest.approx(28.0), 5.0, 0.0, False)
    assert "GRP-01" in hi.message and "3.08 kPa" in hi.message and hi.consequence and hi.guidance
    assert defs[f"{grp}/p_out:hihi"].priority == defs[f"{grp}/p_out:lolo"].priority == 4
    assert defs["station/GRS-1/p_out:hi"].limit_value == pytest.approx(275_000)
    assert defs["station/GRS-1/p_out:hi"].area_id == "D2"
    assert defs[f"{grp}/p_in:lo"].limit_value == pytest.approx(3360)
    door = defs[f"{grp}/door:discrete"]
    assert (door.states, door.priority) == ([True], 3)
    stale = defs[f"{grp}/p_out:stale"]
    assert (stale.stale_after_s, stale.priority, stale.limit_value) == (30.0, 3, None)
    assert (defs[f"{grp}/t_gas:lo"].limit_value, defs[f"{grp}/t_gas:lo"].priority) == (-10.0, 1)
    assert defs[f"{grp}/flow:hi"].limit_value == pytest.approx(600)

    cp = defs["skz/SKZ-01/potential:cp_window"]
    assert (cp.low, cp.high, cp.priority, cp.on_delay_s, cp.limit_value) == (
        -1.15, -0.85, 2, 60.0, None)
    u_out = defs["skz/SKZ-01/u_out:lo"]
    assert (u_out.limit_value, u_out.priority, u_out.on_delay_s) == (0.5, 2, 30.0)
    assert defs["skz/SKZ-01/i_out:hi"].limit_value == pytest.approx(0.95 * 25)
    assert (defs["skz/SKZ-01/potential:stale"].stale_after_s,
            defs["skz/SKZ-01/potential:stale"].priority) == (180.0, 1)
    corr = defs["meter/M-1/alarm:hi"]
    assert (corr.limit_value, corr.priority, corr.area_id) == (1.0, 2, "D1")
    assert defs["meter/M-1/p:stale"].stale_after_s == 180.0
    assert defs["valve/V-1/position:bad_quality"].priority == 2
    assert defs["valve/V-1/position:stale"].stale_after_s == 90.0

    priorities = [d.priority for d in defs.values()]
    assert sum(p <= 2 for p in priorities) > len(priorities) / 2  # mostly low and medium


async def test_regeneration_is_idempotent_and_keeps_user_rows(db_engine: AsyncEngine) -> None:
    await _seed(db_engine)
    before = await _defs(db_engine)
    S = session_factory(db_engine)
    async with S.begin() as s:
        assert await alarms.ensure_alarm_definitions(s) == 0
    again = await _defs(db_engine)
    assert {k: (d.limit_value, d.updated_at) for k, d in again.items()} == {
        k: (d.limit_value, d.updated_at) for k, d in before.items()}

    D = orm.AlarmDefinitionRow
    async with S.begin() as s:
        await s.execute(update(D).where(D.id == "station/GRP-01/p_out:hi").values(
            limit_value=3200.0, source="user"))
        await s.execute(update(D).where(D.id == "station/GRP-01/t_gas:lo").values(
            enabled=False, source="user"))
        await s.delete(await s.get(D, "station/GRP-01/door:discrete"))
        await s.execute(update(orm.Station).where(orm.Station.id == "GRP-01").values(
            outlet_setpoint_pa_gauge=2000.0))
    async with S.begin() as s:
        assert await alarms.ensure_alarm_definitions(s) == 1  # only the deleted one comes back
        enabled = {d.id for d in await alarms.load_alarm_definitions(s)}
    after = await _defs(db_engine)
    assert set(after) == set(before)
    assert (after["station/GRP-01/p_out:hi"].limit_value,
            after["station/GRP-01/p_out:hi"].source) == (3200.0, "user")
    assert after["station/GRP-01/p_out:lo"].limit_value == pytest.approx(1800)  # follows
    assert after["station/GRP-01/p_out:lo"].deadband == pytest.approx(20)
    assert "1.80 kPa" in after["station/GRP-01/p_out:lo"].message
    assert after["station/GRP-01/door:discrete"].source == "default"
    assert enabled == set(after) - {"station/GRP-01/t_gas:lo"}
    async with S() as s:
        assert [d.id for d in await alarms.load_alarm_definitions(s)] == sorted(enabled)


# --- journal ---------------------------------------------------------------------------------


async def test_append_returns_seqs_and_latest_is_per_alarm(db_engine: AsyncEngine) -> None:
    ids = ["a/x:hi", "b/y:lo", "c/z:stale"]
    first = await _append(db_engine, [
        _event(ids[i % 3], T0 + dt.timedelta(seconds=i), "activated" if i % 2 else "cleared",
               value=float(i), area_id="D1")
        for i in range(8)])
    assert first == sorted(first) and len(set(first)) == 8
    second = await _append(db_engine, [_event("b/y:lo", T0 + dt.timedelta(minutes=5),
                                              "acknowledged", actor="op1", comment="seen")])
    assert second[0] > first[-1]
    batch = [_event(f"bulk/{i % 7}:hi", T0 + dt.timedelta(minutes=10, seconds=i), value=i)
             for i in range(500)]
    seqs = await _append(db_engine, batch)
    assert len(seqs) == 500 and seqs == sorted(seqs) and seqs[0] > second[0]
    async with session_factory(db_engine)() as s:
        stored = {e.seq: e for e in (await s.execute(select(orm.AlarmEventRow).where(
            orm.AlarmEventRow.seq.in_(seqs)))).scalars()}
        assert [(stored[q].alarm_id, stored[q].value) for q in seqs] == [
            (e["alarm_id"], e["value"]) for e in batch]  # each seq belongs to its own event
        assert await alarms.append_alarm_events(s, []) == []
        latest = {e.alarm_id: e for e in await alarms.latest_alarm_events(s)}
    assert set(latest) == {*ids, *(f"bulk/{k}:hi" for k in range(7))}
    assert latest["a/x:hi"].value == 6.0 and latest["c/z:stale"].value == 5.0
    ack = latest["b/y:lo"]
    assert (ack.seq, ack.kind, ack.actor, ack.comment, ack.active) == (
        second[0], "acknowledged", "op1", "seen", False)
    assert latest["bulk/3:hi"].value == 493


async def test_journal_pages_newest_first_with_filters(db_engine: AsyncEngine) -> None:
    events = [_event(f"a{i % 5}", T0 + dt.timedelta(seconds=10 * i),
                     area_id=(None, "D1", "D2")[i % 3], value=i) for i in range(230)]
    seqs = await _append(db_engine, events)
    by_seq = dict(zip(seqs, range(230), strict=True))

    async def pages(**filters: Any) -> list[int]:
        out: list[int] = []
        before: int | None = None
        async with session_factory(db_engine)() as s:
            while True:
                page = await alarms.alarm_journal(s, before_seq=before, limit=37, **filters)
                assert len(page) <= 37
                out += [e.seq for e in page]
                if len(page) < 37:
                    return out
                before = page[-1].seq

    everything = await pages()
    assert everything == sorted(seqs, reverse=True)
    assert await pages(alarm_id="a3") == [q for q in everything if by_seq[q] % 5 == 3]
    assert await pages(area_ids={"D1", "D2"}) == [q for q in everything if by_seq[q] % 3]
    assert await pages(area_ids=[]) == []
    since, until = T0 + dt.timedelta(seconds=500), T0 + dt.timedelta(seconds=1500)
    window = await pages(area_ids=("D2",), since=since, until=until, alarm_id="a1")
    assert window == [q for q in everything if by_seq[q] % 3 == 2 and by_seq[q] % 5 == 1
                      and 50 <= by_seq[q] < 150]
    assert window

    async with session_factory(db_engine)() as s:
        top = await alarms.alarm_journal(s, limit=3)
        assert [e.value for e in top] == [229, 228, 227]
        kpi = await alarms.alarm_events_between(s, since, until, area_ids=["D1"])
        assert [e.value for e in kpi] == [i for i in range(50, 150) if i % 3 == 1]
        assert len(await alarms.alarm_events_between(s, since, until)) == 100


async def test_timestamps_are_utc_and_json_values_round_trip(db_engine: AsyncEngine) -> None:
    msk = dt.timezone(dt.timedelta(hours=3))
    local = dt.datetime(2026, 1, 15, 9, 30, 0, 250_000, tzinfo=msk)
    values: list[Any] = [2816.5, 0.1, True, False, "open", None, 7, -1.0]
    seqs = await _append(db_engine, [
        _event(f"v{i}", local + dt.timedelta(seconds=i), value=v, area_id="D9",
               shelved_until=local + dt.timedelta(hours=8), activated_at=local, first_out=i == 0)
        for i, v in enumerate(values)])
    async with session_factory(db_engine)() as s:
        rows = await alarms.alarm_journal(s, area_ids=["D9"])
    rows.reverse()
    assert [r.seq for r in rows] == seqs
    assert [(r.value, type(r.value)) for r in rows] == [(v, type(v)) for v in values]
    for i, r in enumerate(rows):
        for ts in (r.ts, r.shelved_until, r.activated_at):
            assert ts is not None and ts.tzinfo is not None and ts.utcoffset() == dt.timedelta(0)
        assert r.ts == local + dt.timedelta(seconds=i)
        assert r.ts.hour == 6 and r.ts.microsecond == 250_000
        assert r.activated_at == local and r.shelved_until == local + dt.timedelta(hours=8)
        assert r.first_out is (i == 0) and r.active is True and r.message == ""


async def test_bad_arguments_are_refused(db_engine: AsyncEngine) -> None:
    naive = dt.datetime(2026, 1, 15, 6, 0)
    async with session_factory(db_engine)() as s:
        for limit in (0, 1001, True):
            with pytest.raises(ValueError, match="limit"):
                await alarms.alarm_journal(s, limit=limit)
        with pytest.raises(ValueError, match="tz-aware"):
            await alarms.alarm_journal(s, since=naive)
        with pytest.raises(ValueError, match="tz-aware"):
            await alarms.alarm_events_between(s, T0, naive)
        with pytest.raises(ValueError, match="after"):
            await alarms.alarm_events_between(s, T0, T0 - dt.timedelta(seconds=1))
        with pytest.raises(ValueError, match="collection"):
            await alarms.alarm_journal(s, area_ids="D1")
        with pytest.raises(ValueError, match="tz-aware"):
            await alarms.append_alarm_events(s, [_event("x", naive)])
        with pytest.raises(ValueError, match="missing"):
            await alarms.append_alarm_events(s, [{"alarm_id": "x", "ts": T0}])
        with pytest.raises(ValueError, match="unknown keys"):
            await alarms.append_alarm_events(s, [_event("x", T0, user="op1")])
        with pytest.raises(ValueError, match="finite"):
            await alarms.append_alarm_events(s, [_event("x", T0, value=float("nan"))])
        with pytest.raises(ValueError, match="value"):
            await alarms.append_alarm_events(s, [_event("x", T0, value=[1, 2])])
        assert await alarms.alarm_journal(s) == []  # nothing was written
