"""The Redis pub/sub bus: the same interface as the in-process one, across processes.

One connection publishes (from a bounded outgoing queue, so `publish()` never blocks) and one
pattern subscription (`gasops:*`) receives everything and hands it to local subscribers. Every
Redis call has a short timeout and at most one quick retry: redis-py's defaults can turn a 1 s
timeout into 15 s of retries, and a control room must see "bus down" quickly, not hang.
After a lost connection the reader reconnects with backoff and sends `RESYNC` to every local
subscriber, because whatever was published meanwhile is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from realtime.broadcast import Broadcast, Subscription
from realtime.bus import RESYNC, AbstractBus

__all__ = ["RedisBus"]

log = logging.getLogger(__name__)
PREFIX = "gasops:"


class RedisBus(AbstractBus):
    """Redis pub/sub with local fan-out; `start()` before use, `close()` after."""

    def __init__(self, url: str, *, maxsize: int = 1000, outgoing_maxsize: int = 10_000,
                 timeout_s: float = 2.0, max_backoff_s: float = 5.0) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._max_backoff_s = max_backoff_s
        self._local = Broadcast(maxsize)
        self._outgoing: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(outgoing_maxsize)
        self._client: aioredis.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped_outgoing = 0
        self.connected = asyncio.Event()

    def _new_client(self, retries: int = 1) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self._url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=retries),
            health_check_interval=max(1, int(self._timeout_s * 2)))

    async def start(self) -> None:
        """Start the publisher and reader tasks (they connect, and reconnect, by themselves)."""
        if self._tasks:
            return
        self._client = self._new_client()
        for name, coro in (("publisher", self._publisher()), ("reader", self._reader())):
            task = asyncio.create_task(coro, name=f"redis-bus-{name}")
            task.add_done_callback(_log_crash)
            self._tasks.append(task)

    async def close(self) -> None:
        """Stop both tasks and close connections; idempotent."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def publish(self, topic: str, message: Any) -> None:
        """Queue for sending; the oldest queued message is dropped (and counted) when full."""
        item = (PREFIX + topic, orjson.dumps(message))
        if self._outgoing.full():
            self._outgoing.get_nowait()
            self.dropped_outgoing += 1
        self._outgoing.put_nowait(item)

    def listen(self, topic: str) -> tuple[Subscription, Callable[[], None]]:
        """A local subscription fed by the shared Redis pattern subscription."""
        return self._local.listen(topic)

    async def _publisher(self) -> None:
        backoff = 0.1
        while True:
            channel, payload = await self._outgoing.get()
            while True:
                try:
                    assert self._client is not None
                    await self._client.publish(channel, payload)
                    backoff = 0.1
                    break
                except (RedisError, OSError) as exc:
                    # Pub/sub is at-most-once anyway: drop this one, count it, wait a little.
                    self.dropped_outgoing += 1
                    log.debug("redis publish failed: %s", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff_s)
                    break

    async def _reader(self) -> None:
        backoff, was_up = 0.1, False
        while True:
            pubsub = None
            try:
                # No silent retries here: redis-py would reconnect and re-subscribe on its own,
                # hiding the gap in which messages were lost — we must see it to send RESYNC.
                client = self._new_client(retries=0)
                pubsub = client.pubsub()
                await pubsub.psubscribe(PREFIX + "*")
                self.connected.set()
                if was_up or backoff > 0.1:
                    log.warning("redis bus reconnected: subscribers resynchronize")
                    for topic in self._local.topics():
                        self._local.deliver(topic, dict(RESYNC))
                was_up, backoff = True, 0.1
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") != "pmessage":
                        continue
                    channel = msg["channel"].decode()
                    self._local.deliver(channel[len(PREFIX):], orjson.loads(msg["data"]))
            except (RedisError, OSError) as exc:
                if self.connected.is_set():
                    log.warning("redis bus connection lost: %s", exc)
                self.connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
            finally:
                if pubsub is not None:
                    try:
                        await pubsub.aclose()
                        await client.aclose()
                    except (RedisError, OSError):
                        pass


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("redis bus task %s died", task.get_name(), exc_info=task.exception())
