"""The Modbus driver against real servers on 127.0.0.1 (free ports, started and stopped here).

Peers: pymodbus's async server speaking Modbus TCP, the same server speaking Modbus RTU frames
over TCP (what a serial-to-TCP modem carries), and pyModbusTCP's threaded server as an
independent, non-pymodbus implementation. The contract tests run against all three; the fault
tests make one device of a line go silent and the whole server go away.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pyModbusTCP.server import ModbusServer  # type: ignore[import-untyped]

from realtime.drivers._modbus_maps import RegisterMap, RegisterMapError, parse_map
from realtime.drivers.base import ConnectionLost, DriverError, Timeout
from realtime.drivers.modbus import (
    EncodeError,
    Framing,
    ModbusDevice,
    ModbusDriver,
    ModbusLine,
    PointRef,
    WriteRefused,
)
from realtime.model import Quality, TagPath, TagValue
from tests._services import free_port

KINDS = ["pymodbus-tcp", "pymodbus-rtu", "pymodbustcp"]
_LOGGER = "realtime.drivers.modbus"


# --------------------------------------------------------------------------- device layout

def _words(fmt: str, value: float) -> list[int]:
    """Big-endian words of `value` packed with struct (ABCD order)."""
    data = struct.pack(fmt, value)
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def _swap_bytes(words: list[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in words]


F32 = 123.456
F32_READ = struct.unpack(">f", struct.pack(">f", F32))[0]
ABCD = _words(">f", F32)

HOLDING = [0] * 32
HOLDING[0] = 1234  # setpoint, uint16, writable
HOLDING[1] = (-250) & 0xFFFF  # temp, int16 x 0.1 → -25.0
HOLDING[2:4] = _words(">i", -123456789)  # count, int32 ABCD
HOLDING[4:6] = _words(">I", 4_000_000_000)[::-1]  # energy, uint32 CDAB x 0.001
HOLDING[6] = 0b1010  # status; bit 1 set, bit 0 clear
HOLDING[8:10] = ABCD  # float32 ABCD
HOLDING[10:12] = ABCD[::-1]  # CDAB (word-swapped)
HOLDING[12:14] = _swap_bytes(ABCD)  # BADC (byte-swapped)
HOLDING[14:16] = _swap_bytes(ABCD)[::-1]  # DCBA
HOLDING[16:20] = _words(">d", 98765.4321)  # float64 ABCD
HOLDING[20:22] = _words(">f", 1.5)[::-1]  # sp_float, float32 CDAB, writable
INPUT = [0] * 8
INPUT[0] = 500  # ir_u16 x 0.01 → 5.0
INPUT[1:3] = _words(">f", -0.95)[::-1]  # ir_f32, CDAB
COILS = [True, False] + [False] * 14
DISCRETE = [True, False] + [False] * 14


def _map(extra: Iterable[dict[str, Any]] = ()) -> RegisterMap:
    hr, ir = "holding_registers", "input_registers"
    return parse_map({"model": "contract-test", "points": [
        {"name": "setpoint", "address": 0, "function": hr, "type": "uint16", "writable": True},
        {"name": "temp", "address": 1, "function": hr, "type": "int16", "scale": 0.1},
        {"name": "count", "address": 2, "function": hr, "type": "int32"},
        {"name": "energy", "address": 4, "function": hr, "type": "uint32", "word_order": "little",
         "scale": 0.001},
        {"name": "status", "address": 6, "function": hr, "type": "uint16"},
        {"name": "alarm_a", "address": 6, "function": hr, "type": "bool", "bit": 1},
        {"name": "alarm_b", "address": 6, "function": hr, "type": "bool", "bit": 0},
        {"name": "f_abcd", "address": 8, "function": hr, "type": "float32"},
        {"name": "f_cdab", "address": 10, "function": hr, "type": "float32", "word_order": "little"},
        {"name": "f_badc", "address": 12, "function": hr, "type": "float32", "byte_order": "little"},
        {"name": "f_dcba", "address": 14, "function": hr, "type": "float32", "word_order": "little",
         "byte_order": "little"},
        {"name": "f64", "address": 16, "function": hr, "type": "float64"},
        {"name": "sp_float", "address": 20, "function": hr, "type": "float32", "word_order": "little",
         "writable": True},
        {"name": "ir_u16", "address": 0, "function": ir, "type": "uint16", "scale": 0.01},
        {"name": "ir_f32", "address": 1, "function": ir, "type": "float32", "word_order": "little"},
        {"name": "run", "address": 0, "function": "coils", "type": "bool", "writable": True},
        {"name": "coil_b", "address": 1, "function": "coils", "type": "bool"},
        {"name": "door", "address": 0, "function": "discrete_inputs", "type": "bool"},
        {"name": "mains", "address": 1, "function": "discrete_inputs", "type": "bool"},
        *extra,
    ]}, source="contract-test")


MAP = _map()
EXPECTED: dict[str, object] = {
    "setpoint": 1234, "temp": pytest.approx(-25.0), "count": -123456789,
    "energy": pytest.approx(4_000_000.0), "status": 10, "alarm_a": True, "alarm_b": False,
    "f_abcd": F32_READ, "f_cdab": F32_READ, "f_badc": F32_READ, "f_dcba": F32_READ,
    "f64": 98765.4321, "sp_float": 1.5, "ir_u16": pytest.approx(5.0),
    "ir_f32": pytest.approx(-0.95, abs=1e-6), "run": True, "coil_b": False, "door": True,
    "mains": False,
}


# --------------------------------------------------------------------------- peers

class Peer(Protocol):
    kind: str
    port: int
    muted: set[int]

    @property
    def framing(self) -> Framing: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class PymodbusPeer:
    """pymodbus's async server; several unit ids; `muted` units get no answer at all, for
    `unreachable` units it answers like a gateway whose device is silent (exception 0x0B)."""

    kind: str
    port: int
    units: tuple[int, ...]
    muted: set[int] = field(default_factory=set)
    unreachable: set[int] = field(default_factory=set)
    server: ModbusTcpServer | None = None

    @property
    def framing(self) -> Framing:
        return Framing.RTU if self.kind == "pymodbus-rtu" else Framing.TCP

    def _trace(self, sending: bool, frame: bytes) -> bytes:
        if sending and frame:
            unit = frame[0] if self.framing is Framing.RTU else frame[6]  # RTU: first byte; MBAP: 7th
            if unit in self.muted:
                return b""  # the response is never sent: the device is silent
        return frame

    def _action(self, unit: int) -> Any:
        async def action(*_args: Any) -> ExcCodes | None:
            return ExcCodes.GATEWAY_NO_RESPONSE if unit in self.unreachable else None
        return action

    async def start(self) -> None:
        # SimData addresses are the protocol's (0-based); the older ModbusSequentialDataBlock
        # would want 1 here.
        devices = [SimDevice(id=unit, simdata=(
            [SimData(0, values=list(COILS), datatype=DataType.BITS)],
            [SimData(0, values=list(DISCRETE), datatype=DataType.BITS)],
            [SimData(0, values=list(HOLDING), datatype=DataType.REGISTERS)],
            [SimData(0, values=list(INPUT), datatype=DataType.REGISTERS)],
        ), action=self._action(unit)) for unit in self.units]
        framer = FramerType.RTU if self.framing is Framing.RTU else FramerType.SOCKET
        self.server = ModbusTcpServer(devices, framer=framer, address=("127.0.0.1", self.port),
                                      trace_packet=self._trace)
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()  # type: ignore[no-untyped-call]
            self.server = None
            await asyncio.sleep(0)


@dataclass
class PyModbusTcpPeer:
    """pyModbusTCP's threaded server (answers every unit id from one data bank)."""

    port: int
    kind: str = "pymodbustcp"
    framing: Framing = Framing.TCP
    muted: set[int] = field(default_factory=set)
    server: ModbusServer | None = None

    async def start(self) -> None:
        server = ModbusServer("127.0.0.1", self.port, no_block=True)
        server.data_bank.set_holding_registers(0, HOLDING)
        server.data_bank.set_input_registers(0, INPUT)
        server.data_bank.set_coils(0, COILS)
        server.data_bank.set_discrete_inputs(0, DISCRETE)
        await asyncio.to_thread(server.start)
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)  # blocks up to its 0.5 s poll interval
            self.server = None


