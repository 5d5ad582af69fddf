"""The outbox behind the alarm journal and the command audit: order kept, nothing lost across a
failing store, one writer at a time."""

from __future__ import annotations

import asyncio

from server.outbox import Outbox


async def test_items_arrive_in_order_across_a_failing_store() -> None:
    written: list[int] = []
    failures = [2]  # the first two writes fail, as a database that is away would

    async def write(batch: list[int]) -> None:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("database unreachable")
        await asyncio.sleep(0)
        written.extend(batch)

    box: Outbox[int] = Outbox(write, name="test-outbox", batch_size=7)
    box.start()
    box.extend(range(20))
    box.extend(range(20, 30))
    async with asyncio.timeout(10):
        while len(written) < 30:  # noqa: ASYNC110 - the writer retries with its own backoff
            await asyncio.sleep(0.05)
    await box.close()
    assert written == list(range(30)) and box.failures == 2 and len(box) == 0


async def test_an_explicit_flush_and_the_task_never_write_the_same_batch_twice() -> None:
    written: list[int] = []

    async def write(batch: list[int]) -> None:
        await asyncio.sleep(0.01)  # a slow store: both writers would see the same head
        written.extend(batch)

    box: Outbox[int] = Outbox(write, name="test-outbox", batch_size=3)
    box.start()
    box.extend(range(10))
    await asyncio.gather(box.flush(), box.flush())
    await box.close()
    assert written == list(range(10))


async def test_close_writes_what_is_still_queued() -> None:
    written: list[str] = []

    async def write(batch: list[str]) -> None:
        written.extend(batch)

    box: Outbox[str] = Outbox(write, name="test-outbox")
    box.extend(["a", "b"])  # never started: close still writes
    await box.close()
    assert written == ["a", "b"]
