"""With Redis, two server processes share live values: one polls, both answer."""

from __future__ import annotations

import time
from pathlib import Path

from tests._live import start_live_server
from tests.e2e._network import seed_stations, station_records
from tests.e2e.test_telemetry_api import feed


def test_a_value_fed_to_one_server_is_seen_by_the_other(tmp_path: Path, redis_url: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.sqlite3'}"
    seed_stations(url, station_records("GRP-01", "T1"))
    a = start_live_server(tmp_path / "a", url, redis_url=redis_url)
    b = start_live_server(tmp_path / "b", url, create_users=False, redis_url=redis_url)
    b.tokens.update(a.tokens)  # same signing key, same users
    try:
        query = '{ tag(path: "station/GRP-01/p_out") { current { value quality } } }'
        assert b.gql(query)["data"]["tag"]["current"] is None
        feed(a, {"station/GRP-01/p_out": 2777.0})
        deadline = time.monotonic() + 5
        while (b.gql(query)["data"]["tag"]["current"] or {}).get("value") != 2777.0:
            assert time.monotonic() < deadline, b.gql(query)
            time.sleep(0.05)
        assert b.gql(query)["data"]["tag"]["current"]["quality"] == "GOOD"
    finally:
        b.stop()
        a.stop()
