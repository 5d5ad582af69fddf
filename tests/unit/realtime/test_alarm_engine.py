"""The alarm engine's conditions, delays, deadband, stale detection, flood and chatter, actions
and restore — with an injected clock, so nothing sleeps."""

from __future__ import annotations

import datetime as dt

import pytest

from realtime.alarms.engine import AlarmEngine, AlarmRefused, UnknownAlarm
from realtime.alarms.model import (
    AlarmDefinition,
    AlarmEvent,
    AlarmKind,
    AlarmMode,
    AlarmStatus,
    EventKind,
    Priority,
)
from realtime.model import Quality, TagValue

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def make(*defs: AlarmDefinition, **kw: object) -> tuple[AlarmEngine, Clock, list[AlarmEvent]]:
    clock = Clock()
    journal: list[AlarmEvent] = []
    return AlarmEngine(defs, clock=clock, sink=journal.extend, **kw), clock, journal  # type: ignore[arg-type]


def feed(engine: AlarmEngine, clock: Clock, tag: str, value: object,
         quality: Quality = Quality.GOOD) -> list[AlarmEvent]:
    return engine.on_values({tag: TagValue(value, quality, clock.now, clock.now)})  # type: ignore[arg-type]


def kinds(events: list[AlarmEvent]) -> list[EventKind]:
    return [e.kind for e in events]


HI = AlarmDefinition("p:hi", "p", AlarmKind.hi, limit=5.0, deadband=0.2, priority=Priority.high,
                     area_id="north")


def test_on_delay_suppresses_a_short_crossing() -> None:
    d = AlarmDefinition("p:hi", "p", AlarmKind.hi, limit=5.0, on_delay_s=10)
    engine, clock, journal = make(d)
    feed(engine, clock, "p", 6.0)
    clock.advance(5)
    feed(engine, clock, "p", 4.0)  # back within 5 s < 10 s: nothing
    clock.advance(20)
    engine.tick()
    assert journal == [] and engine.get("p:hi").status is AlarmStatus.normal
    feed(engine, clock, "p", 6.0)
    clock.advance(9.9)
    engine.tick()
    assert journal == []
    clock.advance(0.1)
    engine.tick()  # held for the whole delay: activates on the tick, no new value needed
    assert kinds(journal) == [EventKind.activated]
    assert journal[0].ts == clock.now and journal[0].status is AlarmStatus.unack


def test_off_delay_keeps_the_alarm_through_a_short_dip() -> None:
    d = AlarmDefinition("p:hi", "p", AlarmKind.hi, limit=5.0, off_delay_s=30)
    engine, clock, journal = make(d)
    feed(engine, clock, "p", 6.0)
    clock.advance(1)
    feed(engine, clock, "p", 4.0)
    clock.advance(10)
    feed(engine, clock, "p", 6.0)  # back before 30 s
    clock.advance(60)
    engine.tick()
    assert kinds(journal) == [EventKind.activated]
    feed(engine, clock, "p", 4.0)
    clock.advance(30)
    engine.tick()
    assert kinds(journal) == [EventKind.activated, EventKind.cleared]


def test_deadband_prevents_chatter_at_the_limit() -> None:
    engine, clock, journal = make(HI)
    for v in [5.0, 4.9, 5.05, 4.85, 5.1, 4.81]:  # noise around the limit, inside the 0.2 band
        feed(engine, clock, "p", v)
        clock.advance(1)
    assert kinds(journal) == [EventKind.activated]
    feed(engine, clock, "p", 4.79)  # below limit - deadband: clears
    assert kinds(journal) == [EventKind.activated, EventKind.cleared]
    assert engine.get("p:hi").status is AlarmStatus.rtn_unack


