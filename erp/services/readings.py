"""Smart meter readings pushed by devices (NB-IoT meters, data concentrators).

A device authenticates with its own token (only the SHA-256 is stored). A batch is checked
item by item: each item is stored, recognised as a duplicate of what is already stored for
(meter, ts), or refused with a reason that names the field — one bad item never loses the
others. Timestamps must carry a zone and may not lie in the future beyond a small clock skew.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters.orm import DeviceToken, Meter, MeterReading
from erp.errors import NotFound
from erp.services import audit

__all__ = ["ItemResult", "ParsedReading", "authenticate_device", "create_device_token",
           "ingest", "parse_item"]

DEVICE_TOKEN_PREFIX = "gsd_"
MAX_CLOCK_SKEW = dt.timedelta(minutes=10)
MAX_BATCH = 5000


@dataclass(frozen=True, slots=True)
class ParsedReading:
    """A valid reading."""

    ts: dt.datetime
    index_m3: float
    valve_open: bool | None
    battery_pct: float | None
    tamper: bool | None


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one item: `stored`, `duplicate` or `rejected` (with the reason)."""

    index: int
    status: str
    ts: str | None = None
    error: str | None = None


def _number(item: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = item.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{key}: must be a number, got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{key}: {v} outside {lo}..{hi}")
    return float(v)


def _flag(item: Mapping[str, Any], key: str) -> bool | None:
    v = item.get(key)
    if v is None or isinstance(v, bool):
        return v
    raise ValueError(f"{key}: must be true or false, got {v!r}")


def parse_item(item: Any, now: dt.datetime) -> ParsedReading:
    """Validate one pushed item; `ValueError` names the field at fault."""
    if not isinstance(item, Mapping):
        raise ValueError("item: must be an object")
    unknown = set(item) - {"ts", "index_m3", "valve_open", "battery_pct", "tamper"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    raw_ts = item.get("ts")
    if not isinstance(raw_ts, str):
        raise ValueError("ts: required, an ISO 8601 time with a zone")
    try:
        ts = dt.datetime.fromisoformat(raw_ts.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"ts: not an ISO 8601 time: {raw_ts!r}") from None
    if ts.tzinfo is None:
        raise ValueError("ts: must carry a zone (e.g. Z or +03:00)")
    ts = ts.astimezone(dt.UTC)
    if ts > now + MAX_CLOCK_SKEW:
        raise ValueError(f"ts: {ts.isoformat()} is in the future (device clock?)")
    index = _number(item, "index_m3", 0.0, 1e9)
    if index is None:
        raise ValueError("index_m3: required")
    return ParsedReading(ts, index, _flag(item, "valve_open"),
                         _number(item, "battery_pct", 0.0, 100.0), _flag(item, "tamper"))


async def create_device_token(session: AsyncSession, meter_id: str, actor: audit.Actor) -> str:
    """A new push token for a meter (shown once); audited."""
    if await session.get(Meter, meter_id) is None:
        raise NotFound("meter", meter_id)
    raw = DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(24)
    session.add(DeviceToken(meter_id=meter_id,
                            token_sha256=hashlib.sha256(raw.encode()).hexdigest()))
    await session.flush()
    await audit.record(session, actor, audit.AuditEntry("device_token.create",
                                                        [f"meter:{meter_id}"]))
    return raw


async def authenticate_device(session: AsyncSession, token: str) -> tuple[str, str | None] | None:
    """(meter id, its area) of a valid device token, or None."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    row = (await session.execute(
        select(DeviceToken.meter_id, Meter.area_id).join(Meter, Meter.id == DeviceToken.meter_id)
        .where(DeviceToken.token_sha256 == digest, DeviceToken.revoked_at.is_(None)))).first()
    return None if row is None else (row[0], row[1])


async def ingest(session: AsyncSession, meter_id: str, items: Sequence[Any],
                 now: dt.datetime | None = None) -> tuple[list[ItemResult], list[ParsedReading]]:
    """Store a batch; per-item results, and the readings newly stored (for the live feed)."""
    now = now or dt.datetime.now(dt.UTC)
    results: list[ItemResult] = []
    parsed: dict[dt.datetime, tuple[int, ParsedReading]] = {}
    for k, item in enumerate(items):
        try:
            r = parse_item(item, now)
        except ValueError as exc:
            results.append(ItemResult(k, "rejected", None, str(exc)))
            continue
        if r.ts in parsed:
            results.append(ItemResult(k, "duplicate", r.ts.isoformat()))
            continue
        parsed[r.ts] = (k, r)
    existing = set((await session.execute(select(MeterReading.ts).where(
        MeterReading.meter_id == meter_id, MeterReading.ts.in_(list(parsed))))).scalars()
    ) if parsed else set()
    fresh: list[ParsedReading] = []
    for ts, (k, r) in parsed.items():
        if ts in existing:
            results.append(ItemResult(k, "duplicate", ts.isoformat()))
            continue
        session.add(MeterReading(meter_id=meter_id, ts=ts, index_m3=r.index_m3,
                                 valve_open=r.valve_open, battery_pct=r.battery_pct,
                                 tamper=r.tamper, received_at=now))
        results.append(ItemResult(k, "stored", ts.isoformat()))
        fresh.append(r)
    await session.flush()
    results.sort(key=lambda x: x.index)
    fresh.sort(key=lambda r: r.ts)
    return results, fresh
