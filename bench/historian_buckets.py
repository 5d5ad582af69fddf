"""Historian (DuckDB): insert rate, and one day of 1 s data for 100 tags in 1-minute buckets.

Run: `.venv/bin/python bench/historian_buckets.py` (about a minute on 2 cores). It writes
`--tags` × `--hours` × 3600 points (default 100 × 24 h = 8.64 M, values a noisy daily curve,
every 500th point Bad with no value) through `DuckDBHistorian.write` in batches of `--batch`
points into a fresh file, then times `buckets(all tags, the day, 60 s, min/max/avg/last/count)`
`--runs` times. Target (issue 3, benchmark d): < 200 ms.

Anchor, same run: the same aggregation as one SQL statement over the raw points (not the minute
rollup the adapter keeps), result fetched as Arrow and not converted to Python objects: what the
query would cost without the rollup, before any Python conversion.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from realtime.historian.base import Point
from realtime.historian.duckdb import DuckDBHistorian
from realtime.historian.process import HistorianProcess
from realtime.model import Quality

T0 = dt.datetime(2026, 1, 12, tzinfo=dt.UTC)


def _batches(tags: list[str], seconds: int, batch: int):  # type: ignore[no-untyped-def]
    """Lists of about `batch` points, time-ordered: every tag's sample for each second."""
    per = max(1, batch // len(tags))
    step = dt.timedelta(seconds=1)
    for s0 in range(0, seconds, per):
        out: list[Point] = []
        for sec in range(s0, min(seconds, s0 + per)):
            ts = T0 + sec * step
            day = math.sin(2 * math.pi * sec / 86_400)
            for i, tag in enumerate(tags):
                n = sec * len(tags) + i
                if n % 500 == 499:
                    out.append(Point(tag, ts, None, Quality.BAD_COMMUNICATION_ERROR))
                else:
                    out.append(Point(tag, ts, 300.0 + 20.0 * day + (n * 7919 % 1000) / 1000.0))
        yield out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--batch", type=int, default=10_000, help="points per write")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--file", type=Path, help="keep the DuckDB file here; if it exists, skip"
                        " writing and only time the queries")
    args = parser.parse_args()
    tags = [f"station/GRP-{i:03d}/p_out" for i in range(args.tags)]
    seconds = args.hours * 3600

    with tempfile.TemporaryDirectory(prefix="gasops-bench-") as tmp:
        path = args.file or Path(tmp) / "history.duckdb"
        reuse = path.exists()
        historian = DuckDBHistorian(path)
        await historian.start()
        try:
            build_s = write_s = 0.0
            total = 0
            gen = _batches(tags, 0 if reuse else seconds, args.batch)
            while True:
                t = time.perf_counter()
                batch = next(gen, None)
                build_s += time.perf_counter() - t
                if batch is None:
                    break
                t = time.perf_counter()
                await historian.write(batch)
                write_s += time.perf_counter() - t
                total += len(batch)

            end = T0 + dt.timedelta(seconds=seconds)
            await historian.buckets(tags, T0, end, 60)  # warm-up
            runs = []
            for _ in range(args.runs):
                t = time.perf_counter()
                result = await historian.buckets(tags, T0, end, 60)
                runs.append(time.perf_counter() - t)
            buckets = sum(len(series) for series in result.values())
        finally:
            await historian.close()
        size_mb = path.stat().st_size / 1e6
        # the same query through HistorianProcess, as the server runs DuckDB by default: the
        # answer crosses a pipe (pickled) on top of the query itself
        in_child = HistorianProcess(functools.partial(DuckDBHistorian, path))
        await in_child.start()
        try:
            await in_child.buckets(tags, T0, end, 60)
            child_runs = []
            for _ in range(args.runs):
                t = time.perf_counter()
                await in_child.buckets(tags, T0, end, 60)
                child_runs.append(time.perf_counter() - t)
        finally:
            await in_child.close()

        import duckdb  # the anchor: plain SQL on the same file, Arrow out, no Python objects

        con = duckdb.connect(str(path), read_only=True)
        try:
            t0_us = int(T0.timestamp()) * 1_000_000
            # what the adapter would do without its minute rollup
            sql = ("SELECT tag_id, ((epoch_us(ts) - $o) // 60000000)::INTEGER AS k, min(value),"
                   " max(value), avg(value), arg_max(value, ts), count(value) FROM points"
                   " WHERE ts >= make_timestamptz($s) AND ts < make_timestamptz($e)"
                   " GROUP BY ALL ORDER BY tag_id, k")
            params = {"o": t0_us, "s": t0_us, "e": t0_us + seconds * 1_000_000}
            con.sql(sql, params=params).to_arrow_table()
            anchor = []
            for _ in range(args.runs):
                t = time.perf_counter()
                con.sql(sql, params=params).to_arrow_table()
                anchor.append(time.perf_counter() - t)
        finally:
            con.close()

    med, best = statistics.median(runs) * 1000, min(runs) * 1000
    a_med = statistics.median(anchor) * 1000
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},"
          f" duckdb {duckdb.__version__}")
    if total:
        print(f"insert: {total:,} points in batches of {args.batch:,}: {total / write_s:,.0f} points/s"
              f" ({write_s:.1f} s in write; building the Point objects took {build_s:.1f} s more);"
              f" file {size_mb:.0f} MB")
    print(f"buckets: {len(tags)} tags x {args.hours} h of 1 s data -> {buckets:,} 1-min buckets"
          f" (5 aggregates): median {med:.0f} ms, best {best:.0f} ms over {args.runs} runs"
          f" (target < 200 ms); anchor (the same aggregation over the raw points in one SQL"
          f" statement, Arrow out, no rollup): median {a_med:.0f} ms")
    print(f"buckets through HistorianProcess (the server's default): median "
          f"{statistics.median(child_runs) * 1000:.0f} ms, best {min(child_runs) * 1000:.0f} ms")
    if total:
        print(f"RESULTS.md: | historian buckets, {len(tags)} tags x {args.hours} h @ 1 s -> 1 min |"
              f" {med:.0f} ms median / {best:.0f} ms best | anchor: SQL over raw points {a_med:.0f} ms"
              f" | insert {total / write_s:,.0f} pts/s (batch {args.batch:,}) |")


if __name__ == "__main__":
    asyncio.run(main())
