"""Composition of the alarm side: the engine fed by the tag store, the journal, the clock tick.

Started by the lifespan after telemetry. Definitions come from the database
(`erp.services.alarms`); the engine (`realtime.alarms`) evaluates every change the tag store
accepts, synchronously, in the same turn of the event loop. Each event is published on the bus
at once (topic `alarms`: the `alarmEvents` subscription, wall displays, notifications) and
queued for the journal, which a task appends to the database in batches. If the database is
unreachable the events wait in memory and are retried: the bus already told the live views,
and nothing is dropped while the process lives.

After a restart the engine takes every alarm's state from its newest journal event, so active,
acknowledged and shelved alarms come back as they were; conditions are then re-evaluated from
the live values as they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from erp.services import alarms as alarm_service
from realtime.alarms.engine import AlarmEngine
from realtime.alarms.model import ALARMS_TOPIC, AlarmEvent, definition_from_record
from realtime.bus import AbstractBus
from realtime.model import TagPath
from realtime.store import TagStore
from server.outbox import Outbox

__all__ = ["ALARMS_TOPIC", "Alarms"]

log = logging.getLogger("gasops.alarms")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Alarms:
    """Owns the engine of one server process and its background tasks."""

    def __init__(self, db: Any, bus: AbstractBus, store: TagStore, *, tick_s: float = 1.0,
                 clock: Callable[[], dt.datetime] = _utcnow,
                 on_events: Callable[[list[AlarmEvent]], None] | None = None) -> None:
        self._db = db
        self._bus = bus
        self._store = store
        self._tick_s = tick_s
        self._clock = clock
        self._on_events = on_events
        self.engine = AlarmEngine(clock=clock, sink=self._sink, last_update=self._last_update)
        self._journal: Outbox[AlarmEvent] = Outbox(self._append, name="alarm-journal", log=log)
        self._tasks: list[asyncio.Task[None]] = []
        self._unlisten: Callable[[], None] | None = None

    @property
    def journal_failures(self) -> int:
        """Journal writes that failed (and were retried) since start."""
        return self._journal.failures

    def _last_update(self, path: TagPath) -> dt.datetime | None:
        state = self._store.get(path)
        # any report counts, also one inside the deadband (a valve resting at 100 %)
        return state.last_reported if state is not None else None

    async def start(self) -> None:
        """Load definitions, restore states from the journal, start listening and ticking."""
        async with self._db() as s:
            rows = await alarm_service.load_alarm_definitions(s)
            latest = await alarm_service.latest_alarm_events(s)
        definitions = []
        for row in rows:
            try:
                definitions.append(definition_from_record(row))
            except ValueError as exc:  # one bad row must not take the others down
                log.error("alarm definition %s ignored: %s", row.id, exc)
        self.engine.define(definitions)
        restored = self.engine.restore(AlarmEvent.from_record(r) for r in latest)
        log.info("alarms: %d definitions, %d states restored from the journal",
                 len(definitions), restored)
        self._unlisten = self._store.listen(self.engine.on_changes)
        # values that arrived before we listened (a steady value makes no new change)
        self.engine.on_values({p: st.value for p, st in self._store.snapshot().items()})
        self._journal.start()
        self._tasks = [asyncio.create_task(self._tick(), name="alarm-tick")]

    async def stop(self) -> None:
        """Stop listening, stop the tick, write what is still queued; idempotent."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._journal.close()

    def _sink(self, events: list[AlarmEvent]) -> None:
        for e in events:
            self._bus.publish(ALARMS_TOPIC, e.to_message())
        self._journal.extend(events)
        if self._on_events is not None:
            self._on_events(events)

    async def flush(self) -> None:
        """Append everything queued to the journal (in order), in batches."""
        await self._journal.flush()

    async def _append(self, batch: list[AlarmEvent]) -> None:
        async with self._db.begin() as s:
            await alarm_service.append_alarm_events(s, [e.to_record() for e in batch])

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self.engine.tick()
            except Exception:  # the tick must outlive a bad definition
                log.exception("alarm tick failed")
