"""Commands over GraphQL: select, approve, operate, cancel; the command list; the live
`commandEvents` feed. Resolvers are thin over the server's `CommandPipeline`
(`services.control`), which checks the rules, audits every step and publishes it, and over the
command history (`erp.services.commands`), which every server process can read."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from control.model import COMMANDS_TOPIC, Action, Command, Operator, TargetKind
from control.pipeline import CommandPipeline, CommandRefused
from erp.services import audit
from erp.services import commands as history
from schema.context import Context
from schema.errors import Forbidden
from schema.permissions import Can, actor_of, refusal

if TYPE_CHECKING:  # resolvers get sessions from the server's factory; they never build one
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["COMMAND_MUTATIONS", "CommandQuery", "CommandSubscription"]

# A finished command of this process stays in the list's overlay this long: its last step may
# still wait in the outbox to reach the history.
_RECENTLY_FINISHED = dt.timedelta(minutes=5)


@strawberry.type(description="The predicted effect of a command on consumers.")
class CommandImpact:
    consumers_cut_off: int
    critical_cut_off: list[str]
    min_critical_pressure_pa: float | None = strawberry.field(
        description="Gauge; only when a hydraulic model predicted it")
    method: str = strawberry.field(description="graph (connectivity) or hydraulic (the twin)")


@strawberry.type(description="A control command and where it stands.")
class CommandView:
    id: str
    target_kind: str
    asset_id: str
    area_id: str | None
    action: str
    value: float | None
    reason: str
    user: str
    state: str = strawberry.field(description="selected, awaiting_approval, approved, operating, "
                                              "succeeded, failed, cancelled, expired")
    selected_at: dt.datetime
    expires_at: dt.datetime
    needs_approval: bool
    needs_override: bool
    approved_by: str | None
    outcome: str
    checks: list[str]
    impact: CommandImpact


def _view(c: Command) -> CommandView:
    return CommandView(id=c.id, target_kind=c.target.kind.value, asset_id=c.target.asset_id,
                       area_id=c.target.area_id, action=c.action.value, value=c.value,
                       reason=c.reason, user=c.selected_by.user, state=c.state.value,
                       selected_at=c.selected_at, expires_at=c.expires_at,
                       needs_approval=c.needs_approval, needs_override=c.needs_override,
                       approved_by=c.approved_by, outcome=c.outcome, checks=list(c.checks),
                       impact=CommandImpact(consumers_cut_off=c.impact.consumers_cut_off,
                                            critical_cut_off=list(c.impact.critical_cut_off),
                                            min_critical_pressure_pa=c.impact.min_critical_pressure_pa,
                                            method=c.impact.method))


def _stored_view(c: history.StoredCommand) -> CommandView:
    impact = c.impact
    return CommandView(id=c.id, target_kind=c.target_kind, asset_id=c.asset_id,
                       area_id=c.area_id, action=c.action, value=c.value, reason=c.reason,
                       user=c.requested_by, state=c.state, selected_at=c.created_at,
                       expires_at=c.expires_at, needs_approval=c.needs_approval,
                       needs_override=c.needs_override, approved_by=c.approved_by,
                       outcome=c.outcome, checks=list(c.checks),
                       impact=CommandImpact(consumers_cut_off=int(impact.get("consumers_cut_off", 0)),
                                            critical_cut_off=list(impact.get("critical_cut_off", [])),
                                            min_critical_pressure_pa=impact.get(
                                                "min_critical_pressure_pa"),
                                            method=str(impact.get("method", "none"))))


@strawberry.type(description="The step was done; the command as it stands now.")
class CommandSuccess:
    command: CommandView


@strawberry.type(description="A check refused the step (`rule` names it); nothing was written. "
                             "The refusal is audited.")
class CommandRefusal:
    message: str
    rule: str


CommandResult = Annotated[CommandSuccess | CommandRefusal | Forbidden,
                          strawberry.union("CommandResult")]


def _operator(info: Info[Context, Any]) -> Operator:
    p = info.context.principal
    assert p is not None  # a refusal came first otherwise
    return Operator(p.username, p.role, p.areas)


def _pipeline(info: Info[Context, Any]) -> CommandPipeline | None:
    return info.context.services.control


async def _step(info: Info[Context, Any], permission: str, operation: str,
                call: Callable[[CommandPipeline, Operator], Awaitable[Command] | Command]) -> Any:
    denied = await refusal(info, permission, operation)
    if denied is not None:
        return denied
    pipeline = _pipeline(info)
    if pipeline is None:
        return CommandRefusal(message="control is not running in this server process",
                              rule="unavailable")
    try:
        result = call(pipeline, _operator(info))
        cmd = await result if not isinstance(result, Command) else result
    except CommandRefused as exc:
        return CommandRefusal(message=str(exc), rule=exc.rule)
    return CommandSuccess(command=_view(cmd))


async def select_command(info: Info[Context, Any], target_kind: str, asset_id: str, action: str,
                         reason: str, value: float | None = None) -> CommandResult:
    def call(p: CommandPipeline, op: Operator) -> Awaitable[Command]:
        try:
            kind, act = TargetKind(target_kind), Action(action)
        except ValueError:
            raise CommandRefused(f"unknown target kind {target_kind!r} or action {action!r}",
                                 "action") from None
        return p.select(op, kind, asset_id, act, value, reason)

    return await _step(info, "control.operate", "command.select", call)


async def approve_command(info: Info[Context, Any], command_id: str,
                          reason: str) -> CommandResult:
    return await _step(info, "control.approve", "command.approve",
                       lambda p, op: p.approve(op, command_id, reason))


async def operate_command(info: Info[Context, Any], command_id: str) -> CommandResult:
    return await _step(info, "control.operate", "command.operate",
                       lambda p, op: p.operate(op, command_id))


async def cancel_command(info: Info[Context, Any], command_id: str,
                         reason: str = "") -> CommandResult:
    return await _step(info, "control.operate", "command.cancel",
                       lambda p, op: p.cancel(op, command_id, reason))


@strawberry.type(description="The asset is in maintenance, or back in service.")
class MaintenanceSuccess:
    asset_id: str
    in_maintenance: bool
    alarms_suppressed: int = strawberry.field(description="Alarms of the asset whose mode "
                                                          "changed")


MaintenanceResult = Annotated[MaintenanceSuccess | CommandRefusal | Forbidden,
                              strawberry.union("MaintenanceResult")]


async def _maintenance(info: Info[Context, Any], target_kind: str, asset_id: str, reason: str,
                       start: bool) -> Any:
    operation = "maintenance.start" if start else "maintenance.end"
    denied = await refusal(info, "maintenance.write", operation)
    if denied is not None:
        return denied
    pipeline, engine = _pipeline(info), info.context.services.alarms
    try:
        kind = TargetKind(target_kind)
    except ValueError:
        return CommandRefusal(message=f"unknown target kind {target_kind!r}", rule="action")
    target = pipeline.target(kind, asset_id) if pipeline is not None else None
    if pipeline is None or target is None:
        return CommandRefusal(message=f"no {target_kind} {asset_id!r}", rule="target")
    if not _visible(info, target.area_id):
        return CommandRefusal(message=f"{asset_id} is outside your areas", rule="area")
    if start and not reason.strip():
        return CommandRefusal(message="maintenance needs a reason (e.g. the work order)",
                              rule="reason")
    user = info.context.principal.username if info.context.principal else "?"
    if start:
        pipeline.lock_out(kind, asset_id, reason)
        events = engine.suppress(asset_id, user, reason) if engine is not None else []
    else:
        pipeline.release(kind, asset_id)
        events = engine.unsuppress(asset_id, user, reason) if engine is not None else []

    async with info.context.services.db.begin() as s:
        await audit.record(s, actor_of(info.context), audit.AuditEntry(
            operation, [f"{target_kind}:{asset_id}"],
            {"in_maintenance": {"before": not start, "after": start}, "reason": reason,
             "alarms": [e.alarm_id for e in events]}))
    return MaintenanceSuccess(asset_id=asset_id, in_maintenance=start,
                              alarms_suppressed=len(events))


async def start_maintenance(info: Info[Context, Any], target_kind: str, asset_id: str,
                            reason: str) -> MaintenanceResult:
    return await _maintenance(info, target_kind, asset_id, reason, True)


async def end_maintenance(info: Info[Context, Any], target_kind: str, asset_id: str,
                          reason: str = "") -> MaintenanceResult:
    return await _maintenance(info, target_kind, asset_id, reason, False)


COMMAND_MUTATIONS: list[Any] = [
    strawberry.mutation(resolver=start_maintenance,
                        description="Put an asset in maintenance: no command may reach it and "
                                    "its alarms are suppressed by design (work orders call this)."),
    strawberry.mutation(resolver=end_maintenance,
                        description="End maintenance: commands allowed again; alarms show their "
                                    "condition as it is now."),
    strawberry.mutation(resolver=select_command,
                        description="Select a command: checks, predicted impact, and the target "
                                    "reserved for you for 30 s."),
    strawberry.mutation(resolver=approve_command,
                        description="Approve another person's high-impact command (four-eyes)."),
    strawberry.mutation(resolver=operate_command,
                        description="Carry out your selected command: write and read back."),
    strawberry.mutation(resolver=cancel_command, description="Cancel an open command."),
]


def _visible(info: Info[Context, Any], area_id: str | None) -> bool:
    scope = info.context.areas()
    return scope is None or (area_id is not None and area_id in scope)


def _in_memory(pipeline: CommandPipeline | None) -> list[dict[str, Any]]:
    """This process's commands that the history may not hold as they stand yet: the open ones
    and those finished lately."""
    if pipeline is None:
        return []
    since = dt.datetime.now(dt.UTC) - _RECENTLY_FINISHED
    return [c.snapshot() for c in pipeline.commands()
            if c.state.open or (c.finished_at is not None and c.finished_at >= since)]


async def _cursor(session: AsyncSession, pipeline: CommandPipeline | None,
                  command_id: str) -> history.Cursor:
    """Where the list continues after the command `command_id` (this process's or stored)."""
    live = pipeline.get(command_id) if pipeline is not None else None
    if live is not None:
        return history.Cursor(live.selected_at, live.id)
    stored = await history.get(session, command_id)
    if stored is None:
        raise ValueError(f"no command {command_id!r}")
    return stored.cursor


@strawberry.type
class CommandQuery:
    @strawberry.field(permission_classes=[Can("commands.read")],
                      description="Commands of your areas, newest first (by selection time): "
                                  "the command history of every server process, with this "
                                  "server's commands as they stand now.")
    async def commands(self, info: Info[Context, Any], first: int = 50, open_only: bool = False,
                       before: Annotated[str | None, strawberry.argument(
                           description="A command's id: list only commands selected before it "
                                       "(the next page)")] = None) -> list[CommandView]:
        pipeline = _pipeline(info)
        async with info.context.services.db() as s:
            cursor = await _cursor(s, pipeline, before) if before is not None else None
            found = await history.list_commands(s, first, areas=info.context.areas(),
                                                open_only=open_only, before=cursor,
                                                overlay=_in_memory(pipeline))
        return [_stored_view(c) for c in found]


@strawberry.type(description="One step of a command, as audited.")
class CommandEventView:
    command_id: str
    step: str
    ts: dt.datetime
    user: str | None
    state: str | None
    target_kind: str
    asset_id: str
    area_id: str | None
    detail: JSON


@strawberry.type
class CommandSubscription:
    @strawberry.subscription(permission_classes=[Can("commands.read")],
                             description="Every step of every command in your areas (or one).")
    async def command_events(self, info: Info[Context, Any], area: str | None = None,
                             ) -> AsyncGenerator[CommandEventView, None]:
        async with info.context.services.bus.subscribe(COMMANDS_TOPIC) as sub:
            async for m in sub:
                if m.get("type") != "command":
                    continue
                if (area is not None and m["area_id"] != area) or not _visible(info, m["area_id"]):
                    continue
                yield CommandEventView(command_id=m["command_id"], step=m["step"],
                                       ts=dt.datetime.fromisoformat(m["ts"]), user=m["user"],
                                       state=m["state"], target_kind=m["target_kind"],
                                       asset_id=m["asset_id"], area_id=m["area_id"],
                                       detail=m["detail"])
