"""Design gas loads: consumer groups and coincidence (simultaneity) factors.

A district's design hourly flow is `Σ_groups k_sim(n_g) · Σ_{i∈g} q_i`, with `q_i` each
consumer's own design peak (m³/h std) and `n_g` the number of consumers in group `g`, the way
SP 42-101-2003 (section 3.16, table 5) sizes street networks:

- `cooking`: flats with a 4-burner stove only — table 5, first column;
- `cooking_hot_water`: flats with a stove and an instantaneous water heater — third column;
  both interpolated log-linearly in n between the table rows, held at the 400-flat value above;
- `heating`: houses with a heating boiler — 0.85 whatever their number (SP 42-101 note);
- `commercial`: shops, cafés, bakeries — 0.6 whatever their number (this demo's assumption:
  their peaks partly coincide with the evening household peak);
- `full`: industrial and critical consumers — 1.0, each is designed for its own peak.

A household is put in `heating` when it burns at least 1,000 m³ a year (a boiler; cooking
alone never does), otherwise in `cooking_hot_water` when its peak exceeds 1.6 m³/h.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["coincidence_factor", "consumer_group", "design_flow_m3h", "group_shares_m3h"]

# (flats, 4-burner stove, stove + instantaneous water heater), SP 42-101-2003 table 5.
_TABLE5: tuple[tuple[int, float, float], ...] = (
    (1, 1.000, 0.700), (2, 0.650, 0.560), (3, 0.450, 0.480), (4, 0.350, 0.430),
    (5, 0.290, 0.400), (6, 0.280, 0.392), (7, 0.280, 0.370), (8, 0.265, 0.360),
    (9, 0.258, 0.345), (10, 0.254, 0.340), (15, 0.240, 0.300), (20, 0.235, 0.280),
    (30, 0.231, 0.250), (40, 0.227, 0.230), (50, 0.223, 0.215), (60, 0.220, 0.203),
    (70, 0.217, 0.195), (80, 0.214, 0.192), (90, 0.212, 0.187), (100, 0.210, 0.185),
    (400, 0.180, 0.150),
)
_CONSTANT = {"heating": 0.85, "commercial": 0.6, "full": 1.0}
HEATING_ANNUAL_M3 = 1_000.0
HOT_WATER_PEAK_M3H = 1.6


def consumer_group(category: str, peak_m3h_std: float, annual_m3_std: float) -> str:
    """The coincidence group of a service point from its category, peak and annual volume."""
    if category == "household":
        if annual_m3_std >= HEATING_ANNUAL_M3:
            return "heating"
        return "cooking_hot_water" if peak_m3h_std > HOT_WATER_PEAK_M3H else "cooking"
    if category == "commercial":
        return "commercial"
    return "full"


def coincidence_factor(group: str, count: int) -> float:
    """k_sim (–) of `count` consumers of `group` (see the module docstring)."""
    if group in _CONSTANT:
        return _CONSTANT[group]
    if group not in ("cooking", "cooking_hot_water"):
        raise ValueError(f"unknown consumer group {group!r}")
    col = 1 if group == "cooking" else 2
    if count <= 1:
        return _TABLE5[0][col]
    for lo, hi in zip(_TABLE5, _TABLE5[1:], strict=False):
        if count <= hi[0]:
            t = (math.log(count) - math.log(lo[0])) / (math.log(hi[0]) - math.log(lo[0]))
            return lo[col] + t * (hi[col] - lo[col])
    return _TABLE5[-1][col]


def group_shares_m3h(consumers: Sequence[tuple[str, float]]) -> list[float]:
    """Each consumer's coincident share (m³/h std) of the group design flow, in input order.

    `consumers` are (group, own peak m³/h std) pairs; the shares add up to `design_flow_m3h`.
    """
    counts: dict[str, int] = {}
    for group, _ in consumers:
        counts[group] = counts.get(group, 0) + 1
    k = {g: coincidence_factor(g, n) for g, n in counts.items()}
    return [k[g] * q for g, q in consumers]


def design_flow_m3h(consumers: Iterable[tuple[str, float]]) -> float:
    """Design hourly flow (m³/h std) of a set of (group, own peak m³/h std) consumers."""
    return sum(group_shares_m3h(list(consumers)))
