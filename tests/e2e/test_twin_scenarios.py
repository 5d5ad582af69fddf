"""What-if scenarios as background jobs on the live twin, and burst isolation, over GraphQL.

The small town of `test_twin_live` (a GRS on a medium-pressure loop, a GRP down to a street of
50 households, a critical boiler house behind line valve V-1) with the live twin solving every
0.3 s at −10 °C. `runScenario` answers at once with a queued scenario; the tests poll
`scenario(id)` until it is done, and check what it found against what the town must do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from erp.adapters.db import create_engine, migrate, session_factory
from erp.services import audit
from erp.services import twin_scenarios as store
from server.twin_scenarios import ScenarioRejected, ScenarioRunner
from tests._live import LiveServer, start_live_server
from tests.e2e._network import seed_stations
from tests.e2e.test_telemetry_api import feed
from tests.e2e.test_twin_live import town

RUN = """mutation($input: ScenarioInput!) { runScenario(input: $input) {
  __typename ... on ScenarioQueued { scenario { id status name createdBy } }
  ... on ScenarioRefusal { message } ... on Forbidden { message } } }"""
SCENARIO = """query($id: String!, $min: Float! = 100) { scenario(id: $id) {
  id name status error createdBy createdAt finishedAt spec
  summary { solverStatus message unsupplied cutOff criticalUnsupplied belowMinimum reversals
            minPressurePaGauge totalLeakKgS totalDemandKgS baselineTotalDemandKgS
            designTemperatureC baselineAt }
  unsupplied criticalUnsupplied reversals
  belowMinimum { id pressurePaGauge minPressurePaGauge critical }
  burstLeaks { pipeId leakKgS }
  nodes(minAbsChangePa: $min) { id areaId pressurePaGauge changePa supplied } } }"""
ISOLATION = """query($p: String!) { burstIsolation(pipeId: $p) { burstPipe feasible reason
  valvesToClose stationsToShut isolatedPipes cutOffNodes cutOffConsumers criticalCutOff } }"""
STATE = "{ networkState { status totalDemandKgS consumersBelowMinimum { id } } }"
HOUSEHOLDS = sorted(f"H-{k}" for k in range(50))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    var = tmp_path_factory.mktemp("twin-scenarios")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    seed_stations(url, town())
    server = start_live_server(var, url, twin_enabled=True, twin_period_s=0.3,
                               twin_air_temperature_c=-10.0)
    try:
        feed(server, {"station/GRS-1/p_in": 600_000.0, "station/GRS-1/p_out": 295_000.0,
                      "station/GRP-1/p_out": 2_700.0, "valve/V-1/position": 100.0})
        _settled(server)
        yield server
    finally:
        server.stop()


def _settled(live: LiveServer, timeout_s: float = 90.0) -> dict[str, Any]:
    """The live state once it is converged with every consumer supplied above its minimum."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = live.gql(STATE, role="dispatcher")["data"]["networkState"]
        if state and state["status"] == "converged" and not state["consumersBelowMinimum"]:
            return state
        time.sleep(0.2)
    raise AssertionError(f"the live twin never settled: {state}")


def _run(live: LiveServer, inp: dict[str, Any], role: str = "dispatcher") -> dict[str, Any]:
    body = live.gql(RUN, {"input": inp}, role=role)
    assert "errors" not in body, body
    return body["data"]["runScenario"]


def _queued(live: LiveServer, inp: dict[str, Any]) -> str:
    result = _run(live, inp)
    assert result["__typename"] == "ScenarioQueued", result
    assert result["scenario"]["status"] in ("queued", "running", "done")
    assert result["scenario"]["createdBy"] == "dispatcher"
    return str(result["scenario"]["id"])


def _finished(live: LiveServer, sid: str, min_change: float = 100.0, timeout_s: float = 90.0,
              role: str = "dispatcher") -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    scen = None
    while time.monotonic() < deadline:
        body = live.gql(SCENARIO, {"id": sid, "min": min_change}, role=role)
        assert "errors" not in body, body
        scen = body["data"]["scenario"]
        if scen["status"] in ("done", "failed"):
            return scen
        time.sleep(0.1)
    raise AssertionError(f"scenario {sid} never finished: {scen}")


