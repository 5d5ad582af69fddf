"""Consumers of the demo town: flats, private houses, businesses, critical and industrial sites.

Own design peaks and annual volumes follow DOMAIN.md: a flat with a stove 1.15–1.35 m³/h and
100–180 m³/year, with a stove and an instantaneous water heater 2.0–2.5 m³/h and 200–320
m³/year; a private house with a heating boiler 2.0–3.5 m³/h and 1,500–4,000 m³/year; small
businesses 1.5–12 m³/h; industry 50–500 m³/h. Volumes are m³ at standard conditions (20 °C,
101.325 kPa). Every service point gets a meter: a smart household meter (verification due
within ten years of the epoch) or, for industry and hospitals, a volume corrector.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from erp.demo_town._catalogue import (
    COMMERCIAL_METERS,
    CORRECTORS,
    HOUSEHOLD_METERS_LARGE,
    HOUSEHOLD_METERS_SMALL,
)
from erp.demo_town._plan import ConsumerSpec, IdMint, SerialMint

__all__ = ["DistrictMix", "GridSite", "MIXES", "industrial_site", "populate_district"]


@dataclass(frozen=True, slots=True)
class DistrictMix:
    """What a district is built of: shares of flats, houses and businesses; flats per block."""

    flats: float
    houses: float
    block_sizes: tuple[int, ...]
    hot_water_share: float


MIXES: dict[str, DistrictMix] = {
    "apartments": DistrictMix(0.945, 0.03, (12, 16, 18, 24, 30, 32, 36, 40, 45, 48, 60, 70, 80),
                              0.35),
    "mixed": DistrictMix(0.78, 0.19, (8, 12, 16, 18, 24, 30, 32, 36), 0.45),
    "private": DistrictMix(0.10, 0.87, (4, 8, 12, 16), 0.6),
}


@dataclass(frozen=True, slots=True)
class GridSite:
    """A street corner consumers can be connected to: node, position, its two streets."""

    node_id: str
    x_m: float
    y_m: float
    streets: tuple[str, str]


_BUSINESSES = ("Cafe", "Bakery", "Canteen", "Restaurant", "Shopping centre boiler", "Sauna",
               "Car service", "Laundry", "Mini-hotel", "Office building boiler", "Greenhouse",
               "Car wash")
_CRITICAL = {  # kind: (name, peak range m3/h, hours of peak use a year, min pressure Pa)
    "hospital": ("City Hospital No. {n} (kitchen, laundry)", (30.0, 60.0), 3_000.0, 1_500.0),
    "school": ("School No. {n} (canteen)", (8.0, 16.0), 1_200.0, 1_500.0),
    "kindergarten": ("Kindergarten No. {n}", (4.0, 8.0), 1_500.0, 1_500.0),
}


class _Addresses:
    """House numbers per street, in the order buildings are put up."""

    def __init__(self, district_name: str, rng: random.Random) -> None:
        self._name = district_name
        self._rng = rng
        self._numbers: dict[str, int] = {}

    def next(self, site: GridSite) -> str:
        street = site.streets[self._rng.randrange(2)]
        n = self._numbers.get(street, 0) + self._rng.randint(1, 2)
        self._numbers[street] = n
        return f"{self._name}, {street}, {n}"


def _near(site: GridSite, rng: random.Random) -> tuple[float, float]:
    angle = rng.uniform(0.0, 2 * math.pi)
    r = rng.uniform(15.0, 45.0)
    return site.x_m + r * math.cos(angle), site.y_m + r * math.sin(angle)


def _due(rng: random.Random, epoch: dt.date, years: float) -> dt.date:
    return epoch + dt.timedelta(days=rng.randint(30, int(365.25 * years)))


class _Factory:
    """Makes consumers of one district with their meters."""

    def __init__(self, area_id: str, ids: IdMint, serials: SerialMint, rng: random.Random,
                 epoch: dt.date) -> None:
        self.area_id, self.ids, self.serials = area_id, ids, serials
        self.rng, self.epoch = rng, epoch
        self.out: list[ConsumerSpec] = []

    def add(self, site: GridSite, xy: tuple[float, float], category: str, name: str,
            address: str, peak: float, annual: float,
            meters: Sequence[tuple[str, str]], meter_kind: str = "residential",
            interval_years: float = 10.0, critical_kind: str | None = None,
            min_pressure_pa: float | None = None) -> ConsumerSpec:
        model, prefix = self.rng.choice(meters)
        due = _due(self.rng, self.epoch, interval_years)
        made = due.year - round(interval_years) - self.rng.randint(0, 1)
        spec = ConsumerSpec(
            id=self.ids.next(f"SP-{self.area_id}-", 5), node_id=site.node_id,
            area_id=self.area_id, category=category, name=name, address=address,
            x_m=xy[0], y_m=xy[1], peak_m3h=round(peak, 2), annual_m3=float(round(annual)),
            meter_kind=meter_kind, meter_model=model, meter_serial=self.serials.next(prefix, made),
            verification_due=due, critical_kind=critical_kind, min_pressure_pa=min_pressure_pa)
        self.out.append(spec)
        return spec


def populate_district(area_id: str, district_name: str, kind: str, sites: Sequence[GridSite],
                      target: int, critical_kinds: Sequence[str], ids: IdMint,
                      serials: SerialMint, rng: random.Random,
                      epoch: dt.date) -> list[ConsumerSpec]:
    """About `target` service points of a district of `kind` spread over its street `sites`."""
    mix = MIXES[kind]
    f = _Factory(area_id, ids, serials, rng, epoch)
    addresses = _Addresses(district_name, rng)
    n_flats = round(target * mix.flats)
    n_houses = round(target * mix.houses)
    n_business = max(1, target - n_flats - n_houses - len(critical_kinds))
    flats = 0
    while flats < n_flats:
        site = rng.choice(sites)
        size = min(rng.choice(mix.block_sizes), n_flats - flats)
        hot_water = rng.random() < mix.hot_water_share
        xy = _near(site, rng)
        address = addresses.next(site)
        for k in range(1, size + 1):
            if hot_water:
                peak, annual = rng.uniform(2.0, 2.5), rng.uniform(200.0, 320.0)
                name = "Flat (stove, water heater)"
            else:
                peak, annual = rng.uniform(1.15, 1.35), rng.uniform(100.0, 180.0)
                name = "Flat (stove)"
            f.add(site, xy, "household", name, f"{address}, apt. {k}", peak, annual,
                  HOUSEHOLD_METERS_SMALL)
        flats += size
    for _ in range(n_houses):
        site = rng.choice(sites)
        peak = rng.uniform(2.0, 3.5)
        annual = min(4_000.0, max(1_500.0, peak * rng.uniform(700.0, 1_150.0)))
        f.add(site, _near(site, rng), "household", "Private house (boiler, stove)",
              addresses.next(site), peak, annual, HOUSEHOLD_METERS_LARGE)
    for _ in range(n_business):
        site = rng.choice(sites)
        peak = math.exp(rng.uniform(math.log(1.5), math.log(12.0)))
        business = rng.choice(_BUSINESSES)
        f.add(site, _near(site, rng), "commercial", f"{business} '{district_name}'",
              addresses.next(site), peak, peak * rng.uniform(1_200.0, 2_500.0),
              COMMERCIAL_METERS)
    for ck in critical_kinds:
        site = rng.choice(sites)
        pattern, (lo, hi), hours, p_min = _CRITICAL[ck]
        peak = rng.uniform(lo, hi)
        meters, meter_kind, interval = ((CORRECTORS, "industrial_corrector", 4.0)
                                        if ck == "hospital" else
                                        (COMMERCIAL_METERS, "residential", 10.0))
        f.add(site, _near(site, rng), "critical", pattern.format(n=rng.randint(2, 120)),
              addresses.next(site), peak, peak * hours, meters, meter_kind, interval,
              critical_kind=ck, min_pressure_pa=p_min)
    return f.out


def industrial_site(area_id: str, node_id: str, x_m: float, y_m: float, name: str,
                    address: str, category: str, peak_m3h: float, hours: float, ids: IdMint,
                    serials: SerialMint, rng: random.Random, epoch: dt.date,
                    critical_kind: str | None = None,
                    min_pressure_pa: float | None = None) -> ConsumerSpec:
    """One large consumer on the medium-pressure network, metered by a volume corrector."""
    f = _Factory(area_id, ids, serials, rng, epoch)
    site = GridSite(node_id, x_m, y_m, ("", ""))
    return f.add(site, (x_m + rng.uniform(-20, 20), y_m + rng.uniform(-20, 20)), category, name,
                 address, peak_m3h, peak_m3h * hours, CORRECTORS, "industrial_corrector", 4.0,
                 critical_kind=critical_kind, min_pressure_pa=min_pressure_pa)
