"""The `Driver` contract, one suite over every implementation, each against a real loopback server.

Kinds (the `subject` fixture's parameters):

- ``opcua``: `OpcUaDriver` against the station simulator (an asyncua server behind its relay);
- ``modbus-tcp``: `ModbusDriver` against pymodbus's server speaking Modbus TCP;
- ``modbus-rtu-over-tcp``: the same driver and server with RTU framing over TCP (what a
  serial-to-TCP modem carries);
- ``modbus-pymodbustcp``: the Modbus driver against pyModbusTCP's server (not pymodbus).

The contract is `realtime.drivers.base`: connect (or `ConnectionLost`), read (a `TagValue` per
path, Bad quality for points that fail), write (or a `DriverError`), subscribe (batches until
unsubscribed), close (idempotent, every task stopped), and recovery by itself after the endpoint
goes away and comes back. What each protocol does beyond that stays in the integration tests
(`tests/integration/test_opcua_driver.py`, `tests/integration/test_modbus_driver.py`), whose
peers and register map this suite reuses.

Each peer runs on a free port for the whole module (an asyncua server takes seconds to start);
every test closes its drivers, leaves the peer's data as it found it and the peer running. Nothing
sleeps to let time pass: tests wait on delivered batches with a bound, and "nothing more arrives"
is measured against a second listener that keeps receiving.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import pytest

from opcua.client import Backoff, OpcUaDriver
from opcua.nodes import station_points
from opcua.simulator import StationSimulator
from realtime.drivers.base import ConnectionLost, Driver, DriverError
from realtime.drivers.modbus import Framing, ModbusDevice, ModbusDriver, ModbusLine, PointRef
from realtime.model import Quality, QualityClass, TagPath, TagValue, Value
from tests._services import free_port
from tests.integration.test_modbus_driver import MAP, PymodbusPeer, PyModbusTcpPeer
from tests.integration.test_opcua_driver import Recorder

KINDS = ["opcua", "modbus-tcp", "modbus-rtu-over-tcp", "modbus-pymodbustcp"]
SKEW = dt.timedelta(seconds=1)  # allowed clock difference between peer, driver and test
WITHIN_S = 5.0  # bound on every "it arrives" wait
STATION = "GRP-01"
MODBUS_PERIOD_S = 0.05
# Code of the servers the drivers talk to: tasks from here are the peer's, every other task
# started after a driver was built is the driver's (its own, or its client library's).
_PEER_CODE = ("/asyncua/server/", "/opcua/simulator.py", "/pymodbus/server/", "/pyModbusTCP/")


class _Peer(Protocol):
    """A server the subject's drivers talk to; restartable on the same port."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Subject:
    """One driver implementation and its running peer, described for the contract tests.

    `driver()` builds a driver for the peer (not connected), `unreachable_driver()` one for a
    port where nothing listens; both are closed by the fixture. `paths` are readable, with the
    Python type of their values in `types`; writing `write_value` to `writable` must read back
    as `written` (an `approx` where the device's encoding rounds); `unknown` is a path the
    driver was not configured with.
    """

    kind: str
    peer: _Peer
    port: int
    paths: list[TagPath]
    types: dict[TagPath, type]
    writable: TagPath
    write_value: Value
    written: object
    unknown: TagPath
    build: Callable[[int], Driver]
    drivers: list[Driver] = field(default_factory=list)
    running: bool = False

    def driver(self) -> Driver:
        """A new driver for the peer (call `connect` yourself)."""
        return self._keep(self.build(self.port))

    def unreachable_driver(self) -> Driver:
        """A new driver for a loopback port where nothing listens."""
        return self._keep(self.build(free_port()))

    def _keep(self, driver: Driver) -> Driver:
        self.drivers.append(driver)
        return driver

    async def stop_peer(self) -> None:
        """Kill the server (its port closes; connections are reset)."""
        self.running = False
        await self.peer.stop()

    async def start_peer(self) -> None:
        """Start the server (again) on the same port."""
        await self.peer.start()
        self.running = True

    async def close_drivers(self) -> None:
        """Close every driver built so far, and forget them."""
        drivers, self.drivers = self.drivers, []
        for driver in drivers:
            await driver.close()


def _opcua_subject(port: int) -> Subject:
    points = station_points([STATION])

    def build(on_port: int) -> Driver:
        return OpcUaDriver(f"opc.tcp://127.0.0.1:{on_port}", points, sampling_interval_ms=50,
                           publishing_interval_ms=100, watchdog_s=2.0, request_timeout_s=2.0,
                           poll_interval_s=0.1, backoff=Backoff(initial_s=0.1, max_s=0.5))

    types: dict[TagPath, type] = {f"station/{STATION}/{v}": float
                                  for v in ("p_in", "p_out", "t_gas", "flow", "valve_pos")}
    types[f"station/{STATION}/door"] = bool
    return Subject(kind="opcua", port=port, build=build,
                   peer=StationSimulator([STATION], port=port, period_s=0.1, seed=11),
                   paths=list(types), types=types, writable=f"station/{STATION}/valve_pos",
                   write_value=42.5, written=42.5, unknown="station/NOPE/p_out")


