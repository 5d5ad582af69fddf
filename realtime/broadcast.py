"""In-process publish/subscribe with bounded per-subscriber queues.

A slow subscriber never blocks publishers: when its queue is full the oldest message is
dropped and counted. Every subscription returns its own unsubscribe callable.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from realtime.bus import AbstractBus

__all__ = ["Broadcast", "Subscription"]


class Subscription:
    """A subscriber's queue on one topic; iterate it, or `get()` one message."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, message: Any) -> None:
        """Enqueue without blocking, dropping the oldest message when full."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)

    async def get(self) -> Any:
        """The next message."""
        return await self.queue.get()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Any]:
        while True:
            yield await self.queue.get()


class Broadcast(AbstractBus):
    """Topic-based fan-out inside one process (the embedded bus)."""

    def __init__(self, maxsize: int = 1000) -> None:
        self._maxsize = maxsize
        self._subs: dict[str, set[Subscription]] = defaultdict(set)

    def publish(self, topic: str, message: Any) -> None:
        """Deliver to every current subscriber of `topic`."""
        self.deliver(topic, message)

    def deliver(self, topic: str, message: Any) -> int:
        """Hand `message` to local subscribers of `topic`; returns how many got it."""
        subs = self._subs.get(topic, ())
        for s in subs:
            s.offer(message)
        return len(subs)

    def topics(self) -> list[str]:
        """Topics with at least one local subscriber."""
        return list(self._subs)

    def listen(self, topic: str) -> tuple[Subscription, Callable[[], None]]:
        """Start a subscription; returns it and its unsubscribe callable."""
        sub = Subscription(self._maxsize)
        self._subs[topic].add(sub)

        def unsubscribe() -> None:
            subs = self._subs.get(topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[topic]

        return sub, unsubscribe

    def subscriber_count(self, topic: str) -> int:
        """How many subscribers `topic` has now."""
        return len(self._subs.get(topic, ()))