PeerFactory = Callable[..., Any]


@pytest.fixture
async def start_peer() -> AsyncIterator[PeerFactory]:
    """Start a server of a kind on a free port; all are stopped after the test."""
    peers: list[Peer] = []

    async def start(kind: str, units: tuple[int, ...] = (1,)) -> Peer:
        port = free_port()
        peer: Peer = (PyModbusTcpPeer(port) if kind == "pymodbustcp"
                      else PymodbusPeer(kind, port, units))
        await peer.start()
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        await peer.stop()


@pytest.fixture
async def make_driver(start_peer: PeerFactory) -> AsyncIterator[Callable[..., ModbusDriver]]:
    """Build drivers for a peer; each is closed after the test (before the peers stop)."""
    drivers: list[ModbusDriver] = []

    def make(peer: Peer, devices: list[ModbusDevice], **line: Any) -> ModbusDriver:
        clock = line.pop("clock", _utc)
        settings: dict[str, Any] = {"timeout_s": 0.5, "retries": 1, "reconnect_initial_s": 0.1,
                                    "reconnect_max_s": 0.4, **line}
        points = {f"{d.name}/{p.name}": PointRef(d.name, p.name)
                  for d in devices for p in d.register_map.points}
        driver = ModbusDriver(ModbusLine("127.0.0.1", peer.port, peer.framing, **settings),
                              devices, points, clock=clock)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        await driver.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("modbus ")]


