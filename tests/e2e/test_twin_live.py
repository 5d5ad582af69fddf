"""The live twin in a running server: measured boundary values in, modelled state out.

A small town written through the registry: a GRS (fed from a high-pressure source) on a
medium-pressure loop, a GRP down to a low-pressure street with households, a critical boiler
house on the medium-pressure side, and a remote line valve in front of it. The twin cycles
every 0.3 s; the test feeds station gauges like a driver would and reads `networkState`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator

import pytest
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from erp.services.registry import AssetRecord
from realtime.model import Quality, TagValue
from tests._live import LiveServer, start_live_server
from tests.e2e._network import seed_stations
from tests.e2e.test_telemetry_api import _apply, feed

AREA = "T1"
STATE = """query($area: String) { networkState(area: $area) {
  at status message iterations solveMs periodS totalDemandKgS
  nodes { id pressurePaGauge supplied } pipes { id massFlowKgS velocityMS }
  consumersBelowMinimum { id pressurePaGauge minPressurePaGauge critical supplied }
  residuals { tagPath measured modelled residual } } }"""


def _node(nid: str, level: str, kind: str = "junction") -> AssetRecord:
    return AssetRecord("node", nid, {"lat": 57.6, "lon": 39.8, "pressure_level": level,
                                     "area_id": AREA, "kind": kind})


def _pipe(pid: str, a: str, b: str, level: str, length: float, d: float) -> AssetRecord:
    return AssetRecord("pipe", pid, {
        "from_node_id": a, "to_node_id": b, "length_m": length, "inner_diameter_m": d,
        "material": "steel" if level != "low" else "pe", "roughness_m": 1e-4 if level != "low" else 7e-6,
        "pressure_level": level, "area_id": AREA})


def _station(sid: str, kind: str, inlet: str, outlet: str, lin: str, lout: str, sp: float) -> AssetRecord:
    return AssetRecord("station", sid, {
        "name": sid, "kind": kind, "inlet_node_id": inlet, "outlet_node_id": outlet,
        "inlet_level": lin, "outlet_level": lout, "outlet_setpoint_pa_gauge": sp,
        "capacity_m3h_std": 5_000, "lat": 57.6, "lon": 39.8, "area_id": AREA})


def _sp(spid: str, node: str, category: str, peak: float, annual: float, critical: str | None = None
        ) -> AssetRecord:
    values = {"node_id": node, "category": category, "peak_load_m3h_std": peak,
              "annual_volume_m3_std": annual, "lat": 57.6, "lon": 39.8, "area_id": AREA}
    if critical:
        values["critical_kind"] = critical
    if category == "household":
        values["min_pressure_pa_gauge"] = 1_800.0
    return AssetRecord("service_point", spid, values)


def town() -> list[AssetRecord]:
    """The test town (see the module docstring)."""
    recs = [AssetRecord("area", AREA, {"name": "Twin town"}),
            _node("SRC", "high", "source"), _node("M1", "medium"), _node("M2", "medium"),
            _node("M3", "medium"), _node("M4", "medium"), _node("M5", "medium"),
            _node("L1", "low"), _node("L2", "low"), _node("L3", "low"),
            _station("GRS-1", "GRS", "SRC", "M1", "high", "medium", 300_000),
            _station("GRP-1", "GRP", "M3", "L1", "medium", "low", 2_800),
            _pipe("PM1", "M1", "M2", "medium", 800, 0.15), _pipe("PM2", "M2", "M3", "medium", 600, 0.1),
            _pipe("PM3", "M1", "M3", "medium", 900, 0.1), _pipe("PM4", "M2", "M4", "medium", 400, 0.08),
            _pipe("PL1", "L1", "L2", "low", 150, 0.1), _pipe("PL2", "L2", "L3", "low", 120, 0.08),
            AssetRecord("valve", "V-1", {"from_node_id": "M4", "to_node_id": "M5",
                                         "pressure_level": "medium", "remotely_operable": True,
                                         "lat": 57.6, "lon": 39.8, "area_id": AREA}),
            _sp("BH-1", "M5", "critical", 120.0, 250_000.0, critical="boiler_house"),
            _sp("IND-1", "M4", "industrial", 200.0, 600_000.0),
            AssetRecord("meter", "M-IND-1", {"serial": "EK-0001", "model": "EK270",
                                             "kind": "industrial_corrector",
                                             "service_point_id": "IND-1", "area_id": AREA})]
    recs += [_sp(f"H-{k}", node, "household", 2.5, 1_500.0)
             for k, node in enumerate(["L2"] * 20 + ["L3"] * 30)]
    return recs


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    var = tmp_path_factory.mktemp("twin")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    seed_stations(url, town())
    server = start_live_server(var, url, twin_enabled=True, twin_period_s=0.3,
                               twin_air_temperature_c=-10.0, twin_estimation_every_s=1.5)
    try:
        yield server
    finally:
        server.stop()


def _state_after(live: LiveServer, predicate, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        body = live.gql(STATE, {"area": AREA}, role="dispatcher")
        assert "errors" not in body, body
        last = body["data"]["networkState"]
        if last is not None and predicate(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"twin state never matched; last: {last}")


def test_network_state_follows_measured_boundary_values(live: LiveServer) -> None:
    feed(live, {"station/GRS-1/p_in": 600_000.0, "station/GRS-1/p_out": 295_000.0,
                "station/GRP-1/p_out": 2_700.0, "valve/V-1/position": 100.0})
    state = _state_after(live, lambda s: s["status"] == "converged" and any(
        n["id"] == "L1" and abs(n["pressurePaGauge"] - 2_700.0) < 1.0 for n in s["nodes"]))
    p = {n["id"]: n["pressurePaGauge"] for n in state["nodes"]}
    assert p["SRC"] == pytest.approx(600_000.0)
    assert p["M1"] == pytest.approx(295_000.0, abs=1.0)  # the GRS holds what its gauge reads
    assert 295_000.0 > p["M2"] > p["M4"] > 200_000.0  # gas flows, pressure falls
    assert p["L1"] > p["L2"] > p["L3"] > 1_500.0
    assert state["totalDemandKgS"] > 0.001
    flows = {q["id"]: q["massFlowKgS"] for q in state["pipes"]}
    assert flows["PL1"] > flows["PL2"] > 0  # the street's first pipe carries both blocks
    assert state["solveMs"] < 5_000
    # GRP-1's inlet gauge is inside the model: its residual is reported (no value yet)
    feed(live, {"station/GRP-1/p_in": 280_000.0})
    state = _state_after(live, lambda s: bool(s["residuals"]))
    r = state["residuals"][0]
    assert r["tagPath"] == "station/GRP-1/p_in"
    assert r["residual"] == pytest.approx(280_000.0 - r["modelled"])
    # and the modelled values are tags like any other
    body = live.gql('{ tag(path: "twin/node/L3/p") { unit current { value quality } } }', role="dispatcher")
    tag = body["data"]["tag"]
    assert tag["unit"] == "Pa" and tag["current"]["value"] > 1_500.0
    assert tag["current"]["quality"] == "GOOD"


def test_closed_valve_and_low_outlet_show_up_as_consumer_shortfalls(live: LiveServer) -> None:
    feed(live, {"station/GRS-1/p_out": 295_000.0, "station/GRP-1/p_out": 1_200.0,
                "valve/V-1/position": 0.0})
    state = _state_after(live, lambda s: any(c["id"] == "BH-1" for c in s["consumersBelowMinimum"]))
    short = {c["id"]: c for c in state["consumersBelowMinimum"]}
    assert short["BH-1"]["critical"] and not short["BH-1"]["supplied"]
    assert "IND-1" not in short
    households = [c for c in short.values() if c["id"].startswith("H-")]
    assert len(households) == 50 and all(c["supplied"] for c in households)
    feed(live, {"station/GRP-1/p_out": 2_700.0, "valve/V-1/position": 100.0})
    state = _state_after(live, lambda s: not s["consumersBelowMinimum"])
    assert state["status"] == "converged"


def test_network_state_needs_a_role_that_reads_it(live: LiveServer) -> None:
    body = live.gql("{ networkState { status } }", role=None)
    assert body["data"] is None or body["data"]["networkState"] is None
    assert body["errors"][0]["message"].startswith("Forbidden")


SELECT = """mutation($k: String!, $a: String!, $act: String!, $v: Float) {
  selectCommand(targetKind: $k, assetId: $a, action: $act, reason: "twin test", value: $v) {
    __typename ... on CommandSuccess { command { id state needsOverride
      impact { consumersCutOff criticalCutOff minCriticalPressurePa method } } }
    ... on CommandRefusal { message rule } } }"""
CANCEL = 'mutation($id: String!) { cancelCommand(commandId: $id) { __typename } }'


def test_commands_are_judged_by_the_twin(live: LiveServer) -> None:
    feed(live, {"station/GRS-1/p_out": 295_000.0, "station/GRP-1/p_out": 2_700.0,
                "valve/V-1/position": 100.0})
    _state_after(live, lambda s: not s["consumersBelowMinimum"])
    body = live.gql(SELECT, {"k": "valve", "a": "V-1", "act": "close"}, role="dispatcher")
    result = body["data"]["selectCommand"]
    assert result["__typename"] == "CommandSuccess", body
    cmd = result["command"]
    impact = cmd["impact"]
    # the boiler house behind V-1 loses its gas: a critical cut-off, predicted hydraulically
    assert impact["method"] == "hydraulic"
    assert impact["consumersCutOff"] == 1 and impact["criticalCutOff"] == ["BH-1"]
    assert cmd["needsOverride"]
    live.gql(CANCEL, {"id": cmd["id"]}, role="dispatcher")
    # shutting GRP-1's outlet valve: the whole street (50 households) loses gas, the critical
    # boiler house on the medium-pressure side keeps its pressure
    feed(live, {"station/GRP-1/valve_pos": 100.0})
    body = live.gql(SELECT, {"k": "station", "a": "GRP-1", "act": "close"}, role="dispatcher")
    result = body["data"]["selectCommand"]
    assert result["__typename"] == "CommandSuccess", body
    impact = result["command"]["impact"]
    assert impact["method"] == "hydraulic"
    assert impact["consumersCutOff"] == 50 and impact["criticalCutOff"] == []
    assert 250_000.0 < impact["minCriticalPressurePa"] < 295_000.0
    live.gql(CANCEL, {"id": result["command"]["id"]}, role="dispatcher")


async def test_network_state_updates_stream_every_solve(live: LiveServer) -> None:
    token = live.tokens["dispatcher"]
    ws = WebsocketsTransport(url=live.ws_url, init_payload={"Authorization": f"Bearer {token}"},
                             subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL])
    seen: list[dict] = []
    async with Client(transport=ws) as session:
        async def listen() -> None:
            async for ev in session.subscribe(gql(
                    'subscription { networkStateUpdates(area: "T1") { at status '
                    'nodes { id pressurePaGauge } } }')):
                seen.append(ev["networkStateUpdates"])
                if len({s["at"] for s in seen}) >= 3:
                    return

        await asyncio.wait_for(listen(), 20)
    stamps = [s["at"] for s in seen]
    assert stamps == sorted(stamps) and len(set(stamps)) >= 3  # one per solve, in order
    assert all(s["status"] == "converged" for s in seen)
    assert {n["id"] for n in seen[-1]["nodes"]} >= {"M1", "L3"}


ESTIMATION = """query { networkState { estimation { at cycles converged message chi2PerDof
    factors { kind areaId factor stdPercent observable }
    suspectSensors { tagPath normalizedResidual residual } untestableSensors missingSensors } } }"""


def test_the_live_loop_estimates_demand_and_roughness_per_area(live: LiveServer) -> None:
    """A window of cycles with the stations' gauges and meters gives an estimate per area of
    T1; the streets' flows are those the zone scaling matched, so the demand stays at 1."""
    values = {"station/GRS-1/p_in": 600_000.0, "station/GRS-1/p_out": 295_000.0,
              "station/GRP-1/p_out": 2_700.0, "valve/V-1/position": 100.0,
              "station/GRS-1/flow": 400.0, "station/GRP-1/flow": 120.0}
    feed(live, values)
    first = live.gql(ESTIMATION, role="dispatcher")["data"]["networkState"]
    seen = first["estimation"]["at"] if first and first["estimation"] else None

    def fresh() -> dict | None:
        feed(live, values)  # keep the readings fresh while the window fills
        state = live.gql(ESTIMATION, role="dispatcher")["data"]["networkState"]
        est = state["estimation"] if state else None
        return est if est and est["at"] != seen and est["converged"] else None

    deadline = time.monotonic() + 60.0
    est = None
    while est is None and time.monotonic() < deadline:
        est = fresh()
        time.sleep(0.3)
    assert est is not None, "no estimate in 60 s"
    assert est["cycles"] >= 3 and est["message"] == "converged"
    kinds = {(f["kind"], f["areaId"]): f for f in est["factors"]}
    assert set(kinds) == {("demand", AREA), ("roughness", AREA)}
    assert all(f["stdPercent"] > 0 for f in est["factors"])
    demand = kinds[("demand", AREA)]
    assert demand["factor"] == pytest.approx(1.0, abs=0.1)
    assert est["suspectSensors"] == []
    assert "station/GRP-1/flow" not in est["missingSensors"]


