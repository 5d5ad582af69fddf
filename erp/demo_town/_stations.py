"""Equipment hierarchies and internal meters of the GRS and the GRP/ShRP regulator stations.

A station's equipment is a tree (`parent_id`): reduction lines hold their slam-shut valve,
filter and regulator; the GRS also has its filter-separator unit, heater, metering unit with a
volume corrector, odorizer and telemetry. Internal meters (the station's own gas, electricity,
water and heat) are `meter` records with `station_id`.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from erp.demo_town._catalogue import INTERNAL_METERS
from erp.demo_town._plan import SerialMint, TownPlan

__all__ = ["add_grs_equipment", "add_regulator_station_equipment"]


class _Tree:
    """Appends equipment records of one station, numbering them `<station>-E01`, …"""

    def __init__(self, plan: TownPlan, station_id: str, area_id: str, serials: SerialMint,
                 rng: random.Random) -> None:
        self.plan, self.station_id, self.area_id = plan, station_id, area_id
        self.serials, self.rng = serials, rng
        self.n = 0

    def add(self, kind: str, name: str, model: str | None, parent: str | None = None) -> str:
        self.n += 1
        eid = f"{self.station_id}-E{self.n:02d}"
        row: dict[str, Any] = {
            "id": eid, "name": name, "kind": kind, "station_id": self.station_id,
            "parent_id": parent, "area_id": self.area_id, "model": model,
            "serial": self.serials.next("EQ", self.rng.randint(1995, 2024)) if model else None,
            "status": "in_service"}
        self.plan.equipment.append(row)
        return eid


def _internal_meters(plan: TownPlan, station_id: str, area_id: str, kinds: tuple[str, ...],
                     serials: SerialMint, rng: random.Random, epoch: dt.date) -> None:
    for kind in kinds:
        model, prefix = INTERNAL_METERS[kind]
        due = epoch + dt.timedelta(days=rng.randint(30, 6 * 365))
        plan.meters.append({
            "id": f"M-{station_id}-{kind.removeprefix('internal_')}", "serial":
            serials.next(prefix, due.year - 6), "model": model, "kind": kind,
            "service_point_id": None, "station_id": station_id, "area_id": area_id,
            "verification_due": due, "status": "in_service"})


def add_grs_equipment(plan: TownPlan, station_id: str, area_id: str, serials: SerialMint,
                      rng: random.Random, epoch: dt.date) -> None:
    """The equipment tree and the four internal meters of the city gate station."""
    t = _Tree(plan, station_id, area_id, serials, rng)
    t.add("shutoff_valve", "Inlet shut-off valve", "Ball valve DN200 PN80")
    unit = t.add("other", "Filter-separator unit", None)
    t.add("filter", "Filter-separator FS-1", "FS-200", unit)
    t.add("filter", "Filter-separator FS-2", "FS-200", unit)
    t.add("heater", "Gas preheater", "PGA-200")
    reduction = t.add("other", "Reduction unit", None)
    for n, duty in ((1, "working"), (2, "standby")):
        line = t.add("other", f"Reduction line {n} ({duty})", None, reduction)
        t.add("slam_shut_valve", f"Slam-shut valve, line {n}", "PKV-200", line)
        t.add("regulator", f"Monitor regulator, line {n}", "RDP-200V", line)
        t.add("regulator", f"Active regulator, line {n}", "RDP-200V", line)
    t.add("relief_valve", "Outlet relief valve", "PSK-100")
    metering = t.add("meter", "Commercial metering unit", "Turbine meter TRZ G1000")
    t.add("meter", "Volume corrector", "Elster EK270", metering)
    t.add("odorizer", "Odorizer", "AOG-30")
    t.add("telemetry", "Telemetry controller", "SIMATIC S7-1200")
    _internal_meters(plan, station_id, area_id,
                     ("internal_gas", "internal_electricity", "internal_water", "internal_heat"),
                     serials, rng, epoch)


def _regulator_model(kind: str, capacity_m3h: float) -> tuple[str, str, str]:
    """(regulator, slam-shut valve, filter) models for a station of `capacity_m3h`."""
    if kind == "ShRP":
        if capacity_m3h <= 400:
            return "RDNK-400", "built-in", "FG-25"
        return "RDNK-1000", "built-in", "FG-50"
    if capacity_m3h <= 1_200:
        return "RDG-50N", "PKN-50", "FG-50"
    return "RDG-80N", "PKN-100", "FV-100"


def add_regulator_station_equipment(plan: TownPlan, station_id: str, kind: str, area_id: str,
                                    capacity_m3h: float, serials: SerialMint,
                                    rng: random.Random, epoch: dt.date) -> None:
    """The equipment tree and internal meters of a GRP (building) or ShRP (cabinet)."""
    t = _Tree(plan, station_id, area_id, serials, rng)
    regulator, slam_shut, filter_model = _regulator_model(kind, capacity_m3h)
    t.add("shutoff_valve", "Inlet shut-off valve", "Ball valve DN100 PN16")
    lines = (("working", "standby") if kind == "GRP" else ("working",))
    for n, duty in enumerate(lines, start=1):
        line = t.add("other", f"Reduction line {n} ({duty})", None)
        t.add("filter", f"Gas filter, line {n}", filter_model, line)
        if slam_shut == "built-in":
            t.add("slam_shut_valve", f"Slam-shut valve, line {n} (built into regulator)",
                  f"{regulator} PZK", line)
        else:
            t.add("slam_shut_valve", f"Slam-shut valve, line {n}", slam_shut, line)
        t.add("regulator", f"Regulator, line {n}", regulator, line)
    if kind == "ShRP":
        bypass = t.add("other", "Bypass line", None)
        t.add("shutoff_valve", "Bypass valves", "Ball valve DN50 PN16", bypass)
    t.add("relief_valve", "Relief valve", "PSK-50")
    t.add("telemetry", "Telemetry unit", rng.choice(("Teleofis RX608", "Sigma-TM GSM")))
    meters: tuple[str, ...] = ("internal_electricity",)
    if kind == "GRP":
        t.add("heater", "Building heater", "AOGV-11.6")
        meters = ("internal_gas", "internal_electricity")
    _internal_meters(plan, station_id, area_id, meters, serials, rng, epoch)
