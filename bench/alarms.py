"""Alarm engine throughput: tag updates/s evaluated with 10,000 alarm definitions.

Run: `.venv/bin/python bench/alarms.py` (about 20 s).

Setup: 2,500 tags, each with four definitions — HIHI, HI, LO (with deadbands) and a
bad-quality alarm — so 10,000 definitions; values are a random walk that crosses limits now
and then (so some updates do cause transitions, events and flood bookkeeping), fed in batches of
5,000 values as drivers deliver them. The figure is values/s through `AlarmEngine.on_values`,
events included (a sink that keeps them). Anchor in the same run: the same batches through a
bare loop doing one dict lookup and one float comparison per definition — the floor for any
pure-Python engine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import time

from realtime.alarms.engine import AlarmEngine
from realtime.alarms.model import AlarmDefinition, AlarmEvent, AlarmKind, Priority
from realtime.model import Quality, TagValue


def definitions(n_tags: int) -> list[AlarmDefinition]:
    """Four alarms per tag."""
    out = []
    for i in range(n_tags):
        tag = f"station/S{i:05d}/p_out"
        area = f"area-{i % 20}"
        out += [
            AlarmDefinition(f"{tag}:hihi", tag, AlarmKind.hihi, Priority.critical, area, limit=9.5,
                            deadband=0.1),
            AlarmDefinition(f"{tag}:hi", tag, AlarmKind.hi, Priority.high, area, limit=8.0,
                            deadband=0.1),
            AlarmDefinition(f"{tag}:lo", tag, AlarmKind.lo, Priority.medium, area, limit=2.0,
                            deadband=0.1),
            AlarmDefinition(f"{tag}:bad", tag, AlarmKind.bad_quality, Priority.low, area),
        ]
    return out


def batches(n_tags: int, n_batches: int, batch: int) -> list[dict[str, TagValue]]:
    """Random-walk values, pre-built so the measurement is the engine alone."""
    rng = random.Random(7)
    tags = [f"station/S{i:05d}/p_out" for i in range(n_tags)]
    level = {t: 5.0 for t in tags}
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    out = []
    for b in range(n_batches):
        ts = t0 + dt.timedelta(seconds=b)
        chunk = {}
        for k in range(batch):
            tag = tags[(b * batch + k) % n_tags]
            level[tag] = min(10.0, max(0.0, level[tag] + rng.gauss(0, 0.3)))
            q = Quality.BAD_NOT_CONNECTED if rng.random() < 0.001 else Quality.GOOD
            chunk[tag] = TagValue(level[tag], q, ts, ts)
        out.append(chunk)
    return out


def main() -> None:
    """Print the figures for bench/RESULTS.md."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", type=int, default=2500)
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--batch", type=int, default=2500)
    args = ap.parse_args()
    defs = definitions(args.tags)
    data = batches(args.tags, args.batches, args.batch)
    n_values = sum(len(b) for b in data)
    events: list[AlarmEvent] = []
    clock_now = [dt.datetime(2026, 12, 1, tzinfo=dt.UTC)]
    engine = AlarmEngine(defs, clock=lambda: clock_now[0], sink=events.extend)
    start = time.perf_counter()
    for i, b in enumerate(data):
        clock_now[0] = dt.datetime(2026, 12, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
        engine.on_values(b)
    elapsed = time.perf_counter() - start
    # anchor: the floor — one lookup and one comparison per definition
    limits = {}
    for d in defs:
        limits.setdefault(d.tag, []).append(d.limit if d.limit is not None else 0.0)
    a0 = time.perf_counter()
    hits = 0
    for b in data:
        for path, tv in b.items():
            for lim in limits[path]:
                if tv.value >= lim:  # type: ignore[operator]
                    hits += 1
    anchor = time.perf_counter() - a0
    print(f"alarm engine: {n_values / elapsed:,.0f} updates/s with {len(defs):,} definitions "
          f"({n_values:,} values, {engine.evaluated:,} evaluations, {len(events):,} events); "
          f"anchor bare loop: {n_values / anchor:,.0f} updates/s")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")


if __name__ == "__main__":
    main()
