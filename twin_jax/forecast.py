"""Daily consumption forecasting: a SigLinDe profile, weekday and holiday factors, fitted with JAX.

The model (feature ANA-2) of a network's or a consumer group's daily gas consumption is

    Q_day = KW · h(T; θ) · F_weekday · F_holiday,

with `T` the day's mean air temperature (°C), `h` the SigLinDe profile function of
`twin_jax.demand` with all its shape parameters θ = (a, b, c, d, m_h, b_h, m_w, b_w) fitted
(t0 stays 40 °C), `F_weekday` one factor per weekday Mon…Sun (arithmetic mean 1) and
`F_holiday` one factor for the days listed as holidays (1 when none are given). `Q_day` is in
whatever unit the history is (m³/day, kWh/day, …); forecasts come back in that unit.

Fitting (`fit_daily`) minimises the mean squared log error (a relative error, so winter and
summer days weigh alike) with `jax.scipy.optimize.minimize` (BFGS), from a few starting
profiles (the BDEW-like shapes in `twin_jax.demand.CATEGORIES`), keeping the best. Parameters
are reparametrised so that they stay in their valid range whatever the optimiser does:
a, c, d > 0, b < 0 (so that b/(T − t0) > 0 below t0), heating slope m_h ≤ 0 and warm slope
m_w ≤ 0 (exp), weekday factors by a softmax (positive, mean 1), holiday factor by exp.
`KW` is a fixed scale (the history's mean over the starting profile's mean), since h's
parameters already carry the overall level: the product KW·h is what is identified.

Hourly: `fit_hourly_shape` learns the share of the day's gas in each local hour from hourly
history, per day type (workday; weekend or holiday) and temperature band (cold days are
flatter: heating runs through the night), and `HourlyShape.split` turns daily forecasts into
hourly ones — the BDEW method's hour factors, fitted instead of tabulated.

Also here: `peak_for_design_temperature` (the design day's volume), the seasonal-naive
baselines every forecast should beat (`seasonal_naive`: the same weekday a year before;
`seasonal_naive_hourly`: the same hour a week before), and `mape`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.optimize import minimize

from twin_jax.demand import CATEGORIES, SigLinDe, daily_factor

__all__ = ["WEEKDAYS", "DailyModel", "HourlyShape", "as_days", "fit_daily", "fit_hourly_shape", "mape",
           "peak_for_design_temperature", "predict_recalibrated", "seasonal_naive",
           "seasonal_naive_hourly", "weekday_of"]

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_T0 = 40.0
_STARTS = ("household", "commercial", "industrial")
_RIDGE = 1e-6  # weak pull towards the start in the unconstrained space (flat directions)


def as_days(dates: Iterable[dt.date] | np.ndarray | Sequence[str]) -> np.ndarray:
    """Dates (datetime.date, ISO strings or datetime64) → numpy datetime64[D] array."""
    arr = np.asarray(dates)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[D]")
    return np.array([np.datetime64(d, "D") for d in arr.ravel()], dtype="datetime64[D]")


def weekday_of(dates: np.ndarray) -> np.ndarray:
    """Weekday index of datetime64[D] dates, Monday = 0 … Sunday = 6."""
    return (as_days(dates).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday


# ---------------------------------------------------------------------------------------------
# parametrisation


def _softplus_inv(y: float) -> float:
    return float(np.log(np.expm1(y)))


def _encode(profile: SigLinDe) -> np.ndarray:
    """SigLinDe → unconstrained vector (8)."""
    return np.array([
        np.log(profile.a), np.log(-profile.b), np.log(profile.c), np.log(max(profile.d, 1e-6)),
        np.log(max(-profile.m_h, 1e-6)), profile.b_h, np.log(max(-profile.m_w, 1e-6)), profile.b_w,
    ])


def _decode(z: jnp.ndarray) -> SigLinDe:
    """Unconstrained vector (8) → SigLinDe (jnp scalars)."""
    return SigLinDe(a=jnp.exp(z[0]), b=-jnp.exp(z[1]), c=jnp.exp(z[2]), d=jnp.exp(z[3]),
                    m_h=-jnp.exp(z[4]), b_h=z[5], m_w=-jnp.exp(z[6]), b_w=z[7], t0=_T0)


def _log_q(x: jnp.ndarray, log_kw: float, t: jnp.ndarray, wd_onehot: jnp.ndarray,
           hol: jnp.ndarray) -> jnp.ndarray:
    """log Q_day for the parameter vector x = [θ (8), weekday logits (7), log F_holiday]."""
    h = daily_factor(_decode(x[:8]), jnp.minimum(t, _T0 - 1.0))
    log_wd = jnp.log(7.0) + jax.nn.log_softmax(x[8:15])
    return log_kw + jnp.log(jnp.maximum(h, 1e-12)) + wd_onehot @ log_wd + hol * x[15]


@jax.jit
def _fit_one(x0: jnp.ndarray, log_kw: jnp.ndarray, t: jnp.ndarray, wd_onehot: jnp.ndarray,
             hol: jnp.ndarray, log_y: jnp.ndarray):
    def loss(x):
        r = _log_q(x, log_kw, t, wd_onehot, hol) - log_y
        return jnp.mean(r * r) + _RIDGE * jnp.sum((x - x0) ** 2)

    res = minimize(loss, x0, method="BFGS", options={"maxiter": 400, "gtol": 1e-9})
    return res.x, loss(res.x), res.nit


# ---------------------------------------------------------------------------------------------
# model


@dataclass(frozen=True)
class DailyModel:
    """A fitted daily model; `Q_day = kw · h(T; profile) · weekday_factors[wd] · F_holiday`."""

    kw: float
    """Scale, in the history's unit per day per unit of h."""
    profile: SigLinDe
    """Fitted SigLinDe parameters (floats, T in °C)."""
    weekday_factors: np.ndarray
    """[7] factors Mon…Sun, mean 1."""
    holiday_factor: float
    """Factor on the listed holidays (1.0 when the fit had none)."""
    holidays: frozenset[np.datetime64]
    """Holiday dates the model applies `holiday_factor` to."""
    rms_log_error: float
    """Root-mean-square log error on the training days (≈ relative error)."""
    iterations: int
    """BFGS iterations of the best start."""

    def predict(self, dates: Iterable[dt.date] | np.ndarray, temperature_c: np.ndarray,
                holidays: Iterable[dt.date] | None = None) -> np.ndarray:
        """Daily consumption [n] (history's unit/day) for `dates` [n] at daily mean temperatures (°C) [n].

        `holidays` replaces the model's holiday list when given.
        """
        days = as_days(dates)
        hol_set = self.holidays if holidays is None else frozenset(as_days(list(holidays)))
        t = np.asarray(temperature_c, dtype=np.float64)
        if t.shape != days.shape:
            raise ValueError(f"temperature_c has shape {t.shape}, dates {days.shape}")
        h = np.asarray(daily_factor(self.profile, np.minimum(t, _T0 - 1.0)))
        hol = np.isin(days, np.array(sorted(hol_set), dtype="datetime64[D]"))
        return self.kw * h * self.weekday_factors[weekday_of(days)] * np.where(hol, self.holiday_factor, 1.0)

    def heating_curve(self, temperature_c: np.ndarray) -> np.ndarray:
        """kw · h(T): consumption of an average weekday (history's unit/day) at temperatures (°C)."""
        t = np.minimum(np.asarray(temperature_c, dtype=np.float64), _T0 - 1.0)
        return self.kw * np.asarray(daily_factor(self.profile, t))


