"""Modbus driver: one line (a Modbus TCP endpoint, or a serial-to-TCP modem carrying Modbus RTU
frames) with several devices behind it. The only module of gasops that imports pymodbus.

One pymodbus client and one `asyncio.Lock` per line: requests never overlap, and an optional
inter-frame delay keeps slow RS-485 devices happy. Each device has its own poller task and poll
period; its points come from a register map (`_modbus_maps`) and are read in the fewest
requests (`_modbus_plan`). Failures are data:

- a device that stops answering is marked down after `down_after_failures` failed polls (its
  tags turn `BAD_NO_COMMUNICATION`, logged once) and is then probed with a single request
  every backoff interval (doubling up to `backoff_max_s`), so it does not eat the line's time
  and the other devices keep their poll rate; when it answers it is polled normally again
  (logged once);
- a lost connection turns every subscribed tag of the line `BAD_NOT_CONNECTED` (logged once),
  and the driver reconnects by itself with backoff, then polls at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from realtime.drivers._modbus_maps import (
    EncodeError,
    Framing,
    FunctionCode,
    ModbusDevice,
    ModbusLine,
    Point,
    PointRef,
    RegisterMapError,
    decode_at,
    encode,
)
from realtime.drivers._modbus_plan import ReadRequest, plan_reads
from realtime.drivers.base import (
    BadResponse,
    ConnectionLost,
    Driver,
    DriverError,
    Listener,
    Timeout,
    Unsubscribe,
)
from realtime.model import Quality, TagPath, TagValue, Value

__all__ = [
    "DeviceException",
    "DeviceStatus",
    "EncodeError",
    "Framing",
    "ModbusDevice",
    "ModbusDriver",
    "ModbusLine",
    "PointRef",
    "RegisterMapError",
    "WriteRefused",
]

_LOG = logging.getLogger(__name__)
_GRACE_S = 1.0  # our own deadline on top of pymodbus's response timeout
_NO_LIMIT = 2**31  # pymodbus closes the line after retries+3 silent requests: never, here
_GATEWAY_NO_ANSWER = frozenset({0x0A, 0x0B})  # gateway path unavailable / target failed to respond
_CONFIG_CODES = frozenset({0x01, 0x02, 0x03})  # illegal function / data address / data value


class WriteRefused(DriverError):
    """The driver refuses a write before sending it (point not writable)."""


class DeviceException(BadResponse):
    """The device answered with a Modbus exception code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device's health as the driver sees it (counts since the driver was built)."""

    name: str
    available: bool
    polls: int
    failed_polls: int
    consecutive_failures: int
    last_error: str | None
    down_since: dt.datetime | None


@dataclass(eq=False, slots=True)
class _Device:
    config: ModbusDevice
    points: dict[str, Point] = field(default_factory=dict)  # those somebody subscribed to
    plan: list[ReadRequest] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    down: bool = False
    down_since: dt.datetime | None = None
    failures: int = 0
    backoff_s: float = 0.0
    next_probe: float = 0.0
    polls: int = 0
    failed_polls: int = 0
    last_error: str | None = None


@dataclass(eq=False, slots=True)
class _Subscription:
    listener: Listener
    by_device: dict[str, list[tuple[TagPath, str]]]  # device → (path, point name)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _quality_for(exc: DriverError) -> Quality:
    if isinstance(exc, ConnectionLost):
        return Quality.BAD_NOT_CONNECTED
    if isinstance(exc, Timeout):
        return Quality.BAD_TIMEOUT
    if isinstance(exc, DeviceException) and exc.code in _CONFIG_CODES:
        return Quality.BAD_CONFIG_ERROR  # the map asks for something this device does not have
    if isinstance(exc, DeviceException):
        return Quality.BAD_DEVICE_FAILURE
    return Quality.BAD_COMMUNICATION_ERROR


