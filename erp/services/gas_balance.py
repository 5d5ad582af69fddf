"""Gas balance per district and per branch for a day or a month (ANA-1, ANA-3, ANA-4).

Assembles the inputs of `erp.domain.balance.balance` from the registry, the meter readings and
the stations' flow history, and flags the parts whose imbalance stands out. Definitions:

- **Period**: a calendar day or month of the utility's local time (`Norms.zone`, by default
  Europe/Moscow), i.e. local midnight to local midnight, turned into a half-open UTC range. A
  period still running ends at the last whole quarter of an hour before now (`complete` false).
- **Branch**: an outlet zone. The network is cut at every station: what stays connected by
  in-service pipes, links and valves that are normally open (`normal_state`, so a past month's
  branches do not change when a valve is operated today) is one zone. A zone's *feeders* are the
  stations whose outlet node lies in it; its id is their ids joined by "+" (one station in the
  usual case: "GRP-06"). A service point belongs to the branch of its node. Zones no station
  feeds (upstream of the GRS, behind a valve that is normally closed) are in no branch; their
  service points are counted as `unassigned_service_points`.
- **District**: the sum of the branches whose first feeder stands in the area (`Station.area_id`).
  Inflow is only measured at stations, so a branch is never split between districts: a service
  point of area A fed from area B's station counts in B's district.
- **Inflow**: the time integral of the feeders' flow tags (`station/<id>/flow`, m³/h at standard
  conditions) minus that of the stations drawing from the zone (their inlet node lies in it: the
  GRS zone hands gas on to the GRPs). Integrated from 15-minute averages of the historian; a
  quarter with no value takes the station's mean over the period, and `inflow_coverage` says
  what share of the quarters had values (the worst station of the part).
- **Metered**: per meter, the increase of its index over the period, interpolated linearly between
  the readings around each boundary (readings up to `Norms.reading_window` outside the period are
  used). A decrease of the index (a replaced or reset meter) leaves that interval uncovered.
  Indexes are at working conditions; `Norms.working_to_standard` converts per meter kind (1 by
  default: household meters work at ≤ 3 kPa gauge indoors, a correction under 3 %).
- **Unmetered (estimated)**: for every in-service service point, the part of the period its
  meters do not cover (no meter, no readings, a gap, a reset) times its registered annual volume
  spread evenly over the year (365 days), or the category norm when none is registered.
- **Leakage**: `leakage_m3` over the zone's in-service pipes by pressure level and the period's hours.
- **Own needs**: the feeders' heating, `Norms.own_needs_m3_per_day` by station kind for days of
  the heating season; where a station has an `internal_gas` meter with readings, its metered
  volume for the covered time and the norm for the rest.
- **Money**: every part at `Norms.price_per_m3` (see `erp.domain.balance`).
- **Abnormal**: `abnormal_reasons` among all branches (and, separately, all districts) whose flow
  history covers at least `Norms.min_coverage` of the period; a part below it is flagged for its
  data instead. Flags are computed over the whole network, whoever asks, and then filtered.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm
from erp.domain.balance import (
    ANNUAL_NORM_M3_BY_CATEGORY,
    GAS_PRICE_RUB_PER_M3,
    LEAKAGE_M3_PER_KM_H,
    OWN_NEEDS_M3_PER_DAY,
    Balance,
    BalanceError,
    abnormal_reasons,
    balance,
    leakage_m3,
)
from erp.services.registry import area_names

__all__ = ["BUCKET_S", "GRANULARITIES", "FlowHistory", "GasBalanceReport", "Norms", "PartBalance",
           "Period", "gas_balance", "metered_m3", "period_of"]

GRANULARITIES = ("day", "month")
BUCKET_S = 900  # flow averages per quarter of an hour: every real UTC offset is a multiple
_US = dt.timedelta(microseconds=1)
_YEAR_US = 365 * 86_400 * 1_000_000
_DAY_US = 86_400 * 1_000_000
_HOUR_US = 3_600 * 1_000_000
_IN_SERVICE = "in_service"
_BUILT = frozenset({"in_service", "out_of_service"})


class _Series(Protocol):
    @property
    def avg(self) -> Sequence[float | None] | None: ...

    @property
    def count(self) -> Sequence[int] | None: ...


class FlowHistory(Protocol):
    """What the balance needs of the historian (`realtime.historian.base.AbstractHistorian`)."""

    async def buckets(self, tags: Sequence[str], start: dt.datetime, end: dt.datetime,
                      bucket_s: int, aggregates: Sequence[str] = ...) -> Mapping[str, Any]: ...


def _default_leakage() -> dict[str, Decimal]:
    return dict(LEAKAGE_M3_PER_KM_H)


def _default_own_needs() -> dict[str, Decimal]:
    return dict(OWN_NEEDS_M3_PER_DAY)


def _default_annual() -> dict[str, Decimal]:
    return dict(ANNUAL_NORM_M3_BY_CATEGORY)


@dataclass(frozen=True, slots=True)
class Norms:
    """The utility's figures the balance uses (defaults: `erp.domain.balance`'s demo values)."""

    price_per_m3: Decimal = GAS_PRICE_RUB_PER_M3
    leakage_m3_per_km_h: Mapping[str, Decimal] = field(default_factory=_default_leakage)
    own_needs_m3_per_day: Mapping[str, Decimal] = field(default_factory=_default_own_needs)
    heating_months: frozenset[int] = frozenset({10, 11, 12, 1, 2, 3, 4})
    annual_norm_m3: Mapping[str, Decimal] = field(default_factory=_default_annual)
    working_to_standard: Mapping[str, Decimal] = field(default_factory=dict)
    """Meter kind → factor from the register (working conditions) to standard m³; 1 if absent."""
    zone: str = "Europe/Moscow"
    reading_window: dt.timedelta = dt.timedelta(days=35)
    z_limit: float = 3.5
    absolute_share: float = 0.05
    min_coverage: float = 0.9


@dataclass(frozen=True, slots=True)
class Period:
    """A local calendar day or month as a half-open UTC range [start, end)."""

    first_day: dt.date
    granularity: str
    zone: str
    start: dt.datetime
    end: dt.datetime
    complete: bool
    """False while the period is still running: `end` is then the last quarter hour before now."""

    @property
    def label(self) -> str:
        """`2027-01` for a month, `2027-01-15` for a day."""
        return self.first_day.isoformat()[:7] if self.granularity == "month" else \
            self.first_day.isoformat()

    @property
    def hours(self) -> Decimal:
        """Length in hours (a local day of a DST change has 23 or 25)."""
        return Decimal((self.end - self.start) // _US) / _HOUR_US


def period_of(day: dt.date, granularity: str, zone: str = "Europe/Moscow",
              now: dt.datetime | None = None) -> Period:
    """The local day, or the local month containing `day`, as UTC; ValueError on a bad
    granularity or zone, or a period that has not begun."""
    if granularity not in GRANULARITIES:
        raise BalanceError(f"granularity must be one of {', '.join(GRANULARITIES)}, "
                           f"got {granularity!r}")
    try:
        tz = zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise BalanceError(f"unknown time zone {zone!r}") from None
    if granularity == "month":
        first = day.replace(day=1)
        after = (first + dt.timedelta(days=32)).replace(day=1)
    else:
        first, after = day, day + dt.timedelta(days=1)
    start = dt.datetime.combine(first, dt.time(), tz).astimezone(dt.UTC)
    end = dt.datetime.combine(after, dt.time(), tz).astimezone(dt.UTC)
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    floor = dt.datetime.fromtimestamp(now.timestamp() // BUCKET_S * BUCKET_S, dt.UTC)
    period = Period(first, granularity, zone, start, min(end, floor), end <= floor)
    if floor <= start:
        raise BalanceError(f"the period {period.label} has not begun yet (or not a quarter of an "
                           "hour ago)")
    return period


def metered_m3(readings: Sequence[tuple[dt.datetime, Decimal]], start: dt.datetime,
               end: dt.datetime) -> tuple[Decimal, int]:
    """Index increase over [start, end) from readings (ts, index m³) in ts order, interpolated
    linearly at the boundaries, and the microseconds of the range the readings cover.

    An interval whose index decreases (meter replaced or reset) counts as not covered.
    """
    volume, covered = Decimal(0), 0
    for (t0, i0), (t1, i1) in pairwise(readings):
        a, b = max(t0, start), min(t1, end)
        if b <= a or t1 <= t0 or i1 < i0:
            continue
        span, whole = (b - a) // _US, (t1 - t0) // _US
        volume += (i1 - i0) * span / whole
        covered += span
    return volume, covered


@dataclass(frozen=True, slots=True)
class PartBalance:
    """The balance of one district or branch for the period, with what it rests on."""

    id: str
    """Branch: its feeder stations joined by "+"; district: the area id."""
    kind: str  # "branch" or "district"
    name: str
    area_id: str | None
    stations: tuple[str, ...]
    """The feeding stations (of all its branches, for a district)."""
    balance: Balance
    inflow_coverage: float
    """Share of the period's quarter hours with flow values (worst station of the part), 0–1."""
    service_points: int
    estimated_points: int
    """Service points whose consumption was estimated for some or all of the period."""
    abnormal: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class GasBalanceReport:
    """Districts and branches of the caller's areas for one period."""

    period: Period
    price_per_m3: Decimal
    districts: list[PartBalance]
    branches: list[PartBalance]
    unassigned_service_points: int
    """In-service service points of the caller's areas that no branch holds."""