def fit_daily(dates: Iterable[dt.date] | np.ndarray, temperature_c: np.ndarray, consumption: np.ndarray,
              holidays: Iterable[dt.date] | None = None) -> DailyModel:
    """Fit the daily model to history: dates [n], daily mean temperatures (°C) [n], consumption [n] (> 0).

    `consumption` in any unit per day (m³/day, kWh/day…); the model predicts in that unit.
    `holidays` (optional) lists dates, past and future, that get the fitted holiday factor.
    Returns the best of a few BFGS runs (one per starting profile) by squared log error.
    """
    days = as_days(dates)
    t = np.asarray(temperature_c, dtype=np.float64)
    y = np.asarray(consumption, dtype=np.float64)
    if not (days.shape == t.shape == y.shape) or days.ndim != 1:
        raise ValueError(f"dates {days.shape}, temperature_c {t.shape}, consumption {y.shape} must be [n]")
    if len(y) < 14:
        raise ValueError("need at least two weeks of history")
    if not np.all(np.isfinite(y) & (y > 0)) or not np.all(np.isfinite(t)):
        raise ValueError("consumption must be positive and finite, temperatures finite")
    hol_set = frozenset(as_days(list(holidays))) if holidays is not None else frozenset()
    hol = np.isin(days, np.array(sorted(hol_set), dtype="datetime64[D]")).astype(np.float64)
    wd_onehot = np.eye(7)[weekday_of(days)]
    best = None
    for name in _STARTS:
        start = CATEGORIES[name]
        h0 = np.asarray(daily_factor(start, np.minimum(t, _T0 - 1.0)))
        log_kw = float(np.log(np.mean(y) / np.mean(h0)))
        x0 = np.concatenate([_encode(start), np.zeros(8)])
        x, loss, nit = _fit_one(jnp.asarray(x0), jnp.asarray(log_kw), jnp.asarray(t), jnp.asarray(wd_onehot),
                                jnp.asarray(hol), jnp.asarray(np.log(y)))
        loss = float(loss)
        if np.isfinite(loss) and (best is None or loss < best[0]):
            best = (loss, np.asarray(x), log_kw, int(nit))
    if best is None:
        raise RuntimeError("the fit diverged from every start")
    loss, x, log_kw, nit = best
    log_pred = _log_q(jnp.asarray(x), log_kw, jnp.asarray(t), jnp.asarray(wd_onehot), jnp.asarray(hol))
    r = np.asarray(log_pred) - np.log(y)
    profile = SigLinDe(*(float(v) for v in _decode(jnp.asarray(x[:8]))))
    wd = 7.0 * np.asarray(jax.nn.softmax(jnp.asarray(x[8:15])))
    return DailyModel(kw=float(np.exp(log_kw)), profile=profile, weekday_factors=wd,
                      holiday_factor=float(np.exp(x[15])) if hol.any() else 1.0, holidays=hol_set,
                      rms_log_error=float(np.sqrt(np.mean(r * r))), iterations=nit)


