"""Gas balance end to end: `gasBalance` over GraphQL and the CSV and XLSX downloads from a live
server, on two districts whose station flows are in the server's historian and whose meter
readings came through the smart-meter push endpoint. Permission `balance.read` and area scope
apply to the query and the downloads alike.

NORTH: GRP-N feeds 1 km of low-pressure pipe, SP-N1 (metered) and SP-N2 (no meter, 10 m³ a day).
SOUTH: ShRP-S feeds 2 km, SP-S1 (no meter, 20 m³ a day). The day is 10 November 2026, Moscow
time (2026-11-09T21:00Z to 2026-11-10T21:00Z), in the heating season. A last test runs the
query and the download in process against a historian that cannot be reached.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from starlette.applications import Starlette

from erp.adapters.db import create_engine, migrate, session_factory
from erp.domain.access import Principal
from erp.services import accounts, audit, readings, registry
from erp.services.registry import AssetRecord
from realtime.broadcast import Broadcast
from realtime.historian.base import HistorianUnavailable, Point
from schema.context import Context, Services
from schema.schema import build_schema
from server.exports import export_routes
from tests._live import LiveServer, start_live_server

T0 = dt.datetime(2026, 11, 9, 21, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
QUERY = """query($p: Date!, $g: String!, $a: String) { gasBalance(period: $p, granularity: $g,
  area: $a) { period granularity timeZone start end complete pricePerM3 unassignedServicePoints
  districts { ...P } branches { ...P } } }
