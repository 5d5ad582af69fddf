"""Default alarm rules and the alarm tables, checked without a database.

The rules must fit the tag templates, produce definitions the realtime engine accepts, and the
tables must hold exactly the engine's `AlarmDefinition` and `AlarmEvent` fields.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest

from erp.adapters import orm
from erp.demo_town import generate_demo_town
from erp.services import alarms, tags
from erp.services.alarms import DEFAULTS, AlarmRule, TagFacts, definition_values
from realtime.alarms.model import AlarmDefinition, AlarmEvent, AlarmKind, Priority

SUBTYPES = {"station": None, "skz": None, "valve": None, "meter": "industrial_corrector", "area": None}


def _tag(asset_kind: str, name: str, *, asset_id: str = "A-1", area_id: str | None = "D1",
         range_high: float | None = None) -> TagFacts:
    template = {t.name: t for t in tags.templates_for(asset_kind, SUBTYPES[asset_kind])}[name]
    return TagFacts(f"{asset_kind}/{asset_id}/{name}", asset_kind, asset_id, area_id, name,
                    template.expected_period_s,
                    template.range_high if range_high is None else range_high)


def _engine_definition(row: dict[str, Any]) -> AlarmDefinition:
    """The realtime engine's definition of a row (what the server will build from the table)."""
    return AlarmDefinition(
        id=row["id"], tag=row["tag"], kind=AlarmKind(row["kind"]), priority=Priority(row["priority"]),
        area_id=row["area_id"], asset_id=row["asset_id"], limit=row["limit_value"],
        limit_tag=row["limit_tag"], low=row["low"], high=row["high"],
        states=frozenset(row["states"]), ref_tag=row["ref_tag"],
        stale_after_s=row["stale_after_s"], deadband=row["deadband"],
        on_delay_s=row["on_delay_s"], off_delay_s=row["off_delay_s"], latching=row["latching"],
        message=row["message"], consequence=row["consequence"], guidance=row["guidance"])


def test_rules_are_unique_and_name_existing_tags() -> None:
    keys = [(r.asset_kind, r.tag, r.kind) for r in DEFAULTS]
    assert len(keys) == len(set(keys))
    for r in DEFAULTS:
        names = {t.name for t in tags.templates_for(r.asset_kind, SUBTYPES[r.asset_kind])}
        assert r.tag in names, r
        assert r.message and r.consequence and r.guidance, r
        assert "{asset}" in r.message, r


@pytest.mark.parametrize("rule", DEFAULTS, ids=lambda r: f"{r.asset_kind}/{r.tag}:{r.kind}")
def test_every_rule_makes_a_definition_the_engine_accepts(rule: AlarmRule) -> None:
    row = definition_values(rule, _tag(rule.asset_kind, rule.tag, range_high=600.0), 2800.0)
    assert row is not None
    assert len(row["message"]) <= 300 and "{" not in row["message"]
    engine = _engine_definition(row)
    assert engine.id == f"{rule.asset_kind}/A-1/{rule.tag}:{rule.kind}"
    assert (engine.area_id, engine.asset_id) == ("D1", "A-1")


def test_station_limits_follow_the_outlet_setpoint() -> None:
    by_kind = {r.kind: r for r in DEFAULTS if (r.asset_kind, r.tag) == ("station", "p_out")}
    tag = _tag("station", "p_out", asset_id="GRP-12")
    rows = {k: definition_values(r, tag, 3000.0) for k, r in by_kind.items()}
    limits = {k: row["limit_value"] for k, row in rows.items() if row and row["limit_value"]}
    assert limits == pytest.approx({"hihi": 3750, "hi": 3300, "lo": 2700, "lolo": 2250})
    hi = rows["hi"]
    assert hi is not None
    assert (hi["id"], hi["deadband"], hi["on_delay_s"], hi["priority"]) == (
        "station/GRP-12/p_out:hi", pytest.approx(30.0), 5.0, 3)
    assert hi["message"] == "GRP-12: outlet pressure high (>= 3.30 kPa)"
    assert rows["stale"] is not None and rows["stale"]["stale_after_s"] == 30.0
    p_in = next(r for r in DEFAULTS if (r.asset_kind, r.tag) == ("station", "p_in"))
    p_in_row = definition_values(p_in, _tag("station", "p_in"), 250_000.0)
    assert p_in_row is not None and p_in_row["limit_value"] == pytest.approx(300_000)


