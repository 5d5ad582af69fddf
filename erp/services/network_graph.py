"""The registry as the control side needs it: commandable assets and the network's connectivity.

Plain data out (dicts and tuples): `erp` imports no other project package, so the server turns
these into control targets and the graph impact predictor.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm

__all__ = ["commandable_assets", "connectivity"]

_LIVE = "retired"


async def commandable_assets(session: AsyncSession) -> list[dict[str, Any]]:
    """Remotely operable valves, SKZ stations and regulating stations in service."""
    levels = {lv.code: (lv.min_pa_gauge, lv.max_pa_gauge)
              for lv in (await session.execute(select(orm.PressureLevel))).scalars()}
    out: list[dict[str, Any]] = []
    for v in (await session.execute(select(orm.Valve).where(
            orm.Valve.status != _LIVE, orm.Valve.remotely_operable.is_(True)))).scalars():
        out.append({"kind": "valve", "asset_id": v.id, "area_id": v.area_id,
                    "remotely_operable": True})
    for k in (await session.execute(select(orm.SkzStation).where(
            orm.SkzStation.status != _LIVE))).scalars():
        out.append({"kind": "skz", "asset_id": k.id, "area_id": k.area_id,
                    "rated_current_a": k.rated_current_a, "rated_voltage_v": k.rated_voltage_v})
    for s in (await session.execute(select(orm.Station).where(orm.Station.status != _LIVE))
              ).scalars():
        out.append({"kind": "station", "asset_id": s.id, "area_id": s.area_id,
                    "setpoint_range_pa": levels.get(s.outlet_level)})
    return out


async def connectivity(session: AsyncSession) -> dict[str, Any]:
    """Edges (pipes, valves by their current state, stations and other links), node kinds and
    service points with their critical kind."""
    edges: list[tuple[str, str, str, bool]] = []
    for p in (await session.execute(select(orm.Pipe).where(orm.Pipe.status != _LIVE))).scalars():
        edges.append((p.id, p.from_node_id, p.to_node_id, True))
    for v in (await session.execute(select(orm.Valve).where(orm.Valve.status != _LIVE))).scalars():
        edges.append((v.id, v.from_node_id, v.to_node_id, v.current_state != "closed"))
    for s in (await session.execute(select(orm.Station).where(orm.Station.status != _LIVE))
              ).scalars():
        edges.append((s.id, s.inlet_node_id, s.outlet_node_id, True))
    for link in (await session.execute(select(orm.NetworkLink).where(
            orm.NetworkLink.status != _LIVE))).scalars():
        edges.append((link.id, link.from_node_id, link.to_node_id, True))
    node_kinds = {n: k for n, k in (await session.execute(select(
        orm.NetworkNode.id, orm.NetworkNode.kind))).all()}
    points = [(sp, node, crit) for sp, node, crit in (await session.execute(select(
        orm.ServicePoint.id, orm.ServicePoint.node_id, orm.ServicePoint.critical_kind).where(
        orm.ServicePoint.status != _LIVE))).all()]
    return {"edges": edges, "node_kinds": node_kinds, "service_points": points}
