"""GraphQL types of the network registry: thin views of rows, nested objects via DataLoaders.

Units follow the field names: `lengthM` metres, `innerDiameterM` metres (and `innerDiameterMm`
for convenience), pressures in Pa gauge, volumes in m³ at standard conditions (20 °C,
101.325 kPa). Every type is a Relay node with a global id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any, ClassVar, Self

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from schema.context import MISSING, Context

__all__ = [
    "Area", "AssetNode", "Equipment", "Meter", "NetworkLink", "NetworkNode", "Pipe",
    "PressureLevel", "ServicePoint", "SkzStation", "Station", "User", "Valve", "from_row",
]


# GraphQL field name → ORM attribute, where they differ ("kind" is taken by Relay/our ClassVar).
_RENAMED = {"node_kind": "kind", "link_kind": "kind", "station_kind": "kind",
            "meter_kind": "kind", "equipment_kind": "kind", "pressure_level_code": "pressure_level"}


def from_row(cls: type[Any], row: Any) -> Any:
    """Build a GraphQL object from an ORM row by field name (private fields included)."""
    return cls(**{f.name: getattr(row, _RENAMED.get(f.name, f.name))
                  for f in dataclasses.fields(cls) if f.init})


async def _load_one(info: Info[Context, Any], kind: str, cls: type[Any], key: str) -> Any:
    row = await info.context.loaders.asset(kind).load(key)
    return None if row is None else from_row(cls, row)


def _one(info: Info[Context, Any], kind: str, cls: type[Any], key: str | None) -> Any:
    """The referenced object: synchronously when this request has the row, else awaitable.

    Resolvers using it are plain functions; graphql-core awaits the result only when needed.
    """
    if key is None:
        return None
    row = info.context.loaders.cached(kind, key)
    if row is MISSING:
        return _load_one(info, kind, cls, key)
    return None if row is None else from_row(cls, row)


@strawberry.type
class _AssetId:
    @strawberry.field(description="The registry's own id, as used by mutations and files "
                                  "(`id` is the Relay global id).")
    def asset_id(self) -> str:
        return self.id  # type: ignore[attr-defined,no-any-return]


class AssetNode(_AssetId, relay.Node):
    """A registry asset: resolves global ids through the caller-scoped DataLoader."""

    kind: ClassVar[str]

    @classmethod
    async def resolve_nodes(cls, *, info: Info[Context, Any], node_ids: Iterable[str],
                            required: bool = False) -> list[Self | None]:
        rows = await info.context.loaders.asset(cls.kind).load_many(list(node_ids))
        return [None if r is None else from_row(cls, r) for r in rows]


@strawberry.type(description="A pressure class, gauge pressure bounds in Pa.")
class PressureLevel:
    code: str
    name: str
    min_pa_gauge: float
    max_pa_gauge: float


def _level_of(row: Any) -> PressureLevel | None:
    return None if row is None else PressureLevel(
        code=row.code, name=row.name, min_pa_gauge=row.min_pa_gauge,
        max_pa_gauge=row.max_pa_gauge)


async def _load_level(info: Info[Context, Any], code: str) -> PressureLevel | None:
    return _level_of(await info.context.loaders.levels.load(code))


def _level(info: Info[Context, Any], code: str) -> Any:
    """A pressure level, synchronously when levels are loaded (see `_one`)."""
    row = info.context.loaders.cached_level(code)
    return _load_level(info, code) if row is MISSING else _level_of(row)


@strawberry.type(description="A network district; scopes users' access.")
class Area(AssetNode):
    kind: ClassVar[str] = "area"
    id: relay.NodeID[str]
    name: str


@strawberry.type
class _InArea:
    area_id: strawberry.Private[str | None]

    @strawberry.field(description="The district this asset belongs to.")
    def area(self, info: Info[Context, Any]) -> Area | None:
        return _one(info, "area", Area, self.area_id)


@strawberry.type(description="A junction, source or end point (WGS84, elevation in m).")
class NetworkNode(_InArea, AssetNode):
    kind: ClassVar[str] = "node"
    id: relay.NodeID[str]
    name: str | None
    lat: float
    lon: float
    elevation_m: float
    status: str
    pressure_level_code: strawberry.Private[str]
    node_kind: str = strawberry.field(name="nodeKind")

    @strawberry.field
    def pressure_level(self, info: Info[Context, Any]) -> PressureLevel | None:
        return _level(info, self.pressure_level_code)


def _node(info: Info[Context, Any], node_id: str | None) -> Any:
    return _one(info, "node", NetworkNode, node_id)


@strawberry.type
class _Link(_InArea):
    from_node_id: strawberry.Private[str]
    to_node_id: strawberry.Private[str]
    pressure_level_code: strawberry.Private[str]

    @strawberry.field
    def from_node(self, info: Info[Context, Any]) -> NetworkNode | None:
        return _node(info, self.from_node_id)

    @strawberry.field
    def to_node(self, info: Info[Context, Any]) -> NetworkNode | None:
        return _node(info, self.to_node_id)

    @strawberry.field
    def pressure_level(self, info: Info[Context, Any]) -> PressureLevel | None:
        return _level(info, self.pressure_level_code)


@strawberry.type(description="A pipe section between two nodes of one pressure level.")
class Pipe(_Link, AssetNode):
    kind: ClassVar[str] = "pipe"
    id: relay.NodeID[str]
    name: str | None
    length_m: float
    inner_diameter_m: float
    material: str
    roughness_m: float
    year_laid: int | None
    status: str
    vertices: strawberry.Private[list[list[float]] | None]

    @strawberry.field(description="Inner diameter in millimetres.")
    def inner_diameter_mm(self) -> float:
        return self.inner_diameter_m * 1000.0


@strawberry.type(description="A shut-off valve between two nodes of one pressure level.")
class Valve(_Link, AssetNode):
    kind: ClassVar[str] = "valve"
    id: relay.NodeID[str]
    name: str | None
    diameter_m: float | None
    normal_state: str
    current_state: str
    remotely_operable: bool
    lat: float
    lon: float
    status: str


@strawberry.type(description="A transmission link without its own table (GasLib).")
class NetworkLink(_Link, AssetNode):
    kind: ClassVar[str] = "link"
    id: relay.NodeID[str]
    link_kind: str = strawberry.field(name="linkKind")
    params: JSON | None
    status: str


@strawberry.type(description="A pressure-reducing station (GRS, GRP, ShRP).")
class Station(_InArea, AssetNode):
    kind: ClassVar[str] = "station"
    id: relay.NodeID[str]
    name: str
    station_kind: str = strawberry.field(name="stationKind")
    outlet_setpoint_pa_gauge: float
    capacity_m3h_std: float | None
    lat: float
    lon: float
    status: str
    inlet_node_id: strawberry.Private[str]
    outlet_node_id: strawberry.Private[str]
    inlet_level: strawberry.Private[str]
    outlet_level: strawberry.Private[str]

    @strawberry.field
    def inlet_node(self, info: Info[Context, Any]) -> NetworkNode | None:
        return _node(info, self.inlet_node_id)

    @strawberry.field
    def outlet_node(self, info: Info[Context, Any]) -> NetworkNode | None:
        return _node(info, self.outlet_node_id)

    @strawberry.field
    def inlet_pressure_level(self, info: Info[Context, Any]) -> PressureLevel | None:
        return _level(info, self.inlet_level)

    @strawberry.field
    def outlet_pressure_level(self, info: Info[Context, Any]) -> PressureLevel | None:
        return _level(info, self.outlet_level)


@strawberry.type(description="A cathodic-protection station (rectifier).")
class SkzStation(_InArea, AssetNode):
    kind: ClassVar[str] = "skz"
    id: relay.NodeID[str]
    name: str
    lat: float
    lon: float
    rated_voltage_v: float
    rated_current_a: float
    status: str

    @strawberry.field(description="Steel pipes this station protects.")
    async def protected_pipes(self, info: Info[Context, Any]) -> list[Pipe]:
        from erp import views  # local: read model helper

        async with info.context.services.db() as s:
            ids = (await views.skz_pipe_ids(s, [self.id]))[self.id]
        rows = await info.context.loaders.asset("pipe").load_many(ids)
        return [from_row(Pipe, r) for r in rows if r is not None]


@strawberry.type(description="A consumer's delivery point on a node.")
class ServicePoint(_InArea, AssetNode):
    kind: ClassVar[str] = "service_point"
    id: relay.NodeID[str]
    name: str | None
    category: str
    critical_kind: str | None
    address: str | None
    lat: float
    lon: float
    peak_load_m3h_std: float
    annual_volume_m3_std: float
    min_pressure_pa_gauge: float | None
    status: str
    node_id: strawberry.Private[str]

    @strawberry.field
    def node(self, info: Info[Context, Any]) -> NetworkNode | None:
        return _node(info, self.node_id)


@strawberry.type(description="A meter: residential, industrial corrector or internal.")
class Meter(_InArea, AssetNode):
    kind: ClassVar[str] = "meter"
    id: relay.NodeID[str]
    serial: str
    model: str
    meter_kind: str = strawberry.field(name="meterKind")
    verification_due: dt.date | None
    status: str
    service_point_id: strawberry.Private[str | None]
    station_id: strawberry.Private[str | None]

    @strawberry.field
    def service_point(self, info: Info[Context, Any]) -> ServicePoint | None:
        return _one(info, "service_point", ServicePoint, self.service_point_id)

    @strawberry.field
    def station(self, info: Info[Context, Any]) -> Station | None:
        return _one(info, "station", Station, self.station_id)


@strawberry.type(description="An item in a station's equipment hierarchy.")
class Equipment(_InArea, AssetNode):
    kind: ClassVar[str] = "equipment"
    id: relay.NodeID[str]
    name: str
    equipment_kind: str = strawberry.field(name="equipmentKind")
    model: str | None
    serial: str | None
    status: str
    station_id: strawberry.Private[str]
    parent_id: strawberry.Private[str | None]

    @strawberry.field
    def station(self, info: Info[Context, Any]) -> Station | None:
        return _one(info, "station", Station, self.station_id)

    @strawberry.field
    def parent(self, info: Info[Context, Any]) -> Equipment | None:
        return _one(info, "equipment", Equipment, self.parent_id)


@strawberry.type(description="A user account (no secrets).")
class User:
    id: int
    username: str
    full_name: str | None
    role: str
    all_areas: bool
    active: bool
    area_ids: list[str]


