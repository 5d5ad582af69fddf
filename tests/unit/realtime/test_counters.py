"""Flow from a volume counter's readings."""

from __future__ import annotations

import datetime as dt

import pytest

from realtime.counters import CounterRate

T0 = dt.datetime(2026, 1, 15, 6, 0, tzinfo=dt.UTC)


def at(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def test_the_rate_is_the_rise_over_the_window() -> None:
    c = CounterRate(window_s=300, min_span_s=30)
    c.add(at(0), 1000.0)
    assert c.per_hour(at(0)) is None  # one reading: nothing yet
    c.add(at(20), 1000.5)
    assert c.per_hour(at(20)) is None  # under the minimum span
    for k in range(3, 40):  # 90 m³/h in whole-digit steps: 1 m³ every 40 s
        c.add(at(10 * k), 1000.0 + (10 * k) // 40)
    rate = c.per_hour(at(390))
    assert rate == pytest.approx(90.0, rel=0.15)  # digits: within one step over the window
    assert c.per_hour(at(390 + 301)) is None  # the meter fell silent: no rate about now


def test_an_unchanged_counter_reads_zero_and_a_reset_starts_again() -> None:
    c = CounterRate(window_s=300, min_span_s=30)
    c.add(at(0), 500.0)
    c.add(at(60), 500.0)
    assert c.per_hour(at(60)) == 0.0  # a consumer that stopped
    c.add(at(50), 900.0)  # out of order: ignored
    assert c.per_hour(at(60)) == 0.0
    c.add(at(120), 3.0)  # a new counter
    assert c.per_hour(at(120)) is None
    c.add(at(180), 4.0)
    assert c.per_hour(at(180)) == pytest.approx(60.0)


def test_the_window_slides() -> None:
    c = CounterRate(window_s=120, min_span_s=30)
    for s in range(0, 600, 10):  # 36 m³/h, then 72 m³/h from t = 300 s
        c.add(at(s), s / 100 if s <= 300 else 3 + (s - 300) / 50)
    assert c.per_hour(at(590)) == pytest.approx(72.0)  # only the last two minutes count
    with pytest.raises(ValueError):
        CounterRate(window_s=10, min_span_s=20)
