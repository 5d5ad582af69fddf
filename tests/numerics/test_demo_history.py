"""The demo town's generated history: station flows are what their zones consume, and it is
deterministic for a seed."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from erp.demo_town import generate_demo_town
from server.demo_history import demo_history


@pytest.fixture(scope="module")
def history():
    return demo_history(generate_demo_town().records, dt.date(2024, 1, 1), 30, seed=3)


def test_station_flows_carry_what_their_zones_consume(history) -> None:
    flows = dict(zip(history.stations, history.station_flow_m3h, strict=True))
    total = history.total()
    # the city gate carries the whole town; its meter's 1 % noise averages out over a month
    assert flows["GRS-1"].sum() == pytest.approx(total.sum(), rel=2e-3)
    assert (flows["GRS-1"] / total).std() == pytest.approx(0.01, rel=0.15)
    # each district's station carries that district (the demo's districts are one zone each)
    assert flows["GRP-05"].sum() == pytest.approx(history.area("D05").sum(), rel=2e-3)
    assert set(history.stations) >= {"GRS-1", "GRP-01", "ShRP-02"} and len(history.stations) == 15
    assert history.consumption_m3h.shape == (len(history.groups), 30, 24)


def test_colder_days_burn_more_and_a_seed_repeats(history) -> None:
    cold, mild = history.expected_day_m3(-20.0).sum(), history.expected_day_m3(5.0).sum()
    assert cold > 2 * mild > 0
    again = demo_history(generate_demo_town().records, dt.date(2024, 1, 1), 30, seed=3)
    np.testing.assert_array_equal(again.station_flow_m3h, history.station_flow_m3h)
    np.testing.assert_array_equal(again.temperature_c, history.temperature_c)
