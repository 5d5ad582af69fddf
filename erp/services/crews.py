"""Field crews and where they are (NET-3a): who sees which crew, reported positions, the day's
track and the live feed's messages.

The visibility rule is `sees_crew`, and everything here that answers "which crews" goes through
it (the `crews` and `crewPositions` queries and the live `crewPositions` feed): a foreman sees
only the crews he leads; anyone else holding `crews.positions` sees the crews of his areas
(all of them with `all_areas`); a role without it sees none.

A crew member or foreman (`crews.report`) reports his crew's position: WGS84 degrees, the
device's accuracy radius in metres and the time of the fix (UTC). A report is checked before
anything is written: latitude within ±90°, longitude within ±180°, accuracy ≥ 0, all finite, and
a fix taken no more than `FUTURE_TOLERANCE` ahead of the server's clock and not before the kept
history starts. History is kept for the current and the previous UTC day: each report purges
its crew's older positions (`purge_positions`, which a periodic task may also call for all
crews).

`report_position` owns its transaction: it stores the row (with an audit record when given an
actor), commits, then publishes the position on `CREW_POSITIONS_TOPIC` through the `publish`
callable it is handed (the server's bus), so a subscriber never hears of a row that was rolled
back. The functions that take an `AsyncSession` never commit.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import selectinload

from erp.adapters import orm
from erp.domain.access import Principal, Role, allowed
from erp.domain.rules import FieldError
from erp.errors import ErpError, Forbidden, NotFound, ValidationFailed
from erp.services import audit

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = [
    "CREW_POSITIONS_TOPIC",
    "FUTURE_TOLERANCE",
    "MAX_TRACK_POINTS",
    "CrewView",
    "Person",
    "Position",
    "PositionRefused",
    "Publish",
    "check_position",
    "crew_track",
    "position_from_message",
    "position_message",
    "purge_positions",
    "record_position",
    "report_position",
    "retention_start",
    "sees_crew",
    "visible_crews",
]

CREW_POSITIONS_TOPIC: Final = "crew_positions"
"""The bus topic of accepted position reports (`position_message`)."""
FUTURE_TOLERANCE: Final = dt.timedelta(minutes=5)
"""How far ahead of the server's clock a device's fix may be (clock skew)."""
MAX_TRACK_POINTS: Final = 20_000
"""Positions one track query returns at most (a day at one fix per 5 s is 17,280)."""
POSITIONS: Final = "crews.positions"
REPORT: Final = "crews.report"

Publish = Callable[[str, Any], None]
"""`AbstractBus.publish`: topic, JSON-able message."""


class PositionRefused(ErpError):
    """The reporter is not in the crew he reports for (or in none, or in several and named
    none); nothing was written."""


@dataclass(frozen=True, slots=True)
class Person:
    """A crew's foreman or member, as others see him (no role, areas or secrets)."""

    id: int
    username: str
    full_name: str | None


@dataclass(frozen=True, slots=True)
class Position:
    """One stored position of a crew, with what a subscriber needs to filter and label it."""

    crew_id: str
    crew_name: str
    area_id: str | None
    foreman_user_id: int | None
    user_id: int
    reported_by: str | None  # the reporter's user name
    ts: dt.datetime  # the device's fix, UTC
    lat: float  # WGS84 degrees
    lon: float
    accuracy_m: float  # horizontal accuracy radius, m
    received_at: dt.datetime  # when the server stored it, UTC


@dataclass(frozen=True, slots=True)
class CrewView:
    """A crew as a caller who may see it sees it: people, vehicle and last known position."""

    id: str
    name: str
    area_id: str | None
    vehicle: str | None
    foreman_user_id: int | None
    foreman: Person | None
    members: tuple[Person, ...]
    last_position: Position | None


# --- rules ------------------------------------------------------------------------------------


