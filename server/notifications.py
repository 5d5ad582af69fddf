"""Composition of alarm notifications: routing config and channels from settings, the notifier
fed by the alarm engine's events, its clock tick, and the job runner.

Switched on by `GASOPS_NOTIFY_CONFIG_FILE` (the routing rules, contacts and on-call rosters as
JSON, see `realtime.notify.rules.parse_config`) and `GASOPS_NOTIFY_CHANNELS` (channel name →
spec, e.g. ``{"email": {"type": "smtp", "host": "mail.gas.local", "port": 25, "sender":
"scada@gas.local"}}``; passwords and tokens belong in the environment or a `.env` outside the
repository). Deliveries run in-process, or as RQ jobs when Redis is configured (workers:
``rq worker gasops-notify``).

Messages and their delivery status are kept in the database (`DbMessageStore`, tables
`notification_messages` and `notification_status_changes`) when the server hands in its session
factory: then the de-duplication holds across restarts and across server processes, and
`alarmNotifications` can show what was sent. Without one (tests, tools) they live in memory.

Events are handed over in order through a queue and one task, so an acknowledgement is never
processed before the activation it acknowledges.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from erp.services import notifications as stored
from realtime.alarms.model import AlarmEvent
from realtime.notify import (
    DeliveryStatus,
    InMemoryMessageStore,
    MessageRecord,
    MessageStore,
    Notifier,
    OutgoingMessage,
    StatusChange,
    UnknownMessage,
    parse_config,
)
from realtime.notify.channels import build_channel
from realtime.notify.jobs import InProcessJobs, JobRunner, RqJobs

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["DbMessageStore", "Notifications"]

log = logging.getLogger("gasops.notifications")

STALE_QUEUED_AFTER: Final = dt.timedelta(minutes=5)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _change_json(change: StatusChange) -> dict[str, Any]:
    return {"status": change.status.value, "at": change.at, "attempt": change.attempt,
            "reason": change.reason, "next_attempt_at": change.next_attempt_at}


def _record(m: stored.StoredMessage) -> MessageRecord:
    return MessageRecord(OutgoingMessage.from_json(m.message), tuple(
        StatusChange(DeliveryStatus(c.status), c.at, c.attempt, c.reason, c.next_attempt_at)
        for c in m.history))


class DbMessageStore(MessageStore):
    """The `MessageStore` in the database (`erp.services.notifications`): every call is its own
    short transaction, so a claim is visible to other processes as soon as it returns."""

    def __init__(self, db: async_sessionmaker[AsyncSession]) -> None:
        self._db = db

    async def claim(self, message: OutgoingMessage, change: StatusChange) -> bool:
        """See `MessageStore.claim`: ``INSERT ... ON CONFLICT DO NOTHING``."""
        async with self._db.begin() as s:
            return await stored.claim_message(
                s, message.key, message.alarm_id, message.level, message.channel,
                message.recipient, message.to_json(), _change_json(change))

    async def set_status(self, key: str, change: StatusChange) -> None:
        """See `MessageStore.set_status`."""
        try:
            async with self._db.begin() as s:
                await stored.add_status(s, key, _change_json(change))
        except LookupError:
            raise UnknownMessage(key) from None

    async def get(self, key: str) -> MessageRecord | None:
        """See `MessageStore.get`."""
        async with self._db() as s:
            m = await stored.message_record(s, key)
        return None if m is None else _record(m)

    async def for_alarm(self, alarm_id: str) -> list[MessageRecord]:
        """See `MessageStore.for_alarm`."""
        async with self._db() as s:
            return [_record(m) for m in await stored.messages_for_alarm(s, alarm_id)]

    async def stale_queued(self, older_than: dt.datetime) -> list[MessageRecord]:
        """Messages claimed (queued) before `older_than` and never sent, failed nor cancelled."""
        async with self._db() as s:
            return [_record(m) for m in await stored.stale_queued(s, older_than)]


class Notifications:
    """The notifier of one server process (the one that runs the alarm engine)."""

    def __init__(self, config_file: Path, channel_specs: Mapping[str, Mapping[str, Any]], *,
                 redis_url: str | None = None, tick_s: float = 1.0,
                 clock: Callable[[], dt.datetime] = _utcnow,
                 store: MessageStore | None = None,
                 db: async_sessionmaker[AsyncSession] | None = None) -> None:
        try:
            raw = json.loads(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"notification config {config_file}: {exc}") from exc
        self.config = parse_config(raw)
        self._specs = {name: dict(spec) for name, spec in channel_specs.items()}
        channels = {name: build_channel(spec) for name, spec in self._specs.items()}
        self.jobs: JobRunner = (RqJobs(redis_url, channel_specs=self._specs) if redis_url
                                else InProcessJobs())
        self._clock = clock
        self.store: MessageStore = store or (DbMessageStore(db) if db is not None
                                             else InMemoryMessageStore())
        self.notifier = Notifier(self.config, channels, self.store, clock, self.jobs)
        self._tick_s = tick_s
        self._events: asyncio.Queue[AlarmEvent] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def on_events(self, events: list[AlarmEvent]) -> None:
        """The alarm engine's sink hook (synchronous): queue the events, in order."""
        for e in events:
            self._events.put_nowait(e)

    async def start(self) -> None:
        """Start the event and tick tasks; warn about messages a previous run claimed but never
        sent."""
        await self._warn_stale()
        self._tasks = [asyncio.create_task(self._consume(), name="notify-events"),
                       asyncio.create_task(self._tick(), name="notify-tick")]
        log.info("notifications: %d rules, channels %s", len(self.config.rules),
                 ", ".join(sorted(self._specs)))

    async def stop(self) -> None:
        """Stop the tasks and the job runner (in-flight deliveries get a short grace)."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.jobs.close()

    async def _warn_stale(self) -> None:
        if not isinstance(self.store, DbMessageStore):
            return
        try:
            stale = await self.store.stale_queued(self._clock() - STALE_QUEUED_AFTER)
        except Exception:  # a report, not a reason to keep the server from starting
            log.exception("notifications: could not look for stale queued messages")
            return
        if stale:
            log.warning("notifications: %d message(s) claimed more than %s ago were never sent "
                        "(a stop between claim and send?): %s", len(stale), STALE_QUEUED_AFTER,
                        ", ".join(r.key for r in stale[:10]) + (" ..." if len(stale) > 10 else ""))

    async def _consume(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self.notifier.on_event(event)
            except Exception:  # one bad event must not stop notifications
                log.exception("notification of %s %s failed", event.alarm_id, event.kind)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                await self.notifier.tick()
            except Exception:
                log.exception("notification tick failed")
