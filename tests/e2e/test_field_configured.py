"""Production wiring: the server reaches devices it does not run, through configured addresses."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from opcua.simulator import StationSimulator
from realtime.simulators.modbus_plant import ModbusPlant, PlantDevice
from tests._live import start_live_server
from tests._services import free_port
from tests.e2e.test_field_demo import _seed


async def test_server_polls_configured_endpoints(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gasops.sqlite3'}"
    await asyncio.to_thread(_seed, url)
    station = StationSimulator(["GRP-01"], port=free_port(), period_s=0.2)
    await station.start()
    plant_port = free_port()
    plant = ModbusPlant([PlantDevice(1, "corrector-ek270-like")], plant_port, period_s=0.2)
    await plant.start()
    live = await asyncio.to_thread(
        start_live_server, tmp_path, url, poll_period_s=0.2,
        opcua_endpoints={"stations": station.endpoint},
        modbus_lines={"correctors": f"127.0.0.1:{plant_port}"})
    try:
        query = ('{ p: tag(path: "station/GRP-01/p_out") { current { value good } } '
                 'vb: tag(path: "meter/M-C1/vb") { current { value good } } '
                 'skz: tag(path: "skz/SKZ-01/potential") { current { value } } }')
        deadline = time.monotonic() + 20
        while True:
            data = (await asyncio.to_thread(live.gql, query))["data"]
            if all(data[k]["current"] and data[k]["current"]["good"] for k in ("p", "vb")):
                break
            assert time.monotonic() < deadline, data
            await asyncio.sleep(0.2)
        assert data["skz"]["current"] is None  # its line has no address configured
    finally:
        await asyncio.to_thread(live.stop)
        await plant.stop()
        await station.stop()
