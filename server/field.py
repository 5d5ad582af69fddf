"""The field: which drivers to run, built from the tag definitions' `source`, and — in the
demo — the simulated devices they talk to.

A tag's `source` names its driver and address as data:
- `{"driver": "modbus", "line": "correctors", "unit": 3, "model": "corrector-ek270-like",
   "point": "vb"}` — a point of a register map, on a unit of a named line;
- `{"driver": "opcua", "endpoint": "stations", "address": "station/GRP-01/p_out"}`.
Line and endpoint names map to network addresses through settings; the demo binds its
simulators to free loopback ports and fills that map itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm
from realtime.drivers._modbus_maps import (
    Framing,
    ModbusDevice,
    ModbusLine,
    PointRef,
    builtin_map,
)
from realtime.drivers.base import Driver, Listener
from realtime.drivers.modbus import ModbusDriver
from realtime.simulators.modbus_plant import ModbusPlant, PlantDevice

__all__ = ["DEMO_LINES", "Field", "assign_demo_sources", "free_port", "sources_of"]

log = logging.getLogger("gasops.field")

# Demo wiring: corrector and SKZ tags onto two Modbus lines (a TCP gateway and an RS-485 modem
# speaking RTU framing over TCP), with each tag name mapped onto its register map's point.
# Remotely operated valves: their actuators sit in wells scattered over the town, each behind a
# cellular router, so there is no shared RS-485 bus to run RTU on; they speak Modbus TCP (the
# demo serves them all from one endpoint, one unit id each). TCP suits a line that carries
# commands, too: the MBAP transaction id ties each reply to its request, so a late reply to a
# timed-out write is never taken for the answer to the next request (RTU frames carry no id).
# The tag `position` reads the actuator's feedback, not its command register.
DEMO_LINES = {
    "correctors": ("corrector-ek270-like", Framing.TCP,
                   {"vb": "vb", "vm": "vm", "p": "p_abs", "t": "t_gas", "alarm": "alarms"}),
    "skz": ("skz-rectifier", Framing.RTU,
            {"u_out": "u_out", "i_out": "i_out", "potential": "e_pol", "mode": "mode",
             "setpoint": "setpoint_e_pol"}),
    "valves": ("smart-valve-actuator", Framing.TCP,
               {"position": "position", "remote": "remote", "fault": "fault"}),
}
# A tag read from one point and commanded through another (an actuator's feedback and its
# set-point register): the source's "write_point".
DEMO_WRITE_POINTS = {"valves": {"position": "position_command"}}
MAX_UNITS_PER_LINE = 247  # Modbus unit ids 1..247 (0 is broadcast, 248..255 reserved)


def _demo_line(line: str, index: int) -> tuple[str, int]:
    """Line name and unit id of the `index`-th (0-based) device of a demo line: units 1..247,
    then the next devices on `<line>-2`, `<line>-3`… (lines not in `DEMO_LINES` run Modbus TCP)."""
    spill, slot = divmod(index, MAX_UNITS_PER_LINE)
    return (line if spill == 0 else f"{line}-{spill + 1}"), slot + 1


async def assign_demo_sources(session: AsyncSession) -> int:
    """Point correctors', SKZ stations' and remotely operated valves' tags at the demo's Modbus
    lines (stations' at the OPC UA endpoint); returns count."""
    correctors = set((await session.execute(select(orm.Meter.id).where(
        orm.Meter.kind == "industrial_corrector"))).scalars())
    rows = (await session.execute(select(orm.TagDefinition).where(
        orm.TagDefinition.source.is_(None)).order_by(orm.TagDefinition.path))).scalars().all()
    setpoints = {sid: sp for sid, sp in (await session.execute(select(
        orm.Station.id, orm.Station.outlet_setpoint_pa_gauge))).all()}
    units: dict[str, dict[str, int]] = {line: {} for line in DEMO_LINES}
    n = 0
    for row in rows:
        if row.asset_kind == "station":
            source = {"driver": "opcua", "endpoint": "stations", "address": row.path}
            if row.name == "p_out":  # the simulator regulates to the registry's set-point
                source["sim_setpoint_pa"] = setpoints.get(row.asset_id)
            await session.execute(update(orm.TagDefinition).where(
                orm.TagDefinition.path == row.path).values(source=source))
            n += 1
            continue
        # valve tags exist only for remotely operable valves (`tags.ensure_tags`)
        line = ("correctors" if row.asset_kind == "meter" and row.asset_id in correctors
                else "skz" if row.asset_kind == "skz"
                else "valves" if row.asset_kind == "valve" else None)
        if line is None or row.name not in DEMO_LINES[line][2]:
            continue
        model, _, points = DEMO_LINES[line]
        name, unit = _demo_line(line, units[line].setdefault(row.asset_id, len(units[line])))
        source = {"driver": "modbus", "line": name, "unit": unit, "model": model,
                  "point": points[row.name]}
        if row.name in DEMO_WRITE_POINTS.get(line, {}):  # commands go to another register
            source["write_point"] = DEMO_WRITE_POINTS[line][row.name]
        await session.execute(update(orm.TagDefinition).where(
            orm.TagDefinition.path == row.path).values(source=source))
        n += 1
    return n


@dataclass
class Field:
    """Drivers (and demo simulators) for the tags that name a source."""

    sources: Mapping[str, Mapping[str, Any]]  # tag path → source
    listener: Listener
    simulate: bool = False
    line_addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    poll_period_s: float = 5.0
    sim_period_s: float = 1.0  # simulated stations' update period
    drivers: list[Driver] = field(default_factory=list)
    plants: list[ModbusPlant] = field(default_factory=list)
    opcua_endpoints: dict[str, str] = field(default_factory=dict)
    simulators: list[Any] = field(default_factory=list)
    plant: Any = None  # the demo's hydraulic plant (server/plant.py), feeding the station simulators
    _unsubs: list[Callable[[], None]] = field(default_factory=list)
    _valve_units: dict[str, tuple[ModbusPlant, int]] = field(default_factory=dict)
    _owners: dict[str, tuple[Driver, str]] = field(default_factory=dict)  # tag → driver, address

    async def write(self, path: str, value: Any) -> None:
        """Write a tag through the driver that owns it (to its `write_point` when the source
        names one); raises `DriverError` (or KeyError for a tag no driver serves)."""
        try:
            driver, address = self._owners[path]
        except KeyError:
            raise KeyError(f"no driver serves {path!r}") from None
        await driver.write(address, value)

    def _modbus_lines(self) -> dict[str, dict[str, Any]]:
        lines: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"units": {}, "points": {}, "writes": {}})
        for path, src in self.sources.items():
            if src.get("driver") != "modbus":
                continue
            line = lines[src["line"]]
            line["units"][int(src["unit"])] = src["model"]
            line["points"][path] = (int(src["unit"]), src["point"])
            if src.get("write_point"):
                line["writes"][path] = (int(src["unit"]), src["write_point"])
        return lines

    def _station_opening(self, station_id: str) -> float:
        """A simulated station's outlet valve position, 0…1 (1 when no simulator has it)."""
        for sim in self.simulators:
            path = f"station/{station_id}/valve_pos"
            if path in sim.points:
                return min(max(float(sim.value(path) or 0.0), 0.0), 100.0) / 100.0
        return 1.0

    def _station_setpoint(self, station_id: str) -> float | None:
        """A simulated station controller's outlet set-point, Pa gauge (None: not simulated)."""
        for sim in self.simulators:
            path = f"station/{station_id}/p_out_sp"
            if path in sim.points:
                value = sim.value(path)
                return float(value) if value is not None else None
        return None

    def _valve_opening(self, valve_id: str) -> float | None:
        """A simulated smart valve's actuator position, 0…1 (None when none simulates it)."""
        found = self._valve_units.get(valve_id)
        if found is None:
            return None
        plant, unit = found
        return min(max(plant.devices[unit].values.get("position", 100.0), 0.0), 100.0) / 100.0

    async def start(self) -> None:
        """Start simulators (demo) and drivers; a line that cannot connect is retried by its
        driver, so start-up never waits on a dead device."""
        await self._start_opcua()
        await self._start_modbus()
        if self.plant is not None:
            self.plant.valve_opening = self._valve_opening

    async def _start_opcua(self) -> None:
        from opcua.client import OpcUaDriver
        from opcua.nodes import node_id_for_path
        from opcua.simulator import StationSimulator

        endpoints: dict[str, dict[str, str]] = defaultdict(dict)
        for path, src in self.sources.items():
            if src.get("driver") == "opcua":
                endpoints[src["endpoint"]][path] = src["address"]
        for name, points in endpoints.items():
            if self.simulate:
                stations = sorted({p.split("/")[1] for p in points})
                setpoints = {p.split("/")[1]: float(src["sim_setpoint_pa"])
                             for p, src in self.sources.items()
                             if src.get("sim_setpoint_pa") is not None}
                sim = StationSimulator(stations, port=free_port(), period_s=self.sim_period_s,
                                       setpoints_pa=setpoints,
                                       plant=self.plant.station if self.plant is not None else None)
                await sim.start()
                self.simulators.append(sim)
                if self.plant is not None:
                    self.plant.station_opening = self._station_opening
                    self.plant.station_setpoint = self._station_setpoint
                self.opcua_endpoints[name] = sim.endpoint
            if name not in self.opcua_endpoints:
                log.warning("no address for OPC UA endpoint %r: its tags stay without values",
                            name)
                continue
            driver = OpcUaDriver(self.opcua_endpoints[name],
                                 {p: node_id_for_path(a) for p, a in points.items()})
            with contextlib.suppress(Exception):
                await driver.connect()  # the driver keeps retrying by itself
            self._unsubs.append(driver.subscribe(list(points), self.listener))
            self.drivers.append(driver)
            self._owners.update((p, (driver, p)) for p in points)
            log.info("opc ua endpoint %s: %d tags at %s", name, len(points),
                     self.opcua_endpoints[name])

    async def _start_modbus(self) -> None:
        for name, line in self._modbus_lines().items():
            framing = DEMO_LINES[name][1] if name in DEMO_LINES else Framing.TCP
            if self.simulate:
                port = free_port()
                asset_of = {u: p.split("/")[1] for p, (u, _pt) in line["points"].items()}
                source = (functools.partial(_corrector_values, self.plant, asset_of)
                          if self.plant is not None else None)

                plant = ModbusPlant([PlantDevice(u, m, 40.0 + 17.0 * (u % 7))
                                     for u, m in sorted(line["units"].items())],
                                    port, rtu=framing is Framing.RTU, corrector_source=source)
                await plant.start()
                self.plants.append(plant)
                self.line_addresses[name] = ("127.0.0.1", port)
                self._valve_units.update({a: (plant, u) for u, a in asset_of.items()
                                          if line["units"][u].startswith("smart-valve")})
            if name not in self.line_addresses:
                log.warning("no address for Modbus line %r: its tags stay without values", name)
                continue
            host, port = self.line_addresses[name]
            devices = [ModbusDevice(f"unit-{u}", u, builtin_map(m), poll_period_s=self.poll_period_s)
                       for u, m in sorted(line["units"].items())]
            points = {p: PointRef(f"unit-{u}", pt) for p, (u, pt) in line["points"].items()}
            # a tag commanded through another register gets a second, write-only address
            commands = {f"{p}@write": PointRef(f"unit-{u}", w)
                        for p, (u, w) in line["writes"].items()}
            driver = ModbusDriver(ModbusLine(host, port, framing=framing), devices,
                                  {**points, **commands})
            with contextlib.suppress(Exception):
                await driver.connect()  # the driver keeps retrying by itself
            self._unsubs.append(driver.subscribe(list(points), self.listener))
            self.drivers.append(driver)
            self._owners.update((p, (driver, f"{p}@write" if p in line["writes"] else p))
                                for p in points)
            log.info("modbus line %s: %d devices, %d tags at %s:%d", name, len(devices),
                     len(points), host, port)

    async def stop(self) -> None:
        """Stop drivers, then simulators."""
        for unsub in self._unsubs:
            unsub()
        for d in self.drivers:
            await d.close()
        for p in self.plants:
            await p.stop()
        for sim in self.simulators:
            await sim.stop()
        self.drivers.clear()
        self._owners.clear()
        self.plants.clear()
        self.simulators.clear()


def _corrector_values(plant: Any, asset_of: Mapping[int, str], unit: int) -> tuple[float, float] | None:
    """The hydraulic plant's (p_abs, flow) at the corrector on Modbus unit `unit`."""
    return plant.meter(asset_of.get(unit, ""))


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for the demo's simulators)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sources_of(rows: Iterable[orm.TagDefinition]) -> dict[str, dict[str, Any]]:
    """Tag path → source, for tags that have one."""
    return {r.path: dict(r.source) for r in rows if r.source}


