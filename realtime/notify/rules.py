"""Routing rules as data: who hears about which alarm, on which channel, and when to escalate.

A `NotificationConfig` holds contacts, on-call rosters and routing rules. A rule matches an
alarm activation by area, minimum priority and (optionally) active hours; its escalation levels
say after how many seconds of no acknowledgement which targets are notified. A target names a
channel and either a contact or a roster; a roster target goes to whoever is on call when that
level is due, so a night escalation wakes the night shift, not whoever was on call when the
alarm started.

`route` is a pure function: an event, the config and "now" in, the planned messages of every
level out. The notifier sends the due ones and keeps the rest until they are due or the alarm is
acknowledged. `parse_config` builds the config from a JSON-able dict (a settings value or a JSON
file) and checks everything it can up front, because a typo found at 3 a.m. during an incident
is found too late: unknown keys, unknown contacts and rosters, a contact without the address a
channel needs, a bad time zone. Its errors (`ConfigError`, a `ValueError`) start with the path of
the bad field, e.g. ``rules[0].levels[1].after_s: must be a number >= 0, got -5``.

Times of day (shifts, active hours) are local to the roster's or rule's time zone; a window whose
end is not after its start crosses midnight and belongs to the weekday it starts on (a Friday
20:00-08:00 shift covers Saturday 03:00); start == end is a full 24 hours.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from realtime.alarms.model import AlarmEvent, Priority
from realtime.notify.model import CHANNEL_KINDS, ConfigError, message_key

__all__ = [
    "Contact",
    "EscalationLevel",
    "NotificationConfig",
    "OnCallRoster",
    "PlannedMessage",
    "RetryPolicy",
    "RoutingRule",
    "Shift",
    "Target",
    "TimeWindow",
    "parse_config",
    "route",
]

Language = Literal["ru", "en"]
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
ALL_DAYS: Final = frozenset(range(7))
_PHONE = re.compile(r"^\+?[1-9]\d{5,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


@dataclass(frozen=True, slots=True)
class Contact:
    """A person (or a desk) to notify; `timezone` is the one their messages show times in."""

    name: str
    email: str | None = None
    phone: str | None = None  # E.164, e.g. +79161234567
    webhook_url: str | None = None  # None: the webhook channel's own URL
    language: Language = "ru"
    timezone: str = "Europe/Moscow"

    def address(self, channel: str) -> str | None:
        """Where `channel` reaches this contact ('' = the channel's default; None = it cannot)."""
        if channel == "email":
            return self.email
        if channel in ("sms", "voice"):
            return self.phone
        if channel == "webhook":
            return self.webhook_url or ""
        return None


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Weekdays (0 = Monday) and a local time-of-day window [start, end).

    end <= start crosses midnight; such a window belongs to the weekday it starts on.
    """

    weekdays: frozenset[int] = ALL_DAYS
    start: dt.time = dt.time(0)
    end: dt.time = dt.time(0)

    def contains(self, local: dt.datetime) -> bool:
        """Whether the local wall-clock time `local` falls in the window."""
        t = local.time().replace(tzinfo=None)
        day = local.weekday()
        if self.start < self.end:
            return day in self.weekdays and self.start <= t < self.end
        if t >= self.start:
            return day in self.weekdays
        return t < self.end and (day - 1) % 7 in self.weekdays


@dataclass(frozen=True, slots=True)
class Shift:
    """An on-call shift: when (local to the roster) and who."""

    window: TimeWindow
    contacts: tuple[Contact, ...]


@dataclass(frozen=True, slots=True)
class OnCallRoster:
    """Who is on call when, in the roster's time zone."""

    name: str
    timezone: str
    shifts: tuple[Shift, ...]

    def __post_init__(self) -> None:
        _zone(self.timezone)

    def who_is_on_call(self, at: dt.datetime) -> list[Contact]:
        """The contacts of every shift covering the instant `at` (tz-aware), in shift order."""
        local = at.astimezone(_zone(self.timezone))
        found: dict[str, Contact] = {}
        for shift in self.shifts:
            if shift.window.contains(local):
                for c in shift.contacts:
                    found.setdefault(c.name, c)
        return list(found.values())


@dataclass(frozen=True, slots=True)
class Target:
    """A channel and exactly one of a contact name or a roster name."""

    channel: str
    contact: str | None = None
    roster: str | None = None

    def __post_init__(self) -> None:
        if (self.contact is None) == (self.roster is None):
            raise ValueError("a target names exactly one of 'contact' or 'roster'")


@dataclass(frozen=True, slots=True)
class EscalationLevel:
    """Notify `targets` when the alarm is still unacknowledged `after_s` after it activated."""

    after_s: float
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """Which activations a rule takes (area, priority, hours) and its escalation levels."""

    name: str
    levels: tuple[EscalationLevel, ...]
    areas: frozenset[str] | None = None  # None: every area (and alarms without one)
    min_priority: Priority = Priority.low
    active_hours: TimeWindow | None = None  # None: always
    timezone: str = "Europe/Moscow"  # of active_hours

    def matches(self, event: AlarmEvent) -> bool:
        """Whether this rule takes `event` (active hours are checked at the event's time)."""
        if self.areas is not None and event.area_id not in self.areas:
            return False
        if event.priority < self.min_priority:
            return False
        return self.active_hours is None or self.active_hours.contains(
            event.ts.astimezone(_zone(self.timezone)))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of temporary failures: delay = min(max_delay_s, base_delay_s * factor**(n-1))."""

    max_attempts: int = 5
    base_delay_s: float = 10.0
    factor: float = 2.0
    max_delay_s: float = 600.0

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 1)."""
        return float(min(self.max_delay_s, self.base_delay_s * self.factor ** (attempt - 1)))


@dataclass(frozen=True, slots=True)
class NotificationConfig:
    """Contacts, rosters, rules and the retry policy, all checked by `parse_config`."""

    contacts: Mapping[str, Contact]
    rosters: Mapping[str, OnCallRoster]
    rules: tuple[RoutingRule, ...]
    retry: RetryPolicy = RetryPolicy()
    timezone: str = "Europe/Moscow"

    def recipients(self, target: Target, at: dt.datetime) -> list[Contact]:
        """Who `target` reaches at `at`: its contact, or whoever is on call then."""
        if target.contact is not None:
            return [self.contacts[target.contact]]
        assert target.roster is not None
        return self.rosters[target.roster].who_is_on_call(at)

    def channels_used(self) -> frozenset[str]:
        """The channel kinds the rules send through (each needs a `Channel`)."""
        return frozenset(t.channel for r in self.rules for lv in r.levels for t in lv.targets)


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    """One message `route` plans: a level of a rule, for one contact on one channel."""

    alarm_id: str
    activation_ts: dt.datetime
    rule: str
    level: int
    after_s: float
    due_at: dt.datetime
    channel: str
    contact: Contact
    roster: str | None = None  # the roster the contact was on call for, if any

    @property
    def key(self) -> str:
        """The de-duplication key (`realtime.notify.model.message_key`)."""
        return message_key(self.alarm_id, self.activation_ts, self.level, self.channel,
                           self.contact.name)


def route(event: AlarmEvent, config: NotificationConfig, now: dt.datetime) -> list[PlannedMessage]:
    """The messages of every matching rule and level for the activation `event`, by due time.

    A level is due at ``event.ts + after_s``; its roster targets resolve to whoever is on call
    at that time (or at `now`, if that is already past). A message that two rules both plan
    (same level, channel and contact) is planned once, at the earlier due time.
    """
    planned: dict[str, PlannedMessage] = {}
    for rule in config.rules:
        if not rule.matches(event):
            continue
        for i, level in enumerate(rule.levels):
            due = event.ts + dt.timedelta(seconds=level.after_s)
            for target in level.targets:
                for contact in config.recipients(target, max(due, now)):
                    p = PlannedMessage(event.alarm_id, event.ts, rule.name, i, level.after_s, due,
                                       target.channel, contact, target.roster)
                    if p.key not in planned or p.due_at < planned[p.key].due_at:
                        planned[p.key] = p
    return sorted(planned.values(), key=lambda p: (p.due_at, p.level, p.channel, p.contact.name))


# --------------------------------------------------------------------------- parsing

def parse_config(data: Mapping[str, Any]) -> NotificationConfig:
    """Build and check a `NotificationConfig` from JSON-able data; raise `ConfigError`."""
    d = _object(data, "config", required=(), optional=("timezone", "retry", "contacts", "rosters",
                                                       "rules"))
    tz = _timezone(d.get("timezone", "Europe/Moscow"), "timezone")
    retry = _retry(d.get("retry", {}), "retry")
    contacts: dict[str, Contact] = {}
    for i, raw in enumerate(_list(d.get("contacts", []), "contacts")):
        c = _contact(raw, f"contacts[{i}]", tz)
        if c.name in contacts:
            raise ConfigError(f"contacts[{i}].name: duplicate contact {c.name!r}")
        contacts[c.name] = c
    rosters: dict[str, OnCallRoster] = {}
    for i, raw in enumerate(_list(d.get("rosters", []), "rosters")):
        r = _roster(raw, f"rosters[{i}]", tz, contacts)
        if r.name in rosters:
            raise ConfigError(f"rosters[{i}].name: duplicate roster {r.name!r}")
        rosters[r.name] = r
    rules: list[RoutingRule] = []
    for i, raw in enumerate(_list(d.get("rules", []), "rules")):
        rule = _rule(raw, f"rules[{i}]", tz, contacts, rosters)
        if any(r.name == rule.name for r in rules):
            raise ConfigError(f"rules[{i}].name: duplicate rule {rule.name!r}")
        rules.append(rule)
    return NotificationConfig(contacts, rosters, tuple(rules), retry, tz)


def _object(value: Any, path: str, required: Sequence[str], optional: Sequence[str]
            ) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(required) - set(optional))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown field (allowed: "
                          f"{', '.join(sorted([*required, *optional]))})")
    for name in required:
        if name not in value:
            raise ConfigError(f"{path}.{name}: required")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: must be a list, got {type(value).__name__}")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: must be a non-empty string, got {value!r}")
    return value


