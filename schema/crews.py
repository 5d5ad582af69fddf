"""Field crews over GraphQL (NET-3a): `crews`, the day's track `crewPositions`, the crew app's
`reportPosition`, and the live `crewPositions` feed of the wall display and the console.

Thin over `erp.services.crews`, whose `sees_crew` decides for the queries and for each message
of the feed alike: a foreman sees only the crews he leads, a dispatcher (engineer, admin) the
crews of his areas, other roles none. A crew member or foreman reports his own crew's position;
every report, stored or refused, leaves an audit record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from erp import errors as erp_errors
from erp.services import crews as service
from schema.context import Context
from schema.errors import Forbidden, ValidationError, from_erp_error
from schema.permissions import Can, actor_of, refusal

__all__ = ["CrewMutation", "CrewQuery", "CrewSubscription"]


@strawberry.type(description="A crew's foreman or member.")
class CrewPerson:
    id: int
    username: str
    full_name: str | None


@strawberry.type(
    description="Where a crew was: WGS84 degrees, the device's accuracy radius in "
    "metres, the time of the fix (UTC)."
)
class CrewPosition:
    crew_id: str
    crew_name: str
    area_id: str | None
    reported_by: str | None = strawberry.field(description="User name of who reported it")
    lat: float
    lon: float
    accuracy_m: float
    ts: dt.datetime = strawberry.field(description="When the device took the fix")
    received_at: dt.datetime = strawberry.field(description="When the server stored it")


@strawberry.type(description="A field crew: foreman, members, vehicle, area and where it was last.")
class Crew:
    id: str
    name: str
    area_id: str | None
    vehicle: str | None
    foreman_user_id: int | None
    foreman: CrewPerson | None
    members: list[CrewPerson]
    last_position: CrewPosition | None = strawberry.field(
        description="The newest position reported today or yesterday (UTC), if any"
    )


def _person(p: service.Person) -> CrewPerson:
    return CrewPerson(id=p.id, username=p.username, full_name=p.full_name)


def _position(p: service.Position) -> CrewPosition:
    return CrewPosition(
        crew_id=p.crew_id,
        crew_name=p.crew_name,
        area_id=p.area_id,
        reported_by=p.reported_by,
        lat=p.lat,
        lon=p.lon,
        accuracy_m=p.accuracy_m,
        ts=p.ts,
        received_at=p.received_at,
    )


def _crew(c: service.CrewView) -> Crew:
    return Crew(
        id=c.id,
        name=c.name,
        area_id=c.area_id,
        vehicle=c.vehicle,
        foreman_user_id=c.foreman_user_id,
        foreman=_person(c.foreman) if c.foreman is not None else None,
        members=[_person(m) for m in c.members],
        last_position=_position(c.last_position) if c.last_position is not None else None,
    )


@strawberry.type
class CrewQuery:
    @strawberry.field(
        permission_classes=[Can("crews.read")],
        description="The crews you may see (a foreman: those he leads; others: "
        "those of their areas), or of one area, by id.",
    )
    async def crews(self, info: Info[Context, Any], area: str | None = None) -> list[Crew]:
        async with info.context.services.db() as s:
            found = await service.visible_crews(s, info.context.principal, area)
        return [_crew(c) for c in found]

    @strawberry.field(
        permission_classes=[Can("crews.positions")],
        description="A crew's track: its positions since `since` (default: the "
        "last 24 hours; today and yesterday UTC are kept), oldest "
        "first, the newest `limit` if there are more. Null for a crew "
        "that is not there or that you may not see.",
    )
    async def crew_positions(
        self,
        info: Info[Context, Any],
        crew_id: str,
        since: dt.datetime | None = None,
        limit: int = service.MAX_TRACK_POINTS,
    ) -> list[CrewPosition] | None:
        try:
            async with info.context.services.db() as s:
                track = await service.crew_track(s, info.context.principal, crew_id, since, limit=limit)
        except erp_errors.NotFound:
            return None
        return [_position(p) for p in track]


# --- reporting --------------------------------------------------------------------------------


@strawberry.type(
    description="You are not a member or the foreman of the crew you report for "
    "(or of any crew, or of several: then name one with crewId); "
    "nothing was stored. The refusal is audited."
)
class PositionRefused:
    message: str


ReportPositionResult = Annotated[
    CrewPosition | PositionRefused | ValidationError | Forbidden, strawberry.union("ReportPositionResult")
]


async def _report_position(
    info: Info[Context, Any],
    lat: float,
    lon: float,
    accuracy: float,
    ts: dt.datetime | None = None,
    crew_id: str | None = None,
) -> ReportPositionResult:
    denied = await refusal(info, "crews.report", "crew.position.report")
    if denied is not None:
        return denied
    ctx = info.context
    assert ctx.principal is not None  # `refusal` lets nobody anonymous through
    try:
        pos = await service.report_position(
            ctx.services.db,
            ctx.services.bus.publish,
            ctx.principal,
            lat,
            lon,
            accuracy,
            ts,
            crew_id=crew_id,
            actor=actor_of(ctx),
        )
    except service.PositionRefused as exc:
        return PositionRefused(message=str(exc))
    except erp_errors.ErpError as exc:
        return from_erp_error(exc)  # type: ignore[return-value]  # ValidationError, Forbidden
    return _position(pos)  # stored, and sent to those who follow the crew


@strawberry.type
class CrewMutation:
    report_position = strawberry.mutation(
        resolver=_report_position,
        description="Report your crew's position (the crew app): latitude and longitude in "
        "WGS84 degrees, the accuracy radius in metres (≥ 0), the time of the fix "
        "(default: now; at most 5 minutes ahead, not before yesterday UTC). A "
        "foreman or member of several crews names one with crewId.",
    )


# --- live -------------------------------------------------------------------------------------


@strawberry.type
class CrewSubscription:
    @strawberry.subscription(
        permission_classes=[Can("crews.positions")],
        description="Positions of the crews you may see (or of one area of them), as they are reported.",
    )
    async def crew_positions(
        self,
        info: Info[Context, Any],
        area: str | None = None,
    ) -> AsyncGenerator[CrewPosition, None]:
        principal = info.context.principal
        async with info.context.services.bus.subscribe(service.CREW_POSITIONS_TOPIC) as sub:
            async for msg in sub:
                if msg.get("type") != "crew_position":
                    continue  # a resync: `crews { lastPosition }` is the state to re-read
                if area is not None and msg["area_id"] != area:
                    continue
                if not service.sees_crew(principal, msg["area_id"], msg["foreman_user_id"]):
                    continue
                yield _position(service.position_from_message(msg))
