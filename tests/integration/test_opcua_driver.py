"""The OPC UA driver against real asyncua servers (the station simulator) on loopback ports.

Nothing here sleeps to let time pass: tests wait on the listener's batches with a bound, and the
bounds are what is asserted. The simulator updates every 0.1 s.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from opcua._security import generate_certificate
from opcua.client import CLIENT_APPLICATION_URI, AccessDenied, Backoff, OpcUaDriver, Security
from opcua.simulator import StationSimulator, demand_factor
from realtime.drivers.base import BadResponse, ConnectionLost, DriverError
from realtime.model import Deadband, DeadbandKind, Quality, TagPath, TagValue
from tests._services import free_port

PERIOD_S = 0.1
STATIONS = ["GRP-01", "GRP-02"]
P_OUT = "station/GRP-01/p_out"
FLOW = "station/GRP-01/flow"
DOOR = "station/GRP-01/door"
VALVE = "station/GRP-02/valve_pos"
GRP01 = [f"station/GRP-01/{v}" for v in ("p_in", "p_out", "t_gas", "flow", "door", "valve_pos")]


class Recorder:
    """A listener that keeps every batch it gets and wakes whoever waits on it."""

    def __init__(self) -> None:
        self.batches: list[dict[TagPath, TagValue]] = []
        self.arrived: list[float] = []  # monotonic time of each batch
        self._event = asyncio.Event()

    def __call__(self, batch: Any) -> None:
        self.batches.append(dict(batch))
        self.arrived.append(time.monotonic())
        self._event.set()

    def values(self, path: TagPath) -> list[TagValue]:
        """Every value delivered for `path`, in order."""
        return [b[path] for b in self.batches if path in b]

    def since(self, index: int, path: TagPath) -> list[TagValue]:
        """Values of `path` from batch number `index` on."""
        return [b[path] for b in self.batches[index:] if path in b]

    def first_arrival(self, index: int, path: TagPath, quality: Quality) -> float:
        """When the first value of `path` with `quality` arrived, from batch `index` on."""
        return next(t for b, t in zip(self.batches[index:], self.arrived[index:], strict=True)
                    if path in b and b[path].quality is quality)

    async def wait_for(self, predicate: Callable[[], bool], within_s: float, what: str) -> float:
        """Wait until `predicate()` holds, re-checking on every batch; returns seconds waited."""
        start = time.monotonic()
        try:
            async with asyncio.timeout(within_s):
                while not predicate():
                    self._event.clear()
                    await self._event.wait()
        except TimeoutError:
            pytest.fail(f"not within {within_s} s: {what} (last batches: {self.batches[-3:]})")
        return time.monotonic() - start


def good_count(values: list[TagValue]) -> int:
    return sum(v.quality is Quality.GOOD for v in values)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR records that carry a traceback (a crashed task or callback), from any logger."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.ERROR and r.exc_info]


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[StationSimulator]:
    """Two stations on a plain (NoSecurity, anonymous) server, shared by the module."""
    simulator = StationSimulator(STATIONS, port=free_port(), period_s=PERIOD_S, seed=7)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def make_driver() -> AsyncIterator[Callable[..., OpcUaDriver]]:
    """Drivers with test-sized timings; every one is closed after the test."""
    made: list[OpcUaDriver] = []

    def make(endpoint: str, points: dict[TagPath, str], **kwargs: Any) -> OpcUaDriver:
        settings: dict[str, Any] = dict(sampling_interval_ms=50, publishing_interval_ms=100, watchdog_s=2.0,
                                        request_timeout_s=2.0, poll_interval_s=0.1,
                                        backoff=Backoff(initial_s=0.1, max_s=0.5))
        settings.update(kwargs)
        driver = OpcUaDriver(endpoint, points, **settings)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        await driver.close()


# --------------------------------------------------------------------------- the plant

def test_demand_follows_a_daily_curve() -> None:
    monday = dt.datetime(2025, 1, 13, tzinfo=dt.UTC)  # utc_offset_h=3: local = UTC + 3 h
    at = {h: demand_factor(monday + dt.timedelta(hours=h - 3)) for h in range(24)}
    assert max(at, key=lambda h: at[h]) in (18, 19, 20)  # evening peak
    assert at[3] < 0.5 < at[8]  # night trough, morning peak
    assert all(0.4 <= f <= 1.0 for f in at.values())
    saturday = monday + dt.timedelta(days=5)
    assert demand_factor(saturday + dt.timedelta(hours=16)) < at[19]


# --------------------------------------------------------------------------- read, subscribe, write

async def test_read_gives_good_values_with_source_timestamps(
        sim: StationSimulator, make_driver: Callable[..., OpcUaDriver]) -> None:
    driver = make_driver(sim.endpoint, sim.points)
    await driver.connect()
    before = dt.datetime.now(dt.UTC)
    values = await driver.read([*GRP01, "station/NOPE/p_out"])
    assert list(values) == [*GRP01, "station/NOPE/p_out"]
    assert values["station/NOPE/p_out"].quality is Quality.BAD_CONFIG_ERROR
    for path in GRP01:
        tv = values[path]
        assert tv.quality is Quality.GOOD, path
        assert tv.source_ts.tzinfo is not None and tv.source_ts.utcoffset() == dt.timedelta(0)
        assert tv.source_ts <= tv.server_ts and tv.server_ts >= before
    assert 250_000 < values["station/GRP-01/p_in"].value < 330_000  # type: ignore[operator]
    assert 1_000 < values[P_OUT].value < 3_500  # type: ignore[operator]
    assert values[DOOR].value in (True, False)
    assert values["station/GRP-01/valve_pos"].value == 100.0
    assert driver.connected and driver.running and driver.stats.sessions == 1


async def test_subscription_delivers_batches_with_fresh_source_timestamps(
        sim: StationSimulator, make_driver: Callable[..., OpcUaDriver]) -> None:
    driver = make_driver(sim.endpoint, sim.points)
    first, second = Recorder(), Recorder()
    driver.subscribe([P_OUT, FLOW, DOOR], first)
    await driver.connect()
    waited = await first.wait_for(lambda: good_count(first.values(P_OUT)) >= 10, 5.0, "10 p_out values")
    p_out = first.values(P_OUT)
    assert all(v.quality is Quality.GOOD for v in p_out)
    stamps = [v.source_ts for v in p_out]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # one per simulator update
    assert waited < 10 * PERIOD_S + 2.0
    assert len(first.values(DOOR)) >= 1  # the initial value of a value that rarely changes
    assert {p for b in first.batches for p in b} <= {P_OUT, FLOW, DOOR}
    assert any(len(b) >= 2 for b in first.batches)  # values of one publish come as one batch

    unsubscribe = driver.subscribe([P_OUT], second)  # the last known value is replayed to it
    await second.wait_for(lambda: len(second.values(P_OUT)) >= 2, 3.0, "replay, then a new value")
    assert second.values(P_OUT)[0] in first.values(P_OUT)
    unsubscribe()
    mark = len(second.batches)
    count = len(first.batches)
    await first.wait_for(lambda: len(first.batches) >= count + 5, 3.0, "5 more batches")
    assert len(second.batches) == mark  # an unsubscribed listener hears nothing more


async def test_write_a_set_point_and_read_it_back(
        sim: StationSimulator, make_driver: Callable[..., OpcUaDriver]) -> None:
    driver = make_driver(sim.endpoint, sim.points)
    await driver.connect()
    try:
        await driver.write(VALVE, 42.5)
        assert (await driver.read([VALVE]))[VALVE].value == 42.5
        assert sim.value(VALVE) == 42.5
        await driver.write(VALVE, 40)  # an int for a Double node is converted, not refused
        assert (await driver.read([VALVE]))[VALVE].value == 40.0
        with pytest.raises(BadResponse, match="refused"):
            await driver.write("station/GRP-02/p_out", 1.0)  # a measurement is not writable
        with pytest.raises(DriverError, match="cannot write"):
            await driver.write(VALVE, "half open")
        with pytest.raises(DriverError, match="no OPC UA point"):
            await driver.write("station/NOPE/valve_pos", 1.0)
    finally:
        await driver.write(VALVE, 100.0)


async def test_concurrent_writes_are_serialized(
        sim: StationSimulator, make_driver: Callable[..., OpcUaDriver]) -> None:
    driver = make_driver(sim.endpoint, sim.points)
    await driver.connect()
    try:
        await asyncio.gather(*(driver.write(VALVE, float(v)) for v in range(50, 70)))
        assert (await driver.read([VALVE]))[VALVE].value == 69.0  # the lock keeps call order
    finally:
        await driver.write(VALVE, 100.0)


async def test_bad_quality_propagates_through_the_subscription(
        sim: StationSimulator, make_driver: Callable[..., OpcUaDriver]) -> None:
    path = "station/GRP-02/t_gas"
    driver = make_driver(sim.endpoint, sim.points)
    rec = Recorder()
    driver.subscribe([path], rec)
    await driver.connect()
    await rec.wait_for(lambda: good_count(rec.values(path)) >= 2, 3.0, "good t_gas")
    await sim.set_bad(path)
    await rec.wait_for(lambda: rec.values(path)[-1].quality is Quality.BAD_SENSOR_FAILURE, 3.0,
                       "BadSensorFailure")
    mark = len(rec.values(path))
    await sim.clear_bad(path)
    await rec.wait_for(lambda: good_count(rec.values(path)[mark:]) >= 2, 3.0, "good again")
    assert rec.values(path)[-1].quality.is_good


async def test_deadband_keeps_small_changes_from_being_reported(
        sim: StationSimulator, make_driver: Callable[..., OpcUaDriver]) -> None:
    path = "station/GRP-02/p_out"
    banded = make_driver(sim.endpoint, sim.points, deadbands={path: Deadband(DeadbandKind.absolute, 1.0)})
    plain = make_driver(sim.endpoint, sim.points)
    with_band, without = Recorder(), Recorder()
    banded.subscribe([path], with_band)
    plain.subscribe([path], without)
    await banded.connect()
    await plain.connect()
    try:
        await sim.set_value(path, 2500.0)
        for rec in (with_band, without):
            await rec.wait_for(lambda r=rec: r.values(path)[-1].value == 2500.0, 3.0, "2500 Pa")
        mark_band, mark_plain = len(with_band.values(path)), len(without.values(path))
        await sim.set_value(path, 2500.4)  # 0.4 Pa: inside the 1 Pa deadband
        await without.wait_for(lambda: without.values(path)[-1].value == 2500.4, 3.0, "2500.4 Pa unfiltered")
        await sim.set_value(path, 2502.0)  # 1.6 Pa: outside
        await with_band.wait_for(lambda: with_band.values(path)[-1].value == 2502.0, 3.0, "2502 Pa")
        await without.wait_for(lambda: without.values(path)[-1].value == 2502.0, 3.0, "2502 Pa unfiltered")
        assert [v.value for v in with_band.values(path)[mark_band:]] == [2502.0]
        assert [v.value for v in without.values(path)[mark_plain:]] == [2500.4, 2502.0]
    finally:
        sim.unfreeze(path)


@pytest.mark.parametrize("how", ["server refuses subscriptions", "configured"])
async def test_polling_delivers_when_there_is_no_subscription(
        how: str, sim: StationSimulator, make_driver: Callable[..., OpcUaDriver],
        caplog: pytest.LogCaptureFixture) -> None:
    refused = how.startswith("server")
    driver = make_driver(sim.endpoint, sim.points, mode="subscribe" if refused else "poll")
    rec = Recorder()
    driver.subscribe([P_OUT, DOOR], rec)
    if refused:
        sim.refuse_subscriptions()
    try:
        await driver.connect()
    finally:
        sim.refuse_subscriptions(False)
    assert driver.stats.polling
    await rec.wait_for(lambda: good_count(rec.values(P_OUT)) >= 5, 3.0, "5 polled p_out values")
    assert len(rec.values(DOOR)) == 1  # polling reports changes only; the door stayed shut
    stamps = [v.source_ts for v in rec.values(P_OUT)]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert ("polling every" in caplog.text) is refused


# --------------------------------------------------------------------------- security

@pytest.fixture(scope="module")
async def secure_sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StationSimulator]:
    """Basic256Sha256 Sign / SignAndEncrypt only, username + password required."""
    simulator = StationSimulator(["GRP-01"], port=free_port(), period_s=PERIOD_S,
                                 cert_dir=tmp_path_factory.mktemp("server-pki"), users={"operator": "s3cret"})
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture(scope="module")
def client_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pair = generate_certificate(tmp_path_factory.mktemp("client-pki"), "gasops-client",
                                application_uri=CLIENT_APPLICATION_URI)
    return pair.certificate, pair.private_key


@pytest.mark.parametrize("mode", ["SignAndEncrypt", "Sign"])
async def test_secure_session_with_username(
        mode: str, secure_sim: StationSimulator, client_pki: tuple[Path, Path],
        make_driver: Callable[..., OpcUaDriver]) -> None:
    assert secure_sim.server_certificate is not None
    security = Security(*client_pki, server_certificate=secure_sim.server_certificate,
                        mode="Sign" if mode == "Sign" else "SignAndEncrypt")
    driver = make_driver(secure_sim.endpoint, secure_sim.points, username="operator", password="s3cret",
                         security=security)
    rec = Recorder()
    driver.subscribe([P_OUT], rec)
    await driver.connect()
    await rec.wait_for(lambda: good_count(rec.values(P_OUT)) >= 3, 3.0, "values over a secure channel")
    assert (await driver.read([P_OUT]))[P_OUT].quality is Quality.GOOD


async def test_wrong_password_is_refused_clearly(
        secure_sim: StationSimulator, client_pki: tuple[Path, Path],
        make_driver: Callable[..., OpcUaDriver]) -> None:
    security = Security(*client_pki, server_certificate=secure_sim.server_certificate)
    driver = make_driver(secure_sim.endpoint, secure_sim.points, username="operator", password="guess",
                         security=security)
    with pytest.raises(AccessDenied, match="refused the user.*BadUserAccessDenied"):
        await driver.connect()
    assert not driver.connected and not driver.running
    assert isinstance(AccessDenied("x"), DriverError)


async def test_a_plain_client_cannot_reach_a_secured_server(
        secure_sim: StationSimulator, make_driver: Callable[..., OpcUaDriver]) -> None:
    driver = make_driver(secure_sim.endpoint, secure_sim.points, username="operator", password="s3cret")
    with pytest.raises(BadResponse, match="No matching endpoints"):
        await driver.connect()


async def test_an_unreachable_endpoint_raises_connection_lost(
        make_driver: Callable[..., OpcUaDriver]) -> None:
    driver = make_driver(f"opc.tcp://127.0.0.1:{free_port()}", {P_OUT: "ns=2;s=" + P_OUT})
    with pytest.raises(ConnectionLost):
        await driver.connect()
    assert (await driver.read([P_OUT]))[P_OUT].quality is Quality.BAD_NOT_CONNECTED
    await driver.close()
    await driver.close()  # idempotent
    with pytest.raises(DriverError, match="closed"):
        await driver.connect()


# --------------------------------------------------------------------------- faults

async def test_server_killed_and_restarted_the_driver_recovers_by_itself(
        make_driver: Callable[..., OpcUaDriver], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="opcua")
    sim = StationSimulator(["GRP-01"], port=free_port(), period_s=PERIOD_S, seed=3)
    await sim.start()
    try:
        driver = make_driver(sim.endpoint, sim.points)
        rec = Recorder()
        driver.subscribe(GRP01, rec)
        await driver.connect()
        await rec.wait_for(lambda: good_count(rec.values(P_OUT)) >= 5, 3.0, "values before the kill")

        killed_at = time.monotonic()
        mark = len(rec.batches)
        await sim.stop()
        await rec.wait_for(lambda: all(any(v.quality is Quality.BAD_NOT_CONNECTED
                                           for v in rec.since(mark, p)) for p in GRP01),
                           2.0, "every tag Bad (not connected)")
        assert not driver.connected and driver.running

        restart_wall = dt.datetime.now(dt.UTC)
        await sim.start()  # same port; nothing is asked of the driver
        back_after = await rec.wait_for(
            lambda: all(any(v.quality is Quality.GOOD for v in rec.since(mark, p)) for p in GRP01),
            5.0, "every tag Good again")
        await rec.wait_for(lambda: good_count(rec.since(mark, P_OUT)) >= 10, 3.0, "10 fresh p_out values")
        stats = driver.stats
        assert driver.running
        await driver.close()  # before the simulator goes away for good
        assert not driver.running
    finally:
        await sim.stop()

    bad = {p: sum(v.quality is Quality.BAD_NOT_CONNECTED for v in rec.since(mark, p)) for p in GRP01}
    assert bad == dict.fromkeys(GRP01, 1)  # exactly one Bad per tag for one outage
    p_out = rec.since(mark, P_OUT)
    assert p_out[0].quality is Quality.BAD_NOT_CONNECTED and p_out[0].value is None
    assert all(v.quality is Quality.GOOD for v in p_out[1:])  # Bad, then Good: no flapping
    assert p_out[-1].source_ts > restart_wall  # fresh values from the restarted server
    assert (stats.sessions, stats.disconnects, stats.watchdog_trips) == (2, 1, 0)
    assert stats.failed_attempts >= 1 and stats.connected
    assert rec.first_arrival(mark, P_OUT, Quality.BAD_NOT_CONNECTED) - killed_at < 1.0  # seen at once
    assert back_after < 0.5 + 1.0  # within one (capped) backoff step of the restart
    downs = [r for r in caplog.records if r.name == "opcua.client" and "connection down" in r.message]
    ups = [r for r in caplog.records if r.name == "opcua.client" and "connection restored" in r.message]
    assert (len(downs), len(ups)) == (1, 1)  # logged once down, once back
    assert tracebacks(caplog) == []  # nothing crashed, here or in asyncua


async def test_watchdog_replaces_a_session_that_went_silent(
        sim: StationSimulator, make_driver: Callable[..., OpcUaDriver],
        caplog: pytest.LogCaptureFixture) -> None:
    watchdog_s = 1.0
    driver = make_driver(sim.endpoint, sim.points, watchdog_s=watchdog_s)
    rec = Recorder()
    driver.subscribe([P_OUT], rec)
    await driver.connect()
    await rec.wait_for(lambda: good_count(rec.values(P_OUT)) >= 3, 3.0, "values before the stall")

    assert sim.stall_publishing() >= 1  # no publish responses on this session from now on
    stalled_at = time.monotonic()
    mark = len(rec.batches)
    reading = await driver.read([P_OUT])  # the session still answers: only the stream is dead
    assert reading[P_OUT].quality is Quality.GOOD and driver.connected
    await rec.wait_for(lambda: any(v.quality is Quality.BAD_NOT_CONNECTED for v in rec.since(mark, P_OUT)),
                       watchdog_s + 2.0, "watchdog trips")
    tripped_after = rec.first_arrival(mark, P_OUT, Quality.BAD_NOT_CONNECTED) - stalled_at
    await rec.wait_for(lambda: good_count(rec.since(mark, P_OUT)) >= 3, 3.0, "values on a new session")

    assert watchdog_s * 0.8 <= tripped_after <= watchdog_s + 1.0
    stats = driver.stats
    assert (stats.watchdog_trips, stats.sessions, stats.disconnects) == (1, 2, 1)
    assert stats.last_error is not None and stats.last_error.startswith("watchdog")
    assert rec.since(mark, P_OUT)[0].quality is Quality.BAD_NOT_CONNECTED
    assert tracebacks(caplog) == []


async def test_a_failing_listener_does_not_starve_the_others(
        sim: StationSimulator, make_driver: Callable[..., OpcUaDriver],
        caplog: pytest.LogCaptureFixture) -> None:
    driver = make_driver(sim.endpoint, sim.points)

    def broken(batch: Any) -> None:
        raise RuntimeError("consumer bug")

    rec = Recorder()
    driver.subscribe([P_OUT], broken)
    driver.subscribe([P_OUT], rec)
    await driver.connect()
    await rec.wait_for(lambda: good_count(rec.values(P_OUT)) >= 3, 3.0, "values despite a broken listener")
    assert driver.running and "a listener failed" in caplog.text


async def test_a_quiet_value_is_reported_again_while_the_session_lives(
        sim: StationSimulator, make_driver: Callable[..., OpcUaDriver]) -> None:
    """A shut door says nothing over a subscription; the driver repeats its last value every
    refresh_s, so staleness downstream tells a quiet tag from a dead link."""
    driver = make_driver(sim.endpoint, {DOOR: sim.points[DOOR]}, refresh_s=0.3)
    rec = Recorder()
    await driver.connect()
    driver.subscribe([DOOR], rec)
    async with asyncio.timeout(5):
        while len(rec.values(DOOR)) < 4:  # noqa: ASYNC110 - waiting on the driver's own cadence
            await asyncio.sleep(0.05)
    values = rec.values(DOOR)
    assert len({v.value for v in values}) == 1  # the same value, again and again
    assert all(v.quality is Quality.GOOD for v in values)
    gaps = [b - a for a, b in zip(rec.arrived, rec.arrived[1:], strict=False)]
    assert min(gaps[1:]) >= 0.2  # at the refresh cadence, not a flood
