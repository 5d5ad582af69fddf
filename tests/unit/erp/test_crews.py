"""Crews and their positions (`erp.services.crews`): the visibility rule, reports that are
checked before anything is written, the day's track, the purge of older days, the bus
message, and migration 0008 — on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from erp.adapters import orm
from erp.adapters.db import alembic_config, current_revision, head_revision, session_factory
from erp.domain.access import Principal
from erp.errors import Forbidden, NotFound, ValidationFailed
from erp.services import audit
from erp.services import crews as service
from erp.services.registry import AssetRecord, bulk_import

NOW = dt.datetime(2026, 12, 14, 9, 30, tzinfo=dt.UTC)
ACTOR = audit.Actor("test", "admin")

# user id → (user name, role); crews: id → (area, foreman id, member ids)
USERS = {
    1: ("f-north", "foreman"),
    2: ("f-north-2", "foreman"),
    3: ("f-south", "foreman"),
    4: ("m-north", "crew"),
    5: ("m-both", "crew"),
    6: ("m-none", "crew"),
}
CREWS = {"C-N1": ("NORTH", 1, [4, 5]), "C-N2": ("NORTH", 2, []), "C-S1": ("SOUTH", 3, [5])}


def who(user_id: int, areas: set[str] | None = None) -> Principal:
    """The principal of a seeded user (areas: the user's, else his crew's area)."""
    name, role = USERS[user_id]
    return Principal(user_id, name, role, frozenset(areas) if areas is not None else None)


def staff(role: str, areas: set[str] | None) -> Principal:
    """A staff member in no crew (id 100)."""
    return Principal(100, f"{role}-x", role, None if areas is None else frozenset(areas))


async def _seed(db: async_sessionmaker[AsyncSession]) -> None:
    async with db.begin() as s:
        await bulk_import(s, [AssetRecord("area", a, {"name": a}) for a in ("NORTH", "SOUTH")], ACTOR)
        for uid, (name, role) in [*USERS.items(), (100, ("staff-x", "admin"))]:
            s.add(orm.User(id=uid, username=name, full_name=name.title(), role=role))
        await s.flush()
        for cid, (area, foreman, _) in CREWS.items():
            s.add(
                orm.Crew(
                    id=cid, name=f"Crew {cid}", area_id=area, foreman_user_id=foreman, vehicle=f"GAZ {cid}"
                )
            )
        await s.flush()
        await s.execute(
            insert(orm.crew_members),
            [{"crew_id": cid, "user_id": m} for cid, (_, _, ms) in CREWS.items() for m in ms],
        )


@pytest.fixture
async def db(db_engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    factory = session_factory(db_engine)
    await _seed(factory)
    yield factory


class Bus:
    """What `report_position` publishes through."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def publish(self, topic: str, message: Any) -> None:
        self.sent.append((topic, message))


async def _count(db: async_sessionmaker[AsyncSession]) -> int:
    async with db() as s:
        return int((await s.execute(select(func.count()).select_from(orm.CrewPosition))).scalar_one())


async def _report(
    db: async_sessionmaker[AsyncSession],
    bus: Bus,
    p: Principal,
    lat: float = 57.6,
    lon: float = 39.8,
    accuracy: float = 8.0,
    ts: dt.datetime | None = None,
    **kw: Any,
) -> service.Position:
    return await service.report_position(db, bus.publish, p, lat, lon, accuracy, ts, now=NOW, **kw)


# --- the visibility rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "area", "foreman", "sees"),
    [
        (Principal(1, "f", "foreman", frozenset({"NORTH"})), "NORTH", 1, True),  # his crew
        (Principal(1, "f", "foreman", frozenset({"NORTH"})), "NORTH", 2, False),  # same area, not his
        (Principal(1, "f", "foreman", None), "SOUTH", 2, False),  # all areas change nothing
        (Principal(1, "f", "foreman", frozenset()), "SOUTH", 1, True),  # he leads it: any area
        (Principal(9, "d", "dispatcher", frozenset({"NORTH"})), "NORTH", 1, True),
        (Principal(9, "d", "dispatcher", frozenset({"NORTH"})), "SOUTH", 3, False),  # other area
        (Principal(9, "d", "dispatcher", frozenset({"NORTH"})), None, 3, False),  # no area
        (Principal(9, "d", "dispatcher", None), "SOUTH", 3, True),  # all areas
        (Principal(9, "a", "admin", None), None, None, True),
        (Principal(9, "e", "engineer", frozenset({"SOUTH"})), "SOUTH", 3, True),
        (Principal(9, "o", "operator", None), "NORTH", 1, False),  # not granted crews.positions
        (Principal(4, "c", "crew", None), "NORTH", 1, False),  # reports, does not watch
        (Principal(9, "i", "integrator", None), "NORTH", 1, False),
        (None, "NORTH", 1, False),  # anonymous
    ],
)
def test_the_visibility_rule(
    principal: Principal | None, area: str | None, foreman: int | None, sees: bool
) -> None:
    assert service.sees_crew(principal, area, foreman) is sees


