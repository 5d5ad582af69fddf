"""The control command history: one row per command, as it stands after its latest step.

The server's command pipeline keeps its commands in memory; `record` is called at every step
(in the same transaction as the step's audit record), so the history outlives the process and
any server process can list it. A command is handed in as a *snapshot*: a flat dict of plain
values whose keys are the columns of `orm.ControlCommandRow` (`control.model.Command.snapshot`
plus `updated_at`, the step's time, and `last_step`, its name). Datetimes are tz-aware
`datetime`s or ISO 8601 strings.

`record` is an upsert by id and idempotent: a snapshot older than the stored one (by
`updated_at`) changes nothing, nor does one as old that would reopen a finished command. Every
function takes an `AsyncSession` and never commits: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, NamedTuple

from sqlalchemy import and_, not_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Insert

from erp.adapters import orm

__all__ = ["ABANDONED", "CLOSED_STATES", "MAX_PAGE", "OPEN_STATES", "Cursor", "StoredCommand",
           "close_abandoned", "from_snapshot", "get", "list_commands", "record"]

OPEN_STATES: Final = frozenset({"selected", "awaiting_approval", "approved", "operating"})
CLOSED_STATES: Final = frozenset({"succeeded", "failed", "cancelled", "expired"})
MAX_PAGE: Final = 500
ABANDONED: Final = (  # what `close_abandoned` makes of an open command, and why
    (("operating",), "failed", "the server process stopped while the command was operating: "
                               "whether the device reached the new state is not known"),
    (("selected", "awaiting_approval", "approved"), "expired",
     "the server process stopped before the command was operated"),
)

_T = orm.ControlCommandRow.__table__


@dataclass(frozen=True, slots=True)
class StoredCommand:
    """A command as the history holds it (the columns of `orm.ControlCommandRow`)."""

    id: str
    target_kind: str
    asset_id: str
    area_id: str | None
    action: str
    value: float | None
    reason: str
    requested_by: str
    requested_role: str | None
    approved_by: str | None
    approval_reason: str
    state: str
    last_step: str
    outcome: str
    needs_approval: bool
    needs_override: bool
    checks: list[str]
    impact: dict[str, Any]
    created_at: dt.datetime  # when it was selected
    expires_at: dt.datetime
    finished_at: dt.datetime | None
    updated_at: dt.datetime  # the time of the latest step recorded

    @property
    def open(self) -> bool:
        """Whether the command still holds its target."""
        return self.state in OPEN_STATES

    @property
    def cursor(self) -> Cursor:
        """Its place in the history (newest first): what `list_commands(before=...)` takes."""
        return Cursor(self.created_at, self.id)


class Cursor(NamedTuple):
    """A keyset position in the history: commands selected before it (ties broken by id)."""

    created_at: dt.datetime
    id: str


_FIELDS: Final = tuple(f.name for f in fields(StoredCommand))


def _when(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(when, dt.datetime) or when.tzinfo is None:
        raise ValueError(f"a command's times are tz-aware datetimes, not {value!r}")
    return when.astimezone(dt.UTC)


def _json(value: Any) -> Any:
    """A strictly JSON-safe copy: non-finite floats become null (PostgreSQL's JSON refuses NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json(v) for v in value]
    return value


def from_snapshot(snapshot: Mapping[str, Any]) -> StoredCommand:
    """A snapshot (see the module docstring) as a `StoredCommand`; `updated_at` defaults to the
    latest time the snapshot holds, `last_step` to its state."""
    created = _when(snapshot["created_at"])
    assert created is not None
    finished = _when(snapshot.get("finished_at"))
    updated = _when(snapshot.get("updated_at")) or finished or created
    value = snapshot.get("value")
    value = float(value) if value is not None and math.isfinite(float(value)) else None
    return StoredCommand(
        id=str(snapshot["id"]), target_kind=str(snapshot["target_kind"]),
        asset_id=str(snapshot["asset_id"]), area_id=snapshot.get("area_id"),
        action=str(snapshot["action"]), value=value, reason=str(snapshot.get("reason") or ""),
        requested_by=str(snapshot["requested_by"]), requested_role=snapshot.get("requested_role"),
        approved_by=snapshot.get("approved_by"),
        approval_reason=str(snapshot.get("approval_reason") or ""), state=str(snapshot["state"]),
        last_step=str(snapshot.get("last_step") or snapshot["state"]),
        outcome=str(snapshot.get("outcome") or ""),
        needs_approval=bool(snapshot.get("needs_approval", False)),
        needs_override=bool(snapshot.get("needs_override", False)),
        checks=[str(c) for c in snapshot.get("checks") or ()],
        impact=_json(dict(snapshot.get("impact") or {})), created_at=created,
        expires_at=_when(snapshot["expires_at"]) or created, finished_at=finished,
        updated_at=updated)


def _stored(row: Mapping[str, Any]) -> StoredCommand:
    return StoredCommand(**{name: row[name] for name in _FIELDS})


def _insert(session: AsyncSession) -> Insert:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(_T)
    if dialect == "sqlite":
        return sqlite.insert(_T)
    raise NotImplementedError(f"the command history on {dialect} is not supported")


async def record(session: AsyncSession, snapshot: Mapping[str, Any]) -> None:
    """Insert or update the command's row from `snapshot`, unless the row holds a newer step.

    One statement (``INSERT … ON CONFLICT (id) DO UPDATE … WHERE``), so two writers racing on
    one command cannot interleave a read and a write.
    """
    values = {name: getattr(from_snapshot(snapshot), name) for name in _FIELDS}
    stmt = _insert(session).values(**values)
    new = stmt.excluded
    newer = or_(_T.c.updated_at < new.updated_at,
                and_(_T.c.updated_at == new.updated_at,
                     not_(and_(_T.c.state.in_(sorted(CLOSED_STATES)),
                               new.state.in_(sorted(OPEN_STATES))))))
    await session.execute(stmt.on_conflict_do_update(
        index_elements=[_T.c.id],
        set_={name: new[name] for name in _FIELDS if name not in ("id", "created_at")},
        where=newer))


async def get(session: AsyncSession, command_id: str) -> StoredCommand | None:
    """One command, or None."""
    row = (await session.execute(select(_T).where(_T.c.id == command_id))).mappings().first()
    return _stored(row) if row is not None else None


def _visible(c: StoredCommand, areas: Collection[str] | None) -> bool:
    return areas is None or (c.area_id is not None and c.area_id in areas)


async def list_commands(session: AsyncSession, first: int = 50, *,
                        areas: Collection[str] | None = None, open_only: bool = False,
                        before: Cursor | None = None,
                        overlay: Iterable[Mapping[str, Any]] = ()) -> list[StoredCommand]:
    """The newest commands first (by selection time, then id): at most `first` (1 to
    `MAX_PAGE`), of `areas` (None: all; a command without an area is in none), open ones only
    if asked, and only those selected before the cursor `before`.

    `overlay` holds snapshots newer than the database may be (the commands a server process has
    in memory, whose latest steps may still wait to be written): each replaces its row, or joins
    the list, before the filters and the page apply.
    """
    first = max(1, min(first, MAX_PAGE))
    # ties in time are broken by the id's code points, as Python compares them
    cid = _T.c.id.collate("C") if session.get_bind().dialect.name == "postgresql" else _T.c.id
    newer = [c for c in map(from_snapshot, overlay)
             if _visible(c, areas) and (before is None or c.cursor < before)]
    query = select(_T)
    if areas is not None:
        query = query.where(_T.c.area_id.in_(sorted(areas)))
    if open_only:
        query = query.where(_T.c.state.in_(sorted(OPEN_STATES)))
    if before is not None:
        query = query.where(or_(_T.c.created_at < before.created_at,
                                and_(_T.c.created_at == before.created_at,
                                     cid < before.id)))
    # each overlaid command can push at most one row out of the page (by closing it)
    query = query.order_by(_T.c.created_at.desc(), cid.desc()).limit(first + len(newer))
    rows = (await session.execute(query)).mappings().all()
    found = {r["id"]: _stored(r) for r in rows}
    found.update((c.id, c) for c in newer)
    page = sorted((c for c in found.values() if c.open or not open_only),
                  key=lambda c: c.cursor, reverse=True)
    return page[:first]


async def close_abandoned(session: AsyncSession, now: dt.datetime, *,
                          older_than: dt.timedelta) -> list[StoredCommand]:
    """Close the commands still open in the history whose selection ran out more than
    `older_than` before `now`: the server process that held them stopped before they finished
    (a live one expires or finishes its own commands within their time). One that was operating
    becomes `failed` (whether the device moved is not known), any other `expired`; the outcome
    says why. Returns those closed, so the caller can audit them (in the same transaction).
    """
    now = now.astimezone(dt.UTC)
    closed: list[StoredCommand] = []
    for states, state, outcome in ABANDONED:
        result = await session.execute(
            update(_T).where(_T.c.state.in_(states), _T.c.expires_at < now - older_than)
            .values(state=state, last_step=state, outcome=outcome, finished_at=now,
                    updated_at=now)
            .returning(*_T.c))
        closed.extend(_stored(r) for r in result.mappings().all())
    return sorted(closed, key=lambda c: c.cursor)
