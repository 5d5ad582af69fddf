"""Pressure management over GraphQL (issue 8, DSS-1): `proposePressurePlan`, `pressurePlan`,
`pressurePlans` and `acceptPressurePlanHour`.

Thin over the server's pressure-plan runner (`services.pressure_plans`, a
`PressurePlanService`), kept in the database (`erp.services.pressure_plans`). A plan is a
background job: `proposePressurePlan` queues one and answers at once; `pressurePlan(id)` tells
how it stands and, once done, the schedule — per local hour of the date the demand, the mean
gauge pressure of the regulated zones with today's set-points and with the plan, the lowest
margin over the consumers' minimum; per station its 24 set-points (Pa gauge) and each hour's
binding node. `acceptPressurePlanHour` selects, through the control pipeline, a
`set_outlet_setpoint` command for every station whose set-point the plan changes at that hour,
and returns the selected commands: operating each stays the operator's (`operateCommand`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Protocol

import strawberry
from strawberry.types import Info

from control.model import Command, Operator
from control.pipeline import CommandRefused
from erp.services import audit
from erp.services.pressure_plans import STATUSES, PlanRejected, StoredPlan
from schema.context import Context
from schema.control import CommandRefusal, CommandView
from schema.control import _view as command_view
from schema.errors import Forbidden
from schema.permissions import Can, actor_of, refusal

__all__ = ["PressurePlanMutation", "PressurePlanQuery", "PressurePlanService"]


class PlanRecords(Protocol):
    """Reading recorded pressure plans: any server process can, with or without the live twin
    (`server/pressure_plan.py` `StoredPlans`)."""

    async def get(self, plan_id: str) -> StoredPlan | None: ...

    async def recent(self, first: int = 20, status: str | None = None) -> list[StoredPlan]: ...


class PressurePlanService(PlanRecords, Protocol):
    """What the schema needs of the server's pressure-plan runner (`server/pressure_plan.py`)."""

    async def propose(self, plan_date: dt.date, *, air_temperature_c: float | None = None,
                      margin_pa: float = 100.0, actor: audit.Actor) -> StoredPlan: ...

    async def accept_hour(self, plan_id: str, hour: int, *, operator: Operator, reason: str,
                          actor: audit.Actor) -> tuple[StoredPlan, list[Command]]: ...


@strawberry.type(description="One local hour of a pressure plan and its predicted effect.")
class PressurePlanHour:
    hour: int = strawberry.field(description="Local hour of the plan's date, 0…23")
    demand_kg_s: float = strawberry.field(description="Forecast demand of the whole network")
    mean_pressure_before_pa: float = strawberry.field(
        description="Length-weighted mean gauge pressure of the regulated zones with the "
                    "set-points the plan started from")
    mean_pressure_after_pa: float = strawberry.field(description="The same with the plan")
    min_margin_before_pa: float = strawberry.field(
        description="Lowest pressure over minimum at any consumer or station inlet, before "
                    "(< 0: someone under their minimum)")
    min_margin_pa: float = strawberry.field(description="The same with the plan (re-simulated)")


@strawberry.type(description="A regulating station's set-points in a pressure plan.")
class PressurePlanStation:
    station_id: str
    area_id: str | None
    fixed_setpoint_pa_gauge: float = strawberry.field(
        description="The set-point the plan started from (the live twin's)")
    min_pa_gauge: float = strawberry.field(description="Lowest set-point allowed (its level's)")
    max_pa_gauge: float = strawberry.field(description="Highest set-point allowed")
    setpoints_pa_gauge: list[float] = strawberry.field(
        description="The plan's set-point for each local hour 0…23, Pa gauge")
    binding_nodes: list[str | None] = strawberry.field(
        description="For each hour, the node of the station's outlet zone with the least "
                    "pressure over its minimum (what holds the set-point up)")


@strawberry.type(description="A day's pressure plan: queued, running, done or failed; once made, "
                             "the hourly set-points of every regulating station and their "
                             "predicted effect.")