def _number(value: Any, path: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
        raise ConfigError(f"{path}: must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def _timezone(value: Any, path: str) -> str:
    name = _str(value, path)
    try:
        _zone(name)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return name


def _time(value: Any, path: str) -> dt.time:
    if isinstance(value, str) and re.fullmatch(r"\d{2}:\d{2}", value):
        try:
            return dt.time.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"{path}: must be a local time 'HH:MM', got {value!r}")


def _weekdays(value: Any, path: str) -> frozenset[int]:
    days = _list(value, path)
    if not days:
        raise ConfigError(f"{path}: must name at least one day")
    out = set()
    for i, day in enumerate(days):
        if day not in WEEKDAYS:
            raise ConfigError(f"{path}[{i}]: must be one of {', '.join(WEEKDAYS)}, got {day!r}")
        out.add(WEEKDAYS.index(day))
    return frozenset(out)


def _window(value: Any, path: str, extra: Sequence[str] = ()) -> TimeWindow:
    d = _object(value, path, required=("start", "end"), optional=("weekdays", *extra))
    days = _weekdays(d["weekdays"], f"{path}.weekdays") if "weekdays" in d else ALL_DAYS
    return TimeWindow(days, _time(d["start"], f"{path}.start"), _time(d["end"], f"{path}.end"))


def _retry(value: Any, path: str) -> RetryPolicy:
    d = _object(value, path, (), ("max_attempts", "base_delay_s", "factor", "max_delay_s"))
    default = RetryPolicy()
    attempts = d.get("max_attempts", default.max_attempts)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigError(f"{path}.max_attempts: must be an integer >= 1, got {attempts!r}")
    return RetryPolicy(attempts,
                       _number(d.get("base_delay_s", default.base_delay_s), f"{path}.base_delay_s", 0),
                       _number(d.get("factor", default.factor), f"{path}.factor", 1),
                       _number(d.get("max_delay_s", default.max_delay_s), f"{path}.max_delay_s", 0))


def _optional_str(d: Mapping[str, Any], name: str, path: str) -> str | None:
    value = d.get(name)
    return None if value is None else _str(value, f"{path}.{name}")


def _contact(value: Any, path: str, tz: str) -> Contact:
    d = _object(value, path, ("name",), ("email", "phone", "webhook_url", "language", "timezone"))
    email = _optional_str(d, "email", path)
    phone = _optional_str(d, "phone", path)
    url = _optional_str(d, "webhook_url", path)
    if email is not None and not _EMAIL.match(email):
        raise ConfigError(f"{path}.email: not an e-mail address: {email!r}")
    if phone is not None and not _PHONE.match(phone):
        raise ConfigError(f"{path}.phone: must be an international number like +79161234567, "
                          f"got {phone!r}")
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{path}.webhook_url: must be an http(s) URL, got {url!r}")
    language = d.get("language", "ru")
    if language not in ("ru", "en"):
        raise ConfigError(f"{path}.language: must be 'ru' or 'en', got {language!r}")
    return Contact(_str(d["name"], f"{path}.name"), email, phone, url, language,
                   _timezone(d.get("timezone", tz), f"{path}.timezone"))


def _roster(value: Any, path: str, tz: str, contacts: Mapping[str, Contact]) -> OnCallRoster:
    d = _object(value, path, ("name", "shifts"), ("timezone",))
    shifts = []
    for i, raw in enumerate(_list(d["shifts"], f"{path}.shifts")):
        sp = f"{path}.shifts[{i}]"
        window = _window(raw, sp, extra=("contacts",))
        if "contacts" not in raw:
            raise ConfigError(f"{sp}.contacts: required")
        names = _list(raw["contacts"], f"{sp}.contacts")
        if not names:
            raise ConfigError(f"{sp}.contacts: must name at least one contact")
        shifts.append(Shift(window, tuple(_known(contacts, n, f"{sp}.contacts[{j}]", "contact")
                                          for j, n in enumerate(names))))
    return OnCallRoster(_str(d["name"], f"{path}.name"),
                        _timezone(d.get("timezone", tz), f"{path}.timezone"), tuple(shifts))


def _known(table: Mapping[str, Any], name: Any, path: str, what: str) -> Any:
    if not isinstance(name, str) or name not in table:
        raise ConfigError(f"{path}: unknown {what} {name!r}")
    return table[name]


def _rule(value: Any, path: str, tz: str, contacts: Mapping[str, Contact],
          rosters: Mapping[str, OnCallRoster]) -> RoutingRule:
    d = _object(value, path, ("name", "levels"),
                ("areas", "min_priority", "active_hours", "timezone"))
    areas = None
    if d.get("areas") is not None:
        items = _list(d["areas"], f"{path}.areas")
        areas = frozenset(_str(a, f"{path}.areas[{i}]") for i, a in enumerate(items))
    prio = d.get("min_priority", "low")
    try:
        min_priority = Priority[prio] if isinstance(prio, str) else Priority(prio)
    except (KeyError, ValueError):
        raise ConfigError(f"{path}.min_priority: must be one of "
                          f"{', '.join(p.name for p in Priority)}, got {prio!r}") from None
    hours = _window(d["active_hours"], f"{path}.active_hours") if d.get("active_hours") else None
    levels: list[EscalationLevel] = []
    raw_levels = _list(d["levels"], f"{path}.levels")
    if not raw_levels:
        raise ConfigError(f"{path}.levels: must have at least one level")
    for i, raw in enumerate(raw_levels):
        lp = f"{path}.levels[{i}]"
        ld = _object(raw, lp, ("targets",), ("after_s",))
        after = _number(ld.get("after_s", 0), f"{lp}.after_s", 0)
        if levels and after <= levels[-1].after_s:
            raise ConfigError(f"{lp}.after_s: must be greater than the previous level's "
                              f"({levels[-1].after_s:g}), got {after:g}")
        targets = [_target(t, f"{lp}.targets[{j}]", contacts, rosters)
                   for j, t in enumerate(_list(ld["targets"], f"{lp}.targets"))]
        if not targets:
            raise ConfigError(f"{lp}.targets: must have at least one target")
        levels.append(EscalationLevel(after, tuple(targets)))
    return RoutingRule(_str(d["name"], f"{path}.name"), tuple(levels), areas, min_priority, hours,
                       _timezone(d.get("timezone", tz), f"{path}.timezone"))


def _target(value: Any, path: str, contacts: Mapping[str, Contact],
            rosters: Mapping[str, OnCallRoster]) -> Target:
    d = _object(value, path, ("channel",), ("contact", "roster"))
    channel = d["channel"]
    if channel not in CHANNEL_KINDS:
        raise ConfigError(f"{path}.channel: must be one of {', '.join(CHANNEL_KINDS)}, "
                          f"got {channel!r}")
    if ("contact" in d) == ("roster" in d):
        raise ConfigError(f"{path}: name exactly one of 'contact' or 'roster'")
    if "contact" in d:
        reached = [_known(contacts, d["contact"], f"{path}.contact", "contact")]
    else:
        roster: OnCallRoster = _known(rosters, d["roster"], f"{path}.roster", "roster")
        reached = [c for s in roster.shifts for c in s.contacts]
    for c in reached:
        if c.address(channel) is None:
            field = "email" if channel == "email" else "phone"
            raise ConfigError(f"{path}: contact {c.name!r} has no {field} for the {channel} channel")
    return Target(channel, d.get("contact"), d.get("roster"))