def sees_crew(principal: Principal | None, area_id: str | None, foreman_user_id: int | None) -> bool:
    """The visibility rule: whether `principal` may see the crew of `area_id` led by
    `foreman_user_id` (its list entry, positions and live feed).

    Without `crews.positions`: no crew. A foreman: only the crews he leads, whatever their
    area. Anyone else: the crews of his areas (every crew with all areas).
    """
    if principal is None or not allowed(POSITIONS, principal.role):
        return False
    if principal.role == Role.foreman:
        return foreman_user_id is not None and foreman_user_id == principal.user_id
    return principal.areas is None or (area_id is not None and area_id in principal.areas)


def retention_start(now: dt.datetime) -> dt.datetime:
    """The start of the previous UTC day: positions before it are purged."""
    today = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - dt.timedelta(days=1)


def check_position(
    lat: float, lon: float, accuracy_m: float, ts: dt.datetime, now: dt.datetime
) -> list[FieldError]:
    """Every problem of a position report (empty when it may be stored)."""
    problems: list[FieldError] = []

    def bad(field: str, message: str) -> None:
        problems.append(FieldError("position", field, message))

    for field, value, limit in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        if not math.isfinite(value):
            bad(field, "must be a finite number of degrees")
        elif not -limit <= value <= limit:
            bad(field, f"must be within -{limit:g}…{limit:g} degrees (WGS84), got {value:g}")
    if not math.isfinite(accuracy_m) or accuracy_m < 0:
        bad("accuracy", f"must be a finite radius of 0 m or more, got {accuracy_m:g}")
    if ts.tzinfo is None:
        bad("ts", "must carry a time zone (UTC, e.g. 2026-12-14T09:20:00Z)")
    elif ts > now + FUTURE_TOLERANCE:
        bad(
            "ts",
            f"is {(ts - now).total_seconds():.0f} s ahead of the server's clock "
            f"(at most {FUTURE_TOLERANCE.total_seconds():.0f} s allowed): check the "
            f"device's clock",
        )
    elif ts < retention_start(now):
        bad(
            "ts",
            f"is before {retention_start(now).isoformat()}: positions are kept for "
            f"the current and the previous UTC day only",
        )
    return problems


# --- messages ---------------------------------------------------------------------------------


def position_message(p: Position) -> dict[str, Any]:
    """The JSON-able bus message of a stored position."""
    return {
        "type": "crew_position",
        "crew_id": p.crew_id,
        "crew_name": p.crew_name,
        "area_id": p.area_id,
        "foreman_user_id": p.foreman_user_id,
        "user_id": p.user_id,
        "reported_by": p.reported_by,
        "lat": p.lat,
        "lon": p.lon,
        "accuracy_m": p.accuracy_m,
        "ts": p.ts.isoformat(),
        "received_at": p.received_at.isoformat(),
    }


def position_from_message(m: Mapping[str, Any]) -> Position:
    """The position a bus message carries (`position_message` reversed)."""
    return Position(
        crew_id=m["crew_id"],
        crew_name=m["crew_name"],
        area_id=m["area_id"],
        foreman_user_id=m["foreman_user_id"],
        user_id=m["user_id"],
        reported_by=m["reported_by"],
        lat=m["lat"],
        lon=m["lon"],
        accuracy_m=m["accuracy_m"],
        ts=dt.datetime.fromisoformat(m["ts"]),
        received_at=dt.datetime.fromisoformat(m["received_at"]),
    )


# --- reads ------------------------------------------------------------------------------------


def _person(u: orm.User) -> Person:
    return Person(u.id, u.username, u.full_name)


def _position(row: orm.CrewPosition, crew: orm.Crew, username: str | None) -> Position:
    return Position(
        crew_id=crew.id,
        crew_name=crew.name,
        area_id=crew.area_id,
        foreman_user_id=crew.foreman_user_id,
        user_id=row.user_id,
        reported_by=username,
        ts=row.ts,
        lat=row.lat,
        lon=row.lon,
        accuracy_m=row.accuracy_m,
        received_at=row.received_at,
    )