def _modbus_subject(kind: str, port: int) -> Subject:
    peer: PymodbusPeer | PyModbusTcpPeer
    if kind == "modbus-pymodbustcp":
        peer = PyModbusTcpPeer(port)
    else:
        peer = PymodbusPeer("pymodbus-rtu" if kind == "modbus-rtu-over-tcp" else "pymodbus-tcp",
                            port, units=(1,))
    framing: Framing = peer.framing
    device = ModbusDevice("dev", 1, MAP, MODBUS_PERIOD_S)
    points = {f"dev/{p.name}": PointRef("dev", p.name) for p in MAP.points}

    def build(on_port: int) -> Driver:
        line = ModbusLine("127.0.0.1", on_port, framing, timeout_s=0.5, retries=1,
                          reconnect_initial_s=0.1, reconnect_max_s=0.4)
        return ModbusDriver(line, [device], points)

    # one point of each function code, and of each decoded Python type
    types: dict[TagPath, type] = {"dev/setpoint": int, "dev/temp": float, "dev/f_cdab": float,
                                  "dev/alarm_a": bool, "dev/ir_f32": float, "dev/run": bool,
                                  "dev/door": bool}
    return Subject(kind=kind, port=port, build=build, peer=peer, paths=list(types), types=types,
                   writable="dev/sp_float", write_value=2.7,
                   written=pytest.approx(2.7, rel=1e-6),  # float32 on the wire
                   unknown="dev/nope")


@pytest.fixture(scope="module", params=KINDS)
async def _running_subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    """The peer of one kind, started once for the module on a free port."""
    port = free_port()
    subj = _opcua_subject(port) if request.param == "opcua" else _modbus_subject(request.param, port)
    await subj.start_peer()
    try:
        yield subj
    finally:
        try:
            await subj.close_drivers()
        finally:
            await subj.stop_peer()


@pytest.fixture
async def subject(_running_subject: Subject) -> AsyncIterator[Subject]:
    """A running peer of each kind, and how to build drivers for it.

    Drivers built through it are closed after the test; a peer the test left stopped is started
    again for the next one.
    """
    try:
        yield _running_subject
    finally:
        await _running_subject.close_drivers()
        if not _running_subject.running:
            await _running_subject.start_peer()


# --------------------------------------------------------------------------- helpers

def _driver_tasks(before: set[asyncio.Task[object]]) -> list[str]:
    """Tasks still pending that were not there in `before` and are not the peer's."""
    found: list[str] = []
    for task in asyncio.all_tasks() - before:
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename.replace("\\", "/") if code is not None else ""
        if not any(part in filename for part in _PEER_CODE):
            found.append(f"{task.get_name()}: {task.get_coro()!r}")
    return sorted(found)


def _latest(rec: Recorder, path: TagPath, since: int = 0) -> TagValue | None:
    values = rec.since(since, path)
    return values[-1] if values else None


def _all_latest(rec: Recorder, paths: Iterable[TagPath], quality: QualityClass, since: int = 0) -> bool:
    """Whether the newest value of every path from batch `since` on has this severity."""
    latest = [_latest(rec, p, since) for p in paths]
    return all(v is not None and v.quality.severity is quality for v in latest)


def _utc(ts: dt.datetime) -> bool:
    return ts.tzinfo is not None and ts.utcoffset() == dt.timedelta(0)


# --------------------------------------------------------------------------- read

async def test_read_returns_a_good_value_for_every_path(subject: Subject) -> None:
    driver = subject.driver()
    await driver.connect()
    assert driver.connected
    before = dt.datetime.now(dt.UTC)
    values = await driver.read(subject.paths)
    after = dt.datetime.now(dt.UTC)
    assert list(values) == subject.paths
    for path, tv in values.items():
        assert isinstance(tv, TagValue), path
        assert tv.quality is Quality.GOOD, (path, tv)
        assert type(tv.value) is subject.types[path], (path, tv.value)
        assert _utc(tv.source_ts) and _utc(tv.server_ts), (path, tv)
        assert tv.source_ts <= after + SKEW and tv.server_ts <= after + SKEW, (path, tv)  # not future
        assert tv.server_ts >= before - SKEW, (path, tv)  # received by this read
        assert tv.source_ts <= tv.server_ts + SKEW, (path, tv)  # measured before it was received


async def test_read_of_an_unknown_path_gives_bad_quality(subject: Subject) -> None:
    driver = subject.driver()
    await driver.connect()
    known = subject.paths[0]
    values = await driver.read([known, subject.unknown])
    assert list(values) == [known, subject.unknown]
    assert values[subject.unknown].quality.severity is QualityClass.bad
    assert values[known].quality is Quality.GOOD  # one unknown path spoils nothing else


