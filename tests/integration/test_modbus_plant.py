"""The simulated Modbus plant, read and commanded through the real driver."""

from __future__ import annotations

import asyncio

import pytest

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
