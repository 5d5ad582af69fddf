"""Gas balance and losses over GraphQL (ANA-1, ANA-3, ANA-4): `gasBalance`.

Thin over `erp.services.gas_balance`, which says what a branch, a district and the period are.
Volumes are m³ at standard conditions (20 °C, 101.325 kPa) and money is roubles, both as the
`Decimal` scalar: a string holding the exact value ("1250400.500", "9518423.73"), so that the
parts add up to the inflow to the last litre and kopeck in any client. The same figures come as
CSV and XLSX from `GET /export/gas-balance.csv` and `.xlsx` (`server/exports.py`).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.exceptions import StrawberryGraphQLError
from strawberry.types import Info

from erp.services import gas_balance as service
from realtime.historian.base import HistorianUnavailable
from schema.context import Context
from schema.permissions import Can

__all__ = ["BALANCE_PERMISSION", "BalanceQuery", "GasBalance"]

BALANCE_PERMISSION = "balance.read"


@strawberry.type(description="The balance of one district or branch for the period: inflow = "
                             "metered + unmetered (estimated) + leakage + own needs + imbalance, "
                             "in m³ at standard conditions (20 °C, 101.325 kPa) and in roubles.")
class BalancePart:
    id: str = strawberry.field(description="A branch: its feeding stations' ids joined by '+'; "
                                           "a district: the area id")
    kind: str = strawberry.field(description="district or branch")
    name: str
    area_id: str | None
    stations: list[str] = strawberry.field(description="The stations feeding it")
    inflow_m3: Decimal = strawberry.field(description="Integral of the feeders' flow, less what "
                                                      "stations drawing from it passed on")
    metered_m3: Decimal
    unmetered_m3: Decimal = strawberry.field(description="Estimated for service points (or the "
                                                         "part of the period) without readings")
    leakage_m3: Decimal = strawberry.field(description="Technological leakage by the norm per km "
                                                       "and pressure level")
    own_needs_m3: Decimal = strawberry.field(description="The feeding stations' heating")
    imbalance_m3: Decimal = strawberry.field(description="Inflow less everything accounted for; "
                                                         "positive = gas unaccounted for")
    imbalance_share: float = strawberry.field(description="imbalance / inflow (0 without inflow)")
    inflow_rub: Decimal
    metered_rub: Decimal
    unmetered_rub: Decimal
    leakage_rub: Decimal
    own_needs_rub: Decimal
    imbalance_rub: Decimal = strawberry.field(description="The priced inflow less the other "
                                                          "priced parts (takes their rounding)")
    inflow_coverage: float = strawberry.field(description="Share of the period with station flow "
                                                          "values, 0–1 (the worst station)")
    service_points: int
    estimated_service_points: int = strawberry.field(
        description="Service points whose consumption was estimated for some of the period")
    abnormal: bool = strawberry.field(description="The imbalance stands out (or the flow "
                                                  "history is too thin to tell)")
    abnormal_reason: str | None

    @classmethod
    def of(cls, p: service.PartBalance) -> BalancePart:
        """The GraphQL view of a service part."""
        b, m = p.balance, p.balance.money
        return cls(
            id=p.id, kind=p.kind, name=p.name, area_id=p.area_id, stations=list(p.stations),
            inflow_m3=b.inflow_m3, metered_m3=b.metered_m3, unmetered_m3=b.unmetered_m3,
            leakage_m3=b.leakage_m3, own_needs_m3=b.own_needs_m3, imbalance_m3=b.imbalance_m3,
            imbalance_share=b.imbalance_share, inflow_rub=m["inflow"], metered_rub=m["metered"],
            unmetered_rub=m["unmetered"], leakage_rub=m["leakage"], own_needs_rub=m["own_needs"],
            imbalance_rub=m["imbalance"], inflow_coverage=p.inflow_coverage,
            service_points=p.service_points, estimated_service_points=p.estimated_points,
            abnormal=p.abnormal, abnormal_reason=p.reason)


@strawberry.type(description="Gas balance of your districts and branches for a local day or "
                             "month.")
class GasBalance:
    period: dt.date = strawberry.field(description="The first day of the period")
    granularity: str = strawberry.field(description="day or month")
    time_zone: str = strawberry.field(description="Whose local midnights bound the period")
    start: dt.datetime
    end: dt.datetime = strawberry.field(description="Exclusive; before the period's end while "
                                                    "it is still running")
    complete: bool
    price_per_m3: Decimal = strawberry.field(description="Roubles per m³ the volumes are valued at")
    districts: list[BalancePart]
    branches: list[BalancePart]
    unassigned_service_points: int = strawberry.field(
        description="Service points of your areas that no station feeds (normally closed "
                    "valves, registry gaps): in no branch")

    @classmethod
    def of(cls, r: service.GasBalanceReport) -> GasBalance:
        """The GraphQL view of a service report."""
        p = r.period
        return cls(period=p.first_day, granularity=p.granularity, time_zone=p.zone,
                   start=p.start, end=p.end, complete=p.complete, price_per_m3=r.price_per_m3,
                   districts=[BalancePart.of(d) for d in r.districts],
                   branches=[BalancePart.of(b) for b in r.branches],
                   unassigned_service_points=r.unassigned_service_points)


@strawberry.type
class BalanceQuery:
    @strawberry.field(
        permission_classes=[Can(BALANCE_PERMISSION)],
        description="Gas balance and losses per district and per branch for the local day, or "
                    "the local month containing `period` (granularity: day or month): inflow "
                    "at stations, metered and estimated consumption, leakage, own needs, the "
                    "imbalance in m³ and roubles, and the branches whose imbalance stands out. "
                    "Your areas only, or one of them.")
    async def gas_balance(self, info: Info[Context, Any], period: dt.date,
                          granularity: str = "month", area: str | None = None) -> GasBalance:
        svc = info.context.services
        try:
            async with svc.db() as s:
                report = await service.gas_balance(s, svc.historian, period, granularity,
                                                   areas=info.context.areas(), area=area)
        except HistorianUnavailable:
            raise StrawberryGraphQLError("the historian cannot be reached: try again later",
                                         extensions={"code": "UNAVAILABLE"}) from None
        return GasBalance.of(report)