class PressurePlan:
    id: str
    date: dt.date = strawberry.field(description="The day planned (local hours)")
    created_at: dt.datetime
    created_by: str | None
    status: str = strawberry.field(description="queued, running, done or failed")
    error: str | None = strawberry.field(description="Why it failed")
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    air_temperature_c: float = strawberry.field(description="The day's mean air temperature used")
    temperature_source: str = strawberry.field(
        description="given (asked for), setting (the twin's configured temperature) or "
                    "climate_normal (the town's normal for the date)")
    margin_pa: float = strawberry.field(description="Safety margin over each minimum aimed for")
    optimizer_status: str | None = strawberry.field(
        description="converged, suboptimal, infeasible, not_verified or solver_failed; null "
                    "until made")
    message: str | None
    reduction_percent: float | None = strawberry.field(
        description="Mean pressure reduction of the regulated zones over the day")
    min_margin_pa: float | None = strawberry.field(
        description="Lowest margin over minimum of any hour with the plan")
    baseline_at: dt.datetime | None = strawberry.field(
        description="When the live state the plan started from was solved")
    solve_s: float | None
    hours: list[PressurePlanHour] = strawberry.field(description="Empty until made")
    stations: list[PressurePlanStation] = strawberry.field(description="Empty until made")


def _plan(rec: StoredPlan) -> PressurePlan:
    s = rec.summary or {}
    r = rec.result or {}
    at = s.get("baseline_at")
    return PressurePlan(
        id=rec.id, date=rec.plan_date, created_at=rec.created_at, created_by=rec.created_by,
        status=rec.status, error=rec.error, started_at=rec.started_at,
        finished_at=rec.finished_at, air_temperature_c=rec.spec["air_temperature_c"],
        temperature_source=rec.spec["temperature_source"], margin_pa=rec.spec["margin_pa"],
        optimizer_status=s.get("optimizer_status"), message=s.get("message"),
        reduction_percent=s.get("reduction_percent"), min_margin_pa=s.get("min_margin_pa"),
        baseline_at=dt.datetime.fromisoformat(at) if at else None, solve_s=s.get("solve_s"),
        hours=[PressurePlanHour(
            hour=h["hour"], demand_kg_s=h["demand_kg_s"],
            mean_pressure_before_pa=h["mean_pressure_before_pa"],
            mean_pressure_after_pa=h["mean_pressure_after_pa"],
            min_margin_before_pa=h["min_margin_before_pa"], min_margin_pa=h["min_margin_pa"])
            for h in r.get("hours", [])],
        stations=[PressurePlanStation(
            station_id=st["station_id"], area_id=st["area_id"],
            fixed_setpoint_pa_gauge=st["fixed_setpoint_pa_gauge"], min_pa_gauge=st["min_pa_gauge"],
            max_pa_gauge=st["max_pa_gauge"], setpoints_pa_gauge=st["setpoints_pa_gauge"],
            binding_nodes=st["binding_nodes"]) for st in r.get("stations", [])])


@strawberry.type(description="The plan is queued; poll `pressurePlan(id)` until it is done.")
class PressurePlanQueued:
    plan: PressurePlan


@strawberry.type(description="The plan cannot be made or accepted as asked (date, hour, margin "
                             "out of range, unknown plan, a plan not done, no twin here); nothing "
                             "was queued or selected. The refusal is audited.")
class PressurePlanRefusal:
    message: str


@strawberry.type(description="The hour is accepted: one selected set_outlet_setpoint command per "
                             "station the plan changes (none when nothing changes). Operate each "
                             "with `operateCommand` before it expires.")
class PressurePlanCommands:
    plan: PressurePlan
    hour: int
    commands: list[CommandView]


ProposePressurePlanResult = Annotated[PressurePlanQueued | PressurePlanRefusal | Forbidden,
                                      strawberry.union("ProposePressurePlanResult")]
AcceptPressurePlanHourResult = Annotated[
    PressurePlanCommands | PressurePlanRefusal | CommandRefusal | Forbidden,
    strawberry.union("AcceptPressurePlanHourResult")]

_NO_TWIN = "the live twin does not run in this server process: no pressure plans here"


