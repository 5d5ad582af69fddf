"""The live hydraulic twin over GraphQL: `networkState` and the `networkStateUpdates` feed;
what-if scenarios (`runScenario`, `scenario`, `scenarios`) and burst isolation
(`burstIsolation`).

Thin over the server's twin runner (`services.twin`, a `TwinReader`): the latest snapshot,
filtered to an area and to the caller's areas. Pressures are gauge, in Pa; flows in kg/s.
Scenarios are background jobs of the server's scenario runner (`services.scenarios`, a
`ScenarioService`), kept in the database (`erp.services.twin_scenarios`): `runScenario` queues
one and answers at once; `scenario(id)` tells how it stands and, once done, what it found.
Lists of consumers and nodes in a scenario's outcome are cut to the caller's areas; its summary
counts are the whole network's.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncGenerator, Mapping
from typing import Annotated, Any, Protocol

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from erp.services import audit
from erp.services.twin_scenarios import STATUSES, ScenarioRejected, StoredScenario
from realtime.twin_state import TWIN_TOPIC, NetworkSnapshot
from schema.context import Context
from schema.errors import Forbidden
from schema.permissions import Can, actor_of, refusal

__all__ = ["TWIN_MUTATIONS", "ScenarioService", "TwinQuery", "TwinSubscription"]


@strawberry.type(description="Modelled pressure at a network node.")
class ModelledNode:
    id: str
    area_id: str | None
    pressure_pa_gauge: float
    supplied: bool = strawberry.field(description="Some source reaches it through open valves")


@strawberry.type(description="Modelled flow in a pipe, positive from its from-node to its to-node.")
class ModelledPipe:
    id: str
    area_id: str | None
    mass_flow_kg_s: float
    velocity_m_s: float


@strawberry.type(description="A service point below its minimum pressure, or not supplied at all.")
class ConsumerShortfall:
    id: str
    node_id: str
    area_id: str | None
    pressure_pa_gauge: float
    min_pressure_pa_gauge: float
    critical: bool
    supplied: bool


@strawberry.type(description="A sensor against the model: measured − modelled, in the tag's unit.")
class SensorResidual:
    tag_path: str
    measured: float
    modelled: float
    residual: float


@strawberry.type(description="The live leak watch of one area: a CUSUM on the twin's residuals and "
                             "the area's metered gas balance (alarm rule area/leak:hi).")
class AreaLeakWatch:
    area_id: str
    level: float = strawberry.field(description="The detector's statistic over its alarm threshold; "
                                                "1 raises 'leak suspected'")
    z: float = strawberry.field(description="This cycle's statistic, standard errors (> 0: the "
                                            "residuals sag like a leak in this area)")
    alarm: bool = strawberry.field(description="Leak suspected")
    leak_m3h_std: float = strawberry.field(description="The estimated leak while suspected, m³/h at "
                                                       "20 °C and 101.325 kPa; 0 otherwise")
    observable: bool = strawberry.field(description="The sensors can see a leak here at all")
    warming_up: bool = strawberry.field(description="Still learning its baselines: no alarm yet")


@strawberry.type(description="A demand scale or roughness factor the live state estimation "
                             "fitted for one area.")
class EstimatedFactor:
    kind: str = strawberry.field(description="demand or roughness")
    area_id: str
    factor: float = strawberry.field(description="Multiplier on the model's value (1: as modelled)")
    std_percent: float = strawberry.field(description="Its relative standard deviation, %")
    observable: bool = strawberry.field(description="The sensors fix it to ±10 % at 3σ; an "
                                                    "unobservable factor says nothing")


@strawberry.type(description="A sensor the bad-data test left out of the estimation: it "
                             "disagrees with all the others.")
class SuspectSensor:
    tag_path: str
    normalized_residual: float = strawberry.field(description="Standard errors; over 4 is suspect")
    residual: float = strawberry.field(description="Measured − modelled: Pa, or kg/s for a meter")


@strawberry.type(description="The last live state estimation over a window of the twin's cycles "
                             "(every few minutes).")
class StateEstimation:
    at: dt.datetime
    cycles: int = strawberry.field(description="Twin cycles in the window")
    converged: bool
    message: str
    chi2_per_dof: float | None = strawberry.field(description="About 1 when the model and the "
                                                              "noise model fit the data")
    factors: list[EstimatedFactor]
    suspect_sensors: list[SuspectSensor]
    untestable_sensors: list[str] = strawberry.field(
        description="Critical sensors: the estimate follows them, their errors cannot be seen")
    missing_sensors: list[str]


@strawberry.type(description="One solve of the live twin.")
class NetworkState:
    at: dt.datetime
    status: str = strawberry.field(description="converged, max_iterations or nonfinite")
    message: str
    iterations: int
    solve_ms: float
    period_s: float = strawberry.field(description="Seconds between solves")
    air_temperature_c: float
    gas_temperature_c: float
    total_demand_kg_s: float
    nodes: list[ModelledNode]
    pipes: list[ModelledPipe]
    consumers_below_minimum: list[ConsumerShortfall]
    residuals: list[SensorResidual]
    leak_watch: list[AreaLeakWatch]
    estimation: StateEstimation | None


def _estimation(est: Any, keep: Any) -> StateEstimation | None:
    if est is None:
        return None
    factors = []
    for f in est.factors:
        kind, _, area_id = f.name.partition(":")
        if keep(area_id):
            factors.append(EstimatedFactor(kind=kind, area_id=area_id, factor=f.factor,
                                           std_percent=100.0 * f.std_log, observable=f.observable))
    return StateEstimation(
        at=est.at, cycles=est.cycles, converged=est.converged, message=est.message,
        chi2_per_dof=est.chi2_per_dof, factors=factors,
        suspect_sensors=[SuspectSensor(tag_path=b.path, normalized_residual=b.normalized_residual,
                                       residual=b.residual) for b in est.bad_sensors],
        untestable_sensors=list(est.untestable_sensors), missing_sensors=list(est.missing_sensors))


def _state(snap: NetworkSnapshot, period_s: float, area: str | None, scope: frozenset[str] | None
           ) -> NetworkState:
    def keep(area_id: str | None) -> bool:
        if area is not None and area_id != area:
            return False
        return scope is None or (area_id is not None and area_id in scope)

    return NetworkState(
        at=snap.at, status=snap.status, message=snap.message, iterations=snap.iterations,
        solve_ms=snap.solve_ms, period_s=period_s, air_temperature_c=snap.air_temperature_c,
        gas_temperature_c=snap.gas_temperature_c, total_demand_kg_s=snap.total_demand_kg_s,
        nodes=[ModelledNode(id=n.id, area_id=n.area_id, pressure_pa_gauge=n.pressure_pa_gauge,
                            supplied=n.supplied) for n in snap.nodes if keep(n.area_id)],
        pipes=[ModelledPipe(id=p.id, area_id=p.area_id, mass_flow_kg_s=p.mass_flow_kg_s,
                            velocity_m_s=p.velocity_m_s) for p in snap.pipes if keep(p.area_id)],
        consumers_below_minimum=[
            ConsumerShortfall(id=c.id, node_id=c.node_id, area_id=c.area_id,
                              pressure_pa_gauge=c.pressure_pa_gauge,
                              min_pressure_pa_gauge=c.min_pressure_pa_gauge, critical=c.critical,
                              supplied=c.supplied)
            for c in snap.below_minimum if keep(c.area_id)],
        residuals=[SensorResidual(tag_path=r.path, measured=r.measured, modelled=r.modelled,
                                  residual=r.residual) for r in snap.residuals],
        leak_watch=[AreaLeakWatch(area_id=d.area_id, level=d.level, z=d.z, alarm=d.alarm,
                                  leak_m3h_std=d.leak_m3h_std, observable=d.observable,
                                  warming_up=d.warming_up)
                    for d in snap.leaks if keep(d.area_id)],
        estimation=_estimation(snap.estimation, keep),
    )


# --- what-if scenarios and burst isolation --------------------------------------------------


class ScenarioRecords(Protocol):
    """Reading recorded twin jobs (scenarios, leak localizations): any server process can,
    with or without the live twin (`server/twin_scenarios.py` `StoredScenarios`)."""

    async def get(self, scenario_id: str) -> StoredScenario | None: ...

    async def recent(self, first: int = 20, status: str | None = None,
                     kind: str = "what_if") -> list[StoredScenario]: ...


class ScenarioService(ScenarioRecords, Protocol):
    """What the schema needs of the server's scenario runner (`server/twin_scenarios.py`)."""

    async def submit(self, spec: Mapping[str, Any], *, name: str,
                     actor: audit.Actor) -> StoredScenario: ...

    async def locate_leak(self, area: str | None, window_s: float, *,
                          actor: audit.Actor) -> StoredScenario: ...

    async def isolation(self, pipe_id: str) -> Any: ...


