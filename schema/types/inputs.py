"""Input types: create / update inputs and list filters of registry assets.

Field names match the registry's (SI units in the name); `xxxKind` fields map to the asset's
`kind`. Update inputs are partial: a field left out keeps its value.
"""

from __future__ import annotations

import datetime as dt

import strawberry
from strawberry import UNSET

__all__ = [
    "AreaCreateInput", "AreaUpdateInput", "BBoxInput", "EquipmentCreateInput",
    "EquipmentUpdateInput", "MeterCreateInput", "MeterUpdateInput", "NodeCreateInput",
    "NodeUpdateInput", "PipeCreateInput", "PipeUpdateInput", "ServicePointCreateInput",
    "ServicePointUpdateInput", "SkzCreateInput", "SkzUpdateInput", "StationCreateInput",
    "StationUpdateInput", "ValveCreateInput", "ValveUpdateInput",
    "AssetFilter", "PipeFilter", "NodeFilter", "StationFilter", "ValveFilter",
    "ServicePointFilter", "MeterFilter", "EquipmentFilter", "LinkFilter",
]


@strawberry.input(description="WGS84 bounding box in degrees.")
class BBoxInput:
    min_lat: float
    min_lon: float
    max_lat: float
    max_lon: float


@strawberry.input
class AreaCreateInput:
    id: str
    name: str


@strawberry.input
class AreaUpdateInput:
    name: str | None = UNSET


@strawberry.input
class NodeCreateInput:
    id: str
    lat: float
    lon: float
    pressure_level: str
    elevation_m: float = 0.0
    name: str | None = None
    node_kind: str = "junction"
    area_id: str | None = None
    status: str = "in_service"


@strawberry.input
class NodeUpdateInput:
    lat: float | None = UNSET
    lon: float | None = UNSET
    pressure_level: str | None = UNSET
    elevation_m: float | None = UNSET
    name: str | None = UNSET
    node_kind: str | None = UNSET
    area_id: str | None = UNSET
    status: str | None = UNSET


@strawberry.input
class PipeCreateInput:
    id: str
    from_node_id: str
    to_node_id: str
    length_m: float
    inner_diameter_m: float
    material: str
    roughness_m: float
    pressure_level: str
    year_laid: int | None = None
    name: str | None = None
    area_id: str | None = None
    status: str = "in_service"


@strawberry.input
class PipeUpdateInput:
    from_node_id: str | None = UNSET
    to_node_id: str | None = UNSET
    length_m: float | None = UNSET
    inner_diameter_m: float | None = UNSET
    material: str | None = UNSET
    roughness_m: float | None = UNSET
    pressure_level: str | None = UNSET
    year_laid: int | None = UNSET
    name: str | None = UNSET
    area_id: str | None = UNSET
    status: str | None = UNSET


@strawberry.input
class StationCreateInput:
    id: str
    name: str
    station_kind: str
    inlet_node_id: str
    outlet_node_id: str
    inlet_level: str
    outlet_level: str
    outlet_setpoint_pa_gauge: float
    lat: float
    lon: float
    capacity_m3h_std: float | None = None
    area_id: str | None = None
    status: str = "in_service"


@strawberry.input
class StationUpdateInput:
    name: str | None = UNSET
    outlet_setpoint_pa_gauge: float | None = UNSET
    capacity_m3h_std: float | None = UNSET
    lat: float | None = UNSET
    lon: float | None = UNSET
    area_id: str | None = UNSET
    status: str | None = UNSET


@strawberry.input
class ValveCreateInput:
    id: str
    from_node_id: str
    to_node_id: str
    pressure_level: str
    lat: float
    lon: float
    diameter_m: float | None = None
    normal_state: str = "open"
    current_state: str = "open"
    remotely_operable: bool = False
    name: str | None = None
    area_id: str | None = None
    status: str = "in_service"


@strawberry.input
class ValveUpdateInput:
    diameter_m: float | None = UNSET
    normal_state: str | None = UNSET
    remotely_operable: bool | None = UNSET
    name: str | None = UNSET
    lat: float | None = UNSET
    lon: float | None = UNSET
    area_id: str | None = UNSET
    status: str | None = UNSET