async def test_who_sees_which_crews(db: async_sessionmaker[AsyncSession]) -> None:
    async def ids(p: Principal | None, area: str | None = None) -> list[str]:
        async with db() as s:
            return [c.id for c in await service.visible_crews(s, p, area)]

    assert await ids(who(1, {"NORTH"})) == ["C-N1"]  # a foreman: only his own crew
    assert await ids(who(2, {"NORTH"})) == ["C-N2"]
    assert await ids(who(3, None)) == ["C-S1"]
    assert await ids(staff("dispatcher", {"NORTH"})) == ["C-N1", "C-N2"]  # his area's
    assert await ids(staff("dispatcher", {"SOUTH"})) == ["C-S1"]  # the other area's dispatcher
    assert await ids(staff("dispatcher", None)) == ["C-N1", "C-N2", "C-S1"]
    assert await ids(staff("admin", None), "SOUTH") == ["C-S1"]
    assert await ids(staff("dispatcher", {"NORTH"}), "SOUTH") == []
    assert await ids(staff("operator", None)) == []  # not granted
    assert await ids(who(4, None)) == []
    assert await ids(None) == []
    async with db() as s:
        (crew,) = await service.visible_crews(s, who(1, {"NORTH"}))
    assert crew.foreman == service.Person(1, "f-north", "F-North")
    assert [m.username for m in crew.members] == ["m-both", "m-north"]
    assert (crew.vehicle, crew.area_id, crew.last_position) == ("GAZ C-N1", "NORTH", None)


# --- reporting ----------------------------------------------------------------------------------


async def test_a_member_reports_it_is_stored_audited_published_and_last(
    db: async_sessionmaker[AsyncSession],
) -> None:
    bus = Bus()
    fix = NOW - dt.timedelta(seconds=20)
    pos = await _report(
        db, bus, who(4, {"NORTH"}), 57.61, 39.81, 6.5, fix, actor=audit.Actor("m-north", "crew")
    )
    assert (pos.crew_id, pos.crew_name, pos.area_id, pos.user_id, pos.reported_by) == (
        "C-N1",
        "Crew C-N1",
        "NORTH",
        4,
        "m-north",
    )
    assert (pos.lat, pos.lon, pos.accuracy_m, pos.ts, pos.received_at) == (57.61, 39.81, 6.5, fix, NOW)
    assert bus.sent == [(service.CREW_POSITIONS_TOPIC, service.position_message(pos))]
    assert bus.sent[0][1]["foreman_user_id"] == 1 and bus.sent[0][1]["type"] == "crew_position"
    later = await _report(db, bus, who(1, {"NORTH"}), 57.62, 39.82, 3.0)  # the foreman, now
    assert (later.crew_id, later.ts, later.reported_by) == ("C-N1", NOW, "f-north")
    async with db() as s:
        crew = (await service.visible_crews(s, staff("dispatcher", None), "NORTH"))[0]
        recs = (
            await s.scalars(
                select(orm.AuditRecord).where(orm.AuditRecord.operation == "crew.position.report")
            )
        ).all()
    assert crew.id == "C-N1" and crew.last_position == later
    assert [(r.actor, r.outcome, r.target_ids) for r in recs] == [("m-north", "ok", ["crew:C-N1"])]
    assert recs[0].diff == {"lat": 57.61, "lon": 39.81, "accuracy_m": 6.5, "ts": fix.isoformat()}


