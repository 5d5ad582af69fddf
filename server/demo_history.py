"""The demo town's consumption history, as its hidden plant (`server/plant.py`) would have made it.

The demo starts with an empty historian; forecasting (ANA-2) needs years of history to be
judged. This module makes them from the same model the plant runs: every service point's
SigLinDe profile for its category and annual volume at the day's mean air temperature, times a
fixed per-consumer factor (lognormal, σ 0.3), and on top what a real town adds and the plant
leaves out: day-to-day weather (the climate normal plus AR(1) noise, σ 3 °C, φ 0.7), a
day-level behaviour factor (lognormal, σ 3 %) and 1 % meter noise per hour.

Consumers are grouped by (area, category) — the profile is linear in the annual volume — so
two years of 20,000 service points cost a few milliseconds. Station flows follow from the
pressure zones: a regulator carries its outlet zone's consumption and whatever the regulators
fed from that zone carry.

`bench/forecast.py` backtests on it; units are m³ at standard conditions (20 °C, 101.325 kPa)
per hour, local days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from erp.services.registry import AssetRecord

__all__ = ["DemoHistory", "demo_history"]

CONSUMER_SIGMA = 0.3
DAY_SIGMA = 0.03
METER_SIGMA = 0.01
WEATHER_SIGMA_C, WEATHER_PHI = 3.0, 0.7


@dataclass(frozen=True)
class DemoHistory:
    """Hourly consumption of every (area, category) group and every station's hourly flow."""

    dates: np.ndarray
    """[D] local days (datetime64[D])."""
    temperature_c: np.ndarray
    """[D] daily mean air temperature, °C."""
    groups: list[tuple[str, str]]
    """[G] (area id, category)."""
    annual_m3: np.ndarray
    """[G] each group's annual volume in a normal year, with its consumers' factors, m³."""
    consumption_m3h: np.ndarray
    """[G, D, 24] true hourly consumption of each group, m³/h (no meter noise)."""
    stations: list[str]
    """[S] station ids (those that are regulators of the network)."""
    station_flow_m3h: np.ndarray
    """[S, D, 24] each station's metered hourly flow, m³/h (with meter noise)."""

    def area(self, area_id: str) -> np.ndarray:
        """[D, 24] an area's consumption, m³/h."""
        rows = [k for k, (a, _c) in enumerate(self.groups) if a == area_id]
        return self.consumption_m3h[rows].sum(axis=0)

    def category(self, category: str) -> np.ndarray:
        """[D, 24] the town's consumption of one category, m³/h."""
        rows = [k for k, (_a, c) in enumerate(self.groups) if c == category]
        return self.consumption_m3h[rows].sum(axis=0)

    def total(self) -> np.ndarray:
        """[D, 24] the town's consumption, m³/h."""
        return self.consumption_m3h.sum(axis=0)

    def expected_day_m3(self, temperature_c: float) -> np.ndarray:
        """[G] each group's day at a daily mean temperature, without the day's noise, m³."""
        from twin_jax.demand import CATEGORIES, customer_value, daily_factor

        out = []
        for (_area, cat), annual in zip(self.groups, self.annual_m3, strict=True):
            profile = CATEGORIES.get(cat, CATEGORIES["household"])
            out.append(annual * customer_value(profile, 1.0) * float(daily_factor(profile, temperature_c)))
        return np.array(out)


