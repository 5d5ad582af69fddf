"""What-if scenarios of the hydraulic twin (TWIN-2) and leak localizations (ANA-1), kept in the
database: twin jobs of one `kind` or the other, with one life cycle.

A scenario is recorded `queued` when someone asks for it, `running` while a server process
solves it, then `done` (with its summary and the whole outcome) or `failed` (with the reason).
The spec, the summary and the result are plain JSON: what the solver needs and what it found,
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
from sqlalchemy.orm import defer

from erp.adapters import orm

__all__ = [
    "FINISHED",
    "KINDS",
    "STATUSES",
    "ScenarioRejected",
    "StoredScenario",
    "create",
    "fail",
    "finish",
    "get",
    "list_scenarios",
    "set_running",
]

STATUSES: Final = ("queued", "running", "done", "failed")
KINDS: Final = ("what_if", "leak_localization")
FINISHED: Final = frozenset({"done", "failed"})
MAX_PAGE: Final = 200


class ScenarioRejected(ValueError):
    """The scenario cannot be run as asked (unknown ids, values out of range); nothing queued."""


@dataclass(frozen=True, slots=True)
class StoredScenario:
    """A scenario as recorded."""

    id: str
    kind: str
    name: str
    created_at: dt.datetime
    created_by: str | None
    status: str
    spec: dict[str, Any]
    summary: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


def _stored(row: orm.TwinScenarioRow) -> StoredScenario:
    return StoredScenario(id=row.id, kind=row.kind, name=row.name, created_at=row.created_at,
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


async def _row(session: AsyncSession, scenario_id: str) -> orm.TwinScenarioRow:
    row = await session.get(orm.TwinScenarioRow, scenario_id)
    if row is None:
        raise KeyError(f"no scenario {scenario_id!r}")
    return row


async def create(session: AsyncSession, spec: Mapping[str, Any], *, name: str = "",
                 created_by: str | None = None, scenario_id: str | None = None,
                 now: dt.datetime | None = None, kind: str = "what_if") -> StoredScenario:
    """Record a new scenario (or another twin job `kind`) as `queued`; its id is a fresh UUID
    unless one is given."""
    if kind not in KINDS:
        raise ValueError(f"unknown twin job kind {kind!r}")
    row = orm.TwinScenarioRow(id=scenario_id or str(uuid.uuid4()), kind=kind, name=name[:200],
                              created_at=_now(now), created_by=created_by, status="queued",
                              spec=_json(dict(spec)))
    session.add(row)
    await session.flush()
    return _stored(row)


async def set_running(session: AsyncSession, scenario_id: str,
                      now: dt.datetime | None = None) -> StoredScenario:
    """Mark a scenario as being solved."""
    row = await _row(session, scenario_id)
    row.status = "running"
    row.started_at = _now(now)
    await session.flush()
    return _stored(row)


async def finish(session: AsyncSession, scenario_id: str, summary: Mapping[str, Any],
                 result: Mapping[str, Any], now: dt.datetime | None = None) -> StoredScenario:
    """Mark a scenario done with its summary and full outcome."""
    row = await _row(session, scenario_id)
    row.status = "done"
    row.summary = _json(dict(summary))
    row.result = _json(dict(result))
    row.error = None
    row.finished_at = _now(now)
    await session.flush()
    return _stored(row)


async def fail(session: AsyncSession, scenario_id: str, error: str, *,
               summary: Mapping[str, Any] | None = None, result: Mapping[str, Any] | None = None,
               now: dt.datetime | None = None) -> StoredScenario:
    """Mark a scenario failed, saying why (and keeping what was found, if anything)."""
    row = await _row(session, scenario_id)
    row.status = "failed"
    row.error = error
    row.summary = _json(dict(summary)) if summary is not None else row.summary
    row.result = _json(dict(result)) if result is not None else row.result
    row.finished_at = _now(now)
    await session.flush()
    return _stored(row)


async def get(session: AsyncSession, scenario_id: str) -> StoredScenario | None:
    """One scenario, or None."""
    row = await session.get(orm.TwinScenarioRow, scenario_id)
    return _stored(row) if row is not None else None


async def list_scenarios(session: AsyncSession, first: int = 20, *, status: str | None = None,
                         kind: str = "what_if") -> list[StoredScenario]:
    """The newest jobs of `kind` first (at most `first`, capped at `MAX_PAGE`), optionally of one
    status.

    Lists load everything but the (large) result of each scenario: `result` is None in them
    (read one scenario with `get` for it)."""
    q = (select(orm.TwinScenarioRow).options(defer(orm.TwinScenarioRow.result))
         .order_by(orm.TwinScenarioRow.created_at.desc(), orm.TwinScenarioRow.id)
         .limit(max(1, min(first, MAX_PAGE))))
    q = q.where(orm.TwinScenarioRow.kind == kind)
    if status is not None:
        q = q.where(orm.TwinScenarioRow.status == status)
    rows = (await session.execute(q)).scalars().all()
    return [_stored_light(r) for r in rows]


def _stored_light(row: orm.TwinScenarioRow) -> StoredScenario:
    return StoredScenario(id=row.id, kind=row.kind, name=row.name, created_at=row.created_at,
                          created_by=row.created_by, status=row.status, spec=row.spec,
                          summary=row.summary, result=None, error=row.error,
                          started_at=row.started_at, finished_at=row.finished_at)
