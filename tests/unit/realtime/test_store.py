"""Tag store: deadband, change detection, the three timestamps, listeners, staleness."""

from __future__ import annotations

import datetime as dt

import pytest

from realtime.model import Deadband, DeadbandKind, Quality, TagDef, TagValue
from realtime.store import TagStore, UnknownTag

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, s: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=s)
        return self.now


def tv(value: float | None, q: Quality = Quality.GOOD, t: dt.datetime = T0) -> TagValue:
    return TagValue(value, q, t, t)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> TagStore:
    return TagStore([
        TagDef("station/GRP-01/p_out", unit="Pa", deadband=Deadband(DeadbandKind.absolute, 20.0),
               expected_period_s=10),
        TagDef("station/GRP-01/flow", unit="m3/h", deadband=Deadband(DeadbandKind.percent, 1.0),
               range_low=0, range_high=500),
        TagDef("station/GRP-01/door", data_type="bool"),
    ], clock=clock)


def test_absolute_deadband_and_timestamps(store: TagStore, clock: Clock) -> None:
    p = "station/GRP-01/p_out"
    assert store.update(p, tv(2800.0)) is not None
    clock.tick(1)
    assert store.update(p, tv(2815.0)) is None  # within 20 Pa
    s = store.get(p)
    assert s is not None and s.value.value == 2800.0
    assert s.last_reported == T0 + dt.timedelta(seconds=1) and s.last_changed == T0
    clock.tick(1)
    change = store.update(p, tv(2821.0))
    assert change is not None and change.old is not None and change.old.value == 2800.0
    assert store.get(p).last_changed == T0 + dt.timedelta(seconds=2)  # type: ignore[union-attr]


def test_percent_deadband_uses_the_span(store: TagStore) -> None:
    p = "station/GRP-01/flow"
    store.update(p, tv(100.0))
    assert store.update(p, tv(104.9)) is None  # 1 % of 500 = 5
    assert store.update(p, tv(105.1)) is not None


def test_quality_change_is_always_a_change(store: TagStore) -> None:
    p = "station/GRP-01/p_out"
    store.update(p, tv(2800.0))
    change = store.update(p, tv(2800.0, Quality.BAD_NOT_CONNECTED))
    assert change is not None and change.new.quality is Quality.BAD_NOT_CONNECTED
    marked = store.mark_quality([p], Quality.GOOD)
    assert [c.new.value for c in marked] == [2800.0]


def test_listeners_get_batches_and_can_unsubscribe(store: TagStore) -> None:
    got: list[list[str]] = []
    unsub = store.listen(lambda changes: got.append([c.path for c in changes]))
    store.update_many({"station/GRP-01/p_out": tv(1.0), "station/GRP-01/door": tv(True)})
    store.update_many({"station/GRP-01/door": tv(True)})  # identical: no notification
    unsub()
    store.update_many({"station/GRP-01/door": tv(False)})
    assert got == [["station/GRP-01/p_out", "station/GRP-01/door"]]


def test_a_failing_listener_does_not_stop_others(store: TagStore) -> None:
    got = []

    def bad(_: object) -> None:
        raise RuntimeError("boom")

    store.listen(bad)
    store.listen(lambda changes: got.extend(changes))
    store.update("station/GRP-01/door", tv(True))
    assert len(got) == 1


def test_unknown_tags_are_refused(store: TagStore) -> None:
    with pytest.raises(UnknownTag):
        store.update("station/NOPE/p", tv(1.0))


def test_stale_detection(store: TagStore, clock: Clock) -> None:
    assert store.stale() == ["station/GRP-01/p_out"]  # never reported
    store.update("station/GRP-01/p_out", tv(1.0))
    assert store.stale(clock.tick(29)) == []
    assert store.stale(clock.tick(2)) == ["station/GRP-01/p_out"]


def test_quality_codes() -> None:
    assert Quality.BAD_TIMEOUT.severity.name == "bad"
    assert Quality.UNCERTAIN_LAST_USABLE_VALUE.severity.name == "uncertain"
    assert Quality.GOOD_LOCAL_OVERRIDE.is_good
    assert Quality.from_status_code(0x80AB0123) is Quality.BAD  # unknown bad sub-code
    assert Quality.from_status_code(0x808A0000) is Quality.BAD_NOT_CONNECTED


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError):
        TagValue(1.0, Quality.GOOD, dt.datetime(2026, 1, 1), T0)


def test_silent_tags_turn_uncertain_through_the_pipeline(store: TagStore, clock: Clock) -> None:
    from realtime.broadcast import Broadcast
    from realtime.pipeline import Pipeline, decode_values

    bus = Broadcast()
    sub, unsub = bus.listen("tags")
    pipe = Pipeline(store, bus)
    pipe.on_values({"station/GRP-01/p_out": tv(2800.0)})
    assert pipe.mark_stale(clock.tick(20)) == []
    assert pipe.mark_stale(clock.tick(11)) == ["station/GRP-01/p_out"]
    assert pipe.mark_stale(clock.tick(1)) == []  # already uncertain: said once
    state = store.get("station/GRP-01/p_out")
    assert state is not None and state.value.quality is Quality.UNCERTAIN_LAST_USABLE_VALUE
    assert state.value.value == 2800.0
    messages = [decode_values(sub.queue.get_nowait()) for _ in range(sub.queue.qsize())]
    assert messages[-1]["station/GRP-01/p_out"].quality is Quality.UNCERTAIN_LAST_USABLE_VALUE
    unsub()
