"""What-if scenarios as background jobs (TWIN-2), and burst isolation, on the live twin.

`ScenarioRunner.submit` takes a scenario as plain data (what GraphQL's `runScenario` hands in,
see `normalize`), checks it — shape and ranges always, ids against the live twin's network when
it has one — records it `queued` with an audit record in the same transaction, and puts it on
this process's queue. One worker task takes scenarios one at a time: it marks the scenario
`running`, solves it in a worker thread (`twin_jax.scenario.run_scenario`, so the event loop
never waits for JAX) against the live twin's last good solve (`TwinRunner.current()`: its
parameters — measured set-points, valve positions, today's demands — and its result as the
baseline), and records it `done` with a summary and the whole outcome, or `failed` with the
reason (no solved state yet, a network that changed under the scenario, a solve that did not
converge: then the summary and outcome are kept all the same, to see how it went wrong).

Demands: `design_temperature_c` recomputes every consumer's demand from its SigLinDe profile
at that day-mean air temperature and the evening peak hour (`DESIGN_HOUR`, 18:00), replacing
today's (zone-scaled) estimates; `demand_factor` then multiplies every demand. New consumers
give their demand in m³/h at registry standard conditions (20 °C, 101.325 kPa), made mass with
the twin gas's density there.

`locate_leak(area, window_s)` queues a leak localization the same way (kind
`leak_localization`): run, it ranks every node by the live leak watch's last window of residuals
(`server/leak_watch.py`) and keeps the ranked candidates and the region as its result. The twin
runner asks for one by itself when the leak watch raises "leak suspected" in an area.

`isolation(pipe_id)` answers burst isolation (`twin_jax.isolation.IsolationIndex`, built once
per compiled network and kept) against the live valve positions: valves the last solve had
shut count as closed.

JAX is imported only inside the functions that solve (the twin runs, so it is loaded already).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from erp.services import audit
from erp.services import twin_scenarios as store
from erp.services.twin_scenarios import ScenarioRejected, StoredScenario
from server.job_worker import JobWorker
from server.twin_runner import TwinRunner

__all__ = ["DESIGN_HOUR", "MAX_PENDING", "ScenarioRejected", "ScenarioRunner", "normalize"]

log = logging.getLogger("gasops.twin.scenarios")

DESIGN_HOUR = 18
"""Local hour of a design-temperature scenario: the evening peak of household use."""
LOCALIZATION_WINDOW_MAX_S = 2 * 3600.0
"""A leak localization looks back at most this far (what the leak watch keeps)."""
MAX_PENDING = 20
"""Scenarios queued or running in one process at most; more are refused until some finish."""
MAX_ITEMS = 1_000
"""Entries per list of a scenario (valve changes, bursts, …) at most."""
MAX_PRESSURE_PA = 12_000_000.0
MAX_DEMAND_FACTOR = 10.0
TEMPERATURE_RANGE_C = (-60.0, 45.0)
MAX_NEW_CONSUMER_M3H = 100_000.0
_STD20_K = 293.15
_STD_PA = 101_325.0


# --- the plain spec --------------------------------------------------------------------------


def _finite(x: Any, what: str, problems: list[str]) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        problems.append(f"{what}: not a number")
        return None
    if not math.isfinite(v):
        problems.append(f"{what}: not a finite number")
        return None
    return v


def _or(value: Any, default: float) -> Any:
    return default if value is None else value


def _ids(items: Sequence[Any], what: str, problems: list[str]) -> None:
    seen: set[str] = set()
    for i in items:
        if i in seen:
            problems.append(f"{i}: named twice in {what}")
        seen.add(i)


def normalize(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The scenario as stored: checked for shape and ranges (not ids), defaults filled in.

    Keys (all optional): `valve_changes` [{valve_id, opening 0…1}], `setpoint_changes`
    [{station_id, setpoint_pa_gauge > 0}], `shut_stations` [station id], `demand_factor`
    (0…10, default 1), `design_temperature_c` (−60…45 °C, or None), `bursts` [{pipe_id,
    hole_diameter_mm > 0, position 0…1 (default 0.5)}], `new_consumers` [{id, node_id,
    demand_m3h_std ≥ 0, min_pressure_pa_gauge ≥ 0 (default 0), critical (default false)}].
    Raises `ScenarioRejected` listing every problem.
    """
    problems: list[str] = []
    unknown = sorted(set(spec) - {"valve_changes", "setpoint_changes", "shut_stations",
                                  "demand_factor", "design_temperature_c", "bursts",
                                  "new_consumers"})
    if unknown:
        problems.append(f"unknown scenario field(s): {', '.join(unknown)}")
    lists = {k: list(spec.get(k) or []) for k in ("valve_changes", "setpoint_changes",
                                                  "shut_stations", "bursts", "new_consumers")}
    for k, items in lists.items():
        if len(items) > MAX_ITEMS:
            problems.append(f"{k}: at most {MAX_ITEMS} entries")
    valves: list[dict[str, Any]] = []
    for c in lists["valve_changes"]:
        vid = str(c.get("valve_id", ""))
        o = _finite(c.get("opening"), f"{vid}: opening", problems)
        if o is not None and not 0.0 <= o <= 1.0:
            problems.append(f"{vid}: opening must be within 0…1 (0 closed, 1 open), got {o:g}")
        valves.append({"valve_id": vid, "opening": o})
    _ids([v["valve_id"] for v in valves], "the valve changes", problems)
    setpoints: list[dict[str, Any]] = []
    for c in lists["setpoint_changes"]:
        sid = str(c.get("station_id", ""))
        sp = _finite(c.get("setpoint_pa_gauge"), f"{sid}: set-point", problems)
        if sp is not None and not 0.0 < sp <= MAX_PRESSURE_PA:
            problems.append(f"{sid}: set-point must be above 0 and at most "
                            f"{MAX_PRESSURE_PA:.0f} Pa gauge, got {sp:g}")
        setpoints.append({"station_id": sid, "setpoint_pa_gauge": sp})
    _ids([s["station_id"] for s in setpoints], "the set-point changes", problems)
    shut = [str(s) for s in lists["shut_stations"]]
    _ids(shut, "the shut stations", problems)
    factor = _finite(_or(spec.get("demand_factor"), 1.0), "demand_factor", problems)
    if factor is not None and not 0.0 <= factor <= MAX_DEMAND_FACTOR:
        problems.append(f"demand_factor must be within 0…{MAX_DEMAND_FACTOR:g}, got {factor:g}")
    temp = spec.get("design_temperature_c")
    if temp is not None:
        temp = _finite(temp, "design_temperature_c", problems)
        lo, hi = TEMPERATURE_RANGE_C
        if temp is not None and not lo <= temp <= hi:
            problems.append(f"design_temperature_c must be within {lo:g}…{hi:g} °C, got {temp:g}")
    bursts: list[dict[str, Any]] = []
    for b in lists["bursts"]:
        pid = str(b.get("pipe_id", ""))
        d = _finite(b.get("hole_diameter_mm"), f"{pid}: hole diameter", problems)
        if d is not None and not d > 0:
            problems.append(f"{pid}: the hole's diameter must be above 0 mm, got {d:g}")
        pos = _finite(_or(b.get("position"), 0.5), f"{pid}: position", problems)
        if pos is not None and not 0.0 <= pos <= 1.0:
            problems.append(f"{pid}: position must be within 0 (from-node) … 1 (to-node), "
                            f"got {pos:g}")
        bursts.append({"pipe_id": pid, "hole_diameter_mm": d, "position": pos})
    _ids([b["pipe_id"] for b in bursts], "the bursts", problems)
    consumers: list[dict[str, Any]] = []
    for c in lists["new_consumers"]:
        cid = str(c.get("id", "")).strip()
        if not cid:
            problems.append("a new consumer needs an id")
        q = _finite(c.get("demand_m3h_std"), f"{cid}: demand", problems)
        if q is not None and not 0.0 <= q <= MAX_NEW_CONSUMER_M3H:
            problems.append(f"{cid}: demand must be within 0…{MAX_NEW_CONSUMER_M3H:g} m³/h, "
                            f"got {q:g}")
        pmin = _finite(_or(c.get("min_pressure_pa_gauge"), 0.0), f"{cid}: minimum pressure",
                       problems)
        if pmin is not None and not 0.0 <= pmin <= MAX_PRESSURE_PA:
            problems.append(f"{cid}: minimum pressure must be within 0…{MAX_PRESSURE_PA:.0f} Pa")
        consumers.append({"id": cid, "node_id": str(c.get("node_id", "")), "demand_m3h_std": q,
                          "min_pressure_pa_gauge": pmin, "critical": bool(c.get("critical"))})
    _ids([c["id"] for c in consumers], "the new consumers", problems)
    if problems:
        raise ScenarioRejected("; ".join(problems))
    return {"valve_changes": valves, "setpoint_changes": setpoints, "shut_stations": shut,
            "demand_factor": factor, "design_temperature_c": temp, "bursts": bursts,
            "new_consumers": consumers}


