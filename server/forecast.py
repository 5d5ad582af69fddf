"""Demand forecasts for dispatchers and planners (issue 8, ANA-2): a town's or an area's gas use
for the days ahead, daily and hourly, and its design day.

`DemandForecaster.forecast` answers from what this process has:

- **fitted** — when the historian holds at least `MIN_HISTORY_DAYS` complete local days of the
  area's metered inflow (its zones' station flows: in through the regulators feeding a zone,
  out through those it feeds), `twin_jax.forecast.fit_daily` is fitted to them against the
  days' mean air temperature (the `weather/town/air_t` tag where it was recorded, else the town's
  climate normal for the date), its level re-set from the 28 days before yesterday
  (`predict_recalibrated`), and split into hours by the hourly shape fitted on the same
  history (`fit_hourly_shape`);
- **profile** — otherwise (a new system, an area whose zones are not all metered): every
  service point's SigLinDe profile for its category and annual volume (`twin_jax.demand`),
  the estimate the live twin itself starts from.

The volume per consumer category always comes from the profiles (the station meters see the
sum). Temperatures for the days ahead: those given, else the `twin_air_temperature_c` setting,
else the climate normal. Volumes are m³ at standard conditions (20 °C, 101.325 kPa), days and
hours local. A fit runs in a worker thread (BFGS under jit, about a second) and is kept for the
day per area.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from realtime.historian.base import AbstractHistorian

__all__ = ["CategoryForecast", "DemandForecast", "DemandForecaster", "ForecastDay",
           "ForecastUnavailable", "MIN_HISTORY_DAYS", "WEATHER_TAG"]

log = logging.getLogger("gasops.forecast")

MIN_HISTORY_DAYS = 28
HISTORY_DAYS = 400
WEATHER_TAG = "weather/town/air_t"
MAX_DAYS = 31


class ForecastUnavailable(RuntimeError):
    """No forecast can be made now (the reason is the message)."""


@dataclass(frozen=True)
class ForecastDay:
    """One local day ahead."""

    date: dt.date
    temperature_c: float
    volume_m3: float
    hourly_m3h: tuple[float, ...] | None = None
    """24 hourly flows (local hours 0…23), when asked for."""


@dataclass(frozen=True)
class CategoryForecast:
    """The profile estimate of one consumer category over the forecast's days."""

    category: str
    service_points: int
    volume_m3: float


@dataclass(frozen=True)
class DemandForecast:
    """A forecast of one area (None: the whole network)."""

    area_id: str | None
    method: str
    """"fitted" or "profile"."""
    reason: str
    """Why this method (how much history there was)."""
    history_days: int
    fit_rms_log_error: float | None
    days: list[ForecastDay]
    categories: list[CategoryForecast]
    design_temperature_c: float
    design_day_m3: float
    design_hour_m3h: float
    """The design day's busiest hour."""


