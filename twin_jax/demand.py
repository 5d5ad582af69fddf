"""Consumption from temperature: SigLinDe standard load profiles, day → hour, per category.

The BDEW/VKU standard load profile method (SigLinDe: "sigmoid plus linear parts"), in
Germany the legal basis of gas demand allocation, and a good first model anywhere heating
drives gas use: a consumer's daily use is `KW · h(T)`, with `T` the day's mean air temperature
(°C), `h` the profile function

    h(T) = A / (1 + (B / (T − T0))^C) + D + max(mH·T + bH, mW·T + bW),   T0 = 40 °C,

and `KW` ("customer value") scaled so that a typical year adds up to the consumer's annual
volume. An hourly shape per category splits the day. The parameters below are the published
BDEW 2015 profiles' shapes (rounded): `household` ≈ HMF34 (multi-family), `commercial` ≈
GKO34 (offices, shops), `critical` (hospitals, boiler houses) ≈ GHD heating, `industrial`
weakly temperature dependent (process gas). Issue-8 forecasting fits them to history; these
are the starting point. Functions are `jnp`-pure, so a fit can differentiate through them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = [
    "CATEGORIES", "HOURLY_SHAPE", "SigLinDe", "climate_mean_temperature_c", "customer_value",
    "daily_factor", "hourly_demand_m3h",
]


class SigLinDe(NamedTuple):
    """Parameters of one profile (dimensionless h; T in °C)."""

    a: float
    b: float
    c: float
    d: float
    m_h: float = 0.0
    b_h: float = 0.0
    m_w: float = 0.0
    b_w: float = 0.0
    t0: float = 40.0


CATEGORIES: dict[str, SigLinDe] = {
    "household": SigLinDe(1.2022, -37.1833, 5.6728, 0.0716, -0.0496, 0.8401, -0.0022, 0.1074),
    "commercial": SigLinDe(1.4334, -36.6590, 7.6083, 0.0747, -0.0497, 0.8195, -0.0020, 0.1001),
    "critical": SigLinDe(1.3500, -36.0000, 6.5000, 0.1000, -0.0450, 0.8000, -0.0020, 0.1500),
    "industrial": SigLinDe(0.4000, -35.0000, 4.0000, 0.6000, -0.0100, 0.6000, 0.0000, 0.6000),
}
"""Profile per service-point category (see the module docstring for their origin)."""

HOURLY_SHAPE: dict[str, np.ndarray] = {
    # share of the day's gas in each local hour 0…23 (sums to 1)
    "household": np.array([2.6, 2.4, 2.3, 2.3, 2.5, 3.3, 4.9, 5.8, 5.3, 4.6, 4.3, 4.3,
                           4.4, 4.2, 4.0, 4.0, 4.4, 5.2, 5.9, 6.0, 5.5, 4.7, 3.9, 3.0]),
    "commercial": np.array([2.0, 2.0, 2.0, 2.0, 2.1, 2.6, 3.6, 5.0, 5.9, 6.0, 5.9, 5.8,
                            5.7, 5.6, 5.5, 5.4, 5.2, 4.8, 4.2, 3.6, 3.1, 2.7, 2.4, 2.2]),
    "critical": np.full(24, 100.0 / 24),
    "industrial": np.array([3.2, 3.2, 3.2, 3.2, 3.3, 3.8, 4.6, 5.0, 5.0, 5.0, 5.0, 4.9,
                            4.8, 4.9, 5.0, 5.0, 4.9, 4.6, 4.2, 3.9, 3.7, 3.5, 3.4, 3.3]),
}
HOURLY_SHAPE = {k: v / v.sum() for k, v in HOURLY_SHAPE.items()}


def daily_factor(profile: SigLinDe, temperature_c: jnp.ndarray) -> jnp.ndarray:
    """h(T): the profile's daily factor at daily mean air temperature(s) `temperature_c` (°C)."""
    t = jnp.asarray(temperature_c)
    sigmoid = profile.a / (1.0 + (profile.b / (t - profile.t0)) ** profile.c) + profile.d
    linear = jnp.maximum(profile.m_h * t + profile.b_h, profile.m_w * t + profile.b_w)
    return sigmoid + linear


def climate_mean_temperature_c(day_of_year: np.ndarray, annual_mean_c: float = 5.0,
                               amplitude_c: float = 14.0, coldest_day: int = 20) -> np.ndarray:
    """A town's normal daily mean temperature (°C): a cosine over the year (defaults: Yaroslavl)."""
    return annual_mean_c - amplitude_c * np.cos(2 * np.pi * (np.asarray(day_of_year) - coldest_day) / 365.25)


def customer_value(profile: SigLinDe, annual_m3: float, **climate: float) -> float:
    """KW (m³/day per unit of h): the annual volume spread over a normal year's h."""
    days = np.arange(1, 366)
    total = float(np.sum(np.asarray(daily_factor(profile, climate_mean_temperature_c(days, **climate)))))
    return annual_m3 / total


def hourly_demand_m3h(category: str, annual_m3: np.ndarray, temperature_c: float, hour: int,
                      **climate: float) -> np.ndarray:
    """Expected flow (m³/h, the annual volume's conditions) of consumers of one category now.

    Arguments: `annual_m3` [n] annual volumes; `temperature_c` the day's mean air temperature;
    `hour` the local hour 0…23. Returns [n].
    """
    profile = CATEGORIES.get(category, CATEGORIES["household"])
    kw = customer_value(profile, 1.0, **climate)
    day_m3 = np.asarray(annual_m3, dtype=np.float64) * kw * float(daily_factor(profile, temperature_c))
    return day_m3 * HOURLY_SHAPE.get(category, HOURLY_SHAPE["household"])[hour % 24]