def peak_for_design_temperature(model: DailyModel, design_temperature_c: float,
                                weekday: int | None = None) -> float:
    """Design-day consumption (history's unit/day) at the design daily mean temperature (°C).

    `weekday` 0 = Monday … 6 = Sunday; None (default) takes the weekday with the largest factor.
    No holiday factor is applied.
    """
    f = float(np.max(model.weekday_factors)) if weekday is None else float(model.weekday_factors[weekday % 7])
    return float(model.heating_curve(np.array([design_temperature_c]))[0]) * f


# ---------------------------------------------------------------------------------------------
# hourly shape


@dataclass(frozen=True)
class HourlyShape:
    """Share of a day's consumption in each local hour, by day type and temperature band."""

    shares: np.ndarray
    """[2, n_bands, 24]: day type 0 workday, 1 weekend or holiday; each row sums to 1."""
    band_edges_c: tuple[float, ...]
    """Daily mean temperatures (°C) between the bands: (0, 10) makes < 0, 0…10, ≥ 10 °C."""
    days: np.ndarray
    """[2, n_bands] training days behind each row (0: borrowed from the day type's mean)."""

    def _rows(self, dates: np.ndarray, temperature_c: np.ndarray, holidays: frozenset) -> np.ndarray:
        days = as_days(dates)
        off = (weekday_of(days) >= 5) | np.isin(days, np.array(sorted(holidays), dtype="datetime64[D]"))
        band = np.searchsorted(np.asarray(self.band_edges_c), np.asarray(temperature_c), side="right")
        return self.shares[off.astype(int), band]

    def split(self, dates: Iterable[dt.date] | np.ndarray, temperature_c: np.ndarray, daily: np.ndarray,
              holidays: Iterable[dt.date] = ()) -> np.ndarray:
        """Hourly consumption [n, 24] (daily's unit per hour) of days [n] with daily totals [n]."""
        d = np.asarray(daily, dtype=np.float64)
        t = np.asarray(temperature_c, dtype=np.float64)
        if d.shape != t.shape:
            raise ValueError(f"daily {d.shape} and temperature_c {t.shape} differ")
        return d[:, None] * self._rows(np.asarray(dates), t, frozenset(as_days(list(holidays))))


