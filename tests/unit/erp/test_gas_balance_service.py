"""The gas balance service (`erp.services.gas_balance`) on a small registry, a DuckDB historian
with station flows and stored meter readings: every part of every branch and district against
values computed by hand, the parts summing exactly to the inflow, periods in local time, gaps in
the flow history, area scope.

The network (lengths in m; "—" a pipe, "=" a normally closed valve):

    SRC —(high, 800)— [GRS-1] → MP zone: G-OUT —2000— M1 —1000— [GRP-A] → N zone
                                                 M1 —1500— [ShRP-B] → S zone
                                                 M1 —500—  [ShRP-C] → C zone
    N zone: A-OUT —3000— A1 —2000— A2 = ISO (SP-ISO: in no branch)
    S zone: B-OUT —1000— B1 —1000— B2          C zone: C-OUT —500— C1

Areas: MP (GRS-1), N (GRP-A, ShRP-C), S (ShRP-B). The day is 15 January 2027 in Moscow time
(UTC+3): 2027-01-14T21:00Z to 2027-01-15T21:00Z, 24 h, in the heating season.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from erp.adapters import orm
from erp.adapters.db import session_factory
from erp.domain.balance import BalanceError
from erp.services import audit
from erp.services.gas_balance import (
    GasBalanceReport,
    Norms,
    PartBalance,
    gas_balance,
    metered_m3,
    period_of,
)
from erp.services.registry import AssetRecord, bulk_import
from realtime.historian.base import Point
from realtime.historian.duckdb import DuckDBHistorian

DAY = dt.date(2027, 1, 15)
T0 = dt.datetime(2027, 1, 14, 21, tzinfo=dt.UTC)  # local midnight of DAY
NOW = dt.datetime(2027, 2, 10, 12, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
ACTOR = audit.Actor("test", "admin")


def _records() -> list[AssetRecord]:
    recs = [AssetRecord("area", a, {"name": f"District {a}"}) for a in ("MP", "N", "S")]

    def node(nid: str, level: str, area: str) -> None:
        recs.append(AssetRecord("node", nid, {"lat": 57.6, "lon": 39.8, "pressure_level": level,
                                               "area_id": area}))

    def pipe(pid: str, a: str, b: str, length: float, level: str, area: str) -> None:
        recs.append(AssetRecord("pipe", pid, {
            "from_node_id": a, "to_node_id": b, "length_m": length, "inner_diameter_m": 0.1,
            "material": "pe", "roughness_m": 7e-6, "pressure_level": level, "area_id": area}))

    def station(sid: str, kind: str, a: str, b: str, inlet: str, outlet: str, area: str) -> None:
        recs.append(AssetRecord("station", sid, {
            "name": f"{sid} station", "kind": kind, "inlet_node_id": a, "outlet_node_id": b,
            "inlet_level": inlet, "outlet_level": outlet,
            "outlet_setpoint_pa_gauge": 2800 if outlet == "low" else 250_000,
            "capacity_m3h_std": 1000, "lat": 57.6, "lon": 39.8, "area_id": area}))

    def point(sp: str, nid: str, area: str, annual: float, category: str = "household",
              status: str = "in_service") -> None:
        recs.append(AssetRecord("service_point", sp, {
            "node_id": nid, "area_id": area, "category": category, "lat": 57.6, "lon": 39.8,
            "annual_volume_m3_std": annual, "status": status}))

    def meter(mid: str, kind: str, area: str, sp: str | None = None,
              st: str | None = None) -> None:
        recs.append(AssetRecord("meter", mid, {"serial": f"S-{mid}", "model": "test",
                                               "kind": kind, "service_point_id": sp,
                                               "station_id": st, "area_id": area}))

    for nid, level in (("SRC", "high"), ("G-IN", "high"), ("G-OUT", "medium"), ("M1", "medium"),
                       ("A-IN", "medium"), ("B-IN", "medium"), ("C-IN", "medium")):
        node(nid, level, "MP")
    for nid in ("A-OUT", "A1", "A2", "C-OUT", "C1"):
        node(nid, "low", "N")
    for nid in ("B-OUT", "B1", "B2", "ISO"):
        node(nid, "low", "S")
    pipe("P-H", "SRC", "G-IN", 800, "high", "MP")
    pipe("P-M1", "G-OUT", "M1", 2000, "medium", "MP")
    pipe("P-M2", "M1", "A-IN", 1000, "medium", "MP")
    pipe("P-M3", "M1", "B-IN", 1500, "medium", "MP")
    pipe("P-M4", "M1", "C-IN", 500, "medium", "MP")
    pipe("P-A1", "A-OUT", "A1", 3000, "low", "N")
    pipe("P-A2", "A1", "A2", 2000, "low", "N")
    pipe("P-B1", "B-OUT", "B1", 1000, "low", "S")
    pipe("P-B2", "B1", "B2", 1000, "low", "S")
    pipe("P-C1", "C-OUT", "C1", 500, "low", "N")
    recs.append(AssetRecord("valve", "V-ISO", {
        "from_node_id": "A2", "to_node_id": "ISO", "pressure_level": "low", "lat": 57.6,
        "lon": 39.8, "area_id": "S", "normal_state": "closed", "current_state": "open"}))
    station("GRS-1", "GRS", "G-IN", "G-OUT", "high", "medium", "MP")
    station("GRP-A", "GRP", "A-IN", "A-OUT", "medium", "low", "N")
    station("ShRP-B", "ShRP", "B-IN", "B-OUT", "medium", "low", "S")
    station("ShRP-C", "ShRP", "C-IN", "C-OUT", "medium", "low", "N")
    point("SP-IND", "M1", "MP", 4_000_000, "industrial")
    point("SP-N1", "A1", "N", 300)
    point("SP-N2", "A2", "N", 1460)  # 4 m³ a day
    point("SP-N3", "A2", "N", 3650)  # 10 m³ a day, no meter
    point("SP-N4", "A2", "N", 3650, status="out_of_service")  # no meter, burns nothing
    point("SP-N5", "A2", "N", 0)  # no meter, no registered volume: the household norm
    point("SP-S1", "B1", "S", 8760)  # 1 m³ an hour
    point("SP-C1", "C1", "N", 3650)
    point("SP-ISO", "ISO", "S", 3650)
    meter("M-IND", "industrial_corrector", "MP", sp="SP-IND")
    meter("M-N1", "residential", "N", sp="SP-N1")
    meter("M-N2", "residential", "N", sp="SP-N2")
    meter("M-S1", "residential", "S", sp="SP-S1")
    meter("M-A-gas", "internal_gas", "N", st="GRP-A")
    return recs


READINGS: dict[str, list[tuple[dt.datetime, float]]] = {
    # 13,000 m³ (the service keeps only the first and last of readings that only rise).
    "M-IND": [(T0, 50_000.0), (T0 + 6 * H, 52_000.0), (T0 + 12 * H, 56_500.5),
              (T0 + 18 * H, 60_000.25), (T0 + 24 * H, 63_000.0)],
    # 24 m³ over the day before 09:00Z, 48 over the day after: 12 h of each fall in the period.
    "M-N1": [(T0 - 12 * H, 100.0), (T0 + 12 * H, 124.0), (T0 + 36 * H, 172.0)],  # 12 + 24
    # Readings only from 15:00Z: 6 m³ over the last 6 h; 18 h estimated.
    "M-N2": [(T0 + 18 * H, 10.0), (T0 + 24 * H, 16.0)],
    # Replaced at 10:00Z: 12 m³, an hour not covered, 11 m³.
    "M-S1": [(T0, 900.0), (T0 + 6 * H, 905.5), (T0 + 12 * H, 912.0), (T0 + 13 * H, 3.0),
             (T0 + 18 * H, 8.25), (T0 + 24 * H, 14.0)],
    # The GRP-A heater's meter: 5 m³ over the first 12 h, nothing after.
    "M-A-gas": [(T0, 0.0), (T0 + 12 * H, 5.0)],
}
FLOWS = {"GRS-1": 560.0, "GRP-A": 3.125, "ShRP-B": 1.125, "ShRP-C": 0.5}  # m³/h, both days


def _points() -> list[Point]:
    out = []
    for k in range(2 * 24 * 12):  # every 5 min, two days
        ts = T0 + k * dt.timedelta(minutes=5)
        for sid, q in FLOWS.items():
            if sid == "ShRP-B" and k >= 24 * 12:  # the second day: 1.0 for 12 h, 1.5 for 6 h,
                hour = (k - 24 * 12) // 12      # then nothing
                if hour >= 18:
                    continue
                q = 1.0 if hour < 12 else 1.5
            out.append(Point(f"station/{sid}/flow", ts, q))
    return out


@pytest.fixture
async def db(db_engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    factory = session_factory(db_engine)
    async with factory.begin() as s:
        await bulk_import(s, _records(), ACTOR)
        for mid, rs in READINGS.items():
            s.add_all(orm.MeterReading(meter_id=mid, ts=ts, index_m3=v, source="test")
                      for ts, v in rs)
        # Far outside the reading window: not even loaded.
        s.add(orm.MeterReading(meter_id="M-S1", ts=T0 - dt.timedelta(days=60), index_m3=1.0))
    yield factory


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[DuckDBHistorian]:
    async with DuckDBHistorian(tmp_path / "history.duckdb") as h:
        await h.write(_points())
        yield h


async def _report(db: async_sessionmaker[AsyncSession], history: DuckDBHistorian,
                  day: dt.date = DAY, **kw: object) -> GasBalanceReport:
    async with db() as s:
        return await gas_balance(s, history, day, "day", now=NOW, **kw)  # type: ignore[arg-type]


def _by_id(parts: list[PartBalance]) -> dict[str, PartBalance]:
    return {p.id: p for p in parts}


def _m3(p: PartBalance) -> dict[str, str]:
    b = p.balance
    return {k: str(v) for k, v in (("inflow", b.inflow_m3), ("metered", b.metered_m3),
                                   ("unmetered", b.unmetered_m3), ("leakage", b.leakage_m3),
                                   ("own_needs", b.own_needs_m3), ("imbalance", b.imbalance_m3))}


async def test_every_part_of_every_branch_by_hand(db: async_sessionmaker[AsyncSession],
                                                  history: DuckDBHistorian) -> None:
    r = await _report(db, history)
    assert (r.period.start, r.period.end, r.period.complete) == (T0, T0 + 24 * H, True)
    branches = _by_id(r.branches)
    assert sorted(branches) == ["GRP-A", "GRS-1", "ShRP-B", "ShRP-C"]
    # GRS-1: 560·24 = 13,440 in, minus what GRP-A (75), ShRP-B (27) and ShRP-C (12) draw;
    # the corrector's 13,000; no estimate; 5 km of medium pipe · 0.04 · 24 h (the high pipe
    # upstream of the GRS is in no branch); the GRS heater 150 m³ a day in January.
    assert _m3(branches["GRS-1"]) == {"inflow": "13326.000", "metered": "13000.000",
                                      "unmetered": "0.000", "leakage": "4.800",
                                      "own_needs": "150.000", "imbalance": "171.200"}
    # GRP-A: 3.125·24 = 75 in; metered 12 + 24 (SP-N1) and 6 (SP-N2); estimated 18 h of SP-N2
    # (3), all of SP-N3 (10) and of SP-N5 at the household norm (250/365 = 0.68493…);
    # 5 km low · 0.02 · 24; heater metered 5 for 12 h, the GRP norm 12/day for the other 12 h.
    assert _m3(branches["GRP-A"]) == {"inflow": "75.000", "metered": "42.000",
                                      "unmetered": "13.685", "leakage": "2.400",
                                      "own_needs": "11.000", "imbalance": "5.915"}
    # ShRP-B: 27 in; 12 + 11 metered across the meter change, the hour between estimated at
    # 1 m³/h; 2 km · 0.02 · 24; a cabinet heater 2/day. SP-ISO is behind a closed valve.
    assert _m3(branches["ShRP-B"]) == {"inflow": "27.000", "metered": "23.000",
                                       "unmetered": "1.000", "leakage": "0.960",
                                       "own_needs": "2.000", "imbalance": "0.040"}
    assert _m3(branches["ShRP-C"]) == {"inflow": "12.000", "metered": "0.000",
                                       "unmetered": "10.000", "leakage": "0.240",
                                       "own_needs": "2.000", "imbalance": "-0.240"}
    a = branches["GRP-A"]
    assert (a.area_id, a.stations, a.name, a.service_points, a.estimated_points) == (
        "N", ("GRP-A",), "GRP-A station", 5, 3)  # SP-N4 out of service: counted, not estimated
    assert a.inflow_coverage == 1.0
    assert r.unassigned_service_points == 1  # SP-ISO
    for p in r.branches + r.districts:
        b = p.balance
        assert sum(b.parts_m3.values(), Decimal(0)) == b.inflow_m3
        assert sum((v for k, v in b.money.items() if k != "inflow"), Decimal(0)) == b.money["inflow"]


async def test_money_and_flags(db: async_sessionmaker[AsyncSession],
                               history: DuckDBHistorian) -> None:
    r = await _report(db, history)
    a = _by_id(r.branches)["GRP-A"].balance
    assert r.price_per_m3 == a.price_per_m3 == Decimal("8.30")
    assert {k: str(v) for k, v in a.money.items()} == {
        "inflow": "622.50", "metered": "348.60", "unmetered": "113.59", "leakage": "19.92",
        "own_needs": "91.30", "imbalance": "49.09"}  # 13.685 · 8.30 = 113.5855 → 113.59
    # Shares: GRS-1 +1.28 %, GRP-A +7.89 %, ShRP-B +0.15 %, ShRP-C −2 %: only GRP-A is beyond
    # 5 %, and none is far enough from the others' median for the robust z-score.
    flagged = {p.id: p.reason for p in r.branches if p.abnormal}
    assert list(flagged) == ["GRP-A"]
    assert flagged["GRP-A"] == "imbalance +7.89% of the inflow, beyond ±5.00%"
    assert _by_id(r.branches)["GRP-A"].balance.imbalance_share == pytest.approx(5.915 / 75)
    assert [p.id for p in r.districts if p.abnormal] == ["N"]


async def test_districts_add_up_their_branches(db: async_sessionmaker[AsyncSession],
                                               history: DuckDBHistorian) -> None:
    r = await _report(db, history)
    districts = _by_id(r.districts)
    assert sorted(districts) == ["MP", "N", "S"]
    n = districts["N"]
    assert (n.name, n.stations, n.service_points, n.estimated_points) == (
        "District N", ("GRP-A", "ShRP-C"), 6, 4)
    assert _m3(n) == {"inflow": "87.000", "metered": "42.000", "unmetered": "23.685",
                      "leakage": "2.640", "own_needs": "13.000", "imbalance": "5.675"}
    assert _m3(districts["S"]) == _m3(_by_id(r.branches)["ShRP-B"])
    assert n.balance.money["inflow"] == Decimal("722.10")


async def test_area_scope_and_the_area_argument(db: async_sessionmaker[AsyncSession],
                                                history: DuckDBHistorian) -> None:
    mine = await _report(db, history, areas=frozenset({"N"}))
    assert [p.id for p in mine.districts] == ["N"]
    assert [p.id for p in mine.branches] == ["GRP-A", "ShRP-C"]
    assert mine.unassigned_service_points == 0
    # The flags do not depend on who asks: GRP-A is judged against every branch.
    assert [p.id for p in mine.branches if p.abnormal] == ["GRP-A"]
    south = await _report(db, history, area="S")
    assert ([p.id for p in south.districts], [p.id for p in south.branches],
            south.unassigned_service_points) == (["S"], ["ShRP-B"], 1)
    none = await _report(db, history, areas=frozenset({"N"}), area="S")
    assert (none.districts, none.branches) == ([], [])


async def test_a_gap_in_the_flow_history(db: async_sessionmaker[AsyncSession],
                                         history: DuckDBHistorian) -> None:
    r = await _report(db, history, DAY + dt.timedelta(days=1))
    b = _by_id(r.branches)
    # 12 h at 1.0 and 6 h at 1.5 stored, 6 h missing: the mean of the 72 stored quarters
    # (84/72 m³/h) over 24 h = 28 m³; 75 % of the day covered.
    assert b["ShRP-B"].balance.inflow_m3 == Decimal("28.000")
    assert b["ShRP-B"].inflow_coverage == 0.75
    assert b["ShRP-B"].reason == "station flow history covers only 75% of the period"
    # The GRS zone hands gas to ShRP-B, so its inflow rests on the same gap.
    assert b["GRS-1"].inflow_coverage == 0.75 and b["GRS-1"].abnormal
    assert b["GRS-1"].balance.inflow_m3 == Decimal(560 * 24 - 75 - 28 - 12)
    assert _by_id(r.districts)["S"].abnormal


async def test_without_a_historian_every_branch_is_flagged_for_data(
        db: async_sessionmaker[AsyncSession]) -> None:
    async with db() as s:
        r = await gas_balance(s, None, DAY, "day", now=NOW)
    assert all(p.balance.inflow_m3 == 0 and p.abnormal for p in r.branches)
    assert _by_id(r.branches)["ShRP-C"].balance.imbalance_m3 == Decimal("-12.240")


async def test_a_month(db: async_sessionmaker[AsyncSession], history: DuckDBHistorian) -> None:
    async with db() as s:
        r = await gas_balance(s, history, DAY, "month", now=NOW,
                              norms=Norms(price_per_m3=Decimal("7.50")))
    assert (r.period.label, r.period.start, r.period.hours) == (
        "2027-01", dt.datetime(2026, 12, 31, 21, tzinfo=dt.UTC), Decimal(744))
    c = _by_id(r.branches)["ShRP-C"]
    # 31 days: 310 m³ estimated for SP-C1, 0.5·0.02·744 leakage, 2·31 own needs; the flow of
    # two days stands for the month (filled with its mean) but covers 2/31 of it.
    assert _m3(c) == {"inflow": "372.000", "metered": "0.000", "unmetered": "310.000",
                      "leakage": "7.440", "own_needs": "62.000", "imbalance": "-7.440"}
    assert c.inflow_coverage == pytest.approx(2 / 31) and c.abnormal
    assert c.balance.money["inflow"] == Decimal("2790.00")
    # Outside the heating season stations burn nothing for heating.
    async with db() as s:
        june = await gas_balance(s, history, dt.date(2027, 6, 1), "month",
                                 now=dt.datetime(2027, 7, 1, tzinfo=dt.UTC))
    assert all(p.balance.own_needs_m3 == 0 for p in june.branches)


def test_periods_are_local_days_and_months() -> None:
    p = period_of(dt.date(2027, 3, 28), "day", "Europe/Berlin", NOW.replace(month=4))
    assert (p.start, p.hours) == (dt.datetime(2027, 3, 27, 23, tzinfo=dt.UTC), Decimal(23))
    m = period_of(dt.date(2027, 2, 20), "month", "Europe/Moscow", NOW)  # still running
    assert (m.first_day, m.start, m.end, m.complete) == (
        dt.date(2027, 2, 1), dt.datetime(2027, 1, 31, 21, tzinfo=dt.UTC), NOW, False)
    late = period_of(DAY, "day", now=T0 + dt.timedelta(hours=5, minutes=29))
    assert (late.end, late.complete) == (T0 + dt.timedelta(hours=5, minutes=15), False)
    with pytest.raises(BalanceError, match="has not begun"):
        period_of(dt.date(2027, 3, 1), "month", now=NOW)
    with pytest.raises(BalanceError, match="granularity"):
        period_of(DAY, "week")
    with pytest.raises(BalanceError, match="time zone"):
        period_of(DAY, "day", "Mars/Olympus")


def test_metered_volume_interpolates_at_the_boundaries() -> None:
    start, end = T0, T0 + 24 * H
    rs = [(T0 - 6 * H, Decimal(0)), (T0 + 6 * H, Decimal(12)), (T0 + 30 * H, Decimal(36))]
    assert metered_m3(rs, start, end) == (Decimal(24), 24 * 3600 * 10**6)  # 6 + 18
    assert metered_m3(rs[:1], start, end) == (Decimal(0), 0)
    assert metered_m3([], start, end) == (Decimal(0), 0)
    reset = [(T0, Decimal(50)), (T0 + 12 * H, Decimal(1))]
    assert metered_m3(reset, start, end) == (Decimal(0), 0)
