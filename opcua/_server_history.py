"""HistoryRead (raw) of the integrator server, answered from the gasops historian.

An asyncua `HistoryStorageInterface` that stores nothing (the historian writer already does) and
reads `AbstractHistorian.raw`. OPC UA semantics kept (Part 11 §6.4.3):

- StartTime and EndTime are both inclusive; with StartTime after EndTime the values come newest
  first; with only one of them given, `NumValuesPerNode` values from it (forward from StartTime,
  backward from EndTime);
- at most `NumValuesPerNode` values (0: no limit) and at most `max_values` per answer; the rest
  is reached with the continuation point (the timestamp of the first value not sent). asyncua
  turns a continuation point into the next request's StartTime, so a read given only an
  EndTime (backward, open start) is truncated instead, without a continuation point;
- the historian keeps numbers (floats): Boolean and Int64 tags get their type back here;
- a tag without data in the range answers an empty result, not an error; a node that is not a
  tag also answers empty.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Final

from asyncua import ua
from asyncua.server.history import HistoryStorageInterface

from opcua._server_space import variant_type
from realtime.historian.base import AbstractHistorian, HistorianError, Point
from realtime.model import TagDef

__all__ = ["HistorianStorage"]

log = logging.getLogger(__name__)

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FAR_FUTURE: Final = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
_ONE_US: Final = dt.timedelta(microseconds=1)


def _given(ts: dt.datetime | None) -> dt.datetime | None:
    """A request time, or None when the client left it unset (null is 1601-01-01 on the wire)."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return None if ts <= _EPOCH else ts


class HistorianStorage(HistoryStorageInterface):
    """Read-only history storage over an `AbstractHistorian`; `tag_of(node_id)` gives the tag."""

    def __init__(self, historian: AbstractHistorian | None, tag_of: Callable[[ua.NodeId], TagDef | None],
                 status_code: Callable[[int], ua.StatusCode], max_values: int = 10_000) -> None:
        super().__init__(max_values)
        self._historian = historian
        self._tag_of = tag_of
        self._status_code = status_code

    async def init(self) -> None:
        """Nothing to open: the historian is started by its owner."""

    async def stop(self) -> None:
        """Nothing to close: the historian is closed by its owner."""

    async def new_historized_node(self, node_id: ua.NodeId, period: dt.timedelta | None,
                                  count: int = 0) -> None:
        """Not used: every tag variable is historized by the historian writer."""

    async def save_node_value(self, node_id: ua.NodeId, datavalue: ua.DataValue) -> None:
        """Not used: the historian writer stores values."""

    async def new_historized_event(self, source_id: ua.NodeId, evtypes: list[Any],
                                   period: dt.timedelta | None, count: int = 0) -> None:
        """Event history is not offered (the alarm journal is read over GraphQL)."""

    async def save_event(self, event: Any) -> None:
        """Event history is not offered."""

    async def read_event_history(self, source_id: ua.NodeId, start: dt.datetime | None,
                                 end: dt.datetime | None, nb_values: int,
                                 evfilter: Any) -> tuple[list[Any], dt.datetime | None]:
        """Event history is not offered: always empty."""
        return [], None

    async def read_node_history(self, node_id: ua.NodeId, start: dt.datetime | None, end: dt.datetime | None,
                                nb_values: int) -> tuple[list[ua.DataValue], dt.datetime | None]:
        """Raw values of the node's tag (see the module docstring); (values, continuation)."""
        tag = self._tag_of(node_id)
        if tag is None or self._historian is None:
            return [], None
        start, end = _given(start), _given(end)
        if start is None and end is None:
            return [], None
        backward = start is None or (end is not None and start > end)
        if start is None:
            lo, hi = _EPOCH, end
        elif end is None:
            lo, hi = start, _FAR_FUTURE
        else:
            lo, hi = min(start, end), max(start, end)
        assert hi is not None
        try:
            points = await self._historian.raw(tag.path, lo, hi + _ONE_US)  # raw() is half-open
        except HistorianError as exc:
            log.warning("history read of %s failed: %s", tag.path, exc)
            raise ua.uaerrors.BadResourceUnavailable from exc
        if backward:
            points.reverse()
        limit = min(nb_values, self.max_history_data_response_size) if nb_values else (
            self.max_history_data_response_size)
        cont = None
        if len(points) > limit:
            cont = points[limit].ts if start is not None else None
            points = points[:limit]
        vtype = variant_type(tag)
        return [self._data_value(p, vtype) for p in points], cont

    def _data_value(self, point: Point, vtype: ua.VariantType) -> ua.DataValue:
        value = ua.Variant()
        if point.value is not None:
            if vtype is ua.VariantType.Boolean:
                value = ua.Variant(point.value != 0, vtype)
            elif vtype is ua.VariantType.Int64:
                value = ua.Variant(round(point.value), vtype)
            elif vtype is ua.VariantType.Double:
                value = ua.Variant(point.value, vtype)
        return ua.DataValue(value, StatusCode=self._status_code(point.quality), SourceTimestamp=point.ts,
                            ServerTimestamp=point.ts)