def scenario_records(info: Info[Context, Any]) -> ScenarioRecords | None:
    """Where recorded twin jobs are read: the database in any process (the runner's records
    where only it was handed in)."""
    services = info.context.services
    return services.scenario_records or services.scenarios


@strawberry.input(description="Set a line valve's opening.")
class ValveChangeInput:
    valve_id: str
    opening: float = strawberry.field(description="0 closed … 1 fully open")


@strawberry.input(description="Change a station's outlet set-point.")
class SetpointChangeInput:
    station_id: str
    setpoint_pa_gauge: float


@strawberry.input(description="A hole in a pipe.")
class BurstInput:
    pipe_id: str
    hole_diameter_mm: float
    position: float = strawberry.field(default=0.5, description="Along the pipe: 0 at its "
                                                                "from-node … 1 at its to-node")


@strawberry.input(description="A consumer not yet in the network, connected at a node.")
class NewConsumerInput:
    id: str
    node_id: str
    demand_m3h_std: float = strawberry.field(description="m³/h at 20 °C, 101.325 kPa")
    min_pressure_pa_gauge: float = 0.0
    critical: bool = False


@strawberry.input(description="A what-if against the live twin's current state: everything not "
                              "mentioned stays as it is now.")
class ScenarioInput:
    name: str = ""
    valve_changes: list[ValveChangeInput] = strawberry.field(default_factory=list)
    setpoint_changes: list[SetpointChangeInput] = strawberry.field(default_factory=list)
    shut_stations: list[str] = strawberry.field(default_factory=list,
                                                description="Stations whose regulators shut")
    demand_factor: float = strawberry.field(default=1.0,
                                            description="Multiplies every consumer's demand")
    design_temperature_c: float | None = strawberry.field(
        default=None, description="Every consumer's demand at this day-mean air temperature "
                                  "(18:00, the evening peak) instead of today's")
    bursts: list[BurstInput] = strawberry.field(default_factory=list)
    new_consumers: list[NewConsumerInput] = strawberry.field(default_factory=list)