def test_rules_without_their_basis_make_nothing() -> None:
    hi = next(r for r in DEFAULTS if (r.asset_kind, r.tag, r.kind) == ("station", "p_out", "hi"))
    assert definition_values(hi, _tag("station", "p_out"), None) is None
    assert definition_values(hi, _tag("station", "p_out"), 0.0) is None
    assert definition_values(hi, _tag("station", "p_in"), 2800.0) is None  # another tag
    stale = next(r for r in DEFAULTS if r.kind == "stale" and r.asset_kind == "skz")
    no_period = dataclasses.replace(_tag("skz", stale.tag), expected_period_s=None)
    assert definition_values(stale, no_period, None) is None
    i_out = next(r for r in DEFAULTS if (r.asset_kind, r.tag) == ("skz", "i_out"))
    assert definition_values(i_out, _tag("skz", "i_out"), None) is None  # no rated current
    row = definition_values(i_out, _tag("skz", "i_out", range_high=30.0), None)
    assert row is not None and row["limit_value"] == pytest.approx(28.5)


@pytest.mark.parametrize(("changes", "match"), [
    ({"kind": "hi", "limit": None}, "needs a limit"),
    ({"kind": "cp_window", "low": -0.85, "high": -1.15}, "low < high"),
    ({"kind": "discrete", "states": ()}, "abnormal states"),
    ({"kind": "stale", "stale_periods": 0}, "stale_periods"),
    ({"kind": "hi", "limit": 1.0, "deadband": -1.0}, "negative"),
    ({"kind": "hi", "limit": 1.0, "priority": 5}, "priority"),
    ({"kind": "hi", "limit": 1.0, "basis": "nominal"}, "basis"),
    ({"kind": "too_high"}, "unknown alarm kind"),
])
def test_bad_rules_are_refused(changes: dict[str, Any], match: str) -> None:
    base: dict[str, Any] = {"asset_kind": "station", "tag": "p_out", "priority": 2,
                            "message": "{asset}", "consequence": "c", "guidance": "g"}
    with pytest.raises(ValueError, match=match):
        AlarmRule(**{**base, **changes})


def test_demo_town_priority_mix_is_mostly_low_and_medium() -> None:
    town = generate_demo_town()
    setpoints: dict[str, float] = {}
    facts: list[TagFacts] = []
    for r in town.records:
        v = r.values
        if r.kind == "station":
            setpoints[r.id] = v["outlet_setpoint_pa_gauge"]
            ranges = {"flow": v.get("capacity_m3h_std") or 10_000.0}
        elif r.kind == "skz":
            ranges = {"i_out": v.get("rated_current_a", 25.0)}
        elif r.kind == "valve" and v.get("remotely_operable") or r.kind == "meter":
            ranges = {}
        else:
            continue
        for t in tags.templates_for(r.kind, v.get("kind") if r.kind == "meter" else None):
            facts.append(TagFacts(f"{r.kind}/{r.id}/{t.name}", r.kind, r.id, v.get("area_id"),
                                  t.name, t.expected_period_s, ranges.get(t.name, t.range_high)))
    rows = [row for tag in facts for rule in DEFAULTS
            if (row := definition_values(rule, tag, setpoints.get(tag.asset_id)))]
    mix = Counter(row["priority"] for row in rows)
    share = {p: n / len(rows) for p, n in mix.items()}
    assert len(rows) > 200
    assert share[1] + share[2] >= 0.65 and share[4] <= 0.15, mix


def test_tables_hold_exactly_the_engine_fields() -> None:
    renamed = {"limit": "limit_value", "user": "actor"}
    definition = {renamed.get(f.name, f.name) for f in dataclasses.fields(AlarmDefinition)}
    columns = {c.key for c in orm.AlarmDefinitionRow.__table__.columns}
    assert columns - definition == {"enabled", "source", "created_at", "updated_at"}
    assert definition <= columns
    event = {renamed.get(f.name, f.name) for f in dataclasses.fields(AlarmEvent)}
    assert {c.key for c in orm.AlarmEventRow.__table__.columns} == event
    optional = {k for k in event if k != "seq"} - set(alarms._REQUIRED)
    assert optional == set(alarms._OPTIONAL)
