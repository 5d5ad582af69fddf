"""An in-memory outbox: items appended synchronously, written in order, in batches, by one task.

The alarm journal and the command audit both need this: the producer (the alarm engine, the
command pipeline) runs synchronously in the event loop and must never wait on the database; the
items must reach it in order and none may be lost while the process lives. A failed write
leaves the batch at the head of the queue and is retried with exponential backoff; an explicit
`flush` (shutdown, tests) and the task never write at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["Outbox"]

T = TypeVar("T")


class Outbox(Generic[T]):
    """`append` now, `write(batch)` later (see the module docstring)."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]], *, name: str,
                 batch_size: int = 500, log: logging.Logger | None = None) -> None:
        self._write = write
        self._name = name
        self._batch_size = batch_size
        self._log = log or logging.getLogger(__name__)
        self._queue: deque[T] = deque()
        self._wakeup = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def __len__(self) -> int:
        return len(self._queue)

    def extend(self, items: Iterable[T]) -> None:
        """Queue items (never blocks)."""
        self._queue.extend(items)
        self._wakeup.set()

    def start(self) -> None:
        """Start the writing task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def close(self) -> None:
        """Stop the task and write what is still queued (logged if that fails)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()
        if self._queue:
            self._log.error("%s: %d items could not be written at shutdown", self._name,
                            len(self._queue))

    async def flush(self) -> None:
        """Write everything queued now, in order."""
        async with self._flushing:
            while self._queue:
                batch = list(itertools.islice(self._queue, self._batch_size))
                await self._write(batch)
                for _ in batch:
                    self._queue.popleft()

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.flush()
                backoff = 0.5
            except Exception:  # the database is away: keep the items, try again
                self.failures += 1
                self._log.exception("%s: write failed; %d items wait", self._name,
                                    len(self._queue))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                self._wakeup.set()
