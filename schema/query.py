"""Root query: registry lists (cursor pages with filters), node(id), summary, topology, audit."""

import datetime as dt
from typing import Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from erp import views
from schema.context import Context
from schema.permissions import Can
from schema.types import assets as t
from schema.types import inputs as i
from schema.types import tags as tg
from schema.types.connection import Connection, Edge, decode_cursor, encode_cursor
from schema.types.report import (
    AuditRecord,
    AuditRecordFilter,
    GroupSummary,
    NetworkSummary,
    TopologyComponent,
    TopologyReport,
)

__all__ = ["Query"]

READ = [Can("registry.read")]
_FILTER_RENAMES = {"node_kind": "kind", "link_kind": "kind", "station_kind": "kind",
                   "meter_kind": "kind", "equipment_kind": "kind"}


def _wants_total(info: Info[Context, Any]) -> bool:
    return any(getattr(s, "name", None) == "totalCount"
               for s in info.selected_fields[0].selections)


def _filters(f: Any) -> tuple[dict[str, Any], views.BBox | None]:
    if f is None:
        return {}, None
    values = {_FILTER_RENAMES.get(k, k): v for k, v in vars(f).items() if k != "bbox"}
    b = f.bbox
    return values, (views.BBox(b.min_lat, b.min_lon, b.max_lat, b.max_lon) if b else None)


def _page_size(info: Info[Context, Any], first: int) -> int:
    limit = info.context.services.max_page_size
    if not 0 < first <= limit:
        raise ValueError(f"first must be between 1 and {limit}")
    return first


# Nested object field → (foreign key attribute, kind it points to).
_REFERENCES = {"fromNode": ("from_node_id", "node"), "toNode": ("to_node_id", "node"),
               "inletNode": ("inlet_node_id", "node"), "outletNode": ("outlet_node_id", "node"),
               "node": ("node_id", "node"), "area": ("area_id", "area"),
               "station": ("station_id", "station"),
               "servicePoint": ("service_point_id", "service_point"),
               "parent": ("parent_id", "equipment")}
_LEVEL_FIELDS = {"pressureLevel", "inletPressureLevel", "outletPressureLevel"}


def _selected_under_node(info: Info[Context, Any]) -> tuple[set[str], set[str]]:
    """Field names selected directly on each page item, and at any depth below it."""
    direct: set[str] = set()
    anywhere: set[str] = set()

    def walk(selections: Any, depth: int) -> None:
        for sel in selections:
            name = getattr(sel, "name", None)
            if name is not None:
                anywhere.add(name)
                if depth == 0:
                    direct.add(name)
            walk(getattr(sel, "selections", ()), depth + 1 if name is not None else depth)

    for edges in info.selected_fields[0].selections:
        if getattr(edges, "name", None) == "edges":
            for node in edges.selections:
                if getattr(node, "name", None) == "node":
                    walk(node.selections, 0)
    return direct, anywhere


async def _prefetch(info: Info[Context, Any], rows: Any) -> None:
    """Load what the selection will ask of these rows in one query per kind, up front, so the
    nested fields resolve synchronously."""
    if not rows:
        return
    loaders = info.context.loaders
    direct, anywhere = _selected_under_node(info)
    wanted: dict[str, set[str]] = {}
    for field in direct & _REFERENCES.keys():
        attr, kind = _REFERENCES[field]
        if hasattr(rows[0], attr):
            wanted.setdefault(kind, set()).update(
                v for r in rows if (v := getattr(r, attr)) is not None)
    for kind, ids in wanted.items():
        await loaders.asset(kind).load_many(sorted(ids))
    if anywhere & _LEVEL_FIELDS:
        await loaders.prefetch_levels()


async def _list(info: Info[Context, Any], kind: str, cls: type[Any], first: int,
                after: str | None, flt: Any) -> Connection[Any]:
    values, bbox = _filters(flt)
    ctx = info.context
    async with ctx.services.db() as s:
        page = await views.page(s, kind, filters=values, areas=ctx.areas(),
                                first=_page_size(info, first),
                                after=decode_cursor(after) if after else None, bbox=bbox,
                                with_total=_wants_total(info))
    for row in page.rows:  # nested lookups of these ids cost nothing
        ctx.loaders.prime(kind, row)
    await _prefetch(info, page.rows)
    edges = [Edge(cursor=encode_cursor(r.id), node=t.from_row(cls, r)) for r in page.rows]
    return Connection(edges=edges, total_count=page.total_count, page_info=relay.PageInfo(
        has_next_page=page.has_next, has_previous_page=after is not None,
        start_cursor=edges[0].cursor if edges else None,
        end_cursor=edges[-1].cursor if edges else None))


