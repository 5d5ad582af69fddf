"""The historian port: what every time-series backend offers, its value types and its errors.

A historian stores `Point`s, one per (tag, timestamp), and answers four kinds of query: a raw
range, downsampled buckets, the latest point per tag and the value at a moment. Semantics every
adapter keeps (the contract suite in `tests/contract/test_historian.py` checks them):

- `write` is idempotent on (tag, ts): writing a point whose (tag, ts) is already stored replaces
  it (last write wins, as QuestDB's `DEDUP UPSERT KEYS`), so replaying a batch creates no
  duplicate. Within one batch the last point for a (tag, ts) wins.
- Ranges are half-open, ``start <= ts < end``; timestamps come back tz-aware in UTC.
- Buckets are aligned to multiples of `bucket_s` since the Unix epoch (UTC); `bucket_s` must divide
  a day (1 s … 86,400 s), which keeps epoch alignment and calendar alignment (QuestDB's
  ``SAMPLE BY … ALIGN TO CALENDAR``) the same. Only buckets holding points are returned.
  `min`, `max`, `avg`, `last` and `count` are over the non-null values of the bucket (SQL
  semantics): `last` is the value of the latest point whose value is not null, `count` the number
  of non-null values, so a bucket of only null values has count 0 and null aggregates.
- A backend that cannot be reached raises `HistorianUnavailable` (retry later: store-and-forward
  buffers the batch); one that refuses the data itself raises `HistorianRejected` (retrying the
  same batch cannot succeed).
"""

from __future__ import annotations

import abc
import datetime as dt
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NamedTuple, Self

from realtime.model import Quality, TagPath

__all__ = [
    "AGGREGATES",
    "AbstractHistorian",
    "BucketSeries",
    "HistorianError",
    "HistorianRejected",
    "HistorianUnavailable",
    "Point",
    "check_bucket_args",
    "from_epoch_us",
    "to_epoch_us",
]

AGGREGATES: Final = ("min", "max", "avg", "last", "count")
_QUALITY_MAX: Final = 0xFFFFFFFF  # an OPC UA StatusCode is a UInt32
_DAY_S: Final = 86_400
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US: Final = dt.timedelta(microseconds=1)


class HistorianError(Exception):
    """Base of every historian failure."""


class HistorianUnavailable(HistorianError):
    """The backend cannot be reached (down, restarting, network): try again later."""


class HistorianRejected(HistorianError):
    """The backend refused the data or the query itself: retrying it unchanged cannot succeed."""


class _PointFields(NamedTuple):
    tag: TagPath
    ts: dt.datetime
    value: float | None
    quality: int


class Point(_PointFields):
    """One stored sample: tag path, timestamp (tz-aware, normalised to UTC), value, quality.

    `value` is a float or None (no usable value, e.g. with a Bad quality; a NaN becomes None);
    `quality` an OPC UA StatusCode as an int (see `realtime.model.Quality`).

    An immutable tuple rather than a frozen dataclass: one is built per stored point on the
    telemetry hot path, and a tuple with this validating constructor builds ~3x faster.
    """

    __slots__ = ()

    def __new__(cls, tag: TagPath, ts: dt.datetime, value: float | None,
                quality: int = Quality.GOOD) -> Point:
        if ts.tzinfo is not dt.UTC:  # (tested first: utcoffset() is slow on the hot path)
            if ts.utcoffset() is None:
                raise ValueError(f"Point timestamp must be tz-aware (UTC): {tag} {ts!r}")
            ts = ts.astimezone(dt.UTC)
        if value is not None and value != value:  # NaN: no value, as QuestDB has it
            value = None
        if not 0 <= quality <= _QUALITY_MAX:
            raise ValueError(f"Point quality must be a UInt32 status code: {quality!r}")
        return tuple.__new__(cls, (tag, ts, value, quality))