def fit_hourly_shape(dates: Iterable[dt.date] | np.ndarray, hourly: np.ndarray, temperature_c: np.ndarray,
                     holidays: Iterable[dt.date] = (), band_edges_c: Sequence[float] = (0.0, 10.0),
                     min_days: int = 7) -> HourlyShape:
    """The mean hourly share of each day type and temperature band in history.

    Arguments: `dates` [n] local days; `hourly` [n, 24] consumption per local hour (any unit;
    days with a missing or non-positive total are skipped); `temperature_c` [n] daily means;
    `holidays` count as weekend days. A band with fewer than `min_days` days takes its day
    type's mean over all bands (and a day type with none, the other's).
    """
    days = as_days(dates)
    h = np.asarray(hourly, dtype=np.float64)
    t = np.asarray(temperature_c, dtype=np.float64)
    if h.shape != (len(days), 24) or t.shape != days.shape:
        raise ValueError(f"hourly must be [n, 24] beside dates [n] and temperature_c [n]; got {h.shape}, "
                         f"{days.shape}, {t.shape}")
    total = h.sum(axis=1)
    ok = np.isfinite(total) & (total > 0) & np.all(h >= 0, axis=1) & np.isfinite(t)
    if ok.sum() < min_days:
        raise ValueError(f"need at least {min_days} complete days of hourly history, got {int(ok.sum())}")
    share = h[ok] / total[ok, None]
    hol = frozenset(as_days(list(holidays)))
    off = ((weekday_of(days) >= 5) | np.isin(days, np.array(sorted(hol), dtype="datetime64[D]")))[ok]
    edges = np.asarray(tuple(band_edges_c), dtype=np.float64)
    band = np.searchsorted(edges, t[ok], side="right")
    n_bands = len(edges) + 1
    out = np.zeros((2, n_bands, 24))
    count = np.zeros((2, n_bands), dtype=np.int64)
    overall = [share[off == k].mean(axis=0) if np.any(off == k) else None for k in (0, 1)]
    overall = [o if o is not None else overall[1 - k] for k, o in enumerate(overall)]
    for k in (0, 1):
        for b in range(n_bands):
            sel = (off == k) & (band == b)
            count[k, b] = int(sel.sum())
            out[k, b] = share[sel].mean(axis=0) if count[k, b] >= min_days else overall[k]
    out /= out.sum(axis=2, keepdims=True)
    days_used = np.where(count >= min_days, count, 0)
    return HourlyShape(shares=out, band_edges_c=tuple(float(e) for e in edges), days=days_used)


# ---------------------------------------------------------------------------------------------
# baseline and metric


