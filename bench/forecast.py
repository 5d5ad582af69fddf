"""Daily consumption forecast (ANA-2): our fitted model against the seasonal-naive baseline.

Run: `.venv/bin/python bench/forecast.py` (about 15 s, most of it jit compilation).

Two histories, the same procedure: fit `twin_jax.forecast.fit_daily` on the first part, forecast
the rest, MAPE against the actual days; the baseline (`seasonal_naive`) on the same test days
takes the same weekday 364 days earlier from the actual series (a forecast up to a year ahead),
else the latest same weekday at least a week before (a week-ahead forecast, used across the
data's gaps).

1. GasLib-134 (`bench/data/gaslib/Nominations-134-v2.tar.xz`, CC BY 3.0, see LICENSE.md there):
   the nominated daily exit flows of the Greek transmission network, 1,234 days between
   2011-11-01 and 2016-02-17 (with gaps; 1000 m³/h at normal conditions → million m³/day). The
   total of all exits is the series; it includes gas-fired power plants and industry, not only
   heating. **GasLib has no weather**: the temperature given to the model is a climate normal
   for Greece (Athens-like: annual mean 18 °C, amplitude 9.5 °C, coldest on day 20), the same
   every year — a limitation of the data, not of the model; with it the model can only learn a
   seasonal shape. Fit 2011-11-01 … 2014-10-31, test 2014-11-01 … 2016-02-17. Greek public
   holidays (fixed dates plus the Orthodox Easter ones) get the holiday factor.
2. Synthetic town: two years of daily consumption of households, commercial and industrial
   customers (`twin_jax.demand` profiles with their BDEW-like parameters, 60/25/15 % of a
   50 million m³ year), Yaroslavl's climate normal plus AR(1) day-to-day weather noise
   (σ 3 °C, φ 0.7), weekday factors, holidays × 0.85 and 3 % multiplicative noise. Fit on year 1,
   test on year 2 with the actual (noisy) temperatures — a utility with a weather feed.
   Also: the fitted design-day volume at −31 °C against the generating model's.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from twin_jax.demand import CATEGORIES, climate_mean_temperature_c, customer_value, daily_factor
from twin_jax.forecast import (
    WEEKDAYS,
    as_days,
    fit_daily,
    mape,
    peak_for_design_temperature,
    predict_recalibrated,
    seasonal_naive,
    weekday_of,
)

ARCHIVE = Path(__file__).resolve().parent / "data" / "gaslib" / "Nominations-134-v2.tar.xz"
GAS_NS = "{http://gaslib.zib.de/Gas}"
# flow units seen in GasLib scenario files → m³/day at normal conditions
FLOW_TO_M3_PER_DAY = {"1000m_cube_per_hour": 24_000.0, "m_cube_per_hour": 24.0,
                      "m_cube_per_day": 1.0, "1000m_cube_per_day": 1000.0}
GREECE = {"annual_mean_c": 18.0, "amplitude_c": 9.5, "coldest_day": 20}
YAROSLAVL = {"annual_mean_c": 5.0, "amplitude_c": 14.0, "coldest_day": 20}
DESIGN_T_C = -31.0


def read_nominations(path: Path = ARCHIVE) -> tuple[np.ndarray, np.ndarray]:
    """GasLib nominations archive → (dates [n] datetime64[D], total exit flow [n] m³/day), by date.

    Reads every `.scn` member straight from the .tar.xz; every exit's `<flow value unit>` is
    converted by its unit (unknown units raise).
    """
    totals: dict[np.datetime64, float] = {}
    with tarfile.open(path, "r:xz") as tf:
        for member in tf:
            if not member.isfile() or not member.name.endswith(".scn"):
                continue
            day = np.datetime64(Path(member.name).stem, "D")
            f = tf.extractfile(member)
            assert f is not None
            root = ET.parse(f).getroot()
            total = 0.0
            for node in root.iter(f"{GAS_NS}node"):
                if node.get("type") != "exit":
                    continue
                flow = node.find(f"{GAS_NS}flow")
                if flow is None:
                    continue
                unit = flow.get("unit", "")
                if unit not in FLOW_TO_M3_PER_DAY:
                    raise ValueError(f"{member.name}: unknown flow unit {unit!r}")
                total += float(flow.get("value", "nan")) * FLOW_TO_M3_PER_DAY[unit]
            totals[day] = total
    dates = np.array(sorted(totals), dtype="datetime64[D]")
    return dates, np.array([totals[d] for d in dates])


def day_of_year(dates: np.ndarray) -> np.ndarray:
    """1…366."""
    return (dates - dates.astype("datetime64[Y]")).astype(np.int64) + 1


def orthodox_easter(year: int) -> dt.date:
    """Orthodox Easter Sunday (Gregorian date), Meeus' Julian algorithm (valid 1900–2099)."""
    a, b, c = year % 4, year % 7, year % 19
    d = (19 * c + 15) % 30
    e = (2 * a + 4 * b - d + 34) % 7
    month, day = divmod(d + e + 114, 31)
    return dt.date(year, month, day + 1) + dt.timedelta(days=13)


