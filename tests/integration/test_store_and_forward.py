"""Store-and-forward: an unreachable historian under 2,000 points/s, then back → stored == sent.

The acceptance: "the historian is unreachable for 30 s under 2,000 points/s, then returns →
stored rows equal sent rows exactly (no loss, no duplicates), also when the server process
restarts during the outage". Time is compressed: the producer and the retry backoff run on a
`ScaledClock` (one simulated second = 10 ms), so 30 s of outage and 60,000 points take well under
a few seconds. The historian is a real DuckDB file behind a switch, or the QuestDB adapter against
the loopback receiver answering 500 and then refusing connections, restarted during the outage.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from realtime.historian.base import (
    AGGREGATES,
    AbstractHistorian,
    BucketSeries,
    HistorianRejected,
    HistorianUnavailable,
    Point,
)
from realtime.historian.buffer import StoreAndForward
from realtime.historian.duckdb import DuckDBHistorian
from realtime.historian.process import HistorianProcess
from realtime.historian.questdb import QuestDBHistorian
from realtime.model import TagPath
from tests.integration._questdb_receiver import QuestDBReceiver

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
# the worker threads of the adapters and the buffer (thread_name_prefix)
HISTORIAN_THREADS = ("gasops-duckdb-historian", "gasops-questdb-historian", "gasops-store-and-forward",
                     "gasops-historian-process")
TAGS = [f"station/GRP-{i:03d}/p_out" for i in range(100)]
RATE = 2_000  # points per simulated second
TICK_S = 0.1  # one batch per tick: 200 points
SCALE = 0.01  # real seconds per simulated second

Key = tuple[str, int]  # (tag, epoch microseconds)


class ScaledClock:
    """Simulated time running 1/SCALE times faster than real time."""

    def __init__(self, scale: float = SCALE) -> None:
        self.scale = scale

    def monotonic(self) -> float:
        """Simulated seconds."""
        return time.monotonic() / self.scale

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of simulated time."""
        await asyncio.sleep(seconds * self.scale)


@dataclass
class Switchable(AbstractHistorian):
    """A real historian behind a switch: while `up` is False every write is unavailable."""

    inner: AbstractHistorian
    up: bool = True
    rejected_tags: set[str] = field(default_factory=set)
    attempts: int = 0

    async def start(self) -> None:
        await self.inner.start()

    async def write(self, points: Sequence[Point]) -> None:
        self.attempts += 1
        if not self.up:
            raise HistorianUnavailable("switched off")
        if any(p.tag in self.rejected_tags for p in points):
            raise HistorianRejected("poisoned batch")
        await self.inner.write(points)

    async def raw(self, tag: TagPath, start: dt.datetime, end: dt.datetime) -> list[Point]:
        return await self.inner.raw(tag, start, end)

    async def buckets(self, tags: Sequence[TagPath], start: dt.datetime, end: dt.datetime,
                      bucket_s: int, aggregates: Sequence[str] = AGGREGATES,
                      ) -> dict[TagPath, BucketSeries]:
        return await self.inner.buckets(tags, start, end, bucket_s, aggregates)

    async def latest(self, tags: Sequence[TagPath]) -> dict[TagPath, Point]:
        return await self.inner.latest(tags)

    async def value_at(self, tag: TagPath, ts: dt.datetime) -> Point | None:
        return await self.inner.value_at(tag, ts)

    async def close(self) -> None:
        await self.inner.close()


class Producer:
    """2,000 points per simulated second, 100 tags, unique (tag, ts); remembers what it sent."""

    def __init__(self, clock: ScaledClock) -> None:
        self.clock = clock
        self.tick = 0
        self.sent: list[Point] = []

    def batch(self) -> list[Point]:
        per_tag = round(RATE * TICK_S) // len(TAGS)
        base = T0 + dt.timedelta(seconds=self.tick * TICK_S)
        step = dt.timedelta(seconds=TICK_S / per_tag)
        points = [Point(tag, base + k * step, float(self.tick) + i / 1000.0)
                  for k in range(per_tag) for i, tag in enumerate(TAGS)]
        self.tick += 1
        self.sent += points
        return points

    async def run(self, saf: StoreAndForward, seconds: float) -> None:
        """Write for `seconds` of simulated time at RATE."""
        for _ in range(round(seconds / TICK_S)):
            await saf.write(self.batch())
            await self.clock.sleep(TICK_S)

    def keys(self) -> list[Key]:
        return [_key(p) for p in self.sent]


def _key(p: Point) -> Key:
    return p.tag, (p.ts - T0) // dt.timedelta(microseconds=1)