def test_an_industrial_correctors_counter_sets_its_consumers_demand(live: LiveServer) -> None:
    """IND-1's corrector counts 500 m³/h (its profile peaks at 200): the twin takes the measured
    flow as that consumer's demand, the rise of the counter over the readings' span."""
    feed(live, {"station/GRS-1/p_in": 600_000.0, "station/GRS-1/p_out": 295_000.0,
                "station/GRP-1/p_out": 2_700.0, "valve/V-1/position": 0.0})  # PM4 feeds IND-1 alone
    app = live.server.config.app
    now = dt.datetime.now(dt.UTC)

    def reading(volume_m3: float, seconds_ago: float) -> None:
        ts = now - dt.timedelta(seconds=seconds_ago)
        value = TagValue(volume_m3, Quality.GOOD, ts, ts)
        asyncio.run_coroutine_threadsafe(_apply(app, {"meter/M-IND-1/vb": value}),
                                         app.state.loop).result(timeout=5)

    reading(10_000.0, 120.0)
    time.sleep(1.0)  # a few twin cycles see the first reading
    reading(10_000.0 + 500.0 * 120.0 / 3600.0, 0.0)  # 500 m³/h over the two minutes
    want = 500.0 * app.state.twin._model.rho_std20 / 3600.0  # kg/s at standard conditions

    def pm4(state: dict) -> float:
        return next(q["massFlowKgS"] for q in state["pipes"] if q["id"] == "PM4")

    state = _state_after(live, lambda s: s["status"] == "converged"
                         and pm4(s) == pytest.approx(want, rel=1e-3))
    assert pm4(state) > 200.0 * app.state.twin._model.rho_std20 / 3600.0  # not its profile
    feed(live, {"valve/V-1/position": 100.0})
