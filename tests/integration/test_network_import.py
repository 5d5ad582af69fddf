"""Network import against a real database: all-or-nothing, export round trip, GasLib instances.

Runs on every backend of the shared `db_engine` fixture (SQLite and PostgreSQL).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from erp.adapters import orm
from erp.adapters.db import session_factory
from erp.errors import ValidationFailed
from erp.exchange import (
    export_feature_collection,
    import_file,
    import_gaslib_file,
)
from erp.services.audit import Actor
from tests.conftest import migrated_engine
from tests.unit.erp.test_gaslib import EXPECTED, LINK_KIND, xml_total_pipe_length_m

DATA = Path(__file__).resolve().parents[1] / "data"
SMALL = DATA / "geojson" / "network-small.geojson"
EXTENSION = DATA / "geojson" / "network-extension.geojson"
ACTOR = Actor("test", "admin")

REGISTRY_TABLES = ("areas", "nodes", "pipes", "stations", "valves", "skz_stations",
                   "skz_protected_pipes", "network_links", "service_points", "meters",
                   "equipment")
# Also unchanged after a refused import: reference data and the audit trail.
ALL_TABLES = (*REGISTRY_TABLES, "pressure_levels", "audit_records", "audit_head")


@pytest.fixture
async def second_engine(db_engine: AsyncEngine, request: pytest.FixtureRequest,
                        tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A second empty database on the same backend as `db_engine`, migrated (round trips)."""
    backend = "sqlite" if db_engine.dialect.name == "sqlite" else "postgresql"
    engine = await migrated_engine(backend, request, tmp_path / "second.sqlite3")
    try:
        yield engine
    finally:
        await engine.dispose()


async def table_rows(engine: AsyncEngine, tables: tuple[str, ...], *,
                     timestamps: bool = True) -> dict[str, list[str]]:
    """Every row of `tables` as canonical JSON, sorted; optionally without timestamps."""
    out: dict[str, list[str]] = {}
    async with engine.connect() as conn:
        for name in tables:
            table = orm.Base.metadata.tables[name]
            rows = (await conn.execute(select(table))).mappings().all()
            out[name] = sorted(
                json.dumps({k: v for k, v in r.items()
                            if timestamps or k not in {"created_at", "updated_at"}},
                           sort_keys=True, default=str)
                for r in rows)
    return out


async def snapshot(engine: AsyncEngine) -> tuple[dict[str, int], str]:
    """Row counts per table and a SHA-256 over all their rows."""
    rows = await table_rows(engine, ALL_TABLES)
    h = hashlib.sha256()
    for name in ALL_TABLES:
        h.update(name.encode())
        for r in rows[name]:
            h.update(r.encode())
    return {name: len(rows[name]) for name in ALL_TABLES}, h.hexdigest()


async def import_geojson(engine: AsyncEngine, path: Path) -> dict[str, int]:
    """Import a file in its own transaction (committed on success)."""
    async with session_factory(engine).begin() as s:
        return dict((await import_file(s, path, ACTOR)).counts)


async def count(engine: AsyncEngine, model: type[orm.Base], *where: Any) -> int:
    """Rows of `model` matching `where`."""
    async with engine.connect() as conn:
        stmt = select(func.count()).select_from(model).where(*where)
        return int((await conn.execute(stmt)).scalar_one())


# --- a valid file, then malformed ones --------------------------------------------------------