def _weather(days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from twin_jax.demand import climate_mean_temperature_c

    doy = (days - days.astype("datetime64[Y]")).astype(int) + 1
    noise = np.zeros(len(days))
    for i in range(1, len(days)):
        step = np.sqrt(1 - WEATHER_PHI**2) * WEATHER_SIGMA_C * rng.standard_normal()
        noise[i] = WEATHER_PHI * noise[i - 1] + step
    return climate_mean_temperature_c(doy) + noise


def _station_flows(net: Any, records: Sequence[AssetRecord], zone_m3h: dict[int, np.ndarray]
                   ) -> tuple[list[str], np.ndarray]:
    """Each regulating station's flow from its zones' consumption, [S, D, 24]."""
    regs = net.regulators
    stations = {r.id for r in records if r.kind == "station"}
    inlet = {rid: int(net.zone_of_node[net.from_node[regs][k]]) for k, rid in enumerate(net.regulator_ids)}
    outlet = {rid: int(net.zone_of_node[net.to_node[regs][k]]) for k, rid in enumerate(net.regulator_ids)}
    shape = next(iter(zone_m3h.values())).shape if zone_m3h else (0, 24)
    memo: dict[str, np.ndarray] = {}

    def through(rid: str, depth: int = 0) -> np.ndarray:
        if rid not in memo:
            if depth > len(outlet):
                raise ValueError("regulators feed each other in a loop")
            z = outlet[rid]
            flow = zone_m3h.get(z, np.zeros(shape)).copy()
            for other, zin in inlet.items():
                if zin == z and other != rid:
                    flow += through(other, depth + 1)
            memo[rid] = flow
        return memo[rid]

    ids = [rid for rid in net.regulator_ids if rid in stations]
    return ids, np.stack([through(rid) for rid in ids]) if ids else np.zeros((0, *shape))


def demo_history(records: Sequence[AssetRecord], start: dt.date, days: int, *, seed: int = 7,
                 level_max_pa_gauge: dict[str, float] | None = None) -> DemoHistory:
    """`days` days of history from `start` for the network in `records` (see the module doc);
    `level_max_pa_gauge` the pressure levels' maxima (sources without a pressure get theirs)."""
    from server.twin_model import description_from_records
    from twin_jax import compile_network
    from twin_jax.demand import CATEGORIES, HOURLY_SHAPE, customer_value, daily_factor

    rng = np.random.default_rng(seed)
    dates = np.arange(np.datetime64(start, "D"), np.datetime64(start, "D") + days)
    temp = _weather(dates, rng)
    nodes = {r.id: r.values for r in records if r.kind == "node"}
    points = [r for r in records if r.kind == "service_point"]
    factor = rng.lognormal(0.0, CONSUMER_SIGMA, len(points))
    annual: dict[tuple[str, str], float] = {}
    by_zone_node: dict[tuple[str, str], dict[str, float]] = {}
    for sp, f in zip(points, factor, strict=True):
        v = sp.values
        key = (str(v.get("area_id") or ""), str(v.get("category") or "household"))
        # no annual volume: ~2,000 full-load hours, as the live twin assumes
        volume = (float(v.get("annual_volume_m3_std") or 0.0)
                  or 2_000.0 * float(v.get("peak_load_m3h_std") or 0.0))
        annual[key] = annual.get(key, 0.0) + volume * f
        node = str(v.get("node_id"))
        if node in nodes:
            by_zone_node.setdefault(key, {})[node] = by_zone_node.get(key, {}).get(node, 0.0) + volume * f
    groups = sorted(annual)
    day_factor = rng.lognormal(0.0, DAY_SIGMA, len(dates))
    use = np.zeros((len(groups), len(dates), 24))
    for g, (area, cat) in enumerate(groups):  # `twin_jax.demand.hourly_demand_m3h`, for all days
        profile = CATEGORIES.get(cat, CATEGORIES["household"])
        day_m3 = annual[(area, cat)] * customer_value(profile, 1.0) * np.asarray(daily_factor(profile, temp))
        use[g] = day_m3[:, None] * HOURLY_SHAPE.get(cat, HOURLY_SHAPE["household"])[None, :]
    use *= day_factor[None, :, None]

    # zone consumption: each group's use split over its nodes by their annual volumes
    levels = level_max_pa_gauge or {"high": 1.2e6, "medium": 3e5, "low": 5e3}
    net = compile_network(description_from_records(list(records), level_max_pa_gauge=levels))
    zone_m3h: dict[int, np.ndarray] = {}
    for g, key in enumerate(groups):
        shares = by_zone_node.get(key, {})
        total = sum(shares.values())
        for node, vol in shares.items():
            z = int(net.zone_of_node[net.node_index[node]]) if node in net.node_index else None
            if z is None or total <= 0:
                continue
            zone_m3h[z] = zone_m3h.get(z, 0.0) + use[g] * (vol / total)
    stations, flows = _station_flows(net, records, zone_m3h)
    flows = flows * (1.0 + rng.normal(0.0, METER_SIGMA, flows.shape))
    return DemoHistory(dates=dates, temperature_c=temp, groups=groups,
                       annual_m3=np.array([annual[g] for g in groups]), consumption_m3h=use,
                       stations=stations, station_flow_m3h=flows)


async def seed_demo_history(historian: Any, records: Sequence[AssetRecord], now: dt.datetime, *,
                            days: int = 400, utc_offset_h: float = 3.0, seed: int = 7) -> int:
    """Write `days` days of hourly history up to `now` into a historian: every station's
    `station/<id>/flow` (the hour's mean, m³/h) and the day's mean air temperature on
    `weather/town/air_t`, one point in the middle of each hour. Nothing is written when the city gate
    already has history there (a second `gasops demo`). Returns the points written."""
    from realtime.historian.base import Point

    offset = dt.timedelta(hours=utc_offset_h)
    local_today = (now + offset).date()
    first = local_today - dt.timedelta(days=days)
    hist = demo_history(records, first, days + 1, seed=seed)
    start_utc = dt.datetime.combine(first, dt.time(), dt.UTC) - offset
    if hist.stations:
        probe = f"station/{hist.stations[-1]}/flow"
        if await historian.raw(probe, start_utc, now):
            return 0
    stamps = [start_utc + dt.timedelta(hours=k, minutes=30) for k in range(len(hist.dates) * 24)]
    keep = [k for k, t in enumerate(stamps) if t < now]
    points: list[Point] = []
    for sid, flow in zip(hist.stations, hist.station_flow_m3h, strict=True):
        values = flow.ravel()
        points += [Point(f"station/{sid}/flow", stamps[k], round(float(values[k]), 2)) for k in keep]
    temps = np.repeat(hist.temperature_c, 24)
    points += [Point("weather/town/air_t", stamps[k], round(float(temps[k]), 2)) for k in keep]
    for i in range(0, len(points), 20_000):
        await historian.write(points[i:i + 20_000])
    return len(points)