def test_closing_v1_cuts_off_the_critical_boiler_house_and_is_audited(live: LiveServer) -> None:
    sid = _queued(live, {"name": "close V-1", "valveChanges": [{"valveId": "V-1", "opening": 0}]})
    scen = _finished(live, sid)
    assert scen["status"] == "done", scen
    assert scen["name"] == "close V-1" and scen["error"] is None and scen["finishedAt"]
    assert scen["unsupplied"] == ["BH-1"]
    assert scen["criticalUnsupplied"] == ["BH-1"]
    s = scen["summary"]
    assert s["solverStatus"] == "converged"
    assert (s["unsupplied"], s["cutOff"], s["criticalUnsupplied"]) == (1, 1, 1)
    assert s["belowMinimum"] == 0 and s["totalLeakKgS"] == 0
    assert s["baselineAt"] is not None
    nodes = {n["id"]: n for n in scen["nodes"]}
    assert not nodes["M5"]["supplied"] and nodes["M5"]["changePa"] < -200_000.0
    assert all(n["supplied"] for k, n in nodes.items() if k != "M5")
    assert scen["spec"]["valve_changes"] == [{"valve_id": "V-1", "opening": 0.0}]
    # the live state is untouched: a scenario is a what-if
    assert not _settled(live)["consumersBelowMinimum"]
    # who asked for what, when: one audit record in the same transaction as the scenario
    log = live.gql('query($t: String!) { auditLog(first: 5, filter: {operationPrefix: '
                   '"twin.scenario", targetId: $t}) { edges { node { actor role operation '
                   'outcome ts diff targetIds } } } }', {"t": f"scenario:{sid}"}, role="admin")
    records = [e["node"] for e in log["data"]["auditLog"]["edges"]]
    assert len(records) == 1, log
    rec = records[0]
    assert (rec["actor"], rec["role"], rec["operation"], rec["outcome"]) == (
        "dispatcher", "dispatcher", "twin.scenario.run", "ok")
    assert rec["diff"]["spec"]["valve_changes"] == [{"valve_id": "V-1", "opening": 0.0}]
    assert rec["diff"]["status"] == {"before": None, "after": "queued"}
    assert dt.datetime.fromisoformat(rec["ts"]) <= dt.datetime.fromisoformat(scen["finishedAt"])


def test_a_burst_leaks_gas_and_pressures_fall(live: LiveServer) -> None:
    sid = _queued(live, {"name": "burst PM4", "bursts": [{"pipeId": "PM4", "holeDiameterMm": 20}]})
    scen = _finished(live, sid, min_change=1.0)
    assert scen["status"] == "done", scen
    leaks = {b["pipeId"]: b["leakKgS"] for b in scen["burstLeaks"]}
    assert leaks["PM4"] > 0.05  # a 20 mm hole at ~2.9 bar: choked flow, a few hundred g/s
    assert scen["summary"]["totalLeakKgS"] == pytest.approx(leaks["PM4"])
    assert scen["unsupplied"] == []
    change = {n["id"]: n["changePa"] for n in scen["nodes"]}
    assert change["M4"] < change["M2"] < 0  # nearest to the hole falls most
    assert change["M5"] < 0 and "M1" not in change  # the GRS holds its outlet
    assert scen["summary"]["minPressurePaGauge"] > 0


def test_design_temperature_raises_every_demand(live: LiveServer) -> None:
    now = _settled(live)["totalDemandKgS"]
    sid = _queued(live, {"name": "design day", "designTemperatureC": -31})
    scen = _finished(live, sid)
    assert scen["status"] == "done", scen
    s = scen["summary"]
    assert s["designTemperatureC"] == -31
    assert s["baselineTotalDemandKgS"] == pytest.approx(now, rel=0.05)
    assert s["totalDemandKgS"] > 1.05 * s["baselineTotalDemandKgS"]
    # colder and more gas: pressures fall everywhere downstream of the GRS
    assert all(n["changePa"] < 0 for n in scen["nodes"])
    # and with the demand factor on top
    sid2 = _queued(live, {"designTemperatureC": -31, "demandFactor": 2})
    s2 = _finished(live, sid2)["summary"]
    assert s2["totalDemandKgS"] == pytest.approx(2 * s["totalDemandKgS"], rel=1e-6)


