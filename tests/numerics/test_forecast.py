"""Daily consumption forecast (twin_jax.forecast): recovery, baseline, metric, GasLib-134 archive.

The fits share array shapes (365 training days) so the BFGS loop compiles once for the module.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from bench.forecast import ARCHIVE, read_nominations
from twin_jax.demand import CATEGORIES, HOURLY_SHAPE, SigLinDe, climate_mean_temperature_c, daily_factor
from twin_jax.forecast import (
    as_days,
    fit_daily,
    fit_hourly_shape,
    mape,
    peak_for_design_temperature,
    predict_recalibrated,
    seasonal_naive,
    seasonal_naive_hourly,
    weekday_of,
)

DATES = np.arange(np.datetime64("2023-01-01"), np.datetime64("2025-01-01"))  # 731 days
TRAIN = slice(0, 365)
TEST = slice(365, None)
_WD_RAW = np.array([1.04, 1.03, 1.02, 1.02, 1.00, 0.96, 0.93])
WD = _WD_RAW / _WD_RAW.mean()
HOLIDAYS = [dt.date(y, m, d) for y in (2023, 2024) for m, d in ((1, 1), (1, 2), (3, 8), (5, 1), (5, 9))]
KW = 800.0  # m³/day per unit of h
TRUE = CATEGORIES["commercial"]


def weather(seed: int) -> np.ndarray:
    """Yaroslavl's normal plus AR(1) day-to-day noise (σ 3 °C)."""
    rng = np.random.default_rng(seed)
    noise = np.zeros(len(DATES))
    for i in range(1, len(DATES)):
        noise[i] = 0.7 * noise[i - 1] + np.sqrt(1 - 0.49) * 3.0 * rng.standard_normal()
    doy = (DATES - DATES.astype("datetime64[Y]")).astype(int) + 1
    return climate_mean_temperature_c(doy) + noise


def consumption(profile: SigLinDe, temp: np.ndarray, holiday_factor: float) -> np.ndarray:
    hol = np.isin(DATES, as_days(HOLIDAYS))
    return (KW * np.asarray(daily_factor(profile, temp)) * WD[weekday_of(DATES)]
            * np.where(hol, holiday_factor, 1.0))


def test_fit_recovers_noise_free_model() -> None:
    temp = weather(1)
    q = consumption(TRUE, temp, 0.8)
    model = fit_daily(DATES[TRAIN], temp[TRAIN], q[TRAIN], holidays=HOLIDAYS)
    pred = model.predict(DATES[TEST], temp[TEST])
    assert np.max(np.abs(pred / q[TEST] - 1)) < 0.01
    assert model.rms_log_error < 1e-3
    np.testing.assert_allclose(model.weekday_factors, WD, rtol=2e-3)
    assert np.mean(model.weekday_factors) == pytest.approx(1.0, abs=1e-12)
    assert model.holiday_factor == pytest.approx(0.8, rel=5e-3)
    # the identified product kw·h(T) over the year's temperature range
    grid = np.linspace(temp[TRAIN].min(), temp[TRAIN].max(), 50)
    expect_curve = KW * np.asarray(daily_factor(TRUE, grid))
    np.testing.assert_allclose(model.heating_curve(grid), expect_curve, rtol=0.01)
    # parameters stay in their valid range
    p = model.profile
    assert p.a > 0 and p.b < 0 and p.c > 0 and p.d > 0 and p.m_h <= 0 and p.m_w <= 0
    # design day: the busiest weekday (Monday here) at a design temperature just below the data
    t_design = float(temp[TRAIN].min()) - 1.0
    expect = KW * float(daily_factor(TRUE, t_design)) * WD[0]
    assert peak_for_design_temperature(model, t_design) == pytest.approx(expect, rel=0.01)
    assert peak_for_design_temperature(model, t_design, weekday=6) == pytest.approx(expect * WD[6] / WD[0],
                                                                                     rel=0.01)


def test_fit_beats_seasonal_naive_on_noisy_data() -> None:
    temp = weather(2)
    rng = np.random.default_rng(3)
    q = consumption(TRUE, temp, 0.85) * np.exp(rng.normal(0.0, 0.03, len(DATES)))
    model = fit_daily(DATES[TRAIN], temp[TRAIN], q[TRAIN], holidays=HOLIDAYS)
    ours = mape(q[TEST], model.predict(DATES[TEST], temp[TEST]))
    naive = mape(q[TEST], seasonal_naive(DATES, q, DATES[TEST]))
    assert ours < 4.0  # the noise alone gives ≈ 2.4 %
    assert ours < 0.5 * naive


def test_weekly_level_reset_follows_a_level_shift_the_weather_cannot_explain() -> None:
    temp = weather(4)
    q = consumption(TRUE, temp, 0.85)
    q[TEST] *= 0.7  # a big customer leaves at the turn of the year
    model = fit_daily(DATES[TRAIN], temp[TRAIN], q[TRAIN], holidays=HOLIDAYS)
    plain = mape(q[TEST], model.predict(DATES[TEST], temp[TEST]))
    reset = predict_recalibrated(model, DATES, q, temp, DATES[TEST], temp[TEST])
    assert plain > 40.0  # the fitted level is 1/0.7 too high
    # after the first five weeks (window and lead) the level is right again
    assert mape(q[TEST][35:], reset[35:]) < 1.0
    # it never looks at the target week: a shift on the target day itself is not seen
    late = q.copy()
    late[-1] *= 2.0
    again = predict_recalibrated(model, DATES, late, temp, DATES[-1:], temp[-1:])
    assert again[0] == pytest.approx(reset[-1], rel=1e-12)


def test_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="positive"):
        fit_daily(DATES[:20], np.zeros(20), np.r_[np.ones(19), 0.0])
    with pytest.raises(ValueError, match="shape|must be"):
        fit_daily(DATES[:20], np.zeros(19), np.ones(20))


