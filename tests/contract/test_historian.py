"""The historian contract, one suite over every backend.

- Queries (raw, buckets, latest, value_at): DuckDB on a real file, and a real QuestDB when
  ``QUESTDB_URL`` (its HTTP endpoint, e.g. ``http://127.0.0.1:9000``) is set; ``QUESTDB_PG_URL``
  overrides the PG-wire endpoint (default ``postgresql://admin:quest@<host>:8812/qdb``).
- The write path (what is stored after write, rewrite, replay): also the QuestDB adapter against
  the loopback receiver, which stores ILP rows deduplicated on (ts, tag) like the real table.
- QuestDB's wire format (DDL, ILP lines, error mapping, reconnects) against the loopback receiver.

No QuestDB server can be installed here, so its query path runs only where one is configured; the
skip reason deliberately does not start with "service unavailable:", so CI
(``GASOPS_REQUIRE_SERVICES=1``) does not fail for an optional backend.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
import random
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from realtime.historian.base import (
    AbstractHistorian,
    BucketSeries,
    HistorianRejected,
    HistorianUnavailable,
    Point,
)
from realtime.historian.duckdb import DuckDBHistorian
from realtime.historian.process import HistorianProcess
from realtime.historian.questdb import QuestDBHistorian
from realtime.model import Quality
from tests.integration._questdb_receiver import QuestDBReceiver

QUESTDB_SKIP = "optional service not configured: QUESTDB_URL (a real QuestDB's HTTP endpoint)"
T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
# the worker threads of the adapters and the buffer (thread_name_prefix)
HISTORIAN_THREADS = ("gasops-duckdb-historian", "gasops-questdb-historian", "gasops-store-and-forward",
                     "gasops-historian-process")
TZ_PLUS3 = dt.timezone(dt.timedelta(hours=3))

Row = tuple[str, dt.datetime, float | None, int]


def s(seconds: float) -> dt.datetime:
    """T0 plus `seconds`."""
    return T0 + dt.timedelta(seconds=seconds)


@dataclass
class Backend:
    """A started historian, how to wait until its writes are visible, and what it stores."""

    historian: AbstractHistorian
    settle: Callable[[], Awaitable[None]]
    stored: Callable[[list[str]], Awaitable[list[Row]]]  # every stored row of these tags


async def _nothing() -> None:
    return None


def _questdb_endpoints() -> tuple[str, str] | None:
    url = os.environ.get("QUESTDB_URL")
    if not url:
        return None
    host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
    return url, os.environ.get("QUESTDB_PG_URL") or f"postgresql://admin:quest@{host}:8812/qdb"


def _drop_table(http_url: str, table: str) -> None:
    query = urllib.parse.urlencode({"query": f"DROP TABLE IF EXISTS {table}"})
    with urllib.request.urlopen(f"{http_url.rstrip('/')}/exec?{query}", timeout=10) as answer:
        answer.read()


async def _rows_via_raw(historian: AbstractHistorian, tags: list[str]) -> list[Row]:
    far = dt.timedelta(days=3650)
    out: list[Row] = []
    for tag in tags:
        out += [(p.tag, p.ts, p.value, p.quality) for p in await historian.raw(tag, T0 - far, T0 + far)]
    return out


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Every worker thread an adapter started is gone after the test."""
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith(HISTORIAN_THREADS)]
    assert left == []


async def _duckdb(tmp_path: Path) -> AsyncIterator[Backend]:
    historian = DuckDBHistorian(tmp_path / "history.duckdb")
    await historian.start()
    try:
        yield Backend(historian, _nothing, lambda tags: _rows_via_raw(historian, tags))
    finally:
        await historian.close()


async def _duckdb_process(tmp_path: Path) -> AsyncIterator[Backend]:
    """DuckDB in a child process (`HistorianProcess`), as the server runs it by default."""
    historian = HistorianProcess(functools.partial(DuckDBHistorian, tmp_path / "history.duckdb"))
    await historian.start()
    try:
        yield Backend(historian, _nothing, lambda tags: _rows_via_raw(historian, tags))
    finally:
        await historian.close()


