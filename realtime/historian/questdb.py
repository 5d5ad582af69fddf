"""QuestDB historian: ingest over ILP/HTTP with the `questdb` client, queries over the PG wire.

The table has a designated timestamp and ``DEDUP UPSERT KEYS(ts, tag)``, so re-sending a batch
(store-and-forward's replay, or the client's own retry of a request whose answer was lost) stores
every (tag, ts) once: the last write wins. It is created at start (or at the first write, when
the server was down at start) with ``CREATE TABLE IF NOT EXISTS`` over QuestDB's HTTP ``/exec``,
and created again after a failed flush, in case the server came back empty.

Ingest: one ILP buffer per `write`, flushed as one HTTP request (``transactional``: a single
table, so QuestDB commits it whole or not at all). The `questdb` sender throws its internal
buffer away when a flush fails; this adapter only ever flushes its own buffer with
``clear=False``, and the caller keeps the `Point`s until `write` returns, so a failed batch is
re-sent whole by the caller (see `realtime.historian.buffer`). After a failure the sender is
dropped and a fresh one (which probes ``GET /settings`` again) is opened by the next write.
The client is blocking: every call runs on a single-thread executor owned by the adapter.

Errors: a server that cannot be reached, answers 5xx, or is misconfigured for us (auth, no
ILP/HTTP) raises `HistorianUnavailable`: the data is kept and retried. Only data the server calls
invalid (a 4xx answer with code ``invalid``) or that the client cannot encode raises
`HistorianRejected`.

Queries run over the PostgreSQL wire protocol with asyncpg: ``LATEST ON … PARTITION BY tag`` for
`latest`/`value_at`, ``SAMPLE BY … ALIGN TO CALENDAR`` for `buckets`. QuestDB stores TIMESTAMP
(microseconds, UTC) and returns it as ``timestamp without time zone``: parameters go out as naive
UTC datetimes and results are made aware. WAL tables apply commits asynchronously: a read right
after a write may not see it yet; `wait_applied` waits until it does.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime as dt
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import asyncpg
from questdb import QuestDBError, QuestDBErrorCode, Sender, TimestampNanos

from realtime.historian.base import (
    AGGREGATES,
    AbstractHistorian,
    BucketSeries,
    HistorianError,
    HistorianRejected,
    HistorianUnavailable,
    Point,
    check_bucket_args,
    to_epoch_us,
)
from realtime.model import TagPath

__all__ = ["QuestDBHistorian", "create_table_sql"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,126}$")
# QuestDB's JSON error answer to unparseable or mistyped ILP has "code": "invalid"; the client
# prints it as "code: invalid", or the raw JSON when the answer's content type is not exactly JSON
_INVALID_DATA: Final = re.compile(r'code"?\s*:\s*"?invalid\b')
_REJECTING_CODES: Final = frozenset({
    QuestDBErrorCode.InvalidName, QuestDBErrorCode.InvalidUtf8, QuestDBErrorCode.InvalidTimestamp,
    QuestDBErrorCode.ArrayError, QuestDBErrorCode.DecimalError, QuestDBErrorCode.BatchTooLarge,
})
# SQLSTATE classes meaning "not now" rather than "not this query": connection exception,
# insufficient resources, operator intervention (shutting down, cannot connect now)
_UNAVAILABLE_SQLSTATES: Final = frozenset({"08", "53", "57"})
_AGGREGATE_SQL: Final = {
    "min": "min(value) AS agg_min",
    "max": "max(value) AS agg_max",
    "avg": "avg(value) AS agg_avg",
    "last": "last_not_null(value) AS agg_last",
    "count": "count(value) AS agg_count",
}


def create_table_sql(table: str) -> str:
    """The DDL of the history table: designated timestamp, daily partitions, WAL, dedup on (ts, tag)."""
    return (f"CREATE TABLE IF NOT EXISTS {table} (tag SYMBOL CAPACITY 16384 CACHE, value DOUBLE,"
            " quality LONG, ts TIMESTAMP) TIMESTAMP(ts) PARTITION BY DAY WAL"
            " DEDUP UPSERT KEYS(ts, tag)")


def _naive_utc(ts: dt.datetime) -> dt.datetime:
    if ts.utcoffset() is None:
        raise ValueError(f"timestamp must be tz-aware (UTC): {ts!r}")
    return ts.astimezone(dt.UTC).replace(tzinfo=None)


def _aware(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def _flush_error(exc: QuestDBError) -> HistorianError:
    """Map a client error: only data the server or the client calls invalid is rejected."""
    code = exc.code
    if code in _REJECTING_CODES or (
            code == QuestDBErrorCode.ServerFlushError and _INVALID_DATA.search(str(exc))):
        return HistorianRejected(f"QuestDB refused the batch: {exc}")
    return HistorianUnavailable(f"QuestDB unavailable: {exc}")


class QuestDBHistorian(AbstractHistorian):
    """A historian in a QuestDB table.

    Arguments:
        http_url: QuestDB's HTTP endpoint, e.g. ``http://127.0.0.1:9000`` (ILP and ``/exec``);
            ``https://user:password@host:9000`` for TLS and basic auth.
        pg_dsn: the PostgreSQL wire endpoint for queries, e.g.
            ``postgresql://admin:quest@127.0.0.1:8812/qdb``; None: write-only (queries raise
            `HistorianUnavailable`).
        table: the table name.
        request_timeout_s: how long one HTTP request may take before it counts as failed.
        retry_timeout_s: how long the client itself retries a failed flush (0: never; the
            store-and-forward buffer does the retrying, with backoff).
    """

    def __init__(self, http_url: str, pg_dsn: str | None = None, *, table: str = "gasops_history",
                 request_timeout_s: float = 5.0, retry_timeout_s: float = 0.0) -> None:
        if not _NAME.match(table):
            raise ValueError(f"not a valid QuestDB table name: {table!r}")
        url = urllib.parse.urlsplit(http_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"http_url must be http(s)://host:port: {http_url!r}")
        port = url.port or 9000
        self._table = table
        self._exec_url = f"{url.scheme}://{url.hostname}:{port}/exec"
        self._auth = (url.username, url.password or "") if url.username else None
        self._timeout_s = request_timeout_s
        conf = (f"{url.scheme}::addr={url.hostname}:{port};auto_flush=off;"
                f"request_timeout={max(1, round(request_timeout_s * 1000))};"
                f"retry_timeout={max(0, round(retry_timeout_s * 1000))};")
        if self._auth is not None:
            conf += f"username={self._auth[0]};password={self._auth[1].replace(';', ';;')};"
        self._ilp_conf = conf
        self._pg_dsn = pg_dsn
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._sender: Sender | None = None  # used on the worker thread only
        self._table_ready = False
        self._pg: asyncpg.Connection | None = None
        self._pg_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the worker thread and try to create the table; a server that is down is fine."""
        if self._executor is not None:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="gasops-questdb-historian")
        try:
            await self._run(self._ensure_ready)
        except HistorianUnavailable as exc:
            _log.warning("QuestDB historian not reachable at start, will retry on write: %s", exc)

    async def close(self) -> None:
        """Close the sender, the query connection and the worker thread; idempotent."""
        executor, self._executor = self._executor, None
        try:
            if executor is not None:
                await asyncio.get_running_loop().run_in_executor(executor, self._drop_sender)
        finally:
            if executor is not None:
                executor.shutdown(wait=True)
            async with self._pg_lock:
                await self._close_pg()

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        executor = self._executor
        if executor is None:
            raise HistorianUnavailable("QuestDB historian is not started (or already closed)")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    # ------------------------------------------------------------------ worker-thread side

    def _exec(self, sql: str) -> dict[str, Any]:
        """Run one SQL statement over HTTP ``/exec``; returns the decoded JSON answer."""
        request = urllib.request.Request(
            f"{self._exec_url}?{urllib.parse.urlencode({'query': sql})}", method="GET")
        if self._auth is not None:
            token = base64.b64encode(f"{self._auth[0]}:{self._auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                body: dict[str, Any] = json.loads(response.read() or b"{}")
                return body
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            exc.close()
            if exc.code >= 500:
                raise HistorianUnavailable(f"QuestDB /exec answered {exc.code}: {detail}") from exc
            raise HistorianRejected(f"QuestDB refused {sql!r}: {exc.code} {detail}") from exc
        except (OSError, ValueError) as exc:  # URLError, refused, timeout, garbage
            raise HistorianUnavailable(f"QuestDB /exec unreachable: {exc}") from exc

    def _ensure_ready(self) -> Sender:
        if not self._table_ready:
            self._exec(create_table_sql(self._table))
            self._table_ready = True
        if self._sender is None:
            sender = Sender.from_conf(self._ilp_conf)
            try:
                sender.establish()  # ILP/HTTP: probes GET /settings for the protocol version
            except QuestDBError as exc:
                sender.close(flush=False)
                raise _flush_error(exc) from exc
            self._sender = sender
        return self._sender

    def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.close(flush=False)

    def _write(self, points: Sequence[Point]) -> None:
        sender = self._ensure_ready()
        try:
            buffer = sender.new_buffer()
            table = self._table
            for p in points:
                value = None if p.value is None else float(p.value)  # an int would go as LONG
                buffer.row(table, symbols={"tag": p.tag},
                           columns={"value": value, "quality": int(p.quality)},
                           at=TimestampNanos(to_epoch_us(p.ts) * 1000))
        except QuestDBError as exc:
            raise _flush_error(exc) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise HistorianRejected(f"QuestDB historian cannot encode this batch: {exc}") from exc
        try:
            sender.flush(buffer, clear=False, transactional=True)
        except QuestDBError as exc:
            self._drop_sender()
            self._table_ready = False  # a server that came back empty gets its table again
            raise _flush_error(exc) from exc

    # ------------------------------------------------------------------ port

    async def write(self, points: Sequence[Point]) -> None:
        """Send `points` as one ILP/HTTP request; returns when QuestDB acknowledged it."""
        if points:
            await self._run(self._write, points)

    async def _query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run one query on the adapter's PG-wire connection (opened, or reopened, on demand).

        One connection behind a lock rather than an asyncpg pool: a pool resets each connection
        it takes back with ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``, which
        is PostgreSQL, not QuestDB.
        """
        if self._pg_dsn is None:
            raise HistorianUnavailable("QuestDB historian has no PG wire endpoint (write-only)")
        async with self._pg_lock:
            try:
                if self._pg is None or self._pg.is_closed():
                    self._pg = await asyncpg.connect(self._pg_dsn, timeout=self._timeout_s,
                                                     command_timeout=max(self._timeout_s, 30.0))
                rows: list[asyncpg.Record] = await self._pg.fetch(sql, *args)
                return rows
            except asyncpg.PostgresError as exc:
                if str(exc.sqlstate or "")[:2] in _UNAVAILABLE_SQLSTATES:
                    await self._close_pg()
                    raise HistorianUnavailable(f"QuestDB PG wire unavailable: {exc}") from exc
                raise HistorianRejected(f"QuestDB refused the query: {exc}") from exc
            except (OSError, asyncpg.InterfaceError, TimeoutError) as exc:
                await self._close_pg()
                raise HistorianUnavailable(f"QuestDB PG wire unreachable: {exc}") from exc

    async def _close_pg(self) -> None:
        con, self._pg = self._pg, None
        if con is not None and not con.is_closed():
            try:
                await con.close(timeout=2)
            except (OSError, asyncpg.InterfaceError, TimeoutError):
                con.terminate()

    async def raw(self, tag: TagPath, start: dt.datetime, end: dt.datetime) -> list[Point]:
        """The points of `tag` in [start, end), ordered by ts."""
        rows = await self._query(
            f"SELECT ts, value, quality FROM {self._table} WHERE tag = $1"
            " AND ts >= $2::timestamp AND ts < $3::timestamp ORDER BY ts",
            tag, _naive_utc(start), _naive_utc(end))
        return [Point(tag, _aware(r["ts"]), r["value"], r["quality"]) for r in rows]

    async def buckets(self, tags: Sequence[TagPath], start: dt.datetime, end: dt.datetime,
                      bucket_s: int, aggregates: Sequence[str] = AGGREGATES,
                      ) -> dict[TagPath, BucketSeries]:
        """``SAMPLE BY {bucket_s}s ALIGN TO CALENDAR`` per tag in [start, end)."""
        wanted = check_bucket_args(bucket_s, aggregates)
        tags = list(dict.fromkeys(tags))
        if not tags or end <= start:
            return {}
        marks = ", ".join(f"${i}" for i in range(3, len(tags) + 3))
        columns = ", ".join(_AGGREGATE_SQL[a] for a in wanted)
        rows = await self._query(
            f"SELECT * FROM (SELECT tag, ts, {columns} FROM {self._table}"
            f" WHERE ts >= $1::timestamp AND ts < $2::timestamp AND tag IN ({marks})"
            f" SAMPLE BY {bucket_s}s ALIGN TO CALENDAR) ORDER BY tag, ts",
            _naive_utc(start), _naive_utc(end), *tags)
        grouped: dict[TagPath, list[asyncpg.Record]] = {}
        for r in rows:
            grouped.setdefault(r["tag"], []).append(r)
        return {tag: BucketSeries(
            tag, bucket_s, tuple(_aware(r["ts"]) for r in group),
            **{a: tuple(r[f"agg_{a}"] for r in group) for a in wanted})
            for tag, group in grouped.items()}

    async def latest(self, tags: Sequence[TagPath]) -> dict[TagPath, Point]:
        """``LATEST ON ts PARTITION BY tag`` for `tags`."""
        tags = list(dict.fromkeys(tags))
        if not tags:
            return {}
        marks = ", ".join(f"${i}" for i in range(1, len(tags) + 1))
        rows = await self._query(
            f"SELECT tag, ts, value, quality FROM {self._table} WHERE tag IN ({marks})"
            " LATEST ON ts PARTITION BY tag", *tags)
        return {r["tag"]: Point(r["tag"], _aware(r["ts"]), r["value"], r["quality"]) for r in rows}

    async def value_at(self, tag: TagPath, ts: dt.datetime) -> Point | None:
        """The last point of `tag` at or before `ts`."""
        rows = await self._query(
            f"SELECT ts, value, quality FROM {self._table} WHERE tag = $1 AND ts <= $2::timestamp"
            " LATEST ON ts PARTITION BY tag", tag, _naive_utc(ts))
        if not rows:
            return None
        return Point(tag, _aware(rows[0]["ts"]), rows[0]["value"], rows[0]["quality"])

    async def wait_applied(self, timeout_s: float = 30.0) -> None:
        """Wait until QuestDB has applied every committed write to the table (WAL is async)."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows = await self._query(
                "SELECT writerTxn, sequencerTxn, suspended FROM wal_tables() WHERE name = $1",
                self._table)
            if rows and rows[0][2]:  # by position: the server decides the names' case
                raise HistorianUnavailable(f"QuestDB suspended WAL apply for {self._table}")
            if not rows or rows[0][0] >= rows[0][1]:
                return
            if time.monotonic() > deadline:
                raise HistorianUnavailable(f"QuestDB did not apply writes within {timeout_s} s")
            await asyncio.sleep(0.05)  # polling an external server: no event to wait on
