"""Read models of the registry: filtered keyset pages, batch loads, summary and topology.

Queries only; every write goes through `erp.services`. Area scoping is applied here: `areas`
None means every area, otherwise only assets of those areas are visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm
from erp.domain import rules
from erp.services.registry import ASSET_MODELS

__all__ = [
    "BBox", "LevelSummary", "NetworkSummary", "Page", "audit_page", "load_by_ids",
    "network_summary", "page", "registry_version", "topology", "users",
]

_SPATIAL = {"node", "station", "valve", "skz", "service_point"}


@dataclass(frozen=True, slots=True)
class BBox:
    """A WGS84 bounding box, degrees."""

    min_lat: float
    min_lon: float
    max_lat: float
    max_lon: float


@dataclass(frozen=True, slots=True)
class Page:
    """One page of rows in id order, whether more follow, and the total when asked for."""

    rows: Sequence[Any]
    has_next: bool
    total_count: int | None


def _scoped(stmt: Select[Any], model: Any, areas: frozenset[str] | None) -> Select[Any]:
    if areas is not None and hasattr(model, "area_id"):
        stmt = stmt.where(model.area_id.in_(sorted(areas)))
    return stmt


def _filtered(kind: str, filters: Mapping[str, Any], areas: frozenset[str] | None,
              bbox: BBox | None) -> tuple[Any, list[Any]]:
    model = ASSET_MODELS[kind]
    conds: list[Any] = []
    for name, value in filters.items():
        if value is None:
            continue
        if name not in ("ids",) and not hasattr(model, name):
            raise ValueError(f"{kind} cannot be filtered by {name!r}")
        if name == "ids":
            conds.append(model.id.in_(list(value)))  # type: ignore[attr-defined]
        elif name == "name_contains":
            conds.append(func.lower(model.name).contains(str(value).lower()))  # type: ignore[attr-defined]
        else:
            conds.append(getattr(model, name) == value)
    if bbox is not None and kind in _SPATIAL:
        conds += [model.lat >= bbox.min_lat, model.lat <= bbox.max_lat,  # type: ignore[attr-defined]
                  model.lon >= bbox.min_lon, model.lon <= bbox.max_lon]  # type: ignore[attr-defined]
    if areas is not None and hasattr(model, "area_id"):
        conds.append(model.area_id.in_(sorted(areas)))  # type: ignore[attr-defined]
    return model, conds


async def page(session: AsyncSession, kind: str, *, filters: Mapping[str, Any],
               areas: frozenset[str] | None, first: int, after: str | None = None,
               bbox: BBox | None = None, with_total: bool = False) -> Page:
    """Up to `first` assets of `kind` with id > `after`, filtered and scoped."""
    model, conds = _filtered(kind, filters, areas, bbox)
    key = model.id  # type: ignore[attr-defined]
    stmt = select(model).where(*conds)
    if after is not None:
        stmt = stmt.where(key > after)
    rows = (await session.execute(stmt.order_by(key).limit(first + 1))).scalars().all()
    total = None
    if with_total:
        total = (await session.execute(select(func.count()).select_from(model).where(*conds))
                 ).scalar_one()
    return Page(rows[:first], len(rows) > first, total)


async def load_by_ids(session: AsyncSession, kind: str, ids: Iterable[str],
                      areas: frozenset[str] | None = None) -> dict[str, Any]:
    """Assets by id in one query (for DataLoaders); ids outside scope are absent."""
    model = ASSET_MODELS[kind]
    wanted = list(set(ids))
    stmt = _scoped(select(model).where(model.id.in_(wanted)), model, areas)  # type: ignore[attr-defined]
    return {r.id: r for r in (await session.execute(stmt)).scalars()}


async def load_levels(session: AsyncSession) -> dict[str, orm.PressureLevel]:
    """Every pressure level by code."""
    return {r.code: r for r in (await session.execute(
        select(orm.PressureLevel).order_by(orm.PressureLevel.rank))).scalars()}


async def skz_pipe_ids(session: AsyncSession, skz_ids: Sequence[str]) -> dict[str, list[str]]:
    """Protected pipe ids of each SKZ station (one query)."""
    t = orm.skz_protected_pipes
    out: dict[str, list[str]] = {s: [] for s in skz_ids}
    for s, p in await session.execute(select(t.c.skz_id, t.c.pipe_id).where(
            t.c.skz_id.in_(list(skz_ids))).order_by(t.c.pipe_id)):
        out[s].append(p)
    return out


@dataclass(frozen=True, slots=True)
class LevelSummary:
    """Pipe count and length for one group (pressure level or material)."""

    key: str
    pipes: int
    length_km: float


@dataclass(frozen=True, slots=True)
class NetworkSummary:
    """Asset counts and pipe length of the (visible) network, in-service assets only."""

    nodes: int
    pipes: int
    stations: int
    valves: int
    skz_stations: int
    service_points: int
    meters: int
    total_pipe_length_km: float
    by_pressure_level: tuple[LevelSummary, ...]
    by_material: tuple[LevelSummary, ...]


async def network_summary(session: AsyncSession, areas: frozenset[str] | None,
                          area_id: str | None = None) -> NetworkSummary:
    """Counts and lengths, one small query per table."""

    async def count(kind: str) -> int:
        model = ASSET_MODELS[kind]
        stmt = _scoped(select(func.count()).select_from(model).where(
            model.status != "retired"), model, areas)  # type: ignore[attr-defined]
        if area_id is not None:
            stmt = stmt.where(model.area_id == area_id)  # type: ignore[attr-defined]
        return int((await session.execute(stmt)).scalar_one())

    async def grouped(col: Any) -> tuple[LevelSummary, ...]:
        p = orm.Pipe
        stmt = _scoped(select(col, func.count(), func.coalesce(func.sum(p.length_m), 0.0))
                       .where(p.status != "retired").group_by(col).order_by(col), p, areas)
        if area_id is not None:
            stmt = stmt.where(p.area_id == area_id)
        return tuple(LevelSummary(k, int(n), round(float(length) / 1000.0, 6))
                     for k, n, length in await session.execute(stmt))

    by_level = await grouped(orm.Pipe.pressure_level)
    return NetworkSummary(
        nodes=await count("node"), pipes=sum(g.pipes for g in by_level),
        stations=await count("station"), valves=await count("valve"),
        skz_stations=await count("skz"), service_points=await count("service_point"),
        meters=await count("meter"),
        total_pipe_length_km=round(sum(g.length_km for g in by_level), 6),
        by_pressure_level=by_level, by_material=await grouped(orm.Pipe.material),
    )


async def topology(session: AsyncSession) -> rules.TopologyReport:
    """Connected parts of the in-service network (closed valves cut it)."""
    live = "retired"
    nodes = [r[0] for r in await session.execute(
        select(orm.NetworkNode.id).where(orm.NetworkNode.status != live))]
    sources = [r[0] for r in await session.execute(select(orm.NetworkNode.id).where(
        orm.NetworkNode.status != live, orm.NetworkNode.kind == "source"))]
    edges: list[tuple[str, str]] = []
    for model, a, b, extra in (
        (orm.Pipe, orm.Pipe.from_node_id, orm.Pipe.to_node_id, ()),
        (orm.NetworkLink, orm.NetworkLink.from_node_id, orm.NetworkLink.to_node_id, ()),
        (orm.Valve, orm.Valve.from_node_id, orm.Valve.to_node_id,
         (orm.Valve.current_state != "closed",)),
        (orm.Station, orm.Station.inlet_node_id, orm.Station.outlet_node_id, ()),
    ):
        edges.extend((x, y) for x, y in await session.execute(
            select(a, b).where(model.status != live, *extra)))
    return rules.topology_report(nodes, edges, sources)


async def audit_page(session: AsyncSession, *, first: int, before_seq: int | None = None,
                     actor: str | None = None, operation_prefix: str | None = None,
                     outcome: str | None = None, target_id: str | None = None,
                     since: Any = None, until: Any = None) -> Page:
    """Audit records, newest first, filtered; keyset on `seq`."""
    a = orm.AuditRecord
    conds: list[Any] = []
    if before_seq is not None:
        conds.append(a.seq < before_seq)
    if actor is not None:
        conds.append(a.actor == actor)
    if operation_prefix is not None:
        conds.append(a.operation.startswith(operation_prefix))
    if outcome is not None:
        conds.append(a.outcome == outcome)
    if since is not None:
        conds.append(a.ts >= since)
    if until is not None:
        conds.append(a.ts < until)
    stmt = select(a).where(*conds).order_by(a.seq.desc())
    if target_id is not None:
        # JSON containment differs per engine; filter the (small) page in Python instead.
        rows = [r for r in (await session.execute(stmt)).scalars() if target_id in r.target_ids]
        return Page(rows[:first], len(rows) > first, None)
    rows = (await session.execute(stmt.limit(first + 1))).scalars().all()
    return Page(rows[:first], len(rows) > first, None)


async def users(session: AsyncSession) -> Sequence[orm.User]:
    """Every user, by name."""
    return (await session.execute(select(orm.User).order_by(orm.User.username))).scalars().all()


async def registry_version(session: AsyncSession) -> int:
    """The registry's change counter (see `orm.RegistryVersion`)."""
    return int((await session.execute(select(orm.RegistryVersion.version).where(
        orm.RegistryVersion.id == 1))).scalar_one())
