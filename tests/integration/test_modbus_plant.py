"""The simulated Modbus plant, read and commanded through the real driver."""

from __future__ import annotations

import asyncio

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes

from realtime.drivers._modbus_maps import (
    Framing,
    ModbusDevice,
    ModbusLine,
    PointRef,
    builtin_map,
)
from realtime.drivers.modbus import DeviceException, ModbusDriver
from realtime.model import TagValue
from realtime.simulators.modbus_plant import ModbusPlant, PlantDevice
from tests._services import free_port


async def test_plant_values_move_and_follow_a_written_setpoint() -> None:
    port = free_port()
    plant = ModbusPlant([PlantDevice(1, "corrector-ek270-like", 150.0),
                         PlantDevice(2, "skz-rectifier")], port, rtu=True, period_s=0.05)
    await plant.start()
    driver = ModbusDriver(
        ModbusLine("127.0.0.1", port, framing=Framing.RTU),
        [ModbusDevice("corr", 1, builtin_map("corrector-ek270-like"), poll_period_s=0.05),
         ModbusDevice("skz", 2, builtin_map("skz-rectifier"), poll_period_s=0.05)],
        {"meter/M1/vb": PointRef("corr", "vb"), "meter/M1/p": PointRef("corr", "p_abs"),
         "skz/S1/potential": PointRef("skz", "e_pol"),
         "skz/S1/setpoint": PointRef("skz", "setpoint_e_pol")})
    try:
        await driver.connect()
        first = await driver.read(["meter/M1/vb", "skz/S1/potential"])
        assert all(v.quality.is_good for v in first.values())
        assert 390_000 < (await driver.read(["meter/M1/p"]))["meter/M1/p"].value < 410_000  # type: ignore[operator]
        await asyncio.sleep(0.5)
        later = await driver.read(["meter/M1/vb"])
        assert later["meter/M1/vb"].value > first["meter/M1/vb"].value  # type: ignore[operator]
        await driver.write("skz/S1/setpoint", -1.2)
        seen: list[TagValue] = []
        for _ in range(50):
            seen.append((await driver.read(["skz/S1/potential"]))["skz/S1/potential"])
            if seen[-1].value is not None and seen[-1].value < -1.15:  # type: ignore[operator]
                break
            await asyncio.sleep(0.05)
        assert -1.25 < seen[-1].value < -1.15, seen[-1]  # type: ignore[operator]
    finally:
        await driver.close()
        await plant.stop()


async def test_valve_actuator_strokes_toward_a_written_command_at_its_rate() -> None:
    port = free_port()
    plant = ModbusPlant([PlantDevice(3, "smart-valve-actuator")], port, period_s=3600.0)
    await plant.start()  # the clock task sleeps an hour: the test drives step() itself
    points = {f"valve/V1/{p}": PointRef("valve", p)
              for p in ("position", "position_command", "moving", "opening", "closing",
                        "open_limit", "closed_limit", "remote", "fault", "torque")}
    driver = ModbusDriver(ModbusLine("127.0.0.1", port),
                          [ModbusDevice("valve", 3, builtin_map("smart-valve-actuator"))],
                          points)

    async def state() -> dict[str, object]:
        got = await driver.read(list(points))
        assert all(v.quality.is_good for v in got.values()), got
        return {p.rsplit("/", 1)[1]: v.value for p, v in got.items()}

    async def advance(seconds: float) -> dict[str, object]:
        await plant.absorb_writes()
        plant.step(seconds)
        await plant.publish()
        return await state()

    try:
        await driver.connect()
        s = await state()  # starts fully open, at rest, in remote
        assert s["position"] == 100.0 and s["position_command"] == 100.0
        assert s["open_limit"] and s["remote"]
        assert not (s["moving"] or s["closing"] or s["closed_limit"] or s["fault"])
        assert s["torque"] == 0.0
        await driver.write("valve/V1/position_command", 25.0)
        s = await advance(15.0)  # 60 s full stroke: 15 s = 25 % of travel
        assert s["position"] == pytest.approx(75.0, abs=0.1)
        assert s["moving"] and s["closing"] and not s["opening"] and not s["open_limit"]
        assert s["torque"] > 0.0  # type: ignore[operator]
        s = await advance(29.0)
        assert s["position"] == pytest.approx(26.7, abs=0.1) and s["moving"]
        s = await advance(5.0)  # 1.7 % left: arrives and stops
        assert s["position"] == pytest.approx(25.0, abs=0.05)
        assert not s["moving"] and not s["closing"] and s["torque"] == 0.0
        await driver.write("valve/V1/position_command", 0.0)
        s = await advance(6.0)
        assert s["position"] == pytest.approx(15.0, abs=0.1) and s["moving"]
        s = await advance(60.0)  # more than enough: stops at the closed end
        assert s["position"] == 0.0 and s["closed_limit"] and not s["moving"]
        await driver.write("valve/V1/position_command", 100.0)
        s = await advance(30.0)
        assert s["position"] == pytest.approx(50.0, abs=0.1)
        assert s["moving"] and s["opening"] and not s["closing"] and not s["closed_limit"]
    finally:
        await driver.close()
        await plant.stop()


