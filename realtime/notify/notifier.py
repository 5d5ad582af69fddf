"""The notifier: alarm events in, messages out, escalation until someone acknowledges.

`on_event` takes every `AlarmEvent` (the server subscribes it to the alarm bus):

- an activation in service is routed (`rules.route`); the levels already due (level 0, usually)
  are sent now, the later ones wait in memory for `tick`;
- acknowledged, reset, shelved, suppressed, out of service, or cleared after an acknowledgement
  (status normal) ends the escalation: the waiting levels are recorded as `cancelled`, and so
  are pending retries of escalation messages (a retry of the level-0 "activated" message goes
  on: it is news to its reader even after someone acknowledged);
- a new activation of the same alarm supersedes the waiting levels of the previous one.

`tick(now)` — called about once a second by the server, by tests with an injected clock — sends
the levels and retries that became due and collects results from remote job runners. Nothing in
here sleeps.

Every send first claims the message's key in the `MessageStore`; only the winner sends. So a
repeated event, a replay after a restart, or a second process that sees the same event sends
nothing twice. After a restart, replaying the activation events of alarms still unacknowledged
re-plans their escalation: the claims already taken are skipped.

Failures: a temporary one is retried after ``retry.delay_s(attempt)`` until
``retry.max_attempts``; a permanent one fails at once. Every step is a `StatusChange` in the
store: queued → retrying(1) → sent, queued → failed(reason), cancelled.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from realtime.alarms.model import AlarmEvent, AlarmMode, AlarmStatus, EventKind
from realtime.notify.model import (
    AttemptResult,
    Channel,
    Clock,
    DeliveryJob,
    DeliveryStatus,
    OutgoingMessage,
    StatusChange,
    activation_prefix,
)
from realtime.notify.rules import NotificationConfig, PlannedMessage, route
from realtime.notify.templates import render

if TYPE_CHECKING:
    from realtime.notify.jobs import JobRunner
    from realtime.notify.store import MessageStore

__all__ = ["Notifier"]

log = logging.getLogger(__name__)

_ENDS_ESCALATION: Final = frozenset({EventKind.acknowledged, EventKind.reset, EventKind.shelved,
                                     EventKind.suppressed, EventKind.out_of_service})


def ends_escalation(event: AlarmEvent) -> bool:
    """Whether `event` means nobody needs to be chased about this alarm any more."""
    return event.kind in _ENDS_ESCALATION or (
        event.kind is EventKind.cleared and event.status is AlarmStatus.normal)


@dataclass(slots=True)
class _Activation:
    """An activation whose later levels are still waiting."""

    event: AlarmEvent
    plans: dict[str, PlannedMessage] = field(default_factory=dict)  # by key


@dataclass(frozen=True, slots=True)
class _Retry:
    due_at: dt.datetime
    job: DeliveryJob


class Notifier:
    """Routes alarm events to channels, escalates, de-duplicates and tracks delivery."""

    def __init__(self, config: NotificationConfig, channels: Mapping[str, Channel],
                 store: MessageStore, clock: Clock, jobs: JobRunner) -> None:
        missing = sorted(config.channels_used() - set(channels))
        if missing:
            raise ValueError(f"the notification rules use channels with no Channel: {missing}")
        self._config = config
        self._channels = dict(channels)
        self._store = store
        self._clock = clock
        self._jobs = jobs
        self._waiting: dict[str, _Activation] = {}  # alarm id → its later levels
        self._open: dict[str, str] = {}  # alarm id → key prefix of its unacknowledged activation
        self._retries: list[_Retry] = []

    def pending(self, alarm_id: str | None = None) -> list[PlannedMessage]:
        """The planned messages not yet due (of one alarm, or all), by due time."""
        if alarm_id is None:
            acts = list(self._waiting.values())
        else:
            acts = [self._waiting[alarm_id]] if alarm_id in self._waiting else []
        return sorted((p for a in acts for p in a.plans.values()), key=lambda p: p.due_at)

    @property
    def retries_waiting(self) -> int:
        """Failed attempts waiting for their next try."""
        return len(self._retries)

    async def on_event(self, event: AlarmEvent) -> None:
        """React to one alarm event (see the module docstring)."""
        now = self._clock()
        if event.kind is EventKind.activated and event.mode is AlarmMode.in_service:
            await self._activated(event, now)
        elif ends_escalation(event):
            await self._end(event.alarm_id, now, f"alarm {event.kind.value}")

    async def tick(self, now: dt.datetime | None = None) -> None:
        """Send what became due by `now` (default: the clock) and collect remote results."""
        now = now or self._clock()
        await self._jobs.poll()
        due_retries = [r for r in self._retries if r.due_at <= now]
        self._retries = [r for r in self._retries if r.due_at > now]
        due: list[tuple[AlarmEvent, PlannedMessage]] = []
        for alarm_id, act in list(self._waiting.items()):
            for key, plan in list(act.plans.items()):
                if plan.due_at <= now:
                    due.append((act.event, plan))
                    del act.plans[key]
            if not act.plans:
                del self._waiting[alarm_id]
        for retry in due_retries:
            await self._submit(retry.job)
        for event, plan in sorted(due, key=lambda d: d[1].due_at):
            await self._start(event, plan, now)

    # ------------------------------------------------------------------ internals

    async def _activated(self, event: AlarmEvent, now: dt.datetime) -> None:
        prefix = activation_prefix(event.alarm_id, event.ts)
        previous = self._open.get(event.alarm_id)
        if previous is not None and previous != prefix:
            await self._end(event.alarm_id, now, "superseded by a new activation")
        self._open[event.alarm_id] = prefix
        plans = route(event, self._config, now)
        later = [p for p in plans if p.due_at > now]
        if later:
            act = self._waiting.setdefault(event.alarm_id, _Activation(event))
            act.plans.update((p.key, p) for p in later)
        for plan in plans:
            if plan.due_at <= now:
                await self._start(event, plan, now)

    async def _end(self, alarm_id: str, now: dt.datetime, reason: str) -> None:
        prefix = self._open.pop(alarm_id, None)
        act = self._waiting.pop(alarm_id, None)
        if act is not None:
            for plan in act.plans.values():
                msg = self._message(act.event, plan)
                await self._store.claim(msg, StatusChange(DeliveryStatus.cancelled, now,
                                                          reason=reason))
        if prefix is None:
            return
        keep: list[_Retry] = []
        for retry in self._retries:
            msg = retry.job.message
            if msg.level > 0 and msg.key.startswith(prefix):
                await self._store.set_status(msg.key, StatusChange(
                    DeliveryStatus.cancelled, now, retry.job.attempt - 1, reason))
            else:
                keep.append(retry)
        self._retries = keep

    def _message(self, event: AlarmEvent, plan: PlannedMessage) -> OutgoingMessage:
        contact = plan.contact
        text = render(event, language=contact.language, timezone=contact.timezone,
                      after_s=plan.after_s)
        return OutgoingMessage(plan.key, event.alarm_id, plan.level, plan.channel, contact.name,
                               contact.address(plan.channel) or "", contact.language,
                               text.subject, text.body, text.short, event.to_message())

    async def _start(self, event: AlarmEvent, plan: PlannedMessage, now: dt.datetime) -> None:
        msg = self._message(event, plan)
        if not await self._store.claim(msg, StatusChange(DeliveryStatus.queued, now)):
            log.debug("notification %s already claimed: not sent again", msg.key)
            return
        await self._submit(DeliveryJob(msg, 1))

    async def _submit(self, job: DeliveryJob) -> None:
        try:
            await self._jobs.submit(job, self._channels[job.message.channel], self._report)
        except Exception as exc:  # the runner is closed or broken: a failed attempt, not a crash
            log.exception("notification %s: could not submit attempt %d", job.key, job.attempt)
            await self._report(AttemptResult(job.key, job.attempt, ok=False,
                                             reason=f"could not submit: {exc!r}"))

    async def _report(self, result: AttemptResult) -> None:
        """Record an attempt's outcome; schedule the retry of a temporary failure."""
        now = self._clock()
        if result.ok:
            await self._store.set_status(result.key, StatusChange(DeliveryStatus.sent, now,
                                                                  result.attempt))
            log.info("notification %s sent (attempt %d)", result.key, result.attempt)
            return
        record = await self._store.get(result.key)
        if record is None:
            log.error("notification %s: result of an unknown message: %s", result.key, result)
            return
        msg = record.message
        if result.permanent or result.attempt >= self._config.retry.max_attempts:
            await self._store.set_status(result.key, StatusChange(
                DeliveryStatus.failed, now, result.attempt, result.reason))
            log.warning("notification %s failed after %d attempt(s): %s", result.key,
                        result.attempt, result.reason)
            return
        prefix = self._open.get(msg.alarm_id)
        if msg.level > 0 and (prefix is None or not msg.key.startswith(prefix)):
            await self._store.set_status(result.key, StatusChange(
                DeliveryStatus.cancelled, now, result.attempt,
                f"not retried: the escalation ended ({result.reason})"))
            return
        next_at = now + dt.timedelta(seconds=self._config.retry.delay_s(result.attempt))
        await self._store.set_status(result.key, StatusChange(
            DeliveryStatus.retrying, now, result.attempt, result.reason, next_at))
        self._retries.append(_Retry(next_at, DeliveryJob(msg, result.attempt + 1)))
