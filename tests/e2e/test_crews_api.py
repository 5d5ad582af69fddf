"""Crews end to end: the live `crewPositions` feed filtered per subscriber (a foreman gets only
his crews, a dispatcher those of his areas, an operator is refused), `reportPosition` by a crew
member (audited, clear errors on bad input, nothing stored then), the `crews` and
`crewPositions` queries, and the demo's crew simulator reporting through the same path."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from sqlalchemy import insert

from erp.adapters import orm
from erp.adapters.db import create_engine, migrate, session_factory
from erp.services import accounts, audit, registry
from erp.services.crews import CREW_POSITIONS_TOPIC
from server.crew_sim import CrewSimulator
from tests._live import PASSWORD, LiveServer, start_live_server
from tests.e2e._network import grid_records

# user name → (role, areas); crew → (area, foreman, members)
PEOPLE = {
    "f-north": ("foreman", ["NORTH"]),
    "f-north-2": ("foreman", ["NORTH"]),
    "f-south": ("foreman", ["SOUTH"]),
    "c-north": ("crew", ["NORTH"]),
    "c-south": ("crew", ["SOUTH"]),
    "d-north": ("dispatcher", ["NORTH"]),
}
CREWS = {
    "C-N1": ("NORTH", "f-north", ["c-north"]),
    "C-N2": ("NORTH", "f-north-2", []),
    "C-S1": ("SOUTH", "f-south", ["c-south"]),
}
REPORT = """mutation($lat: Float!, $lon: Float!, $acc: Float!, $ts: DateTime) {
  reportPosition(lat: $lat, lon: $lon, accuracy: $acc, ts: $ts) { __typename
    ... on CrewPosition { crewId crewName areaId reportedBy lat lon accuracyM ts }
    ... on ValidationError { message fieldErrors { field message } }
    ... on PositionRefused { message } ... on Forbidden { message } } }"""
FEED = "subscription { crewPositions%s { crewId crewName lat lon accuracyM ts } }"
CREW_LIST = """query($area: String) { crews(area: $area) { id name areaId vehicle
  foreman { username fullName } members { username } lastPosition { lat lon reportedBy } } }"""
TRACK = """query($id: String!) { crewPositions(crewId: $id) { crewId lat lon accuracyM ts } }"""


def _in_thread(work: Any) -> None:
    t = threading.Thread(target=lambda: asyncio.run(work()))
    t.start()
    t.join()


def _seed(url: str) -> None:
    async def run() -> None:
        engine = create_engine(url)
        try:
            await migrate(engine)
            db = session_factory(engine)
            actor = audit.Actor("test", "admin")
            async with db.begin() as s:
                await registry.bulk_import(s, grid_records(8, "NORTH") + grid_records(8, "SOUTH"), actor)
                users = {
                    name: await accounts.create_user(
                        s, name, PASSWORD, role, actor, full_name=name.upper(), area_ids=areas
                    )
                    for name, (role, areas) in PEOPLE.items()
                }
                for cid, (area, foreman, _) in CREWS.items():
                    s.add(
                        orm.Crew(
                            id=cid,
                            name=f"Crew {cid}",
                            area_id=area,
                            vehicle=f"UAZ {cid}",
                            foreman_user_id=users[foreman].id,
                        )
                    )
                await s.flush()
                await s.execute(
                    insert(orm.crew_members),
                    [
                        {"crew_id": cid, "user_id": users[m].id}
                        for cid, (_, _, ms) in CREWS.items()
                        for m in ms
                    ],
                )
        finally:
            await engine.dispose()

    _in_thread(run)


def _login(live: LiveServer, username: str) -> str:
    body = live.gql(
        "mutation($u: String!, $p: String!) { login(username: $u, password: $p) "
        "{ ... on LoginSuccess { accessToken } } }",
        {"u": username, "p": PASSWORD},
        role=None,
    )
    return str(body["data"]["login"]["accessToken"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    var: Path = tmp_path_factory.mktemp("crews")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    _seed(url)
    server = start_live_server(var, url)
    for name in PEOPLE:
        server.tokens[name] = _login(server, name)
    try:
        yield server
    finally:
        server.stop()


def _report(
    live: LiveServer, who: str, lat: float = 57.6, lon: float = 39.8, acc: float = 5.0, ts: str | None = None
) -> dict[str, Any]:
    body = live.gql(REPORT, {"lat": lat, "lon": lon, "acc": acc, "ts": ts}, token=live.tokens[who])
    assert "errors" not in body, body
    return body["data"]["reportPosition"]  # type: ignore[no-any-return]


def _ws(live: LiveServer, who: str) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=live.ws_url,
        init_payload={"Authorization": f"Bearer {live.tokens[who]}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )


async def _until_subscribed(live: LiveServer, n: int) -> None:
    bus = live.server.config.app.state.services.bus
    for _ in range(500):
        if bus.subscriber_count(CREW_POSITIONS_TOPIC) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {n} subscribers on {CREW_POSITIONS_TOPIC}")


async def test_each_subscriber_gets_the_crews_the_rule_lets_him_see(live: LiveServer) -> None:
    got: dict[str, list[tuple[str, float]]] = {}

    async def follow(who: str, session: Any, last: str, area: str | None = None) -> None:
        got[who] = []
        async for ev in session.subscribe(gql(FEED % (f'(area: "{area}")' if area else ""))):
            p = ev["crewPositions"]
            got[who].append((p["crewId"], p["lat"]))
            if p["crewId"] == last:
                return

    async with (
        Client(transport=_ws(live, "f-north")) as foreman,
        Client(transport=_ws(live, "d-north")) as north,
        Client(transport=_ws(live, "dispatcher")) as everywhere,
        Client(transport=_ws(live, "admin")) as south_only,
    ):
        tasks = [
            asyncio.create_task(follow("f-north", foreman, "C-N1")),
            asyncio.create_task(follow("d-north", north, "C-N1")),
            asyncio.create_task(follow("dispatcher", everywhere, "C-N1")),
            asyncio.create_task(follow("admin", south_only, "C-S1", area="SOUTH")),
        ]
        await _until_subscribed(live, 4)
        # The foreman's own crew last: whatever reached him before it would show up first.
        for who, lat in (("f-north-2", 57.62), ("c-south", 57.63), ("c-north", 57.61)):
            assert (await asyncio.to_thread(_report, live, who, lat))["__typename"] == "CrewPosition"
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert got == {
        "f-north": [("C-N1", 57.61)],
        "d-north": [("C-N2", 57.62), ("C-N1", 57.61)],
        "dispatcher": [("C-N2", 57.62), ("C-S1", 57.63), ("C-N1", 57.61)],
        "admin": [("C-S1", 57.63)],
    }


async def test_an_operator_may_not_follow_crews(live: LiveServer) -> None:
    async with Client(transport=_ws(live, "operator")) as session:
        with pytest.raises(TransportQueryError, match="lacks 'crews.positions'"):
            async for _ in session.subscribe(gql(FEED % "")):
                pass


def test_a_crew_members_report_is_stored_and_audited(live: LiveServer) -> None:
    done = _report(live, "c-north", 57.6015, 39.8001, 7.5, "2099-01-01T00:00:00Z")
    assert done["__typename"] == "ValidationError"  # first a wrong clock
    assert (
        done["fieldErrors"][0]["field"] == "ts"
        and "ahead of the server's clock" in done["fieldErrors"][0]["message"]
    )
    done = _report(live, "c-north", 57.6015, 39.8001, 7.5)
    assert done["__typename"] == "CrewPosition", done
    pos = done
    assert (
        pos["crewId"],
        pos["crewName"],
        pos["areaId"],
        pos["reportedBy"],
        pos["lat"],
        pos["lon"],
        pos["accuracyM"],
    ) == ("C-N1", "Crew C-N1", "NORTH", "c-north", 57.6015, 39.8001, 7.5)
    log = live.gql(
        '{ auditLog(first: 5, filter: {operationPrefix: "crew.position", '
        'actor: "c-north"}) { edges { node { operation outcome role targetIds diff } } } }'
    )
    recs = [e["node"] for e in log["data"]["auditLog"]["edges"]][:2]  # newest first
    assert [(r["operation"], r["outcome"], r["role"], r["targetIds"]) for r in recs] == [
        ("crew.position.report", "ok", "crew", ["crew:C-N1"]),
        ("crew.position.report", "refused", "crew", []),
    ]
    assert recs[0]["diff"]["lat"] == 57.6015 and "ahead" in recs[1]["diff"]["reason"]
    crews = live.gql(CREW_LIST, token=live.tokens["f-north"])["data"]["crews"]
    assert [c["id"] for c in crews] == ["C-N1"]
    assert crews[0]["lastPosition"] == {"lat": 57.6015, "lon": 39.8001, "reportedBy": "c-north"}
    assert crews[0]["foreman"] == {"username": "f-north", "fullName": "F-NORTH"}
    assert crews[0]["members"] == [{"username": "c-north"}] and crews[0]["vehicle"] == "UAZ C-N1"


def test_bad_input_gets_a_clear_error_and_stores_nothing(live: LiveServer) -> None:
    before = live.gql(TRACK, {"id": "C-S1"}, token=live.tokens["f-south"])["data"]["crewPositions"]
    bad = _report(live, "c-south", 91.0, 200.0, -3.0)
    assert bad["__typename"] == "ValidationError"
    assert [(e["field"], e["message"]) for e in bad["fieldErrors"]] == [
        ("lat", "must be within -90…90 degrees (WGS84), got 91"),
        ("lon", "must be within -180…180 degrees (WGS84), got 200"),
        ("accuracy", "must be a finite radius of 0 m or more, got -3"),
    ]
    old = _report(live, "c-south", ts="2020-01-01T00:00:00Z")
    assert "kept for the current and the previous UTC day only" in old["fieldErrors"][0]["message"]
    after = live.gql(TRACK, {"id": "C-S1"}, token=live.tokens["f-south"])["data"]["crewPositions"]
    assert after == before
    for role, typename in (
        ("operator", "Forbidden"),
        ("dispatcher", "Forbidden"),
        ("crew", "PositionRefused"),
        ("foreman", "PositionRefused"),
    ):
        got = live.gql(REPORT, {"lat": 57.6, "lon": 39.8, "acc": 5.0}, role=role)
        assert got["data"]["reportPosition"]["__typename"] == typename, (role, got)
    assert (
        "not a member or the foreman of any crew"
        in live.gql(REPORT, {"lat": 57.6, "lon": 39.8, "acc": 5.0}, role="crew")["data"]["reportPosition"][
            "message"
        ]
    )


def test_crew_queries_follow_the_rule(live: LiveServer) -> None:
    def ids(who: str, area: str | None = None) -> list[str]:
        body = live.gql(CREW_LIST, {"area": area}, token=live.tokens[who])
        assert "errors" not in body, body
        return [c["id"] for c in body["data"]["crews"]]

    assert ids("f-north-2") == ["C-N2"]
    assert ids("d-north") == ["C-N1", "C-N2"]
    assert ids("dispatcher") == ["C-N1", "C-N2", "C-S1"]
    assert ids("dispatcher", "SOUTH") == ["C-S1"]
    assert ids("d-north", "SOUTH") == []
    refused = live.gql(CREW_LIST, role="operator")
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    _report(live, "f-north-2", 57.7)
    track = live.gql(TRACK, {"id": "C-N2"}, token=live.tokens["d-north"])["data"]["crewPositions"]
    assert track[-1]["lat"] == 57.7
    assert (
        live.gql(TRACK, {"id": "C-N2"}, token=live.tokens["f-north"])["data"]["crewPositions"] is None
    )  # not his crew: as if it were not there
    assert live.gql(TRACK, {"id": "C-N2"}, role="operator")["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_the_demo_simulator_moves_crews_along_their_pipes(live: LiveServer) -> None:
    state = live.server.config.app.state
    sim = CrewSimulator(state.services.db, state.services.bus, period_s=0.05, speed_m_s=100.0)

    def on_server(coro: Any) -> Any:  # the in-process bus belongs to the server's loop
        return asyncio.run_coroutine_threadsafe(coro, state.loop).result(10)

    seen: dict[str, list[tuple[float, float]]] = {}
    async with Client(transport=_ws(live, "dispatcher")) as session:

        async def follow() -> None:
            async for ev in session.subscribe(gql(FEED % "")):
                p = ev["crewPositions"]
                seen.setdefault(p["crewId"], []).append((p["lat"], p["lon"]))
                if len(seen) == 3 and all(len(v) >= 3 for v in seen.values()):
                    return

        task = asyncio.create_task(follow())
        await _until_subscribed(live, 1)
        on_server(sim.start())
        try:
            await asyncio.wait_for(task, 20)
        finally:
            on_server(sim.stop())
    assert sim.crew_ids == ["C-N1", "C-N2", "C-S1"]
    for track in seen.values():
        assert len(set(track)) > 1  # they move
        # along the grid's pipes: lon 39.8, lat from 57.6 to 57.6008 (8 pipes of 11 m)
        assert all(lon == pytest.approx(39.8) and 57.6 - 1e-9 <= lat <= 57.6008 + 1e-9 for lat, lon in track)
