"""Demand forecasts over GraphQL (issue 8, ANA-2): `demandForecast`.

Thin over the server's forecaster (`services.forecasts`, a `ForecastService`): the days ahead
of the whole network or one area, daily volumes and optionally hourly flows, the volume per
consumer category, and the design day. Volumes are m³ at standard conditions (20 °C,
101.325 kPa); dates and hours are local. A caller limited to some areas must name one of them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

import strawberry
from strawberry.exceptions import StrawberryGraphQLError
from strawberry.types import Info

from schema.context import Context
from schema.permissions import Can

__all__ = ["ForecastQuery", "ForecastService"]


class ForecastService(Protocol):
    """What the schema needs of the server's forecaster (`server/forecast.py`)."""

    @property
    def ready(self) -> bool:
        """Whether forecasts can be made now (the live twin has loaded the network)."""
        ...

    async def forecast(self, area: str | None, *, start: dt.date | None = None, days: int = 7,
                       temperatures_c: list[float] | None = None, hourly: bool = False,
                       design_temperature_c: float = -31.0) -> Any: ...


@strawberry.type(description="One local day ahead.")
class ForecastDay:
    date: dt.date
    temperature_c: float = strawberry.field(description="The daily mean air temperature used, °C")
    volume_m3: float = strawberry.field(description="The day's gas, m³ at 20 °C and 101.325 kPa")
    hourly_m3h: list[float] | None = strawberry.field(
        description="24 hourly flows (local hours 0…23), m³/h, when asked for")


@strawberry.type(description="The profile estimate of one consumer category over the forecast's days.")
class CategoryForecast:
    category: str
    service_points: int
    volume_m3: float


@strawberry.type(description="Gas demand ahead for the network or one area.")
class DemandForecast:
    area_id: str | None
    method: str = strawberry.field(description="fitted (to metered history) or profile (each "
                                               "service point's standard load profile)")
    reason: str = strawberry.field(description="Why this method: the history it had")
    history_days: int = strawberry.field(description="Complete days of metered history used")
    fit_rms_log_error: float | None = strawberry.field(
        description="The fit's root-mean-square log error on its history (≈ relative error)")
    days: list[ForecastDay]
    categories: list[CategoryForecast]
    design_temperature_c: float
    design_day_m3: float = strawberry.field(description="The design day's gas, m³")
    design_hour_m3h: float = strawberry.field(description="The design day's busiest hour, m³/h")


def _of(f: Any) -> DemandForecast:
    return DemandForecast(
        area_id=f.area_id, method=f.method, reason=f.reason, history_days=f.history_days,
        fit_rms_log_error=f.fit_rms_log_error,
        days=[ForecastDay(date=d.date, temperature_c=d.temperature_c, volume_m3=d.volume_m3,
                          hourly_m3h=list(d.hourly_m3h) if d.hourly_m3h is not None else None)
              for d in f.days],
        categories=[CategoryForecast(category=c.category, service_points=c.service_points,
                                     volume_m3=c.volume_m3) for c in f.categories],
        design_temperature_c=f.design_temperature_c, design_day_m3=f.design_day_m3,
        design_hour_m3h=f.design_hour_m3h)


@strawberry.type
class ForecastQuery:
    @strawberry.field(
        permission_classes=[Can("forecast.read")],
        description="Gas demand of the network (area null) or one area for `days` local days from "
                    "`start` (default tomorrow), daily and optionally hourly, per consumer "
                    "category, and the design day at `designTemperatureC`. Fitted to the metered "
                    "history where there is enough of it, else from the standard load profiles. "
                    "`temperaturesC`: the days' mean air temperatures (a weather forecast); "
                    "default the setting or the climate normal.")
    async def demand_forecast(self, info: Info[Context, Any], area: str | None = None, days: int = 7,
                              start: dt.date | None = None, temperatures_c: list[float] | None = None,
                              hourly: bool = False, design_temperature_c: float = -31.0
                              ) -> DemandForecast:
        scope = info.context.areas()
        if scope is not None and (area is None or area not in scope):
            raise StrawberryGraphQLError("name one of your areas: your role sees only "
                                         + ", ".join(sorted(scope)) if scope else "no areas are yours",
                                         extensions={"code": "FORBIDDEN"})
        service = info.context.services.forecasts
        if service is None:
            raise StrawberryGraphQLError("forecasts need the live twin, which does not run in this "
                                         "process", extensions={"code": "UNAVAILABLE"})
        if not service.ready:
            raise StrawberryGraphQLError("the live twin is still loading the network: try again in "
                                         "a minute", extensions={"code": "UNAVAILABLE"})
        return _of(await service.forecast(area, start=start, days=days, temperatures_c=temperatures_c,
                                          hourly=hourly, design_temperature_c=design_temperature_c))
