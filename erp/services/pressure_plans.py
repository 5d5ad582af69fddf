"""Pressure plans (issue 8, DSS-1): a day's hourly outlet set-points, kept in the database.

A plan is recorded `queued` when an operator asks for one, `running` while a server process
optimises it, then `done` (with its summary and the schedule) or `failed` (with the reason, and
whatever the optimiser found). The spec, the summary and the result are plain JSON — the air
temperature and margin asked for, the headline figures, the 24 hourly set-points per station —
never objects of the twin. Every function takes an `AsyncSession` and never commits: the caller
owns the transaction. The life cycle is the one all twin jobs share (`erp.services.jobs`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm
from erp.services import jobs

__all__ = [
    "FINISHED",
    "STATUSES",
    "PlanRejected",
    "StoredPlan",
    "create",
    "fail",
    "finish",
    "get",
    "list_plans",
    "set_running",
]

STATUSES: Final = jobs.STATUSES
FINISHED: Final = jobs.FINISHED
MAX_PAGE: Final = jobs.MAX_PAGE


class PlanRejected(ValueError):
    """A plan cannot be made or accepted as asked (bad date, hour, id, state); nothing changed."""


@dataclass(frozen=True, slots=True)
class StoredPlan:
    """A pressure plan as recorded."""

    id: str
    plan_date: dt.date
    created_at: dt.datetime
    created_by: str | None
    status: str
    spec: dict[str, Any]
    summary: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


def _stored(row: orm.PressurePlanRow) -> StoredPlan:
    return StoredPlan(id=row.id, plan_date=row.plan_date, created_at=row.created_at,
                      created_by=row.created_by, status=row.status, spec=row.spec,
                      summary=row.summary, result=row.result, error=row.error,
                      started_at=row.started_at, finished_at=row.finished_at)


_PLANS: Final = jobs.JobTable(orm.PressurePlanRow, noun="pressure plan")


async def create(session: AsyncSession, plan_date: dt.date, spec: Mapping[str, Any], *,
                 created_by: str | None = None, plan_id: str | None = None,
                 now: dt.datetime | None = None) -> StoredPlan:
    """Record a new plan as `queued`; its id is a fresh UUID unless one is given."""
    return _stored(await _PLANS.create(session, spec, created_by=created_by, job_id=plan_id,
                                       now=now, plan_date=plan_date))


async def set_running(session: AsyncSession, plan_id: str,
                      now: dt.datetime | None = None) -> StoredPlan:
    """Mark a plan as being optimised."""
    return _stored(await _PLANS.set_running(session, plan_id, now))


async def finish(session: AsyncSession, plan_id: str, summary: Mapping[str, Any],
                 result: Mapping[str, Any], now: dt.datetime | None = None) -> StoredPlan:
    """Mark a plan done with its summary and schedule."""
    return _stored(await _PLANS.finish(session, plan_id, summary, result, now))


async def fail(session: AsyncSession, plan_id: str, error: str, *,
               summary: Mapping[str, Any] | None = None, result: Mapping[str, Any] | None = None,
               now: dt.datetime | None = None) -> StoredPlan:
    """Mark a plan failed, saying why (and keeping what was found, if anything)."""
    return _stored(await _PLANS.fail(session, plan_id, error, summary=summary, result=result,
                                     now=now))


async def get(session: AsyncSession, plan_id: str) -> StoredPlan | None:
    """One plan, or None."""
    row = await _PLANS.get(session, plan_id)
    return _stored(row) if row is not None else None


async def list_plans(session: AsyncSession, first: int = 20, *,
                     status: str | None = None) -> list[StoredPlan]:
    """The newest plans first (at most `first`, capped at `MAX_PAGE`), optionally of one status.
    A plan is small (24 hours × its stations): lists carry the whole of each."""
    rows = (await session.execute(_PLANS.newest(first, status))).scalars().all()
    return [_stored(r) for r in rows]
