"""The wall's map layer, its tiles and token renewal, from the outside."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._live import LiveServer, start_live_server
from tests.e2e._network import seed_grid

PNG = b"\x89PNG\r\n\x1a\n" + b"tile"
MAP = ("query($a: String) { networkMap(area: $a) { bounds tileSources { name urlTemplate } "
       "pipes { id areaId pressureLevel fromNodeId toNodeId path } points { kind id } } }")


@pytest.fixture(scope="module")
def mbtiles_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    var = tmp_path_factory.mktemp("map")
    tiles = var / "town.mbtiles"
    with sqlite3.connect(tiles) as con:
        con.execute("CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, "
                    "tile_row INTEGER, tile_data BLOB)")
        # XYZ tile 3/4/1 is TMS row 2^3 - 1 - 1 = 6.
        con.execute("INSERT INTO tiles VALUES (3, 4, 6, ?)", (PNG,))
    live = start_live_server(var, map_tiles_path=tiles, map_tiles_url="https://gis.example/{z}/{x}/{y}.png")
    seed_grid(live.settings.database_url, 4, area="NORTH")
    seed_grid(live.settings.database_url, 3, area="SOUTH")
    yield live
    live.stop()


def test_network_map_draws_pipes_of_the_callers_areas(mbtiles_server: LiveServer) -> None:
    body = mbtiles_server.gql(MAP)["data"]["networkMap"]
    assert len(body["pipes"]) == 7
    pipe = next(p for p in body["pipes"] if p["id"] == "NORTH-P-0001")
    assert (pipe["fromNodeId"], pipe["toNodeId"]) == ("NORTH-N-0001", "NORTH-N-0002")
    assert pipe["path"] == pytest.approx([57.6001, 39.8, 57.6002, 39.8])
    assert body["bounds"] == pytest.approx([57.6, 39.8, 57.6004, 39.8])
    assert [s["name"] for s in body["tileSources"]] == ["local tiles", "map server"]
    south = mbtiles_server.gql(MAP, {"a": "SOUTH"})["data"]["networkMap"]
    assert {p["areaId"] for p in south["pipes"]} == {"SOUTH"}


def test_network_map_needs_a_reader(mbtiles_server: LiveServer) -> None:
    body = mbtiles_server.gql(MAP, role="consumer")
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_tiles_come_from_the_mbtiles_file_with_the_row_flipped(mbtiles_server: LiveServer) -> None:
    ok = httpx.get(mbtiles_server.url + "/tiles/3/4/1.png")
    assert ok.status_code == 200 and ok.content == PNG
    assert ok.headers["content-type"] == "image/png"
    assert httpx.get(mbtiles_server.url + "/tiles/3/4/6.png").status_code == 404
    assert httpx.get(mbtiles_server.url + "/tiles/3/9/1.png").status_code == 404
    assert httpx.get(mbtiles_server.url + "/tiles/a/4/1.png").status_code == 400


def test_tiles_from_an_xyz_directory(tmp_path: Path) -> None:
    d = tmp_path / "xyz"
    (d / "2" / "1").mkdir(parents=True)
    (d / "2" / "1" / "3.png").write_bytes(PNG)
    live = start_live_server(tmp_path, map_tiles_path=d)
    try:
        assert httpx.get(live.url + "/tiles/2/1/3.png").content == PNG
        assert httpx.get(live.url + "/tiles/2/1/2.png").status_code == 404
        sources = live.gql("{ networkMap { tileSources { urlTemplate } } }")
        assert sources["data"]["networkMap"]["tileSources"] == [
            {"urlTemplate": "/tiles/{z}/{x}/{y}.png"}]
    finally:
        live.stop()


RENEW = ("mutation { renewToken { __typename ... on LoginSuccess { accessToken expiresAt } "
         "... on AuthError { message } } }")


def test_a_page_renews_its_access_token(mbtiles_server: LiveServer) -> None:
    body = mbtiles_server.gql(RENEW, role="dispatcher")["data"]["renewToken"]
    assert body["__typename"] == "LoginSuccess"
    fresh = body["accessToken"]
    me = mbtiles_server.gql("{ me { username } }", role=None, token=fresh)
    assert me["data"]["me"]["username"] == "dispatcher"
    anonymous = mbtiles_server.gql(RENEW, role=None)["data"]["renewToken"]
    assert anonymous["__typename"] == "AuthError"
    log = mbtiles_server.gql('{ auditLog(first: 1, filter: {operationPrefix: "auth.renew"}) '
                             '{ edges { node { actor outcome } } } }')
    assert log["data"]["auditLog"]["edges"][0]["node"] == {"actor": "dispatcher", "outcome": "ok"}


def test_api_tokens_are_not_renewed(mbtiles_server: LiveServer) -> None:
    made = mbtiles_server.gql('mutation { createApiToken(name: "scada", ttlDays: 3) '
                              '{ ... on ApiTokenSuccess { token } } }', role="integrator")
    token = made["data"]["createApiToken"]["token"]
    body = mbtiles_server.gql(RENEW, role=None, token=token)["data"]["renewToken"]
    assert body["__typename"] == "AuthError"
