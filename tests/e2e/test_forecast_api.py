"""Demand forecasts over GraphQL in a running server (issue 8, ANA-2): fitted to the metered
history where the historian has enough of it, from the standard load profiles where not.

The two-street town of `test_leak_watch`; its past 90 days of station flows and air
temperature are written into the server's historian the way `gasops demo` does it
(`server/demo_history.seed_demo_history`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator

import pytest

from erp.services import accounts, audit
from server.demo_history import seed_demo_history
from tests._live import PASSWORD, LiveServer, start_live_server
from tests.e2e._network import seed_stations
from tests.e2e.test_leak_watch import two_streets

FORECAST = """query($area: String, $days: Int!, $hourly: Boolean!, $t: [Float!]) {
  demandForecast(area: $area, days: $days, hourly: $hourly, temperaturesC: $t) {
    areaId method reason historyDays fitRmsLogError designTemperatureC designDayM3 designHourM3h
    days { date temperatureC volumeM3 hourlyM3h } categories { category servicePoints volumeM3 } } }"""


def _server(tmp_path_factory: pytest.TempPathFactory, name: str) -> LiveServer:
    var = tmp_path_factory.mktemp(name)
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    seed_stations(url, two_streets())
    live = start_live_server(var, url, twin_enabled=True, twin_period_s=1.0)
    _add_scoped_user(live, "foreman-t2", "foreman", "T2")
    return live


def _add_scoped_user(live: LiveServer, name: str, role: str, area: str) -> None:
    """A user of one area (the suite's own users see every area), logged in."""
    app = live.server.config.app

    async def add() -> None:
        async with app.state.services.db.begin() as s:
            await accounts.create_user(s, name, PASSWORD, role, audit.Actor("test", "admin"),
                                       area_ids=[area])

    asyncio.run_coroutine_threadsafe(add(), app.state.loop).result(timeout=30)
    body = live.gql('mutation($u: String!, $p: String!) { login(username: $u, password: $p) '
                    '{ ... on LoginSuccess { accessToken } } }', {"u": name, "p": PASSWORD}, role=None)
    live.tokens[name] = body["data"]["login"]["accessToken"]


def _ready(live: LiveServer, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = live.gql("{ networkState { status } }", role="dispatcher")
        if body["data"]["networkState"] is not None:
            return
        time.sleep(0.3)
    raise AssertionError("the live twin never solved")


@pytest.fixture(scope="module")
def with_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = _server(tmp_path_factory, "forecast")
    app = live.server.config.app
    done = asyncio.run_coroutine_threadsafe(
        seed_demo_history(app.state.services.historian, two_streets(), dt.datetime.now(dt.UTC), days=90),
        app.state.loop)
    assert done.result(timeout=60) > 90 * 24 * 3
    _ready(live)
    try:
        yield live
    finally:
        live.stop()


def _forecast(live: LiveServer, role: str = "dispatcher", **variables) -> dict:
    return live.gql(FORECAST, {"area": None, "days": 7, "hourly": False, "t": None, **variables},
                    role=role)


def test_a_forecast_is_fitted_to_the_metered_history(with_history: LiveServer) -> None:
    body = _forecast(with_history, area="T1", days=3, hourly=True)
    assert "errors" not in body, body
    f = body["data"]["demandForecast"]
    assert f["method"] == "fitted" and f["areaId"] == "T1"
    assert 80 <= f["historyDays"] <= 90 and "fitted to" in f["reason"]
    assert 0 < f["fitRmsLogError"] < 0.1  # the history's noise is a few per cent
    days = f["days"]
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)).date() + dt.timedelta(days=1)
    assert [d["date"] for d in days] == [str(tomorrow + dt.timedelta(days=k)) for k in range(3)]
    for d in days:
        assert len(d["hourlyM3h"]) == 24 and sum(d["hourlyM3h"]) == pytest.approx(d["volumeM3"])
        assert d["volumeM3"] > 0
    # the design day is colder than any forecast day, so it needs more gas
    assert f["designTemperatureC"] == -31.0 and f["designDayM3"] > max(d["volumeM3"] for d in days)
    assert f["designHourM3h"] > f["designDayM3"] / 24
    cats = {c["category"]: c for c in f["categories"]}
    assert cats["household"]["servicePoints"] == 50  # T1's street; its other consumers besides
    assert set(cats) >= {"household", "industrial", "critical"}


def test_colder_days_ahead_need_more_gas(with_history: LiveServer) -> None:
    warm = _forecast(with_history, days=2, t=[5.0, 5.0])["data"]["demandForecast"]
    cold = _forecast(with_history, days=2, t=[-20.0, -20.0])["data"]["demandForecast"]
    assert warm["method"] == cold["method"] == "fitted"  # the whole network: every zone is metered
    assert cold["days"][0]["volumeM3"] > 1.5 * warm["days"][0]["volumeM3"]
    assert [d["temperatureC"] for d in cold["days"]] == [-20.0, -20.0]


def test_bad_requests_are_refused_with_a_reason(with_history: LiveServer) -> None:
    for variables, message in (({"days": 0}, "days must be between 1 and 31"),
                               ({"days": 2, "t": [1.0]}, "one temperature per day"),
                               ({"area": "NOPE"}, "no service points or nodes in area 'NOPE'")):
        body = _forecast(with_history, **variables)
        assert body["data"] is None and message in body["errors"][0]["message"], body
    # a foreman of T2 sees his own area only: he must name it, and not another
    for area in (None, "T1"):
        body = _forecast(with_history, role="foreman-t2", area=area)
        assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
    assert _forecast(with_history, role="foreman-t2", area="T2")["data"]["demandForecast"]["areaId"] == "T2"
    # and a consumer has no forecasts at all
    body = _forecast(with_history, role="consumer", area="T1")
    assert "Forbidden" in body["errors"][0]["message"], body


def test_without_history_the_profiles_answer(tmp_path_factory: pytest.TempPathFactory) -> None:
    live = _server(tmp_path_factory, "forecast-profile")
    try:
        _ready(live)
        f = _forecast(live, area="T2", days=1)["data"]["demandForecast"]
        assert f["method"] == "profile" and f["historyDays"] == 0
        assert "0 complete days of metered history, 28 needed" in f["reason"]
        assert f["fitRmsLogError"] is None
        assert [c["category"] for c in f["categories"]] == ["household"]
        assert f["categories"][0]["servicePoints"] == 30
        assert f["days"][0]["volumeM3"] == pytest.approx(f["categories"][0]["volumeM3"])
    finally:
        live.stop()