async def test_subscribe_to_an_unknown_path_or_after_close_raises_a_driver_error(
        subject: Subject) -> None:
    driver = subject.driver()
    await driver.connect()
    with pytest.raises(DriverError):
        driver.subscribe([subject.paths[0], subject.unknown], lambda batch: None)
    await driver.close()
    with pytest.raises(DriverError):
        driver.subscribe([subject.paths[0]], lambda batch: None)


async def test_write_of_an_unknown_path_raises_a_driver_error(subject: Subject) -> None:
    driver = subject.driver()
    await driver.connect()
    with pytest.raises(DriverError):
        await driver.write(subject.unknown, 1.0)
    assert driver.connected
    assert (await driver.read([subject.paths[0]]))[subject.paths[0]].quality is Quality.GOOD


# --------------------------------------------------------------------------- write

async def test_write_then_read_back(subject: Subject) -> None:
    driver = subject.driver()
    await driver.connect()
    path = subject.writable
    initial = (await driver.read([path]))[path]
    assert initial.quality is Quality.GOOD
    assert initial.value != subject.written  # the write below must change something
    try:
        await driver.write(path, subject.write_value)
        back = (await driver.read([path]))[path]
        assert back.quality is Quality.GOOD
        assert back.value == subject.written
    finally:
        await driver.write(path, initial.value)  # the peer is shared by the module
    assert (await driver.read([path]))[path].value == initial.value


# --------------------------------------------------------------------------- subscribe

async def test_subscribe_delivers_every_path_until_unsubscribed(subject: Subject) -> None:
    driver = subject.driver()
    await driver.connect()
    rec, witness = Recorder(), Recorder()
    unsubscribe = driver.subscribe(subject.paths, rec)
    driver.subscribe(subject.paths, witness)
    await rec.wait_for(lambda: all(_latest(rec, p) is not None for p in subject.paths), WITHIN_S,
                       "a value of every subscribed path")
    delivered = {p for b in rec.batches for p in b}
    assert delivered == set(subject.paths)  # every path, and nothing that was not asked for
    assert _all_latest(rec, subject.paths, QualityClass.good)
    assert all(isinstance(v, TagValue) for b in rec.batches for v in b.values())

    unsubscribe()
    mark, witnessed = len(rec.batches), len(witness.batches)
    await witness.wait_for(lambda: len(witness.batches) >= witnessed + 3, WITHIN_S,
                           "3 more batches to the listener still subscribed")
    assert len(rec.batches) <= mark + 1  # at most one batch that was already under way


# --------------------------------------------------------------------------- connect, close

async def test_connect_to_nothing_raises_connection_lost_and_leaves_no_task(subject: Subject) -> None:
    driver = subject.unreachable_driver()
    before = asyncio.all_tasks()
    started = time.monotonic()
    async with asyncio.timeout(WITHIN_S):  # a hang fails with TimeoutError, not a DriverError
        with pytest.raises(ConnectionLost):
            await driver.connect()
    assert time.monotonic() - started < WITHIN_S
    assert not driver.connected
    assert _driver_tasks(before) == []
    path = subject.paths[0]
    value = (await driver.read([path]))[path]  # no endpoint: data, not an exception
    assert value.quality.severity is QualityClass.bad
    await driver.close()
    await driver.close()
    assert _driver_tasks(before) == []


async def test_close_is_idempotent_and_stops_every_task(subject: Subject) -> None:
    before = asyncio.all_tasks()
    driver = subject.driver()
    await driver.connect()
    rec = Recorder()
    driver.subscribe(subject.paths, rec)
    await rec.wait_for(lambda: len(rec.batches) >= 1, WITHIN_S, "a first batch")
    assert _driver_tasks(before) != []  # it does run tasks: the check below is not vacuous

    await driver.close()
    assert not driver.connected
    assert _driver_tasks(before) == []
    await driver.close()  # idempotent
    assert _driver_tasks(before) == []
    with pytest.raises(DriverError):
        await driver.connect()  # a closed driver stays closed


# --------------------------------------------------------------------------- recovery

async def test_peer_outage_turns_values_bad_and_the_driver_recovers_by_itself(subject: Subject) -> None:
    driver = subject.driver()
    await driver.connect()
    rec = Recorder()
    paths = subject.paths
    driver.subscribe(paths, rec)
    await rec.wait_for(lambda: _all_latest(rec, paths, QualityClass.good), WITHIN_S,
                       "every path Good before the outage")

    mark = len(rec.batches)
    await subject.stop_peer()
    await rec.wait_for(lambda: _all_latest(rec, paths, QualityClass.bad, mark), WITHIN_S,
                       "every path Bad after the peer stopped")
    assert not driver.connected

    restarted = len(rec.batches)
    await subject.start_peer()  # same port; the test does not call connect again
    await rec.wait_for(lambda: _all_latest(rec, paths, QualityClass.good, restarted), WITHIN_S,
                       "every path Good again after the peer restarted")
    assert driver.connected
    values = await driver.read(paths)
    assert {p: v.quality for p, v in values.items()} == dict.fromkeys(paths, Quality.GOOD)