def greek_holidays(years: range) -> list[dt.date]:
    """Greek public holidays (fixed, plus Clean Monday, Good Friday, Easter Monday, Whit Monday)."""
    out = []
    for y in years:
        out += [dt.date(y, m, d) for m, d in ((1, 1), (1, 6), (3, 25), (5, 1), (8, 15), (10, 28),
                                              (12, 25), (12, 26))]
        easter = orthodox_easter(y)
        out += [easter + dt.timedelta(days=k) for k in (-48, -2, 1, 50)]
    return out


def synthetic_town(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dt.date], float]:
    """Two years of a town's daily use: (dates, actual T °C, m³/day, holidays, true m³/day at −31 °C)."""
    rng = np.random.default_rng(seed)
    dates = np.arange(np.datetime64("2023-01-01"), np.datetime64("2025-01-01"))
    noise = np.zeros(len(dates))
    phi, sigma = 0.7, 3.0
    for i in range(1, len(dates)):
        noise[i] = phi * noise[i - 1] + np.sqrt(1 - phi**2) * sigma * rng.standard_normal()
    temp = climate_mean_temperature_c(day_of_year(dates), **YAROSLAVL) + noise
    annual = 50e6
    mix = {"household": 0.60, "commercial": 0.25, "industrial": 0.15}
    wd = np.array([1.03, 1.03, 1.02, 1.02, 1.01, 0.95, 0.94])
    wd /= wd.mean()
    holidays = [dt.date(y, m, d) for y in (2023, 2024) for m, d in
                ((1, 1), (1, 2), (1, 3), (1, 7), (2, 23), (3, 8), (5, 1), (5, 9), (6, 12), (11, 4))]
    hol = np.isin(dates, as_days(holidays))

    def base(t: np.ndarray) -> np.ndarray:
        return sum(share * annual * customer_value(CATEGORIES[c], 1.0, **YAROSLAVL)
                   * np.asarray(daily_factor(CATEGORIES[c], t)) for c, share in mix.items())

    q = base(temp) * wd[weekday_of(dates)] * np.where(hol, 0.85, 1.0)
    q *= np.exp(rng.normal(0.0, 0.03, len(dates)))
    return dates, temp, q, holidays, float(base(np.array([DESIGN_T_C]))[0] * wd.max())


