"""The live twin's leak watch in a running server: a street's metered inflow grows as if gas
escaped there, and "leak suspected" comes through the alarm engine with the estimated leak.

The town of `test_twin_live` (a GRS on a medium-pressure loop, GRP-1 to a low-pressure street,
area T1) and a second street behind GRP-2 (area T2): the leak watch needs more than one metered
zone to tell a leak from a town-wide change of demand. The twin cycles every 0.3 s, its leak
watch learns for 6 s. A feeder plays the stations' drivers: gauges and flow meters with 1 %
noise, every 0.15 s.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest

from erp.services.registry import AssetRecord
from tests._live import LiveServer, start_live_server
from tests.e2e._network import seed_stations
from tests.e2e.test_telemetry_api import feed
from tests.e2e.test_twin_live import AREA, _node, _pipe, _sp, _station, town

WATCH = """query { networkState { leakWatch { areaId level z alarm leakM3hStd observable warmingUp } } }"""
ALARMS = "{ activeAlarms { id tag status value message priority } }"
LOCATION = """id createdBy status error areaId windowMinutes detected cycles
    candidates { nodeId areaId leakM3h score lat lon } regionNodeIds regionOutline"""
LOCATIONS = f"{{ leakLocalizations(first: 10) {{ {LOCATION} }} }}"
LOCATE = f"""mutation($area: String, $w: Float!) {{ locateLeak(area: $area, windowMinutes: $w) {{
    __typename ... on LeakLocalizationQueued {{ localization {{ {LOCATION} }} }}
    ... on ScenarioRefusal {{ message }} ... on Forbidden {{ message }} }} }}"""
GRP_FLOW_M3H = 120.0  # the street's consumption as GRP-1's meter reads it
GRP2_FLOW_M3H = 80.0
GRS_FLOW_M3H = 900.0


def two_streets() -> list[AssetRecord]:
    """`town()` and a second street, L4–L5 behind GRP-2 on M2, in its own area T2."""
    second = [_node("L4", "low"), _node("L5", "low"),
              _station("GRP-2", "GRP", "M2", "L4", "medium", "low", 2_800),
              _pipe("PL4", "L4", "L5", "low", 200, 0.1)]
    second += [_sp(f"H2-{k}", "L5", "household", 2.5, 1_500.0) for k in range(30)]
    for r in second:
        r.values["area_id"] = "T2"
    return [*town(), AssetRecord("area", "T2", {"name": "Second street"}), *second]


class Feeder:
    """The stations' drivers: set-point gauges, and flow meters with 1 % noise."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.leak_m3h = 0.0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._rng = random.Random(4)
        self._thread = threading.Thread(target=self._run, daemon=True, name="feeder")

    def _run(self) -> None:
        try:
            self._feed()
        except BaseException as exc:  # the test checks it: a dead feeder would look like a quiet town
            self.error = exc

    def _feed(self) -> None:
        while not self._stop.wait(0.15):
            noise = lambda: 1.0 + self._rng.gauss(0.0, 0.01)  # noqa: E731
            feed(self.live, {
                "station/GRS-1/p_in": 600_000.0, "station/GRS-1/p_out": 295_000.0,
                "station/GRP-1/p_out": 2_700.0, "valve/V-1/position": 100.0,
                "station/GRP-2/p_out": 2_750.0, "station/GRP-2/flow": GRP2_FLOW_M3H * noise(),
                "station/GRP-1/flow": (GRP_FLOW_M3H + self.leak_m3h) * noise(),
                "station/GRS-1/flow": (GRS_FLOW_M3H + self.leak_m3h) * noise()})

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    var = tmp_path_factory.mktemp("leaks")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    seed_stations(url, two_streets(), alarm_definitions=True)
    server = start_live_server(var, url, twin_enabled=True, twin_period_s=0.3,
                               twin_air_temperature_c=-10.0, twin_leak_warmup_s=6.0)
    try:
        yield server
    finally:
        server.stop()


def _watch(live: LiveServer, area: str = AREA) -> dict | None:
    body = live.gql(WATCH, role="dispatcher")
    assert "errors" not in body, body
    state = body["data"]["networkState"]
    rows = {w["areaId"]: w for w in state["leakWatch"]} if state else {}
    return rows.get(area)


def _until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what} never happened (last: {last})")


def _leak_alarm(live: LiveServer) -> dict | None:
    body = live.gql(ALARMS, role="dispatcher")
    return next((a for a in body["data"]["activeAlarms"] if a["tag"] == f"area/{AREA}/leak"), None)


