"""One contract for every bus: in-process and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from realtime.broadcast import Broadcast, Subscription
from realtime.bus import RESYNC, AbstractBus
from realtime.redis_bus import RedisBus


async def _next(sub: Subscription) -> Any:
    return await asyncio.wait_for(sub.get(), 5.0)


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[AbstractBus]:
    if request.param == "memory":
        b: AbstractBus = Broadcast(maxsize=10)
    else:
        b = RedisBus(request.getfixturevalue("redis_url"), maxsize=10)
    await b.start()
    if isinstance(b, RedisBus):
        await asyncio.wait_for(b.connected.wait(), 5)
    try:
        yield b
    finally:
        await b.close()


async def test_publish_reaches_every_subscriber_of_the_topic(bus: AbstractBus) -> None:
    a, unsub_a = bus.listen("tags")
    b, unsub_b = bus.listen("tags")
    other, unsub_o = bus.listen("alarms")
    bus.publish("tags", {"path": "station/GRP-01/p_out", "value": 2810.5})
    assert await _next(a) == {"path": "station/GRP-01/p_out", "value": 2810.5}
    assert await _next(b) == {"path": "station/GRP-01/p_out", "value": 2810.5}
    assert other.queue.empty()
    for u in (unsub_a, unsub_b, unsub_o):
        u()


async def test_order_is_kept_and_unsubscribe_stops_delivery(bus: AbstractBus) -> None:
    async with bus.subscribe("t") as sub:
        for k in range(5):
            bus.publish("t", {"k": k})
        assert [(await _next(sub))["k"] for _ in range(5)] == [0, 1, 2, 3, 4]
    probe, unsub = bus.listen("t")
    bus.publish("t", {"k": 99})
    assert (await _next(probe))["k"] == 99
    unsub()
    assert sub.queue.empty()


async def test_a_slow_subscriber_keeps_the_newest_and_counts_drops(bus: AbstractBus) -> None:
    async with bus.subscribe("burst") as slow, bus.subscribe("burst") as fence:
        for k in range(25):
            bus.publish("burst", {"k": k})
        for _ in range(25):  # wait until everything has been delivered locally
            if (await _next(fence))["k"] == 24:
                break
        got = [slow.queue.get_nowait()["k"] for _ in range(slow.queue.qsize())]
        assert got == list(range(15, 25)) and slow.dropped == 15


async def test_two_processes_see_each_other(redis_url: str) -> None:
    one, two = RedisBus(redis_url), RedisBus(redis_url)
    await one.start()
    await two.start()
    try:
        await asyncio.wait_for(asyncio.gather(one.connected.wait(), two.connected.wait()), 5)
        async with two.subscribe("tags") as sub:
            one.publish("tags", {"path": "skz/SKZ-01/u_out", "value": 23.4})
            assert await _next(sub) == {"path": "skz/SKZ-01/u_out", "value": 23.4}
    finally:
        await one.close()
        await two.close()


async def test_lost_connection_ends_in_resync(redis_url: str) -> None:
    import redis.asyncio as aioredis

    bus = RedisBus(redis_url, max_backoff_s=0.2)
    await bus.start()
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await asyncio.wait_for(bus.connected.wait(), 5)
        async with bus.subscribe("tags") as sub:
            await admin.client_kill_filter(_type="pubsub")
            assert await _next(sub) == dict(RESYNC)
            await asyncio.wait_for(bus.connected.wait(), 5)
            bus.publish("tags", {"after": True})
            assert await _next(sub) == {"after": True}
    finally:
        await admin.aclose()
        await bus.close()


async def test_unreachable_redis_never_blocks_publishers() -> None:
    import time

    from tests._services import free_port

    bus = RedisBus(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2, max_backoff_s=0.2)
    await bus.start()
    t0 = time.perf_counter()
    for k in range(5000):
        bus.publish("tags", {"k": k})
    assert time.perf_counter() - t0 < 1.0
    await asyncio.sleep(0.5)
    assert not bus.connected.is_set() and bus.dropped_outgoing > 0
    t0 = time.perf_counter()
    await bus.close()
    assert time.perf_counter() - t0 < 2.0
