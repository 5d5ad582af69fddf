"""The simulated Modbus plant, read and commanded through the real driver."""

from __future__ import annotations

import asyncio

from realtime.drivers._modbus_maps import (
    Framing,
    ModbusDevice,
    ModbusLine,
    PointRef,
    builtin_map,
)
from realtime.drivers.modbus import ModbusDriver
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
