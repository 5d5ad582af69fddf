"""What every runner of twin jobs does around the job itself, written once: a queue, one worker
task that runs this process's queued jobs one at a time, and recording how each ended.

What-if scenarios and leak localizations (`server/twin_scenarios.py`) and pressure plans
(`server/pressure_plan.py`) are jobs recorded in the database with one life cycle
(`erp.services.jobs`), run the same way on the live twin: the runner records a job `queued`
and puts it on its queue (`_enqueue`); the worker task takes it off and runs it (`_execute`, the
runner's own), which records it `running`, then `done` or `failed`. Shared here:

- at most `max_pending` jobs queued or running in this process; a runner refuses more
  (`_refuse_if_full`) until some finish;
- the worker survives a job that raises (a bug, a lost database): it logs the traceback and
  records the job failed with an "internal error … (see the server log)", then takes the next;
- `stop` records the jobs still queued or running here as failed: no other process will run
  them, and nobody should wait for them;
- the steps of running a job on the live twin: its last good solve (`_live_state`), the work
  in a worker thread so the event loop never waits for it (`_in_thread`), recording its outcome
  (`_record`) — each recording the job failed, with the reason, when it goes wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from erp.services import jobs
from server.twin_runner import TwinRunner

__all__ = ["JobStore", "JobWorker"]

J = TypeVar("J")
"""What the queue carries with a job's id for `_execute` (nothing, or a kind and a spec)."""
T = TypeVar("T")


class JobStore(Protocol):
    """The part of a job store module (`erp.services.twin_scenarios`, `…pressure_plans`) the
    worker uses."""

    async def get(self, session: Any, job_id: str, /) -> Any: ...

    async def finish(self, session: Any, job_id: str, summary: Mapping[str, Any],
                     result: Mapping[str, Any], /) -> Any: ...

    async def fail(self, session: Any, job_id: str, error: str, /, *,
                   summary: Mapping[str, Any] | None = None,
                   result: Mapping[str, Any] | None = None) -> Any: ...


class JobWorker(Generic[J]):
    """A queue of twin jobs and the task that runs them one at a time (module docstring).

    A subclass names its task, its log and its failure messages (the class variables below),
    and runs one job in `_execute`."""

    _task_name: ClassVar[str]
    """The asyncio task's name."""
    _log: ClassVar[logging.Logger]
    _noun: ClassVar[str]
    """A job in log lines: "<noun> <id> failed"."""
    _crash_log: ClassVar[str]
    """Logged, with the job's id for `%s`, when running a job raised."""
    _crash_error: ClassVar[str]
    """Recorded as the error of a job whose run raised."""
    _stopped_error: ClassVar[str]
    """Recorded as the error of a job `stop` leaves unfinished."""

    def __init__(self, db: Any, store: JobStore, twin: TwinRunner, *, max_pending: int) -> None:
        self._db = db
        self._store = store
        self._twin = twin
        self._max_pending = max_pending
        self._queue: asyncio.Queue[tuple[str, J]] = asyncio.Queue()
        self._pending: dict[str, None] = {}  # queued or running in this process, in order
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin taking jobs off the queue."""
        self._task = asyncio.create_task(self._run(), name=self._task_name)

    async def stop(self) -> None:
        """Stop; jobs still queued or running here are recorded as failed. Idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for job_id in list(self._pending):
            with contextlib.suppress(Exception):
                async with self._db() as s:
                    rec = await self._store.get(s, job_id)
                if rec is not None and rec.status not in jobs.FINISHED:
                    await self._fail(job_id, self._stopped_error)
        self._pending.clear()

    @property
    def pending(self) -> int:
        """Jobs queued or running in this process."""
        return len(self._pending)

    # -- queueing -----------------------------------------------------------------------------

    def _refuse_if_full(self, rejected: type[Exception], busy: str, then: str) -> None:
        """Raise `rejected` ("<n> <busy> already (at most <max>); <then>") when this process
        holds as many jobs as it may."""
        if len(self._pending) >= self._max_pending:
            raise rejected(f"{len(self._pending)} {busy} already (at most {self._max_pending}); "
                           f"{then}")

    def _enqueue(self, job_id: str, job: J) -> None:
        """Queue a job recorded `queued`, with what `_execute` needs to run it."""
        self._pending[job_id] = None
        self._queue.put_nowait((job_id, job))

    # -- running ------------------------------------------------------------------------------

    async def _execute(self, job_id: str, job: J) -> None:
        """Run one job and record how it ended (the subclass's)."""
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            job_id, job = await self._queue.get()
            try:
                await self._execute(job_id, job)
            except asyncio.CancelledError:
                raise
            except Exception:  # the worker must survive a bad job or a lost database
                self._log.exception(self._crash_log, job_id)
                with contextlib.suppress(Exception):
                    await self._fail(job_id, self._crash_error)
            self._pending.pop(job_id, None)

    async def _live_state(self, job_id: str, nothing: str) -> tuple[Any, Any, Any, str | None] | None:
        """(model, parameters, Result, when it was solved — None unless the latest solve
        converged) of the live twin's last good solve; None, with the job recorded failed
        ("…; <nothing>"), before there is one."""
        current = self._twin.current()
        if current is None:
            why = f" (last error: {self._twin.error})" if self._twin.error else ""
            await self._fail(job_id, "the live twin has no solved state yet: it is still starting "
                                     f"or its solves fail{why}; {nothing}")
            return None
        latest = self._twin.latest
        at = latest.at.isoformat() if latest is not None and latest.status == "converged" else None
        return (*current, at)

    async def _in_thread(self, job_id: str, misfit: type[Exception] | tuple[type[Exception], ...],
                         misfit_error: str, fn: Callable[..., T], *args: Any) -> T | None:
        """`fn(*args)` in a worker thread; None, with the job recorded failed, when it raises:
        "<misfit_error>: <exception>" for a `misfit` (the job does not fit the network), else
        the exception's type and message (and its traceback in the log)."""
        try:
            return await asyncio.to_thread(fn, *args)
        except misfit as exc:
            await self._fail(job_id, f"{misfit_error}: {exc}")
        except Exception as exc:
            self._log.exception("%s %s failed", self._noun, job_id)
            await self._fail(job_id, f"{type(exc).__name__}: {exc}")
        return None

    async def _record(self, job_id: str, ok: bool, summary: Mapping[str, Any],
                      result: Mapping[str, Any], error: str) -> None:
        """Record a job's outcome: done, or failed with `error`, keeping what it found."""
        async with self._db.begin() as s:
            if ok:
                await self._store.finish(s, job_id, summary, result)
            else:
                await self._store.fail(s, job_id, error, summary=summary, result=result)

    async def _fail(self, job_id: str, error: str) -> None:
        async with self._db.begin() as s:
            await self._store.fail(s, job_id, error)