async def test_valid_files_import(db_engine: AsyncEngine) -> None:
    counts = await import_geojson(db_engine, SMALL)
    assert counts == {"area": 1, "node": 7, "pipe": 4, "station": 1, "valve": 1, "skz": 1,
                      "service_point": 1, "meter": 1, "equipment": 2}
    before = await snapshot(db_engine)
    # The extension refers to nodes already in the database.
    assert await import_geojson(db_engine, EXTENSION) == {"node": 1, "pipe": 1,
                                                            "service_point": 1}
    sizes, checksum = await snapshot(db_engine)
    assert checksum != before[1]
    assert sizes["nodes"] == 8 and sizes["pipes"] == 5 and sizes["skz_protected_pipes"] == 1
    assert await count(db_engine, orm.Pipe, orm.Pipe.status == "retired") == 1
    assert await count(db_engine, orm.AuditRecord,
                       orm.AuditRecord.operation == "network.import.geojson") == 2
    async with session_factory(db_engine)() as s:
        p = await s.get(orm.Pipe, "P-203")
        assert p is not None and p.inner_diameter_m == 0.0262 and p.roughness_m == 1.31e-05
        st = await s.get(orm.Station, "GRP-1")
        assert st is not None and st.outlet_setpoint_pa_gauge == 3000.0


Mutation = Callable[[dict[str, Any]], None]


def _feature(fc: dict[str, Any], fid: str) -> dict[str, Any]:
    return next(f for f in fc["features"] if f["id"] == fid)


def _bad_geometry(fc: dict[str, Any]) -> None:
    _feature(fc, "P-203")["geometry"]["coordinates"] = [[35.91, 56.863]]


def _unknown_node(fc: dict[str, Any]) -> None:
    _feature(fc, "P-203")["properties"]["to_node_id"] = "N-999"


def _negative_diameter(fc: dict[str, Any]) -> None:
    _feature(fc, "P-203")["properties"]["inner_diameter_mm"] = -26.2


def _duplicate_of_db(fc: dict[str, Any]) -> None:
    _feature(fc, "N-205")["id"] = "N-201"  # already imported with the valid file
    _feature(fc, "P-203")["properties"]["to_node_id"] = "N-201"
    _feature(fc, "SP-2")["properties"]["node_id"] = "N-201"


def _duplicate_in_file(fc: dict[str, Any]) -> None:
    fc["features"].append(copy.deepcopy(_feature(fc, "SP-2")))


def _mixed_levels(fc: dict[str, Any]) -> None:
    _feature(fc, "P-203")["properties"]["from_node_id"] = "N-101"  # medium; P-203 is low


MALFORMED: list[tuple[str, Mutation, str, str]] = [
    ("bad-geometry", _bad_geometry, "P-203", "geometry"),
    ("unknown-node-reference", _unknown_node, "P-203", "to_node_id"),
    ("negative-diameter", _negative_diameter, "P-203", "inner_diameter_m"),
    ("duplicate-id-of-database", _duplicate_of_db, "N-201", "id"),
    ("duplicate-id-in-file", _duplicate_in_file, "SP-2", "id"),
    ("mixed-levels-without-station", _mixed_levels, "P-203", "from_node_id"),
]


