"""The event bus port: topic-based publish/subscribe of JSON-able messages.

Two implementations behind this interface, one contract test suite for both:
- `realtime.broadcast.Broadcast` — in-process (the embedded default);
- `realtime.redis_bus.RedisBus` — Redis pub/sub, so several server processes see each other.

Pub/sub is "at most once": a message published while a subscriber is disconnected is gone. After
such a gap a Redis-backed subscription receives `RESYNC` and must re-read current state (e.g.
from the tag store); anything that must arrive (alarms, commands) is persisted elsewhere and
never relies on the bus alone.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime.broadcast import Subscription

__all__ = ["RESYNC", "AbstractBus"]

RESYNC: Mapping[str, Any] = {"type": "resync"}


class AbstractBus(abc.ABC):
    """Publish never blocks; each subscriber has its own bounded queue."""

    @abc.abstractmethod
    def publish(self, topic: str, message: Any) -> None:
        """Send `message` (JSON-able for a networked bus) to every subscriber of `topic`."""

    @abc.abstractmethod
    def listen(self, topic: str) -> tuple[Subscription, Callable[[], None]]:
        """Start a subscription; returns it and its unsubscribe callable."""

    async def start(self) -> None:  # noqa: B027 - optional hook, nothing to do in memory
        """Connect (networked buses); called by the lifespan before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background work and disconnect."""

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[Subscription]:
        """`async with bus.subscribe(topic) as sub:` — unsubscribes on exit."""
        sub, unsubscribe = self.listen(topic)
        try:
            yield sub
        finally:
            unsubscribe()