def test_new_consumer_and_a_lower_setpoint(live: LiveServer) -> None:
    sid = _queued(live, {"setpointChanges": [{"stationId": "GRP-1", "setpointPaGauge": 1_500}],
                         "newConsumers": [{"id": "NEW-1", "nodeId": "L3", "demandM3hStd": 30,
                                           "minPressurePaGauge": 1_300, "critical": True}]})
    scen = _finished(live, sid)
    assert scen["status"] == "done", scen
    below = {b["id"]: b for b in scen["belowMinimum"]}
    assert set(HOUSEHOLDS) <= set(below)  # 1.5 kPa out of the GRP: under the households' 1.8
    assert scen["summary"]["totalDemandKgS"] > scen["summary"]["baselineTotalDemandKgS"]
    assert scen["unsupplied"] == []


def test_bad_input_is_refused_and_nothing_is_queued(live: LiveServer) -> None:
    before = live.gql("{ scenarios(first: 200) { id } }", role="dispatcher")["data"]["scenarios"]
    r = _run(live, {"valveChanges": [{"valveId": "V-404", "opening": 0}]})
    assert r["__typename"] == "ScenarioRefusal" and "V-404" in r["message"], r
    r = _run(live, {"valveChanges": [{"valveId": "V-1", "opening": 1.5}],
                    "bursts": [{"pipeId": "PM4", "holeDiameterMm": 20, "position": 2}],
                    "demandFactor": -1})
    assert r["__typename"] == "ScenarioRefusal"
    assert "opening" in r["message"] and "position" in r["message"] and "demand_factor" in r["message"]
    r = _run(live, {"bursts": [{"pipeId": "PM4", "holeDiameterMm": 500}]})
    assert r["__typename"] == "ScenarioRefusal" and "wider than the pipe" in r["message"], r
    r = _run(live, {"shutStations": ["V-1"], "newConsumers": [
        {"id": "BH-1", "nodeId": "L2", "demandM3hStd": 1}, {"id": "X", "nodeId": "NOPE",
                                                            "demandM3hStd": 1}]})
    assert r["__typename"] == "ScenarioRefusal"
    assert "V-1: not a regulator" in r["message"] and "BH-1: a consumer with this id" in r["message"]
    assert "NOPE" in r["message"]
    after = live.gql("{ scenarios(first: 200) { id } }", role="dispatcher")["data"]["scenarios"]
    assert after == before
    log = live.gql('{ auditLog(first: 1, filter: {operationPrefix: "twin.scenario", '
                   'outcome: "refused"}) { edges { node { actor diff } } } }', role="admin")
    node = log["data"]["auditLog"]["edges"][0]["node"]
    assert node["actor"] == "dispatcher" and "NOPE" in node["diff"]["reason"]


def test_who_may_run_and_read_scenarios(live: LiveServer) -> None:
    for role in ("crew", "operator", "integrator", "consumer"):
        r = _run(live, {"demandFactor": 1.1}, role=role)
        assert r["__typename"] == "Forbidden", (role, r)
    for role in ("admin", "engineer"):
        assert _run(live, {"demandFactor": 1.1}, role=role)["__typename"] == "ScenarioQueued"
    # reading: staff and integrators (twin.read), not consumers
    for role in ("crew", "integrator"):
        body = live.gql("{ scenarios(first: 3) { id status createdBy } }", role=role)
        assert "errors" not in body and body["data"]["scenarios"], (role, body)
    body = live.gql("{ scenarios(first: 3) { id } }", role="consumer")
    assert body["errors"][0]["message"].startswith("Forbidden")
    body = live.gql(ISOLATION, {"p": "PL2"}, role="consumer")
    assert body["errors"][0]["message"].startswith("Forbidden")


