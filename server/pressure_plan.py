"""Pressure management (issue 8, DSS-1) for operators: a day's set-point plan, and accepting it.

`PressurePlanRunner.propose` checks a request (a date, optionally the day's mean air
temperature, the safety margin), records the plan `queued` with an audit record in the same
transaction and puts it on this process's queue. One worker task takes plans one at a time: it
marks the plan `running` and, in a worker thread (the optimiser takes seconds to tens of
seconds; the event loop never waits for it), runs `twin_jax.optimize.optimize_pressure` on the
live twin's compiled network and its last good solve's parameters (`TwinRunner.current()`:
measured set-points and source pressures, valve positions, gas temperature — as scenarios do),
then records the plan `done` with its summary and schedule, or `failed` with the reason.

Inputs of the optimisation:

- **Demands**: 24 vectors, one per local hour of the date, from each service point's SigLinDe
  profile at the day's mean air temperature (`_Model.demands_kg_s`, the live twin's own
  estimate, without its zone scaling to metered inflow: that is a measurement of now, not a
  forecast). The temperature, first found wins: the one asked for; the twin's
  `twin_air_temperature_c` setting; the town's climate normal for the date.
- **Minimum delivery pressure**: each service point's own, and at least the minimum of its
  zone's pressure level (`level_minimum_pa_gauge`, default `DELIVERY_MINIMUM_PA_GAUGE`: 1.8 kPa in
  low pressure — DOMAIN.md, the farthest consumer at the winter peak — and 150 kPa in medium
  pressure, the demo's design check, as in bench/pressure_optimization.py); a district
  station's inlet keeps 10 kPa over its set-point.
- **Controls**: the outlet set-point of every regulating station in service (links — control
  valves, compressors — keep theirs), within its outlet pressure level's band from the
  registry (the band the control pipeline's limits rule checks).

A plan is `done` when the schedule is optimal or at least verified by re-simulation
(`OptimizeStatus.CONVERGED` or `SUBOPTIMAL`); otherwise `failed`, keeping what was found.
Set-points are rounded up to whole pascals (never below what the optimiser verified).

`accept_hour` turns one hour of a done plan into commands through the control pipeline: for
every station whose planned set-point differs from its set-point now (the `p_out_sp` tag when it
reads good, else the live twin's, else the plan's starting value) by at least
`CHANGE_THRESHOLD_PA`, it *selects* a `set_outlet_setpoint` command with the plan's value — the
same step as GraphQL's `selectCommand`, with its rules, predicted impact, audit and reservation.
Operating them stays the operator's (select-before-operate). An hour is accepted whole or not at
all: when the pipeline refuses one station, the commands selected before it in the same call
are cancelled and the refusal names the station.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from control.model import Action, Command, Operator, TargetKind
from control.pipeline import CommandPipeline, CommandRefused
from erp.services import audit
from erp.services import pressure_plans as store
from erp.services.pressure_plans import PlanRejected, StoredPlan
from erp.services.registry import load_levels
from realtime.model import Quality
from realtime.store import TagStore
from server.job_worker import JobWorker
from server.twin_runner import TwinRunner

__all__ = ["CHANGE_THRESHOLD_PA", "DELIVERY_MINIMUM_PA_GAUGE", "PlanRejected", "PressurePlanRunner"]

log = logging.getLogger("gasops.twin.pressure_plan")

HOURS = 24
MAX_PENDING = 5
"""Plans queued or running in one process at most; more are refused until some finish."""
DELIVERY_MINIMUM_PA_GAUGE: Mapping[str, float] = {"low": 1_800.0, "medium": 150_000.0}
"""Lowest delivery pressure by pressure level code (Pa gauge); see the module docstring."""
CHANGE_THRESHOLD_PA = 1.0
"""A station's set-point counts as changed by at least this much (the read-back tolerance)."""
TEMPERATURE_RANGE_C = (-60.0, 45.0)
MARGIN_RANGE_PA = (0.0, 50_000.0)
DAYS_BACK, DAYS_AHEAD = 1, 30
"""Dates a plan may be asked for, around today's local date."""

_OPERATION_PROPOSE = "twin.pressure_plan.propose"
_OPERATION_ACCEPT = "twin.pressure_plan.accept"


# --- optimising (worker thread) --------------------------------------------------------------


