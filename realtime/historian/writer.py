"""Feeds the historian from the pipeline: every accepted change, batched.

The pipeline calls `sink(changes)` synchronously; points wait in a bounded queue and one owned
task writes them in batches (every `flush_interval_s`, or sooner when `max_batch` are
waiting) — large batches, because each historian write has a fixed cost. If the queue ever
overflows (the writer cannot keep up), the oldest points are dropped, every one counted and
reported to `on_drop` — never silently. Availability problems are not this class's business:
give it a `StoreAndForward` and an outage only fills the durable buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from realtime.historian.base import Point
from realtime.store import Change

__all__ = ["HistorianWriter"]

log = logging.getLogger(__name__)


class _Writes(Protocol):
    async def write(self, points: Sequence[Point]) -> None: ...


def _point(c: Change) -> Point:
    v = c.new.value
    number = float(v) if isinstance(v, int | float) else None  # bools become 0.0 / 1.0
    ts = c.new.source_ts
    if ts.tzinfo is dt.UTC and number == number:  # what Point would check, already true:
        # built as the tuple it is, skipping the validating constructor (a tenth of the
        # pipeline's per-point cost); quality is a Quality, a UInt32 status code by type
        return tuple.__new__(Point, (c.path, ts, number, int(c.new.quality)))
    return Point(c.path, ts, number, int(c.new.quality))


class HistorianWriter:
    """A bounded queue of points and the task that writes them."""

    def __init__(self, target: _Writes, *, max_batch: int = 10_000, flush_interval_s: float = 1.0,
                 max_queue: int = 500_000, on_drop: Callable[[int], None] | None = None) -> None:
        self._target = target
        self._max_batch = max_batch
        self._flush_interval_s = flush_interval_s
        self._queue: deque[Point] = deque()
        self._max_queue = max_queue
        self._on_drop = on_drop
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.dropped = 0

    def sink(self, changes: Sequence[Change]) -> None:
        """The pipeline's sink: queue the changes' points (never blocks)."""
        self._queue.extend(_point(c) for c in changes)
        excess = len(self._queue) - self._max_queue
        if excess > 0:
            for _ in range(excess):
                self._queue.popleft()
            self.dropped += excess
            log.error("historian writer overloaded: %d points dropped (total %d)", excess,
                      self.dropped)
            if self._on_drop is not None:
                self._on_drop(excess)
        if len(self._queue) >= self._max_batch:
            self._wakeup.set()

    @property
    def queued(self) -> int:
        """Points waiting to be written."""
        return len(self._queue)

    async def start(self) -> None:
        """Start the writing task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="historian-writer")

    async def close(self) -> None:
        """Stop, writing what is still queued. The task is asked to finish, not cancelled: a
        cancel in the middle of a write would lose the batch it had taken off the queue."""
        if self._task is not None:
            self._stopping = True
            self._wakeup.set()
            await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write everything queued now."""
        while self._queue:
            n = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(n)]
            await self._target.write(batch)
            self.written += n

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._flush_interval_s)
            self._wakeup.clear()
            try:
                await self.flush()
            except Exception:  # keep running: the next flush retries what is still queued
                log.exception("historian writer failed")