def test_without_deadband_the_same_noise_chatters_and_is_flagged() -> None:
    d = AlarmDefinition("p:hi", "p", AlarmKind.hi, limit=5.0)
    engine, clock, journal = make(d)
    for v in [5.0, 4.9, 5.05, 4.85, 5.1, 4.81]:
        feed(engine, clock, "p", v)
        clock.advance(1)
    assert kinds(journal).count(EventKind.activated) == 3
    assert kinds(journal).count(EventKind.chattering) == 1
    assert engine.get("p:hi").chattering
    clock.advance(61)
    engine.tick()
    assert not engine.get("p:hi").chattering


def test_stale_tag_raises_a_communication_alarm_after_its_period() -> None:
    d = AlarmDefinition("p:stale", "p", AlarmKind.stale, stale_after_s=30, priority=Priority.high)
    engine, clock, journal = make(d)
    feed(engine, clock, "p", 1.0)
    clock.advance(29)
    engine.tick()
    assert journal == []
    clock.advance(1)
    engine.tick()
    assert kinds(journal) == [EventKind.activated]
    feed(engine, clock, "p", 1.0)  # data again: the condition clears
    assert kinds(journal) == [EventKind.activated, EventKind.cleared]


def test_stale_uses_the_stores_last_update_when_given() -> None:
    seen = {"p": T0}
    d = AlarmDefinition("p:stale", "p", AlarmKind.stale, stale_after_s=30)
    engine, clock, journal = make(d, last_update=seen.get)
    clock.advance(20)
    seen["p"] = clock.now  # an update inside the deadband: no change reached the engine
    clock.advance(20)
    engine.tick()
    assert journal == []
    clock.advance(10)
    engine.tick()
    assert kinds(journal) == [EventKind.activated]


def test_bad_quality_keeps_the_limit_alarm_as_it_is_and_raises_its_own() -> None:
    bad = AlarmDefinition("p:bad", "p", AlarmKind.bad_quality, priority=Priority.low)
    engine, clock, journal = make(HI, bad)
    feed(engine, clock, "p", 6.0)
    feed(engine, clock, "p", 0.0, Quality.BAD_NOT_CONNECTED)
    assert engine.get("p:hi").active  # a Bad 0.0 is not a return to normal
    assert engine.get("p:bad").active


def test_limit_taken_from_a_set_point_tag() -> None:
    d = AlarmDefinition("p:hi", "p", AlarmKind.hi, limit=0.1, limit_tag="sp")
    engine, clock, journal = make(d)
    feed(engine, clock, "p", 3.05)  # no set-point yet: cannot tell
    engine.on_values({"sp": TagValue(3.0, Quality.GOOD, T0, T0)})
    assert engine.get("p:hi").status is AlarmStatus.normal
    feed(engine, clock, "p", 3.15)
    assert engine.get("p:hi").active
    engine.on_values({"sp": TagValue(3.2, Quality.GOOD, T0, T0)})  # the set-point moved up
    assert not engine.get("p:hi").active


def test_cathodic_protection_window_discrete_and_rate() -> None:
    cp = AlarmDefinition("skz:cp", "skz/u_pol", AlarmKind.cp_window, low=-1.15, high=-0.85,
                         deadband=0.02)
    door = AlarmDefinition("grp:door", "grp/door", AlarmKind.discrete, states=frozenset({True}))
    rate = AlarmDefinition("grp:rate", "grp/p", AlarmKind.rate, limit=0.05)  # units per second
    engine, clock, journal = make(cp, door, rate)
    for v, active in [(-1.0, False), (-0.80, True), (-0.86, True), (-0.88, False), (-1.2, True)]:
        feed(engine, clock, "skz/u_pol", v)
        assert engine.get("skz:cp").active is active, v
    feed(engine, clock, "grp/door", False)
    assert not engine.get("grp:door").active
    feed(engine, clock, "grp/door", True)
    assert engine.get("grp:door").active
    feed(engine, clock, "grp/p", 3.0)
    clock.advance(10)
    feed(engine, clock, "grp/p", 3.2)  # 0.02 / s
    assert not engine.get("grp:rate").active
    clock.advance(10)
    feed(engine, clock, "grp/p", 4.0)  # 0.08 / s
    assert engine.get("grp:rate").active