async def _last_positions(session: AsyncSession, crews: Sequence[orm.Crew]) -> dict[str, Position]:
    if not crews:
        return {}
    by_id = {c.id: c for c in crews}
    latest = (
        select(orm.CrewPosition.crew_id, func.max(orm.CrewPosition.ts).label("ts"))
        .where(orm.CrewPosition.crew_id.in_(sorted(by_id)))
        .group_by(orm.CrewPosition.crew_id)
        .subquery()
    )
    rows = (
        await session.execute(
            select(orm.CrewPosition, orm.User.username)
            .join(
                latest, and_(orm.CrewPosition.crew_id == latest.c.crew_id, orm.CrewPosition.ts == latest.c.ts)
            )
            .outerjoin(orm.User, orm.User.id == orm.CrewPosition.user_id)
            .order_by(orm.CrewPosition.id)
        )
    ).all()
    return {row.crew_id: _position(row, by_id[row.crew_id], name) for row, name in rows}


async def visible_crews(
    session: AsyncSession, principal: Principal | None, area: str | None = None
) -> list[CrewView]:
    """The crews `principal` may see (`sees_crew`), optionally of one area only, by id."""
    stmt = select(orm.Crew).options(selectinload(orm.Crew.members)).order_by(orm.Crew.id)
    if area is not None:
        stmt = stmt.where(orm.Crew.area_id == area)
    crews = [
        c for c in (await session.scalars(stmt)).all() if sees_crew(principal, c.area_id, c.foreman_user_id)
    ]
    foreman_ids = sorted({c.foreman_user_id for c in crews if c.foreman_user_id is not None})
    foremen = (
        {u.id: u for u in (await session.scalars(select(orm.User).where(orm.User.id.in_(foreman_ids)))).all()}
        if foreman_ids
        else {}
    )
    last = await _last_positions(session, crews)
    out = []
    for c in crews:
        f = foremen.get(c.foreman_user_id) if c.foreman_user_id is not None else None
        out.append(
            CrewView(
                id=c.id,
                name=c.name,
                area_id=c.area_id,
                vehicle=c.vehicle,
                foreman_user_id=c.foreman_user_id,
                foreman=_person(f) if f is not None else None,
                members=tuple(_person(m) for m in sorted(c.members, key=lambda m: m.username)),
                last_position=last.get(c.id),
            )
        )
    return out


async def crew_track(
    session: AsyncSession,
    principal: Principal | None,
    crew_id: str,
    since: dt.datetime | None = None,
    *,
    limit: int = MAX_TRACK_POINTS,
    now: dt.datetime | None = None,
) -> list[Position]:
    """A visible crew's positions from `since` (default: the last 24 hours), oldest first; the
    newest `limit` when there are more. `NotFound` for a crew that is not there or not
    visible to `principal`."""
    if not 1 <= limit <= MAX_TRACK_POINTS:
        raise ValueError(f"limit must be between 1 and {MAX_TRACK_POINTS}")
    if since is not None and since.tzinfo is None:
        raise ValueError("since must carry a time zone")
    crew = await session.get(orm.Crew, crew_id)
    if crew is None or not sees_crew(principal, crew.area_id, crew.foreman_user_id):
        raise NotFound("crew", crew_id)
    since = since or (now or dt.datetime.now(dt.UTC)) - dt.timedelta(hours=24)
    rows = (
        await session.execute(
            select(orm.CrewPosition, orm.User.username)
            .outerjoin(orm.User, orm.User.id == orm.CrewPosition.user_id)
            .where(orm.CrewPosition.crew_id == crew_id, orm.CrewPosition.ts >= since)
            .order_by(orm.CrewPosition.ts.desc(), orm.CrewPosition.id.desc())
            .limit(limit)
        )
    ).all()
    return [_position(row, crew, name) for row, name in reversed(rows)]


# --- writes -----------------------------------------------------------------------------------