@strawberry.input
class SkzCreateInput:
    id: str
    name: str
    lat: float
    lon: float
    rated_voltage_v: float = 48.0
    rated_current_a: float = 25.0
    protected_pipe_ids: list[str] = strawberry.field(default_factory=list)
    area_id: str | None = None
    status: str = "in_service"


@strawberry.input
class SkzUpdateInput:
    name: str | None = UNSET
    lat: float | None = UNSET
    lon: float | None = UNSET
    rated_voltage_v: float | None = UNSET
    rated_current_a: float | None = UNSET
    protected_pipe_ids: list[str] | None = UNSET
    area_id: str | None = UNSET
    status: str | None = UNSET


@strawberry.input
class ServicePointCreateInput:
    id: str
    node_id: str
    category: str
    lat: float
    lon: float
    critical_kind: str | None = None
    name: str | None = None
    address: str | None = None
    peak_load_m3h_std: float = 0.0
    annual_volume_m3_std: float = 0.0
    min_pressure_pa_gauge: float | None = None
    area_id: str | None = None
    status: str = "in_service"


@strawberry.input
class ServicePointUpdateInput:
    node_id: str | None = UNSET
    category: str | None = UNSET
    critical_kind: str | None = UNSET
    name: str | None = UNSET
    address: str | None = UNSET
    lat: float | None = UNSET
    lon: float | None = UNSET
    peak_load_m3h_std: float | None = UNSET
    annual_volume_m3_std: float | None = UNSET
    min_pressure_pa_gauge: float | None = UNSET
    area_id: str | None = UNSET
    status: str | None = UNSET


@strawberry.input
class MeterCreateInput:
    id: str
    serial: str
    model: str
    meter_kind: str
    service_point_id: str | None = None
    station_id: str | None = None
    verification_due: dt.date | None = None
    area_id: str | None = None
    status: str = "in_service"


@strawberry.input
class MeterUpdateInput:
    serial: str | None = UNSET
    model: str | None = UNSET
    service_point_id: str | None = UNSET
    station_id: str | None = UNSET
    verification_due: dt.date | None = UNSET
    area_id: str | None = UNSET
    status: str | None = UNSET


@strawberry.input
class EquipmentCreateInput:
    id: str
    name: str
    equipment_kind: str
    station_id: str
    parent_id: str | None = None
    model: str | None = None
    serial: str | None = None
    area_id: str | None = None
    status: str = "in_service"


@strawberry.input
class EquipmentUpdateInput:
    name: str | None = UNSET
    parent_id: str | None = UNSET
    model: str | None = UNSET
    serial: str | None = UNSET
    area_id: str | None = UNSET
    status: str | None = UNSET


# --- filters (all optional, combined with AND) ---------------------------------------------


@strawberry.input(description="Filter common to every asset list.")
class AssetFilter:
    ids: list[str] | None = None
    area_id: str | None = None
    status: str | None = None
    name_contains: str | None = None
    bbox: BBoxInput | None = None


@strawberry.input
class NodeFilter(AssetFilter):
    pressure_level: str | None = None
    node_kind: str | None = None


@strawberry.input
class PipeFilter(AssetFilter):
    pressure_level: str | None = None
    material: str | None = None
    from_node_id: str | None = None
    to_node_id: str | None = None


@strawberry.input
class StationFilter(AssetFilter):
    station_kind: str | None = None


@strawberry.input
class ValveFilter(AssetFilter):
    pressure_level: str | None = None
    remotely_operable: bool | None = None
    current_state: str | None = None


@strawberry.input
class ServicePointFilter(AssetFilter):
    category: str | None = None
    node_id: str | None = None


@strawberry.input
class MeterFilter(AssetFilter):
    meter_kind: str | None = None
    service_point_id: str | None = None
    station_id: str | None = None


@strawberry.input
class EquipmentFilter(AssetFilter):
    equipment_kind: str | None = None
    station_id: str | None = None
    parent_id: str | None = None


@strawberry.input
class LinkFilter(AssetFilter):
    link_kind: str | None = None