def seasonal_naive(history_dates: Iterable[dt.date] | np.ndarray, history_values: np.ndarray,
                   target_dates: Iterable[dt.date] | np.ndarray) -> np.ndarray:
    """Seasonal-naive forecast [m]: the value 364 days earlier (same weekday, a year before).

    When that day is not in the history, the latest same weekday at least 7 days before the
    target (last week's, else the one before…); NaN when there is none. Values in the history's unit.
    """
    hd = as_days(history_dates)
    hv = np.asarray(history_values, dtype=np.float64)
    if hd.shape != hv.shape:
        raise ValueError(f"history_dates {hd.shape} and history_values {hv.shape} differ")
    lookup = {int(d): float(v) for d, v in zip(hd.astype(np.int64), hv, strict=True) if np.isfinite(v)}
    by_weekday: list[np.ndarray] = []
    keys = np.array(sorted(lookup), dtype=np.int64)
    for w in range(7):
        by_weekday.append(keys[(keys + 3) % 7 == w])
    out = []
    for d in as_days(target_dates).astype(np.int64):
        d = int(d)
        if d - 364 in lookup:
            out.append(lookup[d - 364])
            continue
        same = by_weekday[(d + 3) % 7]
        i = np.searchsorted(same, d - 7, side="right")
        out.append(lookup[int(same[i - 1])] if i > 0 else np.nan)
    return np.array(out, dtype=np.float64)


def seasonal_naive_hourly(history: np.ndarray, lag_hours: int = 168) -> np.ndarray:
    """Seasonal-naive hourly forecast: each hour's value `lag_hours` (a week) before.

    Arguments: `history` [m] an hourly series without gaps (NaN allowed). Returns [m]: NaN for
    the first `lag_hours` hours.
    """
    x = np.asarray(history, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"history must be [m], got {x.shape}")
    out = np.full(len(x), np.nan)
    out[lag_hours:] = x[:-lag_hours] if lag_hours else x
    return out


def mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error (%) of `predicted` against `actual` (≠ 0); NaN pairs are skipped."""
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if a.shape != p.shape:
        raise ValueError(f"actual {a.shape} and predicted {p.shape} differ")
    ok = np.isfinite(a) & np.isfinite(p)
    if not ok.any():
        return float("nan")
    if np.any(a[ok] == 0):
        raise ValueError("mape is undefined for actual values of zero")
    return float(100.0 * np.mean(np.abs((p[ok] - a[ok]) / a[ok])))


def predict_recalibrated(model: DailyModel, history_dates: Iterable[dt.date] | np.ndarray,
                         history_values: np.ndarray, history_temperature_c: np.ndarray,
                         dates: Iterable[dt.date] | np.ndarray, temperature_c: np.ndarray, *,
                         window_days: int = 28, lead_days: int = 7) -> np.ndarray:
    """`model.predict` with its level re-set from recent history, as a utility runs it.

    For each target day d the forecast is scaled by the median ratio actual/model over the
    history days in [d − lead_days − window_days, d − lead_days): a `lead_days`-ahead forecast
    that uses only what was known then (the same information seasonal-naive's "same weekday a
    week before" uses). Follows level shifts the temperature cannot explain: customers lost or
    won, a power plant's dispatch, a recession. Arguments as `predict`; history [m] in its unit.
    Returns [n]; days without history in their window keep the unscaled forecast.
    """
    h_days = as_days(history_dates)
    h_q = np.asarray(history_values, dtype=np.float64)
    h_ratio = np.log(h_q / model.predict(h_days, np.asarray(history_temperature_c, dtype=np.float64)))
    order = np.argsort(h_days)
    h_days, h_ratio = h_days[order], h_ratio[order]
    days = as_days(dates)
    base = model.predict(days, temperature_c)
    lo = np.searchsorted(h_days, days - (lead_days + window_days))
    hi = np.searchsorted(h_days, days - lead_days)
    scale = np.ones(len(days))
    for k, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        if b > a:
            scale[k] = float(np.exp(np.median(h_ratio[a:b])))
    return base * scale