def test_flood_per_area_and_first_out() -> None:
    defs = [AlarmDefinition(f"t{i}:hi", f"t{i}", AlarmKind.hi, limit=1.0, area_id="north")
            for i in range(12)] + [AlarmDefinition("s:hi", "s", AlarmKind.hi, limit=1.0,
                                                   area_id="south")]
    engine, clock, journal = make(*defs)
    for i in range(12):
        feed(engine, clock, f"t{i}", 2.0)
        clock.advance(20)
    feed(engine, clock, "s", 2.0)
    activated = [e for e in journal if e.kind is EventKind.activated]
    assert [e.first_out for e in activated] == [True] + [False] * 11 + [True]
    floods = [e for e in journal if e.kind is EventKind.flood_started]
    assert len(floods) == 1 and floods[0].area_id == "north" and floods[0].value == 11
    assert engine.flooding == {"north"}
    clock.advance(600)
    engine.tick()
    assert engine.flooding == set()
    assert journal[-1].kind is EventKind.flood_ended and journal[-1].area_id == "north"


def test_shelve_needs_a_reason_and_a_future_expiry_and_expires_by_itself() -> None:
    engine, clock, journal = make(HI)
    feed(engine, clock, "p", 6.0)
    with pytest.raises(AlarmRefused, match="reason"):
        engine.shelve("p:hi", "op", clock.now + dt.timedelta(hours=1), " ")
    with pytest.raises(AlarmRefused, match="future"):
        engine.shelve("p:hi", "op", clock.now, "nuisance")
    e = engine.shelve("p:hi", "op", clock.now + dt.timedelta(hours=1), "sensor drift, WO-12")
    assert e.mode is AlarmMode.shelved and e.shelved_until == clock.now + dt.timedelta(hours=1)
    assert engine.snapshots(only_annunciated=True) == []
    clock.advance(3600)
    events = engine.tick()
    assert kinds(events) == [EventKind.unshelved] and events[0].user is None
    assert engine.get("p:hi").status is AlarmStatus.unack  # still high: annunciated again


def test_actions_that_do_not_apply_are_refused_clearly() -> None:
    engine, clock, _ = make(HI)
    with pytest.raises(AlarmRefused, match="nothing to acknowledge"):
        engine.acknowledge("p:hi", "op")
    with pytest.raises(AlarmRefused, match="latched"):
        engine.reset("p:hi", "op")
    with pytest.raises(UnknownAlarm):
        engine.acknowledge("nope", "op")
    with pytest.raises(AlarmRefused, match="text"):
        engine.comment("p:hi", "op", "")


def test_suppression_by_asset_hides_and_returns_with_the_condition() -> None:
    d1 = AlarmDefinition("grp:p", "grp/p", AlarmKind.hi, limit=5.0, asset_id="GRP-1")
    d2 = AlarmDefinition("grp:door", "grp/door", AlarmKind.discrete, states=frozenset({True}),
                         asset_id="GRP-1")
    other = AlarmDefinition("x:p", "x/p", AlarmKind.hi, limit=5.0, asset_id="GRP-2")
    engine, clock, journal = make(d1, d2, other)
    events = engine.suppress("GRP-1", "WO-44", "planned maintenance")
    assert [e.alarm_id for e in events] == ["grp:p", "grp:door"]
    assert {e.mode for e in events} == {AlarmMode.suppressed}
    feed(engine, clock, "grp/door", True)  # the crew opens the door: not annunciated
    assert engine.get("grp:door").status is AlarmStatus.normal and engine.get("grp:door").active
    back = engine.unsuppress("GRP-1", "WO-44")
    assert {e.alarm_id: e.status for e in back} == {"grp:p": AlarmStatus.normal,
                                                    "grp:door": AlarmStatus.unack}
    assert engine.get("x:p").mode is AlarmMode.in_service