# --------------------------------------------------------------------------- fault injection


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu"])
async def test_a_device_set_to_reject_writes_answers_with_the_modbus_exception(rtu: bool) -> None:
    port = free_port()
    plant = ModbusPlant([PlantDevice(1, "skz-rectifier"), PlantDevice(2, "skz-rectifier")], port,
                        rtu=rtu, period_s=3600.0)  # the test drives absorb/step/publish itself
    await plant.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0,
                                  framer=FramerType.RTU if rtu else FramerType.SOCKET)
    mode = builtin_map("skz-rectifier").point("mode").address
    try:
        assert await client.connect()
        plant.reject_writes(1)  # default: exception 4, server device failure
        for write in (client.write_register(mode, 1, device_id=1),
                      client.write_registers(mode, [1], device_id=1),
                      client.write_coil(0, False, device_id=1)):
            refused = await write
            assert refused.isError() and refused.exception_code == ExcCodes.DEVICE_FAILURE, refused
        plant.reject_writes(1, 6)  # any exception code Modbus defines
        refused = await client.write_register(mode, 1, device_id=1)
        assert refused.isError() and refused.exception_code == ExcCodes.DEVICE_BUSY
        with pytest.raises(ValueError):
            plant.reject_writes(1, 9)
        with pytest.raises(KeyError):
            plant.reject_writes(7)
        read = await client.read_holding_registers(mode, count=1, device_id=1)
        assert not read.isError() and read.registers == [2]  # reads go on; nothing was stored
        await plant.absorb_writes()
        plant.step(1.0)
        await plant.publish()  # the plant's own datastore access is not a client write
        assert plant.devices[1].values["mode"] == 2.0
        other = await client.write_register(mode, 0, device_id=2)  # only unit 1 refuses
        assert not other.isError(), other
        plant.reject_writes(1, None)
        accepted = await client.write_register(mode, 1, device_id=1)
        assert not accepted.isError(), accepted
        await plant.absorb_writes()
        assert plant.devices[1].values["mode"] == 1.0 and plant.devices[2].values["mode"] == 0.0
    finally:
        client.close()
        await plant.stop()


async def test_the_driver_reports_a_rejected_write_as_a_device_exception() -> None:
    port = free_port()
    plant = ModbusPlant([PlantDevice(2, "skz-rectifier")], port, rtu=True, period_s=0.05)
    await plant.start()
    driver = ModbusDriver(ModbusLine("127.0.0.1", port, framing=Framing.RTU),
                          [ModbusDevice("skz", 2, builtin_map("skz-rectifier"))],
                          {"skz/S1/mode": PointRef("skz", "mode")})
    try:
        await driver.connect()
        plant.reject_writes(2, 4)
        with pytest.raises(DeviceException, match="refused with exception 0x04") as refused:
            await driver.write("skz/S1/mode", 1)
        assert refused.value.code == 4
        after = (await driver.read(["skz/S1/mode"]))["skz/S1/mode"]
        assert after.quality.is_good and after.value == 2  # the line stays up, the mode unchanged
        plant.reject_writes(2, None)
        await driver.write("skz/S1/mode", 1)
        await asyncio.sleep(0.2)
        assert (await driver.read(["skz/S1/mode"]))["skz/S1/mode"].value == 1
    finally:
        await driver.close()
        await plant.stop()


