"""Gas balance of a district or branch (ANA-1, ANA-3, ANA-4): where the gas that came in went.

For a period (a day, a month) and a part of the network:

    inflow = metered consumption + estimated unmetered consumption
             + technological losses (model-based leakage + own needs) + imbalance

Volumes are m³ at standard conditions (20 °C, 101.325 kPa) as `Decimal` with three places (a
litre): they come from meters and must add up to the last litre, so the imbalance is what is
left and the parts always sum exactly to the inflow. Money is `Decimal` in roubles with kopecks;
each part is priced and rounded, and the imbalance takes the rounding remainder, so the priced
parts also sum exactly to the priced inflow.

`flag_abnormal` marks branches whose imbalance share stands out from the others (a robust
z-score on the median and the median absolute deviation) or exceeds an absolute tolerance: the
places to send an inspector (unregistered consumers, meter faults, leaks).

Pure functions on plain values; the services feed them from the historian, meter readings and
the twin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["ANNUAL_NORM_M3_BY_CATEGORY", "Balance", "BalanceError", "GAS_PRICE_RUB_PER_M3",
           "LEAKAGE_M3_PER_KM_H", "MONEY_STEP", "OWN_NEEDS_M3_PER_DAY", "VOLUME_STEP",
           "abnormal_reasons", "balance", "flag_abnormal", "leakage_m3"]

VOLUME_STEP = Decimal("0.001")  # m³: one litre
MONEY_STEP = Decimal("0.01")  # roubles: one kopeck


class BalanceError(ValueError):
    """The inputs cannot make a balance (negative volumes, a negative price)."""


@dataclass(frozen=True)
class Balance:
    """One period of one network part; volumes m³ at standard conditions, money in roubles."""

    part: str
    inflow_m3: Decimal
    metered_m3: Decimal
    unmetered_m3: Decimal
    leakage_m3: Decimal
    own_needs_m3: Decimal
    imbalance_m3: Decimal
    """inflow − everything accounted for; positive = gas unaccounted for."""
    price_per_m3: Decimal
    money: Mapping[str, Decimal]
    """The same parts priced, keys as the volume fields without `_m3`; sums to `money["inflow"]`."""

    @property
    def imbalance_share(self) -> float:
        """imbalance / inflow (0 when nothing flowed in)."""
        return float(self.imbalance_m3 / self.inflow_m3) if self.inflow_m3 else 0.0

    @property
    def parts_m3(self) -> dict[str, Decimal]:
        """The accounted parts and the imbalance, which sum to the inflow."""
        return {"metered": self.metered_m3, "unmetered": self.unmetered_m3,
                "leakage": self.leakage_m3, "own_needs": self.own_needs_m3,
                "imbalance": self.imbalance_m3}


def _volume(name: str, value: Decimal | int | str) -> Decimal:
    v = Decimal(value).quantize(VOLUME_STEP, rounding=ROUND_HALF_EVEN)
    if not v.is_finite() or v < 0:
        raise BalanceError(f"{name} must be a finite volume ≥ 0 m³, got {value!r}")
    return v


def balance(part: str, *, inflow_m3: Decimal | int | str, metered_m3: Decimal | int | str,
            unmetered_m3: Decimal | int | str = 0, leakage_m3: Decimal | int | str = 0,
            own_needs_m3: Decimal | int | str = 0, price_per_m3: Decimal | int | str = 0) -> Balance:
    """The balance of `part`: every volume rounded to the litre, the imbalance what is left.

    Raises `BalanceError` on a negative or non-finite volume or price. The imbalance may be
    negative (more accounted for than came in: a meter reading too high, an estimate too big).
    """
    vols = {"inflow": _volume("inflow_m3", inflow_m3), "metered": _volume("metered_m3", metered_m3),
            "unmetered": _volume("unmetered_m3", unmetered_m3),
            "leakage": _volume("leakage_m3", leakage_m3), "own_needs": _volume("own_needs_m3", own_needs_m3)}
    price = Decimal(price_per_m3)
    if not price.is_finite() or price < 0:
        raise BalanceError(f"price_per_m3 must be a finite amount ≥ 0, got {price_per_m3!r}")
    accounted = ("metered", "unmetered", "leakage", "own_needs")
    imbalance = vols["inflow"] - sum((vols[k] for k in accounted), Decimal(0))
    money = {k: (vols[k] * price).quantize(MONEY_STEP, rounding=ROUND_HALF_EVEN)
             for k in ("inflow", *accounted)}
    money["imbalance"] = money["inflow"] - sum((money[k] for k in accounted), Decimal(0))
    return Balance(part, vols["inflow"], vols["metered"], vols["unmetered"], vols["leakage"],
                   vols["own_needs"], imbalance, price, money)


def leakage_m3(pipe_length_km_by_pressure: Mapping[str, float],
               rate_m3_per_km_h: Mapping[str, float], hours: float) -> Decimal:
    """Technological leakage (m³) of a network part over `hours`: length × rate per level.

    `rate_m3_per_km_h` is the utility's approved leakage norm per km of pipe and pressure level
    (or the twin's calibrated pressure-dependent rate for the period's mean pressure).
    """
    missing = set(pipe_length_km_by_pressure) - set(rate_m3_per_km_h)
    if missing:
        raise BalanceError(f"no leakage rate for pressure level(s) {sorted(missing)}")
    total = sum(Decimal(str(length)) * Decimal(str(rate_m3_per_km_h[level]))
                for level, length in pipe_length_km_by_pressure.items())
    return (Decimal(total) * Decimal(str(hours))).quantize(VOLUME_STEP, rounding=ROUND_HALF_EVEN)


def flag_abnormal(balances: Sequence[Balance], *, z_limit: float = 3.5,
                  absolute_share: float = 0.05) -> list[str]:
    """Parts whose imbalance share is abnormal: robust z-score above `z_limit` against the
    other parts (median / 1.4826·MAD), or |share| above `absolute_share`."""
    return list(abnormal_reasons(balances, z_limit=z_limit, absolute_share=absolute_share))


def abnormal_reasons(balances: Sequence[Balance], *, z_limit: float = 3.5,
                     absolute_share: float = 0.05) -> dict[str, str]:
    """`flag_abnormal`'s parts (in input order), each with why it was flagged, in words."""
    shares = sorted(b.imbalance_share for b in balances)
    if not shares:
        return {}
    n = len(shares)
    median = (shares[(n - 1) // 2] + shares[n // 2]) / 2
    deviations = sorted(abs(s - median) for s in shares)
    mad = (deviations[(n - 1) // 2] + deviations[n // 2]) / 2 * 1.4826
    flagged: dict[str, str] = {}
    for b in balances:
        s = b.imbalance_share
        z = abs(s - median) / mad if mad > 0 else 0.0
        why = []
        if abs(s) > absolute_share:
            why.append(f"imbalance {s:+.2%} of the inflow, beyond ±{absolute_share:.2%}")
        if n >= 4 and z > z_limit:
            why.append(f"imbalance {s:+.2%} of the inflow, far from the median {median:+.2%} "
                       f"of {n} parts (robust z {z:.1f} > {z_limit:g})")
        if why:
            flagged[b.part] = "; ".join(why)
    return flagged


# --- the utility's norms: demo values, each meant to be replaced by the approved one ----------

GAS_PRICE_RUB_PER_M3 = Decimal("8.30")
"""Price (roubles per m³ at standard conditions, VAT included) that volumes are valued at:
of the order of the regulated retail price for households in central Russia, 2026."""

LEAKAGE_M3_PER_KM_H: Mapping[str, Decimal] = {
    "low": Decimal("0.02"), "medium": Decimal("0.04"), "high": Decimal("0.06")}
"""Technological leakage norm, m³ (standard) per km of pipe and hour, by pressure level code:
about 0.5 % of what a low-pressure district of the demo town burns in a year."""

OWN_NEEDS_M3_PER_DAY: Mapping[str, Decimal] = {
    "GRS": Decimal("150"), "GRP": Decimal("12"), "ShRP": Decimal("2")}
"""Own needs of a station (heating of the building or cabinet, the GRS's gas heater), m³
(standard) per day of the heating season, by station kind."""

ANNUAL_NORM_M3_BY_CATEGORY: Mapping[str, Decimal] = {
    "household": Decimal("250"), "commercial": Decimal("5000"), "critical": Decimal("20000"),
    "industrial": Decimal("500000")}
"""Annual consumption (m³ standard) assumed for a service point whose own registered annual
volume is not set, by consumer category: a flat with a stove and water heater; a small
business; a school or hospital; a plant."""