@strawberry.type
class Query:
    @strawberry.field(permission_classes=READ, description="Any registry asset by global id.")
    async def node(self, info: Info[Context, Any], id: relay.GlobalID) -> relay.Node | None:
        # A plain resolver rather than relay.node(): that one mutates the field when a schema
        # is built, so a second schema in the same process (tests, SDL export) would break.
        try:
            return await id.resolve_node(info, required=False)  # type: ignore[no-any-return]
        except (KeyError, ValueError):
            return None

    @strawberry.field(permission_classes=[Can("self.read")], description="The signed-in user.")
    async def me(self, info: Info[Context, Any]) -> t.User | None:
        p = info.context.principal
        assert p is not None  # guaranteed by the permission
        return t.User(id=p.user_id, username=p.username, full_name=None, role=p.role,
                      all_areas=p.areas is None, active=True, area_ids=sorted(p.areas or ()))

    @strawberry.field(permission_classes=READ, description="Districts in your scope.")
    async def areas(self, info: Info[Context, Any]) -> list[t.Area]:
        ctx = info.context
        async with ctx.services.db() as s:
            page = await views.page(s, "area", filters={}, areas=None, first=10_000)
        scope = ctx.areas()
        return [t.from_row(t.Area, r) for r in page.rows if scope is None or r.id in scope]

    @strawberry.field(permission_classes=READ)
    async def pressure_levels(self, info: Info[Context, Any]) -> list[t.PressureLevel]:
        async with info.context.services.db() as s:
            levels = await views.load_levels(s)
        return [t.PressureLevel(code=lv.code, name=lv.name, min_pa_gauge=lv.min_pa_gauge,
                                max_pa_gauge=lv.max_pa_gauge) for lv in levels.values()]

    @strawberry.field(permission_classes=READ)
    async def nodes(self, info: Info[Context, Any], first: int = 50, after: str | None = None,
                    filter: i.NodeFilter | None = None) -> Connection[t.NetworkNode]:
        return await _list(info, "node", t.NetworkNode, first, after, filter)

    @strawberry.field(permission_classes=READ)
    async def pipes(self, info: Info[Context, Any], first: int = 50, after: str | None = None,
                    filter: i.PipeFilter | None = None) -> Connection[t.Pipe]:
        return await _list(info, "pipe", t.Pipe, first, after, filter)

    @strawberry.field(permission_classes=READ)
    async def stations(self, info: Info[Context, Any], first: int = 50, after: str | None = None,
                       filter: i.StationFilter | None = None) -> Connection[t.Station]:
        return await _list(info, "station", t.Station, first, after, filter)

    @strawberry.field(permission_classes=READ)
    async def valves(self, info: Info[Context, Any], first: int = 50, after: str | None = None,
                     filter: i.ValveFilter | None = None) -> Connection[t.Valve]:
        return await _list(info, "valve", t.Valve, first, after, filter)

    @strawberry.field(permission_classes=READ)
    async def skz_stations(self, info: Info[Context, Any], first: int = 50,
                           after: str | None = None,
                           filter: i.AssetFilter | None = None) -> Connection[t.SkzStation]:
        return await _list(info, "skz", t.SkzStation, first, after, filter)

    @strawberry.field(permission_classes=READ)
    async def network_links(self, info: Info[Context, Any], first: int = 50,
                            after: str | None = None,
                            filter: i.LinkFilter | None = None) -> Connection[t.NetworkLink]:
        return await _list(info, "link", t.NetworkLink, first, after, filter)

    @strawberry.field(permission_classes=READ)
    async def service_points(self, info: Info[Context, Any], first: int = 50,
                             after: str | None = None, filter: i.ServicePointFilter | None = None
                             ) -> Connection[t.ServicePoint]:
        return await _list(info, "service_point", t.ServicePoint, first, after, filter)

    @strawberry.field(permission_classes=READ)
    async def meters(self, info: Info[Context, Any], first: int = 50, after: str | None = None,
                     filter: i.MeterFilter | None = None) -> Connection[t.Meter]:
        return await _list(info, "meter", t.Meter, first, after, filter)

    @strawberry.field(permission_classes=READ)
    async def equipment(self, info: Info[Context, Any], first: int = 50,
                        after: str | None = None,
                        filter: i.EquipmentFilter | None = None) -> Connection[t.Equipment]:
        return await _list(info, "equipment", t.Equipment, first, after, filter)

    @strawberry.field(permission_classes=READ,
                      description="Counts and pipe length of the in-service network in scope.")
    async def network_summary(self, info: Info[Context, Any],
                              area_id: str | None = None) -> NetworkSummary:
        async with info.context.services.db() as s:
            r = await views.network_summary(s, info.context.areas(), area_id)
        return NetworkSummary(
            nodes=r.nodes, pipes=r.pipes, stations=r.stations, valves=r.valves,
            skz_stations=r.skz_stations, service_points=r.service_points, meters=r.meters,
            total_pipe_length_km=r.total_pipe_length_km,
            by_pressure_level=[GroupSummary(key=g.key, pipes=g.pipes, length_km=g.length_km)
                               for g in r.by_pressure_level],
            by_material=[GroupSummary(key=g.key, pipes=g.pipes, length_km=g.length_km)
                         for g in r.by_material])

    @strawberry.field(permission_classes=READ,
                      description="Connected parts of the whole network; closed valves cut it.")
    async def network_topology_report(self, info: Info[Context, Any]) -> TopologyReport:
        async with info.context.services.db() as s:
            r = await views.topology(s)
        comps = [TopologyComponent(node_count=c.node_count, sample_node_ids=list(c.sample_node_ids),
                                   has_source=c.has_source) for c in r.components]
        return TopologyReport(component_count=len(comps),
                              disconnected_parts=[c for c in comps if not c.has_source],
                              components=comps[:50])

    @strawberry.field(permission_classes=[Can("audit.read")],
                      description="The audit trail, newest first.")
    async def audit_log(self, info: Info[Context, Any], first: int = 50,
                        after: str | None = None,
                        filter: AuditRecordFilter | None = None) -> Connection[AuditRecord]:
        f = filter or AuditRecordFilter()
        async with info.context.services.db() as s:
            page = await views.audit_page(
                s, first=_page_size(info, first),
                before_seq=int(decode_cursor(after)) if after else None, actor=f.actor,
                operation_prefix=f.operation_prefix, outcome=f.outcome, target_id=f.target_id,
                since=f.since, until=f.until)
        edges = [Edge(cursor=encode_cursor(r.seq), node=AuditRecord.from_row(r))
                 for r in page.rows]
        return Connection(edges=edges, total_count=None, page_info=relay.PageInfo(
            has_next_page=page.has_next, has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None))

    @strawberry.field(permission_classes=[Can("telemetry.read")],
                      description="One tag with its latest value (null if unknown or not yours).")
    async def tag(self, info: Info[Context, Any], path: str) -> tg.Tag | None:
        store = info.context.services.tags
        if store is None or path not in store.known:
            return None
        d = store.known[path]
        return tg.Tag.of(d, store.get(path)) if tg.matches(d, None, info.context.areas()) else None

    @strawberry.field(permission_classes=[Can("telemetry.read")],
                      description="Tags with their latest values, by path.")
    async def tags(self, info: Info[Context, Any], filter: tg.TagFilter | None = None,
                   first: int = 500) -> list[tg.Tag]:
        store = info.context.services.tags
        if store is None:
            return []
        scope = info.context.areas()
        found = [d for p, d in sorted(store.known.items()) if tg.matches(d, filter, scope)]
        return [tg.Tag.of(d, store.get(d.path)) for d in found[: _page_size(info, first)]]

    @strawberry.field(permission_classes=[Can("telemetry.read")],
                      description="Stored values of tags: raw (no bucketS) or downsampled into "
                                  "buckets of bucketS seconds with an aggregate "
                                  "(min, max, avg, last, count).")
    async def history(self, info: Info[Context, Any], paths: list[str], start: dt.datetime,
                      end: dt.datetime, bucket_s: int | None = None, aggregate: str = "avg",
                      max_points: int = 10_000) -> list[tg.HistorySeries]:
        svc = info.context.services
        if svc.historian is None or svc.tags is None:
            return []
        if len(paths) > 100 or not 0 < max_points <= 100_000:
            raise ValueError("at most 100 paths and 100,000 points per series")
        if start.tzinfo is None or end.tzinfo is None or end <= start:
            raise ValueError("start and end must carry a zone, and end must be after start")
        scope = info.context.areas()
        allowed = [p for p in paths if p in svc.tags.known and tg.matches(svc.tags.known[p],
                                                                           None, scope)]
        out = []
        if bucket_s is None:
            for p in allowed:
                pts = await svc.historian.raw(p, start, end)
                out.append(tg.HistorySeries(
                    path=p, bucket_s=None, aggregate=None, truncated=len(pts) > max_points,
                    points=[tg.HistoryPoint(ts=x.ts, value=x.value, quality=x.quality)
                            for x in pts[:max_points]]))
            return out
        if aggregate not in ("min", "max", "avg", "last", "count"):
            raise ValueError("aggregate is one of min, max, avg, last, count")
        series = await svc.historian.buckets(allowed, start, end, bucket_s, (aggregate,))
        for sr in series.values():
            column = getattr(sr, aggregate)
            out.append(tg.HistorySeries(
                path=sr.tag, bucket_s=bucket_s, aggregate=aggregate,
                truncated=len(sr.start) > max_points,
                points=[tg.HistoryPoint(ts=t, value=None if v is None else float(v))
                        for t, v in list(zip(sr.start, column, strict=True))[:max_points]]))
        return out

    @strawberry.field(permission_classes=[Can("users.read")])
    async def users(self, info: Info[Context, Any]) -> list[t.User]:
        async with info.context.services.db() as s:
            rows = await views.users(s)
        return [t.User(id=u.id, username=u.username, full_name=u.full_name, role=u.role,
                       all_areas=u.all_areas, active=u.active,
                       area_ids=sorted(a.id for a in u.areas)) for u in rows]
