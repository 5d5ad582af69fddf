"""The audit trail (AUD-1): append-only, hash-chained records written in the caller's transaction.

Each record's hash covers its content and the previous record's hash, so changing or deleting a
record breaks the chain at that point; `verify` finds the first break. Writers lock the single
`audit_head` row (a no-op UPDATE first, so that on SQLite too the transaction holds the write
lock before it reads the head), which keeps the chain linear when several processes or tasks
write.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters.orm import AuditHead, AuditRecord
from erp.errors import AuditWriteFailed

__all__ = ["Actor", "AuditEntry", "VerifyResult", "jsonable", "record", "record_hash", "verify"]

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: user name (None for anonymous), role, the client's address."""

    username: str | None
    role: str | None
    client_addr: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What happened: an operation on targets, with its before/after difference."""

    operation: str
    target_ids: Sequence[str] = ()
    diff: Mapping[str, Any] = field(default_factory=dict)
    outcome: str = "ok"


def jsonable(value: Any) -> Any:
    """A JSON-safe copy of `value` (dates as ISO 8601, sets as sorted lists)."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def record_hash(prev_hash: str, seq: int, ts: dt.datetime, actor: str | None, role: str | None,
                operation: str, outcome: str, target_ids: Sequence[str],
                diff: Mapping[str, Any], client_addr: str | None) -> str:
    """SHA-256 over a canonical JSON of the record's content and the previous hash."""
    body = json.dumps(
        [prev_hash, seq, ts.astimezone(dt.UTC).isoformat(), actor, role, operation, outcome,
         list(target_ids), diff, client_addr],
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


async def record(session: AsyncSession, actor: Actor, entry: AuditEntry,
                 now: dt.datetime | None = None) -> AuditRecord:
    """Append one record in the session's transaction; raises `AuditWriteFailed` if it cannot."""
    ts = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    # Microsecond precision survives every backend; hash what is stored.
    try:
        # Take the write lock first, with a no-op UPDATE: it row-locks on PostgreSQL (as FOR
        # UPDATE would), and on SQLite it makes this transaction the writer before it reads the
        # head — a deferred transaction that read first could otherwise compute the same seq
        # as a concurrent one.
        await session.execute(update(AuditHead).where(AuditHead.id == 1).values(
            last_seq=AuditHead.last_seq))
        head = (
            await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())
        ).scalar_one()
        seq = head.last_seq + 1
        diff = jsonable(dict(entry.diff))
        targets = [str(t) for t in entry.target_ids]
        h = record_hash(head.last_hash, seq, ts, actor.username, actor.role, entry.operation,
                        entry.outcome, targets, diff, actor.client_addr)
        rec = AuditRecord(
            seq=seq, ts=ts, actor=actor.username, role=actor.role, operation=entry.operation,
            outcome=entry.outcome, target_ids=targets, diff=diff, client_addr=actor.client_addr,
            prev_hash=head.last_hash, hash=h,
        )
        session.add(rec)
        head.last_seq, head.last_hash = seq, h
        await session.flush()
    except SQLAlchemyError as exc:
        raise AuditWriteFailed(f"audit record for {entry.operation} not written: {exc}") from exc
    return rec


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a chain check: ok, records checked, and the first problem if any."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None


async def verify(session: AsyncSession, batch: int = 5000) -> VerifyResult:
    """Walk the chain in order; report the first changed, inserted or deleted record."""
    prev, expected_seq, checked = GENESIS, 1, 0
    last_seq = 0
    while True:
        rows = (
            await session.execute(
                select(AuditRecord).where(AuditRecord.seq > last_seq)
                .order_by(AuditRecord.seq).limit(batch)
            )
        ).scalars().all()
        if not rows:
            break
        for r in rows:
            if r.seq != expected_seq:
                return VerifyResult(False, checked, expected_seq,
                                    f"record {expected_seq} is missing (next is {r.seq})")
            if r.prev_hash != prev:
                return VerifyResult(False, checked, r.seq, "previous-hash link broken")
            h = record_hash(r.prev_hash, r.seq, r.ts, r.actor, r.role, r.operation, r.outcome,
                            r.target_ids, r.diff, r.client_addr)
            if h != r.hash:
                return VerifyResult(False, checked, r.seq, "content does not match its hash")
            prev, expected_seq, checked, last_seq = r.hash, r.seq + 1, checked + 1, r.seq
        session.expunge_all()
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
    if head.last_seq != last_seq or head.last_hash != prev:
        return VerifyResult(False, checked, last_seq + 1,
                            f"chain ends at {last_seq} but head says {head.last_seq}: "
                            "records were deleted from the end")
    return VerifyResult(True, checked)