def _optimize(model: Any, params: Any, spec: Mapping[str, Any],
              levels: Mapping[str, tuple[float, float]], level_minimum: Mapping[str, float],
              baseline_at: str | None) -> tuple[bool, dict[str, Any], dict[str, Any], str]:
    """(done, summary, result, error) of one plan on the live state."""
    from twin_jax.optimize import (
        Controls,
        OptimizeOptions,
        OptimizeStatus,
        delivery_minimum_pa_gauge,
        optimize_pressure,
        setpoint_bounds,
    )

    net = model.net
    air_c = float(spec["air_temperature_c"])
    demands = np.stack([model.demands_kg_s(air_c, h) for h in range(HOURS)])
    level_max = {code: hi for code, (_, hi) in levels.items()}
    p_min = delivery_minimum_pa_gauge(net, level_minimum, level_max)
    bounds = setpoint_bounds(net, levels)
    in_service = np.asarray(params.regulator_in_service) > 0.0
    stations: list[str] = []
    for k, rid in enumerate(net.regulator_ids):
        st = model.stations.get(rid)
        if st is None or not in_service[k] or bool(net.regulator_boost[k]):
            continue
        band = levels.get(st.get("outlet_level"))
        if band is not None:
            bounds[k] = band
        stations.append(rid)
    if not stations:
        raise PlanRejected("the network has no regulating station in service to plan")
    t0 = time.perf_counter()
    sched = optimize_pressure(net, params, demands, min_pressure_pa_gauge=p_min,
                              bounds_pa_gauge=bounds, controls=Controls(regulators=stations),
                              options=OptimizeOptions(margin_pa=float(spec["margin_pa"])))
    elapsed = time.perf_counter() - t0
    index = {rid: k for k, rid in enumerate(sched.regulator_ids)}
    out_stations = []
    for sid in stations:
        k = index[sid]
        lo, hi = (float(x) for x in bounds[k])
        planned = [min(float(math.ceil(v)), hi) for v in sched.setpoint_pa_gauge[:, k].tolist()]
        out_stations.append({
            "station_id": sid, "area_id": model.stations[sid].get("area_id"),
            "fixed_setpoint_pa_gauge": float(sched.fixed_setpoint_pa_gauge[k]),
            "min_pa_gauge": lo, "max_pa_gauge": hi, "setpoints_pa_gauge": planned,
            "binding_nodes": [sched.critical_node[t][k] for t in range(HOURS)]})
    hours = [{"hour": t, "demand_kg_s": float(demands[t].sum()),
              "mean_pressure_before_pa": float(sched.mean_pressure_before_pa[t]),
              "mean_pressure_after_pa": float(sched.mean_pressure_after_pa[t]),
              "min_margin_before_pa": float(sched.min_margin_before_pa[t]),
              "min_margin_pa": float(sched.min_margin_pa[t]),
              "margin_aimed_pa": float(sched.margin_pa[t])} for t in range(HOURS)]
    summary = {
        "optimizer_status": sched.status.name.lower(), "message": sched.message,
        "reduction_percent": float(sched.reduction_percent), "iterations": sched.iterations,
        "rounds": sched.rounds, "solve_s": elapsed, "baseline_at": baseline_at,
        "min_margin_pa": float(np.min(sched.min_margin_pa)),
        "infeasible_hours": sorted({t for t, _ in sched.infeasible}),
    }
    ok = sched.status in (OptimizeStatus.CONVERGED, OptimizeStatus.SUBOPTIMAL)
    error = "" if ok else f"no safe schedule: {sched.status.message}"
    return ok, summary, {"hours": hours, "stations": out_stations}, error


# --- the runner ------------------------------------------------------------------------------


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class StoredPlans:
    """Recorded pressure plans, read from the database: what every server process can answer,
    whether or not the live twin runs in it."""

    def __init__(self, db: Any) -> None:
        self._db = db

    async def get(self, plan_id: str) -> StoredPlan | None:
        """One plan, or None."""
        async with self._db() as s:
            return await store.get(s, plan_id)

    async def recent(self, first: int = 20, status: str | None = None) -> list[StoredPlan]:
        """The newest plans first."""
        async with self._db() as s:
            return await store.list_plans(s, first, status=status)


