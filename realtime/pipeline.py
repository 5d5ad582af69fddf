"""The telemetry pipeline: driver batches → tag store (deadband) → bus → historian sink.

Drivers call `Pipeline.on_values(batch)` from their own tasks; it is synchronous and never
blocks. Changes go to the bus as one compact message per batch (topic `tags`), and to the
historian sink (a bounded queue drained in batches by `HistorianWriter`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any

from realtime.bus import AbstractBus
from realtime.model import Quality, TagPath, TagValue
from realtime.store import Change, TagStore

__all__ = ["TAGS_TOPIC", "Pipeline", "decode_values", "encode_changes"]

log = logging.getLogger(__name__)
TAGS_TOPIC = "tags"


def encode_changes(changes: Sequence[Change]) -> dict[str, Any]:
    """The bus message of a batch: `[path, value, quality, source_ts, server_ts]` rows."""
    # a batch shares a few timestamps: format each once
    stamps = {c.new.source_ts for c in changes}
    stamps.update(c.new.server_ts for c in changes)
    iso = {ts: ts.isoformat() for ts in stamps}
    return {"type": "tags", "values": [
        [c.path, c.new.value, int(c.new.quality), iso[c.new.source_ts], iso[c.new.server_ts]]
        for c in changes]}


def decode_values(message: Mapping[str, Any],
                  only: Container[TagPath] | None = None) -> dict[TagPath, TagValue]:
    """The values of a `tags` bus message (only those of `only` paths, when given: a
    subscriber watching 50 of 5,000 tags must not parse the other 4,950)."""
    return {row[0]: TagValue(row[1], Quality.from_status_code(row[2]),
                             dt.datetime.fromisoformat(row[3]), dt.datetime.fromisoformat(row[4]))
            for row in message.get("values", ()) if only is None or row[0] in only}


class Pipeline:
    """Feeds the store, the bus and the historian sink from driver batches."""

    def __init__(self, store: TagStore, bus: AbstractBus,
                 sink: Callable[[Sequence[Change]], None] | None = None) -> None:
        self.store = store
        self.bus = bus
        self.sink = sink
        self.received = 0
        self.rejected = 0

    def mark_stale(self, now: dt.datetime | None = None, factor: float = 3.0) -> list[TagPath]:
        """Tags silent for `factor` × their expected period turn Uncertain (last usable value),
        through the same path as driver values, so subscribers and the historian see it."""
        now = now or dt.datetime.now(dt.UTC)
        batch = {}
        for path in self.store.stale(now, factor):
            state = self.store.get(path)
            if state is not None and state.value.quality.is_good:
                batch[path] = TagValue(state.value.value, Quality.UNCERTAIN_LAST_USABLE_VALUE,
                                       state.value.source_ts, now)
        if batch:
            self.on_values(batch)
        return sorted(batch)

    def on_values(self, batch: Mapping[TagPath, TagValue]) -> None:
        """A driver's listener: apply, publish, record."""
        known = {p: v for p, v in batch.items() if p in self.store.known}
        self.received += len(batch)
        if len(known) != len(batch):
            self.rejected += len(batch) - len(known)
            log.debug("values for %d undefined tags ignored", len(batch) - len(known))
        changes = self.store.update_many(known)
        if not changes:
            return
        self.bus.publish(TAGS_TOPIC, encode_changes(changes))
        if self.sink is not None:
            self.sink(changes)
