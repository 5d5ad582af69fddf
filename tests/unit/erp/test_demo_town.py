"""The demo town: counts, determinism, hydraulics, geography, registry rules and bulk import."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from erp.demo_town import (
    DemoTown,
    check_low_pressure,
    check_medium_pressure,
    district_design_flows,
    district_hydraulics,
    generate_demo_town,
    medium_hydraulics,
)
from erp.demo_town._hydraulics import (
    elevation_gain_pa,
    friction_factor,
    low_pressure_drop_pa,
    medium_pressure_end_pa_abs,
)
from erp.demo_town._loads import coincidence_factor, consumer_group, design_flow_m3h
from erp.domain import rules
from erp.services.registry import AssetRecord

LEVELS = {
    "low": rules.LevelBounds("low", 0.0, 5_000.0, 1),
    "medium": rules.LevelBounds("medium", 5_000.0, 300_000.0, 2),
    "high": rules.LevelBounds("high", 300_000.0, 10_000_000.0, 3),
}
ROOT = Path(__file__).resolve().parents[3]


def town_digest(town: DemoTown) -> str:
    """SHA-256 over every record and crew, in order."""
    h = hashlib.sha256()
    for r in town.records:
        h.update(repr((r.kind, r.id, sorted(r.values.items()))).encode())
    h.update(repr(town.crews).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def town() -> DemoTown:
    """The default town (seed 42), generated once for the module."""
    return generate_demo_town()


@pytest.fixture(scope="module")
def other_town() -> DemoTown:
    """A second seed, to see that the invariants do not hang on one lucky draw."""
    return generate_demo_town(7)


def by_kind(town: DemoTown) -> dict[str, list[AssetRecord]]:
    """Records grouped by kind."""
    out: dict[str, list[AssetRecord]] = defaultdict(list)
    for r in town.records:
        out[r.kind].append(r)
    return out


def values(town: DemoTown, kind: str) -> dict[str, Mapping[str, Any]]:
    """Values of the records of one kind, by id."""
    return {r.id: r.values for r in town.records if r.kind == kind}


# --- hydraulic and load helpers ---------------------------------------------------------------


def test_friction_factor_matches_textbook_values() -> None:
    assert friction_factor(1_000.0, 1e-4) == pytest.approx(0.064)
    # Colebrook at Re = 1e5, ε/D = 1e-4 (Moody chart ≈ 0.0185) and smooth at 1e6 (≈ 0.0116).
    assert friction_factor(1e5, 1e-4) == pytest.approx(0.0185, rel=0.02)
    assert friction_factor(1e6, 0.0) == pytest.approx(0.0116, rel=0.02)
    assert friction_factor(0.0, 1e-4) == 0.0


def test_low_pressure_drop_scales_like_darcy_weisbach() -> None:
    d = low_pressure_drop_pa(100.0, 100.0, 0.0900, 7e-6)
    # v = 4.37 m/s, Re ≈ 25,000, f ≈ 0.0245: Δp = f·(L/D)·ρv²/2 = 0.0245·1111·6.68 ≈ 182 Pa.
    assert d == pytest.approx(182.0, rel=0.03)
    assert low_pressure_drop_pa(100.0, 200.0, 0.0900, 7e-6) == pytest.approx(2 * d)
    assert low_pressure_drop_pa(0.0, 100.0, 0.09, 7e-6) == 0.0
    assert low_pressure_drop_pa(200.0, 100.0, 0.09, 7e-6) > 3.4 * d  # ~ Q^1.8


def test_gas_gains_pressure_uphill() -> None:
    assert elevation_gain_pa(10.0) == pytest.approx(9.81 * 0.5 * 10.0)
    assert elevation_gain_pa(-10.0) < 0.0


def test_medium_pressure_squared_form() -> None:
    p1 = 351_325.0
    p2 = medium_pressure_end_pa_abs(p1, 5_000.0, 2_000.0, 0.259, 1e-4)
    assert 0.0 < p2 < p1
    p2_double = medium_pressure_end_pa_abs(p1, 5_000.0, 4_000.0, 0.259, 1e-4)
    assert p1**2 - p2_double**2 == pytest.approx(2 * (p1**2 - p2**2))
    assert medium_pressure_end_pa_abs(p1, 1e7, 1_000.0, 0.15, 1e-4) == 0.0


def test_coincidence_factors_follow_sp_42_101() -> None:
    assert coincidence_factor("cooking", 1) == 1.0
    assert coincidence_factor("cooking", 100) == pytest.approx(0.210)
    assert coincidence_factor("cooking_hot_water", 400) == pytest.approx(0.150)
    assert coincidence_factor("cooking", 5_000) == pytest.approx(0.180)
    assert 0.210 > coincidence_factor("cooking", 200) > 0.180
    assert coincidence_factor("heating", 1_000) == 0.85
    assert consumer_group("household", 3.0, 2_500.0) == "heating"
    assert consumer_group("household", 2.2, 250.0) == "cooking_hot_water"
    assert consumer_group("household", 1.2, 150.0) == "cooking"
    assert consumer_group("industrial", 200.0, 1e6) == "full"
    # 400 flats with stoves, 1.2 m³/h each: 0.18 · 480 = 86.4 m³/h.
    assert design_flow_m3h([("cooking", 1.2)] * 400) == pytest.approx(86.4)


# --- the town -----------------------------------------------------------------------------------


def test_counts_are_in_range(town: DemoTown) -> None:
    k = by_kind(town)
    assert 3_000 <= len(k["node"]) <= 6_000
    assert 18_000 <= len(k["service_point"]) <= 22_000
    kinds = Counter(r.values["kind"] for r in k["station"])
    assert kinds["GRS"] == 1
    assert 10 <= kinds["GRP"] + kinds["ShRP"] <= 20
    assert kinds["GRP"] and kinds["ShRP"]
    cats = Counter(r.values["category"] for r in k["service_point"])
    assert 10 <= cats["industrial"] <= 14
    assert cats["critical"] >= 3
    assert cats["household"] > 0.9 * len(k["service_point"])
    assert len({r.values["area_id"] for r in k["node"]}) == len(k["area"])
    assert 4 <= len(town.crews) <= 6


def test_every_asset_has_an_area_and_valid_fields(town: DemoTown) -> None:
    area_ids = {r.id for r in town.records if r.kind == "area"}
    for r in town.records:
        assert not rules.validate(r.kind, r.id, r.values, LEVELS), r
        if r.kind != "area":
            assert r.values["area_id"] in area_ids, r.id


def test_same_seed_same_town_and_other_seed_differs(town: DemoTown,
                                                     other_town: DemoTown) -> None:
    assert town_digest(generate_demo_town(42)) == town_digest(town)
    assert town_digest(other_town) != town_digest(town)


def test_town_does_not_depend_on_hash_randomisation(town: DemoTown) -> None:
    code = ("from tests.unit.erp.test_demo_town import town_digest; "
            "from erp.demo_town import generate_demo_town; "
            "print(town_digest(generate_demo_town(42)))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == town_digest(town)


@pytest.mark.parametrize("which", ["town", "other_town"])
def test_district_design_flows_are_a_few_hundred(which: str,
                                                  request: pytest.FixtureRequest) -> None:
    t: DemoTown = request.getfixturevalue(which)
    flows = district_design_flows(t)
    lp_stations = [v for v in values(t, "station").values() if v["outlet_level"] == "low"]
    assert set(flows) == {v["area_id"] for v in lp_stations}
    for area, q in flows.items():
        assert 100.0 <= q <= 1_000.0, (area, q)
    for v in lp_stations:  # stations have headroom over their district's peak
        assert v["capacity_m3h_std"] >= 1.2 * flows[v["area_id"]]


@pytest.mark.parametrize("which", ["town", "other_town"])
def test_low_pressure_ends_stay_above_1_8_kpa(which: str, request: pytest.FixtureRequest) -> None:
    t: DemoTown = request.getfixturevalue(which)
    mins = check_low_pressure(t)
    assert len(mins) >= 10
    for area, p in mins.items():
        assert p >= 1_800.0, (area, p)
    for h in district_hydraulics(t).values():
        assert max(h.pressures_pa.values()) <= 5_000.0
        assert h.max_velocity_m_s < 7.0, (h.area_id, h.max_velocity_m_s)
        # every low-pressure node of the district is reached from its station
        nodes = [i for i, v in values(t, "node").items()
                 if v["area_id"] == h.area_id and v["pressure_level"] == "low"]
        assert set(nodes) == set(h.pressures_pa)


@pytest.mark.parametrize("which", ["town", "other_town"])
def test_medium_pressure_ring_holds(which: str, request: pytest.FixtureRequest) -> None:
    t: DemoTown = request.getfixturevalue(which)
    mp = medium_hydraulics(t)
    assert check_medium_pressure(t) == mp.min_pressure_pa >= 150_000.0
    assert mp.max_velocity_m_s < 25.0
    medium = [i for i, v in values(t, "node").items() if v["pressure_level"] == "medium"]
    assert set(medium) == set(mp.pressures_pa)
    sps = values(t, "service_point").values()
    for b in (v for v in sps if v["critical_kind"] == "boiler_house"):
        assert mp.pressures_pa[b["node_id"]] >= b["min_pressure_pa_gauge"]


def test_pipes_are_standard_and_levels_use_the_right_material(town: DemoTown) -> None:
    for v in values(town, "pipe").values():
        if v["pressure_level"] == "low":
            assert v["material"] == "pe"
            assert 0.026 <= v["inner_diameter_m"] <= 0.26
            assert 0.007e-3 <= v["roughness_m"] <= 0.01e-3
        else:
            assert v["material"] == "steel"
            assert 0.150 <= v["inner_diameter_m"] <= 0.400
            assert v["roughness_m"] == pytest.approx(0.1e-3)
        assert 0.0 < v["length_m"] < (3_000.0 if v["pressure_level"] == "high" else 600.0)


def test_low_pressure_districts_are_mostly_trees(town: DemoTown) -> None:
    nodes: Counter[str] = Counter()
    links: Counter[str] = Counter()
    for v in values(town, "node").values():
        if v["pressure_level"] == "low":
            nodes[v["area_id"]] += 1
    for kind in ("pipe", "valve"):
        for v in values(town, kind).values():
            if v["pressure_level"] == "low":
                links[v["area_id"]] += 1
    for area, n in nodes.items():
        loops = links[area] - (n - 1)
        assert 0.04 <= loops / links[area] <= 0.10, (area, loops, links[area])


def test_smart_valves_at_district_entries(town: DemoTown) -> None:
    valves = values(town, "valve")
    for sid, st in values(town, "station").items():
        if st["outlet_level"] != "low":
            continue
        entry = [v for v in valves.values()
                 if v["area_id"] == st["area_id"] and v["pressure_level"] == "medium"]
        assert len(entry) == 1 and entry[0]["remotely_operable"], sid
        assert 2_000.0 <= st["outlet_setpoint_pa_gauge"] <= 3_000.0
    ordinary = [v for v in valves.values() if not v["remotely_operable"]]
    assert len(ordinary) > len(valves) / 2


def test_skz_protect_only_steel_and_every_steel_pipe(town: DemoTown) -> None:
    pipes = values(town, "pipe")
    protected: Counter[str] = Counter()
    skz = values(town, "skz")
    assert len(skz) >= 10
    for v in skz.values():
        assert v["protected_pipe_ids"]
        for pid in v["protected_pipe_ids"]:
            assert pipes[pid]["material"] == "steel"
            protected[pid] += 1
        length = sum(pipes[p]["length_m"] for p in v["protected_pipe_ids"])
        assert length <= 3_000.0
    steel = {i for i, v in pipes.items() if v["material"] == "steel"}
    assert set(protected) == steel and set(protected.values()) == {1}


def test_consumers_and_meters(town: DemoTown) -> None:
    sps = values(town, "service_point")
    meters = values(town, "meter")
    per_sp = Counter(m["service_point_id"] for m in meters.values() if m["service_point_id"])
    assert set(per_sp) == set(sps) and set(per_sp.values()) == {1}
    assert len({m["serial"] for m in meters.values()}) == len(meters)
    node_levels = {i: v["pressure_level"] for i, v in values(town, "node").items()}
    for i, sp in sps.items():
        assert sp["peak_load_m3h_std"] > 0 and sp["annual_volume_m3_std"] > 0
        if sp["category"] == "industrial":
            assert 50.0 <= sp["peak_load_m3h_std"] <= 500.0
            assert node_levels[sp["node_id"]] == "medium"
        if sp["category"] == "critical":
            assert sp["critical_kind"] and sp["min_pressure_pa_gauge"], i
    kinds = Counter(m["kind"] for m in meters.values())
    assert kinds["industrial_corrector"] >= 12
    assert {"internal_gas", "internal_electricity", "internal_water", "internal_heat"} <= set(kinds)
    stations = values(town, "station")
    for m in meters.values():
        if m["kind"].startswith("internal_"):
            assert m["station_id"] in stations
    due = sorted(m["verification_due"] for m in meters.values())
    assert (due[-1] - due[0]).days > 8 * 365


def test_station_equipment_hierarchy(town: DemoTown) -> None:
    equipment = values(town, "equipment")
    by_station: dict[str, set[str]] = defaultdict(set)
    for eid, e in equipment.items():
        by_station[e["station_id"]].add(e["kind"])
        if e["parent_id"] is not None:
            parent = equipment[e["parent_id"]]
            assert parent["station_id"] == e["station_id"] and e["parent_id"] != eid
    for sid, st in values(town, "station").items():
        assert {"regulator", "filter", "slam_shut_valve", "telemetry"} <= by_station[sid]
        if st["kind"] == "GRS":
            assert {"odorizer", "meter", "heater", "relief_valve"} <= by_station[sid]
        else:
            assert "relief_valve" in by_station[sid]


def test_network_is_one_piece_fed_from_the_source(town: DemoTown) -> None:
    nodes = values(town, "node")
    edges = [(v["from_node_id"], v["to_node_id"])
             for kind in ("pipe", "valve") for v in values(town, kind).values()]
    edges += [(v["inlet_node_id"], v["outlet_node_id"]) for v in values(town, "station").values()]
    sources = [i for i, v in nodes.items() if v["kind"] == "source"]
    report = rules.topology_report(nodes, edges, sources)
    assert len(report.components) == 1 and not report.disconnected
    node_levels = {i: v["pressure_level"] for i, v in nodes.items()}
    for r in town.records:
        assert not rules.check_references(r.kind, r.id, r.values, node_levels), r.id


def test_coordinates_around_yaroslavl(town: DemoTown) -> None:
    assert (town.centre_lat, town.centre_lon) == (57.6261, 39.8845)
    k = math.cos(math.radians(town.centre_lat))
    farthest = 0.0
    for r in town.records:
        if "lat" in r.values:
            dy = (r.values["lat"] - town.centre_lat) * 111_195.0
            dx = (r.values["lon"] - town.centre_lon) * 111_195.0 * k
            farthest = max(farthest, math.hypot(dx, dy))
    assert 3_000.0 < farthest <= 15_000.0
    elevations = [v["elevation_m"] for v in values(town, "node").values()]
    assert 85.0 <= min(elevations) < max(elevations) <= 145.0


def test_crews(town: DemoTown) -> None:
    areas = {r.id for r in town.records if r.kind == "area"}
    assert len({c.foreman for c in town.crews}) == len(town.crews)
    members = [m for c in town.crews for m in c.members]
    assert len(members) == len(set(members)) and all(c.members for c in town.crews)
    for c in town.crews:
        assert c.area_id in areas and c.id.startswith("CR-") and c.vehicle


@pytest.fixture
def import_timing() -> Iterator[dict[str, float]]:
    """Collects phase timings of the import test and prints them."""
    timings: dict[str, float] = {}
    yield timings
    print("\ndemo town timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))


async def test_bulk_import_into_sqlite(tmp_path: Path, import_timing: dict[str, float]) -> None:
    from erp.adapters.db import create_engine, migrate, session_factory
    from erp.services.audit import Actor
    from erp.services.registry import bulk_import

    t0 = time.perf_counter()
    town = generate_demo_town()
    import_timing["generate"] = time.perf_counter() - t0
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/t.sqlite3")
    try:
        await migrate(engine)
        t1 = time.perf_counter()
        async with session_factory(engine).begin() as s:
            summary = await bulk_import(s, town.records, Actor("seed", "admin"))
        import_timing["bulk_import"] = time.perf_counter() - t1
    finally:
        await engine.dispose()
    assert summary.counts == dict(Counter(r.kind for r in town.records))
