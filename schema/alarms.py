"""Alarms over GraphQL: the active list, the journal, the performance figures, the notifications
sent about an alarm, operator actions (acknowledge, shelve, unshelve, comment) and the live
`alarmEvents` feed.

Resolvers are thin: the state lives in the server's `AlarmEngine` (`services.alarms`), the
journal and the notification messages in the database (`erp.services.alarms`,
`erp.services.notifications`). Operators and dispatchers act on alarms of their own areas; an
alarm outside the caller's areas is reported as not found (its notifications as none), so its
existence does not leak. Every action, granted or refused, leaves an audit record with the
state before and after.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from erp.services import alarms as journal
from erp.services import audit
from erp.services import notifications as notices
from realtime.alarms.engine import AlarmEngine, AlarmRefused, UnknownAlarm
from realtime.alarms.kpi import alarm_kpis
from realtime.alarms.model import ALARMS_TOPIC, AlarmEvent, AlarmSnapshot, Priority
from schema.context import Context
from schema.errors import Forbidden, NotFound
from schema.permissions import Can, actor_of, refusal
from schema.types import alarms as ta

__all__ = ["ALARM_MUTATIONS", "AlarmQuery", "AlarmSubscription"]

MAX_SHELF = dt.timedelta(hours=24)  # a longer removal is "out of service", decided elsewhere


def _visible(ctx: Context, area_id: str | None) -> bool:
    scope = ctx.areas()
    return scope is None or (area_id is not None and area_id in scope)


def _engine(ctx: Context) -> AlarmEngine | None:
    return ctx.services.alarms


@strawberry.type
class AlarmQuery:
    @strawberry.field(permission_classes=[Can("alarms.read")],
                      description="Alarms that are not normal (or all with includeNormal), "
                                  "highest priority first, then the oldest activation.")
    def active_alarms(self, info: Info[Context, Any], area_id: str | None = None,
                      min_priority: ta.AlarmPriority = Priority.low,  # type: ignore[valid-type]
                      include_normal: bool = False,
                      include_shelved: bool = True) -> list[ta.Alarm]:
        engine = _engine(info.context)
        if engine is None:
            return []
        found = [s for s in engine.snapshots(
                     area_ids=None if area_id is None else [area_id],
                     min_priority=Priority(min_priority), only_annunciated=not include_normal)
                 if _visible(info.context, s.definition.area_id)]
        if include_shelved and not include_normal:
            found += [s for s in engine.snapshots(area_ids=None if area_id is None else [area_id],
                                                  min_priority=Priority(min_priority))
                      if s.mode.value == "shelved" and _visible(info.context, s.definition.area_id)]
        far = dt.datetime.max.replace(tzinfo=dt.UTC)
        found.sort(key=lambda s: (-s.definition.priority, s.activated_at or far, s.definition.id))
        return [ta.alarm(s) for s in found]

    @strawberry.field(permission_classes=[Can("alarms.read")], description="One alarm.")
    def alarm(self, info: Info[Context, Any], id: str) -> ta.Alarm | None:
        engine = _engine(info.context)
        try:
            s = engine.get(id) if engine is not None else None
        except UnknownAlarm:
            return None
        return ta.alarm(s) if s is not None and _visible(info.context, s.definition.area_id) else None

    @strawberry.field(permission_classes=[Can("alarms.read")],
                      description="The alarm journal, newest first; page with beforeSeq.")
    async def alarm_journal(self, info: Info[Context, Any], first: int = 100,
                            before_seq: int | None = None, alarm_id: str | None = None,
                            area_id: str | None = None, since: dt.datetime | None = None,
                            until: dt.datetime | None = None) -> ta.AlarmJournalPage:
        if not 1 <= first <= 1000:
            raise ValueError("first must be between 1 and 1000")
        scope = info.context.areas()
        areas = None if scope is None and area_id is None else (
            {area_id} & scope if area_id is not None and scope is not None
            else {area_id} if area_id is not None else scope)
        async with info.context.services.db() as s:
            rows = await journal.alarm_journal(s, alarm_id=alarm_id, area_ids=areas, since=since,
                                               until=until, before_seq=before_seq,
                                               limit=first + 1)
        events = [AlarmEvent.from_record(r) for r in rows]
        more = len(events) > first
        events = events[:first]
        return ta.AlarmJournalPage(events=[ta.event(e) for e in events],
                                   next_before_seq=events[-1].seq if more and events else None)

    @strawberry.field(permission_classes=[Can("alarms.read")],
                      description="The notification messages of an alarm of your areas, in the "
                                  "order they were claimed, with their delivery history; empty "
                                  "when notifications are off.")
    async def alarm_notifications(self, info: Info[Context, Any],
                                  alarm_id: str) -> list[ta.NotificationMessage]:
        engine = _engine(info.context)
        try:
            snap = engine.get(alarm_id) if engine is not None else None
        except UnknownAlarm:
            snap = None
        if not _visible(info.context, snap.definition.area_id if snap is not None else None):
            return []
        async with info.context.services.db() as s:
            found = await notices.messages_for_alarm(s, alarm_id)
        return [ta.notification(n) for n in found]

    @strawberry.field(permission_classes=[Can("alarms.read")],
                      description="ISA-18.2 performance figures for [start, end).")
    async def alarm_kpis(self, info: Info[Context, Any], start: dt.datetime, end: dt.datetime,
                         operators: int = 1) -> ta.AlarmKpis:
        if start.tzinfo is None or end.tzinfo is None or end <= start:
            raise ValueError("start and end must carry a zone, and end must be after start")
        if end - start > dt.timedelta(days=92):
            raise ValueError("at most 92 days per query")
        scope = info.context.areas()
        async with info.context.services.db() as s:
            rows = await journal.alarm_events_between(s, start, end, area_ids=scope)
        engine = _engine(info.context)
        snapshots: list[AlarmSnapshot] = [] if engine is None else [
            x for x in engine.snapshots() if _visible(info.context, x.definition.area_id)]
        return ta.AlarmKpis.of(alarm_kpis([AlarmEvent.from_record(r) for r in rows], snapshots,
                                          start, end, operators=operators))


# --- actions ----------------------------------------------------------------------------------


@strawberry.type(description="Done; the event is what the journal records.")
class AlarmActionSuccess:
    event: ta.AlarmEvent


@strawberry.type(description="The action does not apply to the alarm in its state (says why).")
class AlarmActionRefused:
    message: str


AlarmActionResult = Annotated[AlarmActionSuccess | AlarmActionRefused | NotFound | Forbidden,
                              strawberry.union("AlarmActionResult")]


async def _act(info: Info[Context, Any], operation: str, alarm_id: str, note: str,
               call: Callable[[AlarmEngine, str], AlarmEvent]) -> Any:
    ctx = info.context
    denied = await refusal(info, "alarms.act", operation)
    if denied is not None:
        return denied
    engine = _engine(ctx)
    try:
        snap = engine.get(alarm_id) if engine is not None else None
    except UnknownAlarm:
        snap = None
    if snap is None or engine is None or not _visible(ctx, snap.definition.area_id):
        return NotFound(message=f"alarm {alarm_id!r} not found in your areas", id=alarm_id)
    before = {"status": snap.status.value, "mode": snap.mode.value}
    actor = actor_of(ctx)
    try:
        e = call(engine, actor.username or "?")
    except AlarmRefused as exc:
        async with ctx.services.db.begin() as s:
            await audit.record(s, actor, audit.AuditEntry(
                operation, [f"alarm:{alarm_id}"], {"state": before, "note": note,
                                                   "reason": str(exc)}, outcome="refused"))
        return AlarmActionRefused(message=str(exc))
    async with ctx.services.db.begin() as s:
        await audit.record(s, actor, audit.AuditEntry(
            operation, [f"alarm:{alarm_id}"],
            {"status": {"before": before["status"], "after": e.status.value},
             "mode": {"before": before["mode"], "after": e.mode.value}, "note": note}))
    return AlarmActionSuccess(event=ta.event(e))


async def acknowledge_alarm(info: Info[Context, Any], alarm_id: str,
                            comment: str = "") -> AlarmActionResult:
    return await _act(info, "alarm.acknowledge", alarm_id, comment,
                      lambda engine, user: engine.acknowledge(alarm_id, user, comment))


async def shelve_alarm(info: Info[Context, Any], alarm_id: str, minutes: int,
                       reason: str) -> AlarmActionResult:
    def shelve(engine: AlarmEngine, user: str) -> AlarmEvent:
        if not 1 <= minutes <= MAX_SHELF.total_seconds() / 60:
            raise AlarmRefused("shelve for 1 minute to 24 hours; longer is out of service")
        until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
        return engine.shelve(alarm_id, user, until, reason)

    return await _act(info, "alarm.shelve", alarm_id, reason, shelve)


async def unshelve_alarm(info: Info[Context, Any], alarm_id: str,
                         comment: str = "") -> AlarmActionResult:
    return await _act(info, "alarm.unshelve", alarm_id, comment,
                      lambda engine, user: engine.unshelve(alarm_id, user, comment))


async def comment_alarm(info: Info[Context, Any], alarm_id: str, text: str) -> AlarmActionResult:
    return await _act(info, "alarm.comment", alarm_id, text,
                      lambda engine, user: engine.comment(alarm_id, user, text))


ALARM_MUTATIONS: list[Any] = [
    strawberry.mutation(resolver=acknowledge_alarm,
                        description="Acknowledge an unacknowledged alarm of your area."),
    strawberry.mutation(resolver=shelve_alarm,
                        description="Shelve an alarm for some minutes (≤ 24 h), with a reason."),
    strawberry.mutation(resolver=unshelve_alarm, description="Return a shelved alarm early."),
    strawberry.mutation(resolver=comment_alarm, description="Add a comment to an alarm."),
]


# --- live -------------------------------------------------------------------------------------


@strawberry.type
class AlarmSubscription:
    @strawberry.subscription(permission_classes=[Can("alarms.read")],
                             description="Every alarm event of your areas (or one area) from a "
                                         "priority up, as it happens.")
    async def alarm_events(self, info: Info[Context, Any], area: str | None = None,
                           min_priority: ta.AlarmPriority = Priority.low,  # type: ignore[valid-type]
                           ) -> AsyncGenerator[ta.AlarmEvent, None]:
        floor = int(Priority(min_priority))
        async with info.context.services.bus.subscribe(ALARMS_TOPIC) as sub:
            async for msg in sub:
                if msg.get("type") != "alarm":
                    continue  # a resync: the active list is the state to re-read
                if msg["priority"] < floor or (area is not None and msg["area_id"] != area):
                    continue
                if not _visible(info.context, msg["area_id"]):
                    continue
                yield ta.event(AlarmEvent.from_message(msg))
