"""The demo field: simulated OPC UA and Modbus devices → real drivers → tag store → GraphQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from erp.adapters.db import create_engine, migrate, session_factory
from erp.services import audit, registry, tags
from erp.services.registry import AssetRecord
from server.field import assign_demo_sources
from tests._live import LiveServer, start_live_server
from tests.e2e._network import station_records


def _seed(url: str) -> None:
    async def run() -> None:
        engine = create_engine(url)
        try:
            await migrate(engine)
            async with session_factory(engine).begin() as s:
                await registry.bulk_import(s, [
                    *station_records("GRP-01", "T1"),
                    AssetRecord("skz", "SKZ-01", {"name": "SKZ 1", "lat": 57.6, "lon": 39.8}),
                    AssetRecord("skz", "SKZ-02", {"name": "SKZ 2", "lat": 57.6, "lon": 39.8}),
                    AssetRecord("meter", "M-C1", {"serial": "C1", "model": "EK270",
                                                  "kind": "industrial_corrector"}),
                    AssetRecord("node", "V-FAR", {"lat": 57.6, "lon": 39.8,
                                                  "pressure_level": "medium", "area_id": "T1"}),
                    *(AssetRecord("valve", vid, {
                        "from_node_id": "GRP-01-IN", "to_node_id": "V-FAR",
                        "pressure_level": "medium", "remotely_operable": remote, "lat": 57.6,
                        "lon": 39.8, "area_id": "T1"}) for vid, remote in (("V-R1", True),
                                                                           ("V-M1", False))),
                ], audit.Actor("t", "admin"))
                await tags.ensure_tags(s)
                # 2 SKZ x 5 + corrector x 5, station x 7, remote valve x 3 (manual: no tag)
                assert await assign_demo_sources(s) == 15 + 7 + 3
        finally:
            await engine.dispose()

    t = threading.Thread(target=lambda: asyncio.run(run()))
    t.start()
    t.join()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    var = tmp_path_factory.mktemp("field")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    _seed(url)
    server = start_live_server(var, url, simulate_field=True, poll_period_s=0.2)
    try:
        yield server
    finally:
        server.stop()


def test_simulated_devices_feed_live_tags(live: LiveServer) -> None:
    query = '{ tags(filter: {pathPrefix: "skz/"}) { path current { value good } } ' \
            'vb: tag(path: "meter/M-C1/vb") { current { value good } } }'
    deadline = time.monotonic() + 15
    while True:
        data = live.gql(query)["data"]
        if all(t["current"] and t["current"]["good"] for t in data["tags"]) and data["vb"][
                "current"]:
            break
        assert time.monotonic() < deadline, data
        time.sleep(0.2)
    potentials = [t["current"]["value"] for t in data["tags"] if t["path"].endswith("potential")]
    assert len(potentials) == 2 and all(-1.15 <= v <= -0.85 for v in potentials)
    first = data["vb"]["current"]["value"]
    time.sleep(1.5)
    later = live.gql(query)["data"]["vb"]["current"]["value"]
    assert later > first  # the corrector counts gas


def test_station_values_arrive_over_opcua(live: LiveServer) -> None:
    query = '{ tags(filter: {assetIds: ["GRP-01"]}) { path current { value good } } }'
    deadline = time.monotonic() + 20
    while True:
        got = {t["path"].split("/")[-1]: t["current"] for t in live.gql(query)["data"]["tags"]}
        if all(v and v["good"] for v in got.values()):
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.3)
    assert 1000 < got["p_out"]["value"] < 5000  # low pressure, Pa gauge
    assert got["door"]["value"] in (True, False)


def test_remote_valve_position_comes_from_its_actuator(live: LiveServer) -> None:
    query = '{ tags(filter: {pathPrefix: "valve/"}) { path current { value good } } }'
    deadline = time.monotonic() + 15
    while True:
        got = {t["path"]: t["current"] for t in live.gql(query)["data"]["tags"]}
        if all(got.get(f"valve/V-R1/{n}") and got[f"valve/V-R1/{n}"]["good"]
               for n in ("position", "remote", "fault")):
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.2)
    # only remotely operable valves have tags: the actuator's feedback and status bits
    assert set(got) == {"valve/V-R1/position", "valve/V-R1/remote", "valve/V-R1/fault"}
    assert got["valve/V-R1/position"]["value"] == 100.0  # the actuator starts fully open
    assert got["valve/V-R1/remote"]["value"] is True and got["valve/V-R1/fault"]["value"] is False