async def purge_positions(session: AsyncSession, now: dt.datetime, crew_id: str | None = None) -> int:
    """Delete positions before the previous UTC day (of one crew, or of all); how many."""
    stmt = delete(orm.CrewPosition).where(orm.CrewPosition.ts < retention_start(now))
    if crew_id is not None:
        stmt = stmt.where(orm.CrewPosition.crew_id == crew_id)
    result = await session.execute(stmt)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _reporters_crew(session: AsyncSession, principal: Principal, crew_id: str | None) -> orm.Crew:
    member_of = select(orm.crew_members.c.crew_id).where(orm.crew_members.c.user_id == principal.user_id)
    crews = (
        await session.scalars(
            select(orm.Crew)
            .where(or_(orm.Crew.foreman_user_id == principal.user_id, orm.Crew.id.in_(member_of)))
            .order_by(orm.Crew.id)
        )
    ).all()
    if crew_id is not None:
        for c in crews:
            if c.id == crew_id:
                return c
        raise PositionRefused(f"{principal.username!r} is not a member or the foreman of crew {crew_id!r}")
    if not crews:
        raise PositionRefused(
            f"{principal.username!r} is not a member or the foreman of any "
            f"crew: positions are reported for a crew"
        )
    if len(crews) > 1:
        raise PositionRefused(
            f"{principal.username!r} is in several crews "
            f"({', '.join(c.id for c in crews)}): name one with crewId"
        )
    return crews[0]


async def record_position(
    session: AsyncSession,
    principal: Principal,
    lat: float,
    lon: float,
    accuracy_m: float,
    ts: dt.datetime | None = None,
    *,
    crew_id: str | None = None,
    now: dt.datetime | None = None,
) -> Position:
    """Check and store one position of the reporter's crew, purging its positions older than
    the kept history; nothing is written when it raises (`Forbidden` for a role that does not
    report, `ValidationFailed` listing every bad field, `PositionRefused` for the crew)."""
    if not allowed(REPORT, principal.role):
        raise Forbidden(f"role {principal.role!r} lacks {REPORT!r}")
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    ts = now if ts is None else ts
    problems = check_position(lat, lon, accuracy_m, ts, now)
    if problems:
        raise ValidationFailed(problems)
    crew = await _reporters_crew(session, principal, crew_id)
    await purge_positions(session, now, crew.id)
    row = orm.CrewPosition(
        crew_id=crew.id,
        user_id=principal.user_id,
        ts=ts.astimezone(dt.UTC),
        lat=float(lat),
        lon=float(lon),
        accuracy_m=float(accuracy_m),
        received_at=now,
    )
    session.add(row)
    await session.flush()
    return _position(row, crew, principal.username)


def _plain(x: float) -> float | str:
    """A number as the audit trail can keep it (PostgreSQL's JSON refuses NaN and infinity)."""
    return x if math.isfinite(x) else str(x)


async def report_position(
    db: async_sessionmaker[AsyncSession],
    publish: Publish,
    principal: Principal,
    lat: float,
    lon: float,
    accuracy_m: float,
    ts: dt.datetime | None = None,
    *,
    crew_id: str | None = None,
    actor: audit.Actor | None = None,
    now: dt.datetime | None = None,
) -> Position:
    """Store a position in its own transaction, then publish it on `CREW_POSITIONS_TOPIC`.

    With an `actor` the report is audited (`crew.position.report`): in the same transaction
    when stored, in a transaction of its own when refused (then the error is raised again).
    """
    try:
        async with db.begin() as s:
            pos = await record_position(s, principal, lat, lon, accuracy_m, ts, crew_id=crew_id, now=now)
            if actor is not None:
                await audit.record(
                    s,
                    actor,
                    audit.AuditEntry(
                        "crew.position.report",
                        [f"crew:{pos.crew_id}"],
                        {"lat": pos.lat, "lon": pos.lon, "accuracy_m": pos.accuracy_m, "ts": pos.ts},
                    ),
                    now=now,
                )
    except (ValidationFailed, PositionRefused, Forbidden) as exc:
        if actor is not None:
            async with db.begin() as s:
                await audit.record(
                    s,
                    actor,
                    audit.AuditEntry(
                        "crew.position.report",
                        [f"crew:{crew_id}"] if crew_id else [],
                        {
                            "lat": _plain(lat),
                            "lon": _plain(lon),
                            "accuracy_m": _plain(accuracy_m),
                            "ts": ts,
                            "reason": str(exc),
                        },
                        outcome="forbidden" if isinstance(exc, Forbidden) else "refused",
                    ),
                    now=now,
                )
        raise
    publish(CREW_POSITIONS_TOPIC, position_message(pos))
    return pos