async def test_a_valve_actuator_in_local_keeps_its_position_and_reports_not_remote() -> None:
    port = free_port()
    plant = ModbusPlant([PlantDevice(3, "smart-valve-actuator"), PlantDevice(4, "skz-rectifier")],
                        port, period_s=3600.0)  # the test drives absorb/step/publish itself
    await plant.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    vmap = builtin_map("smart-valve-actuator")
    command, status = vmap.point("position_command").address, vmap.point("status").address

    async def advance(seconds: float) -> dict[str, object]:
        await plant.absorb_writes()
        plant.step(seconds)
        await plant.publish()
        regs = await client.read_input_registers(0, count=3, device_id=3)
        cmd = await client.read_holding_registers(command, count=1, device_id=3)
        assert not (regs.isError() or cmd.isError()), (regs, cmd)
        word = regs.registers[status]
        return {"position": regs.registers[0] / 10, "torque": regs.registers[1] / 10,
                "moving": bool(word & 1), "remote": bool(word & 1 << 5),
                "command": cmd.registers[0] / 10}

    try:
        assert await client.connect()
        await client.write_register(command, 500, device_id=3)  # 50.0 %
        s = await advance(15.0)  # 25 % of travel
        assert s["position"] == pytest.approx(75.0, abs=0.1) and s["moving"] and s["remote"]
        plant.set_local(3)  # the selector goes to LOCAL mid-stroke: the motor stops
        s = await advance(15.0)
        assert s["position"] == pytest.approx(75.0, abs=0.1)
        assert not s["moving"] and not s["remote"] and s["torque"] == 0.0
        assert s["command"] == pytest.approx(75.0, abs=0.1)  # the command tracks the position
        written = await client.write_register(command, 100, device_id=3)  # 10.0 %
        assert not written.isError(), written  # acknowledged, like a real actuator's interface
        written_back = await client.read_holding_registers(command, count=1, device_id=3)
        assert written_back.registers == [100]
        for _ in range(4):
            s = await advance(15.0)  # long enough to have closed the valve in REMOTE
            assert s["position"] == pytest.approx(75.0, abs=0.1), s
            assert not s["moving"] and not s["remote"]
        assert s["command"] == pytest.approx(75.0, abs=0.1)  # the command written in LOCAL is gone
        plant.set_local(3, False)
        s = await advance(15.0)  # back in REMOTE: the dropped command is not executed
        assert s["remote"] and not s["moving"] and s["position"] == pytest.approx(75.0, abs=0.1)
        await client.write_register(command, 450, device_id=3)
        s = await advance(15.0)
        assert s["position"] == pytest.approx(50.0, abs=0.1) and s["moving"] and s["remote"]
        with pytest.raises(ValueError):
            plant.set_local(4)  # a rectifier has no LOCAL/REMOTE selector here
        with pytest.raises(KeyError):
            plant.set_local(9)
    finally:
        client.close()
        await plant.stop()


async def test_a_corrector_answers_busy_until_its_source_has_a_value() -> None:
    """The demo's correctors measure the hydraulic plant: until its first solution they answer
    'device busy', so their tags are Bad rather than a made-up pressure in the historian."""
    port = free_port()
    solved: dict[int, tuple[float, float]] = {}
    plant = ModbusPlant([PlantDevice(1, "corrector-ek270-like"), PlantDevice(2, "skz-rectifier")],
                        port, period_s=0.05, corrector_source=solved.get)
    await plant.start()
    driver = ModbusDriver(
        ModbusLine("127.0.0.1", port),
        [ModbusDevice("corr", 1, builtin_map("corrector-ek270-like"), poll_period_s=0.05),
         ModbusDevice("skz", 2, builtin_map("skz-rectifier"), poll_period_s=0.05)],
        {"meter/M1/p": PointRef("corr", "p_abs"), "skz/S1/potential": PointRef("skz", "e_pol")})
    try:
        await driver.connect()
        await asyncio.sleep(0.2)  # a few plant steps without a solution
        early = await driver.read(["meter/M1/p", "skz/S1/potential"])
        assert early["meter/M1/p"].value is None and not early["meter/M1/p"].quality.is_good
        assert early["skz/S1/potential"].quality.is_good  # the other devices are up
        solved[1] = (252_000.0, 80.0)  # the plant's first solution: 252 kPa absolute
        for _ in range(50):
            got = (await driver.read(["meter/M1/p"]))["meter/M1/p"]
            if got.quality.is_good:
                break
            await asyncio.sleep(0.05)
        assert got.quality.is_good and 251_000 < got.value < 253_000, got  # type: ignore[operator]
        del solved[1]  # no value for a while: the corrector holds its last reading
        await asyncio.sleep(0.2)
        held = (await driver.read(["meter/M1/p"]))["meter/M1/p"]
        assert held.quality.is_good and 251_000 < held.value < 253_000  # type: ignore[operator]
    finally:
        await driver.close()
        await plant.stop()
