"""The GraphQL API from the outside: an independent client (gql), query counts, limits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest
from gql import Client, gql
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport
from sqlalchemy import event

from tests._live import LiveServer
from tests.e2e._network import seed_grid

PAGE = """
query($first: Int!, $after: String) {
  pipes(first: $first, after: $after, filter: {areaId: "T1"}) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { id lengthM innerDiameterMm
      fromNode { id lat lon pressureLevel { code } }
      toNode { id pressureLevel { code maxPaGauge } }
      pressureLevel { code } area { name } } }
  }
}"""


@pytest.fixture(scope="module")
def seeded(live_server: LiveServer) -> LiveServer:
    seed_grid(live_server.settings.database_url, 150)
    return live_server


@pytest.fixture
def sql_counter(seeded: LiveServer) -> Iterator[list[str]]:
    statements: list[str] = []
    lock = threading.Lock()
    engine = seeded.server.config.app.state.engine.sync_engine

    def count(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        with lock:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_page_paginates_with_cursors(seeded: LiveServer) -> None:
    first = seeded.gql(PAGE, {"first": 100})["data"]["pipes"]
    assert first["totalCount"] == 150
    assert len(first["edges"]) == 100 and first["pageInfo"]["hasNextPage"]
    second = seeded.gql(PAGE, {"first": 100, "after": first["pageInfo"]["endCursor"]})
    rest = second["data"]["pipes"]
    assert len(rest["edges"]) == 50 and not rest["pageInfo"]["hasNextPage"]
    ids = [e["node"]["id"] for e in first["edges"] + rest["edges"]]
    assert ids == sorted(set(ids))
    node = first["edges"][0]["node"]
    assert node["fromNode"]["pressureLevel"]["code"] == "low"
    assert node["innerDiameterMm"] == pytest.approx(51.4)


def test_nested_page_costs_a_constant_number_of_queries(seeded: LiveServer,
                                                        sql_counter: list[str]) -> None:
    counts = {}
    uncached = PAGE.replace("totalCount", "totalCount __typename")  # not served from the cache
    for size in (5, 100):
        sql_counter.clear()
        body = seeded.gql(uncached, {"first": size})
        assert len(body["data"]["pipes"]["edges"]) == size
        counts[size] = len(sql_counter)
    # auth (user + areas), page, count, nodes, levels, areas: no N+1.
    assert counts[5] == counts[100], counts
    assert counts[100] <= 8, sql_counter


def test_node_by_global_id(seeded: LiveServer) -> None:
    edges = seeded.gql(PAGE, {"first": 1})["data"]["pipes"]["edges"]
    gid = seeded.gql('{ pipes(first: 1) { edges { node { id } } } }')["data"]["pipes"][
        "edges"][0]["node"]["id"]
    assert gid == edges[0]["node"]["id"]
    body = seeded.gql('query($id: ID!) { node(id: $id) { id ... on Pipe { lengthM } } }',
                      {"id": gid})
    assert body["data"]["node"]["lengthM"] == pytest.approx(11.1)


def test_network_summary(seeded: LiveServer) -> None:
    s = seeded.gql("{ networkSummary { nodes pipes totalPipeLengthKm "
                   "byPressureLevel { key pipes lengthKm } byMaterial { key pipes } } }")
    summary = s["data"]["networkSummary"]
    assert summary["pipes"] == 150 and summary["nodes"] == 151
    assert summary["totalPipeLengthKm"] == pytest.approx(150 * 11.1 / 1000)
    assert summary["byMaterial"] == [{"key": "pe", "pipes": 150}]


@pytest.mark.parametrize("query, message", [
    ("{ pipes(first: 5) { edges { node { fromNode { area { name } } } } } }", None),
    ("{ " + " ".join(f"a{i}: networkSummary {{ nodes }}" for i in range(20)) + " }", "alias"),
    ("{ skzStations(first: 500) { edges { node { protectedPipes { fromNode { id lat } "
     "toNode { id lat } } } } } }", "costs"),
    ("{ pipes(first: 1) { edges { node { fromNode { area { id } } } } } }", None),
])
def test_limits(seeded: LiveServer, query: str, message: str | None) -> None:
    body = seeded.gql(query)
    if message is None:
        assert "errors" not in body, body
    else:
        assert body["data"] is None and message in body["errors"][0]["message"], body


def test_depth_limit(seeded: LiveServer) -> None:
    deep = "{ me { id } pipes(first: 1) { edges { node { fromNode { area { id } } } } } }"
    assert "errors" not in seeded.gql(deep)
    from schema.schema import Limits, build_schema

    strict = build_schema(Limits(max_depth=3))
    result = strict.execute_sync("{ pipes(first: 1) { edges { node { fromNode { id } } } } }")
    assert result.errors and "exceeds maximum operation depth" in result.errors[0].message


def test_page_size_is_capped(seeded: LiveServer) -> None:
    body = seeded.gql("{ pipes(first: 100000) { edges { node { id } } } }")
    assert "ask for smaller pages" in body["errors"][0]["message"]  # refused before running
    body = seeded.gql("query($n: Int!) { pipes(first: $n) { edges { node { id } } } }",
                      {"n": 100000})
    assert "first must be between 1 and 500" in body["errors"][0]["message"]


def test_unexpected_errors_are_masked(seeded: LiveServer) -> None:
    body = seeded.gql('{ pipes(first: 1, after: "bm90LWEtY3Vyc29y") { edges { cursor } } }')
    assert "invalid cursor" in body["errors"][0]["message"]


async def test_independent_client_query_mutation_subscription(seeded: LiveServer) -> None:
    token = seeded.tokens["engineer"]
    http = HTTPXAsyncTransport(url=seeded.graphql_url,
                               headers={"authorization": f"Bearer {token}"})
    ws = WebsocketsTransport(url=seeded.ws_url, init_payload={"Authorization": f"Bearer {token}"},
                             subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL])
    bus = seeded.server.config.app.state.services.bus
    async with Client(transport=http) as session:
        result = await session.execute(gql("{ networkSummary { pipes } }"))
        assert result["networkSummary"]["pipes"] >= 150
        async with Client(transport=ws) as live:
            events: list[dict[str, object]] = []

            async def listen() -> None:
                async for ev in live.subscribe(gql(
                        'subscription { assetChanges(kinds: ["node"]) { operation kind id actor } }'
                )):
                    events.append(ev["assetChanges"])
                    return

            task = asyncio.create_task(listen())
            for _ in range(200):  # wait until the server holds the subscription
                if bus.subscriber_count("registry"):
                    break
                await asyncio.sleep(0.01)
            created = await session.execute(gql(
                'mutation { createNode(input: {id: "GQL-1", lat: 57.7, lon: 39.9, '
                'pressureLevel: "low", areaId: "T1"}) { __typename ... on NetworkNodeSuccess '
                '{ asset { id } } } }'))
            assert created["createNode"]["__typename"] == "NetworkNodeSuccess", created
            await asyncio.wait_for(task, 10)
    assert events == [{"operation": "node.create", "kind": "node", "id": "GQL-1",
                       "actor": "engineer"}]


def test_websocket_refuses_foreign_origin(seeded: LiveServer) -> None:
    import websockets.sync.client as wsc
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus), wsc.connect(
            seeded.ws_url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            origin="http://evil.example"):  # type: ignore[arg-type]
        pass
    with wsc.connect(seeded.ws_url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                     origin="http://127.0.0.1:8000") as ok:  # type: ignore[arg-type]
        assert ok.subprotocol == "graphql-transport-ws"


def test_websocket_rejects_a_bad_token(seeded: LiveServer) -> None:
    import json

    import websockets.sync.client as wsc
    from websockets.exceptions import ConnectionClosed

    with wsc.connect(seeded.ws_url, subprotocols=["graphql-transport-ws"]) as conn:
        conn.send(json.dumps({"type": "connection_init",
                              "payload": {"Authorization": "Bearer nope"}}))
        with pytest.raises(ConnectionClosed) as info:
            conn.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4403


def test_graphiql_is_served(seeded: LiveServer) -> None:
    r = httpx.get(seeded.graphql_url, headers={"accept": "text/html"})
    assert r.status_code == 200 and "graphiql" in r.text.lower()


def test_subscriptions_per_connection_are_capped(seeded: LiveServer) -> None:
    import json

    import websockets.sync.client as wsc

    cap = seeded.settings.ws_max_subscriptions
    token = seeded.tokens["operator"]
    with wsc.connect(seeded.ws_url, subprotocols=["graphql-transport-ws"]) as conn:  # type: ignore[list-item]
        conn.send(json.dumps({"type": "connection_init",
                              "payload": {"Authorization": f"Bearer {token}"}}))
        assert json.loads(conn.recv(timeout=5))["type"] == "connection_ack"
        for k in range(cap + 1):
            conn.send(json.dumps({"id": str(k), "type": "subscribe", "payload": {
                "query": "subscription { assetChanges { id } }"}}))
        reply = json.loads(conn.recv(timeout=5))
    assert reply["id"] == str(cap) and reply["type"] == "error"
    assert "limit" in reply["payload"][0]["message"]


def test_response_cache_serves_repeats_and_sees_writes(seeded: LiveServer,
                                                       sql_counter: list[str]) -> None:
    query = '{ nodes(first: 3, filter: {areaId: "T1"}) { totalCount } }'
    before = seeded.gql(query)["data"]["nodes"]["totalCount"]
    sql_counter.clear()
    assert seeded.gql(query)["data"]["nodes"]["totalCount"] == before
    assert not any("FROM nodes" in s for s in sql_counter), sql_counter  # served from cache
    created = seeded.gql('mutation { createNode(input: {id: "CACHE-1", lat: 57.7, lon: 39.9, '
                         'pressureLevel: "low", areaId: "T1"}) { __typename } }')
    assert created["data"]["createNode"]["__typename"] == "NetworkNodeSuccess"
    assert seeded.gql(query)["data"]["nodes"]["totalCount"] == before + 1
    # Another user of another scope never gets this user's entry.
    assert seeded.gql(query, role="crew")["data"]["nodes"]["totalCount"] == before + 1
