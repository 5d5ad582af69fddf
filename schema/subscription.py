"""Root subscription: live tag values (coalesced), station status, registry changes."""

import asyncio
import datetime as dt
import time
from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from strawberry.types import Info

from realtime.model import TagValue
from realtime.pipeline import TAGS_TOPIC, decode_values
from schema.context import Context
from schema.mutation import REGISTRY_TOPIC, AssetChange
from schema.permissions import Can
from schema.types import tags as tg

__all__ = ["Subscription"]

MAX_RATE = 20.0  # messages per second per subscription, whatever the client asks


def _absorb(msg: Any, pending: dict[str, TagValue], wanted: set[str], store: Any) -> bool:
    """Fold one bus message into `pending`; True when it was a resync."""
    if msg.get("type") == "resync":  # the bus lost messages: resend the current state
        pending.update({p: s.value for p, s in store.snapshot(wanted).items()})
        return True
    pending.update(decode_values(msg, wanted))
    return False


async def _coalesced(info: Info[Context, Any], wanted: set[str], max_rate: float,
                     ) -> AsyncGenerator[tuple[dict[str, TagValue], bool], None]:
    """Latest values of `wanted` paths: first a snapshot, then at most `max_rate` batches/s,
    each holding only the newest value of every path that changed meanwhile."""
    store = info.context.services.tags
    interval = 1.0 / min(max(max_rate, 0.1), MAX_RATE)
    async with info.context.services.bus.subscribe(TAGS_TOPIC) as sub:
        assert store is not None
        yield {p: s.value for p, s in store.snapshot(wanted).items()}, True
        last = time.monotonic()
        while True:
            pending: dict[str, TagValue] = {}
            resync = _absorb(await sub.get(), pending, wanted, store)
            wait = last + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            while not sub.queue.empty():
                resync |= _absorb(sub.queue.get_nowait(), pending, wanted, store)
            if pending or resync:
                last = time.monotonic()
                yield pending, resync


def _wanted(info: Info[Context, Any], paths: list[str] | None, asset_ids: list[str] | None,
            area: str | None) -> set[str]:
    store = info.context.services.tags
    if store is None:
        return set()
    f = tg.TagFilter(paths=paths, asset_ids=asset_ids, area_id=area)
    scope = info.context.areas()
    return {p for p, d in store.known.items() if tg.matches(d, f, scope)}


@strawberry.type
class Subscription:
    @strawberry.subscription(permission_classes=[Can("telemetry.read")],
                             description="Live values of the selected tags: a snapshot first, "
                                         "then at most maxRate batches per second.")
    async def tag_updates(self, info: Info[Context, Any], paths: list[str] | None = None,
                          asset_ids: list[str] | None = None, area: str | None = None,
                          max_rate: float = 2.0) -> AsyncGenerator[tg.TagUpdateBatch, None]:
        wanted = _wanted(info, paths, asset_ids, area)
        if not wanted:
            return
        async for values, resync in _coalesced(info, wanted, max_rate):
            yield tg.TagUpdateBatch(updates=[tg.reading(p, v) for p, v in sorted(values.items())],
                                    resync=resync)

    @strawberry.subscription(permission_classes=[Can("telemetry.read")],
                             description="Communication state and key values per station, "
                                         "sent when they change (at most once a second).")
    async def station_status(self, info: Info[Context, Any],
                             area: str | None = None) -> AsyncGenerator[tg.StationStatus, None]:
        store = info.context.services.tags
        wanted = {p for p in _wanted(info, None, None, area) if p.startswith("station/")}
        if store is None or not wanted:
            return
        async for values, _ in _coalesced(info, wanted, 1.0):
            for station in sorted({p.split("/")[1] for p in values}):
                def key(name: str, station: str = station) -> tg.TagReading | None:
                    s = store.get(f"station/{station}/{name}")
                    return tg.reading(f"station/{station}/{name}", s.value) if s else None
                p_out = store.get(f"station/{station}/p_out")
                stale = f"station/{station}/p_out" in set(store.stale())
                yield tg.StationStatus(
                    station_id=station, area_id=store.known[f"station/{station}/p_out"].area_id
                    if f"station/{station}/p_out" in store.known else None,
                    communicating=bool(p_out and p_out.value.quality.is_good and not stale),
                    p_in=key("p_in"), p_out=key("p_out"), flow=key("flow"), door=key("door"))

    @strawberry.subscription(permission_classes=[Can("registry.subscribe")],
                             description="Every create/update/retire of registry assets.")
    async def asset_changes(self, info: Info[Context, Any],
                            kinds: list[str] | None = None) -> AsyncGenerator[AssetChange, None]:
        scope = info.context.areas()
        async with info.context.services.bus.subscribe(REGISTRY_TOPIC) as sub:
            async for msg in sub:
                if msg.get("type") == "resync":
                    continue  # a registry change feed has no state to re-read
                if kinds is not None and msg["kind"] not in kinds:
                    continue
                if scope is not None and msg["area_id"] not in scope:
                    continue
                yield AssetChange(operation=msg["operation"], kind=msg["kind"], id=msg["id"],
                                  actor=msg["actor"], ts=dt.datetime.fromisoformat(msg["ts"]),
                                  area_id=msg["area_id"])
