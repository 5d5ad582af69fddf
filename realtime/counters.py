"""Flow from a volume counter: what a corrector's `vb` register says about the flow right now.

A volume corrector reports its counter (m³ at standard conditions), not a flow rate one can
trust at any instant: the counter moves in whole digits, and a reading arrives every poll. The
rate is the counter's rise over a window of minutes, `(v_last − v_first) / (t_last − t_first)`,
which averages the digit steps away and is exact over the window for any profile of flow.

- A reading with the same volume at a later time counts (a consumer that stopped: rate 0).
- A counter that goes back (replaced, reset, rolled over) starts the window again.
- No rate until the readings span `min_span_s`, and none once the newest is older than
  `window_s` (a silent meter says nothing about now).
"""

from __future__ import annotations

import datetime as dt
from collections import deque

__all__ = ["CounterRate"]


class CounterRate:
    """The rate of one counter over a sliding window of its readings."""

    def __init__(self, window_s: float = 300.0, min_span_s: float = 30.0) -> None:
        if not 0 < min_span_s <= window_s:
            raise ValueError("need 0 < min_span_s <= window_s")
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._readings: deque[tuple[dt.datetime, float]] = deque()

    def add(self, at: dt.datetime, volume: float) -> None:
        """A reading of the counter `volume` taken `at` (tz-aware); older ones are ignored."""
        readings = self._readings
        if readings and at <= readings[-1][0]:
            return
        if readings and volume < readings[-1][1]:
            readings.clear()  # a new counter: the old readings say nothing about it
        readings.append((at, volume))
        # keep the newest reading that is at least a window old as the window's start
        while len(readings) > 2 and (at - readings[1][0]).total_seconds() >= self.window_s:
            readings.popleft()

    def per_hour(self, now: dt.datetime) -> float | None:
        """The counter's rise per hour over the window, or None (see the module docstring)."""
        if len(self._readings) < 2:
            return None
        (t0, v0), (t1, v1) = self._readings[0], self._readings[-1]
        span = (t1 - t0).total_seconds()
        if span < self.min_span_s or (now - t1).total_seconds() > self.window_s:
            return None
        return (v1 - v0) / span * 3600.0
