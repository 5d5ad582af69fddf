"""The historian writer: batches, never blocks the pipeline, counts every dropped point."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

from realtime.historian.base import Point
from realtime.historian.writer import HistorianWriter
from realtime.model import Quality, TagValue
from realtime.store import Change

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def changes(n: int, start: int = 0) -> list[Change]:
    return [Change(f"t/{k}", None, TagValue(float(k), Quality.GOOD,
                                            T0 + dt.timedelta(seconds=k), T0))
            for k in range(start, start + n)]


class Target:
    def __init__(self) -> None:
        self.batches: list[list[Point]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, points: Sequence[Point]) -> None:
        await self.gate.wait()
        self.batches.append(list(points))


async def test_batches_and_flushes_everything_on_close() -> None:
    target = Target()
    w = HistorianWriter(target, max_batch=100, flush_interval_s=60)
    await w.start()
    w.sink(changes(250))
    await asyncio.sleep(0.05)  # reaching max_batch wakes the writer without waiting 60 s
    assert sum(len(b) for b in target.batches) >= 100
    await w.close()
    points = [p for b in target.batches for p in b]
    assert [p.tag for p in points] == [f"t/{k}" for k in range(250)]
    assert max(len(b) for b in target.batches) <= 100 and w.written == 250


async def test_overflow_drops_the_oldest_and_counts_them() -> None:
    target = Target()
    target.gate.clear()  # storage stalls
    dropped: list[int] = []
    w = HistorianWriter(target, max_batch=10, flush_interval_s=0.01, max_queue=50,
                        on_drop=dropped.append)
    await w.start()
    await asyncio.sleep(0.05)
    w.sink(changes(80))  # the sink never blocks, even now
    assert w.dropped == 30 and sum(dropped) == 30 and w.queued <= 50
    target.gate.set()
    await w.close()
    kept = [p.tag for b in target.batches for p in b]
    assert len(kept) + w.dropped == 80
    assert kept[-1] == "t/79"  # the newest survive