@dataclass(frozen=True, slots=True)
class BucketSeries:
    """Downsampled values of one tag, column-wise: bucket `start`s and one column per aggregate.

    All columns have the length of `start`; a column that was not asked for is None. `start` is
    the beginning of each bucket (UTC), `bucket_s` the bucket width in seconds.
    """

    tag: TagPath
    bucket_s: int
    start: tuple[dt.datetime, ...]
    min: tuple[float | None, ...] | None = None
    max: tuple[float | None, ...] | None = None
    avg: tuple[float | None, ...] | None = None
    last: tuple[float | None, ...] | None = None
    count: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.start)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Pickled with the bucket starts as packed epoch microseconds, shared by the series of
        # one answer on the way back: tz-aware datetimes pickle several times slower than the
        # value columns, and `HistorianProcess` pickles every answer it passes on.
        us = array("q", [(t - _EPOCH) // _ONE_US for t in self.start]).tobytes()
        return _series_from_wire, (self.tag, self.bucket_s, us, self.min, self.max, self.avg,
                                   self.last, self.count)


_last_starts: tuple[bytes, tuple[dt.datetime, ...]] = (b"", ())


def _series_from_wire(tag: TagPath, bucket_s: int, us: bytes, *columns: Any) -> BucketSeries:
    global _last_starts  # noqa: PLW0603 - the series of one answer mostly share their starts
    cached_us, starts = _last_starts
    if us != cached_us:
        packed = array("q")
        packed.frombytes(us)
        starts = tuple(_EPOCH + dt.timedelta(microseconds=u) for u in packed)
        _last_starts = (us, starts)
    return BucketSeries(tag, bucket_s, starts, *columns)


def check_bucket_args(bucket_s: int, aggregates: Sequence[str]) -> tuple[str, ...]:
    """Validate `bucket_s` and `aggregates` for `buckets`; returns the aggregates, deduplicated."""
    if isinstance(bucket_s, bool) or not isinstance(bucket_s, int) or bucket_s <= 0 or (
            _DAY_S % bucket_s):
        raise ValueError(f"bucket_s must be a whole number of seconds dividing a day: {bucket_s!r}")
    wanted = tuple(dict.fromkeys(aggregates))
    unknown = [a for a in wanted if a not in AGGREGATES]
    if unknown or not wanted:
        raise ValueError(f"aggregates must be a non-empty subset of {AGGREGATES}: {list(aggregates)}")
    return wanted


class AbstractHistorian(abc.ABC):
    """A time-series store of `Point`s. Start it (or use ``async with``) before use; close it after.

    Adapters do their blocking I/O off the event loop and are safe to call from concurrent tasks.
    """

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections and create the schema if missing; idempotent."""

    @abc.abstractmethod
    async def write(self, points: Sequence[Point]) -> None:
        """Store `points`; returns once the backend acknowledged them (durably accepted).

        Idempotent on (tag, ts). Raises `HistorianUnavailable` when the backend cannot be reached
        (nothing or part of the batch may be stored: re-sending the whole batch is safe) and
        `HistorianRejected` when it refuses the data.
        """

    @abc.abstractmethod
    async def raw(self, tag: TagPath, start: dt.datetime, end: dt.datetime) -> list[Point]:
        """The stored points of `tag` with ``start <= ts < end``, ordered by ts."""

    @abc.abstractmethod
    async def buckets(self, tags: Sequence[TagPath], start: dt.datetime, end: dt.datetime,
                      bucket_s: int, aggregates: Sequence[str] = AGGREGATES,
                      ) -> dict[TagPath, BucketSeries]:
        """`aggregates` of each tag over epoch-aligned buckets of `bucket_s` seconds in [start, end).

        Returns one `BucketSeries` per tag that has points in the range (buckets ordered by
        start); tags without any are absent. Raises ValueError for a bad `bucket_s`/aggregate.
        """

    @abc.abstractmethod
    async def latest(self, tags: Sequence[TagPath]) -> dict[TagPath, Point]:
        """The point with the greatest ts of each tag; tags never written are absent."""

    @abc.abstractmethod
    async def value_at(self, tag: TagPath, ts: dt.datetime) -> Point | None:
        """The last point of `tag` at or before `ts`, or None when there is none."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections, threads and files; idempotent."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def to_epoch_us(ts: dt.datetime) -> int:
    """Microseconds since the Unix epoch of a tz-aware datetime (exact integer arithmetic)."""
    if ts.tzinfo is not dt.UTC and ts.utcoffset() is None:
        raise ValueError(f"timestamp must be tz-aware (UTC): {ts!r}")
    return (ts - _EPOCH) // _ONE_US


def from_epoch_us(us: int) -> dt.datetime:
    """The UTC datetime `us` microseconds after the Unix epoch."""
    return _EPOCH + dt.timedelta(microseconds=us)