def test_scenarios_queue_and_list_newest_first(live: LiveServer) -> None:
    ids = [_queued(live, {"name": f"q{k}", "demandFactor": 1 + k / 10}) for k in range(3)]
    done = [_finished(live, sid) for sid in ids]
    assert [d["status"] for d in done] == ["done"] * 3
    listed = live.gql('{ scenarios(first: 3) { id name status summary { totalDemandKgS } '
                      'nodes(minAbsChangePa: 0, first: 2) { id } } }',
                      role="integrator")["data"]["scenarios"]
    assert [s["name"] for s in listed] == ["q2", "q1", "q0"]
    assert [s["id"] for s in listed] == ids[::-1]
    assert listed[0]["summary"]["totalDemandKgS"] > listed[2]["summary"]["totalDemandKgS"]
    assert all(len(s["nodes"]) == 2 for s in listed)  # list items fetch their outcome lazily
    assert live.gql('{ scenario(id: "no-such") { id } }', role="crew")["data"]["scenario"] is None


def test_burst_isolation_on_the_street(live: LiveServer) -> None:
    plan = live.gql(ISOLATION, {"p": "PL2"}, role="integrator")["data"]["burstIsolation"]
    assert plan["burstPipe"] == "PL2" and plan["feasible"] and plan["reason"] == ""
    # the street is one valve segment fed only by GRP-1: shut the GRP, the street loses gas
    assert plan["valvesToClose"] == [] and plan["stationsToShut"] == ["GRP-1"]
    assert plan["isolatedPipes"] == ["PL1", "PL2"]
    assert plan["cutOffNodes"] == ["L1", "L2", "L3"]
    assert plan["cutOffConsumers"] == HOUSEHOLDS and plan["criticalCutOff"] == []
    # PM4's segment is the whole medium-pressure loop (no valve in it): only shutting the GRS
    # isolates it, and everything behind the GRS loses gas, the boiler house too
    plan = live.gql(ISOLATION, {"p": "PM4"}, role="dispatcher")["data"]["burstIsolation"]
    assert plan["stationsToShut"] == ["GRS-1"] and plan["valvesToClose"] == []
    assert "BH-1" in plan["criticalCutOff"]
    body = live.gql(ISOLATION, {"p": "V-1"}, role="dispatcher")
    assert "it is a valve" in body["errors"][0]["message"]
    # the plan, run as a scenario, cuts off exactly those consumers
    sid = _queued(live, {"shutStations": plan["stationsToShut"],
                         "valveChanges": [{"valveId": v, "opening": 0} for v in plan["valvesToClose"]]})
    assert _finished(live, sid)["unsupplied"] == plan["cutOffConsumers"]


# --- the runner without a solved twin (no server) ---------------------------------------------


class _UnsolvedTwin:
    """A twin that has not solved yet."""

    error = "NetworkError: network has 1 problem(s): N9: not connected"
    latest = None

    def current(self) -> None:
        return None


async def test_a_scenario_without_a_solved_twin_fails_with_the_reason(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        await migrate(engine)
        db = session_factory(engine)
        runner = ScenarioRunner(db, _UnsolvedTwin())  # type: ignore[arg-type]
        await runner.start()
        with pytest.raises(ScenarioRejected, match="opening must be within"):
            await runner.submit({"valve_changes": [{"valve_id": "V", "opening": 3}]}, name="bad",
                                actor=audit.Actor("eng", "engineer"))
        rec = await runner.submit({"valve_changes": [{"valve_id": "V", "opening": 0}]},
                                  name="early", actor=audit.Actor("eng", "engineer"))
        assert rec.status == "queued" and rec.created_by == "eng"
        for _ in range(200):
            got = await runner.get(rec.id)
            assert got is not None
            if got.status == "failed":
                break
            await asyncio.sleep(0.02)
        assert got.status == "failed" and got.finished_at is not None
        assert "no solved state yet" in (got.error or "") and "N9: not connected" in (got.error or "")
        assert await runner.isolation("P1") is None
        await runner.stop()
        async with db() as s:
            listed = await store.list_scenarios(s, 10)
        assert [r.name for r in listed] == ["early"] and listed[0].result is None
    finally:
        await engine.dispose()
