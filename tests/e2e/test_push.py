"""Smart meter push over HTTP: device tokens, per-item results, idempotency, live values."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator

import httpx
import pytest

from erp.adapters.db import create_engine, session_factory
from erp.services import audit, readings
from erp.services.registry import AssetRecord
from tests._live import LiveServer, start_live_server
from tests.e2e._network import seed_stations, station_records


def _token(url: str, meter_id: str) -> str:
    out: list[str] = []

    async def run() -> None:
        engine = create_engine(url)
        try:
            async with session_factory(engine).begin() as s:
                out.append(await readings.create_device_token(s, meter_id,
                                                              audit.Actor("t", "admin")))
        finally:
            await engine.dispose()

    t = threading.Thread(target=lambda: asyncio.run(run()))
    t.start()
    t.join()
    return out[0]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    var = tmp_path_factory.mktemp("push")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    meter = AssetRecord("meter", "M-7", {"serial": "SGBM-7", "model": "Betar SGBM-4",
                                         "kind": "residential", "area_id": "T1"})
    seed_stations(url, [*station_records("GRP-01", "T1"), meter])
    server = start_live_server(var, url)
    try:
        yield server, _token(url, "M-7")
    finally:
        server.stop()


def _push(live: LiveServer, token: str | None, body: object) -> httpx.Response:
    headers = {"authorization": f"Device {token}"} if token else {}
    return httpx.post(live.url + "/api/push/meter-readings", json=body, headers=headers)


def test_push_stores_reports_per_item_and_is_idempotent(live: tuple[LiveServer, str]) -> None:
    server, token = live
    base = dt.datetime(2026, 12, 1, 6, tzinfo=dt.UTC)
    items = [{"ts": (base + dt.timedelta(hours=k)).isoformat(), "index_m3": 100.0 + k,
              "valve_open": True, "battery_pct": 90} for k in range(3)]
    bad = [{"ts": "2026-12-01T09:00:00", "index_m3": 1},  # no zone
           {"ts": "2026-12-01T10:00:00Z", "index_m3": -5},
           {"ts": "2026-12-01T11:00:00Z", "index_m3": 1, "colour": "red"}]
    r = _push(server, token, {"readings": items + bad + [items[0]]})
    body = r.json()
    assert r.status_code == 200, body
    assert (body["stored"], body["duplicate"], body["rejected"]) == (3, 1, 3)
    errors = {i["index"]: i.get("error", "") for i in body["items"] if i["status"] == "rejected"}
    assert "zone" in errors[3] and "index_m3" in errors[4] and "colour" in errors[5]
    again = _push(server, token, {"readings": items}).json()
    assert (again["stored"], again["duplicate"]) == (0, 3)
    tag = server.gql('{ tag(path: "meter/M-7/index") { current { value sourceTs } } }')
    assert tag["data"]["tag"]["current"]["value"] == 102.0


@pytest.mark.parametrize("token, body, status", [
    (None, {"readings": []}, 401),
    ("gsd_wrong", {"readings": []}, 401),
    ("VALID", {"nope": 1}, 400),
    ("VALID", [1, 2], 400),
])
def test_push_refuses_bad_requests(live: tuple[LiveServer, str], token: str | None, body: object,
                                   status: int) -> None:
    server, valid = live
    r = _push(server, valid if token == "VALID" else token, body)
    assert r.status_code == status and "error" in r.json()
