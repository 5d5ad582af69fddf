"""Composition of alarm notifications: routing config and channels from settings, the notifier
fed by the alarm engine's events, its clock tick, and the job runner.

Switched on by `GASOPS_NOTIFY_CONFIG_FILE` (the routing rules, contacts and on-call rosters as
JSON, see `realtime.notify.rules.parse_config`) and `GASOPS_NOTIFY_CHANNELS` (channel name →
spec, e.g. ``{"email": {"type": "smtp", "host": "mail.gas.local", "port": 25, "sender":
"scada@gas.local"}}``; passwords and tokens belong in the environment or a `.env` outside the
repository). Deliveries run in-process, or as RQ jobs when Redis is configured (workers:
``rq worker gasops-notify``).

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
from typing import Any

from realtime.alarms.model import AlarmEvent
from realtime.notify import InMemoryMessageStore, MessageStore, Notifier, parse_config
from realtime.notify.channels import build_channel
from realtime.notify.jobs import InProcessJobs, JobRunner, RqJobs

__all__ = ["Notifications"]

log = logging.getLogger("gasops.notifications")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Notifications:
    """The notifier of one server process (the one that runs the alarm engine)."""

    def __init__(self, config_file: Path, channel_specs: Mapping[str, Mapping[str, Any]], *,
                 redis_url: str | None = None, tick_s: float = 1.0,
                 clock: Callable[[], dt.datetime] = _utcnow,
                 store: MessageStore | None = None) -> None:
        try:
            raw = json.loads(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"notification config {config_file}: {exc}") from exc
        self.config = parse_config(raw)
        self._specs = {name: dict(spec) for name, spec in channel_specs.items()}
        channels = {name: build_channel(spec) for name, spec in self._specs.items()}
        self.jobs: JobRunner = (RqJobs(redis_url, channel_specs=self._specs) if redis_url
                                else InProcessJobs())
        self.store = store or InMemoryMessageStore()
        self.notifier = Notifier(self.config, channels, self.store, clock, self.jobs)
        self._tick_s = tick_s
        self._events: asyncio.Queue[AlarmEvent] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def on_events(self, events: list[AlarmEvent]) -> None:
        """The alarm engine's sink hook (synchronous): queue the events, in order."""
        for e in events:
            self._events.put_nowait(e)

    async def start(self) -> None:
        """Start the event and tick tasks."""
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
