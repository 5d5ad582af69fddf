"""Alarm value types: definitions (data), the ISA-18.2 states, and journal events.

Terms follow ANSI/ISA-18.2 and IEC 62682:

- the *condition* is the process state an alarm watches (pressure above its HI limit, door open);
  it is active or not, after the on/off delays and the deadband;
- the *status* is what the operator sees: normal, active unacknowledged, active acknowledged,
  returned to normal unacknowledged (`AlarmStatus`);
- the *mode* says whether the alarm is annunciated at all: in service, shelved (by an operator,
  with an expiry and a reason), suppressed by design (e.g. station in maintenance) or out of
  service (`AlarmMode`). Outside service the condition is still tracked, silently; when the
  alarm returns to service it shows what the condition is then.

Everything here is plain data with no I/O, so it can cross the bus, go into the journal and be
compared in tests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from realtime.model import TagPath, Value

__all__ = [
    "ALARMS_TOPIC",
    "AlarmDefinition",
    "AlarmEvent",
    "AlarmKind",
    "AlarmMode",
    "AlarmSnapshot",
    "AlarmStatus",
    "EventKind",
    "Priority",
    "definition_from_record",
]


ALARMS_TOPIC = "alarms"  # the bus topic of alarm events (`AlarmEvent.to_message`)


class Priority(IntEnum):
    """Alarm priority; ordered, so `minPriority` filters are comparisons."""

    low = 1
    medium = 2
    high = 3
    critical = 4


class AlarmKind(StrEnum):
    """What condition a definition watches."""

    hihi = "hihi"  # value >= limit
    hi = "hi"
    lo = "lo"  # value <= limit
    lolo = "lolo"
    rate = "rate"  # |change per second| >= limit (rate of change)
    discrete = "discrete"  # value in `states` (door open, regulator fault, valve fault)
    stale = "stale"  # no update for `stale_after_s` (communication loss)
    bad_quality = "bad_quality"  # the value's quality is Bad
    cp_window = "cp_window"  # polarization potential outside [low, high] (V vs CSE)
    deviation = "deviation"  # |measured - modelled (`ref_tag`)| >= limit


class AlarmStatus(StrEnum):
    """The ISA-18.2 alarm states the operator sees (in service)."""

    normal = "normal"
    unack = "unack"  # active, unacknowledged
    acked = "acked"  # active, acknowledged
    rtn_unack = "rtn_unack"  # returned to normal, unacknowledged


class AlarmMode(StrEnum):
    """Whether the alarm is annunciated."""

    in_service = "in_service"
    shelved = "shelved"
    suppressed = "suppressed"  # by design: a rule such as "station in maintenance"
    out_of_service = "out_of_service"


class EventKind(StrEnum):
    """What a journal event records."""

    activated = "activated"  # the condition became active (in service: -> unack)
    cleared = "cleared"  # the condition returned to normal
    acknowledged = "acknowledged"
    reset = "reset"  # a latched alarm reset by the operator after its condition cleared
    shelved = "shelved"
    unshelved = "unshelved"  # by the operator or by the shelf's expiry
    suppressed = "suppressed"
    unsuppressed = "unsuppressed"
    out_of_service = "out_of_service"
    returned_to_service = "returned_to_service"
    comment = "comment"
    chattering = "chattering"  # flagged: >= 3 activations within a minute
    flood_started = "flood_started"  # per area: > 10 activations in 10 minutes
    flood_ended = "flood_ended"


@dataclass(frozen=True, slots=True)
class AlarmDefinition:
    """One alarm, as data. `id` is stable (e.g. ``station/GRP-12/p_out:hi``).

    Limits are in the tag's engineering unit. `limit` is fixed, or, with `limit_tag`, the
    current value of that tag plus `limit` (e.g. HI = outlet set-point + 0.1 bar). `deadband`
    is the hysteresis: an active HI clears only below ``limit - deadband``. `on_delay_s`: the
    condition must hold this long before the alarm activates; `off_delay_s`: it must be gone
    this long before it clears. A `latching` alarm stays active after its condition clears
    until the operator resets it.
    """

    id: str
    tag: TagPath
    kind: AlarmKind
    priority: Priority = Priority.medium
    area_id: str | None = None
    asset_id: str | None = None
    limit: float | None = None
    limit_tag: TagPath | None = None
    low: float | None = None  # cp_window bounds
    high: float | None = None
    states: frozenset[Value] = frozenset()  # discrete: the abnormal values
    ref_tag: TagPath | None = None  # deviation: the modelled value's tag
    stale_after_s: float | None = None
    deadband: float = 0.0
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0
    latching: bool = False
    message: str = ""  # what it is, shown in lists and notifications
    consequence: str = ""  # what happens if nobody acts
    guidance: str = ""  # what the operator should do

    def __post_init__(self) -> None:
        needs_limit = {AlarmKind.hihi, AlarmKind.hi, AlarmKind.lo, AlarmKind.lolo, AlarmKind.rate,
                       AlarmKind.deviation}
        if self.kind in needs_limit and self.limit is None:
            raise ValueError(f"alarm {self.id}: a {self.kind} alarm needs a limit")
        if self.kind is AlarmKind.cp_window and (self.low is None or self.high is None
                                                 or self.low >= self.high):
            raise ValueError(f"alarm {self.id}: a cp_window alarm needs low < high")
        if self.kind is AlarmKind.discrete and not self.states:
            raise ValueError(f"alarm {self.id}: a discrete alarm needs its abnormal states")
        if self.kind is AlarmKind.deviation and self.ref_tag is None:
            raise ValueError(f"alarm {self.id}: a deviation alarm needs ref_tag")
        if self.kind is AlarmKind.stale and not (self.stale_after_s and self.stale_after_s > 0):
            raise ValueError(f"alarm {self.id}: a stale alarm needs stale_after_s > 0")
        if self.deadband < 0 or self.on_delay_s < 0 or self.off_delay_s < 0:
            raise ValueError(f"alarm {self.id}: deadband and delays must not be negative")


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One journal entry: what happened to an alarm, and its state after it.

    `seq` orders the journal (assigned when stored; 0 before). `user` is the operator for
    operator actions, None for the engine's own. `first_out` marks the first activation of a
    burst in its area (the likely cause; the ones after it are likely consequences).
    """

    alarm_id: str
    kind: EventKind
    ts: dt.datetime
    status: AlarmStatus
    mode: AlarmMode
    active: bool  # the condition, after this event
    priority: Priority
    tag: TagPath = ""
    area_id: str | None = None
    value: Value = None
    user: str | None = None
    comment: str = ""
    message: str = ""
    first_out: bool = False
    shelved_until: dt.datetime | None = None
    activated_at: dt.datetime | None = None  # the current activation (None while normal)
    seq: int = 0

    def to_message(self) -> dict[str, Any]:
        """The JSON-able bus message of this event."""
        return {"type": "alarm", "alarm_id": self.alarm_id, "kind": self.kind.value,
                "ts": self.ts.isoformat(), "status": self.status.value, "mode": self.mode.value,
                "active": self.active, "priority": int(self.priority), "tag": self.tag,
                "area_id": self.area_id, "value": self.value, "user": self.user,
                "comment": self.comment, "message": self.message, "first_out": self.first_out,
                "shelved_until": self.shelved_until.isoformat() if self.shelved_until else None,
                "activated_at": self.activated_at.isoformat() if self.activated_at else None,
                "seq": self.seq}

    @classmethod
    def from_message(cls, m: dict[str, Any]) -> AlarmEvent:
        """The event of a bus message made by `to_message`."""
        return cls(m["alarm_id"], EventKind(m["kind"]), dt.datetime.fromisoformat(m["ts"]),
                   AlarmStatus(m["status"]), AlarmMode(m["mode"]), bool(m["active"]),
                   Priority(m["priority"]), m.get("tag", ""), m.get("area_id"), m.get("value"),
                   m.get("user"), m.get("comment", ""), m.get("message", ""),
                   bool(m.get("first_out", False)),
                   _ts(m.get("shelved_until")), _ts(m.get("activated_at")), int(m.get("seq", 0)))


    def to_record(self) -> dict[str, Any]:
        """The journal row of this event (column names of the database's alarm_events)."""
        return {"alarm_id": self.alarm_id, "kind": self.kind.value, "ts": self.ts,
                "status": self.status.value, "mode": self.mode.value, "active": self.active,
                "priority": int(self.priority), "tag": self.tag, "area_id": self.area_id,
                "value": self.value, "actor": self.user, "comment": self.comment,
                "message": self.message, "first_out": self.first_out,
                "shelved_until": self.shelved_until, "activated_at": self.activated_at}

    @classmethod
    def from_record(cls, row: Any) -> AlarmEvent:
        """The event of a journal row (an object with the `to_record` names as attributes)."""
        return cls(row.alarm_id, EventKind(row.kind), row.ts, AlarmStatus(row.status),
                   AlarmMode(row.mode), bool(row.active), Priority(row.priority), row.tag or "",
                   row.area_id, row.value, row.actor, row.comment or "", row.message or "",
                   bool(row.first_out), row.shelved_until, row.activated_at, int(row.seq or 0))