async def _refused_here(info: Info[Context, Any], operation: str, diff: dict[str, Any],
                        message: str) -> PressurePlanRefusal:
    ctx = info.context
    async with ctx.services.db.begin() as s:
        await audit.record(s, actor_of(ctx), audit.AuditEntry(
            operation, [], audit.jsonable({**diff, "reason": message}), outcome="refused"))
    return PressurePlanRefusal(message=message)


async def propose_pressure_plan(info: Info[Context, Any], date: dt.date,
                                air_temperature_c: float | None = None,
                                margin_pa: float = 100.0) -> ProposePressurePlanResult:
    operation = "twin.pressure_plan.propose"
    denied = await refusal(info, "twin.scenarios", operation)
    if denied is not None:
        return denied
    ctx = info.context
    runner = ctx.services.pressure_plans
    if runner is None:
        return await _refused_here(info, operation, {"date": date, "air_temperature_c":
                                                     air_temperature_c, "margin_pa": margin_pa},
                                   _NO_TWIN)
    try:
        rec = await runner.propose(date, air_temperature_c=air_temperature_c,
                                   margin_pa=margin_pa, actor=actor_of(ctx))
    except PlanRejected as exc:
        return PressurePlanRefusal(message=str(exc))
    return PressurePlanQueued(plan=_plan(rec))


async def accept_pressure_plan_hour(info: Info[Context, Any], plan_id: str, hour: int,
                                    reason: str) -> AcceptPressurePlanHourResult:
    operation = "twin.pressure_plan.accept"
    denied = await refusal(info, "control.operate", operation)
    if denied is not None:
        return denied
    ctx = info.context
    runner = ctx.services.pressure_plans
    if runner is None:
        return await _refused_here(info, operation, {"plan_id": plan_id, "hour": hour,
                                                     "reason_given": reason}, _NO_TWIN)
    p = ctx.principal
    assert p is not None  # a refusal came first otherwise
    try:
        plan, commands = await runner.accept_hour(
            plan_id, hour, operator=Operator(p.username, p.role, p.areas), reason=reason,
            actor=actor_of(ctx))
    except PlanRejected as exc:
        return PressurePlanRefusal(message=str(exc))
    except CommandRefused as exc:
        return CommandRefusal(message=str(exc), rule=exc.rule)
    return PressurePlanCommands(plan=_plan(plan), hour=hour,
                                commands=[command_view(c) for c in commands])


@strawberry.type
class PressurePlanMutation:
    propose_pressure_plan = strawberry.mutation(
        resolver=propose_pressure_plan,
        description="Ask for a day's pressure plan on the live twin: hourly outlet set-points of "
                    "every regulating station that keep each consumer at least marginPa over "
                    "its minimum with the least mean pressure (leakage). The day's mean air "
                    "temperature: airTemperatureC, else the twin's setting, else the climate "
                    "normal. Made in the background, one at a time.")
    accept_pressure_plan_hour = strawberry.mutation(
        resolver=accept_pressure_plan_hour,
        description="Accept one local hour (0…23) of a done plan: selects a set_outlet_setpoint "
                    "command through the control pipeline for each station whose set-point the "
                    "plan changes, all or none; operate them with operateCommand.")


@strawberry.type
class PressurePlanQuery:
    @strawberry.field(permission_classes=[Can("twin.read")],
                      description="One pressure plan (null if there is none with this id).")
    async def pressure_plan(self, info: Info[Context, Any], id: str) -> PressurePlan | None:
        runner = info.context.services.plan_records or info.context.services.pressure_plans
        rec = await runner.get(id) if runner is not None else None
        return _plan(rec) if rec is not None else None

    @strawberry.field(permission_classes=[Can("twin.read")],
                      description="The newest pressure plans first, optionally of one status.")
    async def pressure_plans(self, info: Info[Context, Any], first: int = 20,
                             status: str | None = None) -> list[PressurePlan]:
        if not 1 <= first <= 200:
            raise ValueError("first must be between 1 and 200")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        runner = info.context.services.plan_records or info.context.services.pressure_plans
        return [_plan(r) for r in await runner.recent(first, status)] if runner else []