def _spec_of(inp: ScenarioInput) -> dict[str, Any]:
    """The plain spec the scenario runner takes."""
    return {
        "valve_changes": [{"valve_id": v.valve_id, "opening": v.opening} for v in inp.valve_changes],
        "setpoint_changes": [{"station_id": c.station_id, "setpoint_pa_gauge": c.setpoint_pa_gauge}
                             for c in inp.setpoint_changes],
        "shut_stations": list(inp.shut_stations), "demand_factor": inp.demand_factor,
        "design_temperature_c": inp.design_temperature_c,
        "bursts": [{"pipe_id": b.pipe_id, "hole_diameter_mm": b.hole_diameter_mm,
                    "position": b.position} for b in inp.bursts],
        "new_consumers": [{"id": c.id, "node_id": c.node_id, "demand_m3h_std": c.demand_m3h_std,
                           "min_pressure_pa_gauge": c.min_pressure_pa_gauge, "critical": c.critical}
                          for c in inp.new_consumers],
    }


@strawberry.type(description="A scenario's headline figures (the whole network's).")
class ScenarioSummary:
    solver_status: str = strawberry.field(description="converged, max_iterations or nonfinite")
    message: str
    iterations: int
    solve_ms: float
    baseline_at: dt.datetime | None = strawberry.field(
        description="When the live state the scenario started from was solved")
    unsupplied: int = strawberry.field(description="Consumers no source reaches")
    cut_off: int = strawberry.field(description="Of those, the ones supplied now")
    critical_unsupplied: int
    below_minimum: int = strawberry.field(description="Supplied consumers under their minimum")
    critical_below_minimum: int
    reversals: int = strawberry.field(description="Branches whose flow changed direction")
    min_pressure_pa_gauge: float | None = strawberry.field(
        description="Lowest pressure at a supplied node")
    total_leak_kg_s: float
    total_demand_kg_s: float = strawberry.field(description="Demand asked in the scenario")
    baseline_total_demand_kg_s: float = strawberry.field(description="Demand now")
    design_temperature_c: float | None
    demand_factor: float