async def _stored_duckdb(historian: AbstractHistorian) -> list[Key]:
    far = dt.timedelta(days=365)
    out: list[Key] = []
    for tag in TAGS:
        out += [_key(p) for p in await historian.raw(tag, T0 - far, T0 + far)]
    return out


def _stored_receiver(receiver: QuestDBReceiver) -> list[Key]:
    t0_ns = int(T0.timestamp()) * 10**9
    return [(r.symbols["tag"], ((r.ts_ns or 0) - t0_ns) // 1000) for r in receiver.rows()]


async def _drained(saf: StoreAndForward, timeout_s: float = 30.0) -> None:
    await asyncio.wait_for(saf.wait_drained(), timeout_s)


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Every worker thread (DuckDB, QuestDB client, SQLite buffer) is gone after each test."""
    yield
    assert [t.name for t in threading.enumerate() if t.name.startswith(HISTORIAN_THREADS)] == []


@pytest.fixture
async def duck(tmp_path: Path) -> AsyncIterator[Switchable]:
    """A DuckDB historian on a real file behind an availability switch."""
    h = Switchable(DuckDBHistorian(tmp_path / "history.duckdb"))
    await h.start()
    try:
        yield h
    finally:
        await h.close()


def _saf(historian: AbstractHistorian, path: Path, clock: ScaledClock, **kw: object
         ) -> StoreAndForward:
    return StoreAndForward(historian, path, clock=clock, backoff_min_s=0.5, backoff_max_s=30.0,
                           **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the acceptance


async def test_outage_of_30_s_at_2000_points_per_s_loses_and_duplicates_nothing(
        duck: Switchable, tmp_path: Path) -> None:
    clock = ScaledClock()
    producer = Producer(clock)
    saf = _saf(duck, tmp_path / "buffer.sqlite3", clock)
    await saf.start()
    try:
        await producer.run(saf, 2)  # historian up
        duck.up = False
        await producer.run(saf, 30)  # 60,000 points into the outage
        assert saf.buffered_points == 60_000 and not saf.available
        duck.up = True
        await producer.run(saf, 2)  # still queued behind the backlog, in order
        await _drained(saf)
        assert saf.available and saf.buffered_points == 0 and saf.dropped_points == 0
    finally:
        await saf.close()
    stored = await _stored_duckdb(duck)
    assert len(producer.sent) == 68_000
    assert len(stored) == len(producer.sent)  # no duplicates (raw returns every stored row)
    assert set(stored) == set(producer.keys())  # no loss
    assert (tmp_path / "buffer.sqlite3").exists()


async def test_buffer_and_historian_restart_during_the_outage(duck: Switchable,
                                                              tmp_path: Path) -> None:
    """The process restarts while down: a new buffer over the same file sends what is left."""
    clock = ScaledClock()
    producer = Producer(clock)
    path = tmp_path / "buffer.sqlite3"
    saf = _saf(duck, path, clock)
    await saf.start()
    await producer.run(saf, 1)
    duck.up = False
    await producer.run(saf, 15)
    buffered = saf.buffered_points
    await saf.close()
    del saf
    await duck.close()  # the embedded historian goes down with the process

    restarted = Switchable(DuckDBHistorian(tmp_path / "history.duckdb"), up=False)
    await restarted.start()
    saf = _saf(restarted, path, clock)
    await saf.start()
    try:
        assert saf.buffered_points == buffered == 30_000
        await producer.run(saf, 15)  # the rest of the outage, after the restart
        restarted.up = True
        await producer.run(saf, 1)
        await _drained(saf)
    finally:
        await saf.close()
    try:
        stored = await _stored_duckdb(restarted)
    finally:
        await restarted.close()
    assert len(stored) == len(producer.sent) == 64_000
    assert set(stored) == set(producer.keys())


async def test_questdb_outage_and_server_restart_against_the_loopback_receiver(
        tmp_path: Path) -> None:
    """500s, then the server process gone (refused), then back on the same port with its data."""
    clock = ScaledClock()
    producer = Producer(clock)
    receiver = QuestDBReceiver()
    await receiver.start()
    historian = QuestDBHistorian(receiver.http_url, table="history", request_timeout_s=2.0)
    await historian.start()
    saf = _saf(historian, tmp_path / "buffer.sqlite3", clock)
    await saf.start()
    try:
        await producer.run(saf, 2)
        receiver.fail_writes = 500
        await producer.run(saf, 10)
        await receiver.stop()  # the server process dies...
        await producer.run(saf, 10)
        receiver.fail_writes = None
        await receiver.start()  # ...and comes back over its data, still during the outage
        await receiver.stop()
        await producer.run(saf, 10)
        assert saf.buffered_points > 0 and not saf.available
        await receiver.start()
        await producer.run(saf, 2)
        await _drained(saf)
    finally:
        await saf.close()
        await historian.close()
        await receiver.stop()
    stored = _stored_receiver(receiver)
    assert len(stored) == len(producer.sent) == 68_000
    assert set(stored) == set(producer.keys())
    # every row crossed the wire exactly once: failed requests stored nothing, none was re-sent
    assert len(receiver.received) == len(producer.sent)
    assert receiver.failed_writes > 0


# --------------------------------------------------------------------------- bounds and drops


async def test_a_full_buffer_drops_the_oldest_and_counts_every_point(duck: Switchable,
                                                                     tmp_path: Path) -> None:
    clock = ScaledClock()
    producer = Producer(clock)
    drops: list[int] = []
    saf = _saf(duck, tmp_path / "buffer.sqlite3", clock, max_points=10_000, on_drop=drops.append)
    late: list[int] = []
    unsubscribe = saf.add_drop_listener(late.append)
    await saf.start()
    try:
        duck.up = False
        await producer.run(saf, 15)  # 30,000 points into a 10,000-point buffer
        assert saf.buffered_points == 10_000 and saf.dropped_points == 20_000
        unsubscribe()
        duck.up = True
        await producer.run(saf, 1)
        await _drained(saf)
    finally:
        await saf.close()
    stored = await _stored_duckdb(duck)
    sent = producer.keys()
    assert sum(late) == 20_000  # what was dropped while that listener was subscribed
    assert sum(drops) == saf.dropped_points >= 20_000  # the backlog stays full a while after
    assert len(stored) + saf.dropped_points == len(sent)
    assert len(set(stored)) == len(stored) and set(stored) <= set(sent)
    # the oldest went: a drain chunk in flight (at most a quarter of the buffer) is never
    # dropped, so at least the newest three quarters of the buffer's worth survive
    assert set(sent[-7_500:]) <= set(stored)


async def test_a_single_batch_larger_than_the_buffer_keeps_its_newest_points(
        duck: Switchable, tmp_path: Path) -> None:
    drops: list[int] = []
    saf = _saf(duck, tmp_path / "buffer.sqlite3", ScaledClock(), max_points=100,
               on_drop=drops.append)
    await saf.start()
    try:
        duck.up = False
        batch = [Point("a", T0 + dt.timedelta(seconds=i), float(i)) for i in range(250)]
        await saf.write(batch)
        assert drops == [150] and saf.dropped_points == 150 and saf.buffered_points == 100
        duck.up = True
        await _drained(saf)
    finally:
        await saf.close()
    stored = await duck.raw("a", T0, T0 + dt.timedelta(hours=1))
    assert [p.value for p in stored] == [float(i) for i in range(150, 250)]


async def test_a_batch_the_historian_rejects_is_dropped_counted_and_the_rest_drains(
        duck: Switchable, tmp_path: Path) -> None:
    drops: list[int] = []
    saf = _saf(duck, tmp_path / "buffer.sqlite3", ScaledClock(), on_drop=drops.append)
    await saf.start()
    try:
        duck.up = False
        good1 = [Point("a", T0 + dt.timedelta(seconds=i), 1.0) for i in range(10)]
        poison = [Point("poison", T0, 1.0), Point("poison", T0 + dt.timedelta(seconds=1), 2.0)]
        good2 = [Point("b", T0 + dt.timedelta(seconds=i), 2.0) for i in range(10)]
        for batch in (good1, poison, good2):
            await saf.write(batch)
        duck.rejected_tags.add("poison")
        duck.up = True
        await _drained(saf)
        # rejected directly (no backlog): counted too, never raised to the producer
        await saf.write([Point("poison", T0 + dt.timedelta(seconds=5), 3.0)])
    finally:
        await saf.close()
    assert drops == [2, 1] and saf.rejected_points == saf.dropped_points == 3
    assert len(await duck.raw("a", T0, T0 + dt.timedelta(hours=1))) == 10
    assert len(await duck.raw("b", T0, T0 + dt.timedelta(hours=1))) == 10


async def test_a_batch_acknowledged_but_not_deleted_before_a_crash_is_not_duplicated(
        duck: Switchable, tmp_path: Path) -> None:
    """The crash window between the historian's ack and the buffer's delete: replay is harmless."""
    path = tmp_path / "buffer.sqlite3"
    batch = [Point("a", T0 + dt.timedelta(seconds=i), float(i)) for i in range(100)]
    saf = _saf(duck, path, ScaledClock())
    await saf.start()
    duck.up = False
    await saf.write(batch)
    await saf.close()
    await duck.inner.write(batch)  # the historian had it already; the buffer still does
    duck.up = True
    saf = _saf(duck, path, ScaledClock())
    await saf.start()
    try:
        await _drained(saf)
    finally:
        await saf.close()
    stored = await duck.raw("a", T0, T0 + dt.timedelta(hours=1))
    assert stored == batch


async def test_a_historian_that_hangs_counts_as_unavailable(tmp_path: Path) -> None:
    class Hanging(Switchable):
        async def write(self, points: Sequence[Point]) -> None:
            self.attempts += 1
            if not self.up:
                await asyncio.Event().wait()  # never answers
            await self.inner.write(points)

    h = Hanging(DuckDBHistorian(tmp_path / "history.duckdb"), up=False)
    await h.start()
    saf = StoreAndForward(h, tmp_path / "buffer.sqlite3", clock=ScaledClock(),
                          write_timeout_s=0.05, backoff_min_s=0.5)
    await saf.start()
    try:
        await saf.write([Point("a", T0, 1.0)])  # times out, then buffered
        assert saf.buffered_points == 1 and not saf.available
        h.up = True
        await _drained(saf)
        assert saf.available
    finally:
        await saf.close()
        await h.close()


async def test_write_before_start_is_refused(duck: Switchable, tmp_path: Path) -> None:
    saf = StoreAndForward(duck, tmp_path / "buffer.sqlite3")
    with pytest.raises(RuntimeError):
        await saf.write([Point("a", T0, 1.0)])
    with pytest.raises(ValueError):
        StoreAndForward(duck, tmp_path / "b.sqlite3", max_points=0)


# --------------------------------------------------------------------------- historian process


async def test_the_historian_process_killed_mid_stream_loses_and_duplicates_nothing(
        tmp_path: Path) -> None:
    """The DuckDB child is SIGKILLed twice under 2,000 points/s (once possibly mid-transaction):
    the buffer keeps the points, a new child opens the same file, stored == sent exactly."""
    process = HistorianProcess(functools.partial(DuckDBHistorian, tmp_path / "history.duckdb"))
    clock = ScaledClock()
    producer = Producer(clock)
    saf = _saf(process, tmp_path / "buffer.sqlite3", clock)
    await process.start()
    await saf.start()
    try:
        for _ in range(2):
            await producer.run(saf, 3)
            pid = process.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await producer.run(saf, 5)
        await _drained(saf)
        assert saf.available and saf.dropped_points == 0
        assert process.restarts >= 2 and process.pid not in (None, pid)
        stored = await _stored_duckdb(process)
    finally:
        await saf.close()
        await process.close()
    assert len(stored) == len(producer.sent) == 32_000
    assert set(stored) == set(producer.keys())


async def test_a_call_given_up_on_kills_the_child_and_the_next_call_gets_a_new_one(
        tmp_path: Path) -> None:
    """A timed-out call must not leave its late answer in the pipe for the next call."""
    process = HistorianProcess(functools.partial(DuckDBHistorian, tmp_path / "history.duckdb"))
    await process.start()
    try:
        await process.write([Point("a", T0, 1.0)])
        first = process.pid
        big = [Point(f"t{i % 500}", T0 + dt.timedelta(seconds=1 + i // 500), float(i))
               for i in range(300_000)]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.001):
                await process.write(big)
        assert process.pid is None  # killed, not left working
        assert [p.value for p in await process.raw("a", T0, T0 + dt.timedelta(seconds=1))] == [1.0]
        assert process.pid not in (None, first) and process.restarts == 1
    finally:
        await process.close()
    assert process.pid is None


async def test_errors_in_the_child_come_back_as_themselves(tmp_path: Path) -> None:
    process = HistorianProcess(functools.partial(DuckDBHistorian, tmp_path / "history.duckdb"))
    await process.start()
    try:
        with pytest.raises(ValueError, match="bucket_s"):
            await process.buckets(["a"], T0, T0 + dt.timedelta(hours=1), 7)
        assert process.restarts == 0 and process.pid is not None  # the child lives on
    finally:
        await process.close()
    with pytest.raises(HistorianUnavailable, match="not started"):
        await process.latest(["a"])


async def test_a_backend_that_cannot_start_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "dir.duckdb").mkdir()  # a directory where the file should be
    process = HistorianProcess(functools.partial(DuckDBHistorian, tmp_path / "dir.duckdb"))
    with pytest.raises(HistorianUnavailable):
        await process.start()
    assert process.pid is None
    await process.close()