@pytest.mark.parametrize(("mutate", "asset_id", "field"), [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
async def test_malformed_file_changes_nothing(db_engine: AsyncEngine, tmp_path: Path,
                                              mutate: Mutation, asset_id: str,
                                              field: str) -> None:
    await import_geojson(db_engine, SMALL)
    fc = json.loads(EXTENSION.read_text(encoding="utf-8"))
    mutate(fc)
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps(fc), encoding="utf-8")
    before = await snapshot(db_engine)
    with pytest.raises(ValidationFailed) as exc:
        async with session_factory(db_engine).begin() as s:
            await import_file(s, bad, ACTOR)
    assert asset_id in str(exc.value)
    assert any(e.asset_id == asset_id and e.field == field for e in exc.value.errors), \
        exc.value.errors
    assert await snapshot(db_engine) == before


async def test_invalid_json_names_line_and_column(db_engine: AsyncEngine,
                                                  tmp_path: Path) -> None:
    await import_geojson(db_engine, SMALL)
    bad = tmp_path / "broken.geojson"
    bad.write_text('{"type": "FeatureCollection",\n "features": [\n  {"type": "Feature",}\n]}\n',
                   encoding="utf-8")
    before = await snapshot(db_engine)
    with pytest.raises(ValidationFailed, match=r"broken.geojson: file: invalid JSON at line 3, "
                                               r"column 22"):
        async with session_factory(db_engine).begin() as s:
            await import_file(s, bad, ACTOR)
    assert await snapshot(db_engine) == before


# --- export → import round trip ---------------------------------------------------------------


async def test_export_import_round_trip(db_engine: AsyncEngine, second_engine: AsyncEngine,
                                        tmp_path: Path) -> None:
    await import_geojson(db_engine, SMALL)
    await import_geojson(db_engine, EXTENSION)
    async with session_factory(db_engine).begin() as s:
        await import_gaslib_file(s, DATA / "gaslib" / "GasLib-11.net", ACTOR)
    async with session_factory(db_engine)() as s:
        exported = await export_feature_collection(s)
    path = tmp_path / "export.geojson"
    path.write_text(json.dumps(exported, allow_nan=False, ensure_ascii=False), encoding="utf-8")

    counts = await import_geojson(second_engine, path)
    assert counts == {"area": 2, "node": 19, "pipe": 13, "station": 1, "valve": 2, "link": 2,
                      "skz": 1, "service_point": 2, "meter": 1, "equipment": 2}
    first = await table_rows(db_engine, REGISTRY_TABLES, timestamps=False)
    second = await table_rows(second_engine, REGISTRY_TABLES, timestamps=False)
    assert {k: len(v) for k, v in second.items()} == {k: len(v) for k, v in first.items()}
    for name in REGISTRY_TABLES:
        assert second[name] == first[name], name
    assert await count(second_engine, orm.NetworkNode, orm.NetworkNode.status == "retired") == 1
    async with session_factory(second_engine)() as s:
        assert await export_feature_collection(s) == exported


# --- GasLib instances -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_gaslib_import(db_engine: AsyncEngine, name: str) -> None:
    path = DATA / "gaslib" / f"{name}.net"
    exp = EXPECTED[name]
    async with session_factory(db_engine).begin() as s:
        summary = await import_gaslib_file(s, path, ACTOR)
    links = sum(exp[e] for e in LINK_KIND)
    assert summary.counts == {k: v for k, v in (("area", 1), ("node", exp["nodes"]),
                                                ("pipe", exp["pipe"]), ("valve", exp["valve"]),
                                                ("link", links)) if v}
    e = db_engine
    node = orm.NetworkNode
    assert await count(e, node) == exp["nodes"]
    assert await count(e, node, node.kind == "source") == exp["source"]
    assert await count(e, node, node.kind == "sink") == exp["sink"]
    assert await count(e, node, node.kind == "junction") == exp["innode"]
    assert await count(e, orm.Pipe) == exp["pipe"]
    assert await count(e, orm.Valve) == exp["valve"]
    for element, kind in LINK_KIND.items():
        assert await count(e, orm.NetworkLink, orm.NetworkLink.kind == kind) == exp[element]
    async with e.connect() as conn:
        lengths = (await conn.execute(select(orm.Pipe.length_m))).scalars().all()
    assert math.fsum(lengths) == pytest.approx(xml_total_pipe_length_m(path), rel=1e-12)
    assert math.fsum(lengths) == pytest.approx(exp["pipe_length_m"], rel=1e-12)
    assert await count(e, orm.AuditRecord,
                       orm.AuditRecord.operation == "network.import.gaslib") == 1


async def test_gaslib_import_twice_is_refused_whole(db_engine: AsyncEngine) -> None:
    path = DATA / "gaslib" / "GasLib-11.net"
    async with session_factory(db_engine).begin() as s:
        await import_gaslib_file(s, path, ACTOR)
    before = await snapshot(db_engine)
    with pytest.raises(ValidationFailed, match="'entry01' already exists"):
        async with session_factory(db_engine).begin() as s:
            await import_gaslib_file(s, path, ACTOR)
    assert await snapshot(db_engine) == before
