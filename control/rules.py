"""The checks a command must pass, as data: named rules with priorities and clear refusals.

Each rule looks at a `CheckContext` (who, what, on which target, its live status, the
predicted impact, recent commands) and returns None (passed) or the refusal message. Rules run
in priority order; the first refusal ends the command. The same rules run again just before the
write, because the target may have changed since the select (lost communication, locked out).

Which roles may operate, approve and override is data too (`ControlPolicy`), so a utility can
change it without touching code; the defaults follow the platform's roles.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from control.model import ACTIONS_OF, Action, Impact, Operator, Target, TargetKind, WritePlan

__all__ = ["DEFAULT_RULES", "CheckContext", "ControlPolicy", "Rule", "TargetStatus"]


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """The live state of a target: can we reach it and trust what it says?"""

    communicating: bool
    quality_good: bool
    detail: str = ""
    readings: Mapping[str, float] = field(default_factory=dict)
    """Live values the limits look at, by tag name (an SKZ's `i_out`, `u_out`, `setpoint`)."""


@dataclass(frozen=True, slots=True)
class ControlPolicy:
    """Who may do what, and what counts as high impact."""

    operate_roles: frozenset[str] = frozenset({"admin", "dispatcher", "operator"})
    approve_roles: frozenset[str] = frozenset({"admin", "dispatcher", "engineer"})
    override_roles: frozenset[str] = frozenset({"admin", "dispatcher"})
    high_impact_consumers: int = 50  # this many cut off (or any critical) needs a second person
    max_commands_per_target: int = 3  # within rate_window
    rate_window: dt.timedelta = dt.timedelta(minutes=10)
    skz_setpoint_range_v: tuple[float, float] = (-3.0, 0.0)  # automatic potential, vs CSE
    skz_modes: frozenset[int] = frozenset({0, 1, 2, 3})
    skz_headroom: float = 0.95  # share of the rating above which no more output is asked for


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What the rules look at."""

    operator: Operator
    target: Target
    action: Action
    value: float | None
    plan: WritePlan
    impact: Impact
    status: TargetStatus
    lockout: str | None  # why the target is locked out (maintenance), or None
    recent_commands: int  # commands on this target within the policy's window
    policy: ControlPolicy
    now: dt.datetime


@dataclass(frozen=True, slots=True)
class Rule:
    """One check: lower priority numbers run first."""

    name: str
    priority: int
    check: Callable[[CheckContext], str | None] = field(repr=False)


def _role(c: CheckContext) -> str | None:
    if c.operator.role not in c.policy.operate_roles:
        return f"role {c.operator.role!r} may not operate equipment"
    return None


def _area(c: CheckContext) -> str | None:
    areas = c.operator.areas
    if areas is not None and c.target.area_id not in areas:
        return f"{c.target.kind.value} {c.target.asset_id} is outside your areas"
    return None


def _action_fits(c: CheckContext) -> str | None:
    if c.action not in ACTIONS_OF[c.target.kind]:
        return f"a {c.target.kind.value} cannot {c.action.value.replace('_', ' ')}"
    return None


def _remote(c: CheckContext) -> str | None:
    if not c.target.remotely_operable:
        return f"{c.target.kind.value} {c.target.asset_id} is not remotely operable"
    return None


def _actuator(c: CheckContext) -> str | None:
    """A valve actuator whose selector is not in REMOTE ignores every command (it would end
    only at the read-back timeout), and one in fault will not move: say so at select."""
    if c.target.kind is not TargetKind.valve:
        return None
    r = c.status.readings
    if r.get("remote") == 0.0:
        return (f"the actuator of {c.target.asset_id} is in LOCAL (or OFF): its selector must be "
                f"in REMOTE for a command from here")
    if r.get("fault") == 1.0:
        return f"the actuator of {c.target.asset_id} reports a fault: it will not move"
    return None


def _communicating(c: CheckContext) -> str | None:
    if not c.status.communicating:
        return f"{c.target.asset_id} is not communicating{': ' + c.status.detail if c.status.detail else ''}"
    if not c.status.quality_good:
        return f"{c.target.asset_id} reports values of bad or uncertain quality"
    return None


def _lockout(c: CheckContext) -> str | None:
    return f"{c.target.asset_id} is locked out: {c.lockout}" if c.lockout else None


def _rate(c: CheckContext) -> str | None:
    if c.recent_commands >= c.policy.max_commands_per_target:
        minutes = c.policy.rate_window.total_seconds() / 60
        return (f"{c.target.asset_id} had {c.recent_commands} commands in the last "
                f"{minutes:.0f} min: wait before commanding it again")
    return None


def _limits(c: CheckContext) -> str | None:
    v, t = c.value, c.target
    if c.action in (Action.set_position, Action.set_skz_mode, Action.set_skz_setpoint,
                    Action.set_outlet_setpoint) and v is None:
        return f"{c.action.value.replace('_', ' ')} needs a value"
    if c.action is Action.set_position and v is not None and not 0.0 <= v <= 100.0:
        return f"position {v} % is outside 0…100 %"
    if c.action is Action.set_skz_mode and v is not None and int(v) not in c.policy.skz_modes:
        return f"SKZ mode {v} is unknown (0 current, 1 voltage, 2 auto potential, 3 off)"
    if c.action is Action.set_skz_setpoint and v is not None:
        lo, hi = c.policy.skz_setpoint_range_v
        if not lo <= v <= hi:
            return f"SKZ potential set-point {v} V is outside {lo}…{hi} V vs CSE"
    if c.action is Action.set_outlet_setpoint and v is not None and t.setpoint_range_pa:
        lo, hi = t.setpoint_range_pa
        if not lo <= v <= hi:
            return (f"outlet set-point {v:.0f} Pa is outside the pressure level's band "
                    f"{lo:.0f}…{hi:.0f} Pa")
    return None


def _ratings(c: CheckContext) -> str | None:
    """An SKZ rectifier at (or over) its rated current or voltage gets no command that asks
    for more output: a more negative potential set-point, or a regulating mode while
    overloaded. Switching it off, or a less negative set-point, is always allowed."""
    t = c.target
    if t.kind is not TargetKind.skz:
        return None
    r = c.status.readings
    i, u, sp0 = r.get("i_out"), r.get("u_out"), r.get("setpoint")
    loads = [(x, rated, unit) for x, rated, unit in ((i, t.rated_current_a, "A"),
                                                     (u, t.rated_voltage_v, "V"))
             if x is not None and rated]
    over = [f"{x:.1f} {unit} of its rated {rated:g} {unit}" for x, rated, unit in loads if x > rated]
    near = [f"{x:.1f} {unit} of its rated {rated:g} {unit}" for x, rated, unit in loads
            if x >= c.policy.skz_headroom * rated]
    if (c.action is Action.set_skz_setpoint and c.value is not None and sp0 is not None
            and c.value < sp0 and near):
        return (f"{t.asset_id} already delivers {' and '.join(near)}: a more negative set-point "
                f"({c.value} V < {sp0} V) would overload it")
    if c.action is Action.set_skz_mode and c.value is not None and int(c.value) != 3 and over:
        return (f"{t.asset_id} delivers {' and '.join(over)}, above its rating: switch it off "
                f"(mode 3) or lower its set-point first")
    return None


def _critical(c: CheckContext) -> str | None:
    if c.impact.critical_cut_off and c.operator.role not in c.policy.override_roles:
        names = ", ".join(c.impact.critical_cut_off[:5])
        return (f"this would cut off critical consumers ({names}): only an emergency override "
                f"role ({', '.join(sorted(c.policy.override_roles))}) may do it")
    return None


DEFAULT_RULES: Sequence[Rule] = (
    Rule("role", 10, _role),
    Rule("area", 20, _area),
    Rule("action", 30, _action_fits),
    Rule("remote", 40, _remote),
    Rule("communication", 50, _communicating),
    Rule("actuator", 55, _actuator),
    Rule("lockout", 60, _lockout),
    Rule("rate", 70, _rate),
    Rule("limits", 80, _limits),
    Rule("ratings", 85, _ratings),
    Rule("critical_consumers", 90, _critical),
)


def needs_approval(impact: Impact, policy: ControlPolicy) -> bool:
    """Whether a second person must approve (four-eyes)."""
    return bool(impact.critical_cut_off) or impact.consumers_cut_off >= policy.high_impact_consumers


def standard_plan(target: Target, action: Action, value: float | None) -> WritePlan:
    """The tag written and read back for an action, by the platform's tag naming."""
    a = target.asset_id
    if target.kind in (TargetKind.valve, TargetKind.meter):
        tag = f"{target.kind.value}/{a}/position"
        pos = 100.0 if action is Action.open else 0.0 if action is Action.close else float(value or 0)
        return WritePlan(tag, pos, tag, tolerance=2.0)
    if target.kind is TargetKind.skz:
        if action is Action.set_skz_mode:
            return WritePlan(f"skz/{a}/mode", int(value or 0), f"skz/{a}/mode")
        return WritePlan(f"skz/{a}/setpoint", float(value or 0), f"skz/{a}/setpoint", 0.005)
    if action is Action.set_outlet_setpoint:
        return WritePlan(f"station/{a}/p_out_sp", float(value or 0), f"station/{a}/p_out_sp", 1.0)
    tag = f"station/{a}/valve_pos"  # the station's outlet valve
    pos = 100.0 if action is Action.open else 0.0 if action is Action.close else float(value or 0)
    return WritePlan(tag, pos, tag, tolerance=2.0)
