"""Telemetry throughput: (a) points/s through the whole pipeline into DuckDB, (c) Modbus
registers/s polled from a local server.

Run: `.venv/bin/python bench/telemetry.py` (about a minute). (d), downsampling a day of 1 s
data, is `bench/historian_buckets.py`; (b), WebSocket latency with 100 subscribers, is
`bench/telemetry_latency.py`.

(a) 5,000 tags, every one changing each "second" (values outside the deadband), fed as
driver batches of 5,000 into `Pipeline.on_values` → tag store → in-process bus → historian
writer → store-and-forward → DuckDB file, until `--points` were fed; the figure is points per
second from the first batch until the last point is committed in DuckDB (checked by count).
Anchor in the same run: `DuckDBHistorian.write` alone with the same points in batches of
10,000 — the storage's own ceiling.

(c) One pymodbus server (the demo's plant) with 10 correctors; the Modbus driver polls all of
them back to back on one line; registers/s = registers moved per second of wall time. Anchor:
pymodbus's own async client reading the same 20-register block in a loop, no driver around it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import os
import platform
import tempfile
import time
from pathlib import Path

from realtime.broadcast import Broadcast
from realtime.drivers._modbus_maps import ModbusDevice, ModbusLine, PointRef, builtin_map
from realtime.drivers.modbus import ModbusDriver
from realtime.historian.base import Point
from realtime.historian.buffer import StoreAndForward
from realtime.historian.duckdb import DuckDBHistorian
from realtime.historian.process import HistorianProcess
from realtime.historian.writer import HistorianWriter
from realtime.model import Deadband, DeadbandKind, Quality, TagDef, TagValue
from realtime.pipeline import Pipeline
from realtime.simulators.modbus_plant import ModbusPlant, PlantDevice
from realtime.store import TagStore
from server.field import free_port


async def pipeline_rate(tmp: Path, n_tags: int, total: int,
                        in_child: bool = True) -> tuple[float, float]:
    """(a): points/s through the pipeline, and the storage-only anchor. `in_child`: DuckDB in
    its own process (`HistorianProcess`, the server's default) or on a thread of this one."""
    tags = [f"station/S{k:05d}/p" for k in range(n_tags)]
    store = TagStore([TagDef(t, deadband=Deadband(DeadbandKind.absolute, 0.5)) for t in tags])
    historian = (HistorianProcess(functools.partial(DuckDBHistorian, tmp / "a.duckdb"))
                 if in_child else DuckDBHistorian(tmp / "a.duckdb"))
    await historian.start()
    buffer = StoreAndForward(historian, tmp / "a-buffer.sqlite3")
    await buffer.start()
    writer = HistorianWriter(buffer, max_batch=50_000, flush_interval_s=0.2)
    await writer.start()
    pipe = Pipeline(store, Broadcast(), writer.sink)
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    start = time.perf_counter()
    fed = 0
    second = 0
    while fed < total:
        ts = t0 + dt.timedelta(seconds=second)
        value = float(second % 2)  # alternates by 1.0: always outside the 0.5 deadband
        pipe.on_values({t: TagValue(value + k * 1e-3, Quality.GOOD, ts, ts)
                        for k, t in enumerate(tags)})
        fed += n_tags
        second += 1
        await asyncio.sleep(0)  # let the writer run, as drivers' awaits would
        while writer.queued > 100_000:  # noqa: ASYNC110 - sustained rate: wait for the storage
            await asyncio.sleep(0.005)
    await writer.close()
    await buffer.wait_drained()
    elapsed = time.perf_counter() - start
    await buffer.close()
    stored = sum(s.count[0] for s in (await historian.buckets(
        tags, t0, t0 + dt.timedelta(days=1), 86_400, ["count"])).values() if s.count)
    await historian.close()
    assert writer.written == fed == stored and writer.dropped == 0, (writer.written, fed, stored)
    # anchor: the storage alone
    anchor = DuckDBHistorian(tmp / "anchor.duckdb")
    await anchor.start()
    points = [Point(t, t0 + dt.timedelta(seconds=s), float(s)) for s in range(total // n_tags)
              for t in tags]
    a0 = time.perf_counter()
    for i in range(0, len(points), 10_000):
        await anchor.write(points[i:i + 10_000])
    anchor_s = time.perf_counter() - a0
    await anchor.close()
    return fed / elapsed, len(points) / anchor_s


async def modbus_rate(seconds: float) -> tuple[float, float]:
    """(c): registers/s through the driver, and pymodbus's bare client as the anchor."""
    port = free_port()
    plant = ModbusPlant([PlantDevice(u, "corrector-ek270-like") for u in range(1, 11)], port)
    await plant.start()
    cmap = builtin_map("corrector-ek270-like")
    input_points = [p for p in cmap.points if p.function.value == 4 and p.bit is None]
    devices = [ModbusDevice(f"u{u}", u, cmap, poll_period_s=0.001) for u in range(1, 11)]
    refs = {f"m/{u}/{p.name}": PointRef(f"u{u}", p.name) for u in range(1, 11)
            for p in input_points}
    driver = ModbusDriver(ModbusLine("127.0.0.1", port, timeout_s=2.0), devices, refs)
    await driver.connect()
    batches = 0

    def count(_: object) -> None:
        nonlocal batches
        batches += 1

    unsub = driver.subscribe(list(refs), count)
    await asyncio.sleep(seconds)
    unsub()
    polls = sum(driver.status(f"u{u}").polls for u in range(1, 11))
    await driver.close()
    registers_per_poll = 20  # addresses 0..19 in one request
    driver_rate = polls * registers_per_poll / seconds
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await asyncio.wait_for(client.read_input_registers(0, count=20, device_id=1 + n % 10), 2)
        n += 1
    client.close()
    bare_rate = n * 20 / (time.perf_counter() - t0)
    await plant.stop()
    return driver_rate, bare_rate


async def main() -> None:
    """Run both and print lines for bench/RESULTS.md."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", type=int, default=5000)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    for in_child in (True, False):
        with tempfile.TemporaryDirectory(prefix="gasops-bench-") as tmp:
            rate, anchor = await pipeline_rate(Path(tmp), args.tags, args.points, in_child)
        where = "in a child process (default)" if in_child else "on a thread of this process"
        print(f"(a) pipeline into DuckDB {where}: {rate:,.0f} points/s ({args.points:,} points,"
              f" {args.tags} tags); anchor DuckDB write alone: {anchor:,.0f} points/s")
    drv, bare = await asyncio.wait_for(modbus_rate(args.seconds), args.seconds * 3 + 30)
    print(f"(c) Modbus polling through the driver: {drv:,.0f} registers/s; "
          f"anchor pymodbus client alone: {bare:,.0f} registers/s")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")


if __name__ == "__main__":
    asyncio.run(main())