fragment P on BalancePart { id kind name areaId stations inflowM3 meteredM3 unmeteredM3 leakageM3
  ownNeedsM3 imbalanceM3 imbalanceShare inflowRub meteredRub unmeteredRub leakageRub ownNeedsRub
  imbalanceRub inflowCoverage servicePoints estimatedServicePoints abnormal abnormalReason }"""
VARS = {"p": "2026-11-10", "g": "day"}
NORTH_M3 = {"inflowM3": "36.000", "meteredM3": "10.000", "unmeteredM3": "10.000",
            "leakageM3": "0.480", "ownNeedsM3": "12.000", "imbalanceM3": "3.520"}
NORTH_RUB = {"inflowRub": "298.80", "meteredRub": "83.00", "unmeteredRub": "83.00",
             "leakageRub": "3.98", "ownNeedsRub": "99.60", "imbalanceRub": "29.22"}
SOUTH_M3 = {"inflowM3": "24.000", "meteredM3": "0.000", "unmeteredM3": "20.000",
            "leakageM3": "0.960", "ownNeedsM3": "2.000", "imbalanceM3": "1.040"}


def _records() -> list[AssetRecord]:
    recs = []
    for area, sid, kind, length, points in (
            ("NORTH", "GRP-N", "GRP", 1000, (("SP-N1", 300), ("SP-N2", 3650))),
            ("SOUTH", "ShRP-S", "ShRP", 2000, (("SP-S1", 7300),))):
        recs.append(AssetRecord("area", area, {"name": f"District {area.title()}"}))
        for nid, level in ((f"{sid}-IN", "medium"), (f"{sid}-OUT", "low"), (f"{sid}-1", "low")):
            recs.append(AssetRecord("node", nid, {"lat": 57.6, "lon": 39.8,
                                                   "pressure_level": level, "area_id": area}))
        recs.append(AssetRecord("pipe", f"P-{sid}", {
            "from_node_id": f"{sid}-OUT", "to_node_id": f"{sid}-1", "length_m": length,
            "inner_diameter_m": 0.1, "material": "pe", "roughness_m": 7e-6,
            "pressure_level": "low", "area_id": area}))
        recs.append(AssetRecord("station", sid, {
            "name": f"{sid} {area.title()}", "kind": kind, "inlet_node_id": f"{sid}-IN",
            "outlet_node_id": f"{sid}-OUT", "inlet_level": "medium", "outlet_level": "low",
            "outlet_setpoint_pa_gauge": 2800, "capacity_m3h_std": 500, "lat": 57.6,
            "lon": 39.8, "area_id": area}))
        for sp, annual in points:
            recs.append(AssetRecord("service_point", sp, {
                "node_id": f"{sid}-1", "area_id": area, "category": "household", "lat": 57.6,
                "lon": 39.8, "annual_volume_m3_std": annual}))
    recs.append(AssetRecord("meter", "M-N1", {"serial": "EL16-1", "model": "Elehant SVG-1.6",
                                              "kind": "residential", "service_point_id": "SP-N1",
                                              "area_id": "NORTH"}))
    return recs


def _seed(url: str) -> str:
    """Migrate, write the network; the device token of meter M-N1."""
    out: list[str] = []

    async def run() -> None:
        engine = create_engine(url)
        try:
            await migrate(engine)
            async with session_factory(engine).begin() as s:
                actor = audit.Actor("test", "admin")
                await registry.bulk_import(s, _records(), actor)
                out.append(await readings.create_device_token(s, "M-N1", actor))
        finally:
            await engine.dispose()

    t = threading.Thread(target=lambda: asyncio.run(run()))
    t.start()
    t.join()
    return out[0]


def _write_flows(live: LiveServer) -> None:
    """A day of station flows (every 5 min) into the server's own historian, on its loop."""
    app: Any = live.server.config.app
    points = [Point(f"station/{sid}/flow", T0 + k * dt.timedelta(minutes=5), q)
              for k in range(24 * 12) for sid, q in (("GRP-N", 1.5), ("ShRP-S", 1.0))]
    asyncio.run_coroutine_threadsafe(app.state.services.historian.write(points),
                                     app.state.loop).result(timeout=30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    var = tmp_path_factory.mktemp("balance")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    device_token = _seed(url)
    server = start_live_server(var, url)
    try:
        r = httpx.post(server.url + "/api/push/meter-readings", timeout=10,
                       headers={"authorization": f"Device {device_token}"},
                       json={"readings": [{"ts": (T0 - 6 * H).isoformat(), "index_m3": 96.0},
                                          {"ts": (T0 + 6 * H).isoformat(), "index_m3": 102.0},
                                          {"ts": "2026-11-10T21:00:00Z", "index_m3": 109.0}]})
        assert r.json()["stored"] == 3, r.text  # 6 h of 6 m³ in 12 h, then 7 m³: 10 m³
        _write_flows(server)
        server.gql('mutation { createUser(input: {username: "d-south", password: '
                   '"long-enough-9", role: "dispatcher", areaIds: ["SOUTH"]}) { __typename } }')
        login = server.gql('mutation { login(username: "d-south", password: "long-enough-9") '
                           '{ ... on LoginSuccess { accessToken } } }', role=None)
        server.tokens["d-south"] = login["data"]["login"]["accessToken"]
        yield server
    finally:
        server.stop()


def _pick(part: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    return {k: part[k] for k in keys}


def test_the_balance_of_a_day(live: LiveServer) -> None:
    body = live.gql(QUERY, VARS, role="engineer")
    assert "errors" not in body, body
    g = body["data"]["gasBalance"]
    assert (g["period"], g["granularity"], g["timeZone"], g["complete"], g["pricePerM3"]) == (
        "2026-11-10", "day", "Europe/Moscow", True, "8.30")
    assert dt.datetime.fromisoformat(g["start"]) == T0
    assert dt.datetime.fromisoformat(g["end"]) == T0 + 24 * H
    districts = {d["id"]: d for d in g["districts"]}
    branches = {b["id"]: b for b in g["branches"]}
    assert sorted(districts) == ["NORTH", "SOUTH"] and sorted(branches) == ["GRP-N", "ShRP-S"]
    n = branches["GRP-N"]
    assert _pick(n, NORTH_M3) == NORTH_M3 and _pick(n, NORTH_RUB) == NORTH_RUB
    assert _pick(districts["NORTH"], NORTH_M3) == NORTH_M3
    assert _pick(branches["ShRP-S"], SOUTH_M3) == SOUTH_M3
    assert (n["kind"], n["areaId"], n["stations"], n["servicePoints"],
            n["estimatedServicePoints"], n["inflowCoverage"]) == (
        "branch", "NORTH", ["GRP-N"], 2, 1, 1.0)
    assert n["imbalanceShare"] == pytest.approx(3.52 / 36)
    # 9.8 % of the inflow unaccounted for is beyond the 5 % tolerance; 4.3 % is not.
    assert n["abnormal"] and "beyond ±5.00%" in n["abnormalReason"]
    assert not branches["ShRP-S"]["abnormal"] and branches["ShRP-S"]["abnormalReason"] is None
    assert districts["NORTH"]["name"] == "District North"
    for p in [*g["districts"], *g["branches"]]:
        parts = ("meteredM3", "unmeteredM3", "leakageM3", "ownNeedsM3", "imbalanceM3")
        assert sum(Decimal(p[k]) for k in parts) == Decimal(p["inflowM3"])
        money = [k.replace("M3", "Rub") for k in parts]
        assert sum(Decimal(p[k]) for k in money) == Decimal(p["inflowRub"])


def test_permission_and_area_scope(live: LiveServer) -> None:
    for role in ("operator", "crew", "integrator", None):
        body = live.gql(QUERY, VARS, role=role)
        assert body["data"] is None, role
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", role
    for role in ("admin", "dispatcher"):
        assert "errors" not in live.gql(QUERY, VARS, role=role)
    mine = live.gql(QUERY, VARS, token=live.tokens["d-south"])["data"]["gasBalance"]
    assert [d["id"] for d in mine["districts"]] == ["SOUTH"]
    assert [b["id"] for b in mine["branches"]] == ["ShRP-S"]
    other = live.gql(QUERY, {**VARS, "a": "NORTH"}, token=live.tokens["d-south"])
    assert other["data"]["gasBalance"]["districts"] == []
    one = live.gql(QUERY, {**VARS, "a": "NORTH"}, role="engineer")["data"]["gasBalance"]
    assert [b["id"] for b in one["branches"]] == ["GRP-N"]


def test_bad_arguments_are_readable(live: LiveServer) -> None:
    body = live.gql(QUERY, {**VARS, "g": "week"}, role="engineer")
    assert "granularity must be one of day, month" in body["errors"][0]["message"]
    body = live.gql(QUERY, {**VARS, "p": "2099-01-01"}, role="engineer")
    assert "has not begun" in body["errors"][0]["message"]


def _get(live: LiveServer, path: str, role: str | None = "engineer", token: str | None = None,
         **params: str) -> httpx.Response:
    tok = token or (live.tokens[role] if role else None)
    headers = {"authorization": f"Bearer {tok}"} if tok else {}
    return httpx.get(live.url + path, params={"period": "2026-11-10", "granularity": "day",
                                              **params}, headers=headers, timeout=30)


def test_csv_export(live: LiveServer) -> None:
    r = _get(live, "/export/gas-balance.csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="gas-balance-2026-11-10.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["level"], x["id"]) for x in rows] == [
        ("district", "NORTH"), ("district", "SOUTH"), ("branch", "GRP-N"), ("branch", "ShRP-S")]
    north = rows[2]
    assert {k: north[k] for k in ("inflow_m3", "metered_m3", "unmetered_m3", "leakage_m3",
                                  "own_needs_m3", "imbalance_m3")} == {
        "inflow_m3": "36.000", "metered_m3": "10.000", "unmetered_m3": "10.000",
        "leakage_m3": "0.480", "own_needs_m3": "12.000", "imbalance_m3": "3.520"}
    assert (north["inflow_rub"], north["leakage_rub"], north["imbalance_rub"]) == (
        "298.80", "3.98", "29.22")
    assert (north["imbalance_share"], north["price_per_m3"], north["abnormal"]) == (
        "0.097778", "8.30", "true")
    assert (north["period"], north["granularity"], north["stations"], north["area_id"]) == (
        "2026-11-10", "day", "GRP-N", "NORTH")
    assert "beyond" in north["abnormal_reason"] and rows[3]["abnormal"] == "false"
    for x in rows:
        parts = ("metered", "unmetered", "leakage", "own_needs", "imbalance")
        assert sum(Decimal(x[f"{k}_m3"]) for k in parts) == Decimal(x["inflow_m3"])
        assert sum(Decimal(x[f"{k}_rub"]) for k in parts) == Decimal(x["inflow_rub"])
    scoped = _get(live, "/export/gas-balance.csv", token=live.tokens["d-south"])
    assert [x["id"] for x in csv.DictReader(io.StringIO(scoped.text))] == ["SOUTH", "ShRP-S"]


def test_xlsx_export(live: LiveServer) -> None:
    r = _get(live, "/export/gas-balance.xlsx", area="NORTH")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert 'filename="gas-balance-2026-11-10-NORTH.xlsx"' in r.headers["content-disposition"]
    wb = load_workbook(io.BytesIO(r.content))
    assert wb.sheetnames == ["Districts", "Branches", "Period"]
    ws = wb["Branches"]
    header = [c.value for c in ws[1]]
    rows = [dict(zip(header, row, strict=True)) for row in ws.iter_rows(min_row=2)]
    assert [x["id"].value for x in rows] == ["GRP-N"]
    n = rows[0]
    assert n["inflow_m3"].value == 36 and n["leakage_m3"].value == pytest.approx(0.48)
    assert n["inflow_m3"].number_format == "#,##0.000"
    assert n["imbalance_rub"].value == pytest.approx(29.22)
    assert n["imbalance_rub"].number_format == "#,##0.00"
    assert n["imbalance_share"].value == pytest.approx(0.097778)
    assert n["imbalance_share"].number_format == "0.00%"
    assert n["abnormal"].value is True and n["service_points"].value == 2
    assert [c.value for c in wb["Districts"]["B"]] == ["id", "NORTH"]
    period = {row[0].value: row[1].value for row in wb["Period"].iter_rows()}
    assert (period["period"], period["time zone"], period["complete"]) == (
        "2026-11-10", "Europe/Moscow", True)


def test_export_needs_the_token_and_the_permission(live: LiveServer) -> None:
    r = _get(live, "/export/gas-balance.csv", role=None)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert _get(live, "/export/gas-balance.xlsx", role=None, token="nonsense").status_code == 401
    r = _get(live, "/export/gas-balance.xlsx", role="operator")
    assert r.status_code == 403 and "balance.read" in r.json()["error"]
    log = live.gql('{ auditLog(first: 5, filter: {outcome: "forbidden", actor: "operator"}) '
                   '{ edges { node { operation } } } }')
    assert "export.gas_balance" in [e["node"]["operation"]
                                    for e in log["data"]["auditLog"]["edges"]]
    assert _get(live, "/export/gas-balance.csv", period="10.11.2026").status_code == 400
    r = _get(live, "/export/gas-balance.csv", granularity="week")
    assert r.status_code == 400 and "granularity" in r.json()["error"]


class _Unreachable:
    """A historian whose backend is down (the adapters raise this when they cannot connect)."""

    async def buckets(self, *args: object, **kwargs: object) -> dict[str, Any]:
        raise HistorianUnavailable("connection refused")


async def test_an_unreachable_historian_is_said_so(tmp_path: Path) -> None:
    """In process (ASGI) with a historian that is down: 503 for the downloads, a readable
    UNAVAILABLE error for the query."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gasops.sqlite3'}"
    await asyncio.to_thread(_seed, url)
    engine = create_engine(url)
    try:
        db = session_factory(engine)
        async with db.begin() as s:
            user = await accounts.create_user(s, "eng", "long-enough-9", "engineer",
                                              audit.Actor("test", "admin"), all_areas=True)
        services = Services(db=db, bus=Broadcast(), signing_key="k" * 32,
                            historian=_Unreachable())  # type: ignore[arg-type]
        token = accounts.issue_access_token(user, services.signing_key, 60).token
        app = Starlette(routes=list(export_routes(services)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test") as client:
            r = await client.get("/export/gas-balance.csv", params={"period": "2026-11-10"},
                                 headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 503 and r.headers["retry-after"] == "60"
        ctx = Context(services=services, principal=Principal(user.id, "eng", "engineer", None))
        result = await build_schema().execute(QUERY, VARS, context_value=ctx)
        assert result.errors is not None
        assert result.errors[0].message == "the historian cannot be reached: try again later"
        assert result.errors[0].extensions == {"code": "UNAVAILABLE"}
    finally:
        await engine.dispose()

