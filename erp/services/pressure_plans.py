"""Pressure plans (issue 8, DSS-1): a day's hourly outlet set-points, kept in the database.

A plan is recorded `queued` when an operator asks for one, `running` while a server process
optimises it, then `done` (with its summary and the schedule) or `failed` (with the reason, and
whatever the optimiser found). The spec, the summary and the result are plain JSON — the air
temperature and margin asked for, the headline figures, the 24 hourly set-points per station —
never objects of the twin. Every function takes an `AsyncSession` and never commits: the caller
owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm

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

STATUSES: Final = ("queued", "running", "done", "failed")
FINISHED: Final = frozenset({"done", "failed"})
MAX_PAGE: Final = 200


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


def _json(value: Any) -> Any:
    """A strictly JSON-safe copy: non-finite floats become null (PostgreSQL's JSON refuses NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)


async def _row(session: AsyncSession, plan_id: str) -> orm.PressurePlanRow:
    row = await session.get(orm.PressurePlanRow, plan_id)
    if row is None:
        raise KeyError(f"no pressure plan {plan_id!r}")
    return row


async def create(session: AsyncSession, plan_date: dt.date, spec: Mapping[str, Any], *,
                 created_by: str | None = None, plan_id: str | None = None,
                 now: dt.datetime | None = None) -> StoredPlan:
    """Record a new plan as `queued`; its id is a fresh UUID unless one is given."""
    row = orm.PressurePlanRow(id=plan_id or str(uuid.uuid4()), plan_date=plan_date,
                              created_at=_now(now), created_by=created_by, status="queued",
                              spec=_json(dict(spec)))
    session.add(row)
    await session.flush()
    return _stored(row)


async def set_running(session: AsyncSession, plan_id: str,
                      now: dt.datetime | None = None) -> StoredPlan:
    """Mark a plan as being optimised."""
    row = await _row(session, plan_id)
    row.status = "running"
    row.started_at = _now(now)
    await session.flush()
    return _stored(row)


async def finish(session: AsyncSession, plan_id: str, summary: Mapping[str, Any],
                 result: Mapping[str, Any], now: dt.datetime | None = None) -> StoredPlan:
    """Mark a plan done with its summary and schedule."""
    row = await _row(session, plan_id)
    row.status = "done"
    row.summary = _json(dict(summary))
    row.result = _json(dict(result))
    row.error = None
    row.finished_at = _now(now)
    await session.flush()
    return _stored(row)


async def fail(session: AsyncSession, plan_id: str, error: str, *,
               summary: Mapping[str, Any] | None = None, result: Mapping[str, Any] | None = None,
               now: dt.datetime | None = None) -> StoredPlan:
    """Mark a plan failed, saying why (and keeping what was found, if anything)."""
    row = await _row(session, plan_id)
    row.status = "failed"
    row.error = error
    row.summary = _json(dict(summary)) if summary is not None else row.summary
    row.result = _json(dict(result)) if result is not None else row.result
    row.finished_at = _now(now)
    await session.flush()
    return _stored(row)


async def get(session: AsyncSession, plan_id: str) -> StoredPlan | None:
    """One plan, or None."""
    row = await session.get(orm.PressurePlanRow, plan_id)
    return _stored(row) if row is not None else None


async def list_plans(session: AsyncSession, first: int = 20, *,
                     status: str | None = None) -> list[StoredPlan]:
    """The newest plans first (at most `first`, capped at `MAX_PAGE`), optionally of one status.
    A plan is small (24 hours × its stations): lists carry the whole of each."""
    q = (select(orm.PressurePlanRow)
         .order_by(orm.PressurePlanRow.created_at.desc(), orm.PressurePlanRow.id)
         .limit(max(1, min(first, MAX_PAGE))))
    if status is not None:
        q = q.where(orm.PressurePlanRow.status == status)
    rows = (await session.execute(q)).scalars().all()
    return [_stored(r) for r in rows]
