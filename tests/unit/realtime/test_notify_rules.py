"""Notification rules as data: config checking, on-call rosters, routing, message texts.

All pure: no network, no clock but the instants written here. Local times are Moscow time
(UTC+3 all year), so ``msk(...)`` below is the instant a Moscow wall clock shows.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.alarms.model import AlarmEvent, AlarmMode, AlarmStatus, EventKind, Priority
from realtime.notify import ConfigError, parse_config, render, route
from realtime.notify.rules import NotificationConfig
from realtime.notify.templates import sms_fits, sms_units

MSK = dt.timezone(dt.timedelta(hours=3))
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def msk(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """Moscow wall-clock time on 2024-03-(4 + day), where day 0 is Monday 4 March 2024."""
    return dt.datetime(2024, 3, 4 + day, hour, minute, tzinfo=MSK).astimezone(dt.UTC)


MON, TUE, FRI, SAT, SUN = 0, 1, 4, 5, 6

CONFIG: dict[str, Any] = {
    "timezone": "Europe/Moscow",
    "retry": {"max_attempts": 4, "base_delay_s": 5, "factor": 3, "max_delay_s": 60},
    "contacts": [
        {"name": "ivanov", "email": "ivanov@gas.example", "phone": "+79160000001"},
        {"name": "petrov", "email": "petrov@gas.example", "phone": "+79160000002",
         "language": "en", "timezone": "Asia/Yekaterinburg"},
        {"name": "sidorov", "phone": "+79160000003"},
        {"name": "ops", "webhook_url": "https://ops.example/hook", "language": "en"},
    ],
    "rosters": [{
        "name": "dispatch",
        "shifts": [
            {"weekdays": DAYS[:5], "start": "08:00", "end": "20:00", "contacts": ["ivanov"]},
            {"weekdays": DAYS[5:], "start": "08:00", "end": "20:00", "contacts": ["sidorov"]},
            {"start": "20:00", "end": "08:00", "contacts": ["petrov"]},  # every night
        ],
    }],
    "rules": [
        {"name": "north-high", "areas": ["north"], "min_priority": "high", "levels": [
            {"after_s": 0, "targets": [{"channel": "email", "contact": "ivanov"}]},
            {"after_s": 900, "targets": [{"channel": "sms", "roster": "dispatch"}]},
        ]},
        {"name": "office-hours", "min_priority": 2,
         "active_hours": {"weekdays": DAYS[:5], "start": "09:00", "end": "18:00"},
         "levels": [{"targets": [{"channel": "webhook", "contact": "ops"},
                                 {"channel": "email", "contact": "ivanov"}]}]},
    ],
}


def event(ts: dt.datetime, *, area: str | None = "north", priority: Priority = Priority.critical,
          message: str = "Давление на выходе выше нормы", value: Any = 7.25,
          tag: str = "station/GRP-12/p_out") -> AlarmEvent:
    return AlarmEvent("station/GRP-12/p_out:hi", EventKind.activated, ts, AlarmStatus.unack,
                      AlarmMode.in_service, True, priority, tag, area, value, message=message)


@pytest.fixture(scope="module")
def config() -> NotificationConfig:
    return parse_config(CONFIG)


# --------------------------------------------------------------------------- parsing

def test_the_example_config_parses_into_rules_and_survives_json() -> None:
    cfg = parse_config(json.loads(json.dumps(CONFIG)))
    assert [r.name for r in cfg.rules] == ["north-high", "office-hours"]
    north = cfg.rules[0]
    assert north.areas == frozenset({"north"}) and north.min_priority is Priority.high
    assert [lv.after_s for lv in north.levels] == [0.0, 900.0]
    assert cfg.rules[1].areas is None and cfg.rules[1].min_priority is Priority.medium
    assert cfg.contacts["petrov"].timezone == "Asia/Yekaterinburg"
    assert cfg.contacts["ivanov"].timezone == "Europe/Moscow"  # the config's default
    assert cfg.retry.max_attempts == 4
    assert [cfg.retry.delay_s(n) for n in (1, 2, 3, 4)] == [5, 15, 45, 60]
    assert cfg.channels_used() == {"email", "sms", "webhook"}


def _broken(path: str, value: Any) -> dict[str, Any]:
    """CONFIG with the field at `path` (dotted, [i] for items) set to `value` (or deleted)."""
    data = copy.deepcopy(CONFIG)
    *parents, last = path.replace("[", ".").replace("]", "").split(".")
    node: Any = data
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    key: Any = int(last) if last.isdigit() else last
    if value is _DELETE:
        del node[key]
    else:
        node[key] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "message"), [
    ("rules[0].levels[1].after_s", -5, "rules[0].levels[1].after_s: must be a number >= 0, got -5"),
    ("rules[0].levels[1].after_s", 0, "rules[0].levels[1].after_s: must be greater than"),
    ("rules[0].levels[1].targets[0].roster", "night", "rules[0].levels[1].targets[0].roster: unknown "
                                                      "roster 'night'"),
    ("rules[0].levels[0].targets[0].contact", "nobody", "targets[0].contact: unknown contact"),
    ("rules[0].levels[0].targets[0].channel", "pager", "targets[0].channel: must be one of"),
    ("rules[0].min_priority", "urgent", "rules[0].min_priority: must be one of low, medium"),
    ("rules[0].min_priorty", "high", "rules[0].min_priorty: unknown field"),
    ("rules[0].levels", [], "rules[0].levels: must have at least one level"),
    ("rules[0].name", _DELETE, "rules[0].name: required"),
    ("rules[1].name", "north-high", "rules[1].name: duplicate rule"),
    ("rules[1].active_hours.start", "25:00", "rules[1].active_hours.start: must be a local time"),
    ("rules[1].active_hours.weekdays", ["monday"], "active_hours.weekdays[0]: must be one of mon"),
    ("rosters[0].shifts[0].contacts[0]", "ghost", "rosters[0].shifts[0].contacts[0]: unknown contact"),
    ("rosters[0].timezone", "Mars/Olympus", "rosters[0].timezone: unknown time zone"),
    ("contacts[0].language", "de", "contacts[0].language: must be 'ru' or 'en'"),
    ("contacts[0].phone", "8 916 000", "contacts[0].phone: must be an international number"),
    ("contacts[1].name", "ivanov", "contacts[1].name: duplicate contact"),
    ("contacts[2].email", "no-at-sign", "contacts[2].email: not an e-mail address"),
    ("retry.max_attempts", 0, "retry.max_attempts: must be an integer >= 1"),
    ("timezone", 3, "timezone: must be a non-empty string"),
    ("rules", {"name": "x"}, "rules: must be a list, got dict"),
])
def test_a_bad_field_is_named_in_the_error(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_broken(path, value))
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_a_contact_without_the_channels_address_is_refused_even_through_a_roster() -> None:
    data = _broken("rosters[0].shifts[2].contacts", ["ops"])  # ops has no phone; level 1 is SMS
    with pytest.raises(ConfigError, match=r"rules\[0\].levels\[1\].targets\[0\]: contact 'ops' "
                                          r"has no phone for the sms channel"):
        parse_config(data)


def test_a_target_names_a_contact_or_a_roster_not_both() -> None:
    data = _broken("rules[0].levels[0].targets[0].roster", "dispatch")
    with pytest.raises(ConfigError, match=r"targets\[0\]: name exactly one of"):
        parse_config(data)


# --------------------------------------------------------------------------- rosters

@pytest.mark.parametrize(("at", "expected"), [
    (msk(MON, 10), ["ivanov"]),
    (msk(MON, 7, 59), ["petrov"]),  # Sunday's night shift, past midnight into Monday
    (msk(MON, 8), ["ivanov"]),  # start is inclusive
    (msk(MON, 20), ["petrov"]),  # end is exclusive
    (msk(TUE, 3), ["petrov"]),  # Monday's night shift, crossing midnight
    (msk(FRI, 19, 59), ["ivanov"]),
    (msk(SAT, 7, 30), ["petrov"]),  # Friday night covers Saturday morning
    (msk(SAT, 8), ["sidorov"]),  # weekend days are someone else's
    (msk(SUN, 12), ["sidorov"]),
])
def test_who_is_on_call_across_midnight_and_weekdays(config: NotificationConfig, at: dt.datetime,
                                                     expected: list[str]) -> None:
    assert [c.name for c in config.rosters["dispatch"].who_is_on_call(at)] == expected


def test_a_night_shift_belongs_to_the_weekday_it_starts_on() -> None:
    cfg = parse_config({"contacts": [{"name": "a", "phone": "+79160000001"}], "rosters": [
        {"name": "fri-night", "timezone": "Europe/Moscow",
         "shifts": [{"weekdays": ["fri"], "start": "20:00", "end": "08:00", "contacts": ["a"]}]}]})
    roster = cfg.rosters["fri-night"]
    assert [c.name for c in roster.who_is_on_call(msk(FRI, 23))] == ["a"]
    assert [c.name for c in roster.who_is_on_call(msk(SAT, 3))] == ["a"]
    assert roster.who_is_on_call(msk(FRI, 3)) == []  # Thursday night is not Friday's shift
    assert roster.who_is_on_call(msk(SUN, 3)) == []  # nor is Saturday night


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1),
                    timezones=st.just(dt.UTC)))
def test_the_roster_covers_every_instant_with_exactly_one_person(at: dt.datetime) -> None:
    on_call = parse_config(CONFIG).rosters["dispatch"].who_is_on_call(at)
    assert len(on_call) == 1
    local = at.astimezone(MSK)
    night = local.hour >= 20 or local.hour < 8
    weekend = local.weekday() >= 5
    expected = "petrov" if night else ("sidorov" if weekend else "ivanov")
    assert on_call[0].name == expected


# --------------------------------------------------------------------------- routing

def _plan(plans: list[Any]) -> list[tuple[str, int, str, str, float]]:
    return [(p.rule, p.level, p.channel, p.contact.name, (p.due_at - plans[0].due_at).total_seconds())
            for p in plans]


def test_routing_by_area_priority_and_office_hours(config: NotificationConfig) -> None:
    t = msk(MON, 10)
    plans = route(event(t), config, t)
    assert _plan(plans) == [
        ("north-high", 0, "email", "ivanov", 0.0),  # also planned by office-hours: once
        ("office-hours", 0, "webhook", "ops", 0.0),
        ("north-high", 1, "sms", "ivanov", 900.0),  # on call at 10:15 on a Monday
    ]
    assert plans[0].due_at == t
    assert plans[2].roster == "dispatch"


def test_a_rule_skips_other_areas_lower_priorities_and_hours_outside_its_window(
        config: NotificationConfig) -> None:
    def rules(ev: AlarmEvent) -> set[str]:
        return {p.rule for p in route(ev, config, ev.ts)}

    assert rules(event(msk(MON, 10))) == {"north-high", "office-hours"}
    assert rules(event(msk(MON, 10), area="south")) == {"office-hours"}
    assert rules(event(msk(MON, 10), priority=Priority.medium)) == {"office-hours"}  # needs high
    assert rules(event(msk(MON, 10), priority=Priority.low)) == set()
    assert rules(event(msk(SUN, 10), area="south")) == set()  # weekend
    assert rules(event(msk(MON, 18), area="south")) == set()  # the end is exclusive
    assert rules(event(msk(MON, 8, 59), area=None)) == set()
    assert rules(event(msk(MON, 9), area=None)) == {"office-hours"}


def test_a_roster_target_reaches_whoever_is_on_call_when_the_level_is_due(
        config: NotificationConfig) -> None:
    t = msk(MON, 19, 50)  # the escalation is due at 20:05, in petrov's night shift
    plans = route(event(t), config, t)
    sms = [p for p in plans if p.channel == "sms"]
    assert [(p.contact.name, p.due_at) for p in sms] == [("petrov", t + dt.timedelta(minutes=15))]
    # routed late (a replay at 08:30 next day): the on-call person of now, not of the due time
    late = route(event(t), config, msk(TUE, 8, 30))
    assert [p.contact.name for p in late if p.channel == "sms"] == ["ivanov"]


def test_keys_name_one_message_per_activation_level_channel_and_recipient(
        config: NotificationConfig) -> None:
    t = msk(MON, 10)
    keys = [p.key for p in route(event(t), config, t)]
    assert len(set(keys)) == len(keys)
    assert keys == [p.key for p in route(event(t), config, t + dt.timedelta(seconds=3))]
    again = route(event(t + dt.timedelta(minutes=1)), config, t)  # a new activation: new keys
    assert not set(keys) & {p.key for p in again}


# --------------------------------------------------------------------------- templates

def test_russian_texts_translate_the_priority_and_show_moscow_time() -> None:
    ev = event(dt.datetime(2024, 3, 4, 7, 5, tzinfo=dt.UTC))
    text = render(ev, language="ru", timezone="Europe/Moscow")
    assert text.subject == "Авария (критический): Давление на выходе выше нормы"
    assert "Приоритет: критический" in text.body
    assert "Тег: station/GRP-12/p_out" in text.body
    assert "Значение: 7.25" in text.body
    assert "Район: north" in text.body
    assert "Время: 04.03.2024 10:05:00 MSK" in text.body
    assert text.short.startswith("КРИТ: ")
    assert "10:05" in text.short and "7.25" in text.short
    assert sms_units(text.short)[0] == "ucs2" and sms_fits(text.short)


def test_english_escalation_text_in_the_contacts_time_zone() -> None:
    ev = event(dt.datetime(2024, 3, 4, 7, 5, tzinfo=dt.UTC), message="Outlet pressure high",
               priority=Priority.high)
    text = render(ev, language="en", timezone="Asia/Yekaterinburg", after_s=900)
    assert text.subject == "Alarm (high) not acknowledged after 15 min: Outlet pressure high"
    assert text.body.startswith("The alarm has not been acknowledged after 15 min.")
    assert "Time: 2024-03-04 12:05:00 +05" in text.body
    assert text.short == "HIGH NOT ACKED 15min: Outlet pressure high; station/GRP-12/p_out=7.25; " \
                         "north; 12:05"
    assert sms_units(text.short)[0] == "gsm"


def test_russian_escalation_sms_is_shortened_to_one_ucs2_part() -> None:
    ev = event(dt.datetime(2024, 3, 4, 7, 5, tzinfo=dt.UTC),
               message="Давление газа на выходе ГРП выше верхней аварийной уставки, проверьте ПЗК")
    short = render(ev, language="ru", timezone="Europe/Moscow", after_s=600).short
    assert sms_units(short) == ("ucs2", len(short)) and len(short) <= 70
    assert short.startswith("КРИТ НЕ КВИТ 10мин: Давление")
    assert "..;" in short and short.endswith("10:05")  # the message was cut, the time kept


def test_a_long_english_sms_uses_the_gsm_limit_not_the_ucs2_one() -> None:
    ev = event(dt.datetime(2024, 3, 4, 7, 5, tzinfo=dt.UTC), message="x" * 150)
    short = render(ev, language="en", timezone="UTC").short
    assert sms_units(short)[0] == "gsm"
    assert 70 < len(short) <= 160


def test_sms_units_count_gsm_extension_characters_twice() -> None:
    assert sms_units("a{b}") == ("gsm", 6)
    assert sms_units("Привет") == ("ucs2", 6)
    assert sms_units("ok 😀") == ("ucs2", 5)  # outside the BMP: a surrogate pair
    assert sms_fits("{" * 80) and not sms_fits("{" * 81)
    assert sms_fits("я" * 70) and not sms_fits("я" * 71)


@settings(max_examples=300, deadline=None)
@given(message=st.text(max_size=300), tag=st.text(max_size=120),
       value=st.one_of(st.none(), st.floats(allow_nan=False), st.integers(), st.booleans(),
                       st.text(max_size=40)),
       area=st.one_of(st.none(), st.text(max_size=60)),
       language=st.sampled_from(["ru", "en"]), after_s=st.sampled_from([0, 60, 900, 7200]),
       priority=st.sampled_from(list(Priority)))
def test_every_sms_fits_one_part(message: str, tag: str, value: Any, area: str | None,
                                 language: str, after_s: int, priority: Priority) -> None:
    ev = event(dt.datetime(2024, 3, 4, 7, 5, tzinfo=dt.UTC), area=area, priority=priority,
               message=message, value=value, tag=tag)
    text = render(ev, language=language, timezone="Europe/Moscow", after_s=after_s)
    assert sms_fits(text.short)
    head = {"ru": {Priority.critical: "КРИТ"}, "en": {Priority.critical: "CRITICAL"}}[language]
    if priority is Priority.critical:
        assert text.short.startswith(head[Priority.critical])
    assert text.subject and text.body.endswith("\n")
