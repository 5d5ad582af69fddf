"""Gas balance: the parts always sum exactly to the inflow, in m³ and in money."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erp.domain.balance import Balance, BalanceError, balance, flag_abnormal, leakage_m3

volumes = st.decimals(min_value=0, max_value=Decimal("1e9"), places=6, allow_nan=False,
                      allow_infinity=False)
prices = st.decimals(min_value=0, max_value=Decimal("100"), places=4, allow_nan=False,
                     allow_infinity=False)


@settings(max_examples=2_000, deadline=None)
@given(inflow=volumes, metered=volumes, unmetered=volumes, leakage=volumes, own=volumes,
       price=prices)
def test_parts_sum_exactly_to_the_inflow(inflow: Decimal, metered: Decimal, unmetered: Decimal,
                                         leakage: Decimal, own: Decimal, price: Decimal) -> None:
    b = balance("D01", inflow_m3=inflow, metered_m3=metered, unmetered_m3=unmetered,
                leakage_m3=leakage, own_needs_m3=own, price_per_m3=price)
    assert sum(b.parts_m3.values(), Decimal(0)) == b.inflow_m3  # exactly, not approximately
    assert sum((v for k, v in b.money.items() if k != "inflow"), Decimal(0)) == b.money["inflow"]
    assert all(v == v.quantize(Decimal("0.001")) for v in b.parts_m3.values())
    assert all(v == v.quantize(Decimal("0.01")) for v in b.money.values())
    assert abs(b.inflow_m3 - inflow) <= Decimal("0.0005")  # rounded to the litre, not more


def test_a_typical_month() -> None:
    b = balance("GRP-06", inflow_m3="1250400.5", metered_m3="1180220.125",
                unmetered_m3="22000", leakage_m3="3100.4", own_needs_m3="850",
                price_per_m3="7.6123")
    assert b.imbalance_m3 == Decimal("44229.975")
    assert b.imbalance_share == pytest.approx(0.03537, abs=1e-5)
    assert b.money["inflow"] == Decimal("9518423.73")  # 1,250,400.5 m³ × 7.6123 ₽ = 9,518,423.726…
    assert b.money["imbalance"] == b.money["inflow"] - (
        b.money["metered"] + b.money["unmetered"] + b.money["leakage"] + b.money["own_needs"])


@pytest.mark.parametrize("field", ["inflow_m3", "metered_m3", "leakage_m3"])
def test_negative_volumes_are_refused_by_name(field: str) -> None:
    args = {"inflow_m3": 10, "metered_m3": 5, field: -1}
    with pytest.raises(BalanceError, match=field):
        balance("X", **args)  # type: ignore[arg-type]


def test_leakage_norm_by_pressure_level() -> None:
    assert leakage_m3({"low": 12.5, "medium": 4.0}, {"low": 0.02, "medium": 0.05}, 720) == \
        Decimal("324.000")  # (12.5·0.02 + 4·0.05) m³/h · 720 h
    with pytest.raises(BalanceError, match="high"):
        leakage_m3({"high": 1.0}, {"low": 0.02}, 1)


def test_the_branch_that_loses_gas_is_flagged() -> None:
    def part(name: str, share: float) -> Balance:
        metered = Decimal(1000) * (1 - Decimal(str(share)))
        return balance(name, inflow_m3=1000, metered_m3=metered)

    branches = [part(f"B{k}", s) for k, s in enumerate([0.010, 0.012, 0.008, 0.011, 0.009, 0.013])]
    assert flag_abnormal(branches) == []
    branches.append(part("B-LEAK", 0.04))
    assert flag_abnormal(branches) == ["B-LEAK"]  # 4 % is well inside 5 %, but far from the rest
    assert flag_abnormal([part("ONLY", 0.08)]) == ["ONLY"]  # beyond the absolute tolerance
