"""The live hydraulic twin over GraphQL: `networkState` and the `networkStateUpdates` feed.

Thin over the server's twin runner (`services.twin`, a `TwinReader`): the latest snapshot,
filtered to an area and to the caller's areas. Pressures are gauge, in Pa; flows in kg/s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from strawberry.types import Info

from realtime.twin_state import TWIN_TOPIC, NetworkSnapshot
from schema.context import Context
from schema.permissions import Can

__all__ = ["TwinQuery", "TwinSubscription"]


@strawberry.type(description="Modelled pressure at a network node.")
class ModelledNode:
    id: str
    area_id: str | None
    pressure_pa_gauge: float
    supplied: bool = strawberry.field(description="Some source reaches it through open valves")


@strawberry.type(description="Modelled flow in a pipe, positive from its from-node to its to-node.")
class ModelledPipe:
    id: str
    area_id: str | None
    mass_flow_kg_s: float
    velocity_m_s: float


@strawberry.type(description="A service point below its minimum pressure, or not supplied at all.")
class ConsumerShortfall:
    id: str
    node_id: str
    area_id: str | None
    pressure_pa_gauge: float
    min_pressure_pa_gauge: float
    critical: bool
    supplied: bool


@strawberry.type(description="A sensor against the model: measured − modelled, in the tag's unit.")
class SensorResidual:
    tag_path: str
    measured: float
    modelled: float
    residual: float


@strawberry.type(description="One solve of the live twin.")
class NetworkState:
    at: dt.datetime
    status: str = strawberry.field(description="converged, max_iterations or nonfinite")
    message: str
    iterations: int
    solve_ms: float
    period_s: float = strawberry.field(description="Seconds between solves")
    air_temperature_c: float
    gas_temperature_c: float
    total_demand_kg_s: float
    nodes: list[ModelledNode]
    pipes: list[ModelledPipe]
    consumers_below_minimum: list[ConsumerShortfall]
    residuals: list[SensorResidual]


def _state(snap: NetworkSnapshot, period_s: float, area: str | None, scope: frozenset[str] | None
           ) -> NetworkState:
    def keep(area_id: str | None) -> bool:
        if area is not None and area_id != area:
            return False
        return scope is None or (area_id is not None and area_id in scope)

    return NetworkState(
        at=snap.at, status=snap.status, message=snap.message, iterations=snap.iterations,
        solve_ms=snap.solve_ms, period_s=period_s, air_temperature_c=snap.air_temperature_c,
        gas_temperature_c=snap.gas_temperature_c, total_demand_kg_s=snap.total_demand_kg_s,
        nodes=[ModelledNode(id=n.id, area_id=n.area_id, pressure_pa_gauge=n.pressure_pa_gauge,
                            supplied=n.supplied) for n in snap.nodes if keep(n.area_id)],
        pipes=[ModelledPipe(id=p.id, area_id=p.area_id, mass_flow_kg_s=p.mass_flow_kg_s,
                            velocity_m_s=p.velocity_m_s) for p in snap.pipes if keep(p.area_id)],
        consumers_below_minimum=[
            ConsumerShortfall(id=c.id, node_id=c.node_id, area_id=c.area_id,
                              pressure_pa_gauge=c.pressure_pa_gauge,
                              min_pressure_pa_gauge=c.min_pressure_pa_gauge, critical=c.critical,
                              supplied=c.supplied)
            for c in snap.below_minimum if keep(c.area_id)],
        residuals=[SensorResidual(tag_path=r.path, measured=r.measured, modelled=r.modelled,
                                  residual=r.residual) for r in snap.residuals],
    )


@strawberry.type
class TwinQuery:
    @strawberry.field(permission_classes=[Can("twin.read")],
                      description="The live twin's latest state (null before its first solve or "
                                  "where the twin does not run), optionally one area's part.")
    def network_state(self, info: Info[Context, Any], area: str | None = None) -> NetworkState | None:
        twin = info.context.services.twin
        if twin is None or twin.latest is None:
            return None
        return _state(twin.latest, twin.period_s, area, info.context.areas())


@strawberry.type
class TwinSubscription:
    @strawberry.subscription(permission_classes=[Can("twin.read")],
                             description="The live twin's state after every solve (the latest "
                                         "one first, if any).")
    async def network_state_updates(self, info: Info[Context, Any], area: str | None = None
                                    ) -> AsyncGenerator[NetworkState, None]:
        twin = info.context.services.twin
        if twin is None:
            return
        scope = info.context.areas()
        async with info.context.services.bus.subscribe(TWIN_TOPIC) as sub:
            if twin.latest is not None:
                yield _state(twin.latest, twin.period_s, area, scope)
            async for msg in sub:
                if msg.get("type") == "twin" and twin.latest is not None:
                    yield _state(twin.latest, twin.period_s, area, scope)