def definition_from_record(row: Any) -> AlarmDefinition:
    """The definition of a database row (`limit_value` is the engine's `limit`)."""
    return AlarmDefinition(
        id=row.id, tag=row.tag, kind=AlarmKind(row.kind), priority=Priority(row.priority),
        area_id=row.area_id, asset_id=row.asset_id, limit=row.limit_value,
        limit_tag=row.limit_tag, low=row.low, high=row.high,
        states=frozenset(row.states or ()), ref_tag=row.ref_tag, stale_after_s=row.stale_after_s,
        deadband=row.deadband or 0.0, on_delay_s=row.on_delay_s or 0.0,
        off_delay_s=row.off_delay_s or 0.0, latching=bool(row.latching), message=row.message or "",
        consequence=row.consequence or "", guidance=row.guidance or "")


def _ts(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


@dataclass(slots=True)
class AlarmSnapshot:
    """The current state of one alarm (what the active list shows, what a restart restores)."""

    definition: AlarmDefinition
    status: AlarmStatus = AlarmStatus.normal
    mode: AlarmMode = AlarmMode.in_service
    active: bool = False
    value: Value = None
    since: dt.datetime | None = None  # when the status last changed
    activated_at: dt.datetime | None = None  # the current activation, while not normal
    acked_by: str | None = None
    shelved_until: dt.datetime | None = None
    shelved_by: str | None = None
    shelve_reason: str = ""
    chattering: bool = False
    activations: list[dt.datetime] = field(default_factory=list)  # the last minute's
