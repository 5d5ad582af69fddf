"""What-if scenarios of the hydraulic twin (TWIN-2) and leak localizations (ANA-1), kept in the
database: twin jobs of one `kind` or the other, with one life cycle.

A scenario is recorded `queued` when someone asks for it, `running` while a server process
solves it, then `done` (with its summary and the whole outcome) or `failed` (with the reason).
The spec, the summary and the result are plain JSON: what the solver needs and what it found,
never objects of the twin. Every function takes an `AsyncSession` and never commits: the caller
owns the transaction. The life cycle is the one all twin jobs share (`erp.services.jobs`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from erp.adapters import orm
from erp.services import jobs

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

STATUSES: Final = jobs.STATUSES
KINDS: Final = ("what_if", "leak_localization")
FINISHED: Final = jobs.FINISHED
MAX_PAGE: Final = jobs.MAX_PAGE


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


def _stored(row: orm.TwinScenarioRow, *, with_result: bool = True) -> StoredScenario:
    """The record of a row; `with_result=False` for a row loaded without its result (lists)."""
    return StoredScenario(id=row.id, kind=row.kind, name=row.name, created_at=row.created_at,
                          created_by=row.created_by, status=row.status, spec=row.spec,
                          summary=row.summary, result=row.result if with_result else None,
                          error=row.error, started_at=row.started_at, finished_at=row.finished_at)


_SCENARIOS: Final = jobs.JobTable(orm.TwinScenarioRow, noun="scenario")


async def create(session: AsyncSession, spec: Mapping[str, Any], *, name: str = "",
                 created_by: str | None = None, scenario_id: str | None = None,
                 now: dt.datetime | None = None, kind: str = "what_if") -> StoredScenario:
    """Record a new scenario (or another twin job `kind`) as `queued`; its id is a fresh UUID
    unless one is given."""
    if kind not in KINDS:
        raise ValueError(f"unknown twin job kind {kind!r}")
    return _stored(await _SCENARIOS.create(session, spec, created_by=created_by,
                                           job_id=scenario_id, now=now, kind=kind,
                                           name=name[:200]))


async def set_running(session: AsyncSession, scenario_id: str,
                      now: dt.datetime | None = None) -> StoredScenario:
    """Mark a scenario as being solved."""
    return _stored(await _SCENARIOS.set_running(session, scenario_id, now))


async def finish(session: AsyncSession, scenario_id: str, summary: Mapping[str, Any],
                 result: Mapping[str, Any], now: dt.datetime | None = None) -> StoredScenario:
    """Mark a scenario done with its summary and full outcome."""
    return _stored(await _SCENARIOS.finish(session, scenario_id, summary, result, now))


async def fail(session: AsyncSession, scenario_id: str, error: str, *,
               summary: Mapping[str, Any] | None = None, result: Mapping[str, Any] | None = None,
               now: dt.datetime | None = None) -> StoredScenario:
    """Mark a scenario failed, saying why (and keeping what was found, if anything)."""
    return _stored(await _SCENARIOS.fail(session, scenario_id, error, summary=summary,
                                         result=result, now=now))


async def get(session: AsyncSession, scenario_id: str) -> StoredScenario | None:
    """One scenario, or None."""
    row = await _SCENARIOS.get(session, scenario_id)
    return _stored(row) if row is not None else None


async def list_scenarios(session: AsyncSession, first: int = 20, *, status: str | None = None,
                         kind: str = "what_if") -> list[StoredScenario]:
    """The newest jobs of `kind` first (at most `first`, capped at `MAX_PAGE`), optionally of one
    status.

    Lists load everything but the (large) result of each scenario: `result` is None in them
    (read one scenario with `get` for it)."""
    q = (_SCENARIOS.newest(first, status).options(defer(orm.TwinScenarioRow.result))
         .where(orm.TwinScenarioRow.kind == kind))
    rows = (await session.execute(q)).scalars().all()
    return [_stored(r, with_result=False) for r in rows]