def twin_spec(model: Any, spec: Mapping[str, Any], *, demands: bool = True) -> Any:
    """The `twin_jax` `ScenarioSpec` of a normalized spec on the live twin's model; checks the
    ids against its network (`ScenarioRejected` listing every problem). `demands=False` leaves
    out the design-temperature demands (enough to check a spec)."""
    from server.twin_model import density_at
    from twin_jax.scenario import Burst, NewConsumer, ScenarioSpec, apply

    net = model.net
    problems: list[str] = []
    pipe_index = {pid: k for k, pid in enumerate(net.pipe_ids)}
    for b in spec["bursts"]:
        k = pipe_index.get(b["pipe_id"])
        if k is not None and b["hole_diameter_mm"] / 1e3 > float(net.branch_diameter_m[k]) * 1.0001:
            problems.append(f"{b['pipe_id']}: a hole of {b['hole_diameter_mm']:g} mm is wider than "
                            f"the pipe ({float(net.branch_diameter_m[k]) * 1e3:.0f} mm)")
    existing = set(net.consumer_ids)
    problems += [f"{c['id']}: a consumer with this id exists already"
                 for c in spec["new_consumers"] if c["id"] in existing]
    rho20 = density_at(net.gas, _STD20_K, _STD_PA)
    consumer_demand: dict[str, float] = {}
    if demands and spec["design_temperature_c"] is not None:
        values = model.demands_kg_s(float(spec["design_temperature_c"]), DESIGN_HOUR)
        consumer_demand = dict(zip(net.consumer_ids, (float(v) for v in values), strict=True))
    result = ScenarioSpec(
        valve_openings={v["valve_id"]: float(v["opening"]) for v in spec["valve_changes"]},
        regulator_setpoints_pa_gauge={s["station_id"]: float(s["setpoint_pa_gauge"])
                                      for s in spec["setpoint_changes"]},
        regulators_shut=tuple(spec["shut_stations"]),
        demand_factor=float(spec["demand_factor"]),
        consumer_demand_kg_s=consumer_demand,
        bursts=tuple(Burst(b["pipe_id"], b["hole_diameter_mm"] / 1e3, b["position"])
                     for b in spec["bursts"]),
        new_consumers=tuple(NewConsumer(c["id"], c["node_id"], c["demand_m3h_std"] * rho20 / 3600.0,
                                        c["min_pressure_pa_gauge"], c["critical"])
                            for c in spec["new_consumers"]))
    try:
        apply(net, model.base, result)  # checks every id and range against the network
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise ScenarioRejected("; ".join(problems))
    return result