@strawberry.type(description="A consumer under its minimum pressure in a scenario.")
class ScenarioShortfall:
    id: str
    node_id: str
    area_id: str | None
    pressure_pa_gauge: float | None
    min_pressure_pa_gauge: float
    critical: bool


@strawberry.type(description="A node's pressure in a scenario and its change against now.")
class ScenarioNode:
    id: str
    area_id: str | None
    pressure_pa_gauge: float | None
    change_pa: float | None = strawberry.field(description="Scenario − now")
    supplied: bool


@strawberry.type(description="Gas escaping through a burst in a scenario.")
class BurstLeak:
    pipe_id: str
    leak_kg_s: float


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def _summary(s: Mapping[str, Any] | None) -> ScenarioSummary | None:
    if not s:
        return None
    at = s.get("baseline_at")
    return ScenarioSummary(
        solver_status=s["solver_status"], message=s["message"], iterations=s["iterations"],
        solve_ms=s["solve_ms"], baseline_at=dt.datetime.fromisoformat(at) if at else None,
        unsupplied=s["unsupplied"], cut_off=s["cut_off"],
        critical_unsupplied=s["critical_unsupplied"], below_minimum=s["below_minimum"],
        critical_below_minimum=s["critical_below_minimum"], reversals=s["reversals"],
        min_pressure_pa_gauge=_num(s.get("min_pressure_pa_gauge")),
        total_leak_kg_s=s["total_leak_kg_s"], total_demand_kg_s=s["total_demand_kg_s"],
        baseline_total_demand_kg_s=s["baseline_total_demand_kg_s"],
        design_temperature_c=s.get("design_temperature_c"), demand_factor=s["demand_factor"])


def _in_scope(info: Info[Context, Any], area_id: str | None) -> bool:
    scope = info.context.areas()
    return scope is None or (area_id is not None and area_id in scope)


@strawberry.type(description="A what-if scenario: queued, running, done or failed; once done, "
                             "what it found (lists of consumers and nodes: your areas only).")
