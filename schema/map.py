"""The map layer of the wall display and the console: `networkMap` and the tile sources.

Thin over `erp.services.network_map`: one read of every pipe's polyline and every station,
valve and SKZ in the caller's areas, plus where map backgrounds may come from. Live values are
not here: pages subscribe to `stationStatus`, `alarmEvents`, `networkStateUpdates` and
`crewPositions` and paint them onto this layer.
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types import Info

from erp.services.network_map import network_map
from schema.context import Context
from schema.permissions import Can

__all__ = ["MapQuery"]


@strawberry.type(description="A pipe as drawn: its polyline from its from-node to its to-node.")
class MapPipe:
    id: str
    name: str | None
    area_id: str | None
    pressure_level: str
    from_node_id: str
    to_node_id: str
    inner_diameter_m: float
    path: list[float] = strawberry.field(description="[lat0, lon0, lat1, lon1, …], WGS84 degrees")


@strawberry.type(description="A station, valve or SKZ on the map.")
class MapPoint:
    kind: str = strawberry.field(description="station, valve or skz")
    id: str
    name: str | None
    area_id: str | None
    lat: float
    lon: float
    subtype: str | None = strawberry.field(description="Station kind (grs, grp, shrp) or a "
                                                       "valve's recorded state")
    remotely_operable: bool


@strawberry.type(description="A map background the server knows of (besides none: schematic).")
class TileSource:
    name: str
    url_template: str = strawberry.field(description="XYZ template with {z}, {x} and {y}")


@strawberry.type(description="The network of your areas as a map layer.")
class NetworkMap:
    bounds: list[float] | None = strawberry.field(
        description="[minLat, minLon, maxLat, maxLon] around everything drawn")
    pipes: list[MapPipe]
    points: list[MapPoint]
    tile_sources: list[TileSource]


@strawberry.type
class MapQuery:
    @strawberry.field(permission_classes=[Can("registry.read")],
                      description="Every pipe, station, valve and SKZ of your areas (or one area) "
                                  "in one compact read, for drawing the network on a map.")
    async def network_map(self, info: Info[Context, Any], area: str | None = None) -> NetworkMap:
        svc = info.context.services
        async with svc.db() as s:
            m = await network_map(s, info.context.areas(), area)
        return NetworkMap(
            bounds=list(m.bounds) if m.bounds else None,
            pipes=[MapPipe(id=p.id, name=p.name, area_id=p.area_id, pressure_level=p.pressure_level,
                           from_node_id=p.from_node_id, to_node_id=p.to_node_id,
                           inner_diameter_m=p.inner_diameter_m, path=p.path) for p in m.pipes],
            points=[MapPoint(kind=q.kind, id=q.id, name=q.name, area_id=q.area_id, lat=q.lat,
                             lon=q.lon, subtype=q.subtype, remotely_operable=q.remotely_operable)
                    for q in m.points],
            tile_sources=[TileSource(name=n, url_template=u) for n, u in svc.map_tiles])
