"""A historian run in a child process, so that its work does not compete with the pipeline
for this process's GIL.

Why: DuckDB's Python client takes the GIL back again and again while a statement runs (to check
for Ctrl-C), so a DuckDB write on a worker thread and the telemetry pipeline on the event loop
take turns on one core instead of using two. Measured on the 2-core development machine: a
DuckDB query ran 8x slower beside one busy Python thread, and the whole pipeline into DuckDB
topped out at ~80,000 points/s at 100 % of one core. In a child process the writes run on the
other core.

The child owns the backend (DuckDB lets one process open a file for writing anyway) and serves
every call of the `AbstractHistorian` interface over a pipe, one at a time in arrival order.
Written points cross the pipe as columns (paths, epoch microseconds, values, qualities): lists
of plain values pickle about ten times faster than `Point` objects.

Failure handling: if the child dies, the call in flight raises `HistorianUnavailable`, and the
next call starts a new child (a `StoreAndForward` in front keeps the points meanwhile and
re-sends them; writes are idempotent on (tag, ts)). A call that is cancelled or times out
while the child works kills the child too: its answer would otherwise arrive as the answer to
the next call. Killing a DuckDB writer mid-transaction loses nothing committed — the
transaction is rolled back from the write-ahead log when the file is opened again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from realtime.historian.base import (
    AGGREGATES,
    AbstractHistorian,
    BucketSeries,
    HistorianRejected,
    HistorianUnavailable,
    Point,
    from_epoch_us,
    to_epoch_us,
)
from realtime.model import TagPath

__all__ = ["HistorianProcess"]

log = logging.getLogger(__name__)

HistorianFactory = Callable[[], AbstractHistorian]
_Columns = tuple[list[TagPath], list[int], list[float | None], list[int]]


def _to_columns(points: Sequence[Point]) -> _Columns:
    stamps = [p.ts for p in points]
    epoch = {ts: to_epoch_us(ts) for ts in set(stamps)}  # a batch shares a few timestamps
    return ([p.tag for p in points], [epoch[ts] for ts in stamps], [p.value for p in points],
            [p.quality for p in points])


def _from_columns(columns: _Columns) -> list[Point]:
    tags, ts_us, values, quality = columns
    stamps = {us: from_epoch_us(us) for us in set(ts_us)}
    return [Point(t, stamps[us], v, q) for t, us, v, q in zip(tags, ts_us, values, quality,
                                                              strict=True)]


def _serve(conn: Connection, factory: HistorianFactory) -> None:
    """The child: start the historian, report, then answer calls until "close" or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes us
    loop = asyncio.new_event_loop()
    historian = factory()
    try:
        try:
            loop.run_until_complete(historian.start())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
            _reply(conn, False, exc)
            return
        _reply(conn, True, None)
        while True:
            try:
                method, args = conn.recv()
            except EOFError:  # the parent went away
                return
            if method == "close":
                break
            try:
                if method == "buckets" and hasattr(historian, "bucket_table"):
                    method = "bucket_table"  # sent as Arrow, converted by the parent
                if method == "write" and hasattr(historian, "write_columns"):
                    method, args = "write_columns", args[0]  # no Point objects to rebuild
                elif method == "write":
                    args = (_from_columns(args[0]),)
                result = loop.run_until_complete(getattr(historian, method)(*args))
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
                _reply(conn, False, exc)
            else:
                _reply(conn, True, result)
        loop.run_until_complete(historian.close())
        _reply(conn, True, None)
    finally:
        loop.close()


def _reply(conn: Connection, ok: bool, payload: Any) -> None:
    try:
        conn.send((ok, payload))
    except (BrokenPipeError, EOFError, OSError):
        pass  # the parent is gone: nobody to tell
    except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
        conn.send((False, HistorianRejected(f"historian process cannot return this: {exc!r}")))


