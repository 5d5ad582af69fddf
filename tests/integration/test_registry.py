"""Registry services on a real database (SQLite and PostgreSQL): rules, audit, topology."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from erp import views
from erp.adapters import orm
from erp.adapters.db import current_revision, head_revision, migrate, session_factory
from erp.errors import AuditWriteFailed, Forbidden, NotFound, ValidationFailed
from erp.services import audit, registry
from erp.services.registry import AssetRecord, Scope
from tests.e2e._network import grid_records

ACTOR = audit.Actor("tester", "engineer", "127.0.0.1")


async def _seed(engine: AsyncEngine, n: int = 10) -> None:
    async with session_factory(engine).begin() as s:
        await registry.bulk_import(s, grid_records(n), ACTOR)


async def test_migrations_reach_head_and_are_idempotent(db_engine: AsyncEngine) -> None:
    assert await current_revision(db_engine) == head_revision()
    await migrate(db_engine)  # a second run changes nothing
    async with session_factory(db_engine)() as s:
        levels = await registry.load_levels(s)
    assert {"low", "medium", "high"} <= levels.keys()
    assert levels["low"].max_pa_gauge == 5_000 and levels["medium"].max_pa_gauge == 300_000


async def test_create_update_retire_are_audited_with_diffs(db_engine: AsyncEngine) -> None:
    await _seed(db_engine)
    S = session_factory(db_engine)
    async with S.begin() as s:
        await registry.update_asset(s, "pipe", "T1-P-0000", {"inner_diameter_m": 0.0626},
                                    ACTOR, Scope())
    async with S.begin() as s:
        await registry.retire_asset(s, "pipe", "T1-P-0009", ACTOR, Scope(), "cut out")
    async with S() as s:
        page = await views.audit_page(s, first=10)
        result = await audit.verify(s)
    ops = [r.operation for r in page.rows]
    assert ops[:3] == ["pipe.retire", "pipe.update", "network.import"]
    upd = page.rows[1]
    assert upd.diff == {"inner_diameter_m": {"before": 0.0514, "after": 0.0626}}
    assert upd.actor == "tester" and upd.role == "engineer" and upd.client_addr == "127.0.0.1"
    assert upd.ts.tzinfo is not None
    assert result.ok and result.checked == 3


async def test_rules_refuse_bad_changes_and_leave_nothing(db_engine: AsyncEngine) -> None:
    await _seed(db_engine)
    S = session_factory(db_engine)
    bad = [
        ("pipe", "X1", {"from_node_id": "T1-N-0000", "to_node_id": "T1-N-0001", "length_m": 10,
                        "inner_diameter_m": 1.5, "material": "pe", "roughness_m": 1e-5,
                        "pressure_level": "low"}, "inner_diameter_m"),
        ("pipe", "X2", {"from_node_id": "T1-N-0000", "to_node_id": "NOPE", "length_m": 10,
                        "inner_diameter_m": 0.1, "material": "pe", "roughness_m": 1e-5,
                        "pressure_level": "low"}, "to_node_id"),
        ("pipe", "X3", {"from_node_id": "T1-N-0000", "to_node_id": "T1-N-0001", "length_m": 10,
                        "inner_diameter_m": 0.1, "material": "pe", "roughness_m": 1e-5,
                        "pressure_level": "medium"}, "from_node_id"),
        ("station", "X4", {"name": "GRP", "kind": "GRP", "inlet_node_id": "T1-N-0000",
                           "outlet_node_id": "T1-N-0001", "inlet_level": "medium",
                           "outlet_level": "low", "outlet_setpoint_pa_gauge": 12_000,
                           "lat": 57.6, "lon": 39.8}, "outlet_setpoint_pa_gauge"),
    ]
    for kind, asset_id, values, field in bad:
        with pytest.raises(ValidationFailed) as info:
            async with S.begin() as s:
                await registry.create_asset(s, kind, asset_id, values, ACTOR, Scope())
        assert any(e.asset_id == asset_id and e.field == field for e in info.value.errors), (
            info.value.errors)
    async with S() as s:
        assert (await s.execute(select(func.count()).select_from(orm.Pipe))).scalar_one() == 10
        assert (await s.execute(select(func.count()).select_from(orm.AuditRecord))
                ).scalar_one() == 1


async def test_node_cannot_be_retired_under_live_pipes(db_engine: AsyncEngine) -> None:
    await _seed(db_engine)
    with pytest.raises(ValidationFailed, match="dangling"):
        async with session_factory(db_engine).begin() as s:
            await registry.retire_asset(s, "node", "T1-N-0003", ACTOR, Scope())


async def test_area_scope(db_engine: AsyncEngine) -> None:
    await _seed(db_engine)
    S = session_factory(db_engine)
    other = Scope(frozenset({"ELSEWHERE"}))
    with pytest.raises(NotFound):
        async with S.begin() as s:
            await registry.update_asset(s, "pipe", "T1-P-0001", {"length_m": 5}, ACTOR, other)
    with pytest.raises(Forbidden):
        async with S.begin() as s:
            await registry.create_asset(s, "node", "Z", {"lat": 1.0, "lon": 1.0,
                                                          "pressure_level": "low",
                                                          "area_id": "T1"}, ACTOR, other)
    async with S() as s:
        assert (await views.page(s, "pipe", filters={}, areas=frozenset({"ELSEWHERE"}),
                                 first=50)).rows == []
        assert len((await views.page(s, "pipe", filters={}, areas=None, first=50)).rows) == 10


async def test_topology_report_finds_disconnected_parts(db_engine: AsyncEngine) -> None:
    S = session_factory(db_engine)
    recs = grid_records(6)
    recs[1] = AssetRecord("node", recs[1].id, {**recs[1].values, "kind": "source"})
    async with S.begin() as s:
        await registry.bulk_import(s, recs, ACTOR)
    async with S() as s:
        assert (await views.topology(s)).disconnected == ()
    async with S.begin() as s:
        await registry.retire_asset(s, "pipe", "T1-P-0002", ACTOR, Scope())
    async with S() as s:
        report = await views.topology(s)
    assert len(report.components) == 2
    (cut,) = report.disconnected
    assert cut.node_count == 4 and "T1-N-0006" in cut.sample_node_ids


async def test_audit_verify_detects_changed_and_deleted_records(db_engine: AsyncEngine) -> None:
    await _seed(db_engine)
    S = session_factory(db_engine)
    for k in range(3):
        async with S.begin() as s:
            await registry.update_asset(s, "pipe", "T1-P-0001", {"length_m": 20.0 + k},
                                        ACTOR, Scope())
    async with S.begin() as s:
        await s.execute(update(orm.AuditRecord).where(orm.AuditRecord.seq == 2)
                        .values(actor="someone-else"))
    async with S() as s:
        r = await audit.verify(s)
    assert not r.ok and r.first_bad_seq == 2
    async with S.begin() as s:
        await s.execute(update(orm.AuditRecord).where(orm.AuditRecord.seq == 2)
                        .values(actor="tester"))
        assert (await audit.verify(s)).ok
        await s.execute(text("DELETE FROM audit_records WHERE seq = 3"))
    async with S() as s:
        r = await audit.verify(s)
    assert not r.ok and r.first_bad_seq == 3 and "missing" in (r.problem or "")
    async with S.begin() as s:
        await s.execute(text("DELETE FROM audit_records WHERE seq = 4"))
        # Deleting the newest records also breaks it: the head still names them.
    async with S() as s:
        await s.execute(text("DELETE FROM audit_records WHERE seq >= 3"))
        r = await audit.verify(s)
    assert not r.ok and "deleted from the end" in (r.problem or "")


async def test_a_failed_audit_write_fails_the_change(db_engine: AsyncEngine) -> None:
    await _seed(db_engine)
    S = session_factory(db_engine)
    async with S.begin() as s:
        await s.execute(text("DELETE FROM audit_head"))  # the chain cannot be extended now
    with pytest.raises(AuditWriteFailed):
        async with S.begin() as s:
            await registry.update_asset(s, "pipe", "T1-P-0001", {"length_m": 99.0}, ACTOR,
                                        Scope())
    async with S() as s:
        pipe = await s.get(orm.Pipe, "T1-P-0001")
    assert pipe is not None and pipe.length_m == pytest.approx(11.1)


async def test_meter_serials_are_unique(db_engine: AsyncEngine) -> None:
    await _seed(db_engine)
    S = session_factory(db_engine)
    meter = {"serial": "SN-1", "model": "Elehant SVG-1.6", "kind": "residential"}
    async with S.begin() as s:
        await registry.create_asset(s, "meter", "M-1", meter, ACTOR, Scope())
    with pytest.raises(ValidationFailed, match="belongs to meter 'M-1'"):
        async with S.begin() as s:
            await registry.bulk_import(s, [AssetRecord("meter", "M-2", meter)], ACTOR)
    with pytest.raises(ValidationFailed, match="also on meter 'M-3'"):
        async with S.begin() as s:
            await registry.bulk_import(s, [AssetRecord("meter", "M-3", {**meter, "serial": "B"}),
                                           AssetRecord("meter", "M-4", {**meter, "serial": "B"})],
                                       ACTOR)


async def test_concurrent_audit_writers_keep_one_chain(db_engine: AsyncEngine) -> None:
    """Many transactions appending at once (as the alarm journal, the command audit and
    resolvers do): every record gets its own seq and the chain verifies."""
    import asyncio

    factory = session_factory(db_engine)

    async def write(i: int) -> None:  # no retry: a writer waits for the lock, never fails
        async with factory.begin() as s:
            await audit.record(s, audit.Actor(f"u{i}", "operator"),
                               audit.AuditEntry("test.concurrent", [f"t:{i}"]))

    await asyncio.gather(*(write(i) for i in range(20)))
    async with factory() as s:
        seqs = (await s.execute(select(orm.AuditRecord.seq).where(
            orm.AuditRecord.operation == "test.concurrent"))).scalars().all()
        assert len(seqs) == len(set(seqs)) == 20
        assert (await audit.verify(s)).ok