class Scenario:
    id: str
    name: str
    created_at: dt.datetime
    created_by: str | None
    status: str = strawberry.field(description="queued, running, done or failed")
    error: str | None = strawberry.field(description="Why it failed")
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    spec: JSON = strawberry.field(description="The scenario as asked (checked, defaults filled)")
    summary: ScenarioSummary | None = strawberry.field(description="Null until it has run")
    record: strawberry.Private[StoredScenario]

    async def _result(self, info: Info[Context, Any]) -> Mapping[str, Any]:
        rec = self.record
        if rec.result is None and rec.status in ("done", "failed") and rec.summary is not None:
            runner = scenario_records(info)  # a list item: fetch the whole outcome
            full = await runner.get(rec.id) if runner is not None else None
            if full is not None:
                self.record = rec = full
        return rec.result or {}

    @strawberry.field(description="Consumers no source reaches in the scenario (ids).")
    async def unsupplied(self, info: Info[Context, Any]) -> list[str]:
        found = (await self._result(info)).get("unsupplied", [])
        return [u["id"] for u in found if _in_scope(info, u["area_id"])]

    @strawberry.field(description="The unsupplied consumers flagged critical (ids).")
    async def critical_unsupplied(self, info: Info[Context, Any]) -> list[str]:
        found = (await self._result(info)).get("unsupplied", [])
        return [u["id"] for u in found if u["critical"] and _in_scope(info, u["area_id"])]

    @strawberry.field(description="Supplied consumers under their minimum pressure.")
    async def below_minimum(self, info: Info[Context, Any]) -> list[ScenarioShortfall]:
        found = (await self._result(info)).get("below_minimum", [])
        return [ScenarioShortfall(id=b["id"], node_id=b["node_id"], area_id=b["area_id"],
                                  pressure_pa_gauge=_num(b["pressure_pa_gauge"]),
                                  min_pressure_pa_gauge=b["min_pressure_pa_gauge"],
                                  critical=b["critical"])
                for b in found if _in_scope(info, b["area_id"])]

    @strawberry.field(description="Branches (pipes, valves, stations) whose flow changed direction.")
    async def reversals(self, info: Info[Context, Any]) -> list[str]:
        return list((await self._result(info)).get("reversals", []))

    @strawberry.field(description="Gas escaping through each burst.")
    async def burst_leaks(self, info: Info[Context, Any]) -> list[BurstLeak]:
        found = (await self._result(info)).get("burst_leaks_kg_s", {})
        return [BurstLeak(pipe_id=p, leak_kg_s=float(q or 0.0)) for p, q in found.items()]

    @strawberry.field(description="Nodes whose pressure changed by at least minAbsChangePa, the "
                                  "largest change first (unsupplied nodes count as changed by "
                                  "all their pressure).")
    async def nodes(self, info: Info[Context, Any], min_abs_change_pa: float = 100.0,
                    first: int = 500) -> list[ScenarioNode]:
        if not 1 <= first <= 10_000:
            raise ValueError("first must be between 1 and 10000")
        cols = (await self._result(info)).get("nodes")
        if not cols:
            return []
        rows = []
        for nid, area, p, dp, sup in zip(cols["id"], cols["area_id"], cols["pressure_pa_gauge"],
                                         cols["change_pa"], cols["supplied"], strict=True):
            change = _num(dp)
            if (change is None or abs(change) >= min_abs_change_pa) and _in_scope(info, area):
                rows.append(ScenarioNode(id=nid, area_id=area, pressure_pa_gauge=_num(p),
                                         change_pa=change, supplied=bool(sup)))
        rows.sort(key=lambda n: -abs(n.change_pa) if n.change_pa is not None else -math.inf)
        return rows[:first]


def _scenario(rec: StoredScenario) -> Scenario:
    return Scenario(id=rec.id, name=rec.name, created_at=rec.created_at, created_by=rec.created_by,
                    status=rec.status, error=rec.error, started_at=rec.started_at,
                    finished_at=rec.finished_at, spec=rec.spec, summary=_summary(rec.summary),
                    record=rec)


@strawberry.type(description="How to cut a burst pipe off from gas: the valves to close and the "
                             "stations to shut, against the live valve positions, and who loses "
                             "gas then.")
class BurstIsolation:
    burst_pipe: str
    feasible: bool = strawberry.field(description="False when a source lies inside the region "
                                                  "to isolate: valves cannot cut it off")
    reason: str = strawberry.field(description="Why not feasible, or a note; empty otherwise")
    valves_to_close: list[str]
    stations_to_shut: list[str]
    isolated_pipes: list[str] = strawberry.field(
        description="The burst's valve segment, grown across valves that cannot be operated")
    inoperable_valves_crossed: list[str]
    cut_off_nodes: list[str]
    cut_off_consumers: list[str]
    critical_cut_off: list[str]


def _isolation(plan: Any) -> BurstIsolation:
    return BurstIsolation(
        burst_pipe=plan.burst_pipe, feasible=plan.feasible, reason=plan.reason,
        valves_to_close=list(plan.valves_to_close), stations_to_shut=list(plan.regulators_to_shut),
        isolated_pipes=list(plan.isolated_pipes),
        inoperable_valves_crossed=list(plan.inoperable_valves_crossed),
        cut_off_nodes=list(plan.cut_off_nodes), cut_off_consumers=list(plan.cut_off_consumers),
        critical_cut_off=list(plan.critical_cut_off))


@strawberry.type(description="The scenario is queued; poll `scenario(id)` for its outcome.")
class ScenarioQueued:
    scenario: Scenario


