"""Alarm definitions generated from the tag registry, and the alarm journal.

`DEFAULTS` are the demo town's default alarm rules, one per (asset class, tag, alarm kind), as
data. `definition_values` turns a rule and one tag into a definition row (pure, no database).
`ensure_alarm_definitions` creates the missing definitions for every tag in the registry,
idempotently, and keeps generated rows in step with the registry (a changed outlet set-point
moves the pressure limits) without ever touching a row a person edited (`source = "user"`).

The journal (`alarm_events`) is append-only; `seq` orders it. Readers page through it newest
first by `seq` (keyset pagination), or read a time window oldest first for KPIs.

Priorities (the engine's `Priority`): 1 low, 2 medium, 3 high, 4 critical. Most default rules
are low or medium; high and critical are kept for station outlet pressure far from the set-point,
intrusion and losing sight of a station. Every function takes an `AsyncSession` and never
commits: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.adapters import orm

__all__ = [
    "DEFAULTS",
    "AlarmRule",
    "TagFacts",
    "alarm_events_between",
    "alarm_journal",
    "append_alarm_events",
    "definition_values",
    "ensure_alarm_definitions",
    "latest_alarm_events",
    "load_alarm_definitions",
]

LOW, MEDIUM, HIGH, CRITICAL = 1, 2, 3, 4
KINDS = frozenset({"hihi", "hi", "lo", "lolo", "rate", "discrete", "stale", "bad_quality",
                   "cp_window", "deviation"})
BASES = frozenset({"fixed", "setpoint", "range_high"})
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class AlarmRule:
    """A default alarm for one tag of an asset class.

    How the numbers are computed, by `basis`:

    - ``fixed``: `limit` and `deadband` are in the tag's unit as given;
    - ``setpoint``: `limit` and `deadband` are fractions of the station's outlet set-point
      (Pa gauge), e.g. ``limit=1.10`` is 110 % of the set-point;
    - ``range_high``: fractions of the tag's `range_high` (rated current, station capacity).

    `low`/`high` (cp_window bounds) are fixed. A stale alarm fires after `stale_periods` times
    the tag's expected update period. `message` may use ``{asset}``, ``{limit}``,
    ``{limit_kpa}``, ``{low}``, ``{high}`` and ``{stale_after_s}``.
    """

    asset_kind: str
    tag: str
    kind: str
    priority: int
    message: str
    consequence: str
    guidance: str
    basis: str = "fixed"
    limit: float | None = None
    low: float | None = None
    high: float | None = None
    states: tuple[Any, ...] = ()
    stale_periods: float | None = None
    deadband: float = 0.0
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0
    latching: bool = False

    def __post_init__(self) -> None:
        where = f"rule {self.asset_kind}/{self.tag}:{self.kind}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: unknown alarm kind")
        if self.basis not in BASES:
            raise ValueError(f"{where}: unknown basis {self.basis!r}")
        if not LOW <= self.priority <= CRITICAL:
            raise ValueError(f"{where}: priority must be 1..4")
        if self.kind in {"hihi", "hi", "lo", "lolo", "rate", "deviation"} and self.limit is None:
            raise ValueError(f"{where}: needs a limit")
        if self.kind == "cp_window" and (self.low is None or self.high is None
                                         or self.low >= self.high):
            raise ValueError(f"{where}: needs low < high")
        if self.kind == "discrete" and not self.states:
            raise ValueError(f"{where}: needs its abnormal states")
        if self.kind == "stale" and not (self.stale_periods and self.stale_periods > 0):
            raise ValueError(f"{where}: needs stale_periods > 0")
        if self.deadband < 0 or self.on_delay_s < 0 or self.off_delay_s < 0:
            raise ValueError(f"{where}: deadband and delays must not be negative")


_P_OUT_GUIDE = ("Compare with inlet pressure and flow; check the regulator and its pilot. "
                "Send a crew if it does not settle.")

DEFAULTS: tuple[AlarmRule, ...] = (
    # --- pressure-reducing stations (GRS, GRP, ShRP) ---------------------------------------
    AlarmRule(
        "station", "p_out", "hihi", CRITICAL, basis="setpoint", limit=1.25, deadband=0.01,
        on_delay_s=5,
        message="{asset}: outlet pressure HIHI (>= {limit_kpa:.2f} kPa)",
        consequence="Overpressure downstream: appliance damage and leaks; the slam-shut valve "
                    "(PZK) will trip and cut gas to the whole district.",
        guidance="Dispatch the emergency crew now. Check regulator and pilot; switch to the "
                 "reserve line or throttle the outlet valve."),
    AlarmRule(
        "station", "p_out", "hi", HIGH, basis="setpoint", limit=1.10, deadband=0.01,
        on_delay_s=5,
        message="{asset}: outlet pressure high (>= {limit_kpa:.2f} kPa)",
        consequence="Pressure is drifting above the set-point; if it keeps rising the slam-shut "
                    "valve trips and the district loses gas.",
        guidance=_P_OUT_GUIDE),
    AlarmRule(
        "station", "p_out", "lo", HIGH, basis="setpoint", limit=0.90, deadband=0.01,
        on_delay_s=5,
        message="{asset}: outlet pressure low (<= {limit_kpa:.2f} kPa)",
        consequence="The farthest consumers get too little pressure at peak; burners may go out.",
        guidance=_P_OUT_GUIDE + " Check the filter differential pressure."),
    AlarmRule(
        "station", "p_out", "lolo", CRITICAL, basis="setpoint", limit=0.75, deadband=0.01,
        on_delay_s=5,
        message="{asset}: outlet pressure LOLO (<= {limit_kpa:.2f} kPa)",
        consequence="Supply is failing: flames go out, and gas escapes from open burners when "
                    "pressure returns.",
        guidance="Dispatch the emergency crew now. Check whether the slam-shut valve tripped or "
                 "the inlet is lost; prepare to notify consumers before restoring gas."),
    AlarmRule(
        "station", "p_in", "lo", MEDIUM, basis="setpoint", limit=1.20, deadband=0.02,
        on_delay_s=10,
        message="{asset}: inlet pressure too low for the regulator (<= {limit_kpa:.2f} kPa)",
        consequence="The regulator can no longer hold the outlet set-point; outlet pressure "
                    "will fall.",
        guidance="Check the upstream network and the feeding station; watch this station's "
                 "outlet pressure."),
    AlarmRule(
        "station", "door", "discrete", HIGH, states=(True,),
        message="{asset}: door open",
        consequence="Someone is at the gas equipment: an unannounced visit may be intrusion or "
                    "tampering.",
        guidance="Check whether a crew is booked at the site. If not, send the emergency crew "
                 "and call the police."),
    AlarmRule(
        "station", "p_out", "stale", HIGH, stale_periods=3,
        message="{asset}: communication lost (no outlet pressure for {stale_after_s:.0f} s)",
        consequence="The station is not watched: pressure excursions go unseen.",
        guidance="Check the modem link and the station's power supply. Send a crew if it is not "
                 "back within the hour or consumers report low pressure."),
    AlarmRule(
        "station", "t_gas", "lo", LOW, limit=-10.0, deadband=1.0, on_delay_s=60,
        message="{asset}: gas temperature low (<= {limit:.0f} degC)",
        consequence="Hydrates and ice can block the regulator and its pilot lines.",
        guidance="Check the station heating; plan a visit within the shift if it persists."),
    AlarmRule(
        "station", "flow", "hi", LOW, basis="range_high", limit=1.0, deadband=0.02,
        on_delay_s=300,
        message="{asset}: flow at station capacity (>= {limit:.0f} m3/h)",
        consequence="Outlet pressure will sag at the peak; the district may be under-supplied.",
        guidance="Watch the outlet pressure; report the station for capacity planning."),
    # --- cathodic protection (SKZ) ----------------------------------------------------------
    AlarmRule(
        "skz", "potential", "cp_window", MEDIUM, low=-1.15, high=-0.85, deadband=0.01,
        on_delay_s=60,
        message="{asset}: polarization potential outside {low:.2f}..{high:.2f} V (CSE)",
        consequence="Less negative: the steel pipes corrode. More negative: the coating lifts "
                    "and the steel may embrittle.",
        guidance="Check the rectifier mode and set-point and adjust the output; book a CP "
                 "survey if it does not come back into the window."),
    AlarmRule(
        "skz", "u_out", "lo", MEDIUM, limit=0.5, deadband=0.2, on_delay_s=30,
        message="{asset}: rectifier output off (<= {limit:.1f} V)",
        consequence="The pipes of this station are unprotected; corrosion resumes.",
        guidance="Check mains power, the fuse and the rectifier; send a CP technician within "
                 "days."),
    AlarmRule(
        "skz", "i_out", "hi", LOW, basis="range_high", limit=0.95, deadband=0.02,
        on_delay_s=600,
        message="{asset}: output current at its rating (>= {limit:.1f} A)",
        consequence="The rectifier cannot raise protection further; a coating defect or a short "
                    "to a foreign structure is likely.",
        guidance="Book a CP survey of the protected pipes."),
    AlarmRule(
        "skz", "potential", "stale", LOW, stale_periods=3,
        message="{asset}: communication lost (no data for {stale_after_s:.0f} s)",
        consequence="Protection is not watched; the rectifier keeps running on its own.",
        guidance="Check the modem link; no visit needed unless it stays lost for days."),
    # --- industrial volume correctors -------------------------------------------------------
    AlarmRule(
        "meter", "alarm", "hi", MEDIUM, limit=1,
        message="{asset}: corrector alarm",
        consequence="Volumes are being recorded as disturbed or substitute values; billing may "
                    "be disputed.",
        guidance="Read the corrector's event log; send a metrology technician if it does not "
                 "clear."),
    AlarmRule(
        "meter", "p", "stale", LOW, stale_periods=3,
        message="{asset}: corrector communication lost (no data for {stale_after_s:.0f} s)",
        consequence="Readings are not collected; the corrector keeps its own archive.",
        guidance="Check the modem; the archive can be read out once the link is back."),
    # --- the live twin's leak watch, per area ----------------------------------------------
    # Medium: a statistical suspicion to investigate, not yet a confirmed escape (the gas smell
    # reported by a caller is the emergency service's, at its own priority).
    AlarmRule(
        "area", "leak", "hi", MEDIUM, limit=0.05,
        message="{asset}: leak suspected by the twin (the value is the estimated leak, m3/h)",
        consequence="Gas is escaping somewhere in the area: a growing leak can reach a "
                    "building and explode; every hour of it is lost gas.",
        guidance="Run leak localization for the area (the wall map shows its candidates), "
                 "send the emergency crew with a gas detector to the best ones, and check "
                 "recent excavation works and consumer complaints about gas smell."),
    # --- remotely operated valves -----------------------------------------------------------
    AlarmRule(
        "valve", "position", "bad_quality", MEDIUM,
        message="{asset}: valve position unknown (bad quality)",
        consequence="The valve's state cannot be trusted for remote shut-off.",
        guidance="Check the position sensor and the actuator; confirm the state on site before "
                 "commanding the valve."),
    AlarmRule(
        "valve", "position", "stale", LOW, stale_periods=3,
        message="{asset}: valve communication lost (no data for {stale_after_s:.0f} s)",
        consequence="Remote shut-off is unavailable at this valve.",
        guidance="Check the modem link; in an emergency, send a crew to operate it by hand."),
)


@dataclass(frozen=True, slots=True)
class TagFacts:
    """What a rule needs to know about one tag."""

    path: str
    asset_kind: str
    asset_id: str
    area_id: str | None
    name: str
    expected_period_s: float | None = None
    range_high: float | None = None


def _basis_value(rule: AlarmRule, tag: TagFacts, setpoint_pa: float | None) -> float | None:
    if rule.basis == "setpoint":
        return setpoint_pa if setpoint_pa is not None and setpoint_pa > 0 else None
    if rule.basis == "range_high":
        return tag.range_high if tag.range_high is not None and tag.range_high > 0 else None
    return 1.0


def definition_values(rule: AlarmRule, tag: TagFacts,
                      setpoint_pa: float | None = None) -> dict[str, Any] | None:
    """The `alarm_definitions` row of `rule` on `tag` (without `enabled`/`source`).

    Arguments: `setpoint_pa` is the station's outlet set-point, Pa gauge (for rules on
    the set-point basis). Returns None when the rule does not apply to the tag or what it is
    computed from is unknown (no set-point, no range, no expected period).
    """
    if (rule.asset_kind, rule.tag) != (tag.asset_kind, tag.name):
        return None
    base = _basis_value(rule, tag, setpoint_pa)
    if base is None:
        return None
    stale_after_s: float | None = None
    if rule.kind == "stale":
        if not (tag.expected_period_s and tag.expected_period_s > 0):
            return None
        assert rule.stale_periods is not None
        stale_after_s = rule.stale_periods * tag.expected_period_s
    limit = None if rule.limit is None else rule.limit * base
    fields = {"asset": tag.asset_id, "limit": limit, "low": rule.low, "high": rule.high,
              "limit_kpa": None if limit is None else limit / 1000.0,
              "stale_after_s": stale_after_s}
    return {
        "id": f"{tag.path}:{rule.kind}", "tag": tag.path, "kind": rule.kind,
        "priority": rule.priority, "area_id": tag.area_id, "asset_id": tag.asset_id,
        "limit_value": limit, "limit_tag": None, "low": rule.low, "high": rule.high,
        "states": list(rule.states), "ref_tag": None, "stale_after_s": stale_after_s,
        "deadband": rule.deadband * base, "on_delay_s": rule.on_delay_s,
        "off_delay_s": rule.off_delay_s, "latching": rule.latching,
        "message": rule.message.format(**fields)[:300], "consequence": rule.consequence,
        "guidance": rule.guidance,
    }


async def ensure_alarm_definitions(session: AsyncSession) -> int:
    """Create the missing default definitions of every tag in the registry; returns how many.

    Generated rows (`source = "default"`) whose values no longer match the registry (a new
    set-point, a new expected period) are brought up to date; rows with `source = "user"` are
    never touched. Whoever edits a definition must set its source to "user".
    """
    by_tag: dict[tuple[str, str], list[AlarmRule]] = {}
    for rule in DEFAULTS:
        by_tag.setdefault((rule.asset_kind, rule.tag), []).append(rule)
    T = orm.TagDefinition
    tags = (await session.execute(select(
        T.path, T.asset_kind, T.asset_id, T.area_id, T.name, T.expected_period_s, T.range_high,
    ).order_by(T.path))).all()
    setpoints: dict[str, float] = {sid: sp for sid, sp in (await session.execute(select(
        orm.Station.id, orm.Station.outlet_setpoint_pa_gauge))).all()}
    wanted: dict[str, dict[str, Any]] = {}
    for row in tags:
        tag = TagFacts(*row)
        for rule in by_tag.get((tag.asset_kind, tag.name), ()):
            sp = setpoints.get(tag.asset_id) if tag.asset_kind == "station" else None
            values = definition_values(rule, tag, sp)
            if values is not None:
                wanted[values["id"]] = values
    existing = {d.id: d for d in (await session.execute(select(orm.AlarmDefinitionRow))).scalars()}
    for def_id, row in existing.items():
        values = wanted.get(def_id)
        if values is None or row.source != "default":
            continue
        for key, value in values.items():
            if getattr(row, key) != value:
                setattr(row, key, value)
    new = [{**v, "enabled": True, "source": "default"} for k, v in wanted.items()
           if k not in existing]
    if new:
        await session.execute(insert(orm.AlarmDefinitionRow), new)
    return len(new)


async def load_alarm_definitions(session: AsyncSession) -> list[orm.AlarmDefinitionRow]:
    """Every enabled alarm definition, by id."""
    D = orm.AlarmDefinitionRow
    return list((await session.execute(
        select(D).where(D.enabled.is_(True)).order_by(D.id))).scalars())


# --- journal ---------------------------------------------------------------------------------

_REQUIRED = ("alarm_id", "kind", "ts", "status", "mode", "active", "priority")
_OPTIONAL: dict[str, Any] = {
    "tag": "", "area_id": None, "value": None, "actor": None, "comment": "", "message": "",
    "first_out": False, "shelved_until": None, "activated_at": None,
}
_TIMES = ("ts", "shelved_until", "activated_at")


def _aware(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, dt.datetime):
        raise ValueError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be tz-aware (UTC), got naive {value.isoformat()}")


def _event_row(i: int, event: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(event) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise ValueError(f"event {i}: unknown keys {sorted(unknown)}")
    missing = [k for k in _REQUIRED if k not in event]
    if missing:
        raise ValueError(f"event {i}: missing keys {missing}")
    row = {**_OPTIONAL, **event}
    for name in _TIMES:
        _aware(f"event {i}: {name}", row[name], optional=name != "ts")
    value = row["value"]
    if value is not None and not isinstance(value, bool | int | float | str):
        raise ValueError(f"event {i}: value must be a number, bool, string or None, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"event {i}: value must be finite, got {value!r}")
    for name in ("alarm_id", "kind", "status", "mode", "tag", "comment", "message"):
        if not isinstance(row[name], str):
            raise ValueError(f"event {i}: {name} must be a string, got {row[name]!r}")
        row[name] = str(row[name])  # an enum member (StrEnum) becomes its plain value
    row["priority"] = int(row["priority"])
    row["active"] = bool(row["active"])
    row["first_out"] = bool(row["first_out"])
    return row


async def append_alarm_events(session: AsyncSession,
                              events: Sequence[Mapping[str, Any]]) -> list[int]:
    """Append events to the journal in one batched insert; returns their new seqs, in order.

    Keys are the `alarm_events` columns except `seq` (`actor` is the engine's `user`);
    `alarm_id`, `kind`, `ts`, `status`, `mode`, `active` and `priority` are required.
    """
    rows = [_event_row(i, e) for i, e in enumerate(events)]
    if not rows:
        return []
    E = orm.AlarmEventRow
    result = await session.execute(
        insert(E).returning(E.seq, sort_by_parameter_order=True), rows)
    return [int(s) for s in result.scalars().all()]


async def latest_alarm_events(session: AsyncSession) -> list[orm.AlarmEventRow]:
    """The newest journal event of every alarm, by alarm id."""
    E = orm.AlarmEventRow
    newest = select(func.max(E.seq).label("seq")).group_by(E.alarm_id).subquery()
    return list((await session.execute(
        select(E).join(newest, E.seq == newest.c.seq).order_by(E.alarm_id))).scalars())


def _area_list(area_ids: Collection[str] | None) -> list[str] | None:
    if area_ids is None:
        return None
    if isinstance(area_ids, str):
        raise ValueError("area_ids must be a collection of area ids, not one string")
    return list(area_ids)


async def alarm_journal(session: AsyncSession, *, alarm_id: str | None = None,
                        area_ids: Collection[str] | None = None,
                        since: dt.datetime | None = None, until: dt.datetime | None = None,
                        before_seq: int | None = None,
                        limit: int = 100) -> list[orm.AlarmEventRow]:
    """Journal events, newest first (by seq), at most `limit` (1..1000).

    Filters, all optional: one alarm; events in `area_ids` (None: any area, events without
    an area included); ``since <= ts < until``; ``seq < before_seq`` (the next page starts
    before the last seq of the previous one).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer in 1..{MAX_PAGE}, got {limit!r}")
    _aware("since", since, optional=True)
    _aware("until", until, optional=True)
    if since is not None and until is not None and since > until:
        raise ValueError("since must not be after until")
    areas = _area_list(area_ids)
    E = orm.AlarmEventRow
    q = select(E)
    if alarm_id is not None:
        q = q.where(E.alarm_id == alarm_id)
    if areas is not None:
        q = q.where(E.area_id.in_(areas))
    if since is not None:
        q = q.where(E.ts >= since)
    if until is not None:
        q = q.where(E.ts < until)
    if before_seq is not None:
        q = q.where(E.seq < before_seq)
    return list((await session.execute(q.order_by(E.seq.desc()).limit(limit))).scalars())


async def alarm_events_between(session: AsyncSession, start: dt.datetime, end: dt.datetime, *,
                               area_ids: Collection[str] | None = None,
                               ) -> list[orm.AlarmEventRow]:
    """Every event with ``start <= ts < end``, oldest first (by ts, then seq), for KPIs."""
    _aware("start", start)
    _aware("end", end)
    if start > end:
        raise ValueError("start must not be after end")
    areas = _area_list(area_ids)
    E = orm.AlarmEventRow
    q = select(E).where(E.ts >= start, E.ts < end)
    if areas is not None:
        q = q.where(E.area_id.in_(areas))
    return list((await session.execute(q.order_by(E.ts, E.seq))).scalars())
