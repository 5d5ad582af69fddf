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
2. The demo town (`server/demo_history.py`): two years (2023–2024) of its 20,293 service points
   as the demo's hidden plant makes them — SigLinDe profiles per category and annual volume,
   a fixed factor per consumer — plus day-to-day weather (Yaroslavl's normal + AR(1) noise),
   a day-level behaviour factor (3 %) and 1 % meter noise per hour. Series: the town (the
   GRS's meter), each district (its station's meter; medium pressure = GRS − districts), each
   consumer category. Fit on 2023, test on 2024; the test days are forecast with the actual
   temperature + N(0, 1.5 °C), a day-ahead weather forecast's error. Hourly: day-ahead, the
   daily model split by the hourly shape fitted on 2023 (`fit_hourly_shape`), against the same
   hour a week before. Also the fitted design-day volume at −31 °C against the generating model.
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

from erp.demo_town import generate_demo_town
from server.demo_history import DemoHistory, demo_history
from twin_jax.demand import climate_mean_temperature_c
from twin_jax.forecast import (
    WEEKDAYS,
    fit_daily,
    fit_hourly_shape,
    mape,
    peak_for_design_temperature,
    predict_recalibrated,
    seasonal_naive,
    seasonal_naive_hourly,
)

ARCHIVE = Path(__file__).resolve().parent / "data" / "gaslib" / "Nominations-134-v2.tar.xz"
GAS_NS = "{http://gaslib.zib.de/Gas}"
# flow units seen in GasLib scenario files → m³/day at normal conditions
FLOW_TO_M3_PER_DAY = {"1000m_cube_per_hour": 24_000.0, "m_cube_per_hour": 24.0,
                      "m_cube_per_day": 1.0, "1000m_cube_per_day": 1000.0}
GREECE = {"annual_mean_c": 18.0, "amplitude_c": 9.5, "coldest_day": 20}
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


def demo_town_history(days: int = 731) -> tuple[DemoHistory, np.ndarray]:
    """Two years (2023–2024) of the demo town as its plant makes them, and day-ahead
    temperature forecasts for them (the actual daily mean + N(0, 1.5 °C))."""
    hist = demo_history(generate_demo_town().records, dt.date(2023, 1, 1), days)
    rng = np.random.default_rng(11)
    return hist, hist.temperature_c + rng.normal(0.0, 1.5, len(hist.dates))


def evaluate(dates: np.ndarray, temp: np.ndarray, q: np.ndarray, split: np.datetime64,
             holidays: list[dt.date], forecast_temp: np.ndarray | None = None) -> dict:
    """Fit before `split`, test from it: MAPEs of model and baseline, the model, timings.

    `forecast_temp` [n]: the temperatures the forecasts of the test days are made with (a
    weather forecast); default the actual ones."""
    train = dates < split
    test = ~train
    t_test = (temp if forecast_temp is None else forecast_temp)[test]
    t0 = time.perf_counter()
    model = fit_daily(dates[train], temp[train], q[train], holidays=holidays)
    fit_s = time.perf_counter() - t0
    pred = model.predict(dates[test], t_test)
    naive = seasonal_naive(dates, q, dates[test])
    # week-ahead with the level re-set from the 28 days before (what seasonal-naive also knows)
    recal = predict_recalibrated(model, dates, q, temp, dates[test], t_test)
    return {"model": model, "fit_s": fit_s, "n_train": int(train.sum()), "n_test": int(test.sum()),
            "mape_model": mape(q[test], pred), "mape_naive": mape(q[test], naive),
            "mape_recal": mape(q[test], recal),
            "bias_model": 100 * (float(np.exp(np.median(np.log(pred / q[test])))) - 1),
            "n_naive_364": int(np.isin(dates[test] - 364, dates).sum()), "pred": pred}


def evaluate_hourly(dates: np.ndarray, temp: np.ndarray, forecast_temp: np.ndarray, hourly: np.ndarray,
                    split: np.datetime64) -> dict:
    """Day-ahead hourly forecasts of the test days: the daily model (level re-set from the 28
    days before yesterday) split by the hourly shape fitted on the training days, against the
    same hour a week before. `hourly` [D, 24]."""
    train = dates < split
    test = ~train
    daily = hourly.sum(axis=1)
    model = fit_daily(dates[train], temp[train], daily[train])
    shape = fit_hourly_shape(dates[train], hourly[train], temp[train])
    day_ahead = predict_recalibrated(model, dates, daily, temp, dates[test], forecast_temp[test], lead_days=1)
    ours = shape.split(dates[test], forecast_temp[test], day_ahead)
    naive = seasonal_naive_hourly(hourly.ravel()).reshape(hourly.shape)[test]
    return {"mape_model": mape(hourly[test].ravel(), ours.ravel()),
            "mape_naive": mape(hourly[test].ravel(), naive.ravel()),
            "mape_daily": mape(daily[test], day_ahead), "shape_days": shape.days}


def main() -> None:
    """Print the figures for bench/RESULTS.md."""
    t0 = time.perf_counter()
    dates, m3 = read_nominations()
    read_s = time.perf_counter() - t0
    mcm = m3 / 1e6
    t_gr = climate_mean_temperature_c(day_of_year(dates), **GREECE)
    gr = evaluate(dates, t_gr, mcm, np.datetime64("2014-11-01"), greek_holidays(range(2011, 2017)))

    hist, f_temp = demo_town_history()
    split = np.datetime64("2024-01-01")
    d_dates = hist.dates
    flows = {sid: hist.station_flow_m3h[k] for k, sid in enumerate(hist.stations)}
    grs = next(sid for sid in hist.stations if sid.startswith("GRS"))
    series = {"town (GRS-1 meter)": flows[grs]}
    districts = {sid: f for sid, f in flows.items() if sid != grs}
    districts["MP (GRS-1 − districts)"] = flows[grs] - sum(districts.values())
    cats = {c: hist.category(c) for c in sorted({c for _a, c in hist.groups})}
    res = {name: evaluate(d_dates, hist.temperature_c, h.sum(axis=1), split, [], f_temp)
           for name, h in {**series, **districts, **{f"category {c}": v for c, v in cats.items()}}.items()}
    town = res["town (GRS-1 meter)"]
    hourly = {name: evaluate_hourly(d_dates, hist.temperature_c, f_temp, h, split)
              for name, h in {**series, **districts}.items()}
    design = float(hist.expected_day_m3(DESIGN_T_C).sum())
    peak = peak_for_design_temperature(town["model"], DESIGN_T_C)

    print(f"GasLib-134: {len(dates):,} days {dates[0]} … {dates[-1]} read in {read_s:.2f} s, "
          f"total exits {mcm.min():.2f}–{mcm.max():.2f} (mean {mcm.mean():.2f}) million m³/day")
    print(f"demo town: {len(hist.groups)} (area, category) groups, {hist.annual_m3.sum() / 1e6:.1f} million "
          f"m³ a normal year; {len(d_dates)} days from {d_dates[0]}; test days forecast with the actual "
          "temperature + N(0, 1.5 °C) (a day-ahead weather forecast)")
    print()
    print("Daily:")
    print()
    print("| history | temperature given to the model | train days | test days | MAPE ours "
          "(fitted level) | MAPE ours (level re-set weekly, 7 days ahead) | MAPE seasonal-naive | fit s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print(f"| GasLib-134 Greek exits, fit 2011-11-01…2014-10-31, test …2016-02-17 | climate normal "
          f"(Athens-like, no weather in GasLib) | {gr['n_train']:,} | {gr['n_test']:,} | "
          f"{gr['mape_model']:.1f} % | {gr['mape_recal']:.1f} % | {gr['mape_naive']:.1f} % | "
          f"{gr['fit_s']:.1f} |")
    for name, r in res.items():
        if name in districts:
            continue
        print(f"| demo town, {name}, fit 2023, test 2024 | forecast (actual ± 1.5 °C) | {r['n_train']:,} | "
              f"{r['n_test']:,} | {r['mape_model']:.1f} % | {r['mape_recal']:.1f} % | "
              f"{r['mape_naive']:.1f} % | {r['fit_s']:.1f} |")
    d_model = [res[n]["mape_model"] for n in districts]
    d_naive = [res[n]["mape_naive"] for n in districts]
    better = sum(m < b for m, b in zip(d_model, d_naive, strict=True))
    print(f"| demo town, each of its {len(districts)} districts (station meters), fit 2023, test 2024 | "
          f"forecast | {town['n_train']:,} | {town['n_test']:,} | median {np.median(d_model):.1f} %, "
          f"worst {max(d_model):.1f} % | – | median {np.median(d_naive):.1f} %, "
          f"worst {max(d_naive):.1f} % | – |")
    print(f"districts where ours beats seasonal-naive: {better} of {len(districts)}")
    print()
    print("Hourly, day-ahead (demo town, test 2024):")
    print()
    print("| series | MAPE ours (daily model × fitted hourly shape) "
          "| MAPE seasonal-naive (same hour a week before) | MAPE of the day-ahead daily total |")
    print("|---|---:|---:|---:|")
    h_town = hourly["town (GRS-1 meter)"]
    print(f"| town (GRS-1 meter) | {h_town['mape_model']:.1f} % | {h_town['mape_naive']:.1f} % | "
          f"{h_town['mape_daily']:.1f} % |")
    hm = [hourly[n]["mape_model"] for n in districts]
    hn = [hourly[n]["mape_naive"] for n in districts]
    print(f"| each district (median, worst) | {np.median(hm):.1f} %, {max(hm):.1f} % | "
          f"{np.median(hn):.1f} %, {max(hn):.1f} % | – |")
    print()
    print(f"seasonal-naive: {gr['n_naive_364']}/{gr['n_test']} GasLib test days had the day 364 days "
          f"earlier (the rest: latest same weekday ≥ 7 days before); "
          f"demo {town['n_naive_364']}/{town['n_test']}")
    for name, r in (("GasLib-134", gr), ("demo town", town)):
        m = r["model"]
        wd = ", ".join(f"{d} {f:.3f}" for d, f in zip(WEEKDAYS, m.weekday_factors, strict=True))
        print(f"{name} fit: rms log error {m.rms_log_error:.3f}, {m.iterations} BFGS iterations, "
              f"median bias on the test days {r['bias_model']:+.1f} %; "
              f"weekday factors {wd}; holiday factor {m.holiday_factor:.3f}")
    print(f"demo town design day at {DESIGN_T_C:.0f} °C: fitted {peak / 1e3:,.0f} thousand m³/day, "
          f"generating model {design / 1e3:,.0f} ({100 * (peak / design - 1):+.1f} %); coldest day of the "
          f"training year {hist.temperature_c[d_dates < split].min():.1f} °C")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