def test_a_leak_in_the_street_is_suspected_through_the_alarm_engine(live: LiveServer) -> None:
    with Feeder(live) as feeder:
        quiet = _until(lambda: (w := _watch(live)) and not w["warmingUp"] and w, 60, "warm-up")
        assert feeder.error is None
        assert quiet["observable"] and not quiet["alarm"]
        assert {w["areaId"] for w in live.gql(WATCH, role="dispatcher")["data"]["networkState"][
            "leakWatch"]} == {AREA, "T2"}
        time.sleep(6.0)  # 20 cycles of the quiet town: no alarm
        assert not _watch(live)["alarm"] and _leak_alarm(live) is None
        feeder.leak_m3h = 0.05 * GRP_FLOW_M3H  # 5 % of the street's gas escapes
        raised = _until(lambda: _leak_alarm(live), 30, "the leak alarm")
        assert "leak suspected" in raised["message"] and raised["priority"] == "medium"
        watch = _watch(live)
        assert watch["alarm"] and watch["level"] >= 1.0
        assert not _watch(live, "T2")["alarm"]  # not the other street
        _check_localizations(live)
        assert watch["leakM3hStd"] == pytest.approx(6.0, rel=0.5)  # the fit, m³/h
        tag = live.gql(f'{{ tag(path: "area/{AREA}/leak") {{ unit current {{ value }} }} }}',
                       role="dispatcher")["data"]["tag"]
        assert tag["unit"] == "m3/h" and tag["current"]["value"] == pytest.approx(6.0, rel=0.5)
        feeder.leak_m3h = 0.0  # repaired
        _until(lambda: not _watch(live)["alarm"], 60, "the leak watch clearing")
        tag = live.gql(f'{{ tag(path: "area/{AREA}/leak") {{ current {{ value }} }} }}',
                       role="dispatcher")["data"]["tag"]
        assert tag["current"]["value"] == 0.0
        # the alarm returned to normal: unacknowledged, it stays listed until acknowledged
        gone = _until(lambda: (a := _leak_alarm(live)) is None or a["status"] == "rtn_unack" and a,
                      10, "the alarm returning to normal")
        assert gone is True or gone["status"] == "rtn_unack"


def _finished(live: LiveServer, loc_id: str) -> dict | None:
    body = live.gql(f'{{ leakLocalization(id: "{loc_id}") {{ {LOCATION} }} }}', role="dispatcher")
    loc = body["data"]["leakLocalization"]
    return loc if loc["status"] in ("done", "failed") else None


def _check_localizations(live: LiveServer) -> None:
    """While the leak is on: the twin has queued a localization of the street by itself, and
    one asked for over GraphQL ranks the street's nodes, with the leak's size."""
    own = _until(lambda: next((x for x in live.gql(LOCATIONS, role="dispatcher")["data"][
        "leakLocalizations"] if x["createdBy"] == "twin"), None), 30, "the twin's own localization")
    assert own["areaId"] == AREA
    own = _until(lambda: _finished(live, own["id"]), 30, "the twin's localization finishing")
    assert own["status"] == "done", own
    assert own["candidates"] and {c["areaId"] for c in own["candidates"]} == {AREA}

    asked = live.gql(LOCATE, {"area": AREA, "w": 2.0}, role="dispatcher")["data"]["locateLeak"]
    assert asked["__typename"] == "LeakLocalizationQueued", asked
    assert asked["localization"]["status"] == "queued" and asked["localization"]["windowMinutes"] == 2.0
    done = _until(lambda: _finished(live, asked["localization"]["id"]), 30, "the localization")
    assert done["status"] == "done" and done["detected"] is True, done
    assert done["cycles"] >= 2
    best = done["candidates"][0]
    assert best["areaId"] == AREA and best["nodeId"] in {"L1", "L2", "L3"}, done["candidates"]
    assert best["leakM3h"] == pytest.approx(6.0, rel=0.6)
    assert best["nodeId"] in done["regionNodeIds"]
    scores = [c["score"] for c in done["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert all(len(p) == 2 for p in done["regionOutline"])


def test_localizations_are_refused_clearly(live: LiveServer) -> None:
    short = live.gql(LOCATE, {"area": AREA, "w": 0.5}, role="dispatcher")["data"]["locateLeak"]
    assert short["__typename"] == "ScenarioRefusal" and "window" in short["message"]
    nowhere = live.gql(LOCATE, {"area": "NOPE", "w": 10.0}, role="admin")["data"]["locateLeak"]
    assert nowhere["__typename"] == "ScenarioRefusal" and "NOPE" in nowhere["message"]
    operator = live.gql(LOCATE, {"area": AREA, "w": 10.0}, role="operator")["data"]["locateLeak"]
    assert operator["__typename"] == "Forbidden"
    listed = live.gql(LOCATIONS, role="dispatcher")["data"]["leakLocalizations"]
    assert all(x["areaId"] != "NOPE" for x in listed)  # a refusal records nothing