def _utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Recorder:
    """A listener that keeps every batch and lets a test wait for a condition."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, dict[TagPath, TagValue]]] = []
        self.latest: dict[TagPath, TagValue] = {}
        self._event = asyncio.Event()

    def __call__(self, batch: Mapping[TagPath, TagValue]) -> None:
        self.batches.append((asyncio.get_running_loop().time(), dict(batch)))
        self.latest.update(batch)
        self._event.set()

    def count(self, device: str) -> int:
        """Batches delivered for `device` (one per poll of it)."""
        return sum(1 for _, b in self.batches if any(p.startswith(device + "/") for p in b))

    def qualities(self, paths: Iterable[TagPath]) -> set[Quality | None]:
        return {self.latest[p].quality if p in self.latest else None for p in paths}

    async def wait_for(self, predicate: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._event.clear()
                await self._event.wait()


def _dev(name: str = "dev", unit: int = 1, period: float = 10.0,
         register_map: RegisterMap = MAP) -> ModbusDevice:
    return ModbusDevice(name, unit, register_map, period)


# --------------------------------------------------------------------------- contract

@pytest.mark.parametrize("kind", KINDS)
async def test_read_every_type(kind: str, start_peer: PeerFactory,
                               make_driver: Callable[..., ModbusDriver]) -> None:
    peer = await start_peer(kind)
    stamp = dt.datetime(2024, 1, 15, 9, 30, tzinfo=dt.UTC)
    driver = make_driver(peer, [_dev()], clock=lambda: stamp)
    await driver.connect()
    assert driver.connected
    values = await driver.read([f"dev/{name}" for name in EXPECTED])
    assert {p.split("/")[1]: v.value for p, v in values.items()} == EXPECTED
    assert {v.quality for v in values.values()} == {Quality.GOOD}
    assert {(v.source_ts, v.server_ts) for v in values.values()} == {(stamp, stamp)}
    assert isinstance(values["dev/setpoint"].value, int)
    assert isinstance(values["dev/alarm_a"].value, bool)


@pytest.mark.parametrize("kind", KINDS)
async def test_float32_in_all_four_orders(kind: str, start_peer: PeerFactory,
                                          make_driver: Callable[..., ModbusDriver]) -> None:
    peer = await start_peer(kind)
    driver = make_driver(peer, [_dev()])
    await driver.connect()
    paths = ["dev/f_abcd", "dev/f_cdab", "dev/f_badc", "dev/f_dcba"]
    values = await driver.read(paths)
    for path in paths:
        assert values[path].value == F32_READ == pytest.approx(123.456, abs=1e-5), path
        assert values[path].quality is Quality.GOOD
        assert values[path].source_ts.tzinfo is dt.UTC


@pytest.mark.parametrize("kind", KINDS)
async def test_subscribe_polls_at_the_period(kind: str, start_peer: PeerFactory,
                                             make_driver: Callable[..., ModbusDriver]) -> None:
    peer = await start_peer(kind)
    period = 0.05
    driver = make_driver(peer, [_dev(period=period)])
    await driver.connect()
    rec = Recorder()
    loop = asyncio.get_running_loop()
    unsubscribe = driver.subscribe(["dev/f_cdab", "dev/ir_f32", "dev/door"], rec)
    started = loop.time()
    await rec.wait_for(lambda: len(rec.batches) >= 10, within=3)
    elapsed = loop.time() - started
    assert 9 * period * 0.9 <= elapsed <= 9 * period * 1.5 + 0.2
    assert all(b.keys() == {"dev/f_cdab", "dev/ir_f32", "dev/door"} for _, b in rec.batches)
    assert rec.latest["dev/f_cdab"] == TagValue(F32_READ, Quality.GOOD,
                                                rec.latest["dev/f_cdab"].source_ts,
                                                rec.latest["dev/f_cdab"].server_ts)
    assert driver.status("dev").polls >= 10
    unsubscribe()
    unsubscribe()  # idempotent
    after = len(rec.batches)
    await asyncio.sleep(4 * period)
    assert len(rec.batches) <= after + 1  # at most a poll already under way


@pytest.mark.parametrize("kind", KINDS)
async def test_write_and_read_back(kind: str, start_peer: PeerFactory,
                                   make_driver: Callable[..., ModbusDriver]) -> None:
    peer = await start_peer(kind)
    driver = make_driver(peer, [_dev(period=30.0)])
    await driver.connect()
    rec = Recorder()
    driver.subscribe(["dev/setpoint"], rec)
    await rec.wait_for(lambda: rec.latest.get("dev/setpoint") is not None, within=2)
    assert rec.latest["dev/setpoint"].value == 1234

    await driver.write("dev/setpoint", 4321)  # function 6
    # the write wakes the poller: the new value arrives long before the 30 s period
    await rec.wait_for(lambda: rec.latest["dev/setpoint"].value == 4321, within=2)
    await driver.write("dev/sp_float", 2.75)  # function 16, CDAB
    await driver.write("dev/run", False)  # function 5
    values = await driver.read(["dev/setpoint", "dev/sp_float", "dev/run", "dev/f_abcd"])
    assert {p: v.value for p, v in values.items()} == {
        "dev/setpoint": 4321, "dev/sp_float": 2.75, "dev/run": False, "dev/f_abcd": F32_READ}

    with pytest.raises(WriteRefused, match="'temp' of device 'dev' .* is not writable"):
        await driver.write("dev/temp", 1.0)
    with pytest.raises(EncodeError, match="outside uint16 range"):
        await driver.write("dev/setpoint", 70000)
    with pytest.raises(DriverError, match="unknown tag path"):
        await driver.write("dev/nope", 1)
    assert (await driver.read(["dev/temp", "dev/setpoint"]))["dev/setpoint"].value == 4321


# --------------------------------------------------------------------------- failures as data

async def test_exception_response_marks_only_its_points_bad(
        start_peer: PeerFactory, make_driver: Callable[..., ModbusDriver]) -> None:
    peer = await start_peer("pymodbus-tcp")
    missing = {"name": "missing", "address": 200, "function": "holding_registers", "type": "uint16"}
    driver = make_driver(peer, [_dev(register_map=_map([missing]), period=0.05)])
    await driver.connect()
    values = await driver.read(["dev/missing", "dev/setpoint"])
    assert values["dev/missing"].quality is Quality.BAD_CONFIG_ERROR  # illegal data address
    assert values["dev/setpoint"].value == 1234 and values["dev/setpoint"].quality.is_good
    rec = Recorder()
    driver.subscribe(["dev/missing", "dev/setpoint"], rec)
    await rec.wait_for(lambda: len(rec.batches) >= 3, within=2)
    assert rec.latest["dev/missing"].quality is Quality.BAD_CONFIG_ERROR
    assert rec.latest["dev/setpoint"].quality is Quality.GOOD
    status = driver.status("dev")
    assert status.available and status.failed_polls == 0  # it answers: not a dead device
    assert "exception 0x02" in (status.last_error or "")


async def test_inter_frame_delay_spaces_requests(
        start_peer: PeerFactory, make_driver: Callable[..., ModbusDriver]) -> None:
    peer = await start_peer("pymodbus-rtu")
    driver = make_driver(peer, [_dev()], inter_frame_delay_s=0.05)
    await driver.connect()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(6):
        assert (await driver.read(["dev/setpoint"]))["dev/setpoint"].value == 1234
    assert loop.time() - started >= 5 * 0.05


@pytest.mark.parametrize("kind", ["pymodbus-tcp", "pymodbus-rtu"])
async def test_a_silent_device_does_not_slow_the_others(
        kind: str, start_peer: PeerFactory, make_driver: Callable[..., ModbusDriver],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=_LOGGER)
    peer = await start_peer(kind, units=(1, 2))
    period, backoff_initial, backoff_max = 0.05, 0.5, 1.0
    driver = make_driver(peer, [_dev("a", 1, period), _dev("b", 2, period)], timeout_s=0.1,
                         retries=1, down_after_failures=2, backoff_initial_s=backoff_initial,
                         backoff_max_s=backoff_max)
    await driver.connect()
    rec = Recorder()
    a_paths, b_paths = ["a/setpoint", "a/f_dcba"], ["b/setpoint", "b/f_dcba"]
    driver.subscribe(a_paths + b_paths, rec)
    await rec.wait_for(lambda: rec.qualities(a_paths + b_paths) == {Quality.GOOD}, within=2)

    peer.muted.add(2)  # B stops answering; A, on the same connection, does not notice
    await rec.wait_for(lambda: rec.qualities(b_paths) == {Quality.BAD_NO_COMMUNICATION}, within=3)
    assert not driver.status("b").available and driver.status("a").available
    assert driver.status("b").down_since is not None

    # A's poll rate with B down: time 40 polls of A, count B's probes meanwhile
    loop = asyncio.get_running_loop()
    a0, b_failed0, started = rec.count("a"), driver.status("b").failed_polls, loop.time()
    polls = 40
    await rec.wait_for(lambda: rec.count("a") >= a0 + polls, within=polls * period * 2)
    window = loop.time() - started
    rate = polls / window
    assert rate >= 0.9 / period, f"A polled {rate:.1f}/s, expected {1 / period:.0f}/s"
    probes = driver.status("b").failed_polls - b_failed0
    assert probes <= window / backoff_initial + 1  # B is probed rarely, one attempt each
    assert rec.qualities(a_paths) == {Quality.GOOD}
    assert rec.qualities(b_paths) == {Quality.BAD_NO_COMMUNICATION}

    peer.muted.clear()  # B answers again: it recovers at its next probe
    await rec.wait_for(lambda: rec.qualities(b_paths) == {Quality.GOOD}, within=backoff_max + 1.5)
    assert driver.status("b").available and driver.status("b").consecutive_failures == 0
    assert rec.latest["b/f_dcba"].value == F32_READ

    messages = [r.getMessage() for r in caplog.records if r.name == _LOGGER]
    assert sum("device b " in m and "not answering" in m for m in messages) == 1
    assert sum("device b " in m and "answering again" in m for m in messages) == 1
    assert not [m for m in messages if "device a " in m]
    print(f"\n{kind}: A {rate:.1f} polls/s over {window:.2f} s (period {period} s); "
          f"B probed {probes}x while down")


async def test_a_silent_device_times_out_with_bounded_retries(
        start_peer: PeerFactory, make_driver: Callable[..., ModbusDriver]) -> None:
    peer = await start_peer("pymodbus-rtu", units=(1, 2))
    timeout, retries = 0.1, 2
    driver = make_driver(peer, [_dev("a", 1), _dev("b", 2)], timeout_s=timeout, retries=retries)
    await driver.connect()
    peer.muted.add(2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    values = await driver.read(["a/setpoint", "b/setpoint"])
    elapsed = loop.time() - started
    assert values["a/setpoint"].value == 1234 and values["a/setpoint"].quality is Quality.GOOD
    assert values["b/setpoint"].quality is Quality.BAD_TIMEOUT and values["b/setpoint"].value is None
    assert (retries + 1) * timeout <= elapsed < (retries + 1) * timeout + 0.3  # 3 attempts, no more
    started = loop.time()
    with pytest.raises(Timeout, match="unit 2: no answer to write 'setpoint'"):
        await driver.write("b/setpoint", 7)
    assert loop.time() - started < 2 * timeout  # a control write is tried once
    peer.muted.clear()
    # only the answer was lost: the device did apply the write — why it is never repeated blindly
    assert (await driver.read(["b/setpoint"]))["b/setpoint"].value == 7


async def test_a_gateway_reporting_no_answer_counts_as_silence(
        start_peer: PeerFactory, make_driver: Callable[..., ModbusDriver]) -> None:
    peer = await start_peer("pymodbus-tcp", units=(1, 2))
    driver = make_driver(peer, [_dev("a", 1, 0.05), _dev("b", 2, 0.05)], down_after_failures=2,
                         backoff_initial_s=0.2, backoff_max_s=0.2)
    await driver.connect()
    rec = Recorder()
    driver.subscribe(["a/setpoint", "b/setpoint"], rec)
    await rec.wait_for(lambda: rec.qualities(["a/setpoint", "b/setpoint"]) == {Quality.GOOD}, within=2)
    peer.unreachable.add(2)
    await rec.wait_for(lambda: rec.qualities(["b/setpoint"]) == {Quality.BAD_NO_COMMUNICATION},
                       within=2)
    status = driver.status("b")
    assert not status.available and "gateway reports no answer" in (status.last_error or "")
    assert status.failed_polls == 2 and rec.qualities(["a/setpoint"]) == {Quality.GOOD}
    peer.unreachable.clear()
    await rec.wait_for(lambda: rec.qualities(["b/setpoint"]) == {Quality.GOOD}, within=2)


@pytest.mark.parametrize("kind", KINDS)
async def test_connection_loss_and_recovery_without_connect(
        kind: str, start_peer: PeerFactory, make_driver: Callable[..., ModbusDriver],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=_LOGGER)
    peer = await start_peer(kind)
    driver = make_driver(peer, [_dev(period=0.05)], timeout_s=0.2)
    await driver.connect()
    rec = Recorder()
    paths = ["dev/setpoint", "dev/f_badc", "dev/run"]
    driver.subscribe(paths, rec)
    await rec.wait_for(lambda: rec.qualities(paths) == {Quality.GOOD}, within=2)

    await peer.stop()
    await rec.wait_for(lambda: rec.qualities(paths) == {Quality.BAD_NOT_CONNECTED}, within=4)
    assert not driver.connected
    assert (await driver.read(["dev/setpoint"]))["dev/setpoint"].quality is Quality.BAD_NOT_CONNECTED
    with pytest.raises(ConnectionLost):
        await driver.write("dev/setpoint", 1)
    late = Recorder()  # a subscriber arriving during the outage learns it at once
    driver.subscribe(["dev/temp"], late)
    await late.wait_for(lambda: "dev/temp" in late.latest, within=1)
    assert late.latest["dev/temp"].quality is Quality.BAD_NOT_CONNECTED

    await peer.start()  # same port; the driver reconnects by itself
    await rec.wait_for(lambda: rec.qualities(paths) == {Quality.GOOD}, within=5)
    assert driver.connected
    assert rec.latest["dev/f_badc"].value == F32_READ
    await late.wait_for(lambda: late.latest["dev/temp"].quality is Quality.GOOD, within=2)
    messages = [r.getMessage() for r in caplog.records if r.name == _LOGGER]
    assert sum("connection lost" in m for m in messages) == 1
    assert sum("connection restored" in m for m in messages) == 1


# --------------------------------------------------------------------------- lifecycle, config

async def test_connect_to_nothing_raises_and_leaves_no_task(
        make_driver: Callable[..., ModbusDriver]) -> None:
    @dataclass
    class Nobody:
        port: int
        framing: Framing = Framing.TCP

    driver = make_driver(Nobody(free_port()), [_dev()], timeout_s=0.3)
    with pytest.raises(ConnectionLost, match="cannot connect"):
        await driver.connect()
    assert not driver.connected
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("modbus ")]
    await driver.close()
    await driver.close()  # idempotent
    with pytest.raises(DriverError, match="closed"):
        driver.subscribe(["dev/setpoint"], Recorder())


async def test_close_stops_polling(start_peer: PeerFactory,
                                   make_driver: Callable[..., ModbusDriver]) -> None:
    peer = await start_peer("pymodbus-tcp")
    driver = make_driver(peer, [_dev(period=0.02)])
    await driver.connect()
    rec = Recorder()
    driver.subscribe(["dev/setpoint"], rec)
    await rec.wait_for(lambda: len(rec.batches) >= 2, within=2)
    await driver.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("modbus ")]
    count = len(rec.batches)
    await asyncio.sleep(0.1)
    assert len(rec.batches) == count and not driver.connected


def test_configuration_is_checked_when_built() -> None:
    line = ModbusLine("127.0.0.1", 1502)
    with pytest.raises(ValueError, match="unit id 1 used by 'a' and 'b'"):
        ModbusDriver(line, [_dev("a", 1), _dev("b", 1)], {})
    with pytest.raises(ValueError, match="no device 'c'"):
        ModbusDriver(line, [_dev("a", 1)], {"x": PointRef("c", "setpoint")})
    with pytest.raises(RegisterMapError, match="'nope'"):
        ModbusDriver(line, [_dev("a", 1)], {"x": PointRef("a", "nope")})
    with pytest.raises(ValueError):
        ModbusLine("127.0.0.1", 502, backoff_initial_s=10, backoff_max_s=1)
    assert PointRef.parse("corrector-1/vb") == PointRef("corrector-1", "vb")
    with pytest.raises(ValueError):
        PointRef.parse("vb")
