"""Leak localization over GraphQL (issue 8, ANA-1): `locateLeak`, `leakLocalization`,
`leakLocalizations`.

A localization is a twin job like a what-if scenario (`services.scenarios`, kind
`leak_localization`, kept with them in the database): `locateLeak` queues one over the live
leak watch's last window of residuals and answers at once; the leak watch queues one by itself
when it raises "leak suspected" in an area. Once done it holds the ranked candidate nodes
(fitted leak, χ² score, position) and the region as likely as the best one, its outline
as [lat, lon] points — what the wall draws. Candidates outside the caller's areas are left out.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from erp.services.twin_scenarios import STATUSES, ScenarioRejected, StoredScenario
from schema.context import Context
from schema.errors import Forbidden
from schema.permissions import Can, actor_of, refusal
from schema.twin import ScenarioRefusal, scenario_records

__all__ = ["LEAK_MUTATIONS", "LeakQuery"]

KIND = "leak_localization"


@strawberry.type(description="A candidate position of a leak: a network node.")
class LeakCandidate:
    node_id: str
    area_id: str | None
    lat: float | None
    lon: float | None
    leak_kg_s: float = strawberry.field(description="The leak fitted at this node, kg/s")
    leak_m3h: float = strawberry.field(description="The same, m³/h at 20 °C and 101.325 kPa")
    score: float = strawberry.field(description="χ² improvement over no leak: higher is likelier")


@strawberry.type(description="A leak localization over the live leak watch's residuals: queued, "
                             "running, done or failed.")
class LeakLocalization:
    id: str
    created_at: dt.datetime
    created_by: str | None = strawberry.field(description="Who asked (twin: its own leak alarm)")
    status: str = strawberry.field(description="queued, running, done or failed")
    error: str | None
    finished_at: dt.datetime | None
    area_id: str | None = strawberry.field(description="The area searched (null: the network)")
    window_minutes: float
    detected: bool | None = strawberry.field(
        description="Whether the best candidate explains the residuals well enough to say a leak "
                    "is there at all (null until done)")
    cycles: int | None = strawberry.field(description="Twin cycles the window held")
    candidates: list[LeakCandidate] = strawberry.field(description="The best first (your areas)")
    region_node_ids: list[str] = strawberry.field(
        description="Nodes as likely as the best (χ² within 4): where to search")
    region_outline: list[list[float]] = strawberry.field(
        description="The region's convex outline, [lat, lon] points")


def _of(rec: StoredScenario, info: Info[Context, Any]) -> LeakLocalization:
    scope = info.context.areas()
    result = rec.result or {}
    summary = rec.summary or {}

    def mine(area: str | None) -> bool:
        return scope is None or (area is not None and area in scope)

    return LeakLocalization(
        id=rec.id, created_at=rec.created_at, created_by=rec.created_by, status=rec.status,
        error=rec.error, finished_at=rec.finished_at, area_id=rec.spec.get("area"),
        window_minutes=float(rec.spec.get("window_s", 0.0)) / 60.0,
        detected=summary.get("detected"), cycles=summary.get("cycles"),
        candidates=[LeakCandidate(node_id=c["node_id"], area_id=c["area_id"], lat=c.get("lat"),
                                  lon=c.get("lon"), leak_kg_s=c["leak_kg_s"], leak_m3h=c["leak_m3h"],
                                  score=c["score"])
                    for c in result.get("candidates", []) if mine(c["area_id"])],
        region_node_ids=list(result.get("region_node_ids", [])) if mine(rec.spec.get("area")) else [],
        region_outline=[list(p) for p in result.get("region_outline", [])]
        if mine(rec.spec.get("area")) else [])


@strawberry.type(description="The localization was queued; ask `leakLocalization(id)` how it stands.")
class LeakLocalizationQueued:
    localization: LeakLocalization


LocateLeakResult = Annotated[LeakLocalizationQueued | ScenarioRefusal | Forbidden,
                             strawberry.union("LocateLeakResult")]


async def locate_leak(info: Info[Context, Any], area: str | None = None,
                      window_minutes: float = 60.0) -> LocateLeakResult:
    denied = await refusal(info, "twin.scenarios", "twin.leak.locate")
    if denied is not None:
        return denied
    ctx = info.context
    scope = ctx.areas()
    if scope is not None and (area is None or area not in scope):
        return Forbidden(message="name one of your areas: a localization of the network or of "
                                 "another area is not yours")
    runner = ctx.services.scenarios
    if runner is None:
        return ScenarioRefusal(message="the live twin does not run in this server process")
    try:
        rec = await runner.locate_leak(area, window_minutes * 60.0, actor=actor_of(ctx))
    except ScenarioRejected as exc:
        return ScenarioRefusal(message=str(exc))
    return LeakLocalizationQueued(localization=_of(rec, info))


LEAK_MUTATIONS: list[Any] = [
    strawberry.mutation(resolver=locate_leak,
                        description="Rank every node of the network (or of one area) as the "
                                    "leak's position from the live leak watch's last "
                                    "`windowMinutes` of residuals; runs in the background."),
]


@strawberry.type
class LeakQuery:
    @strawberry.field(permission_classes=[Can("twin.read")],
                      description="One leak localization (null if there is none with this id).")
    async def leak_localization(self, info: Info[Context, Any], id: str) -> LeakLocalization | None:
        runner = scenario_records(info)
        rec = await runner.get(id) if runner is not None else None
        return _of(rec, info) if rec is not None and rec.kind == KIND else None

    @strawberry.field(permission_classes=[Can("twin.read")],
                      description="The newest leak localizations first, optionally of one status "
                                  "or area (yours only).")
    async def leak_localizations(self, info: Info[Context, Any], first: int = 10,
                                 status: str | None = None, area: str | None = None
                                 ) -> list[LeakLocalization]:
        if not 1 <= first <= 100:
            raise ValueError("first must be between 1 and 100")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        runner = scenario_records(info)
        if runner is None:
            return []
        scope = info.context.areas()
        wanted = [rec for rec in await runner.recent(100, status, kind=KIND)
                  if (area is None or rec.spec.get("area") == area)
                  and (scope is None or rec.spec.get("area") in scope)][:first]
        # a list holds no results: the candidates come from each one's full record
        return [_of(await runner.get(rec.id) or rec, info) for rec in wanted]