# --- solving (worker thread) -----------------------------------------------------------------


def _solve(model: Any, params: Any, baseline: Any, spec: Mapping[str, Any],
           baseline_at: str | None) -> tuple[bool, dict[str, Any], dict[str, Any], str]:
    """(converged, summary, result, error) of one scenario against the live state."""
    import jax

    from twin_jax.scenario import apply, run_scenario
    from twin_jax.solve import Status, supplied_nodes

    net = model.net
    scen_spec = twin_spec(model, spec)
    t0 = time.perf_counter()
    outcome = run_scenario(net, params, scen_spec, baseline=baseline)
    scen = apply(net, params, scen_spec)
    supplied = np.asarray(jax.block_until_ready(supplied_nodes(net, scen)))
    solve_ms = (time.perf_counter() - t0) * 1e3
    was_supplied = np.asarray(baseline.state.supplied)

    node_area = dict(zip(net.node_ids, model.node_area, strict=True))
    consumers: dict[str, tuple[str, str | None, bool]] = {
        cid: (net.node_ids[int(n)], area, bool(crit)) for cid, n, area, crit in zip(
            net.consumer_ids, net.consumer_node.tolist(), model.consumer_area,
            np.asarray(net.consumer_critical).tolist(), strict=True)}
    for c in spec["new_consumers"]:
        consumers[c["id"]] = (c["node_id"], node_area.get(c["node_id"]), c["critical"])

    unsupplied = []
    for cid in outcome.unsupplied:
        node, area, critical = consumers[cid]
        unsupplied.append({"id": cid, "node_id": node, "area_id": area, "critical": critical,
                           "was_supplied": bool(was_supplied[net.node_index[node]])})
    below = [{"id": cid, "node_id": consumers[cid][0], "area_id": consumers[cid][1],
              "pressure_pa_gauge": p, "min_pressure_pa_gauge": pmin, "critical": crit}
             for cid, p, pmin, crit in outcome.below_minimum]
    leaks = dict(outcome.burst_leaks_kg_s)
    status = Status(int(outcome.status))
    demand = float(np.sum(np.asarray(scen.consumer_demand_kg_s))
                   + np.sum(np.asarray(scen.extra_demand_kg_s)))
    base_demand = float(np.sum(np.asarray(params.consumer_demand_kg_s))
                        + np.sum(np.asarray(params.extra_demand_kg_s)))
    summary = {
        "solver_status": status.name.lower(), "message": status.message,
        "iterations": outcome.iterations, "solve_ms": solve_ms, "baseline_at": baseline_at,
        "unsupplied": len(outcome.unsupplied),
        "cut_off": sum(1 for u in unsupplied if u["was_supplied"]),
        "critical_unsupplied": len(outcome.critical_unsupplied),
        "below_minimum": len(below), "critical_below_minimum": sum(1 for b in below if b["critical"]),
        "reversals": len(outcome.reversals),
        "min_pressure_pa_gauge": outcome.min_pressure_pa_gauge,
        "total_leak_kg_s": float(sum(leaks.values())),
        "total_demand_kg_s": demand, "baseline_total_demand_kg_s": base_demand,
        "design_temperature_c": spec["design_temperature_c"], "demand_factor": spec["demand_factor"],
    }
    result = {
        "nodes": {"id": list(net.node_ids), "area_id": list(model.node_area),
                  "pressure_pa_gauge": [outcome.pressure_pa_gauge[n] for n in net.node_ids],
                  "change_pa": [outcome.pressure_change_pa[n] for n in net.node_ids],
                  "supplied": supplied.astype(bool).tolist()},
        "branches": {"id": list(net.branch_ids),
                     "mass_flow_kg_s": [outcome.mass_flow_kg_s[b] for b in net.branch_ids]},
        "unsupplied": unsupplied,
        "critical_unsupplied": list(outcome.critical_unsupplied),
        "below_minimum": below,
        "reversals": list(outcome.reversals),
        "burst_leaks_kg_s": leaks,
    }
    ok = status is Status.CONVERGED
    return ok, summary, result, "" if ok else f"the scenario's solve {status.message}"


