"""The demo's field crews on the move: a few crews drive along their area's pipes (streets
follow the mains) and report where they are every few seconds.

Runs only with the demo's simulated field (`Settings.simulate_field`). Each simulated crew is
reported by its foreman through `erp.services.crews.report_position`, the same path as the
crew app's `reportPosition` (checked, stored, its older days purged, published on the bus),
but without an audit record: a simulator's reports are not a person's actions. Routes are
random walks over the pipe graph of the crew's area (`erp.services.network_map`): along a
pipe's drawn polyline, then on to another pipe at its end node, turning back only at a dead
end. Crews and pipes are read once; until a seeded town has both, the simulator looks again
every `retry_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from erp.domain.access import Principal, Role
from erp.services import crews as crew_service
from erp.services.network_map import MapPipe, network_map

__all__ = ["CrewSimulator"]

log = logging.getLogger("gasops.crew_sim")

_M_PER_DEG_LAT = 111_320.0
_READER = Principal(0, "crew-sim", Role.admin.value, None)  # reads every crew, reports none


def _distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Metres between two nearby (lat, lon) points (equirectangular: fine below a few km)."""
    dy = (b[0] - a[0]) * _M_PER_DEG_LAT
    dx = (b[1] - a[1]) * _M_PER_DEG_LAT * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(dx, dy)


def _points(path: Sequence[float]) -> list[tuple[float, float]]:
    return [(path[k], path[k + 1]) for k in range(0, len(path) - 1, 2)]


@dataclass
class _Walker:
    """One crew's random walk over its area's pipes."""

    crew_id: str
    reporter: Principal
    pipes: list[MapPipe]
    rng: random.Random
    at_node: dict[str, list[int]] = field(init=False)
    pipe: int = 0
    forward: bool = True
    leg: int = 0  # index of the polyline vertex the crew left last
    offset_m: float = 0.0  # how far past that vertex

    def __post_init__(self) -> None:
        self.at_node = defaultdict(list)
        for k, p in enumerate(self.pipes):
            self.at_node[p.from_node_id].append(k)
            self.at_node[p.to_node_id].append(k)
        self.pipe = self.rng.randrange(len(self.pipes))

    def _line(self) -> list[tuple[float, float]]:
        pts = _points(self.pipes[self.pipe].path)
        return pts if self.forward else pts[::-1]

    def _turn(self) -> None:
        """At the end of a pipe: on to another one at that node (back only at a dead end)."""
        p = self.pipes[self.pipe]
        node = p.to_node_id if self.forward else p.from_node_id
        choices = [k for k in self.at_node[node] if k != self.pipe] or [self.pipe]
        self.pipe = self.rng.choice(choices)
        self.forward = self.pipes[self.pipe].from_node_id == node
        self.leg, self.offset_m = 0, 0.0

    def position(self) -> tuple[float, float]:
        """Where the crew is now, (lat, lon) degrees."""
        line = self._line()
        if len(line) < 2:
            return line[0]
        a, b = line[self.leg], line[self.leg + 1]
        d = _distance_m(a, b)
        f = 0.0 if d <= 0 else min(self.offset_m / d, 1.0)
        return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f

    def advance(self, metres: float) -> None:
        """Move `metres` along the route."""
        for _ in range(10_000):  # bounded: zero-length pipes must not spin forever
            line = self._line()
            if self.leg >= len(line) - 1:
                self._turn()
                continue
            left = _distance_m(line[self.leg], line[self.leg + 1]) - self.offset_m
            if metres <= left:
                self.offset_m += metres
                return
            metres -= max(left, 0.0)
            self.leg, self.offset_m = self.leg + 1, 0.0
        self.leg, self.offset_m = 0, 0.0  # only pipes of no length here: stay put


class CrewSimulator:
    """Moves up to `crews` demo crews at `speed_m_s` and reports each every `period_s`."""

    def __init__(
        self,
        db: Any,
        bus: Any,
        *,
        crews: int = 3,
        period_s: float = 5.0,
        speed_m_s: float = 6.0,
        retry_s: float = 60.0,
        seed: int = 11,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._db = db
        self._bus = bus
        self._crews = crews
        self.period_s = period_s
        self._step_m = speed_m_s * period_s
        self._retry_s = retry_s
        self._rng = random.Random(seed)
        self._clock = clock
        self._walkers: list[_Walker] = []
        self._failing: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin moving crews in the background."""
        self._task = asyncio.create_task(self._run(), name="crew-sim")

    async def stop(self) -> None:
        """Stop moving them; idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def crew_ids(self) -> list[str]:
        """The crews being moved (none until the routes are loaded)."""
        return [w.crew_id for w in self._walkers]

    async def load(self) -> int:
        """Pick the crews with a foreman and pipes in their area; how many."""
        walkers: list[_Walker] = []
        async with self._db() as s:
            for c in await crew_service.visible_crews(s, _READER):
                if len(walkers) >= self._crews:
                    break
                if c.foreman is None or c.area_id is None:
                    continue
                pipes = [p for p in (await network_map(s, None, c.area_id)).pipes if len(p.path) >= 4]
                if not pipes:
                    continue
                reporter = Principal(
                    c.foreman.id, c.foreman.username, Role.foreman.value, frozenset({c.area_id})
                )
                walkers.append(_Walker(c.id, reporter, pipes, random.Random(self._rng.random())))
        self._walkers = walkers
        return len(walkers)

    async def tick(self) -> None:
        """Move every crew one period on and report where it is (a failed report is logged
        once until that crew's reports succeed again)."""
        now = self._clock()
        for w in self._walkers:
            w.advance(self._step_m)
            lat, lon = w.position()
            try:
                await crew_service.report_position(
                    self._db,
                    self._bus.publish,
                    w.reporter,
                    lat,
                    lon,
                    round(self._rng.uniform(3.0, 12.0), 1),
                    now,
                    crew_id=w.crew_id,
                    now=now,
                )
            except Exception:
                if w.crew_id not in self._failing:
                    log.exception("crew simulator: reporting %s failed", w.crew_id)
                self._failing.add(w.crew_id)
            else:
                if w.crew_id in self._failing:
                    log.info("crew simulator: reporting %s again", w.crew_id)
                self._failing.discard(w.crew_id)

    async def _run(self) -> None:
        told = False
        while True:
            try:
                if await self.load():
                    log.info("crew simulator: moving %s", ", ".join(self.crew_ids))
                    break
                if not told:
                    log.info(
                        "crew simulator: no crew with a foreman and pipes yet; looking again every %.0f s",
                        self._retry_s,
                    )
                    told = True
            except Exception:
                if not told:
                    log.exception("crew simulator: could not load crews and pipes")
                    told = True
            await asyncio.sleep(self._retry_s)
        while True:
            await self.tick()
            await asyncio.sleep(self.period_s)