@strawberry.type(description="The scenario cannot run as asked (unknown ids, values out of "
                             "range, no twin here); nothing was queued. The refusal is audited.")
class ScenarioRefusal:
    message: str


RunScenarioResult = Annotated[ScenarioQueued | ScenarioRefusal | Forbidden,
                              strawberry.union("RunScenarioResult")]


async def run_scenario(info: Info[Context, Any], input: ScenarioInput) -> RunScenarioResult:
    denied = await refusal(info, "twin.scenarios", "twin.scenario.run")
    if denied is not None:
        return denied
    ctx = info.context
    spec = _spec_of(input)
    runner = ctx.services.scenarios
    if runner is None:
        message = "the live twin does not run in this server process: no scenarios here"
        async with ctx.services.db.begin() as s:
            await audit.record(s, actor_of(ctx), audit.AuditEntry(
                "twin.scenario.run", [], {"name": input.name, "spec": spec, "reason": message},
                outcome="refused"))
        return ScenarioRefusal(message=message)
    try:
        rec = await runner.submit(spec, name=input.name, actor=actor_of(ctx))
    except ScenarioRejected as exc:
        return ScenarioRefusal(message=str(exc))
    return ScenarioQueued(scenario=_scenario(rec))


TWIN_MUTATIONS: list[Any] = [
    strawberry.mutation(resolver=run_scenario,
                        description="Queue a what-if scenario on the live twin (valves, "
                                    "set-points, shut stations, demands, bursts, new consumers); "
                                    "it runs in the background, one at a time."),
]


@strawberry.type
class TwinQuery:
    @strawberry.field(permission_classes=[Can("twin.read")],
                      description="The live twin's latest state (null before its first solve or "
                                  "where the twin does not run), optionally one area's part.")
    def network_state(self, info: Info[Context, Any], area: str | None = None) -> NetworkState | None:
        twin = info.context.services.twin
        if twin is None or twin.latest is None:
            return None
        return _state(twin.latest, twin.period_s, area, info.context.areas())

    @strawberry.field(permission_classes=[Can("twin.read")],
                      description="One what-if scenario (null if there is none with this id).")
    async def scenario(self, info: Info[Context, Any], id: str) -> Scenario | None:
        runner = scenario_records(info)
        rec = await runner.get(id) if runner is not None else None
        return _scenario(rec) if rec is not None and rec.kind == "what_if" else None

    @strawberry.field(permission_classes=[Can("twin.read")],
                      description="The newest what-if scenarios first, optionally of one status.")
    async def scenarios(self, info: Info[Context, Any], first: int = 20,
                        status: str | None = None) -> list[Scenario]:
        if not 1 <= first <= 200:
            raise ValueError("first must be between 1 and 200")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        runner = scenario_records(info)
        return [_scenario(r) for r in await runner.recent(first, status)] if runner else []

    @strawberry.field(permission_classes=[Can("twin.read")],
                      description="What to close to isolate a burst on a pipe, against the live "
                                  "valve positions (null before the twin's first solve or where "
                                  "it does not run).")
    async def burst_isolation(self, info: Info[Context, Any], pipe_id: str) -> BurstIsolation | None:
        runner = info.context.services.scenarios
        plan = await runner.isolation(pipe_id) if runner is not None else None
        return _isolation(plan) if plan is not None else None


@strawberry.type
class TwinSubscription:
    @strawberry.subscription(permission_classes=[Can("twin.read")],
                             description="The live twin's state after every solve (the latest "
                                         "one first, if any).")
    async def network_state_updates(self, info: Info[Context, Any], area: str | None = None
                                    ) -> AsyncGenerator[NetworkState, None]:
        twin = info.context.services.twin
        if twin is None:
            return
        scope = info.context.areas()
        async with info.context.services.bus.subscribe(TWIN_TOPIC) as sub:
            if twin.latest is not None:
                yield _state(twin.latest, twin.period_s, area, scope)
            async for msg in sub:
                if msg.get("type") == "twin" and twin.latest is not None:
                    yield _state(twin.latest, twin.period_s, area, scope)
