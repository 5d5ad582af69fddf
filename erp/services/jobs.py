"""The life cycle of background jobs kept in the database, written once for every kind of job:
twin scenarios and leak localizations (`twin_scenarios`), pressure plans (`pressure_plans`).

Each kind has its own table and its own record type, but the same life-cycle columns and the
same steps: a job is recorded `queued` when someone asks for it (`spec`: what was asked),
`running` while a server process works on it (`started_at`), then `done` with its `summary` and
`result`, or `failed` with the `error` saying why (keeping whatever summary and result were
found); `finished_at` either way. `JobTable` takes these steps on the rows of one table; each
store module wraps it in its own functions, which return that module's records.

Specs, summaries and results are stored through `json_safe` (PostgreSQL's JSON refuses NaN).
Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["FINISHED", "MAX_PAGE", "STATUSES", "JobTable", "json_safe", "now_utc"]

STATUSES: Final = ("queued", "running", "done", "failed")
FINISHED: Final = frozenset({"done", "failed"})
MAX_PAGE: Final = 200
"""Jobs in one list at most."""


R = TypeVar("R")
"""The row of a job table (an ORM class): `id`, `created_at`, `created_by`, `status`, `spec`, `summary`,
`result`, `error`, `started_at`, `finished_at` (`orm.TwinScenarioRow`, `orm.PressurePlanRow`)."""


def now_utc(now: dt.datetime | None = None) -> dt.datetime:
    """`now`, or the present moment when None, in UTC."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)


def json_safe(value: Any) -> Any:
    """A strictly JSON-safe copy: non-finite floats become null (PostgreSQL's JSON refuses NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class JobTable(Generic[R]):
    """The life cycle on the rows of one job table (`row_type`, an ORM class with the job
    columns, see `R`). `noun` names one job where its id is unknown: `KeyError("no <noun> '<id>'")`."""

    row_type: type[R]
    noun: str

    async def create(self, session: AsyncSession, spec: Mapping[str, Any], *,
                     created_by: str | None, job_id: str | None = None,
                     now: dt.datetime | None = None, **columns: Any) -> R:
        """Add a new job as `queued`, its id a fresh UUID unless one is given; `columns` are
        the table's own (a plan's date, a scenario's kind and name)."""
        row = self.row_type(id=job_id or str(uuid.uuid4()), created_at=now_utc(now),
                            created_by=created_by, status="queued", spec=json_safe(dict(spec)),
                            **columns)
        session.add(row)
        await session.flush()
        return row

    async def get(self, session: AsyncSession, job_id: str) -> R | None:
        """One job's row, or None."""
        return await session.get(self.row_type, job_id)

    async def row(self, session: AsyncSession, job_id: str) -> R:
        """One job's row; `KeyError` when there is none."""
        row = await self.get(session, job_id)
        if row is None:
            raise KeyError(f"no {self.noun} {job_id!r}")
        return row

    async def set_running(self, session: AsyncSession, job_id: str,
                          now: dt.datetime | None = None) -> R:
        """Mark a job as being worked on."""
        row = await self.row(session, job_id)
        row.status = "running"
        row.started_at = now_utc(now)
        await session.flush()
        return row

    async def finish(self, session: AsyncSession, job_id: str, summary: Mapping[str, Any],
                     result: Mapping[str, Any], now: dt.datetime | None = None) -> R:
        """Mark a job done with its summary and result."""
        row = await self.row(session, job_id)
        row.status = "done"
        row.summary = json_safe(dict(summary))
        row.result = json_safe(dict(result))
        row.error = None
        row.finished_at = now_utc(now)
        await session.flush()
        return row

    async def fail(self, session: AsyncSession, job_id: str, error: str, *,
                   summary: Mapping[str, Any] | None = None,
                   result: Mapping[str, Any] | None = None,
                   now: dt.datetime | None = None) -> R:
        """Mark a job failed, saying why; a summary or result given replaces the row's."""
        row = await self.row(session, job_id)
        row.status = "failed"
        row.error = error
        row.summary = json_safe(dict(summary)) if summary is not None else row.summary
        row.result = json_safe(dict(result)) if result is not None else row.result
        row.finished_at = now_utc(now)
        await session.flush()
        return row

    def newest(self, first: int, status: str | None = None) -> Select[tuple[R]]:
        """A query for the newest jobs first (at most `first`, capped at `MAX_PAGE`), optionally
        of one status; a caller may narrow it further."""
        t: Any = self.row_type
        q = select(t).order_by(t.created_at.desc(), t.id).limit(max(1, min(first, MAX_PAGE)))
        return q if status is None else q.where(t.status == status)