class ModbusDriver(Driver):
    """The `Driver` for one Modbus line (TCP, or RTU over TCP) and the devices on it.

    `points` maps each tag path to a (device, point) reference. Call `connect()` once; from
    then on the driver keeps itself connected until `close()`.
    """

    def __init__(self, line: ModbusLine, devices: Sequence[ModbusDevice],
                 points: Mapping[TagPath, PointRef], *,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._line = line
        self._clock = clock
        self._devices: dict[str, _Device] = {}
        units: dict[int, str] = {}
        for device in devices:
            if device.name in self._devices:
                raise ValueError(f"line {line.label}: device name {device.name!r} used twice")
            if device.unit_id in units:
                raise ValueError(f"line {line.label}: unit id {device.unit_id} used by "
                                 f"{units[device.unit_id]!r} and {device.name!r}")
            units[device.unit_id] = device.name
            self._devices[device.name] = _Device(device)
        self._refs: dict[TagPath, tuple[_Device, Point]] = {}
        for path, ref in points.items():
            dev = self._devices.get(ref.device)
            if dev is None:
                raise ValueError(f"tag {path!r}: no device {ref.device!r} on line {line.label}")
            self._refs[path] = (dev, dev.config.register_map.point(ref.point))
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._last_frame = 0.0
        self._started = False
        self._closed = False
        self._subs: dict[int, _Subscription] = {}
        self._next_sub = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._handles: dict[int, asyncio.Handle] = {}

    # ------------------------------------------------------------------ Driver interface

    @property
    def connected(self) -> bool:
        """Whether the line's TCP connection is up right now."""
        return self._connected.is_set() and self._client is not None and self._client.connected

    async def connect(self) -> None:
        """Open the line; `ConnectionLost` if it cannot be reached. Then it reconnects by itself."""
        if self._closed:
            raise ConnectionLost(f"{self._line.label}: driver is closed")
        if self.connected:
            return
        await self._open()
        self._started = True
        if self._supervisor is None:
            self._supervisor = self._spawn(self._supervise(), f"modbus {self._line.label} supervisor")

    async def read(self, paths: Sequence[TagPath]) -> dict[TagPath, TagValue]:
        """Read `paths` now, in the fewest requests; failed points come back Bad (a path this
        line does not know: `BAD_CONFIG_ERROR`, the others are read all the same)."""
        stamp = self._clock()
        unknown = {p: TagValue(None, Quality.BAD_CONFIG_ERROR, stamp, stamp)
                   for p in paths if p not in self._refs}
        resolved = self._resolve([p for p in paths if p in self._refs])
        result: dict[TagPath, TagValue] = {}
        by_device: dict[str, dict[str, Point]] = {}
        for dev, point in resolved.values():
            by_device.setdefault(dev.config.name, {})[point.name] = point
        values: dict[tuple[str, str], TagValue] = {}
        for name, wanted in by_device.items():
            dev = self._devices[name]
            attempts = 1 if dev.down else self._line.retries + 1
            for request in self._plan(dev, wanted.values()):
                try:
                    data = await self._read_block(dev, request, attempts)
                except DriverError as exc:
                    stamp = self._clock()
                    for point in request.points:
                        values[name, point.name] = TagValue(None, _quality_for(exc), stamp, stamp)
                else:
                    stamp = self._clock()
                    for point in request.points:
                        values[name, point.name] = self._value(point, request, data, stamp)
        for path, (dev, point) in resolved.items():
            result[path] = values[dev.config.name, point.name]
        return {p: result[p] if p in result else unknown[p] for p in paths}

    async def write(self, path: TagPath, value: Value) -> None:
        """Encode `value` (engineering units) and write it (function 5, 6 or 16).

        Raises `WriteRefused` for a point the map does not mark writable, `EncodeError` for a
        value the point's type cannot hold, and `ConnectionLost`/`Timeout`/`BadResponse` when
        the line or the device fails. One attempt: a control write is never repeated blindly.
        """
        dev, point = self._resolve([path])[path]
        model = dev.config.register_map.model
        if not point.writable:
            raise WriteRefused(f"tag {path!r}: point {point.name!r} of device "
                               f"{dev.config.name!r} ({model}) is not writable")
        payload = encode(point, value)
        unit = dev.config.unit_id

        def call(client: AsyncModbusTcpClient) -> Awaitable[ModbusPDU]:
            if point.function is FunctionCode.COILS:
                return client.write_coil(point.address, bool(payload), device_id=unit)
            assert isinstance(payload, list)
            if len(payload) == 1:
                return client.write_register(point.address, payload[0], device_id=unit)
            return client.write_registers(point.address, payload, device_id=unit)

        await self._request(call, 1, f"write {point.name!r} of {dev.config.name!r}", unit)
        if dev.points:
            dev.wake.set()  # poll at once: subscribers see the new value

    def subscribe(self, paths: Sequence[TagPath], listener: Listener) -> Unsubscribe:
        """Poll `paths` at their devices' periods and deliver each poll's values to `listener`.

        Call from the event loop. Every poll is delivered (not only changes: deadbands and
        change detection are the tag store's job), one batch per device poll.
        """
        if self._closed:
            raise DriverError(f"{self._line.label}: driver is closed")
        loop = asyncio.get_running_loop()
        resolved = self._resolve(paths)
        by_device: dict[str, list[tuple[TagPath, str]]] = {}
        for path, (dev, point) in resolved.items():
            by_device.setdefault(dev.config.name, []).append((path, point.name))
        key = self._next_sub
        self._next_sub += 1
        self._subs[key] = _Subscription(listener, by_device)
        self._refresh_points()
        self._handles[key] = loop.call_soon(self._deliver_initial, key)

        def unsubscribe() -> None:
            handle = self._handles.pop(key, None)
            if handle is not None:
                handle.cancel()
            if self._subs.pop(key, None) is not None and not self._closed:
                self._refresh_points()

        return unsubscribe

    async def close(self) -> None:
        """Cancel and await every task, close the connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._connected.clear()
        async with self._lock:  # after a connect() or request still under way
            if self._client is not None:
                self._client.close()
                self._client = None
        await asyncio.sleep(0)  # let the transport finish closing its socket

    # ------------------------------------------------------------------ health

    def status(self, device: str) -> DeviceStatus:
        """The health and counters of `device`."""
        dev = self._devices[device]
        return DeviceStatus(name=device, available=not dev.down, polls=dev.polls,
                            failed_polls=dev.failed_polls, consecutive_failures=dev.failures,
                            last_error=dev.last_error, down_since=dev.down_since)

    # ------------------------------------------------------------------ connection

    def _new_client(self) -> AsyncModbusTcpClient:
        line = self._line
        client = AsyncModbusTcpClient(
            line.host, port=line.port,
            framer=FramerType.RTU if line.framing is Framing.RTU else FramerType.SOCKET,
            name=f"modbus {line.label}", timeout=line.timeout_s, retries=0,
            reconnect_delay=0,  # no pymodbus reconnect task: the supervisor reconnects
            trace_connect=self._on_trace_connect)
        client.set_max_no_responses(_NO_LIMIT)  # a dead device must not drop the whole line
        return client

    async def _open(self) -> None:
        async with self._lock:
            if self._closed:
                raise ConnectionLost(f"{self._line.label}: driver is closed")
            if self.connected:
                return
            if self._client is None:
                self._client = self._new_client()
            if not await self._client.connect():
                raise ConnectionLost(f"{self._line.label}: cannot connect")
            was_lost = self._lost.is_set()
            self._lost.clear()
            self._connected.set()
        if was_lost:
            _LOG.info("Modbus line %s: connection restored", self._line.label)

    def _on_trace_connect(self, up: bool) -> None:
        if not up:
            self._on_disconnected("connection closed")

    def _on_disconnected(self, reason: str) -> None:
        if self._closed or not self._connected.is_set():
            return
        self._connected.clear()
        self._lost.set()
        _LOG.warning("Modbus line %s: connection lost (%s); its tags are Bad until it is back",
                     self._line.label, reason)
        stamp = self._clock()
        for dev in self._devices.values():
            self._publish(dev, {name: TagValue(None, Quality.BAD_NOT_CONNECTED, stamp, stamp)
                                for name in dev.points})

    async def _supervise(self) -> None:
        delay = self._line.reconnect_initial_s
        while True:
            await self._lost.wait()
            await asyncio.sleep(delay)
            try:
                await self._open()
            except ConnectionLost:
                delay = min(delay * 2, self._line.reconnect_max_s)
            else:
                delay = self._line.reconnect_initial_s

    # ------------------------------------------------------------------ requests

    async def _request(self, call: Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]],
                       attempts: int, what: str, unit: int) -> ModbusPDU:
        """One request with up to `attempts` tries, serialized on the line's lock."""
        label = f"{self._line.label} unit {unit}"
        failure: DriverError = Timeout(f"{label}: no answer to {what}")
        loop = asyncio.get_running_loop()
        for _ in range(attempts):
            async with self._lock:
                client = self._client
                if client is None or not self.connected:
                    if client is not None and not client.connected:
                        self._on_disconnected("socket closed")
                    raise ConnectionLost(f"{self._line.label}: not connected")
                if (pause := self._last_frame + self._line.inter_frame_delay_s - loop.time()) > 0:
                    await asyncio.sleep(pause)
                try:
                    async with asyncio.timeout(self._line.timeout_s + _GRACE_S):
                        response = await call(client)
                except ConnectionException as exc:
                    self._on_disconnected(str(exc))
                    raise ConnectionLost(f"{self._line.label}: {exc}") from exc
                except (ModbusIOException, TimeoutError) as exc:  # no (valid) answer in time
                    if not client.connected:
                        self._on_disconnected("no answer and the socket is closed")
                        raise ConnectionLost(f"{self._line.label}: connection lost") from exc
                    failure = Timeout(f"{label}: no answer to {what} within "
                                      f"{self._line.timeout_s:g} s")
                    continue
                except ModbusException as exc:
                    raise BadResponse(f"{label}: {what} failed: {exc}") from exc
                finally:
                    self._last_frame = loop.time()
            if response.isError():
                code = int(response.exception_code)
                if code in _GATEWAY_NO_ANSWER:  # the gateway is up, the device behind it is not
                    failure = Timeout(f"{label}: gateway reports no answer to {what} "
                                      f"(exception {code:#04x})")
                    continue
                raise DeviceException(f"{label}: {what} refused with exception {code:#04x}", code)
            return response
        raise failure

    async def _read_block(self, dev: _Device, request: ReadRequest,
                          attempts: int) -> list[int] | list[bool]:
        unit = dev.config.unit_id
        function, address, count = request.function, request.address, request.count

        def call(client: AsyncModbusTcpClient) -> Awaitable[ModbusPDU]:
            reader = {
                FunctionCode.COILS: client.read_coils,
                FunctionCode.DISCRETE_INPUTS: client.read_discrete_inputs,
                FunctionCode.HOLDING_REGISTERS: client.read_holding_registers,
                FunctionCode.INPUT_REGISTERS: client.read_input_registers,
            }[function]
            return reader(address, count=count, device_id=unit)

        what = f"read fc{int(function)} {address}+{count} of {dev.config.name!r}"
        response = await self._request(call, attempts, what, unit)
        data: list[int] | list[bool] = (list(response.bits) if function.is_bits
                                        else list(response.registers))
        if len(data) < count:
            raise BadResponse(f"{self._line.label} unit {unit}: {what} returned {len(data)} values")
        return data[:count]

    def _value(self, point: Point, request: ReadRequest, data: list[int] | list[bool],
               stamp: dt.datetime) -> TagValue:
        value = decode_at(point, request.address, data)
        if isinstance(value, float) and not math.isfinite(value):
            return TagValue(None, Quality.BAD_SENSOR_FAILURE, stamp, stamp)  # NaN/inf: no reading
        return TagValue(value, Quality.GOOD, stamp, stamp)

    # ------------------------------------------------------------------ polling

    def _plan(self, dev: _Device, points: Iterable[Point]) -> list[ReadRequest]:
        rmap = dev.config.register_map
        return plan_reads(points, max_gap=rmap.max_gap, max_registers=rmap.max_registers_per_read,
                          max_bits=rmap.max_bits_per_read)

    def _refresh_points(self) -> None:
        for dev in self._devices.values():
            wanted: dict[str, Point] = {}
            for sub in self._subs.values():
                for _path, name in sub.by_device.get(dev.config.name, ()):
                    wanted[name] = dev.config.register_map.point(name)
            grew = not wanted.keys() <= dev.points.keys()
            dev.points = wanted
            dev.plan = self._plan(dev, wanted.values())
            if wanted and dev.task is None:
                dev.task = self._spawn(self._poll_loop(dev),
                                       f"modbus {self._line.label} poll {dev.config.name}")
            if grew:
                dev.wake.set()

    async def _wait_wake(self, dev: _Device, delay: float | None) -> bool:
        """Wait up to `delay` s (None: forever) for a wake-up (new points, a write)."""
        if not dev.wake.is_set():
            try:
                async with asyncio.timeout(delay):
                    await dev.wake.wait()
            except TimeoutError:
                return False
        dev.wake.clear()
        return True

    async def _poll_loop(self, dev: _Device) -> None:
        loop = asyncio.get_running_loop()
        next_due = loop.time()
        while True:
            if not dev.points:
                await self._wait_wake(dev, None)
                next_due = loop.time()
                continue
            if not self._connected.is_set():
                await self._connected.wait()
                next_due = loop.time()
                continue
            due = dev.next_probe if dev.down else next_due
            if (delay := due - loop.time()) > 0:
                if await self._wait_wake(dev, delay) and not dev.down:
                    next_due = loop.time()
                continue
            try:
                await self._poll_once(dev)
            except Exception:  # a bug must not stop this device's polling for good
                _LOG.exception("Modbus line %s: polling %s failed", self._line.label, dev.config.name)
            next_due = max(next_due + dev.config.poll_period_s, loop.time())

    async def _poll_once(self, dev: _Device) -> None:
        dev.wake.clear()  # whatever asked for a poll gets this one
        attempts = 1 if dev.down else self._line.retries + 1  # a down device gets one probe
        values: dict[str, TagValue] = {}
        error: str | None = None
        for request in list(dev.plan):
            try:
                data = await self._read_block(dev, request, attempts)
            except ConnectionLost:
                return  # the line is down: every tag was already made Bad
            except Timeout as exc:
                self._poll_failed(dev, exc)
                return
            except BadResponse as exc:  # it answered: alive, but these points are Bad
                error = str(exc)
                stamp = self._clock()
                for point in request.points:
                    values[point.name] = TagValue(None, _quality_for(exc), stamp, stamp)
            else:
                stamp = self._clock()
                for point in request.points:
                    values[point.name] = self._value(point, request, data, stamp)
            attempts = self._line.retries + 1
        if dev.down:
            _LOG.info("Modbus device %s (unit %d on %s) is answering again", dev.config.name,
                      dev.config.unit_id, self._line.label)
            dev.down, dev.down_since = False, None
        dev.failures = 0
        dev.last_error = error
        dev.polls += 1
        self._publish(dev, values)

    def _poll_failed(self, dev: _Device, exc: DriverError) -> None:
        dev.failures += 1
        dev.failed_polls += 1
        dev.last_error = str(exc)
        now = asyncio.get_running_loop().time()
        if dev.down:
            dev.backoff_s = min(dev.backoff_s * 2, self._line.backoff_max_s)
        elif dev.failures >= self._line.down_after_failures:
            dev.down, dev.down_since = True, self._clock()
            dev.backoff_s = self._line.backoff_initial_s
            _LOG.warning("Modbus device %s (unit %d on %s) is not answering (%s); its tags are "
                         "Bad and it is probed every %g-%g s until it answers", dev.config.name,
                         dev.config.unit_id, self._line.label, exc, self._line.backoff_initial_s,
                         self._line.backoff_max_s)
        else:
            return  # a transient miss: keep the last values, try again next period
        dev.next_probe = now + dev.backoff_s
        stamp = self._clock()
        self._publish(dev, {name: TagValue(None, Quality.BAD_NO_COMMUNICATION, stamp, stamp)
                            for name in dev.points})

    # ------------------------------------------------------------------ delivery

    def _publish(self, dev: _Device, values: Mapping[str, TagValue]) -> None:
        if not values:
            return
        for sub in list(self._subs.values()):
            batch = {path: values[name] for path, name in sub.by_device.get(dev.config.name, ())
                     if name in values}
            if batch:
                self._call(sub.listener, batch)

    def _deliver_initial(self, key: int) -> None:
        """A new subscriber learns at once why values will not come soon (line or device down)."""
        self._handles.pop(key, None)
        sub = self._subs.get(key)
        if sub is None:
            return
        stamp = self._clock()
        batch: dict[TagPath, TagValue] = {}
        for name, pairs in sub.by_device.items():
            dev = self._devices[name]
            quality = (Quality.BAD_NOT_CONNECTED if self._started and not self.connected
                       else Quality.BAD_NO_COMMUNICATION if dev.down else None)
            if quality is not None:
                batch.update({path: TagValue(None, quality, stamp, stamp) for path, _ in pairs})
        if batch:
            self._call(sub.listener, batch)

    def _call(self, listener: Listener, batch: Mapping[TagPath, TagValue]) -> None:
        try:
            listener(batch)
        except Exception:  # a faulty consumer must not stop the line
            _LOG.exception("Modbus line %s: a listener failed", self._line.label)

    # ------------------------------------------------------------------ helpers

    def _resolve(self, paths: Sequence[TagPath]) -> dict[TagPath, tuple[_Device, Point]]:
        unknown = [p for p in paths if p not in self._refs]
        if unknown:
            raise DriverError(f"line {self._line.label}: unknown tag path(s) {unknown!r}")
        return {p: self._refs[p] for p in paths}

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._supervisor is task:
            self._supervisor = None
        for dev in self._devices.values():
            if dev.task is task:
                dev.task = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            _LOG.error("Modbus line %s: task %s failed", self._line.label, task.get_name(),
                       exc_info=exc)

