"""Telemetry types: tags with their latest value and quality, and batched live updates."""

from __future__ import annotations

import datetime as dt
from typing import Any, NewType

import strawberry
from strawberry.scalars import JSON

from realtime.model import TagDef, TagValue
from realtime.store import TagState

__all__ = ["STATUS_CODE_SCALAR", "StationStatus", "StatusCode", "Tag", "TagFilter", "TagReading",
           "TagUpdateBatch", "reading"]

# An OPC UA status code is an unsigned 32-bit number and every Bad code has the top bit set, so
# GraphQL's Int (signed 32-bit) cannot carry one: a Bad sample made the field an error. The
# scalar serializes it as the plain number, as OPC UA's own JSON encoding does.
StatusCode = NewType("StatusCode", int)
STATUS_CODE_SCALAR = strawberry.scalar(
    name="StatusCode", serialize=int, parse_value=int,
    description="An OPC UA status code as an unsigned 32-bit number (0 = Good, "
                "0x4xxxxxxx Uncertain, 0x8xxxxxxx Bad), as in OPC UA's JSON encoding")


@strawberry.type(description="A value with its quality (OPC UA status code semantics).")
class TagReading:
    path: str
    value: JSON | None
    quality: str = strawberry.field(description="Status code name, e.g. GOOD, BAD_NOT_CONNECTED")
    quality_code: StatusCode
    good: bool
    source_ts: dt.datetime = strawberry.field(description="When the device measured it (UTC)")
    server_ts: dt.datetime = strawberry.field(description="When gasops received it (UTC)")


def reading(path: str, v: TagValue) -> TagReading:
    """The GraphQL view of a value."""
    return TagReading(path=path, value=v.value, quality=v.quality.name,
                      quality_code=StatusCode(int(v.quality)), good=v.quality.is_good,
                      source_ts=v.source_ts, server_ts=v.server_ts)


@strawberry.type(description="A telemetry tag of a registry asset.")
class Tag:
    path: str
    asset_id: str | None
    area_id: str | None
    unit: str
    description: str
    data_type: str
    writable: bool
    expected_period_s: float | None
    current: TagReading | None
    last_changed: dt.datetime | None

    @classmethod
    def of(cls, d: TagDef, state: TagState | None) -> Tag:
        """From a definition and the store's state."""
        return cls(path=d.path, asset_id=d.asset_id, area_id=d.area_id, unit=d.unit,
                   description=d.description, data_type=d.data_type, writable=d.writable,
                   expected_period_s=d.expected_period_s,
                   current=reading(d.path, state.value) if state else None,
                   last_changed=state.last_changed if state else None)


@strawberry.input(description="Tags to select; fields combine with AND.")
class TagFilter:
    paths: list[str] | None = None
    path_prefix: str | None = None
    asset_ids: list[str] | None = None
    area_id: str | None = None


@strawberry.type(description="Values that changed since the previous batch (coalesced).")
class TagUpdateBatch:
    updates: list[TagReading]
    resync: bool = strawberry.field(
        default=False, description="True when the feed restarted: treat as a full snapshot")


@strawberry.type(description="Communication state and key values of one station.")
class StationStatus:
    station_id: str
    area_id: str | None
    communicating: bool
    p_in: TagReading | None
    p_out: TagReading | None
    flow: TagReading | None
    door: TagReading | None


def matches(d: TagDef, f: TagFilter | None, scope: Any) -> bool:
    """Whether a definition passes a filter and the caller's area scope."""
    if scope is not None and d.area_id not in scope:
        return False
    if f is None:
        return True
    return ((f.paths is None or d.path in f.paths)
            and (f.path_prefix is None or d.path.startswith(f.path_prefix))
            and (f.asset_ids is None or d.asset_id in f.asset_ids)
            and (f.area_id is None or d.area_id == f.area_id))


@strawberry.type(description="One stored sample, or one bucket's aggregate (ts = bucket start).")
class HistoryPoint:
    ts: dt.datetime
    value: float | None
    quality: StatusCode | None = strawberry.field(
        default=None, description="The sample's status code; none for a bucket's aggregate")


@strawberry.type(description="The history of one tag over the asked range.")
class HistorySeries:
    path: str
    bucket_s: int | None
    aggregate: str | None
    points: list[HistoryPoint]
    truncated: bool = strawberry.field(description="More points exist than were returned")
