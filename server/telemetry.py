"""Composition of the live side: tag store, pipeline and bus, started and stopped by the lifespan.

Tag definitions come from the database (`erp.services.tags`); the store, pipeline and bus
are plain objects from `realtime`. Drivers, simulators and the historian writer plug in here
as they land (see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from erp.adapters.orm import TagDefinition
from erp.services import tags as tag_service
from realtime.bus import AbstractBus
from realtime.historian.base import AbstractHistorian, HistorianUnavailable
from realtime.historian.buffer import StoreAndForward
from realtime.historian.writer import HistorianWriter
from realtime.model import Deadband, DeadbandKind, TagDef
from realtime.pipeline import TAGS_TOPIC, Pipeline, decode_values
from realtime.store import TagStore
from server.field import Field, sources_of

__all__ = ["Telemetry", "tag_def"]

log = logging.getLogger("gasops.telemetry")


def tag_def(row: TagDefinition) -> TagDef:
    """The realtime definition of a database tag row."""
    return TagDef(
        path=row.path, unit=row.unit, description=row.description, asset_id=row.asset_id,
        area_id=row.area_id, data_type=row.data_type, scale=row.scale, offset=row.offset,
        deadband=Deadband(DeadbandKind(row.deadband_kind), row.deadband_value),
        range_low=row.range_low, range_high=row.range_high,
        expected_period_s=row.expected_period_s, writable=row.writable)


class Telemetry:
    """Owns the live objects of one server process."""

    def __init__(self, db: Any, bus: AbstractBus, historian: AbstractHistorian | None = None,
                 buffer_path: Path | None = None, *, simulate_field: bool = False,
                 modbus_lines: dict[str, tuple[str, int]] | None = None,
                 opcua_endpoints: dict[str, str] | None = None,
                 poll_period_s: float = 5.0, sim_period_s: float = 1.0, buffer_max_points: int = 5_000_000,
                 stale_check_s: float = 5.0, apply_remote: bool = False, plant: Any = None) -> None:
        self._db = db
        self.bus = bus
        self.store = TagStore()
        self.historian = historian
        self.buffer: StoreAndForward | None = None
        self.writer: HistorianWriter | None = None
        if historian is not None:
            assert buffer_path is not None
            self.buffer = StoreAndForward(historian, buffer_path, buffer_max_points,
                                          on_drop=self._points_dropped)
            self.writer = HistorianWriter(self.buffer, on_drop=self._points_dropped)
        self.pipeline = Pipeline(self.store, bus, self.writer.sink if self.writer else None)
        self._simulate = simulate_field
        self._plant = plant
        self._modbus_lines = dict(modbus_lines or {})
        self._opcua_endpoints = dict(opcua_endpoints or {})
        self._poll_period_s = poll_period_s
        self._sim_period_s = sim_period_s
        self.field: Field | None = None
        self._stale_task: asyncio.Task[None] | None = None
        self._remote_task: asyncio.Task[None] | None = None
        self._apply_remote = apply_remote
        self._stale_check_s = stale_check_s

    async def start(self) -> None:
        """Connect the bus and load tag definitions."""
        await self.bus.start()
        if self.historian is not None and self.buffer is not None and self.writer is not None:
            try:
                await self.historian.start()
            except HistorianUnavailable:
                log.warning("historian unavailable at start: buffering until it returns")
            await self.buffer.start()
            await self.writer.start()
        async with self._db() as s:
            rows = await tag_service.load_tags(s)
        for row in rows:
            self.store.define(tag_def(row))
        log.info("telemetry: %d tags defined", len(rows))
        self.field = Field(sources_of(rows), self.pipeline.on_values, simulate=self._simulate,
                           line_addresses=dict(self._modbus_lines),
                           opcua_endpoints=dict(self._opcua_endpoints),
                           poll_period_s=self._poll_period_s,
                           sim_period_s=self._sim_period_s, plant=self._plant)
        await self.field.start()
        self._stale_task = asyncio.create_task(self._watch_stale(), name="stale-tags")
        if self._apply_remote:
            self._remote_task = asyncio.create_task(self._apply_remote_values(),
                                                    name="remote-tags")

    async def _apply_remote_values(self) -> None:
        """With a networked bus, other processes poll other devices: keep this store current
        with what they publish (our own messages come back too; they change nothing)."""
        async with self.bus.subscribe(TAGS_TOPIC) as sub:
            async for msg in sub:
                if msg.get("type") == "tags":
                    values = decode_values(msg, self.store.known)
                    self.store.update_many(values)

    async def _watch_stale(self) -> None:
        while True:
            await asyncio.sleep(self._stale_check_s)
            try:
                stale = self.pipeline.mark_stale()
            except Exception:  # the watch must outlive a bad tag definition
                log.exception("stale check failed")
                continue
            if stale:
                log.warning("%d tag(s) went stale, e.g. %s", len(stale), stale[0])

    async def stop(self) -> None:
        """Stop the field, then disconnect; idempotent."""
        for task in (self._stale_task, self._remote_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._stale_task = self._remote_task = None
        if self.field is not None:
            await self.field.stop()
            self.field = None
        if self.writer is not None and self.buffer is not None and self.historian is not None:
            await self.writer.close()
            await self.buffer.close()
            await self.historian.close()
        await self.bus.close()

    def _points_dropped(self, count: int) -> None:
        # The alarm engine will raise an alarm here; until it lands, an error in the log.
        log.error("telemetry: %d historian points dropped", count)
