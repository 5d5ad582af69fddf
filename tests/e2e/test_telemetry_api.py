"""Tags over GraphQL: latest values and quality, coalesced live updates, area scope."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import pytest
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from realtime.model import Quality, TagValue
from tests._live import LiveServer, start_live_server
from tests.e2e._network import seed_stations, station_records


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    var = tmp_path_factory.mktemp("telemetry")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    seed_stations(url, station_records("GRP-01", "NORTH") + station_records("GRP-02", "SOUTH"))
    server = start_live_server(var, url)
    try:
        yield server
    finally:
        server.stop()


def feed(live: LiveServer, values: dict[str, float], quality: Quality = Quality.GOOD) -> None:
    """Hand a driver-like batch to the server's pipeline, on the server's own loop."""
    app = live.server.config.app
    now = dt.datetime.now(dt.UTC)
    batch = {p: TagValue(v, quality, now, now) for p, v in values.items()}
    done = asyncio.run_coroutine_threadsafe(_apply(app, batch), app.state.loop)
    done.result(timeout=5)


async def _apply(app: object, batch: dict[str, TagValue]) -> None:
    app.state.telemetry.pipeline.on_values(batch)  # type: ignore[attr-defined]


def test_tags_and_latest_values(live: LiveServer) -> None:
    feed(live, {"station/GRP-01/p_out": 2790.0, "station/GRP-01/flow": 312.5})
    body = live.gql('{ tag(path: "station/GRP-01/p_out") { unit writable '
                    'current { value quality good } } '
                    'tags(filter: {assetIds: ["GRP-01"]}) { path } }')
    assert body["data"]["tag"] == {"unit": "Pa", "writable": False, "current": {
        "value": 2790.0, "quality": "GOOD", "good": True}}
    assert len(body["data"]["tags"]) == 7
    feed(live, {"station/GRP-01/p_out": 2790.0}, Quality.BAD_NOT_CONNECTED)
    q = live.gql('{ tag(path: "station/GRP-01/p_out") { current { quality qualityCode good } } }')
    # a Bad code has the top bit set: the full unsigned number, not an Int overflow error
    assert q == {"data": {"tag": {"current": {
        "quality": "BAD_NOT_CONNECTED", "qualityCode": 0x808A0000, "good": False}}}}


def test_tags_respect_area_scope(live: LiveServer) -> None:
    live.gql('mutation { createUser(input: {username: "north-op", password: "long-enough-9", '
             'role: "operator", areaIds: ["NORTH"]}) { __typename } }')
    login = live.gql('mutation { login(username: "north-op", password: "long-enough-9") '
                     '{ ... on LoginSuccess { accessToken } } }', role=None)
    token = login["data"]["login"]["accessToken"]
    body = live.gql('{ tags(filter: {pathPrefix: "station/"}) { path } '
                    'south: tag(path: "station/GRP-02/p_out") { path } }', token=token)
    assert {t["path"].split("/")[1] for t in body["data"]["tags"]} == {"GRP-01"}
    assert body["data"]["south"] is None
    assert live.gql("{ tags { path } }", role="consumer")["errors"][0]["extensions"][
        "code"] == "FORBIDDEN"


async def test_tag_updates_are_coalesced_to_max_rate(live: LiveServer) -> None:
    token = live.tokens["dispatcher"]
    ws = WebsocketsTransport(url=live.ws_url, init_payload={"Authorization": f"Bearer {token}"},
                             subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL])
    bus = live.server.config.app.state.services.bus
    batches: list[dict[str, object]] = []
    async with Client(transport=ws) as session:
        async def listen() -> None:
            async for ev in session.subscribe(gql(
                    'subscription { tagUpdates(assetIds: ["GRP-01"], maxRate: 4) '
                    '{ resync updates { path value } } }')):
                batches.append(ev["tagUpdates"])
                if any(u["value"] == 3000.0 for u in ev["tagUpdates"]["updates"]):
                    return

        task = asyncio.create_task(listen())
        for _ in range(300):
            if bus.subscriber_count("tags"):
                break
            await asyncio.sleep(0.01)
        t0 = asyncio.get_running_loop().time()
        for k in range(1, 101):  # 100 changes over ~1 s
            await asyncio.to_thread(feed, live, {"station/GRP-01/p_out": 2900.0 + k})
            await asyncio.sleep(0.01)
        await asyncio.wait_for(task, 10)
        elapsed = asyncio.get_running_loop().time() - t0
    assert batches[0]["resync"] is True  # the snapshot comes first
    live_batches = batches[1:]
    assert 1 <= len(live_batches) <= 4 * elapsed + 2, (len(live_batches), elapsed)
    assert live_batches[-1]["updates"][-1] == {"path": "station/GRP-01/p_out", "value": 3000.0}
    # Each batch holds one (the newest) value per path.
    for b in live_batches:
        paths = [u["path"] for u in b["updates"]]
        assert len(paths) == len(set(paths))


def test_ready_reports_tags(live: LiveServer) -> None:
    import httpx

    body = httpx.get(live.url + "/ready").json()
    # and the leak watch of areas D1 and D2, and the town's air temperature
    assert body["services"]["tags"] == 14 + 2 * 2 + 1




def test_history_raw_and_buckets(live: LiveServer) -> None:
    import time

    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    app = live.server.config.app
    batch_values = [2700.0, 2750.0, 2725.0, None]  # the last: the device failed
    for k, v in enumerate(batch_values):
        ts = t0 + dt.timedelta(seconds=k)
        value = TagValue(None, Quality.BAD_DEVICE_FAILURE, ts, ts) if v is None else TagValue(
            v * 100, Quality.GOOD, ts, ts)
        done = asyncio.run_coroutine_threadsafe(_apply(app, {"station/GRP-02/p_in": value}),
                                                app.state.loop)
        done.result(timeout=5)
    query = ('query($s: DateTime!, $e: DateTime!) { raw: history(paths: ["station/GRP-02/p_in"], '
             'start: $s, end: $e) { path points { ts value quality } } '
             'avg: history(paths: ["station/GRP-02/p_in"], start: $s, end: $e, bucketS: 60, '
             'aggregate: "max") { points { value } } }')
    variables = {"s": (t0 - dt.timedelta(minutes=1)).isoformat(),
                 "e": (t0 + dt.timedelta(minutes=1)).isoformat()}
    deadline = time.monotonic() + 10
    while True:
        body = live.gql(query, variables)
        points = body["data"]["raw"][0]["points"]
        if len(points) == 4:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    assert "errors" not in body, body
    assert [p["value"] for p in points] == [270000.0, 275000.0, 272500.0, None]
    assert [p["quality"] for p in points] == [0, 0, 0, 0x808B0000]  # BadDeviceFailure
    assert max(p["value"] for p in body["data"]["avg"][0]["points"]) == 275000.0
