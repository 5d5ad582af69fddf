"""Alarm notification messages and their delivery status, kept in the database.

This is the storage behind the notifier's `MessageStore` (the server adapts it): a message is
claimed under its de-duplication key by an ``INSERT ... ON CONFLICT (key) DO NOTHING``, so of
any number of callers — a repeated event, a replay after a restart, a second server process —
exactly one wins, whatever the interleaving. Every status change is appended to
`notification_status_changes` (its `seq` orders a message's history, and the first change of
each message orders the claims); the message row keeps the latest status and attempt count.

A status change is a mapping with ``status`` (queued, sent, failed, retrying, cancelled),
``at`` (tz-aware), and optionally ``attempt``, ``reason`` and ``next_attempt_at``. Every
function takes an `AsyncSession` and never commits: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Insert, Table, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm

__all__ = [
    "STATUSES",
    "StoredChange",
    "StoredMessage",
    "add_status",
    "claim_message",
    "message_record",
    "messages_for_alarm",
    "stale_queued",
]

STATUSES: Final = frozenset({"queued", "sent", "failed", "retrying", "cancelled"})

_MESSAGES: Final[Table] = orm.NotificationMessageRow.__table__  # type: ignore[assignment]
_CHANGES: Final[Table] = orm.NotificationStatusRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class StoredChange:
    """One entry of a message's status history."""

    status: str
    at: dt.datetime
    attempt: int
    reason: str
    next_attempt_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A claimed message: the message as JSON, its latest status, and its history (oldest
    first)."""

    key: str
    alarm_id: str
    level: int
    channel: str
    recipient: str
    message: dict[str, Any]
    status: str
    attempts: int
    created_at: dt.datetime
    updated_at: dt.datetime
    history: tuple[StoredChange, ...]


def _change_values(key: str, change: Mapping[str, Any]) -> dict[str, Any]:
    status = str(change["status"])
    if status not in STATUSES:
        raise ValueError(f"unknown notification status {status!r}")
    at = change["at"]
    if not isinstance(at, dt.datetime) or at.tzinfo is None:
        raise ValueError("a status change needs a tz-aware `at`")
    return {"key": key, "status": status, "at": at, "attempt": int(change.get("attempt") or 0),
            "reason": str(change.get("reason") or ""),
            "next_attempt_at": change.get("next_attempt_at")}


def _insert_ignoring_duplicates(session: AsyncSession, table: Table) -> Insert:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["key"])
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["key"])
    raise NotImplementedError(f"claiming notifications on {dialect} is not supported")


async def claim_message(session: AsyncSession, key: str, alarm_id: str, level: int, channel: str,
                        recipient: str, message_json: Mapping[str, Any],
                        change: Mapping[str, Any]) -> bool:
    """Record the message under `key` with its first status `change`, unless `key` is already
    recorded; True if this call recorded it (concurrent callers: exactly one True).

    On PostgreSQL a concurrent claim of the same key waits for the winner's transaction and then
    does nothing; on SQLite writers are serialized by the database lock."""
    first = _change_values(key, change)
    stmt = _insert_ignoring_duplicates(session, _MESSAGES).values(
        key=key, alarm_id=alarm_id, level=level, channel=channel, recipient=recipient,
        message=dict(message_json), status=first["status"], attempts=first["attempt"],
        created_at=first["at"], updated_at=first["at"])
    result = await session.execute(stmt)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await session.execute(insert(_CHANGES).values(**first))
    return True


async def add_status(session: AsyncSession, key: str, change: Mapping[str, Any]) -> None:
    """Append `change` to the history of `key` and make it the current status; `LookupError`
    if `key` was never claimed."""
    values = _change_values(key, change)
    result = await session.execute(
        update(_MESSAGES).where(_MESSAGES.c.key == key).values(
            status=values["status"], attempts=values["attempt"], updated_at=values["at"]))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise LookupError(key)
    await session.execute(insert(_CHANGES).values(**values))


def _stored(row: Any, history: Sequence[StoredChange]) -> StoredMessage:
    return StoredMessage(key=row.key, alarm_id=row.alarm_id, level=row.level,
                         channel=row.channel, recipient=row.recipient, message=dict(row.message),
                         status=row.status, attempts=row.attempts, created_at=row.created_at,
                         updated_at=row.updated_at, history=tuple(history))


def _change(row: Any) -> StoredChange:
    return StoredChange(status=row.status, at=row.at, attempt=row.attempt, reason=row.reason,
                        next_attempt_at=row.next_attempt_at)


async def _with_history(session: AsyncSession, rows: Sequence[Any]) -> list[StoredMessage]:
    """`rows` with their histories, in claim order (the first change's `seq`)."""
    if not rows:
        return []
    changes = (await session.execute(
        select(_CHANGES).where(_CHANGES.c.key.in_([r.key for r in rows]))
        .order_by(_CHANGES.c.seq))).all()
    history: dict[str, list[StoredChange]] = {}
    for c in changes:
        history.setdefault(c.key, []).append(_change(c))
    order = {key: i for i, key in enumerate(history)}
    ordered = sorted(rows, key=lambda r: (order.get(r.key, len(order)), r.key))
    return [_stored(r, history.get(r.key, ())) for r in ordered]


async def message_record(session: AsyncSession, key: str) -> StoredMessage | None:
    """The message claimed under `key` with its history, or None."""
    row = (await session.execute(select(_MESSAGES).where(_MESSAGES.c.key == key))).first()
    if row is None:
        return None
    return (await _with_history(session, [row]))[0]


async def messages_for_alarm(session: AsyncSession, alarm_id: str) -> list[StoredMessage]:
    """Every message of `alarm_id` with its history, in claim order."""
    rows = (await session.execute(
        select(_MESSAGES).where(_MESSAGES.c.alarm_id == alarm_id))).all()
    return await _with_history(session, rows)


async def stale_queued(session: AsyncSession, older_than: dt.datetime) -> list[StoredMessage]:
    """Messages still `queued` whose last change is before `older_than`: claimed, but never
    sent nor failed — the process most likely stopped between the claim and the send."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be tz-aware")
    rows = (await session.execute(
        select(_MESSAGES).where(_MESSAGES.c.status == "queued",
                                _MESSAGES.c.updated_at < older_than))).all()
    return await _with_history(session, rows)