def evaluate(dates: np.ndarray, temp: np.ndarray, q: np.ndarray, split: np.datetime64,
             holidays: list[dt.date]) -> dict:
    """Fit before `split`, test from it: MAPEs of model and baseline, the model, timings."""
    train = dates < split
    test = ~train
    t0 = time.perf_counter()
    model = fit_daily(dates[train], temp[train], q[train], holidays=holidays)
    fit_s = time.perf_counter() - t0
    pred = model.predict(dates[test], temp[test])
    naive = seasonal_naive(dates, q, dates[test])
    # week-ahead with the level re-set from the 28 days before (what seasonal-naive also knows)
    recal = predict_recalibrated(model, dates, q, temp, dates[test], temp[test])
    return {"model": model, "fit_s": fit_s, "n_train": int(train.sum()), "n_test": int(test.sum()),
            "mape_model": mape(q[test], pred), "mape_naive": mape(q[test], naive),
            "mape_recal": mape(q[test], recal),
            "bias_model": 100 * (float(np.exp(np.median(np.log(pred / q[test])))) - 1),
            "n_naive_364": int(np.isin(dates[test] - 364, dates).sum())}


def main() -> None:
    """Print the figures for bench/RESULTS.md."""
    t0 = time.perf_counter()
    dates, m3 = read_nominations()
    read_s = time.perf_counter() - t0
    mcm = m3 / 1e6
    t_gr = climate_mean_temperature_c(day_of_year(dates), **GREECE)
    gr = evaluate(dates, t_gr, mcm, np.datetime64("2014-11-01"), greek_holidays(range(2011, 2017)))

    s_dates, s_temp, s_q, s_hol, true_peak = synthetic_town()
    syn = evaluate(s_dates, s_temp, s_q, np.datetime64("2024-01-01"), s_hol)
    peak = peak_for_design_temperature(syn["model"], DESIGN_T_C)

    print(f"GasLib-134: {len(dates):,} days {dates[0]} … {dates[-1]} read in {read_s:.2f} s, "
          f"total exits {mcm.min():.2f}–{mcm.max():.2f} (mean {mcm.mean():.2f}) million m³/day")
    print()
    print("| history | temperature given to the model | train days | test days | MAPE ours "
          "(fitted level) | MAPE ours (level re-set weekly, 7 days ahead) | MAPE seasonal-naive | fit s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print(f"| GasLib-134 Greek exits, fit 2011-11-01…2014-10-31, test …2016-02-17 | climate normal "
          f"(Athens-like, no weather in GasLib) | {gr['n_train']:,} | {gr['n_test']:,} | "
          f"{gr['mape_model']:.1f} % | {gr['mape_recal']:.1f} % | {gr['mape_naive']:.1f} % | "
          f"{gr['fit_s']:.1f} |")
    print(f"| synthetic town (Yaroslavl normal + AR(1) σ 3 °C, 3 % noise), fit 2023, test 2024 | "
          f"actual daily means | {syn['n_train']:,} | {syn['n_test']:,} | {syn['mape_model']:.1f} % | "
          f"{syn['mape_recal']:.1f} % | {syn['mape_naive']:.1f} % | {syn['fit_s']:.1f} |")
    print()
    print(f"seasonal-naive: {gr['n_naive_364']}/{gr['n_test']} GasLib test days had the day 364 days "
          f"earlier (the rest: latest same weekday ≥ 7 days before); synthetic "
          f"{syn['n_naive_364']}/{syn['n_test']}")
    for name, r in (("GasLib-134", gr), ("synthetic", syn)):
        m = r["model"]
        wd = ", ".join(f"{d} {f:.3f}" for d, f in zip(WEEKDAYS, m.weekday_factors, strict=True))
        print(f"{name} fit: rms log error {m.rms_log_error:.3f}, {m.iterations} BFGS iterations, "
              f"median bias on the test days {r['bias_model']:+.1f} %; "
              f"weekday factors {wd}; holiday factor {m.holiday_factor:.3f}")
    print(f"synthetic design day at {DESIGN_T_C:.0f} °C (busiest weekday): fitted {peak / 1e3:,.0f} "
          f"thousand m³/day, generating model {true_peak / 1e3:,.0f} ({100 * (peak / true_peak - 1):+.1f} %)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