class DemandForecaster:
    """Forecasts from the live twin's registry network and the historian (module docstring)."""

    def __init__(self, twin: Any, historian: AbstractHistorian | None, *,
                 air_temperature_c: float | None = None, utc_offset_h: float = 3.0) -> None:
        self._twin = twin
        self._historian = historian
        self._air_c = air_temperature_c
        self._offset = dt.timedelta(hours=utc_offset_h)
        self._fits: dict[tuple[str | None, dt.date], Any] = {}

    @property
    def ready(self) -> bool:
        """Whether forecasts can be made now (the live twin has loaded the network)."""
        return self._twin is not None and self._twin.network_model is not None

    def _model(self) -> Any:
        model = self._twin.network_model if self._twin is not None else None
        if model is None:
            raise ForecastUnavailable("the live twin has not loaded the network yet; try again in "
                                      "a minute")
        return model

    def today(self) -> dt.date:
        """The local date now."""
        return (dt.datetime.now(dt.UTC) + self._offset).date()

    async def forecast(self, area: str | None, *, start: dt.date | None = None, days: int = 7,
                       temperatures_c: Sequence[float] | None = None, hourly: bool = False,
                       design_temperature_c: float = -31.0) -> DemandForecast:
        """The forecast of `area` (None: the network) for `days` local days from `start`
        (default tomorrow); ValueError for bad arguments, `ForecastUnavailable` without a network."""
        if not 1 <= days <= MAX_DAYS:
            raise ValueError(f"days must be between 1 and {MAX_DAYS}")
        if temperatures_c is not None and len(temperatures_c) != days:
            raise ValueError(f"give one temperature per day ({days}), not {len(temperatures_c)}")
        if not -60.0 <= design_temperature_c <= 20.0:
            raise ValueError("the design temperature must be between -60 and 20 °C")
        model = self._model()
        if area is not None and area not in set(model.consumer_area) | set(model.node_area):
            raise ValueError(f"no service points or nodes in area {area!r}")
        first = start or self.today() + dt.timedelta(days=1)
        dates = np.arange(np.datetime64(first, "D"), np.datetime64(first, "D") + days)
        temps = self._temperatures(dates, temperatures_c)
        history = await self._history(model, area)
        return await asyncio.to_thread(self._forecast, model, area, dates, temps, history, hourly,
                                       design_temperature_c)

    # -- inputs ---------------------------------------------------------------------------------

    def _temperatures(self, dates: np.ndarray, given: Sequence[float] | None) -> np.ndarray:
        from twin_jax.demand import climate_mean_temperature_c

        if given is not None:
            t = np.asarray(given, dtype=np.float64)
            if not np.all(np.isfinite(t)) or np.any(np.abs(t) > 60):
                raise ValueError("temperatures must be finite daily means within ±60 °C")
            return t
        if self._air_c is not None:
            return np.full(len(dates), float(self._air_c))
        return climate_mean_temperature_c(_day_of_year(dates))

    def _zones_of(self, model: Any, area: str | None) -> tuple[list[int], str]:
        """The metered zones whose consumption is the area's (by the majority of its consumers'
        annual volume), and why not when there are none ("" when there are)."""
        zones = model.consumer_zone
        volume = np.maximum(model.consumer_annual, 1.0)
        owner: dict[int, str | None] = {}
        for z in np.unique(zones).tolist():
            here = zones == z
            by_area: dict[str | None, float] = {}
            for a, v in zip(np.asarray(model.consumer_area, dtype=object)[here], volume[here], strict=True):
                by_area[a] = by_area.get(a, 0.0) + float(v)
            owner[int(z)] = max(by_area, key=lambda a: by_area[a])
        metered = set(model.metered_zones)
        wanted = [z for z, a in owner.items() if area is None or a == area]
        if not wanted:
            return [], f"no pressure zone's consumers are mostly in area {area!r}"
        missing = [z for z in wanted if z not in metered]
        if missing:
            return [], (f"{len(missing)} of its {len(wanted)} pressure zones have no flow meter on "
                        "every station feeding them")
        return sorted(wanted), ""

    async def _history(self, model: Any, area: str | None) -> dict[str, Any]:
        """Hourly metered consumption of the area's zones and daily temperatures, local days."""
        zones, why = self._zones_of(model, area)
        if not zones:
            return {"why": why}
        if self._historian is None:
            return {"why": "no historian in this process"}
        net = model.net
        regs = net.regulators
        signs: dict[str, float] = {}
        for rid, k in model.regulator_index.items():
            z_in = int(net.zone_of_node[net.from_node[regs][k]])
            z_out = int(net.zone_of_node[net.to_node[regs][k]])
            s = (1.0 if z_out in zones else 0.0) - (1.0 if z_in in zones else 0.0)
            if s:
                signs[f"station/{rid}/flow"] = signs.get(f"station/{rid}/flow", 0.0) + s
        today = self.today()
        end_utc = dt.datetime.combine(today, dt.time(), dt.UTC) - self._offset
        start_utc = end_utc - dt.timedelta(days=HISTORY_DAYS)
        tags = [*signs, WEATHER_TAG]
        series = await self._historian.buckets(tags, start_utc, end_utc, 3600, ("avg",))
        n_hours = HISTORY_DAYS * 24
        first = start_utc

        def column(tag: str) -> np.ndarray:
            out = np.full(n_hours, np.nan)
            s = series.get(tag)
            if s is None:
                return out
            for t, v in zip(s.start, s.avg or (), strict=False):
                k = int((t - first).total_seconds() // 3600)
                if 0 <= k < n_hours and v is not None:
                    out[k] = v
            return out

        flows = [sign * column(tag) for tag, sign in signs.items()]
        use = np.sum(flows, axis=0) if flows else np.full(n_hours, np.nan)
        hourly = use.reshape(HISTORY_DAYS, 24)  # local days: the range starts at local midnight
        weather = column(WEATHER_TAG).reshape(HISTORY_DAYS, 24)
        dates = np.arange(np.datetime64(today, "D") - HISTORY_DAYS, np.datetime64(today, "D"))
        return {"why": "", "dates": dates, "hourly": hourly, "weather": weather}

    # -- the forecast (worker thread) ------------------------------------------------------------

    def _forecast(self, model: Any, area: str | None, dates: np.ndarray, temps: np.ndarray,
                  history: dict[str, Any], hourly: bool, design_c: float) -> DemandForecast:
        from twin_jax.demand import CATEGORIES, HOURLY_SHAPE, climate_mean_temperature_c, customer_value
        from twin_jax.demand import daily_factor as h_of

        cats = np.asarray(model.consumer_category)
        mine = np.ones(len(cats), dtype=bool) if area is None else (
            np.asarray(model.consumer_area, dtype=object) == area)
        # m³ at 20 °C as the registry keeps them; no annual volume: ~2,000 full-load hours
        annual = np.where(model.consumer_annual > 0, model.consumer_annual, model.consumer_peak * 2_000.0)

        def profile_days(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[CategoryForecast]]:
            day = np.zeros(len(t))
            hours = np.zeros((len(t), 24))
            out = []
            for cat in sorted(set(cats[mine].tolist())):
                sel = mine & (cats == cat)
                p = CATEGORIES.get(cat, CATEGORIES["household"])
                v = float(annual[sel].sum()) * customer_value(p, 1.0) * np.asarray(h_of(p, t))
                day += v
                hours += v[:, None] * HOURLY_SHAPE.get(cat, HOURLY_SHAPE["household"])[None, :]
                out.append(CategoryForecast(cat, int(sel.sum()), float(v.sum())))
            return day, hours, out

        day_p, hours_p, categories = profile_days(temps)
        design_p, design_hours_p, _ = profile_days(np.array([design_c]))
        method, reason, n_hist, rms = "profile", history.get("why", ""), 0, None
        day, hours, design_day, design_hour = day_p, hours_p, float(design_p[0]), float(design_hours_p.max())
        if not reason:
            h = history["hourly"]
            complete = np.all(np.isfinite(h), axis=1) & (h.sum(axis=1) > 0)
            n_hist = int(complete.sum())
            if n_hist < MIN_HISTORY_DAYS:
                reason = (f"{n_hist} complete days of metered history, {MIN_HISTORY_DAYS} needed "
                          "to fit")
            else:
                from twin_jax.forecast import (
                    fit_daily,
                    fit_hourly_shape,
                    peak_for_design_temperature,
                    predict_recalibrated,
                )

                hd = history["dates"]
                w = history["weather"]
                normal = climate_mean_temperature_c(_day_of_year(hd))
                seen = np.isfinite(w).sum(axis=1)
                measured = np.where(seen > 0, np.where(np.isfinite(w), w, 0.0).sum(axis=1)
                                    / np.maximum(seen, 1), np.nan)
                t_hist = np.where(np.isfinite(measured), measured, normal)
                key = (area, self.today())
                fitted = self._fits.get(key)
                if fitted is None:
                    fitted = (fit_daily(hd[complete], t_hist[complete], h[complete].sum(axis=1)),
                              fit_hourly_shape(hd[complete], h[complete], t_hist[complete]))
                    self._fits = {k: v for k, v in self._fits.items() if k[1] == key[1]}
                    self._fits[key] = fitted
                fit, shape = fitted
                day = predict_recalibrated(fit, hd[complete], h[complete].sum(axis=1), t_hist[complete],
                                           dates, temps, lead_days=1)
                hours = shape.split(dates, temps, day)
                design_day = peak_for_design_temperature(fit, design_c)
                design_hour = float(shape.split(dates[:1], np.array([design_c]),
                                                np.array([design_day])).max())
                method, rms = "fitted", fit.rms_log_error
                reason = (f"fitted to {n_hist} complete days of metered inflow "
                          f"({int(np.isfinite(measured).sum())} with a recorded air temperature)")
        out_days = [ForecastDay(d.astype(dt.date), float(t), float(v),
                                tuple(float(x) for x in hrs) if hourly else None)
                    for d, t, v, hrs in zip(dates, temps, day, hours, strict=True)]
        return DemandForecast(area_id=area, method=method, reason=reason or "profile", history_days=n_hist,
                              fit_rms_log_error=rms, days=out_days, categories=categories,
                              design_temperature_c=design_c, design_day_m3=float(design_day),
                              design_hour_m3h=float(design_hour))


def _day_of_year(dates: np.ndarray) -> np.ndarray:
    d = np.asarray(dates).astype("datetime64[D]")
    return (d - d.astype("datetime64[Y]")).astype(int) + 1