@pytest.mark.parametrize(
    ("kw", "field", "says"),
    [
        ({"lat": 90.5}, "lat", "within -90…90 degrees"),
        ({"lat": float("nan")}, "lat", "finite"),
        ({"lon": -180.01}, "lon", "within -180…180 degrees"),
        ({"accuracy": -1.0}, "accuracy", "0 m or more"),
        ({"accuracy": float("inf")}, "accuracy", "finite"),
        ({"ts": NOW + dt.timedelta(minutes=6)}, "ts", "360 s ahead of the server's clock"),
        ({"ts": NOW.replace(tzinfo=None)}, "ts", "must carry a time zone"),
        ({"ts": dt.datetime(2026, 12, 12, 23, 59, tzinfo=dt.UTC)}, "ts", "before 2026-12-13T00:00"),
    ],
)
async def test_bad_input_is_refused_with_a_clear_message_and_nothing_is_written(
    db: async_sessionmaker[AsyncSession], kw: dict[str, Any], field: str, says: str
) -> None:
    bus = Bus()
    with pytest.raises(ValidationFailed) as err:
        await _report(db, bus, who(4, {"NORTH"}), actor=audit.Actor("m-north", "crew"), **kw)
    assert [e.field for e in err.value.errors] == [field] and says in str(err.value)
    assert await _count(db) == 0 and bus.sent == []
    async with db() as s:
        rec = (
            await s.scalars(
                select(orm.AuditRecord).where(orm.AuditRecord.operation == "crew.position.report")
            )
        ).one()
    assert rec.outcome == "refused" and says in rec.diff["reason"]


