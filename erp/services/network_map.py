"""The network as drawn on a map: one compact read of every asset a wall display shows.

A wall or console page draws ~4,000 pipes at once. Paging through `pipes(first: 500)` with
nested end nodes would take eight round trips and send each node many times, so this read
returns flat records: every pipe's polyline (end nodes and drawn vertices) as one list of
numbers, and stations, valves and SKZ as points. Area scoping as in `erp.views`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm

__all__ = ["MapPipe", "MapPoint", "NetworkMap", "network_map"]

_DIGITS = 6  # ~0.1 m: more only makes the payload larger


@dataclass(frozen=True, slots=True)
class MapPipe:
    """A pipe's polyline: `path` is [lat0, lon0, lat1, lon1, …] from its from-node to its to-node."""

    id: str
    name: str | None
    area_id: str | None
    pressure_level: str
    from_node_id: str
    to_node_id: str
    inner_diameter_m: float
    path: list[float]


@dataclass(frozen=True, slots=True)
class MapPoint:
    """A station, valve or SKZ on the map."""

    kind: str
    id: str
    name: str | None
    area_id: str | None
    lat: float
    lon: float
    subtype: str | None = None  # station kind (grs, grp, shrp), valve state, …
    remotely_operable: bool = False


@dataclass(frozen=True, slots=True)
class NetworkMap:
    """Everything in service within the caller's areas, and the box around it."""

    pipes: Sequence[MapPipe]
    points: Sequence[MapPoint]
    bounds: tuple[float, float, float, float] | None  # min_lat, min_lon, max_lat, max_lon


def _in(model: type, areas: frozenset[str] | None, area: str | None) -> list[object]:
    conds: list[object] = [model.status != "retired"]  # type: ignore[attr-defined]
    if areas is not None:
        conds.append(model.area_id.in_(sorted(areas)))  # type: ignore[attr-defined]
    if area is not None:
        conds.append(model.area_id == area)  # type: ignore[attr-defined]
    return conds


async def network_map(session: AsyncSession, areas: frozenset[str] | None,
                      area: str | None = None) -> NetworkMap:
    """The map of the caller's areas (None = all), optionally only one area."""
    node_rows = (await session.execute(
        select(orm.NetworkNode.id, orm.NetworkNode.lat, orm.NetworkNode.lon))).all()
    where = {n.id: (round(n.lat, _DIGITS), round(n.lon, _DIGITS)) for n in node_rows}
    pipes: list[MapPipe] = []
    for p in (await session.scalars(
            select(orm.Pipe).where(*_in(orm.Pipe, areas, area)).order_by(orm.Pipe.id))):
        a, b = where.get(p.from_node_id), where.get(p.to_node_id)
        if a is None or b is None:
            continue  # a dangling reference is the topology report's business, not the map's
        path = [*a]
        for lon, lat in p.vertices or ():  # stored GeoJSON-style: [lon, lat]
            path += [round(lat, _DIGITS), round(lon, _DIGITS)]
        path += b
        pipes.append(MapPipe(p.id, p.name, p.area_id, p.pressure_level, p.from_node_id,
                             p.to_node_id, p.inner_diameter_m, path))
    points: list[MapPoint] = []
    for s in await session.scalars(select(orm.Station).where(*_in(orm.Station, areas, area))
                                   .order_by(orm.Station.id)):
        points.append(MapPoint("station", s.id, s.name, s.area_id, s.lat, s.lon, s.kind, True))
    for v in await session.scalars(select(orm.Valve).where(*_in(orm.Valve, areas, area))
                                   .order_by(orm.Valve.id)):
        points.append(MapPoint("valve", v.id, v.name, v.area_id, v.lat, v.lon, v.current_state,
                               v.remotely_operable))
    for k in await session.scalars(select(orm.SkzStation)
                                   .where(*_in(orm.SkzStation, areas, area))
                                   .order_by(orm.SkzStation.id)):
        points.append(MapPoint("skz", k.id, k.name, k.area_id, k.lat, k.lon, None, True))
    points = [q for q in points if q.lat is not None and q.lon is not None]  # not yet surveyed
    lats = [x for p in pipes for x in p.path[0::2]] + [q.lat for q in points]
    lons = [x for p in pipes for x in p.path[1::2]] + [q.lon for q in points]
    bounds = (min(lats), min(lons), max(lats), max(lons)) if lats else None
    return NetworkMap(pipes, points, bounds)