class PressurePlanRunner(JobWorker[None]):
    """Queues pressure plans, optimises them one at a time on the live twin, and turns an hour
    of a plan into selected commands (module docstring). The queue, its worker task and
    `start`/`stop` are `JobWorker`'s; its queue carries only the plan's id."""

    _task_name = "pressure-plans"
    _log = log
    _noun = "pressure plan"
    _crash_log = "pressure plan %s: could not be made or recorded"
    _crash_error = "internal error while making the plan (see the server log)"
    _stopped_error = "the server stopped before the plan was made; ask again"

    def __init__(self, db: Any, twin: TwinRunner, control: CommandPipeline | None = None,
                 tags: TagStore | None = None, *, air_temperature_c: float | None = None,
                 level_minimum_pa_gauge: Mapping[str, float] = DELIVERY_MINIMUM_PA_GAUGE,
                 local_utc_offset_h: float = 3.0, max_pending: int = MAX_PENDING,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        super().__init__(db, store, twin, max_pending=max_pending)
        self._control = control
        self._tags = tags
        self._air_c = air_temperature_c
        self._level_minimum = dict(level_minimum_pa_gauge)
        self._utc_offset = dt.timedelta(hours=local_utc_offset_h)
        self._clock = clock

    # -- asking -------------------------------------------------------------------------------

    def _spec(self, plan_date: dt.date, air_temperature_c: float | None,
              margin_pa: float) -> dict[str, Any]:
        problems: list[str] = []
        today = (self._clock() + self._utc_offset).date()
        if not today - dt.timedelta(days=DAYS_BACK) <= plan_date <= today + dt.timedelta(days=DAYS_AHEAD):
            problems.append(f"date must be within {DAYS_BACK} day before and {DAYS_AHEAD} days "
                            f"after today ({today.isoformat()}), got {plan_date.isoformat()}")
        lo, hi = MARGIN_RANGE_PA
        if not (math.isfinite(margin_pa) and lo <= margin_pa <= hi):
            problems.append(f"marginPa must be within {lo:g}…{hi:g} Pa, got {margin_pa:g}")
        if air_temperature_c is not None:
            source, air_c = "given", float(air_temperature_c)
            t_lo, t_hi = TEMPERATURE_RANGE_C
            if not (math.isfinite(air_c) and t_lo <= air_c <= t_hi):
                problems.append(f"airTemperatureC must be within {t_lo:g}…{t_hi:g} °C, "
                                f"got {air_c:g}")
        elif self._air_c is not None:
            source, air_c = "setting", float(self._air_c)
        else:
            from twin_jax.demand import climate_mean_temperature_c

            day = np.array([plan_date.timetuple().tm_yday])
            source, air_c = "climate_normal", float(climate_mean_temperature_c(day)[0])
        if problems:
            raise PlanRejected("; ".join(problems))
        return {"air_temperature_c": air_c, "temperature_source": source,
                "margin_pa": float(margin_pa)}

    async def propose(self, plan_date: dt.date, *, air_temperature_c: float | None = None,
                      margin_pa: float = 100.0, actor: audit.Actor) -> StoredPlan:
        """Check, record (queued, audited) and enqueue a plan; `PlanRejected` (audited, nothing
        recorded) when it cannot be made as asked."""
        asked = {"date": plan_date.isoformat(), "air_temperature_c": air_temperature_c,
                 "margin_pa": margin_pa}
        try:
            spec = self._spec(plan_date, air_temperature_c, margin_pa)
            self._refuse_if_full(PlanRejected, "plans are queued or being made",
                                 "try again when some are done")
        except PlanRejected as exc:
            await self._audit(actor, _OPERATION_PROPOSE, [], {**asked, "reason": str(exc)},
                              "refused")
            raise
        async with self._db.begin() as s:
            rec = await store.create(s, plan_date, spec, created_by=actor.username)
            await audit.record(s, actor, audit.AuditEntry(
                _OPERATION_PROPOSE, [f"pressure_plan:{rec.id}"],
                {"date": plan_date.isoformat(), "spec": rec.spec,
                 "status": {"before": None, "after": "queued"}}))
        self._enqueue(rec.id, None)
        return rec

    async def get(self, plan_id: str) -> StoredPlan | None:
        """One plan, or None."""
        return await StoredPlans(self._db).get(plan_id)

    async def recent(self, first: int = 20, status: str | None = None) -> list[StoredPlan]:
        """The newest plans first."""
        return await StoredPlans(self._db).recent(first, status)

    # -- accepting ----------------------------------------------------------------------------

    def _setpoint_now(self, station_id: str, fallback: float) -> float:
        """The station's outlet set-point now: its `p_out_sp` tag when good, else the live
        twin's, else `fallback` (the plan's starting value)."""
        if self._tags is not None:
            state = self._tags.get(f"station/{station_id}/p_out_sp")
            if state is not None and Quality(state.value.quality).is_good:
                v = state.value.value
                if isinstance(v, int | float) and not isinstance(v, bool):
                    return float(v)
        current = self._twin.current()
        if current is not None:
            model, params, _ = current
            k = model.regulator_index.get(station_id)
            if k is not None:
                return float(np.asarray(params.setpoint_pa_gauge)[k])
        return fallback

    def changes(self, plan: StoredPlan, hour: int) -> list[tuple[str, float, float]]:
        """(station id, set-point now, planned) of the stations the plan changes at `hour`."""
        out = []
        for st in (plan.result or {}).get("stations", []):
            planned = float(st["setpoints_pa_gauge"][hour])
            now = self._setpoint_now(st["station_id"], float(st["fixed_setpoint_pa_gauge"]))
            if abs(planned - now) >= CHANGE_THRESHOLD_PA:
                out.append((st["station_id"], now, planned))
        return out

    async def accept_hour(self, plan_id: str, hour: int, *, operator: Operator, reason: str,
                          actor: audit.Actor) -> tuple[StoredPlan, list[Command]]:
        """Select a `set_outlet_setpoint` command for every station the plan changes at `hour`
        (local hour of the plan's date); the plan and the selected commands, in the plan's
        station order. `PlanRejected` (bad hour, unknown plan, a plan not done, no reason, no
        control here) or `CommandRefused` (the pipeline refused a station; the commands selected
        before it are cancelled): audited, and no command is left selected."""
        asked = {"hour": hour, "reason": reason}
        try:
            if not 0 <= hour < HOURS:
                raise PlanRejected(f"hour must be 0…23 (a local hour of the plan's date), got {hour}")
            plan = await self.get(plan_id)
            if plan is None:
                raise PlanRejected(f"no pressure plan {plan_id!r}")
            if plan.status != "done":
                raise PlanRejected(f"pressure plan {plan_id} is {plan.status}: only a done plan "
                                   f"can be accepted{': ' + plan.error if plan.error else ''}")
            if not reason.strip():
                raise PlanRejected("accepting a plan needs a reason")
            if self._control is None:
                raise PlanRejected("control is not running in this server process")
            changes = self.changes(plan, hour)
        except PlanRejected as exc:
            await self._audit(actor, _OPERATION_ACCEPT, [f"pressure_plan:{plan_id}"],
                              {**asked, "reason": str(exc)}, "refused")
            raise
        control = self._control
        why = f"{reason.strip()} (pressure plan {plan.id}, {plan.plan_date.isoformat()} {hour:02d}:00)"
        selected: list[Command] = []
        for sid, _, planned in changes:
            try:
                cmd = await control.select(operator, TargetKind.station, sid,
                                           Action.set_outlet_setpoint, planned, why)
            except CommandRefused as exc:
                for c in selected:
                    with contextlib.suppress(CommandRefused):
                        control.cancel(operator, c.id, f"pressure plan {plan.id}: {sid} was refused")
                message = (f"{sid}: {exc}; nothing of hour {hour:02d} stays selected"
                           + (f" ({len(selected)} command(s) selected before were cancelled)"
                              if selected else ""))
                await self._audit(actor, _OPERATION_ACCEPT, [f"pressure_plan:{plan.id}"],
                                  {**asked, "station_id": sid, "rule": exc.rule,
                                   "reason": message}, "refused")
                raise CommandRefused(message, exc.rule) from None
            selected.append(cmd)
        await self._audit(actor, _OPERATION_ACCEPT,
                          [f"pressure_plan:{plan.id}", *(f"command:{c.id}" for c in selected)],
                          {**asked, "setpoints": {sid: {"before": now, "after": planned}
                                                  for sid, now, planned in changes},
                           "commands": [c.id for c in selected]}, "ok")
        return plan, selected

    async def _audit(self, actor: audit.Actor, operation: str, targets: list[str],
                     diff: Mapping[str, Any], outcome: str) -> None:
        async with self._db.begin() as s:
            await audit.record(s, actor, audit.AuditEntry(operation, targets, audit.jsonable(diff),
                                                          outcome=outcome))

    # -- running ------------------------------------------------------------------------------

    async def _execute(self, pid: str, job: None) -> None:
        async with self._db.begin() as s:
            rec = await store.set_running(s, pid)
            levels = {code: (b.min_pa_gauge, b.max_pa_gauge)
                      for code, b in (await load_levels(s)).items()}
        state = await self._live_state(pid, "nothing to plan from")
        if state is None:
            return
        model, params, _, at = state
        outcome = await self._in_thread(  # a malformed problem (no station, no level) misfits
            pid, (PlanRejected, ValueError), "the plan cannot be made on this network",
            _optimize, model, params, rec.spec, levels, self._level_minimum, at)
        if outcome is not None:
            await self._record(pid, *outcome)
