"""Store-and-forward: batches the historian cannot take now wait in a durable local buffer.

`StoreAndForward.write` hands a batch to the historian. When the historian raises
`HistorianUnavailable` or does not answer within `write_timeout_s`, the batch goes to the buffer
instead, and from then on every new batch goes behind it, so the history arrives in the order it
was written. A background drain task (owned by this object, cancelled and awaited by `close`)
retries the oldest batches with exponential backoff and, once the historian answers, sends them in
order, several batches per request. A batch leaves the buffer only after the historian
acknowledged it; a crash between the acknowledgement and the delete re-sends it on the next start,
which creates no duplicate because historian writes are idempotent on (tag, ts).

Why SQLite (stdlib ``sqlite3``, WAL, ``synchronous=FULL``) rather than an append-only file with
fsync: the buffer needs three operations, append at the tail, delete at the head after an
acknowledgement and drop the oldest when full, each atomic across a crash. SQLite gives all three
as single transactions on a table of one row per batch keyed by an AUTOINCREMENT sequence number
(never reused, so the order survives restarts); a flat file would need its own head pointer,
compaction and torn-write detection. ``synchronous=FULL`` makes each committed append survive a
power cut, not just a process crash; appends are one per batch (a few per second), so the fsync
cost does not matter. All SQLite calls run on a single-thread executor owned by this object.

The buffer is bounded by `max_points`. When an append would exceed it, the oldest batches are
dropped (never the ones being sent at that moment, whose fate the historian decides); if that is
not enough, the oldest points of the new batch. Every dropped point is counted in
`dropped_points`, logged, and reported to the drop listeners (the alarm engine); the same goes for
a batch the historian rejects as invalid (`HistorianRejected`), which retrying cannot cure. Points
are never lost silently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from realtime.historian.base import (
    AbstractHistorian,
    HistorianRejected,
    HistorianUnavailable,
    Point,
    from_epoch_us,
    to_epoch_us,
)

__all__ = ["Clock", "DropListener", "StoreAndForward", "SystemClock"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

DropListener = Callable[[int], None]  # called with the number of points just dropped

_DROP_LOG_INTERVAL_S: Final = 60.0
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " n_points INTEGER NOT NULL, payload BLOB NOT NULL)"
)


class Clock(Protocol):
    """Time as the buffer sees it: injected so tests can compress an outage into seconds."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep(seconds)`."""
        await asyncio.sleep(seconds)


def _encode(points: Sequence[Point]) -> bytes:
    return json.dumps([[p.tag, to_epoch_us(p.ts), p.value, int(p.quality)] for p in points],
                      separators=(",", ":")).encode()


def _decode(payload: bytes) -> list[Point]:
    return [Point(tag, from_epoch_us(us), value, quality)
            for tag, us, value, quality in json.loads(payload)]