class HistorianProcess(AbstractHistorian):
    """The historian `factory()` builds, running in a child process (see the module docstring).

    `factory` must be picklable (a class, or a `functools.partial` of one): the child is started
    with the "spawn" method, which is safe in a process with threads, unlike "fork".
    """

    def __init__(self, factory: HistorianFactory, *, start_timeout_s: float = 120.0,
                 close_timeout_s: float = 30.0) -> None:
        self._factory = factory
        self._start_timeout_s = start_timeout_s
        self._close_timeout_s = close_timeout_s
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._started = False
        self.restarts = 0  # children started after the first one

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the child and the historian in it; idempotent. Raises `HistorianUnavailable`
        (or what the backend's own start raised) when it cannot start."""
        async with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="gasops-historian-process")
            self._started = True
            if self._process is None:
                await self._spawn()

    async def close(self) -> None:
        """Ask the child to close the historian and exit; kill it if it does not. Idempotent."""
        async with self._lock:
            self._started = False
            if self._process is not None and self._conn is not None:
                with contextlib.suppress(HistorianUnavailable, TimeoutError, OSError, EOFError):
                    async with asyncio.timeout(self._close_timeout_s):
                        await self._roundtrip("close", ())
            await self._stop_child()
            executor, self._executor = self._executor, None
            if executor is not None:
                executor.shutdown(wait=True)

    @property
    def pid(self) -> int | None:
        """The child's process id, while one runs."""
        return self._process.pid if self._process is not None else None

    async def _spawn(self) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(child, self._factory), daemon=True,
                                        name="gasops-historian")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, process.start)
        child.close()  # the child holds its own copy; ours would hide its death (no EOF)
        self._process, self._conn = process, parent
        try:
            async with asyncio.timeout(self._start_timeout_s):
                ok, payload = await loop.run_in_executor(self._executor, parent.recv)
        except (TimeoutError, EOFError, OSError) as exc:
            await self._stop_child()
            raise HistorianUnavailable(f"historian process did not start: {exc!r}") from exc
        except BaseException:
            await self._stop_child()
            raise
        if not ok:
            await self._stop_child()
            raise payload
        log.info("historian process %d started", process.pid)

    async def _stop_child(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, process.join, self._close_timeout_s)
        if process.is_alive():
            process.kill()
            await loop.run_in_executor(None, process.join)
        process.close()

    # ------------------------------------------------------------------ calls

    async def _call(self, method: str, *args: Any) -> Any:
        async with self._lock:
            if not self._started or self._executor is None:
                raise HistorianUnavailable("historian process is not started (or closed)")
            if self._process is None:  # the last one died: start a new one
                self.restarts += 1
                await self._spawn()
            return await self._roundtrip(method, args)

    async def _roundtrip(self, method: str, args: tuple[Any, ...]) -> Any:
        conn = self._conn
        assert conn is not None and self._executor is not None

        def exchange() -> tuple[bool, Any]:
            conn.send((method, args))
            return conn.recv()  # type: ignore[no-any-return]

        try:
            ok, payload = await asyncio.get_running_loop().run_in_executor(self._executor, exchange)
        except (EOFError, OSError) as exc:  # the child died (or its pipe broke)
            log.error("historian process died during %s: %r", method, exc)
            await self._stop_child()
            raise HistorianUnavailable(f"historian process died: {exc!r}") from exc
        except BaseException:  # cancelled or timed out: its late answer must not be read later
            if self._process is not None:
                self._process.kill()
            await asyncio.shield(self._stop_child())
            raise
        if not ok:
            raise payload
        return payload

    async def write(self, points: Sequence[Point]) -> None:
        """Store `points` in the child's historian (sent as columns)."""
        if points:
            await self._call("write", _to_columns(points))

    async def raw(self, tag: TagPath, start: dt.datetime, end: dt.datetime) -> list[Point]:
        """See `AbstractHistorian.raw`."""
        return await self._call("raw", tag, start, end)  # type: ignore[no-any-return]

    async def buckets(self, tags: Sequence[TagPath], start: dt.datetime, end: dt.datetime,
                      bucket_s: int, aggregates: Sequence[str] = AGGREGATES,
                      ) -> dict[TagPath, BucketSeries]:
        """See `AbstractHistorian.buckets`. A backend with `bucket_table` (DuckDB) answers
        with its Arrow result, converted here: an Arrow table crosses the pipe as a few
        buffers, where the same answer as Python tuples took ~100 ms more to pickle."""
        answer = await self._call("buckets", list(tags), start, end, bucket_s, list(aggregates))
        if isinstance(answer, dict):
            return answer
        from realtime.historian.duckdb import series_from_table

        return series_from_table(answer)

    async def latest(self, tags: Sequence[TagPath]) -> dict[TagPath, Point]:
        """See `AbstractHistorian.latest`."""
        return await self._call("latest", list(tags))  # type: ignore[no-any-return]

    async def value_at(self, tag: TagPath, ts: dt.datetime) -> Point | None:
        """See `AbstractHistorian.value_at`."""
        return await self._call("value_at", tag, ts)  # type: ignore[no-any-return]