async def test_every_problem_is_listed_at_once(db: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(ValidationFailed) as err:
        await _report(db, Bus(), who(4), 91.0, 181.0, -2.0, NOW + dt.timedelta(hours=1))
    assert [e.field for e in err.value.errors] == ["lat", "lon", "accuracy", "ts"]


async def test_the_fix_may_lag_or_lead_within_bounds(db: async_sessionmaker[AsyncSession]) -> None:
    bus = Bus()
    yesterday = dt.datetime(2026, 12, 13, 0, 0, tzinfo=dt.UTC)  # the first kept instant
    assert (await _report(db, bus, who(4), ts=yesterday)).ts == yesterday
    ahead = NOW + service.FUTURE_TOLERANCE
    assert (await _report(db, bus, who(4), ts=ahead)).ts == ahead
    msk = dt.timezone(dt.timedelta(hours=3))
    assert (await _report(db, bus, who(4), ts=NOW.astimezone(msk))).ts == NOW
    assert await _count(db) == 3


async def test_who_may_report_for_which_crew(db: async_sessionmaker[AsyncSession]) -> None:
    bus = Bus()
    with pytest.raises(Forbidden, match="crews.report"):
        await _report(db, bus, staff("dispatcher", None))
    with pytest.raises(service.PositionRefused, match="not a member or the foreman of any crew"):
        await _report(db, bus, who(6))  # a crew role in no crew
    with pytest.raises(service.PositionRefused, match=r"several crews \(C-N1, C-S1\)"):
        await _report(db, bus, who(5))
    with pytest.raises(service.PositionRefused, match="not a member or the foreman of crew 'C-N2'"):
        await _report(db, bus, who(5), crew_id="C-N2")
    assert await _count(db) == 0 and bus.sent == []
    assert (await _report(db, bus, who(5), crew_id="C-S1")).crew_id == "C-S1"
    assert (await _report(db, bus, who(3))).crew_id == "C-S1"  # a foreman leads one crew


# --- track and purge ----------------------------------------------------------------------------


async def _positions(db: async_sessionmaker[AsyncSession], crew_id: str, times: list[dt.datetime]) -> None:
    async with db.begin() as s:
        for k, ts in enumerate(times):
            s.add(
                orm.CrewPosition(
                    crew_id=crew_id,
                    user_id=CREWS[crew_id][1],
                    ts=ts,
                    lat=57.6 + k * 1e-4,
                    lon=39.8,
                    accuracy_m=5.0,
                    received_at=ts,
                )
            )


async def test_the_track_and_who_may_see_it(db: async_sessionmaker[AsyncSession]) -> None:
    times = [NOW - dt.timedelta(hours=h) for h in (30, 20, 2, 1)] + [NOW]
    await _positions(db, "C-N1", times)
    async with db() as s:
        day = await service.crew_track(s, who(1, {"NORTH"}), "C-N1", now=NOW)
        assert [p.ts for p in day] == times[1:]  # last 24 h, oldest first
        since = await service.crew_track(
            s, staff("dispatcher", {"NORTH"}), "C-N1", NOW - dt.timedelta(hours=36), now=NOW
        )
        assert [p.ts for p in since] == times
        newest = await service.crew_track(s, staff("admin", None), "C-N1", times[0], limit=2)
        assert [p.ts for p in newest] == times[-2:]
        assert newest[-1].reported_by == "f-north" and newest[-1].crew_name == "Crew C-N1"
        for p in (who(2, {"NORTH"}), staff("dispatcher", {"SOUTH"}), staff("operator", None)):
            with pytest.raises(NotFound):
                await service.crew_track(s, p, "C-N1", now=NOW)
        with pytest.raises(NotFound):
            await service.crew_track(s, staff("admin", None), "C-XX", now=NOW)
        with pytest.raises(ValueError, match="limit"):
            await service.crew_track(s, staff("admin", None), "C-N1", limit=0)


def test_history_starts_with_the_previous_utc_day() -> None:
    start = dt.datetime(2026, 12, 13, tzinfo=dt.UTC)
    assert service.retention_start(NOW) == start
    assert service.retention_start(dt.datetime(2026, 12, 14, tzinfo=dt.UTC)) == start
    late_msk = dt.datetime(2026, 12, 15, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    assert service.retention_start(late_msk) == start  # 23:00 UTC on the 14th


async def test_purge_keeps_today_and_yesterday(db: async_sessionmaker[AsyncSession]) -> None:
    start = service.retention_start(NOW)
    old = [start - dt.timedelta(days=3), start - dt.timedelta(microseconds=1)]
    kept = [start, NOW - dt.timedelta(minutes=1)]
    await _positions(db, "C-N1", old + kept)
    await _positions(db, "C-S1", old + kept)
    async with db.begin() as s:
        assert await service.purge_positions(s, NOW, "C-S1") == 2  # one crew's
    async with db.begin() as s:
        assert await service.purge_positions(s, NOW) == 2  # everybody's
        assert await service.purge_positions(s, NOW) == 0
    async with db() as s:
        left = (
            await s.execute(
                select(orm.CrewPosition.crew_id, orm.CrewPosition.ts).order_by(
                    orm.CrewPosition.crew_id, orm.CrewPosition.ts
                )
            )
        ).all()
    assert [tuple(r) for r in left] == [("C-N1", t) for t in kept] + [("C-S1", t) for t in kept]


async def test_a_report_purges_its_crews_older_days(db: async_sessionmaker[AsyncSession]) -> None:
    two_days_ago = NOW - dt.timedelta(days=2)
    await _positions(db, "C-N1", [two_days_ago])
    await _positions(db, "C-S1", [two_days_ago])
    await _report(db, Bus(), who(1))
    async with db() as s:
        left = (
            await s.execute(
                select(orm.CrewPosition.crew_id, orm.CrewPosition.ts).order_by(orm.CrewPosition.crew_id)
            )
        ).all()
    assert [tuple(r) for r in left] == [("C-N1", NOW), ("C-S1", two_days_ago)]


def test_the_bus_message_round_trips() -> None:
    p = service.Position(
        "C-N1", "Crew 1", "NORTH", 1, 4, "m-north", NOW, 57.6, 39.8, 4.5, NOW + dt.timedelta(seconds=1)
    )
    msg = service.position_message(p)
    assert msg["ts"] == "2026-12-14T09:30:00+00:00" and msg["type"] == "crew_position"
    assert service.position_from_message(msg) == p


# --- migration 0008 -----------------------------------------------------------------------------


async def test_migration_0008_matches_the_model_and_goes_down_and_up(db_engine: AsyncEngine) -> None:
    cfg = alembic_config(db_engine.url.render_as_string(hide_password=False))

    def step(conn: Connection, direction: str, target: str) -> set[str]:
        cfg.attributes["connection"] = conn
        getattr(command, direction)(cfg, target)
        return set(inspect(conn).get_table_names())

    def drift(conn: Connection) -> list[Any]:
        diffs = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), orm.Base.metadata
        )
        return [d for d in diffs if "crew_positions" in repr(d)]

    def indexes(conn: Connection) -> list[tuple[str, list[str]]]:
        return [(i["name"], i["column_names"]) for i in inspect(conn).get_indexes("crew_positions")]

    async with db_engine.connect() as conn:
        assert await conn.run_sync(drift) == []
        assert await conn.run_sync(indexes) == [("ix_crew_positions_crew_id_ts", ["crew_id", "ts"])]
    async with db_engine.begin() as conn:
        assert "crew_positions" not in await conn.run_sync(step, "downgrade", "0007")
    assert await current_revision(db_engine) == "0007"
    async with db_engine.begin() as conn:
        assert "crew_positions" in await conn.run_sync(step, "upgrade", "0008")
    assert await current_revision(db_engine) == "0008"
    async with db_engine.begin() as conn:  # and on to whatever later migrations add
        assert "crew_positions" in await conn.run_sync(step, "upgrade", "head")
    assert await current_revision(db_engine) == head_revision()
    db = session_factory(db_engine)
    await _seed(db)
    assert (await _report(db, Bus(), who(1))).crew_id == "C-N1"  # the re-created table works