def test_seasonal_naive() -> None:
    hist = np.arange(np.datetime64("2024-01-01"), np.datetime64("2025-01-01"))
    values = np.arange(len(hist), dtype=float)
    # a year-ahead target: the same weekday 364 days earlier
    target = np.array(["2024-12-30"], dtype="datetime64[D]")
    out = seasonal_naive(hist, values, target)
    assert out[0] == values[hist == target[0] - 364][0]
    assert weekday_of(target - 364)[0] == weekday_of(target)[0]
    # 364 days earlier is not in the history: last week's same weekday
    target = np.array(["2025-01-03"], dtype="datetime64[D]")  # 364 days earlier: 2024-01-05, cut off below
    assert seasonal_naive(hist[10:], values[10:], target)[0] == values[hist == np.datetime64("2024-12-27")][0]
    # a gap last week: the latest same weekday before it; nothing at all: NaN
    keep = hist != np.datetime64("2024-12-27")
    assert seasonal_naive(hist[10:][keep[10:]], values[10:][keep[10:]], target)[0] == \
        values[hist == np.datetime64("2024-12-20")][0]
    assert np.isnan(seasonal_naive(hist[:3], values[:3], np.array(["2024-01-05"], dtype="datetime64[D]"))[0])
    # accepts datetime.date lists
    assert seasonal_naive([dt.date(2024, 1, 1)], [5.0], [dt.date(2024, 12, 30)])[0] == 5.0


def test_mape() -> None:
    assert mape(np.array([100.0, 200.0]), np.array([110.0, 180.0])) == pytest.approx(10.0)
    assert mape(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert mape(np.array([100.0, 50.0]), np.array([np.nan, 55.0])) == pytest.approx(10.0)
    assert np.isnan(mape(np.array([1.0]), np.array([np.nan])))
    with pytest.raises(ValueError):
        mape(np.array([0.0]), np.array([1.0]))
    with pytest.raises(ValueError):
        mape(np.array([1.0, 2.0]), np.array([1.0]))


def test_gaslib_134_archive() -> None:
    assert ARCHIVE.is_file()
    dates, m3_per_day = read_nominations(ARCHIVE)
    assert len(dates) == 1234
    assert dates[0] == np.datetime64("2011-11-01") and dates[-1] == np.datetime64("2016-02-17")
    assert np.all(np.diff(dates.astype(np.int64)) > 0)
    assert np.all(m3_per_day > 0)
    # 1000 m³/h → m³/day: the network's mean is about 9.8 million m³/day
    assert 5e6 < float(np.mean(m3_per_day)) < 15e6


def test_hourly_shape_recovers_each_day_types_and_bands_shares() -> None:
    rng = np.random.default_rng(2)
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-12-31"))
    temp = climate_mean_temperature_c((dates - np.datetime64("2024-01-01")).astype(int) + 1)
    workday = HOURLY_SHAPE["commercial"]
    weekend = HOURLY_SHAPE["household"]
    cold_flat = np.full(24, 1 / 24)
    off = weekday_of(dates) >= 5
    truth = np.where(off[:, None], weekend[None, :], workday[None, :])
    truth = np.where((temp < 0.0)[:, None] & ~off[:, None], cold_flat[None, :], truth)
    daily = 1_000.0 * np.exp(-0.05 * temp)
    hourly = daily[:, None] * truth * np.exp(rng.normal(0.0, 0.02, truth.shape))
    shape = fit_hourly_shape(dates, hourly, temp, band_edges_c=(0.0, 10.0))
    np.testing.assert_allclose(shape.shares[0, 1], workday, rtol=0.02)  # workday, 0…10 °C
    np.testing.assert_allclose(shape.shares[0, 0], cold_flat, rtol=0.02)  # workday, < 0 °C
    np.testing.assert_allclose(shape.shares[1, 2], weekend, rtol=0.02)  # weekend, ≥ 10 °C
    assert np.allclose(shape.shares.sum(axis=2), 1.0)
    split = shape.split(dates[:10], temp[:10], daily[:10])
    np.testing.assert_allclose(split.sum(axis=1), daily[:10])  # the day's total is kept
    # a holiday is a weekend day
    monday = np.array(["2024-03-04"], dtype="datetime64[D]")
    as_holiday = shape.split(monday, np.array([5.0]), np.array([24.0]), holidays=[dt.date(2024, 3, 4)])
    np.testing.assert_allclose(as_holiday[0], 24.0 * shape.shares[1, 1])


def test_hourly_shape_borrows_for_thin_bands_and_refuses_too_little_history() -> None:
    dates = np.arange(np.datetime64("2024-07-01"), np.datetime64("2024-07-29"))  # summer only
    hourly = np.tile(HOURLY_SHAPE["household"], (len(dates), 1))
    shape = fit_hourly_shape(dates, hourly, np.full(len(dates), 20.0))
    assert shape.days[0, 0] == 0 and shape.days[0, 2] > 0  # no cold workdays: borrowed
    np.testing.assert_allclose(shape.shares[0, 0], HOURLY_SHAPE["household"])
    with pytest.raises(ValueError, match="complete days"):
        fit_hourly_shape(dates[:3], hourly[:3], np.full(3, 20.0))
    with pytest.raises(ValueError, match=r"\[n, 24\]"):
        fit_hourly_shape(dates, hourly[:, :12], np.full(len(dates), 20.0))


def test_seasonal_naive_hourly_is_the_same_hour_a_week_before() -> None:
    x = np.arange(24 * 10, dtype=float)
    naive = seasonal_naive_hourly(x)
    assert np.isnan(naive[:168]).all()
    np.testing.assert_array_equal(naive[168:], x[:-168])