# --- the runner ------------------------------------------------------------------------------


def _place(model: Any, result: dict[str, Any]) -> None:
    """Put coordinates on a localization's candidates and its region's outline (WGS84)."""
    index = model.net.node_index
    for c in result["candidates"]:
        k = index[c["node_id"]]
        c["lat"], c["lon"] = _coord(model.node_lat[k]), _coord(model.node_lon[k])
    pts = np.array([(model.node_lon[index[n]], model.node_lat[index[n]])
                    for n in result["region_node_ids"]], dtype=np.float64).reshape(-1, 2)
    pts = np.unique(pts[np.all(np.isfinite(pts), axis=1)], axis=0)
    outline = pts
    if len(pts) >= 3:
        from scipy.spatial import ConvexHull, QhullError

        try:
            outline = pts[ConvexHull(pts).vertices]
        except QhullError:  # all on one line
            outline = pts[[0, -1]]
    result["region_outline"] = [[float(lat), float(lon)] for lon, lat in outline]


def _coord(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


class StoredScenarios:
    """Recorded twin jobs, read from the database: what every server process can answer,
    whether or not the live twin runs in it."""

    def __init__(self, db: Any) -> None:
        self._db = db

    async def get(self, scenario_id: str) -> StoredScenario | None:
        """One scenario with its whole outcome, or None."""
        async with self._db() as s:
            return await store.get(s, scenario_id)

    async def recent(self, first: int = 20, status: str | None = None,
                     kind: str = "what_if") -> list[StoredScenario]:
        """The newest jobs of a kind (without their full outcome: `get` one for it)."""
        async with self._db() as s:
            return await store.list_scenarios(s, first, status=status, kind=kind)


class ScenarioRunner(JobWorker[tuple[str, dict[str, Any]]]):
    """Queues what-if scenarios (and leak localizations) and runs them one at a time on the live
    twin (module docstring). The queue, its worker task, `start`/`stop` and `pending` are
    `JobWorker`'s; its queue carries each job's id, kind and spec."""

    _task_name = "twin-scenarios"
    _log = log
    _noun = "scenario"
    _crash_log = "scenario %s: could not be run or recorded"
    _crash_error = "internal error while running the scenario (see the server log)"
    _stopped_error = "the server stopped before the scenario finished; run it again"

    def __init__(self, db: Any, twin: TwinRunner, *, max_pending: int = MAX_PENDING) -> None:
        super().__init__(db, store, twin, max_pending=max_pending)
        self._index: tuple[Any, Any] | None = None  # (model, IsolationIndex of its network)
        self._index_lock = asyncio.Lock()

    # -- asking -------------------------------------------------------------------------------

    async def submit(self, spec: Mapping[str, Any], *, name: str, actor: audit.Actor) -> StoredScenario:
        """Check, record (queued, audited) and enqueue a scenario; `ScenarioRejected` (audited,
        nothing recorded) when it cannot run as asked."""
        try:
            normalized = normalize(spec)
            current = self._twin.current()
            if current is not None:
                twin_spec(current[0], normalized, demands=False)
            self._refuse_if_full(ScenarioRejected, "scenarios are queued or running",
                                 "try again when some have finished")
        except ScenarioRejected as exc:
            async with self._db.begin() as s:
                await audit.record(s, actor, audit.AuditEntry(
                    "twin.scenario.run", [], {"name": name, "spec": audit.jsonable(dict(spec)),
                                              "reason": str(exc)}, outcome="refused"))
            raise
        async with self._db.begin() as s:
            rec = await store.create(s, normalized, name=name, created_by=actor.username)
            await audit.record(s, actor, audit.AuditEntry(
                "twin.scenario.run", [f"scenario:{rec.id}"],
                {"name": name, "spec": rec.spec, "status": {"before": None, "after": "queued"}}))
        self._enqueue(rec.id, (rec.kind, normalized))
        return rec

    async def locate_leak(self, area: str | None, window_s: float, *, actor: audit.Actor
                          ) -> StoredScenario:
        """Check, record (queued, audited) and enqueue a leak localization over the last
        `window_s` of the leak watch, optionally within one area; `ScenarioRejected` (audited,
        nothing recorded) when it cannot run as asked."""
        spec = {"area": area, "window_s": window_s}
        name = f"leak localization {area or 'network'}"
        try:
            if not 60.0 <= window_s <= LOCALIZATION_WINDOW_MAX_S:
                raise ScenarioRejected(f"the window must be between 1 and "
                                       f"{LOCALIZATION_WINDOW_MAX_S / 60:.0f} minutes")
            model = self._twin.network_model
            if model is not None and area is not None and area not in set(model.node_area):
                raise ScenarioRejected(f"no nodes in area {area!r}")
            self._refuse_if_full(ScenarioRejected, "twin jobs are queued or running",
                                 "try again later")
        except ScenarioRejected as exc:
            async with self._db.begin() as s:
                await audit.record(s, actor, audit.AuditEntry(
                    "twin.leak.locate", [], {"spec": spec, "reason": str(exc)}, outcome="refused"))
            raise
        async with self._db.begin() as s:
            rec = await store.create(s, spec, name=name, created_by=actor.username,
                                     kind="leak_localization")
            await audit.record(s, actor, audit.AuditEntry(
                "twin.leak.locate", [f"scenario:{rec.id}"],
                {"spec": rec.spec, "status": {"before": None, "after": "queued"}}))
        self._enqueue(rec.id, (rec.kind, rec.spec))
        return rec

    async def get(self, scenario_id: str) -> StoredScenario | None:
        """One scenario with its whole outcome, or None."""
        return await StoredScenarios(self._db).get(scenario_id)

    async def recent(self, first: int = 20, status: str | None = None,
                     kind: str = "what_if") -> list[StoredScenario]:
        """The newest jobs of a kind (without their full outcome: `get` one for it)."""
        return await StoredScenarios(self._db).recent(first, status, kind)

    async def isolation(self, pipe_id: str) -> Any:
        """The `IsolationPlan` of a burst on `pipe_id` against the live valve positions; None
        before the twin's first good solve. `ScenarioRejected` for an id that is not a pipe."""
        current = self._twin.current()
        if current is None:
            return None
        model, params, _ = current
        index = await self._isolation_index(model)
        from twin_jax.isolation import UnknownIdError

        opening = np.asarray(params.valve_opening)
        closed = [vid for vid, o in zip(model.net.valve_ids, opening.tolist(), strict=True) if o <= 0.0]
        try:
            return await asyncio.to_thread(index.plan, pipe_id, closed_valves=closed)
        except UnknownIdError as exc:
            raise ScenarioRejected(str(exc)) from None

    async def _isolation_index(self, model: Any) -> Any:
        async with self._index_lock:
            if self._index is None or self._index[0] is not model:
                from twin_jax.isolation import IsolationIndex

                self._index = (model, await asyncio.to_thread(IsolationIndex, model.net))
            return self._index[1]

    # -- running ------------------------------------------------------------------------------

    async def _execute(self, sid: str, job: tuple[str, dict[str, Any]]) -> None:
        kind, spec = job
        if kind == "leak_localization":
            await self._localize(sid, spec)
        else:
            await self._what_if(sid, spec)

    async def _what_if(self, sid: str, spec: dict[str, Any]) -> None:
        async with self._db.begin() as s:
            await store.set_running(s, sid)
        state = await self._live_state(sid, "nothing to run the scenario against")
        if state is None:
            return
        model, params, baseline, at = state
        outcome = await self._in_thread(  # misfits when the network changed since it was queued
            sid, ScenarioRejected, "the scenario no longer fits the network",
            _solve, model, params, baseline, spec, at)
        if outcome is not None:
            await self._record(sid, *outcome)

    async def _localize(self, sid: str, spec: dict[str, Any]) -> None:
        async with self._db.begin() as s:
            await store.set_running(s, sid)
        model = self._twin.network_model
        watch = model.leak_watch if model is not None else None
        if watch is None:
            await self._fail(sid, "the live twin's leak watch has not started yet (it needs a "
                                  "solved network); nothing to localize from")
            return
        t0 = time.perf_counter()
        try:
            result = await asyncio.to_thread(watch.localize, spec.get("area"), float(spec["window_s"]))
        except ValueError as exc:
            await self._fail(sid, str(exc))
            return
        _place(model, result)
        best = result["candidates"][0] if result["candidates"] else None
        summary = {"detected": result["detected"], "cycles": result["cycles"],
                   "best_node_id": best["node_id"] if best else None,
                   "best_leak_m3h": best["leak_m3h"] if best else None,
                   "region_nodes": len(result["region_node_ids"]),
                   "seconds": round(time.perf_counter() - t0, 3)}
        async with self._db.begin() as s:
            await store.finish(s, sid, summary, result)
