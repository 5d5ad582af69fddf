"""The ISA-18.2 / IEC 62682 alarm state machine, as one pure function.

In service (the operator sees the status):

    normal ──condition on──▶ unack ──ack──▶ acked ──condition off──▶ normal
                              │                 (latching: stays acked until reset)
                              └──condition off──▶ rtn_unack ──ack──▶ normal
                                 (latching: stays unack)   └──condition on──▶ unack

Latching alarms keep their status after the condition clears; `reset` (allowed once the
condition is gone) returns them to normal. Shelved, suppressed-by-design and out-of-service
alarms are not annunciated: the condition is still tracked, the status stays normal, and when
the alarm returns to service it shows the condition as it is then (active → unack).

Refused actions (acknowledging a normal alarm, shelving a shelved one…) return None; the engine
turns that into a clear refusal for the operator. Process actions (on/off) are never refused.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from realtime.alarms.model import AlarmMode, AlarmStatus

__all__ = ["Action", "State", "transition"]

_IN = AlarmMode.in_service
N, U, A, R = AlarmStatus.normal, AlarmStatus.unack, AlarmStatus.acked, AlarmStatus.rtn_unack


class Action(StrEnum):
    """What can happen to an alarm."""

    on = "on"  # the condition became active (after delays and deadband)
    off = "off"  # the condition cleared
    ack = "ack"
    reset = "reset"
    shelve = "shelve"
    unshelve = "unshelve"  # by the operator or the shelf's expiry
    suppress = "suppress"
    unsuppress = "unsuppress"
    remove_from_service = "remove_from_service"
    return_to_service = "return_to_service"


class State(NamedTuple):
    """An alarm's state: its status, its mode and whether its condition is active."""

    status: AlarmStatus
    mode: AlarmMode
    active: bool


def transition(state: State, action: Action, latching: bool = False) -> State | None:
    """The state after `action`, or None when the action does not apply in `state`."""
    status, mode, active = state
    if action is Action.on or action is Action.off:
        now_active = action is Action.on
        if mode is not _IN:
            return State(N, mode, now_active)
        if now_active:
            return State(U if status in (N, R) else status, mode, True)
        if latching:
            return State(status, mode, False)
        return State(R if status is U else N if status is A else status, mode, False)
    if action is Action.ack:
        if mode is not _IN or status not in (U, R):
            return None
        return State(N if status is R else A, mode, active)
    if action is Action.reset:
        if mode is not _IN or not latching or active or status not in (U, A):
            return None
        return State(N, mode, active)
    back = State(U if active else N, _IN, active)  # returning to service shows the condition
    if action is Action.shelve:
        return State(N, AlarmMode.shelved, active) if mode is _IN else None
    if action is Action.unshelve:
        return back if mode is AlarmMode.shelved else None
    if action is Action.suppress:
        return State(N, AlarmMode.suppressed, active) if mode in (_IN, AlarmMode.shelved) else None
    if action is Action.unsuppress:
        return back if mode is AlarmMode.suppressed else None
    if action is Action.remove_from_service:
        return State(N, AlarmMode.out_of_service, active) if mode is not (
            AlarmMode.out_of_service) else None
    if action is Action.return_to_service:
        return back if mode is AlarmMode.out_of_service else None
    raise ValueError(f"unknown alarm action {action!r}")