class StoreAndForward:
    """Writes to `historian`, buffering in the SQLite file at `path` while it is unavailable.

    Arguments:
        historian: where the points go; started and closed by its owner, not by this object.
        path: the buffer file (created if missing; what a previous run left there is sent first).
        max_points: the most points the buffer holds; beyond it the oldest are dropped (counted).
        clock: time for the retry backoff (default: the real one).
        on_drop: a first drop listener (more with `add_drop_listener`).
        write_timeout_s: a historian write taking longer counts as unavailable (the batch is
            buffered; if the historian stored it after all, the replay is idempotent).
        backoff_min_s, backoff_max_s: the retry delay doubles from the first to the second.
        drain_chunk_points: the most points sent in one historian write while draining (at most
            a quarter of `max_points`; a single larger batch still goes whole).
    """

    def __init__(self, historian: AbstractHistorian, path: str | Path, max_points: int = 5_000_000,
                 clock: Clock | None = None, *, on_drop: DropListener | None = None,
                 write_timeout_s: float = 10.0, backoff_min_s: float = 0.5,
                 backoff_max_s: float = 30.0, drain_chunk_points: int = 50_000) -> None:
        if max_points <= 0 or drain_chunk_points <= 0:
            raise ValueError("max_points and drain_chunk_points must be positive")
        self._historian = historian
        self._path = Path(path)
        self._max_points = max_points
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._drop_listeners: list[DropListener] = [] if on_drop is None else [on_drop]
        self._write_timeout_s = write_timeout_s
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        # a chunk in flight cannot be dropped: keep it small beside the bound, so that a full
        # buffer still drops (mostly) the oldest points
        self._chunk_points = min(drain_chunk_points, max(1, max_points // 4))
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # used on the worker thread only
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # orders direct writes against buffering
        self._wakeup = asyncio.Event()  # something was buffered: the drain task has work
        self._drained = asyncio.Event()  # the buffer is empty
        # counters: written on the worker thread, read anywhere (plain ints)
        self._buffered_points = 0
        self._buffered_batches = 0
        self._inflight_last_seq = 0  # batches up to this seq are being sent: never dropped
        self._dropped_points = 0
        self._rejected_points = 0
        self._down_since: float | None = None
        self._drop_logged_at: float | None = None  # drops are logged at most once a minute
        self._unlogged_drops = 0

    # ------------------------------------------------------------------ public

    @property
    def dropped_points(self) -> int:
        """Points lost so far: dropped because the buffer was full, or rejected by the historian."""
        return self._dropped_points

    @property
    def rejected_points(self) -> int:
        """The part of `dropped_points` the historian refused as invalid."""
        return self._rejected_points

    @property
    def buffered_points(self) -> int:
        """Points waiting in the buffer (including a chunk being sent)."""
        return self._buffered_points

    @property
    def available(self) -> bool:
        """False from a failed historian write until the buffer has drained again."""
        return self._down_since is None

    def add_drop_listener(self, listener: DropListener) -> Callable[[], None]:
        """Call `listener(count)` whenever points are dropped; returns the unsubscribe callable."""
        self._drop_listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._drop_listeners.remove(listener)

        return unsubscribe

    async def start(self) -> None:
        """Open the buffer file and start the drain task (which first sends what is left there)."""
        if self._executor is not None:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="gasops-store-and-forward")
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        if self._buffered_batches:
            _log.warning("historian buffer %s holds %d points from a previous run: sending them first",
                         self._path, self._buffered_points)
            self._wakeup.set()
        else:
            self._drained.set()
        self._task = asyncio.create_task(self._drain_forever(), name=f"historian-drain:{self._path}")
        self._task.add_done_callback(self._task_done)

    async def close(self) -> None:
        """Stop the drain task and close the file; what is still buffered stays for the next start."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._unlogged_drops:
            _log.error("historian: %d points lost since the last report; %d lost in all",
                       self._unlogged_drops, self._dropped_points)
            self._unlogged_drops = 0
        executor, self._executor = self._executor, None
        if executor is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(executor, self._close_db)
            finally:
                executor.shutdown(wait=True)

    async def write(self, points: Sequence[Point]) -> None:
        """Store `points` in the historian, or durably in the buffer when it is unavailable.

        Returns once the points are acknowledged by the historian or committed to the buffer
        file. Never raises for a failing historian: a refused batch is counted as dropped, any
        other failure buffers the batch (an unexpected one is logged with its traceback).
        """
        if not points:
            return
        batch = list(points)  # our own copy: the caller may reuse its list
        async with self._lock:
            if self._executor is None:
                raise RuntimeError("StoreAndForward is not started (or already closed)")
            if self._buffered_batches == 0:
                try:
                    async with asyncio.timeout(self._write_timeout_s):
                        await self._historian.write(batch)
                except (HistorianUnavailable, TimeoutError) as exc:
                    self._note_down(exc)
                except HistorianRejected as exc:
                    self._lose(len(batch), rejected=True, reason=str(exc))
                    return
                except Exception as exc:  # a bug below us must not cost data: keep the batch
                    _log.exception("historian write failed unexpectedly; buffering the batch")
                    self._note_down(exc)
                else:
                    self._note_up()
                    return
            dropped = await self._run(self._append, batch)
            self._drained.clear()
            self._wakeup.set()
        if dropped:
            self._lose(dropped, rejected=False, reason=f"buffer full ({self._max_points} points)")

    async def wait_drained(self) -> None:
        """Wait until the buffer is empty (everything buffered reached the historian or was dropped)."""
        await self._drained.wait()

    # ------------------------------------------------------------------ drain task

    async def _drain_forever(self) -> None:
        backoff = self._backoff_min_s
        one_batch = False  # after a rejected chunk: send batch by batch to find the bad one
        while True:
            if self._buffered_batches == 0:
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                chunk = await self._run(self._peek, self._chunk_points, one_batch)
                if chunk is None:
                    continue
                first, last, points = chunk
                try:
                    async with asyncio.timeout(self._write_timeout_s):
                        await self._historian.write(points)
                except HistorianRejected as exc:
                    await self._run(self._release)
                    if first != last:  # several batches: find the bad one, batch by batch
                        one_batch = True
                        continue
                    await self._run(self._ack, first, last)  # retrying cannot cure it: drop it
                    self._lose(len(points), rejected=True, reason=str(exc))
                    one_batch = False
                    continue
                await self._run(self._ack, first, last)
            except (HistorianUnavailable, TimeoutError) as exc:
                await self._run(self._release)
                self._note_down(exc)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max_s)
                continue
            except Exception:
                # a bug or a broken buffer file: keep the task alive, retry later
                _log.exception("historian buffer drain failed; retrying in %.1f s", backoff)
                with contextlib.suppress(Exception):
                    await self._run(self._release)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max_s)
                continue
            one_batch = False
            backoff = self._backoff_min_s
            self._note_up()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _log.error("historian buffer drain task ended", exc_info=task.exception())

    # ------------------------------------------------------------------ bookkeeping

    def _note_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = self._clock.monotonic()
            _log.warning("historian unavailable, buffering to %s: %s", self._path,
                         exc or type(exc).__name__)

    def _note_up(self) -> None:
        if self._down_since is not None and self._buffered_batches == 0:
            _log.info("historian available again after %.1f s; buffer drained",
                      self._clock.monotonic() - self._down_since)
            self._down_since = None

    def _lose(self, count: int, *, rejected: bool, reason: str) -> None:
        self._dropped_points += count
        if rejected:
            self._rejected_points += count
        self._unlogged_drops += count
        now = self._clock.monotonic()
        if self._drop_logged_at is None or now - self._drop_logged_at >= _DROP_LOG_INTERVAL_S:
            _log.error("historian: %d points lost since the last report (now: %s); %d lost in all",
                       self._unlogged_drops, reason, self._dropped_points)
            self._drop_logged_at, self._unlogged_drops = now, 0
        for listener in list(self._drop_listeners):
            try:
                listener(count)
            except Exception:
                _log.exception("historian drop listener %r failed", listener)

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        executor = self._executor
        if executor is None:
            raise RuntimeError("StoreAndForward is not started (or already closed)")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    # ------------------------------------------------------------------ worker thread (SQLite)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        try:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # effective on a new file only
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute(_SCHEMA)
            batches, points = db.execute(
                "SELECT count(*), coalesce(sum(n_points), 0) FROM batches").fetchone()
        except BaseException:
            db.close()
            raise
        self._db = db
        self._buffered_batches, self._buffered_points = batches, points

    def _close_db(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _database(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("historian buffer is closed")
        return self._db

    def _append(self, points: list[Point]) -> int:
        """Append one batch, dropping the oldest points to stay within bounds; returns the drops."""
        db = self._database()
        dropped = 0
        if len(points) > self._max_points:
            dropped += len(points) - self._max_points
            points = points[-self._max_points:]
        excess = self._buffered_points + len(points) - self._max_points
        freed_points = freed_batches = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            if excess > 0:
                victims: list[int] = []
                for seq, n in db.execute(
                        "SELECT seq, n_points FROM batches WHERE seq > ? ORDER BY seq",
                        (self._inflight_last_seq,)):
                    if freed_points >= excess:
                        break
                    victims.append(seq)
                    freed_points += n
                    freed_batches += 1
                db.executemany("DELETE FROM batches WHERE seq = ?", [(s,) for s in victims])
                if freed_points < excess:  # the batches being sent hold the rest of the room
                    cut = excess - freed_points
                    points = points[cut:]
                    dropped += cut
                dropped += freed_points
            if points:
                db.execute("INSERT INTO batches (n_points, payload) VALUES (?, ?)",
                           (len(points), _encode(points)))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._buffered_points += len(points) - freed_points
        self._buffered_batches += (1 if points else 0) - freed_batches
        return dropped

    def _peek(self, max_points: int, one_batch: bool) -> tuple[int, int, list[Point]] | None:
        """The oldest batches, up to `max_points` (at least one batch); marks them in flight."""
        db = self._database()
        first = last = 0
        points: list[Point] = []
        for seq, n, payload in db.execute(
                "SELECT seq, n_points, payload FROM batches ORDER BY seq"):
            if points and (one_batch or len(points) + n > max_points):
                break
            first = first or seq
            last = seq
            points.extend(_decode(payload))
        if not points:  # counters out of step with the file (cannot happen): trust the file
            self._buffered_batches = self._buffered_points = 0
            return None
        self._inflight_last_seq = last
        return first, last, points

    def _release(self) -> None:
        self._inflight_last_seq = 0

    def _ack(self, first: int, last: int) -> None:
        """The historian has the batches first..last: delete them."""
        db = self._database()
        db.execute("BEGIN IMMEDIATE")
        try:
            n_batches, n_points = db.execute(
                "SELECT count(*), coalesce(sum(n_points), 0) FROM batches WHERE seq BETWEEN ? AND ?",
                (first, last)).fetchone()
            db.execute("DELETE FROM batches WHERE seq BETWEEN ? AND ?", (first, last))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._inflight_last_seq = 0
        self._buffered_batches -= n_batches
        self._buffered_points -= n_points
        if self._buffered_batches == 0:
            db.execute("PRAGMA incremental_vacuum")
