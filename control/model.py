"""Control command value types: targets, actions, the command and its events.

A command moves through: selected (the target is reserved for its user for a short time, the
checks and the predicted impact are known) → [awaiting_approval → approved, when a second person
must agree] → operating (written to the device) → succeeded (the device reports the new state)
| failed (with the reason); or cancelled / expired at any point before operating.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Action", "Command", "CommandEvent", "CommandState", "Impact", "Operator", "Target",
           "TargetKind", "WritePlan", "COMMANDS_TOPIC"]

COMMANDS_TOPIC = "commands"  # the bus topic of command events


class TargetKind(StrEnum):
    """What can be commanded."""

    valve = "valve"  # a smart (remotely operable) line valve
    skz = "skz"  # a cathodic-protection station (rectifier)
    station = "station"  # a regulating station's outlet set-point
    meter = "meter"  # a smart meter's shut-off valve


class Action(StrEnum):
    """What a command does."""

    open = "open"
    close = "close"
    set_position = "set_position"  # % open, 0..100
    set_skz_mode = "set_skz_mode"  # 0 constant current, 1 constant voltage, 2 auto potential, 3 off
    set_skz_setpoint = "set_skz_setpoint"  # V vs CSE (auto potential), A or V in the other modes
    set_outlet_setpoint = "set_outlet_setpoint"  # Pa gauge


ACTIONS_OF: dict[TargetKind, frozenset[Action]] = {
    TargetKind.valve: frozenset({Action.open, Action.close, Action.set_position}),
    TargetKind.skz: frozenset({Action.set_skz_mode, Action.set_skz_setpoint}),
    # a regulating station: its outlet set-point, and its outlet shut-off valve
    TargetKind.station: frozenset({Action.set_outlet_setpoint, Action.open, Action.close,
                                   Action.set_position}),
    TargetKind.meter: frozenset({Action.open, Action.close}),
}


class CommandState(StrEnum):
    """Where a command stands."""

    selected = "selected"
    awaiting_approval = "awaiting_approval"
    approved = "approved"
    operating = "operating"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    expired = "expired"

    @property
    def open(self) -> bool:
        """Whether the command still holds its target."""
        return self in (CommandState.selected, CommandState.awaiting_approval,
                        CommandState.approved, CommandState.operating)


@dataclass(frozen=True, slots=True)
class Operator:
    """Who acts: user name, role and areas (None = all)."""

    user: str
    role: str
    areas: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Target:
    """A commandable asset as the control side needs it."""

    kind: TargetKind
    asset_id: str
    area_id: str | None
    remotely_operable: bool = True
    rated_current_a: float | None = None  # SKZ
    rated_voltage_v: float | None = None  # SKZ
    setpoint_range_pa: tuple[float, float] | None = None  # station: the outlet level's band


@dataclass(frozen=True, slots=True)
class WritePlan:
    """How a command reaches the device: the tag written, the value, and how it reads back."""

    tag: str
    value: float | int | bool
    readback_tag: str
    tolerance: float = 0.0  # |read - value| <= tolerance counts as reached


@dataclass(frozen=True, slots=True)
class Impact:
    """What the action is predicted to do to consumers."""

    consumers_cut_off: int = 0
    critical_cut_off: tuple[str, ...] = ()  # service point ids (hospitals, boiler houses…)
    min_critical_pressure_pa: float | None = None  # gauge, when a hydraulic model tells
    method: str = "none"  # "graph" (connectivity) or "hydraulic" (the twin)
    detail: str = ""


@dataclass
class Command:
    """One command and everything decided about it."""

    id: str
    target: Target
    action: Action
    value: float | None
    reason: str
    selected_by: Operator
    selected_at: dt.datetime
    expires_at: dt.datetime
    plan: WritePlan
    impact: Impact
    state: CommandState = CommandState.selected
    needs_approval: bool = False
    needs_override: bool = False
    approved_by: str | None = None
    approval_reason: str = ""
    outcome: str = ""  # why it failed, was cancelled or expired; what was read back
    finished_at: dt.datetime | None = None
    checks: list[str] = field(default_factory=list)  # the rules passed, in order

    def summary(self) -> dict[str, Any]:
        """A JSON-able view (bus messages, audit, OPC UA method results)."""
        return {"id": self.id, "target": {"kind": self.target.kind.value,
                                          "asset_id": self.target.asset_id,
                                          "area_id": self.target.area_id},
                "action": self.action.value, "value": self.value, "reason": self.reason,
                "user": self.selected_by.user, "state": self.state.value,
                "selected_at": self.selected_at.isoformat(),
                "expires_at": self.expires_at.isoformat(),
                "needs_approval": self.needs_approval, "needs_override": self.needs_override,
                "approved_by": self.approved_by, "outcome": self.outcome,
                "impact": {"consumers_cut_off": self.impact.consumers_cut_off,
                           "critical_cut_off": list(self.impact.critical_cut_off),
                           "min_critical_pressure_pa": self.impact.min_critical_pressure_pa,
                           "method": self.impact.method},
                "checks": list(self.checks)}

    def snapshot(self) -> dict[str, Any]:
        """Everything about the command as a flat dict of plain values (datetimes kept), in the
        shape of the command history (`erp.services.commands`; the server adds the step's time
        and name)."""
        return {"id": self.id, "target_kind": self.target.kind.value,
                "asset_id": self.target.asset_id, "area_id": self.target.area_id,
                "action": self.action.value, "value": self.value, "reason": self.reason,
                "requested_by": self.selected_by.user, "requested_role": self.selected_by.role,
                "approved_by": self.approved_by, "approval_reason": self.approval_reason,
                "state": self.state.value, "outcome": self.outcome,
                "needs_approval": self.needs_approval, "needs_override": self.needs_override,
                "checks": list(self.checks),
                "impact": {"consumers_cut_off": self.impact.consumers_cut_off,
                           "critical_cut_off": list(self.impact.critical_cut_off),
                           "min_critical_pressure_pa": self.impact.min_critical_pressure_pa,
                           "method": self.impact.method, "detail": self.impact.detail},
                "created_at": self.selected_at, "expires_at": self.expires_at,
                "finished_at": self.finished_at}


@dataclass(frozen=True, slots=True)
class CommandEvent:
    """One step of a command, as audited and published (`step` names it)."""

    command_id: str
    step: str  # selected, approved, operate, written, succeeded, failed, cancelled, expired, refused
    ts: dt.datetime
    user: str | None
    role: str | None
    state: CommandState | None
    target_kind: str
    asset_id: str
    area_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_message(self) -> dict[str, Any]:
        """The JSON-able bus message."""
        return {"type": "command", "command_id": self.command_id, "step": self.step,
                "ts": self.ts.isoformat(), "user": self.user, "role": self.role,
                "state": self.state.value if self.state else None,
                "target_kind": self.target_kind, "asset_id": self.asset_id,
                "area_id": self.area_id, "detail": self.detail}
