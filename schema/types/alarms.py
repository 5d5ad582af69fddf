"""Alarm types: alarms with their ISA-18.2 state, journal events, the performance figures, and
the notification messages sent about an alarm."""

from __future__ import annotations

import datetime as dt

import strawberry
from strawberry.scalars import JSON

from erp.services.notifications import StoredMessage
from realtime.alarms import model as m
from realtime.alarms.kpi import AlarmKpis as KpiValues
from realtime.notify.model import DeliveryStatus

__all__ = ["Alarm", "AlarmEvent", "AlarmJournalPage", "AlarmKpis", "AlarmPriority",
           "NotificationMessage", "NotificationStatusChange", "alarm", "event", "notification"]

AlarmPriority = strawberry.enum(m.Priority, name="AlarmPriority",
                                description="low < medium < high < critical")
AlarmStatus = strawberry.enum(m.AlarmStatus, name="AlarmStatus",
                              description="normal; unack (active, unacknowledged); acked (active, "
                                          "acknowledged); rtn_unack (returned to normal, "
                                          "unacknowledged)")
AlarmMode = strawberry.enum(m.AlarmMode, name="AlarmMode")
AlarmEventKind = strawberry.enum(m.EventKind, name="AlarmEventKind")
AlarmKind = strawberry.enum(m.AlarmKind, name="AlarmKind")


@strawberry.type(description="An alarm and its current state.")
class Alarm:
    id: str
    tag: str
    kind: AlarmKind  # type: ignore[valid-type]
    priority: AlarmPriority  # type: ignore[valid-type]
    area_id: str | None
    asset_id: str | None
    status: AlarmStatus  # type: ignore[valid-type]
    mode: AlarmMode  # type: ignore[valid-type]
    active: bool = strawberry.field(description="Whether the condition is present now")
    value: JSON | None
    since: dt.datetime | None = strawberry.field(description="When the status last changed")
    activated_at: dt.datetime | None
    acked_by: str | None
    shelved_until: dt.datetime | None
    shelved_by: str | None
    shelve_reason: str
    chattering: bool
    message: str
    consequence: str
    guidance: str


def alarm(s: m.AlarmSnapshot) -> Alarm:
    """The GraphQL view of an alarm's state."""
    d = s.definition
    return Alarm(id=d.id, tag=d.tag, kind=d.kind, priority=d.priority, area_id=d.area_id,
                 asset_id=d.asset_id, status=s.status, mode=s.mode, active=s.active,
                 value=s.value, since=s.since, activated_at=s.activated_at, acked_by=s.acked_by,
                 shelved_until=s.shelved_until, shelved_by=s.shelved_by,
                 shelve_reason=s.shelve_reason, chattering=s.chattering, message=d.message,
                 consequence=d.consequence, guidance=d.guidance)


@strawberry.type(description="One alarm journal entry: what happened and the state after it.")
class AlarmEvent:
    seq: int | None = strawberry.field(description="Journal order; null until stored")
    alarm_id: str
    kind: AlarmEventKind  # type: ignore[valid-type]
    ts: dt.datetime
    status: AlarmStatus  # type: ignore[valid-type]
    mode: AlarmMode  # type: ignore[valid-type]
    active: bool
    priority: AlarmPriority  # type: ignore[valid-type]
    tag: str
    area_id: str | None
    value: JSON | None
    user: str | None
    comment: str
    message: str
    first_out: bool = strawberry.field(description="First activation of a burst in its area")
    shelved_until: dt.datetime | None
    activated_at: dt.datetime | None


def event(e: m.AlarmEvent) -> AlarmEvent:
    """The GraphQL view of a journal event."""
    return AlarmEvent(seq=e.seq or None, alarm_id=e.alarm_id, kind=e.kind, ts=e.ts,
                      status=e.status, mode=e.mode, active=e.active, priority=e.priority,
                      tag=e.tag, area_id=e.area_id, value=e.value, user=e.user,
                      comment=e.comment, message=e.message, first_out=e.first_out,
                      shelved_until=e.shelved_until, activated_at=e.activated_at)


@strawberry.type(description="A page of the journal, newest first.")
class AlarmJournalPage:
    events: list[AlarmEvent]
    next_before_seq: int | None = strawberry.field(
        description="Pass as beforeSeq for the next (older) page; null at the end")


@strawberry.type
class AlarmCount:
    alarm_id: str
    activations: int


@strawberry.type
class PriorityShare:
    priority: AlarmPriority  # type: ignore[valid-type]
    activations: int
    percent: float


@strawberry.type(description="ISA-18.2 alarm-system performance over a period.")
class AlarmKpis:
    start: dt.datetime
    end: dt.datetime
    activations: int
    per_operator_hour: float = strawberry.field(description="Target: about 6 or fewer")
    flood_time_percent: float
    top_ten: list[AlarmCount] = strawberry.field(description="The most frequent alarms")
    chattering: list[str]
    standing_over_24h: list[str]
    shelved: int
    suppressed: int
    out_of_service: int
    priority_mix: list[PriorityShare] = strawberry.field(
        description="Target roughly 80 % low, 15 % medium, 5 % high and critical")

    @classmethod
    def of(cls, k: KpiValues) -> AlarmKpis:
        """From the computed figures."""
        return cls(start=k.start, end=k.end, activations=k.activations,
                   per_operator_hour=k.per_operator_hour, flood_time_percent=k.flood_time_pct,
                   top_ten=[AlarmCount(alarm_id=a, activations=n) for a, n in k.top],
                   chattering=list(k.chattering), standing_over_24h=list(k.stale),
                   shelved=k.shelved, suppressed=k.suppressed, out_of_service=k.out_of_service,
                   priority_mix=[PriorityShare(priority=p, activations=k.by_priority[p],
                                               percent=k.priority_pct[p]) for p in m.Priority])


NotificationStatus = strawberry.enum(
    DeliveryStatus, name="NotificationStatus",
    description="queued; sent; failed (permanently, or out of attempts); retrying (a temporary "
                "failure, tried again at nextAttemptAt); cancelled (an escalation no longer "
                "needed)")


@strawberry.type(description="One step of a notification message's delivery.")
class NotificationStatusChange:
    status: NotificationStatus  # type: ignore[valid-type]
    at: dt.datetime
    attempt: int = strawberry.field(description="Delivery attempts made so far")
    reason: str
    next_attempt_at: dt.datetime | None


@strawberry.type(description="A message sent (or due, or cancelled) about an alarm activation: "
                             "one escalation level, channel and recipient.")
class NotificationMessage:
    key: str = strawberry.field(description="The de-duplication key: activation, level, channel "
                                            "and recipient")
    level: int = strawberry.field(description="Escalation level (0: at activation)")
    channel: str
    recipient: str = strawberry.field(description="The contact's name")
    to: str = strawberry.field(description="The address on the channel (e-mail, phone, URL)")
    status: NotificationStatus  # type: ignore[valid-type]
    attempts: int
    history: list[NotificationStatusChange] = strawberry.field(description="Oldest first")


def notification(n: StoredMessage) -> NotificationMessage:
    """The GraphQL view of a stored notification message."""
    return NotificationMessage(
        key=n.key, level=n.level, channel=n.channel, recipient=n.recipient,
        to=str(n.message.get("to", "")), status=DeliveryStatus(n.status), attempts=n.attempts,
        history=[NotificationStatusChange(status=DeliveryStatus(c.status), at=c.at,
                                          attempt=c.attempt, reason=c.reason,
                                          next_attempt_at=c.next_attempt_at)
                 for c in n.history])