# --- the network cut into zones -------------------------------------------------------------


class _Zones:
    """Union-find over node ids."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def root(self, n: str) -> str:
        p = self._parent.setdefault(n, n)
        while p != n:
            self._parent[n] = self._parent.setdefault(p, p)
            n, p = p, self._parent[p]
        return n

    def join(self, a: str, b: str) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)


@dataclass
class _Branch:
    feeders: list[orm.Station] = field(default_factory=list)
    drawers: list[orm.Station] = field(default_factory=list)
    length_m: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    points: list[orm.ServicePoint] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "+".join(s.id for s in self.feeders)


async def _branches(session: AsyncSession) -> tuple[dict[str, _Branch], list[orm.ServicePoint]]:
    """Zones with at least one feeder, keyed by branch id; and service points in no zone."""
    zones = _Zones()
    pipes = (await session.execute(select(orm.Pipe.from_node_id, orm.Pipe.to_node_id,
                                          orm.Pipe.pressure_level, orm.Pipe.length_m).where(
        orm.Pipe.status == _IN_SERVICE))).all()
    for a, b, _, _ in pipes:
        zones.join(a, b)
    for a, b in (await session.execute(select(orm.Valve.from_node_id, orm.Valve.to_node_id).where(
            orm.Valve.status == _IN_SERVICE, orm.Valve.normal_state != "closed"))).all():
        zones.join(a, b)
    for a, b in (await session.execute(select(orm.NetworkLink.from_node_id,
                                              orm.NetworkLink.to_node_id).where(
            orm.NetworkLink.status == _IN_SERVICE))).all():
        zones.join(a, b)
    by_root: dict[str, _Branch] = defaultdict(_Branch)
    stations = (await session.scalars(select(orm.Station).where(
        orm.Station.status.in_(_BUILT)).order_by(orm.Station.id))).all()
    for s in stations:
        by_root[zones.root(s.outlet_node_id)].feeders.append(s)
    for s in stations:
        by_root[zones.root(s.inlet_node_id)].drawers.append(s)
    for a, _, level, length in pipes:
        zone = by_root.get(zones.root(a))
        if zone is not None and zone.feeders:
            zone.length_m[level] += length
    unassigned: list[orm.ServicePoint] = []
    for sp in (await session.scalars(select(orm.ServicePoint).where(
            orm.ServicePoint.status != "retired").order_by(orm.ServicePoint.id))).all():
        zone = by_root.get(zones.root(sp.node_id))
        if zone is not None and zone.feeders:
            zone.points.append(sp)
        elif sp.status == _IN_SERVICE:
            unassigned.append(sp)
    return {z.id: z for z in by_root.values() if z.feeders}, unassigned


# --- inputs over the period -----------------------------------------------------------------


async def _station_flows(history: FlowHistory | None, station_ids: Iterable[str],
                         period: Period) -> dict[str, tuple[Decimal, float]]:
    """Station id → (volume m³ std over the period, share of quarter hours with values)."""
    ids = sorted(set(station_ids))
    out = {s: (Decimal(0), 0.0) for s in ids}
    if history is None or not ids:
        return out
    tags = {f"station/{s}/flow": s for s in ids}
    series = await history.buckets(list(tags), period.start, period.end, BUCKET_S, ("avg", "count"))
    expected = (period.end - period.start) // dt.timedelta(seconds=BUCKET_S)
    for tag, sr in series.items():
        values = [Decimal(repr(v)) for v, n in zip(sr.avg or (), sr.count or (), strict=False)
                  if v is not None and n]
        if values and tag in tags:
            mean = sum(values, Decimal(0)) / len(values)
            out[tags[tag]] = (mean * period.hours, min(1.0, len(values) / expected))
    return out


async def _meter_volumes(session: AsyncSession, period: Period, norms: Norms
                         ) -> tuple[dict[str, list[tuple[Decimal, int]]],
                                    dict[str, list[tuple[Decimal, int]]]]:
    """(service point id → [(standard m³, covered µs) per meter], station id → the same for
    its internal gas meters)."""
    meters = (await session.execute(select(orm.Meter.id, orm.Meter.kind,
                                           orm.Meter.service_point_id, orm.Meter.station_id))
              ).all()
    readings: dict[str, list[tuple[dt.datetime, Decimal]]] = defaultdict(list)
    for meter_id, ts, index in await _readings(session, period, norms.reading_window):
        readings[meter_id].append((ts, Decimal(repr(index))))
    by_point: dict[str, list[tuple[Decimal, int]]] = defaultdict(list)
    by_station: dict[str, list[tuple[Decimal, int]]] = defaultdict(list)
    for meter_id, kind, point_id, station_id in meters:
        rs = readings.get(meter_id)
        if not rs:
            continue
        volume, covered = metered_m3(rs, period.start, period.end)
        volume *= norms.working_to_standard.get(kind, Decimal(1))
        if point_id is not None:
            by_point[point_id].append((volume, covered))
        elif station_id is not None and kind == "internal_gas":
            by_station[station_id].append((volume, covered))
    return by_point, by_station


async def _readings(session: AsyncSession, period: Period, window: dt.timedelta
                    ) -> list[tuple[str, dt.datetime, float]]:
    """(meter, ts, index) in meter and ts order: per meter, the last reading before the period
    and the first after it (at most `window` away), its first and last reading in the period,
    and the two readings around each decrease of its index in the period.

    Between the readings left out the index only rises, so their increments telescope: the
    readings kept give exactly the volume and coverage that all of them give, and a month of
    daily readings of 20,000 meters comes back as about 4 rows per meter, not 30.
    """
    r = orm.MeterReading

    def edge(agg: Any, *where: Any) -> Any:
        inner = select(r.meter_id.label("m"), agg(r.ts).label("t")).where(*where) \
            .group_by(r.meter_id).subquery()
        return select(r.meter_id, r.ts, r.index_m3).join(
            inner, (r.meter_id == inner.c.m) & (r.ts == inner.c.t))

    w = {"partition_by": r.meter_id, "order_by": r.ts}
    inner = select(r.meter_id, r.ts, r.index_m3, func.lag(r.index_m3).over(**w).label("prev"),
                   func.lead(r.index_m3).over(**w).label("next")).where(
        r.ts >= period.start, r.ts < period.end).subquery()
    inside = select(inner.c.meter_id, inner.c.ts, inner.c.index_m3).where(
        inner.c.prev.is_(None) | inner.c.next.is_(None) | (inner.c.index_m3 < inner.c.prev)
        | (inner.c.index_m3 > inner.c.next))
    queries = (edge(func.max, r.ts >= period.start - window, r.ts < period.start), inside,
               edge(func.min, r.ts >= period.end, r.ts <= period.end + window))
    rows = [(m, ts, index) for q in queries for m, ts, index in (await session.execute(q)).all()]
    rows.sort(key=lambda row: (row[0], row[1]))
    return rows


def _split(measured: Sequence[tuple[Decimal, int]], period_us: int) -> tuple[Decimal, int]:
    """Metered volume and the microseconds of the period no meter covered."""
    volume = sum((v for v, _ in measured), Decimal(0))
    covered = min(period_us, sum(c for _, c in measured))
    return volume, period_us - covered


# --- assembling -----------------------------------------------------------------------------


@dataclass
class _Sums:
    inflow: Decimal = Decimal(0)
    metered: Decimal = Decimal(0)
    unmetered: Decimal = Decimal(0)
    leakage: Decimal = Decimal(0)
    own_needs: Decimal = Decimal(0)
    coverage: float = 1.0
    points: int = 0
    estimated: int = 0
    notes: list[str] = field(default_factory=list)


def _branch_sums(z: _Branch, period: Period, norms: Norms,
                 flows: Mapping[str, tuple[Decimal, float]],
                 by_point: Mapping[str, list[tuple[Decimal, int]]],
                 by_station: Mapping[str, list[tuple[Decimal, int]]]) -> _Sums:
    period_us = (period.end - period.start) // _US
    out = _Sums()
    inflow = sum((flows[s.id][0] for s in z.feeders), Decimal(0)) - \
        sum((flows[s.id][0] for s in z.drawers), Decimal(0))
    if inflow < 0:
        out.notes.append("the stations drawing from the branch measured more than its feeders")
        inflow = Decimal(0)
    out.inflow = inflow
    out.coverage = min(flows[s.id][1] for s in (*z.feeders, *z.drawers))
    for sp in z.points:
        volume, uncovered_us = _split(by_point.get(sp.id, ()), period_us)
        out.metered += volume
        out.points += 1
        if sp.status != _IN_SERVICE or not uncovered_us:
            continue
        annual = Decimal(repr(sp.annual_volume_m3_std or 0.0))
        if annual <= 0:
            annual = norms.annual_norm_m3.get(sp.category, Decimal(0))
        out.unmetered += annual * uncovered_us / _YEAR_US
        out.estimated += 1
    km = {level: Decimal(round(m)) / 1000 for level, m in z.length_m.items()}
    out.leakage = leakage_m3(km, norms.leakage_m3_per_km_h, float(period.hours))
    heating = period.first_day.month in norms.heating_months
    for s in z.feeders:
        volume, uncovered_us = _split(by_station.get(s.id, ()), period_us)
        rate = norms.own_needs_m3_per_day.get(s.kind, Decimal(0)) if heating else Decimal(0)
        out.own_needs += volume + rate * uncovered_us / _DAY_US
    return out


def _part(kind: str, part_id: str, name: str, area_id: str | None, stations: tuple[str, ...],
          sums: _Sums, price: Decimal) -> tuple[PartBalance, list[str]]:
    b = balance(part_id, inflow_m3=sums.inflow, metered_m3=sums.metered,
                unmetered_m3=sums.unmetered, leakage_m3=sums.leakage,
                own_needs_m3=sums.own_needs, price_per_m3=price)
    return PartBalance(part_id, kind, name, area_id, stations, b, sums.coverage, sums.points,
                       sums.estimated), sums.notes


def _flag(parts: list[tuple[PartBalance, list[str]]], norms: Norms) -> list[PartBalance]:
    """The parts with their abnormal flags and reasons (statistics over the well-covered ones)."""
    good = [p.balance for p, _ in parts if p.inflow_coverage >= norms.min_coverage]
    reasons = abnormal_reasons(good, z_limit=norms.z_limit, absolute_share=norms.absolute_share)
    out = []
    for p, notes in parts:
        why = list(notes)
        if p.inflow_coverage < norms.min_coverage:
            why.append(f"station flow history covers only {p.inflow_coverage:.0%} of the period")
        elif p.id in reasons:
            why.append(reasons[p.id])
        out.append(PartBalance(p.id, p.kind, p.name, p.area_id, p.stations, p.balance,
                               p.inflow_coverage, p.service_points, p.estimated_points,
                               bool(why), "; ".join(why) or None))
    return out


def _visible(area_id: str | None, areas: frozenset[str] | None, area: str | None) -> bool:
    if area is not None and area_id != area:
        return False
    return areas is None or area_id in areas


async def gas_balance(session: AsyncSession, history: FlowHistory | None, day: dt.date,
                      granularity: str = "month", *, areas: frozenset[str] | None = None,
                      area: str | None = None, norms: Norms | None = None,
                      now: dt.datetime | None = None) -> GasBalanceReport:
    """The balance of every district and branch of `areas` (None = all), or of one `area`, for
    the local day or month of `day`. Raises `BalanceError` (a ValueError) on a bad period."""
    norms = norms or Norms()
    period = period_of(day, granularity, norms.zone, now)
    branches, unassigned = await _branches(session)
    flows = await _station_flows(history, (s.id for z in branches.values()
                                           for s in (*z.feeders, *z.drawers)), period)
    by_point, by_station = await _meter_volumes(session, period, norms)
    price = norms.price_per_m3

    branch_parts: list[tuple[PartBalance, list[str]]] = []
    district_sums: dict[str, _Sums] = defaultdict(_Sums)
    district_stations: dict[str, list[str]] = defaultdict(list)
    for bid in sorted(branches):
        z = branches[bid]
        area_id = z.feeders[0].area_id
        sums = _branch_sums(z, period, norms, flows, by_point, by_station)
        name = " + ".join(s.name for s in z.feeders)
        branch_parts.append(_part("branch", bid, name, area_id, tuple(s.id for s in z.feeders),
                                  sums, price))
        if area_id is None:
            continue
        d, b = district_sums[area_id], branch_parts[-1][0].balance
        d.inflow += b.inflow_m3
        d.metered += b.metered_m3
        d.unmetered += b.unmetered_m3
        d.leakage += b.leakage_m3
        d.own_needs += b.own_needs_m3
        d.coverage = min(d.coverage, sums.coverage)
        d.points += sums.points
        d.estimated += sums.estimated
        d.notes += [f"{bid}: {n}" for n in sums.notes]
        district_stations[area_id] += [s.id for s in z.feeders]
    names = await area_names(session)
    district_parts = [_part("district", a, names.get(a, a), a, tuple(district_stations[a]),
                            district_sums[a], price) for a in sorted(district_sums)]
    return GasBalanceReport(
        period, price,
        [p for p in _flag(district_parts, norms) if _visible(p.area_id, areas, area)],
        [p for p in _flag(branch_parts, norms) if _visible(p.area_id, areas, area)],
        sum(1 for sp in unassigned if _visible(sp.area_id, areas, area)))
