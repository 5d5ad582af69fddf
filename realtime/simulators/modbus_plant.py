"""A simulated Modbus plant: correctors, SKZ rectifiers, valve actuators behind one TCP endpoint.

It speaks real Modbus (pymodbus's server, TCP or RTU framing over TCP), lays its registers out
by the same register-map files the driver reads, and moves its values the way the devices do:
correctors count volume at the current flow, which follows a daily demand curve with noise;
rectifiers hold the polarization potential near their set-point; valve actuators drive their
position feedback toward the last commanded position at their stroke rate. A device simulator is a
device, so this is the one place besides the driver that imports pymodbus.

Fault injection, for tests and demos of what the control room sees when a device misbehaves
(both hooks are plain calls on the plant's event loop and take effect at the next request or
step; call them again to restore):
- `set_local(unit, True)`: a valve actuator's selector goes to LOCAL. Its status word's `remote`
  bit clears, its motor stops, and it ignores position commands: a write to the command register
  is acknowledged as usual, but the position does not move, and the command register tracks the
  position from the next step on (so a command written in LOCAL is dropped, never executed on the
  return to REMOTE). `set_local(unit, False)` turns the selector back to REMOTE.
- `reject_writes(unit, exception_code=4)`: the device answers every write request (functions 5,
  6, 15, 16, 22, 23) with that Modbus exception (4 = server device failure) and stores nothing;
  reads go on as before. `reject_writes(unit, None)` makes it accept writes again. It runs in
  the pymodbus simulator's per-device `action` hook, which sees each request before the
  datastore does, so the exception is a real exception response on the wire.

With a `corrector_source` (the demo's hydraulic plant) a corrector has nothing to measure until
the source has its first solution: until then it answers reads with exception 6 (server device
busy), as a corrector still starting up does, so its tags are Bad rather than carrying a made-up
pressure into the historian; afterwards it holds its last values whenever the source has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from realtime.drivers._modbus_maps import (
    DataType,
    FunctionCode,
    RegisterMap,
    builtin_map,
    decode,
    encode,
)

__all__ = ["ModbusPlant", "PlantDevice"]

log = logging.getLogger(__name__)
REGISTERS = 256
VALVE_STROKE_S = 60.0  # a full 0 → 100 % stroke of a valve actuator, typical for line valves
# write coil, write register, write coils, write registers, mask write, read/write registers
WRITE_FUNCTIONS = frozenset({5, 6, 15, 16, 22, 23})


@dataclass
class PlantDevice:
    """One simulated device: unit id, model and its own operating point."""

    unit_id: int
    model: str  # a built-in register map
    base_flow_m3h: float = 100.0  # correctors: mean standard flow
    stroke_s: float = VALVE_STROKE_S  # valve actuators: seconds for a full stroke
    values: dict[str, float] = field(default_factory=dict)
    # fault injection (`ModbusPlant.set_local`, `ModbusPlant.reject_writes`)
    local: bool = False  # valve actuators: selector in LOCAL, Modbus commands ignored
    write_exception: int | None = None  # answer writes with this Modbus exception code


def _demand(hour: float) -> float:
    """Relative demand over the day: night trough, morning and evening peaks (1.0 = mean)."""
    return (1.0 + 0.35 * math.exp(-((hour - 8.0) ** 2) / 4.0)
            + 0.45 * math.exp(-((hour - 19.5) ** 2) / 5.0) - 0.35 * math.exp(
                -((hour - 3.5) ** 2) / 6.0))


def _valve_status(v: dict[str, float], direction: int, remote: bool = True) -> float:
    """The actuator's status word (smart-valve-actuator map) for `direction` +1 opening, -1
    closing, 0 at rest: moving, opening, closing, end positions, remote (unless the selector is
    in LOCAL, see `ModbusPlant.set_local`) and fault (never)."""
    word = 1 << 5 if remote else 0
    if direction:
        word |= 1 | (1 << 1 if direction > 0 else 1 << 2)
    if v["position"] >= 100.0:
        word |= 1 << 3
    if v["position"] <= 0.0:
        word |= 1 << 4
    return float(word)


class ModbusPlant:
    """A pymodbus server for `devices`; `start()`, `step()` on a clock, `stop()`."""

    def __init__(self, devices: list[PlantDevice], port: int, *, rtu: bool = False,
                 period_s: float = 1.0, seed: int = 7,
                 corrector_source: Callable[[int], tuple[float, float] | None] | None = None) -> None:
        """`corrector_source`, when given, supplies a corrector's (absolute pressure Pa, standard
        flow m³/h) by unit id — the demo's hydraulic plant; the device adds sensor noise."""
        self.devices = {d.unit_id: d for d in devices}
        self._corrector_source = corrector_source
        self.port = port
        self.rtu = rtu
        self.period_s = period_s
        self._rng = random.Random(seed)
        self._maps: dict[int, RegisterMap] = {d.unit_id: builtin_map(d.model) for d in devices}
        self._server: ModbusTcpServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.hour = 9.0
        # correctors whose source has not supplied a value yet: they answer reads "busy"
        self._starting: set[int] = ({d.unit_id for d in devices if d.model.startswith("corrector")}
                                    if corrector_source is not None else set())
        for d in devices:
            if d.model.startswith("corrector"):
                d.values.update(vb=10_000.0 + 1000 * d.unit_id, vm=3_500.0 + 300 * d.unit_id,
                                p_abs=401_325.0, t_gas=6.0, qb=d.base_flow_m3h,
                                qm=d.base_flow_m3h / 3.9, k_factor=3.9, alarms=0.0,
                                battery_days=1200.0)
            elif d.model.startswith("skz"):
                d.values.update(self._skz_initial())
            elif d.model.startswith("smart-valve"):
                d.values.update(position=100.0, position_command=100.0, torque=0.0)
                d.values["status"] = _valve_status(d.values, 0, remote=not d.local)

    # ------------------------------------------------------------------ fault injection

    def set_local(self, unit: int, local: bool = True) -> None:
        """Turn valve actuator `unit`'s selector to LOCAL (or back to REMOTE with `local=False`):
        in LOCAL the `remote` status bit is false, the motor stops and position commands are
        acknowledged but ignored (see the module docstring). Raises KeyError for an unknown
        unit, ValueError for a device that is not a valve actuator."""
        d = self.devices[unit]
        if not d.model.startswith("smart-valve"):
            raise ValueError(f"unit {unit} is a {d.model}, not a valve actuator")
        d.local = local
        if local:
            d.values["torque"] = 0.0
        d.values["status"] = _valve_status(d.values, 0, remote=not local)

    def reject_writes(self, unit: int, exception_code: int | None = ExcCodes.DEVICE_FAILURE) -> None:
        """Make device `unit` answer every write with Modbus exception `exception_code` (1..8,
        0x0A, 0x0B; default 4, server device failure), or accept writes again with None. Raises
        KeyError for an unknown unit, ValueError for a code Modbus does not define."""
        d = self.devices[unit]
        d.write_exception = None if exception_code is None else int(ExcCodes(exception_code))

    async def _on_request(self, unit: int, function_code: int, _start: int, _address: int,
                          _count: int, _registers: list[int],
                          set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """pymodbus's per-device `action` hook: runs before the datastore serves a request
        (also the plant's own `async_getValues`/`async_setValues`, which use functions 3 and 4,
        never a write function)."""
        if unit in self._starting and set_values is None:
            return ExcCodes.DEVICE_BUSY
        code = self.devices[unit].write_exception
        if code is not None and set_values is not None and function_code in WRITE_FUNCTIONS:
            return ExcCodes(code)
        return None

    # ------------------------------------------------------------------ plant

    @staticmethod
    def _skz_initial() -> dict[str, float]:
        # mode 2 = automatic potential control; potentials in V vs Cu/CuSO4.
        return {"u_out": 18.0, "i_out": 6.5, "e_pol": -1.02, "e_on": -1.35, "mode": 2.0,
                "setpoint_i": 8.0, "setpoint_u": 20.0, "setpoint_e_pol": -1.0,
                "operating_hours": 40_000.0}

    async def start(self) -> None:
        """Serve on 127.0.0.1:port and start moving the values."""
        sims = [SimDevice(id=unit, action=functools.partial(self._on_request, unit), simdata=(
            [SimData(0, values=[False] * REGISTERS, datatype=SimType.BITS)],
            [SimData(0, values=[False] * REGISTERS, datatype=SimType.BITS)],
            [SimData(0, values=[0] * REGISTERS, datatype=SimType.REGISTERS)],
            [SimData(0, values=[0] * REGISTERS, datatype=SimType.REGISTERS)],
        )) for unit in self.devices]
        framer = FramerType.RTU if self.rtu else FramerType.SOCKET
        self._server = ModbusTcpServer(sims, framer=framer, address=("127.0.0.1", self.port))
        await self._server.serve_forever(background=True)
        await self.publish()
        self._task = asyncio.create_task(self._run(), name=f"modbus-plant-{self.port}")

    async def stop(self) -> None:
        """Stop moving values and close the server."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            try:
                await self.absorb_writes()
                self.step(self.period_s)
                await self.publish()
            except Exception:  # a simulator glitch must not end the demo
                log.exception("modbus plant update failed")

    def step(self, dt_s: float, hour: float | None = None) -> None:
        """Advance every device by `dt_s` seconds of plant time."""
        self.hour = (self.hour + dt_s / 3600.0) % 24 if hour is None else hour
        for d in self.devices.values():
            v = d.values
            if d.model.startswith("corrector"):
                physical = None
                if self._corrector_source is not None:
                    physical = self._corrector_source(d.unit_id)
                    if physical is None:  # not solved yet, or not at all: hold the last values
                        continue
                    self._starting.discard(d.unit_id)
                if physical is not None:  # the hydraulic plant, through noisy sensors
                    p_abs, q_true = physical
                    qb = max(0.0, q_true * self._rng.gauss(1.0, 0.005))
                else:
                    p_abs = 401_325.0
                    qb = max(0.0, d.base_flow_m3h * _demand(self.hour) * self._rng.gauss(1.0, 0.03))
                v["qb"], v["qm"] = qb, qb / v["k_factor"]
                v["vb"] += qb * dt_s / 3600.0
                v["vm"] += v["qm"] * dt_s / 3600.0
                v["p_abs"] = p_abs + self._rng.gauss(0.0, 300.0 if physical is None else 100.0)
                v["t_gas"] = 6.0 + 2.0 * math.sin(self.hour / 24 * 2 * math.pi)
            elif d.model.startswith("skz"):
                v["e_pol"] = v["setpoint_e_pol"] - 0.02 + self._rng.gauss(0.0, 0.005)
                v["e_on"] = v["e_pol"] - 0.33
                v["i_out"] = max(0.0, 6.5 + self._rng.gauss(0.0, 0.1))
                v["u_out"] = 18.0 + self._rng.gauss(0.0, 0.2)
            elif d.model.startswith("smart-valve"):
                self._step_valve(d, dt_s)

    def _step_valve(self, d: PlantDevice, dt_s: float) -> None:
        """Drive the position toward the command (clamped to 0..100 %) at the stroke rate; in
        LOCAL stand still, with the command tracking the position."""
        v = d.values
        if d.local:
            v["position_command"], v["torque"] = v["position"], 0.0
            v["status"] = _valve_status(v, 0, remote=False)
            return
        target = min(100.0, max(0.0, v["position_command"]))
        travel = target - v["position"]
        reach = 100.0 * dt_s / d.stroke_s
        if abs(travel) <= reach:  # arrives within this step: the motor stops
            v["position"], direction = target, 0
        else:
            v["position"] += math.copysign(reach, travel)
            direction = 1 if travel > 0 else -1
        # running torque, higher while (un)seating near the closed end; none at rest
        v["torque"] = 0.0 if direction == 0 else max(0.0, (55.0 if v["position"] < 5.0 else 30.0)
                                                      + self._rng.gauss(0.0, 2.0))
        v["status"] = _valve_status(v, direction)

    async def absorb_writes(self) -> None:
        """Take over what clients wrote into writable registers (set-points, modes)."""
        assert self._server is not None
        for unit, d in self.devices.items():
            if unit in self._starting:  # its registers keep what was written until it is up
                continue
            for point in self._maps[unit].points:
                if not point.writable or point.function is not FunctionCode.HOLDING_REGISTERS:
                    continue
                words = await self._server.async_getValues(unit, 3, point.address, point.count)
                d.values[point.name] = float(decode(point, [int(w) for w in words]))

    async def publish(self) -> None:
        """Write every device's values into its registers, as its register map lays them out."""
        assert self._server is not None
        for unit, d in self.devices.items():
            if unit in self._starting:  # nothing measured yet
                continue
            for point in self._maps[unit].points:
                value = d.values.get(point.name)
                if value is None or point.bit is not None:
                    continue
                if point.type is DataType.BOOL:
                    continue
                words = encode(point, value)  # scales and rounds as the device would
                assert isinstance(words, list)
                fc = 4 if point.function is FunctionCode.INPUT_REGISTERS else 3
                await self._server.async_setValues(unit, fc, point.address, words)