async def _questdb_real() -> AsyncIterator[Backend]:
    endpoints = _questdb_endpoints()
    if endpoints is None:
        pytest.skip(QUESTDB_SKIP)
    http_url, pg_dsn = endpoints
    table = f"gasops_test_{uuid.uuid4().hex[:12]}"
    historian = QuestDBHistorian(http_url, pg_dsn, table=table)
    await historian.start()

    async def stored(tags: list[str]) -> list[Row]:
        await historian.wait_applied()
        return await _rows_via_raw(historian, tags)

    try:
        yield Backend(historian, historian.wait_applied, stored)
    finally:
        await historian.close()
        await asyncio.to_thread(_drop_table, http_url, table)


async def _questdb_loopback() -> AsyncIterator[Backend]:
    receiver = QuestDBReceiver()
    await receiver.start()
    historian = QuestDBHistorian(receiver.http_url, table="history")
    await historian.start()

    async def stored(tags: list[str]) -> list[Row]:
        return [(r.symbols["tag"], dt.datetime.fromtimestamp(0, dt.UTC)
                 + dt.timedelta(microseconds=(r.ts_ns or 0) // 1000),
                 _as_float(r.fields.get("value")), int(r.fields["quality"]))
                for r in receiver.rows("history") if r.symbols["tag"] in tags]

    try:
        yield Backend(historian, _nothing, stored)
    finally:
        await historian.close()
        await receiver.stop()


def _as_float(value: object) -> float | None:
    assert value is None or isinstance(value, float)
    return value


@pytest.fixture(params=["duckdb", "duckdb-process", "questdb"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path,
                  no_thread_leak: None) -> AsyncIterator[Backend]:
    """A historian that answers queries: DuckDB (in this process and in a child), and a real
    QuestDB when configured."""
    factories = {"duckdb": lambda: _duckdb(tmp_path),
                 "duckdb-process": lambda: _duckdb_process(tmp_path), "questdb": _questdb_real}
    async for b in factories[request.param]():
        yield b


@pytest.fixture(params=["duckdb", "duckdb-process", "questdb-loopback", "questdb"])
async def writer(request: pytest.FixtureRequest, tmp_path: Path,
                 no_thread_leak: None) -> AsyncIterator[Backend]:
    """A historian whose stored rows can be read back: also QuestDB's loopback receiver."""
    factories = {"duckdb": lambda: _duckdb(tmp_path),
                 "duckdb-process": lambda: _duckdb_process(tmp_path),
                 "questdb-loopback": _questdb_loopback, "questdb": _questdb_real}
    async for b in factories[request.param]():
        yield b


# --------------------------------------------------------------------------- write path


async def test_stored_rows_are_exactly_the_written_points(writer: Backend) -> None:
    points = [Point(f"station/GRP-{i}/p_out", s(t), 300.0 + i + t / 10, Quality.GOOD)
              for t in range(20) for i in range(3)]
    points.append(Point("station/GRP-0/p_out", s(20), None, Quality.BAD_NOT_CONNECTED))
    await writer.historian.write(points)
    stored = await writer.stored([f"station/GRP-{i}/p_out" for i in range(3)])
    assert sorted(stored, key=_key) == sorted(((p.tag, p.ts, p.value, p.quality) for p in points),
                                             key=_key)


async def test_writing_a_batch_twice_stores_it_once(writer: Backend) -> None:
    points = [Point("a", s(t), float(t)) for t in range(50)]
    await writer.historian.write(points)
    await writer.historian.write(points)
    await writer.historian.write(points[10:20])  # a partial replay
    stored = await writer.stored(["a"])
    assert len(stored) == 50
    assert sorted(stored, key=_key) == [("a", p.ts, p.value, 0) for p in points]


async def test_rewriting_a_point_replaces_it_and_the_last_in_a_batch_wins(writer: Backend) -> None:
    await writer.historian.write([Point("a", s(0), 1.0), Point("a", s(1), 2.0)])
    await writer.historian.write([Point("a", s(1), 20.0, Quality.UNCERTAIN),
                                  Point("a", s(2), 3.0), Point("a", s(2), 30.0)])
    stored = await writer.stored(["a"])
    assert sorted(stored, key=_key) == [("a", s(0), 1.0, 0), ("a", s(1), 20.0, Quality.UNCERTAIN),
                                        ("a", s(2), 30.0, 0)]


def _key(row: Row) -> tuple[str, dt.datetime]:
    return row[0], row[1]


# --------------------------------------------------------------------------- queries


async def test_raw_returns_the_range_in_ts_order(backend: Backend) -> None:
    h = backend.historian
    a = [Point("a", s(t), float(t)) for t in (5, 1, 3, 2, 4, 0)]  # written out of order
    await h.write(a)
    await h.write([Point("b", s(t), -1.0) for t in range(6)])
    await backend.settle()
    got = await h.raw("a", s(1), s(4))  # half-open: 1, 2, 3
    assert got == [Point("a", s(t), float(t)) for t in (1, 2, 3)]
    assert await h.raw("a", s(0), s(100)) == sorted(a, key=lambda p: p.ts)
    assert await h.raw("never-written", s(0), s(100)) == []
    assert await h.raw("a", s(10), s(20)) == []


async def test_timestamps_come_back_utc_aware_and_sub_second_exact(backend: Backend) -> None:
    h = backend.historian
    local = dt.datetime(2024, 3, 1, 3, 0, 0, 123456, tzinfo=TZ_PLUS3)  # = T0 + 0.123456 s
    await h.write([Point("a", local, 1.5)])
    await backend.settle()
    (p,) = await h.raw("a", T0, s(1))
    assert p.ts == s(0.123456)
    assert p.ts.tzinfo is dt.UTC and p.ts.microsecond == 123456
    latest = (await h.latest(["a"]))["a"]
    assert latest.ts.tzinfo is dt.UTC
    at = await h.value_at("a", s(5))
    assert at is not None and at.ts.tzinfo is dt.UTC


async def test_quality_and_missing_values_are_stored(backend: Backend) -> None:
    h = backend.historian
    points = [Point("a", s(0), 1.0, Quality.GOOD),
              Point("a", s(1), 2.0, Quality.UNCERTAIN_LAST_USABLE_VALUE),
              Point("a", s(2), None, Quality.BAD_OUT_OF_SERVICE),  # 0x808D0000 > 2**31
              Point("a", s(3), 4.0, 0xFFFFFFFF)]
    await h.write(points)
    await backend.settle()
    got = await h.raw("a", s(0), s(10))
    assert [(p.value, p.quality) for p in got] == [(p.value, int(p.quality)) for p in points]


async def test_buckets_min_max_avg_last_count(backend: Backend) -> None:
    h = backend.historian
    await h.write([
        Point("a", s(0), 1.0), Point("a", s(10), 5.0),
        Point("a", s(20), None, Quality.BAD_SENSOR_FAILURE),  # null: in no aggregate
        Point("a", s(59.999999), 3.0),  # still the first minute
        Point("a", s(60), 10.0),
        # minute 2 empty
        Point("a", s(185), None, Quality.BAD),  # minute 3 holds only a null
        Point("b", s(30), -2.0), Point("b", s(31), -4.0),
        Point("c", s(30), 7.0),  # not asked for
    ])
    await backend.settle()
    got = await h.buckets(["a", "b", "never-written"], s(0), s(240), 60)
    assert set(got) == {"a", "b"}
    a = got["a"]
    assert isinstance(a, BucketSeries) and a.bucket_s == 60
    assert a.start == (s(0), s(60), s(180))
    assert a.min == (1.0, 10.0, None)
    assert a.max == (5.0, 10.0, None)
    assert a.avg == (pytest.approx(3.0), pytest.approx(10.0), None)
    assert a.last == (3.0, 10.0, None)
    assert a.count == (3, 1, 0)
    assert got["b"].start == (s(0),) and got["b"].last == (-4.0,) and got["b"].avg == (-3.0,)

    # a range starting and ending mid-bucket: only the points inside it, buckets still aligned
    part = (await h.buckets(["a"], s(15), s(60), 60, aggregates=("count", "last")))["a"]
    assert part.start == (s(0),) and part.count == (1,) and part.last == (3.0,)
    assert part.min is None and part.max is None and part.avg is None

    hourly = (await h.buckets(["a"], s(0), s(3600), 3600, aggregates=("max",)))["a"]
    assert hourly.start == (s(0),) and hourly.max == (10.0,)
    assert await h.buckets(["a"], s(300), s(400), 60) == {}


def _reference_buckets(points: list[Point], start: dt.datetime, end: dt.datetime,
                       bucket_s: int) -> dict[str, dict[dt.datetime, tuple[object, ...]]]:
    """Buckets computed the slow, obvious way: {tag: {start: (min, max, avg, last, count)}}."""
    width = dt.timedelta(seconds=bucket_s)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    groups: dict[str, dict[dt.datetime, list[Point]]] = {}
    for p in points:
        if start <= p.ts < end:
            b = epoch + ((p.ts - epoch) // width) * width
            groups.setdefault(p.tag, {}).setdefault(b, []).append(p)
    out: dict[str, dict[dt.datetime, tuple[object, ...]]] = {}
    for tag, by_start in groups.items():
        out[tag] = {}
        for b, ps in by_start.items():
            values = [p.value for p in sorted(ps, key=lambda p: p.ts) if p.value is not None]
            out[tag][b] = ((min(values), max(values), pytest.approx(sum(values) / len(values)),
                            values[-1], len(values)) if values else (None, None, None, None, 0))
    return out


async def test_buckets_agree_with_a_reference_over_random_writes(backend: Backend) -> None:
    """Random batches, replays, overwrites and late points; ranges with ragged edges."""
    h = backend.historian
    rng = random.Random(20240301)
    stored: dict[tuple[str, dt.datetime], Point] = {}
    batches: list[list[Point]] = []
    for _ in range(40):
        if batches and rng.random() < 0.2:  # replay an earlier batch, some values changed
            batch = [Point(p.tag, p.ts, rng.choice([p.value, rng.uniform(-5, 5)]), p.quality)
                     for p in rng.choice(batches)]
        else:
            base = rng.uniform(0, 3 * 3600) if rng.random() < 0.3 else len(batches) * 270.0
            batch = [Point(rng.choice("abc"), s(round(base + rng.uniform(0, 300), 3)),
                           None if rng.random() < 0.1 else round(rng.uniform(-100, 100), 3))
                     for _ in range(rng.randint(1, 200))]
        await h.write(batch)
        batches.append(batch)
        for p in batch:
            stored[(p.tag, p.ts)] = p
    await backend.settle()
    points = list(stored.values())
    cases = [(s(0), s(4 * 3600), 60), (s(15.5), s(7201.25), 60), (s(59.9), s(61), 60),
             (s(100), s(4000), 300), (s(0), s(4 * 3600), 3600), (s(1234.5), s(2345.5), 10),
             (s(3000), s(3030), 1), (s(-600), s(10_000), 1800)]
    for start, end, bucket_s in cases:
        got = await h.buckets(["a", "b", "c"], start, end, bucket_s)
        want = _reference_buckets(points, start, end, bucket_s)
        assert {tag: dict(zip(series.start, zip(series.min or (), series.max or (),
                                                series.avg or (), series.last or (),
                                                series.count or (), strict=True), strict=True))
                for tag, series in got.items()} == want, (start, end, bucket_s)


async def test_buckets_refuse_bad_arguments(backend: Backend) -> None:
    h = backend.historian
    for bad in (0, -60, 7, 86_401, 90_000):  # must be a positive divisor of a day
        with pytest.raises(ValueError):
            await h.buckets(["a"], s(0), s(60), bad)
    with pytest.raises(ValueError):
        await h.buckets(["a"], s(0), s(60), 60, aggregates=("median",))
    with pytest.raises(ValueError):
        await h.buckets(["a"], s(0), s(60), 60, aggregates=())


async def test_latest_per_tag(backend: Backend) -> None:
    h = backend.historian
    await h.write([Point("a", s(t), float(t)) for t in range(10)])
    await h.write([Point("b", s(3), 30.0, Quality.UNCERTAIN)])
    await h.write([Point("a", s(2), -2.0)])  # a late point does not become the latest
    await backend.settle()
    got = await h.latest(["a", "b", "never-written"])
    assert got == {"a": Point("a", s(9), 9.0), "b": Point("b", s(3), 30.0, Quality.UNCERTAIN)}
    await h.write([Point("b", s(50), None, Quality.BAD_NOT_CONNECTED)])
    await backend.settle()
    assert (await h.latest(["b"]))["b"] == Point("b", s(50), None, Quality.BAD_NOT_CONNECTED)
    assert await h.latest([]) == {}


async def test_value_at_is_the_last_point_at_or_before(backend: Backend) -> None:
    h = backend.historian
    await h.write([Point("a", s(0), 1.0), Point("a", s(10), 2.0),
                   Point("a", s(7200), 3.0), Point("a", s(5 * 86_400), 4.0)])
    await backend.settle()
    assert await h.value_at("a", s(-1)) is None
    assert await h.value_at("a", s(0)) == Point("a", s(0), 1.0)
    assert await h.value_at("a", s(9.999)) == Point("a", s(0), 1.0)
    assert await h.value_at("a", s(10)) == Point("a", s(10), 2.0)
    assert await h.value_at("a", s(7199)) == Point("a", s(10), 2.0)  # beyond a 1 h look-back
    assert await h.value_at("a", s(4 * 86_400)) == Point("a", s(7200), 3.0)  # days back
    assert await h.value_at("a", s(10 * 86_400)) == Point("a", s(5 * 86_400), 4.0)
    assert await h.value_at("never-written", s(10)) is None


async def test_duckdb_file_survives_reopening(tmp_path: Path, no_thread_leak: None) -> None:
    path = tmp_path / "history.duckdb"
    async with DuckDBHistorian(path) as h:
        await h.write([Point("a", s(t), float(t)) for t in range(5)])
    async with DuckDBHistorian(path) as h:
        await h.write([Point("a", s(t), float(t)) for t in range(3, 8)])  # overlaps: replaces
        await h.write([Point("b", s(0), 1.0)])  # a new tag after reopening gets a fresh id
        assert [p.value for p in await h.raw("a", s(0), s(100))] == [float(t) for t in range(8)]
        assert await h.latest(["a", "b"]) == {"a": Point("a", s(7), 7.0), "b": Point("b", s(0), 1.0)}


async def test_points_need_aware_timestamps_and_uint32_quality() -> None:
    with pytest.raises(ValueError):
        Point("a", dt.datetime(2024, 1, 1), 1.0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError):
        Point("a", T0, 1.0, -1)
    with pytest.raises(ValueError):
        Point("a", T0, 1.0, 2**32)
    assert Point("a", T0.astimezone(TZ_PLUS3), 1.0).ts.tzinfo is dt.UTC
    assert Point("a", T0, float("nan")).value is None  # stored as null, as QuestDB does


async def test_data_a_backend_cannot_store_is_rejected_not_unavailable(
        writer: Backend) -> None:
    with pytest.raises(HistorianRejected):
        await writer.historian.write([Point("a", T0, "not a number")])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- QuestDB wire format


@pytest.fixture
async def receiver() -> AsyncIterator[QuestDBReceiver]:
    """A started loopback QuestDB."""
    r = QuestDBReceiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.mark.parametrize("versions", [(1, 2), (1,)], ids=["ilp-v2", "ilp-v1"])
async def test_questdb_write_sends_one_ilp_row_per_point(versions: tuple[int, ...],
                                                        no_thread_leak: None) -> None:
    receiver = QuestDBReceiver(versions=versions)
    await receiver.start()
    try:
        async with QuestDBHistorian(receiver.http_url, table="hist") as h:
            await h.write([
                Point("station/GRP-12/p_out", s(0.5), 312.25, Quality.GOOD),
                Point("station/GRP 12,odd=name", s(1), -0.0078125, Quality.UNCERTAIN),
                Point("station/GRP-12/p_out", s(2), None, Quality.BAD_NOT_CONNECTED),
            ])
        assert receiver.requests == ["GET /exec", "GET /settings", "POST /write"]
        (ddl,) = receiver.exec_queries
        assert ddl.startswith("CREATE TABLE IF NOT EXISTS hist (")
        assert "tag SYMBOL" in ddl and "ts TIMESTAMP) TIMESTAMP(ts)" in ddl
        assert ddl.endswith("WAL DEDUP UPSERT KEYS(ts, tag)")
        t0_ns = 1_709_251_200 * 10**9
        assert [(r.table, r.symbols, r.fields, r.ts_ns) for r in receiver.received] == [
            ("hist", {"tag": "station/GRP-12/p_out"}, {"value": 312.25, "quality": 0},
             t0_ns + 500_000_000),
            ("hist", {"tag": "station/GRP 12,odd=name"},
             {"value": -0.0078125, "quality": 0x40000000}, t0_ns + 10**9),
            ("hist", {"tag": "station/GRP-12/p_out"}, {"quality": 0x808A0000}, t0_ns + 2 * 10**9),
        ]
    finally:
        await receiver.stop()


async def test_questdb_errors_map_to_unavailable_and_rejected(receiver: QuestDBReceiver,
                                                              no_thread_leak: None) -> None:
    batch = [Point("a", s(t), float(t)) for t in range(100)]
    async with QuestDBHistorian(receiver.http_url, table="hist") as h:
        receiver.fail_writes = 500
        with pytest.raises(HistorianUnavailable):
            await h.write(batch)
        receiver.fail_writes = 400
        with pytest.raises(HistorianRejected):
            await h.write(batch)
        receiver.fail_writes = None
        await receiver.stop()
        with pytest.raises(HistorianUnavailable):
            await h.write(batch)
        await receiver.start()  # same port, same data: a restarted server
        await h.write(batch)  # the caller's batch, re-sent whole after the failures
        await h.write(batch)
    assert receiver.failed_writes == 2
    assert len(receiver.received) == 200 and len(receiver.rows("hist")) == 100
    # a failed flush drops the sender and re-creates the table, in case the server came back empty
    assert receiver.exec_queries.count(receiver.exec_queries[0]) >= 2


async def test_questdb_started_while_down_creates_its_table_on_the_first_write(
        no_thread_leak: None) -> None:
    receiver = QuestDBReceiver()
    await receiver.start()
    await receiver.stop()  # a free port nobody listens on
    try:
        async with QuestDBHistorian(receiver.http_url, table="hist") as h:
            with pytest.raises(HistorianUnavailable):
                await h.write([Point("a", s(0), 1.0)])
            await receiver.start()
            await h.write([Point("a", s(0), 1.0)])
        assert receiver.requests == ["GET /exec", "GET /settings", "POST /write"]
        assert len(receiver.rows("hist")) == 1
    finally:
        await receiver.stop()


async def test_questdb_without_pg_endpoint_is_write_only(receiver: QuestDBReceiver,
                                                         no_thread_leak: None) -> None:
    async with QuestDBHistorian(receiver.http_url) as h:
        with pytest.raises(HistorianUnavailable):
            await h.latest(["a"])
    with pytest.raises(ValueError):
        QuestDBHistorian(receiver.http_url, table="bad name; DROP")