def test_restore_takes_each_alarms_newest_event() -> None:
    engine, clock, journal = make(HI, AlarmDefinition("q:hi", "q", AlarmKind.hi, limit=1.0))
    feed(engine, clock, "p", 6.0)
    engine.acknowledge("p:hi", "ivanov", "crew sent")
    feed(engine, clock, "q", 2.0)
    engine.shelve("q:hi", "petrov", clock.now + dt.timedelta(hours=8), "known fault")
    latest = {e.alarm_id: e for e in journal}
    fresh, _, _ = make(HI, AlarmDefinition("q:hi", "q", AlarmKind.hi, limit=1.0))
    assert fresh.restore([*latest.values(), journal[0].__class__(
        "gone", EventKind.activated, T0, AlarmStatus.unack, AlarmMode.in_service, True,
        Priority.low)]) == 2
    p, q = fresh.get("p:hi"), fresh.get("q:hi")
    assert (p.status, p.active, p.acked_by, p.activated_at) == (AlarmStatus.acked, True, "ivanov", T0)
    assert (q.mode, q.shelved_by, q.shelve_reason) == (AlarmMode.shelved, "petrov", "known fault")
    assert q.shelved_until == T0 + dt.timedelta(hours=8)


def test_events_round_trip_through_bus_messages() -> None:
    engine, clock, journal = make(HI)
    feed(engine, clock, "p", 6.0)
    engine.shelve("p:hi", "op", clock.now + dt.timedelta(hours=1), "why")
    for e in journal:
        assert AlarmEvent.from_message(e.to_message()) == e


def test_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="needs a limit"):
        AlarmDefinition("x", "x", AlarmKind.hi)
    with pytest.raises(ValueError, match="low < high"):
        AlarmDefinition("x", "x", AlarmKind.cp_window, low=-0.85, high=-1.15)
    with pytest.raises(ValueError, match="abnormal states"):
        AlarmDefinition("x", "x", AlarmKind.discrete)


def test_kpis_over_a_day_of_journal() -> None:
    from realtime.alarms.kpi import alarm_kpis

    defs = [AlarmDefinition(f"t{i}:hi", f"t{i}", AlarmKind.hi, limit=1.0, area_id="north",
                            priority=Priority.low if i < 8 else Priority.medium if i < 11
                            else Priority.high) for i in range(12)]
    engine, clock, journal = make(*defs)
    for i in range(12):  # a burst: 12 activations in 4 minutes -> a flood from the 11th
        feed(engine, clock, f"t{i}", 2.0)
        clock.advance(20)
    for _ in range(3):  # t0 is a bad actor: three more activations
        feed(engine, clock, "t0", 0.0)
        clock.advance(5)
        feed(engine, clock, "t0", 2.0)
        clock.advance(5)
    clock.advance(3600)
    engine.tick()  # the flood ends
    engine.shelve("t1:hi", "op", clock.now + dt.timedelta(hours=2), "known")
    clock.now = T0 + dt.timedelta(hours=30)
    k = alarm_kpis(journal, engine.snapshots(), T0, T0 + dt.timedelta(hours=24), operators=2)
    assert k.activations == 15 and k.per_operator_hour == pytest.approx(15 / 24 / 2)
    assert k.top[0] == ("t0:hi", 4) and len(k.top) == 10
    assert k.chattering == ("t0:hi",)
    flood = [e for e in journal if e.kind in (EventKind.flood_started, EventKind.flood_ended)]
    assert len(flood) == 2
    assert k.flood_time_pct == pytest.approx(
        100 * (flood[1].ts - flood[0].ts).total_seconds() / 86400)
    assert k.shelved == 1 and k.suppressed == 0
    assert k.by_priority[Priority.low] == 11 and k.by_priority[Priority.high] == 1
    assert sum(k.priority_pct.values()) == pytest.approx(100)
    later = alarm_kpis(journal, engine.snapshots(), T0, T0 + dt.timedelta(hours=25))
    assert "t2:hi" in later.stale and "t1:hi" not in later.stale  # t1 is shelved: normal
