"""ISA-18.2 alarm-system performance figures, from journal events and current alarm states.

The figures (ISA-18.2 section 16 / EEMUA 191 practice): average alarm rate per operator per
hour (target ≲ 6, "manageable"), the share of time any area was in flood, the ten most frequent
alarms (bad actors: usually a few produce most of the load), chattering alarms, alarms standing
for more than 24 h (stale), how many are shelved / suppressed / out of service now, and the
priority distribution of activations (target roughly 80 % low, 15 % medium, 5 % high and
critical together).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from realtime.alarms.model import AlarmEvent, AlarmMode, AlarmSnapshot, AlarmStatus, EventKind, Priority

__all__ = ["AlarmKpis", "alarm_kpis"]

STALE_AFTER = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class AlarmKpis:
    """The figures of one period."""

    start: dt.datetime
    end: dt.datetime
    activations: int
    per_operator_hour: float
    flood_time_pct: float
    top: tuple[tuple[str, int], ...]  # (alarm id, activations), most frequent first, ≤ 10
    chattering: tuple[str, ...]  # alarms flagged chattering in the period
    stale: tuple[str, ...]  # standing (not normal) for more than 24 h at `end`
    shelved: int
    suppressed: int
    out_of_service: int
    by_priority: dict[Priority, int]
    priority_pct: dict[Priority, float]


def alarm_kpis(events: Iterable[AlarmEvent], snapshots: Sequence[AlarmSnapshot],
               start: dt.datetime, end: dt.datetime, *, operators: int = 1) -> AlarmKpis:
    """The figures for events in [start, end) and the alarms' current states."""
    if end <= start:
        raise ValueError("the period must end after it starts")
    if operators < 1:
        raise ValueError("operators must be at least 1")
    activations: Counter[str] = Counter()
    by_priority: Counter[Priority] = Counter()
    chattering: set[str] = set()
    flood_since: dict[str | None, dt.datetime] = {}
    flood_spans: list[tuple[dt.datetime, dt.datetime]] = []
    for e in sorted(events, key=lambda e: (e.ts, e.seq)):
        if not start <= e.ts < end:
            continue
        if e.kind is EventKind.activated and e.status is AlarmStatus.unack:
            activations[e.alarm_id] += 1
            by_priority[e.priority] += 1
        elif e.kind is EventKind.chattering:
            chattering.add(e.alarm_id)
        elif e.kind is EventKind.flood_started:
            flood_since.setdefault(e.area_id, e.ts)
        elif e.kind is EventKind.flood_ended:
            # a flood that ends in the period without a start in it began before the period
            flood_spans.append((flood_since.pop(e.area_id, start), e.ts))
    flood_spans += [(since, end) for since in flood_since.values()]
    total = sum(activations.values())
    hours = (end - start).total_seconds() / 3600
    period_s = (end - start).total_seconds()
    return AlarmKpis(
        start=start, end=end, activations=total,
        per_operator_hour=total / hours / operators,
        flood_time_pct=100.0 * _union_seconds(flood_spans) / period_s,
        top=tuple(sorted(activations.items(), key=lambda kv: (-kv[1], kv[0]))[:10]),
        chattering=tuple(sorted(chattering)),
        stale=tuple(sorted(s.definition.id for s in snapshots
                           if s.status is not AlarmStatus.normal and s.activated_at is not None
                           and end - s.activated_at > STALE_AFTER)),
        shelved=sum(s.mode is AlarmMode.shelved for s in snapshots),
        suppressed=sum(s.mode is AlarmMode.suppressed for s in snapshots),
        out_of_service=sum(s.mode is AlarmMode.out_of_service for s in snapshots),
        by_priority={p: by_priority[p] for p in Priority},
        priority_pct={p: (100.0 * by_priority[p] / total if total else 0.0) for p in Priority},
    )


def _union_seconds(spans: list[tuple[dt.datetime, dt.datetime]]) -> float:
    """Seconds covered by the union of [a, b) spans (floods of several areas may overlap)."""
    covered = 0.0
    current: tuple[dt.datetime, dt.datetime] | None = None
    for a, b in sorted(spans):
        if current is None or a > current[1]:
            if current is not None:
                covered += (current[1] - current[0]).total_seconds()
            current = (a, b)
        else:
            current = (current[0], max(current[1], b))
    if current is not None:
        covered += (current[1] - current[0]).total_seconds()
    return covered
