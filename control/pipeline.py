"""The command pipeline: select → [approve] → operate → write → read-back, or cancel.

- `select` checks the rules, predicts the impact, and reserves the target for its user for
  `select_ttl` (30 s): nobody else can command it meanwhile. A high-impact command waits for a
  second person's approval (four-eyes), which renews the reservation.
- `operate` (same user, before expiry, approved if needed) runs the rules again, writes through
  the `Writer` port and waits for the read-back through the `Readback` port; the command ends
  succeeded, or failed with the reason (the device refused the write, or never reported the
  new state).
- `cancel` ends an open command before it operates.

Every step — refusals included — becomes a `CommandEvent` handed to `sink`, which the server
audits and publishes. Commands run in the server process itself with bounded latency, never
through a job queue. Time comes from the injected clock; `tick` expires stale selections.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import secrets
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from typing import Protocol

from control.impact import ImpactPredictor
from control.model import (
    Action,
    Command,
    CommandEvent,
    CommandState,
    Operator,
    Target,
    TargetKind,
    WritePlan,
)
from control.rules import (
    DEFAULT_RULES,
    CheckContext,
    ControlPolicy,
    Rule,
    TargetStatus,
    needs_approval,
    standard_plan,
)

__all__ = ["CommandPipeline", "CommandRefused", "Readback", "TargetDirectory", "TargetStatusPort",
           "Writer"]

log = logging.getLogger(__name__)


class CommandRefused(Exception):
    """A step that may not happen; `rule` names the check (or the pipeline's own reason)."""

    def __init__(self, message: str, rule: str = "pipeline") -> None:
        super().__init__(message)
        self.rule = rule


class TargetDirectory(Protocol):
    """Commandable assets, from the registry."""

    def target(self, kind: TargetKind, asset_id: str) -> Target | None: ...


class TargetStatusPort(Protocol):
    """Live status of a target (communication, quality), from the tag store."""

    def status(self, target: Target, plan: WritePlan) -> TargetStatus: ...


class Writer(Protocol):
    """Writes a tag to its device (raises when the device or driver refuses)."""

    async def write(self, tag: str, value: float | int | bool) -> None: ...


class Readback(Protocol):
    """Waits until `tag` reads a value within `tolerance` of `value`; returns the value read, or
    None after `timeout_s` (with the last value seen, if any, in the second element)."""

    async def wait_for(self, tag: str, value: float, tolerance: float,
                       timeout_s: float) -> tuple[bool, object]: ...


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CommandPipeline:
    """All commands of one server (see the module docstring)."""

    def __init__(self, *, targets: TargetDirectory, status: TargetStatusPort,
                 impact: ImpactPredictor, writer: Writer, readback: Readback,
                 sink: Callable[[CommandEvent], None] | None = None,
                 rules: Sequence[Rule] = DEFAULT_RULES, policy: ControlPolicy | None = None,
                 clock: Callable[[], dt.datetime] = _utcnow,
                 plan: Callable[[Target, Action, float | None], WritePlan] = standard_plan,
                 select_ttl_s: float = 30.0, approval_ttl_s: float = 600.0,
                 readback_timeout_s: float = 30.0) -> None:
        self._targets = targets
        self._status = status
        self._impact = impact
        self._writer = writer
        self._readback = readback
        self.sink = sink
        self._rules = sorted(rules, key=lambda r: r.priority)
        self.policy = policy or ControlPolicy()
        self._clock = clock
        self._plan = plan
        self._select_ttl = dt.timedelta(seconds=select_ttl_s)
        self._approval_ttl = dt.timedelta(seconds=approval_ttl_s)
        self._readback_timeout_s = readback_timeout_s
        self._commands: dict[str, Command] = {}
        self._holding: dict[tuple[TargetKind, str], str] = {}  # target → its open command
        self._recent: dict[tuple[TargetKind, str], deque[dt.datetime]] = defaultdict(deque)
        self._lockouts: dict[tuple[TargetKind, str], str] = {}
        self._ids = itertools.count(1)
        # ids must not repeat across processes and restarts (the command history keys on them)
        self._instance = secrets.token_hex(3)

    # ------------------------------------------------------------------ lockouts (maintenance)

    def lock_out(self, kind: TargetKind, asset_id: str, reason: str) -> None:
        """No command may reach this target until `release` (work orders call this)."""
        self._lockouts[(kind, asset_id)] = reason

    def release(self, kind: TargetKind, asset_id: str) -> None:
        """End a lockout."""
        self._lockouts.pop((kind, asset_id), None)

    def lockout(self, kind: TargetKind, asset_id: str) -> str | None:
        """Why the target is locked out, or None."""
        return self._lockouts.get((kind, asset_id))

    def target(self, kind: TargetKind, asset_id: str) -> Target | None:
        """A commandable target (from the directory port)."""
        return self._targets.target(kind, asset_id)

    # ------------------------------------------------------------------ steps

    async def select(self, operator: Operator, kind: TargetKind, asset_id: str, action: Action,
                     value: float | None, reason: str) -> Command:
        """Check, predict and reserve; refused with `CommandRefused`."""
        now = self._clock()
        self.tick(now)
        target = self._targets.target(kind, asset_id)
        if target is None:
            raise self._refuse(operator, None, kind, asset_id, "target",
                               f"no {kind.value} {asset_id!r}")
        if not reason.strip():
            raise self._refuse(operator, target, kind, asset_id, "reason",
                               "a command needs a reason")
        holder = self._holding.get((kind, asset_id))
        if holder is not None:
            other = self._commands[holder]
            raise self._refuse(operator, target, kind, asset_id, "reserved",
                               f"{asset_id} is reserved by {other.selected_by.user} "
                               f"until {other.expires_at:%H:%M:%S} UTC")
        try:
            plan = self._plan(target, action, value)
        except (TypeError, ValueError) as exc:
            raise self._refuse(operator, target, kind, asset_id, "action", str(exc)) from None
        impact = await self._impact.predict(target, action, value)
        ctx = self._context(operator, target, action, value, plan, impact, now)
        passed = self._run_rules(ctx, operator, target)
        approval = needs_approval(impact, self.policy)
        cmd = Command(
            id=f"CMD-{now:%Y%m%d%H%M%S}-{self._instance}-{next(self._ids)}", target=target,
            action=action, value=value, reason=reason, selected_by=operator, selected_at=now,
            expires_at=now + (self._approval_ttl if approval else self._select_ttl), plan=plan,
            impact=impact, state=CommandState.awaiting_approval if approval else CommandState.selected,
            needs_approval=approval, needs_override=bool(impact.critical_cut_off), checks=passed)
        self._commands[cmd.id] = cmd
        self._holding[(kind, asset_id)] = cmd.id
        self._recent[(kind, asset_id)].append(now)
        self._emit(cmd, "selected", operator, {"summary": cmd.summary()})
        return cmd

    def approve(self, operator: Operator, command_id: str, reason: str) -> Command:
        """The second person agrees; the reservation is renewed for the operator to act."""
        now = self._clock()
        self.tick(now)
        cmd = self._open(command_id, operator)
        if cmd.state is not CommandState.awaiting_approval:
            raise self._refuse_cmd(cmd, operator, "approval", f"{cmd.id} needs no approval now "
                                   f"({cmd.state.value})")
        if operator.user == cmd.selected_by.user:
            raise self._refuse_cmd(cmd, operator, "four_eyes",
                                   "the approval must come from a second person")
        if operator.role not in self.policy.approve_roles:
            raise self._refuse_cmd(cmd, operator, "approval",
                                   f"role {operator.role!r} may not approve commands")
        if operator.areas is not None and cmd.target.area_id not in operator.areas:
            raise self._refuse_cmd(cmd, operator, "area", f"{cmd.target.asset_id} is outside "
                                   "your areas")
        if not reason.strip():
            raise self._refuse_cmd(cmd, operator, "approval", "an approval needs a reason")
        cmd.state, cmd.approved_by, cmd.approval_reason = CommandState.approved, operator.user, reason
        cmd.expires_at = now + self._select_ttl
        self._emit(cmd, "approved", operator, {"reason": reason})
        return cmd

    async def operate(self, operator: Operator, command_id: str) -> Command:
        """Write and read back; returns the finished command (succeeded or failed)."""
        now = self._clock()
        self.tick(now)
        cmd = self._open(command_id, operator)
        if operator.user != cmd.selected_by.user:
            raise self._refuse_cmd(cmd, operator, "owner", f"{cmd.id} was selected by "
                                   f"{cmd.selected_by.user}: only they may operate it")
        if cmd.state is CommandState.awaiting_approval:
            raise self._refuse_cmd(cmd, operator, "four_eyes",
                                   f"{cmd.id} needs a second person's approval first")
        if cmd.state not in (CommandState.selected, CommandState.approved):
            raise self._refuse_cmd(cmd, operator, "state", f"{cmd.id} is {cmd.state.value}")
        ctx = self._context(operator, cmd.target, cmd.action, cmd.value, cmd.plan, cmd.impact,
                            now, recheck=True)
        self._run_rules(ctx, operator, cmd.target, cmd)
        cmd.state = CommandState.operating
        self._emit(cmd, "operate", operator, {})
        try:
            await self._writer.write(cmd.plan.tag, cmd.plan.value)
        except Exception as exc:  # noqa: BLE001 - whatever the device said is the reason
            return self._finish(cmd, CommandState.failed, f"the device refused the write: {exc}",
                                operator)
        self._emit(cmd, "written", operator, {"tag": cmd.plan.tag, "value": cmd.plan.value})
        reached, seen = await self._readback.wait_for(
            cmd.plan.readback_tag, float(cmd.plan.value), cmd.plan.tolerance,
            self._readback_timeout_s)
        if reached:
            return self._finish(cmd, CommandState.succeeded, f"read back {seen}", operator)
        return self._finish(cmd, CommandState.failed, f"no read-back of {cmd.plan.value} within "
                            f"{self._readback_timeout_s:.0f} s (last value {seen})", operator)

    def cancel(self, operator: Operator, command_id: str, reason: str = "") -> Command:
        """End an open command that has not started operating (its selector, an approver, or a
        dispatcher may)."""
        now = self._clock()
        self.tick(now)
        cmd = self._open(command_id, operator)
        allowed = (operator.user == cmd.selected_by.user
                   or operator.role in self.policy.override_roles)
        if not allowed:
            raise self._refuse_cmd(cmd, operator, "owner", f"{cmd.id} was selected by "
                                   f"{cmd.selected_by.user}")
        if cmd.state is CommandState.operating:
            raise self._refuse_cmd(cmd, operator, "state", f"{cmd.id} is already operating")
        return self._finish(cmd, CommandState.cancelled, reason or "cancelled", operator)

    def tick(self, now: dt.datetime | None = None) -> list[Command]:
        """Expire selections whose time ran out; returns them."""
        now = now or self._clock()
        expired = [self._commands[c] for c in list(self._holding.values())
                   if self._commands[c].state is not CommandState.operating
                   and self._commands[c].expires_at <= now]
        for cmd in expired:
            self._finish(cmd, CommandState.expired, "the selection expired", None, now)
        return expired

    # ------------------------------------------------------------------ queries

    def get(self, command_id: str) -> Command | None:
        """A command by id."""
        return self._commands.get(command_id)

    def commands(self) -> list[Command]:
        """Every command of this process, oldest first."""
        return list(self._commands.values())

    # ------------------------------------------------------------------ internals

    def _open(self, command_id: str, operator: Operator) -> Command:
        cmd = self._commands.get(command_id)
        if cmd is None:
            message = f"no command {command_id!r}"
            self._send(CommandEvent(command_id, "refused", self._clock(), operator.user,
                                    operator.role, None, "", "", None,
                                    {"rule": "unknown", "message": message}))
            raise CommandRefused(message, "unknown")
        if not cmd.state.open:
            raise self._refuse_cmd(cmd, operator, "state", f"{cmd.id} is {cmd.state.value}")
        return cmd

    def _context(self, operator: Operator, target: Target, action: Action, value: float | None,
                 plan: WritePlan, impact: object, now: dt.datetime,
                 recheck: bool = False) -> CheckContext:
        key = (target.kind, target.asset_id)
        window = self._recent[key]
        while window and now - window[0] > self.policy.rate_window:
            window.popleft()
        return CheckContext(operator=operator, target=target, action=action, value=value,
                            plan=plan, impact=impact,  # type: ignore[arg-type]
                            status=self._status.status(target, plan),
                            lockout=self._lockouts.get(key),
                            recent_commands=len(window) - (1 if recheck else 0),
                            policy=self.policy, now=now)

    def _run_rules(self, ctx: CheckContext, operator: Operator, target: Target,
                   cmd: Command | None = None) -> list[str]:
        passed = []
        for rule in self._rules:
            message = rule.check(ctx)
            if message is not None:
                if cmd is not None:
                    raise self._refuse_cmd(cmd, operator, rule.name, message)
                raise self._refuse(operator, target, target.kind, target.asset_id, rule.name,
                                   message)
            passed.append(rule.name)
        return passed

    def _finish(self, cmd: Command, state: CommandState, outcome: str, operator: Operator | None,
                now: dt.datetime | None = None) -> Command:
        cmd.state, cmd.outcome, cmd.finished_at = state, outcome, now or self._clock()
        self._holding.pop((cmd.target.kind, cmd.target.asset_id), None)
        self._emit(cmd, state.value, operator, {"outcome": outcome})
        return cmd

    def _refuse(self, operator: Operator, target: Target | None, kind: TargetKind, asset_id: str,
                rule: str, message: str) -> CommandRefused:
        self._send(CommandEvent("", "refused", self._clock(), operator.user, operator.role, None,
                                kind.value, asset_id, target.area_id if target else None,
                                {"rule": rule, "message": message}))
        return CommandRefused(message, rule)

    def _refuse_cmd(self, cmd: Command, operator: Operator, rule: str,
                    message: str) -> CommandRefused:
        self._emit(cmd, "refused", operator, {"rule": rule, "message": message})
        return CommandRefused(message, rule)

    def _emit(self, cmd: Command, step: str, operator: Operator | None,
              detail: dict[str, object]) -> None:
        self._send(CommandEvent(cmd.id, step, self._clock(), operator.user if operator else None,
                                operator.role if operator else None, cmd.state,
                                cmd.target.kind.value, cmd.target.asset_id, cmd.target.area_id,
                                dict(detail)))

    def _send(self, event: CommandEvent) -> None:
        if self.sink is not None:
            try:
                self.sink(event)
            except Exception:  # the pipeline must go on; the sink logs its own trouble
                log.exception("command sink failed for %s %s", event.command_id, event.step)
