"""The alarm engine against a reference ISA-18.2 transition table, driven by hypothesis.

Random sequences of process values, acknowledgements, resets, shelves, suppressions,
out-of-service and time steps go through a real `AlarmEngine` (one HI alarm on one tag); after
every step the engine's status, mode and condition must equal what the table below says. The
table is written out state by state, independently of `realtime.alarms.states`.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.alarms.engine import AlarmEngine, AlarmRefused
from realtime.alarms.model import AlarmDefinition, AlarmKind, AlarmMode, AlarmStatus, EventKind
from realtime.model import Quality, TagValue

N, U, A, R = AlarmStatus.normal, AlarmStatus.unack, AlarmStatus.acked, AlarmStatus.rtn_unack
IN, SH, SU, OOS = (AlarmMode.in_service, AlarmMode.shelved, AlarmMode.suppressed,
                   AlarmMode.out_of_service)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# In service: (status, condition event, latching) -> status
PROCESS = {
    (N, "on", False): U, (U, "on", False): U, (A, "on", False): A, (R, "on", False): U,
    (N, "off", False): N, (U, "off", False): R, (A, "off", False): N, (R, "off", False): R,
    (N, "on", True): U, (U, "on", True): U, (A, "on", True): A, (R, "on", True): U,
    (N, "off", True): N, (U, "off", True): U, (A, "off", True): A, (R, "off", True): R,
}
# In service: status -> status after acknowledge (absent: refused)
ACK = {U: A, R: N}
# mode -> mode after each mode action (absent: refused)
MODE = {
    "shelve": {IN: SH},
    "unshelve": {SH: IN},
    "suppress": {IN: SU, SH: SU},
    "unsuppress": {SU: IN},
    "oos": {IN: OOS, SH: OOS, SU: OOS},
    "rts": {OOS: IN},
}


class Reference:
    """The expected state, from the tables."""

    def __init__(self, latching: bool) -> None:
        self.latching = latching
        self.status, self.mode, self.active = N, IN, False
        self.shelf_expires: dt.datetime | None = None

    def process(self, on: bool) -> None:
        if on == self.active:
            return
        self.active = on
        if self.mode is IN:
            self.status = PROCESS[(self.status, "on" if on else "off", self.latching)]

    def ack(self) -> bool:
        if self.mode is not IN or self.status not in ACK:
            return False
        self.status = ACK[self.status]
        return True

    def reset(self) -> bool:
        if self.mode is not IN or not self.latching or self.active or self.status not in (U, A):
            return False
        self.status = N
        return True

    def mode_action(self, action: str) -> bool:
        new = MODE[action].get(self.mode)
        if new is None:
            return False
        self.mode = new
        # out of service the status is normal; back in service it shows the condition
        self.status = N if new is not IN else (U if self.active else N)
        return True


def _applied(events: list[object]) -> None:
    if not events:
        raise AlarmRefused("nothing to do")


_value = st.tuples(st.just("value"), st.sampled_from([0.0, 4.99, 5.0, 7.5]))
_ack = st.tuples(st.just("ack"), st.none())
# values and acknowledgements weighted up: they are what most transitions are made of
steps = st.lists(st.one_of(
    _value, _value, _value, _ack, _ack,
    st.tuples(st.sampled_from(["reset", "unshelve", "suppress", "unsuppress", "oos", "rts",
                               "comment"]), st.none()),
    st.tuples(st.just("shelve"), st.integers(1, 120)),  # minutes
    st.tuples(st.just("wait"), st.integers(1, 90)),  # minutes
    st.tuples(st.just("bad"), st.none()),
), max_size=80)


@settings(max_examples=1000, deadline=None)
@given(steps=steps, latching=st.booleans())
def test_every_state_matches_the_reference_table(steps: list[tuple[str, object]],
                                                 latching: bool) -> None:
    now = [T0]
    d = AlarmDefinition("t/p:hi", "t/p", AlarmKind.hi, limit=5.0, latching=latching,
                        asset_id="GRP-1")
    journal: list = []
    engine = AlarmEngine([d], clock=lambda: now[0], sink=journal.extend)
    ref = Reference(latching)
    for kind, arg in steps:
        ok = True
        if kind == "value":
            assert isinstance(arg, float)
            engine.on_values({"t/p": TagValue(arg, Quality.GOOD, now[0], now[0])})
            ref.process(arg >= 5.0)
        elif kind == "bad":  # bad quality tells nothing: the condition is kept
            engine.on_values({"t/p": TagValue(9.0, Quality.BAD_NOT_CONNECTED, now[0], now[0])})
        elif kind == "wait":
            assert isinstance(arg, int)
            now[0] += dt.timedelta(minutes=arg)
            engine.tick()
            if ref.mode is SH and ref.shelf_expires is not None and now[0] >= ref.shelf_expires:
                ref.mode_action("unshelve")
        else:
            action = {"ack": lambda: engine.acknowledge(d.id, "op"),
                      "reset": lambda: engine.reset(d.id, "op"),
                      "unshelve": lambda: engine.unshelve(d.id, "op"),
                      "suppress": lambda: _applied(engine.suppress("GRP-1", "wo-7", "repair")),
                      "unsuppress": lambda: _applied(engine.unsuppress("GRP-1", "wo-7")),
                      "oos": lambda: engine.remove_from_service(d.id, "op", "sensor broken"),
                      "rts": lambda: engine.return_to_service(d.id, "op"),
                      "comment": lambda: engine.comment(d.id, "op", "looked at it"),
                      "shelve": lambda m=arg: engine.shelve(
                          d.id, "op", now[0] + dt.timedelta(minutes=m), "nuisance")}[kind]
            try:
                action()
            except AlarmRefused:
                ok = False
            want = {"ack": ref.ack, "reset": ref.reset, "comment": lambda: True}.get(
                kind, lambda k=kind: ref.mode_action(k))()
            assert ok == want, (kind, ref.status, ref.mode)
            if kind == "shelve" and ok:
                ref.shelf_expires = now[0] + dt.timedelta(minutes=arg)  # type: ignore[operator]
        snap = engine.get(d.id)
        assert (snap.status, snap.mode, snap.active) == (ref.status, ref.mode, ref.active), (
            kind, arg)
        if journal:  # every event carries the state after it
            last = journal[-1]
            if last.alarm_id == d.id and last.kind is not EventKind.chattering:
                assert (last.status, last.mode, last.active) == (snap.status, snap.mode,
                                                                 snap.active)
