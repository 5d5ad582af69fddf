"""The control command history (`erp.services.commands`) on SQLite and PostgreSQL: the upsert
and its ordering rule, the newest-first list with area scoping, open-only, the keyset cursor and
the overlay of steps not written yet; closing the commands of stopped processes; the server's
`Control` writing each step to the history and the audit log in one transaction; migration 0011
down and up."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from control.model import Action, Operator, TargetKind
from erp import views
from erp.adapters import orm
from erp.adapters.db import alembic_config, current_revision, head_revision, session_factory
from erp.services import audit
from erp.services import commands as history
from realtime.broadcast import Broadcast
from realtime.store import TagStore
from server.control import ABANDONED_AFTER_S, Control
from tests.unit.control._fakes import T0, Clock, make_field, make_pipeline

MSK = dt.timezone(dt.timedelta(hours=3))
IMPACT = {"consumers_cut_off": 60, "critical_cut_off": ["HOSPITAL-1"],
          "min_critical_pressure_pa": 1234.5, "method": "hydraulic", "detail": "twin"}


def _snap(cid: str, *, at: float = 0.0, updated: float | None = None, state: str = "selected",
          area: str | None = "NORTH", **more: Any) -> dict[str, Any]:
    """A snapshot selected `at` seconds after T0, its latest step `updated` seconds after T0."""
    created = T0 + dt.timedelta(seconds=at)
    return {"id": cid, "target_kind": "valve", "asset_id": f"V-{cid}", "area_id": area,
            "action": "set_position", "value": 42.5, "reason": "history test",
            "requested_by": "ivanov", "requested_role": "operator", "approved_by": None,
            "approval_reason": "", "state": state, "outcome": "", "needs_approval": False,
            "needs_override": False, "checks": ["role", "area"], "impact": {"method": "graph"},
            "created_at": created, "expires_at": created + dt.timedelta(seconds=30),
            "finished_at": None, "updated_at": T0 + dt.timedelta(seconds=at if updated is None
                                                                  else updated),
            "last_step": state, **more}


async def _record(engine: AsyncEngine, *snapshots: dict[str, Any]) -> None:
    async with session_factory(engine).begin() as s:
        for snap in snapshots:
            await history.record(s, snap)


async def _get(engine: AsyncEngine, cid: str) -> history.StoredCommand | None:
    async with session_factory(engine)() as s:
        return await history.get(s, cid)


async def _list(engine: AsyncEngine, first: int = 50, **kw: Any) -> list[str]:
    async with session_factory(engine)() as s:
        return [c.id for c in await history.list_commands(s, first, **kw)]


async def test_a_command_round_trips_every_field(db_engine: AsyncEngine) -> None:
    finished = T0 + dt.timedelta(seconds=12)
    snap = _snap("A", updated=12, state="succeeded", last_step="succeeded", outcome="read back 0",
                 approved_by="petrova", approval_reason="four eyes", needs_approval=True,
                 needs_override=True, impact=IMPACT, finished_at=finished.astimezone(MSK),
                 checks=["role", "area", "critical_consumers"])
    await _record(db_engine, snap)
    got = await _get(db_engine, "A")
    assert got is not None
    assert {name: getattr(got, name) for name in history.StoredCommand.__dataclass_fields__} == {
        **snap, "finished_at": finished}
    assert got.finished_at is not None and got.finished_at.tzinfo is not None
    assert got.created_at.tzinfo is not None and got.created_at == T0
    assert not got.open and got.cursor == history.Cursor(T0, "A")
    assert await _get(db_engine, "nope") is None


async def test_iso_strings_are_accepted_and_non_finite_numbers_become_null(
        db_engine: AsyncEngine) -> None:
    snap = _snap("B", impact={"min_critical_pressure_pa": float("nan"), "method": "hydraulic"},
                 value=float("inf"))
    snap.update(created_at=snap["created_at"].isoformat(), updated_at=None, expires_at=
                snap["expires_at"].astimezone(MSK).isoformat(), last_step=None)
    await _record(db_engine, snap)
    got = await _get(db_engine, "B")
    assert got is not None and got.value is None
    assert got.impact == {"min_critical_pressure_pa": None, "method": "hydraulic"}
    assert got.updated_at == got.created_at == T0 and got.last_step == "selected"
    with pytest.raises(ValueError, match="tz-aware"):
        history.from_snapshot(_snap("C", created_at=T0.replace(tzinfo=None)))


async def test_recording_is_idempotent_and_an_older_step_never_overwrites_a_newer(
        db_engine: AsyncEngine) -> None:
    selected = _snap("A")
    operating = _snap("A", updated=5, state="operating", last_step="operate")
    written = _snap("A", updated=5, state="operating", last_step="written")
    done = _snap("A", updated=6, state="succeeded", outcome="read back 42.5",
                 finished_at=T0 + dt.timedelta(seconds=6))
    await _record(db_engine, selected, selected, operating, written)
    got = await _get(db_engine, "A")
    assert got is not None and (got.state, got.last_step) == ("operating", "written")  # same time
    await _record(db_engine, done, done)
    await _record(db_engine, operating, selected)  # late and out of order: ignored
    got = await _get(db_engine, "A")
    assert got is not None and (got.state, got.outcome) == ("succeeded", "read back 42.5")
    assert got.updated_at == T0 + dt.timedelta(seconds=6) and got.created_at == T0
    # a step as old as the stored one may not reopen a finished command
    await _record(db_engine, _snap("A", updated=6, state="operating", last_step="written"))
    assert (await _get(db_engine, "A")).state == "succeeded"  # type: ignore[union-attr]
    async with session_factory(db_engine)() as s:
        count = await s.scalar(select(func.count()).select_from(orm.ControlCommandRow))
    assert count == 1


async def test_the_list_is_newest_first_scoped_to_areas_and_pages_with_a_cursor(
        db_engine: AsyncEngine) -> None:
    # eleven commands: 0..9 a second apart, alternately NORTH and SOUTH; "T" at 9 s too (a tie)
    await _record(db_engine, *(_snap(f"C{i}", at=i, area=("NORTH", "SOUTH")[i % 2])
                               for i in range(10)),
                  _snap("T", at=9, area=None))
    everything = ["T", "C9", "C8", "C7", "C6", "C5", "C4", "C3", "C2", "C1", "C0"]
    assert await _list(db_engine) == everything
    assert await _list(db_engine, 3) == everything[:3]
    assert await _list(db_engine, areas={"NORTH"}) == ["C8", "C6", "C4", "C2", "C0"]
    assert await _list(db_engine, areas=frozenset()) == []
    assert await _list(db_engine, areas={"NORTH", "SOUTH"}) == everything[1:]  # no area: none
    pages: list[str] = []
    cursor = None
    while True:  # page through, four at a time
        async with session_factory(db_engine)() as s:
            page = await history.list_commands(s, 4, before=cursor)
        if not page:
            break
        pages += [c.id for c in page]
        cursor = page[-1].cursor
    assert pages == everything
    c5 = await _get(db_engine, "C5")
    assert c5 is not None
    assert await _list(db_engine, 2, before=c5.cursor, areas={"SOUTH"}) == ["C3", "C1"]
    assert await _list(db_engine, 0) == ["T"]  # at least one
    assert await _list(db_engine, 10_000) == everything


async def test_open_only_and_the_overlay_of_steps_not_written_yet(db_engine: AsyncEngine) -> None:
    await _record(db_engine, *(_snap(f"C{i}", at=i) for i in range(5)),
                  _snap("F", at=5, updated=6, state="failed"))
    assert await _list(db_engine, open_only=True) == ["C4", "C3", "C2", "C1", "C0"]
    # in memory: C4 and C3 finished meanwhile, N was selected; none of it written yet
    overlay = [_snap("C4", at=4, updated=8, state="succeeded"),
               _snap("C3", at=3, updated=8, state="cancelled"),
               _snap("N", at=7), _snap("S", at=7.5, area="SOUTH")]
    got = await _list(db_engine, 3, open_only=True, overlay=overlay, areas={"NORTH"})
    assert got == ["N", "C2", "C1"]  # two rows closed in memory: the page still holds three
    assert await _list(db_engine, 3, open_only=True, overlay=overlay) == ["S", "N", "C2"]
    assert await _list(db_engine, 3, overlay=overlay) == ["S", "N", "F"]
    assert await _list(db_engine, 3, overlay=overlay, areas={"NORTH"}) == ["N", "F", "C4"]
    async with session_factory(db_engine)() as s:
        page = await history.list_commands(s, 10, overlay=overlay)
    assert {c.id: c.state for c in page}["C4"] == "succeeded"  # the overlay is newer
    c2 = await _get(db_engine, "C2")
    assert c2 is not None
    assert await _list(db_engine, overlay=overlay, before=c2.cursor) == ["C1", "C0"]


async def test_commands_of_stopped_processes_are_closed(db_engine: AsyncEngine) -> None:
    await _record(db_engine, _snap("SEL", at=0), _snap("APP", at=1, state="approved"),
                  _snap("OPS", at=2, state="operating"), _snap("NEW", at=100),
                  _snap("END", at=0, updated=3, state="succeeded"))
    now = T0 + dt.timedelta(seconds=200)
    async with session_factory(db_engine).begin() as s:
        closed = await history.close_abandoned(s, now, older_than=dt.timedelta(seconds=90))
    assert [(c.id, c.state) for c in closed] == [("SEL", "expired"), ("APP", "expired"),
                                                 ("OPS", "failed")]
    assert all(c.finished_at == now and c.updated_at == now for c in closed)
    assert "not known" in closed[-1].outcome and closed[0].last_step == "expired"
    assert await _list(db_engine, open_only=True) == ["NEW"]  # expires at 130 s: not yet
    async with session_factory(db_engine).begin() as s:
        assert await history.close_abandoned(s, now, older_than=dt.timedelta(seconds=90)) == []


# --- the server's Control -----------------------------------------------------------------------

OP = Operator("ivanov", "operator", frozenset({"NORTH"}))


def _control(engine: AsyncEngine, clock: Clock) -> Control:
    """A `Control` whose pipeline runs on the fake field of the pipeline's unit tests."""
    control = Control(session_factory(engine), Broadcast(), TagStore(), lambda: None, clock=clock)
    pipeline = make_pipeline(make_field(), clock, [])
    pipeline.sink = control._sink
    control.pipeline = pipeline
    return control


async def _command_audit(engine: AsyncEngine, cid: str) -> list[str]:
    async with session_factory(engine)() as s:
        page = await views.audit_page(s, first=100, target_id=f"command:{cid}")
    return [r.operation for r in reversed(page.rows)]


async def test_control_writes_each_step_to_the_history_and_the_audit_log_together(
        db_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    control = _control(db_engine, clock)
    cmd = await control.pipeline.select(OP, TargetKind.valve, "V1", Action.close, None, "leak")
    clock.advance(3)
    await control.pipeline.operate(OP, cmd.id)
    assert len(control._audit) == 4  # selected, operate, written, succeeded: not written yet
    await control.flush()
    got = await _get(db_engine, cmd.id)
    assert got is not None
    assert (got.state, got.last_step, got.requested_by, got.area_id) == (
        "succeeded", "succeeded", "ivanov", "NORTH")
    assert got.created_at == T0 and got.updated_at == got.finished_at == T0 + dt.timedelta(seconds=3)
    assert got.checks == cmd.checks and got.impact["method"] == "graph"
    assert await _command_audit(db_engine, cmd.id) == [
        "command.selected", "command.operate", "command.written", "command.succeeded"]

    def broken(*_: Any) -> None:
        raise RuntimeError("the history is away")

    monkeypatch.setattr(history, "record", broken)
    second = await control.pipeline.select(OP, TargetKind.valve, "V1", Action.open, None, "back")
    with pytest.raises(RuntimeError):
        await control.flush()
    assert await _command_audit(db_engine, second.id) == []  # neither written: one transaction
    assert await _get(db_engine, second.id) is None and len(control._audit) == 1
    monkeypatch.undo()
    await control.flush()
    assert await _command_audit(db_engine, second.id) == ["command.selected"]
    assert (await _get(db_engine, second.id)).state == "selected"  # type: ignore[union-attr]
    async with session_factory(db_engine)() as s:
        assert (await audit.verify(s)).ok


async def test_control_closes_the_commands_stopped_processes_left_open(
        db_engine: AsyncEngine) -> None:
    await _record(db_engine, _snap("OLD", at=0), _snap("OPS", at=0, state="operating"))
    clock = Clock(T0 + dt.timedelta(seconds=30 + 30 + ABANDONED_AFTER_S + 1))
    control = _control(db_engine, clock)
    await control.start()
    try:
        assert await _list(db_engine, open_only=True) == []
        assert (await _get(db_engine, "OPS")).state == "failed"  # type: ignore[union-attr]
        assert await _command_audit(db_engine, "OLD") == ["command.expired"]
        assert await _command_audit(db_engine, "OPS") == ["command.failed"]
    finally:
        await control.stop()


# --- migration 0011 -----------------------------------------------------------------------------


async def test_migration_0011_matches_the_model_and_goes_down_and_up(db_engine: AsyncEngine) -> None:
    cfg = alembic_config(db_engine.url.render_as_string(hide_password=False))
    table = "control_commands"

    def step(conn: Connection, direction: str, target: str) -> set[str]:
        cfg.attributes["connection"] = conn
        getattr(command, direction)(cfg, target)
        return set(inspect(conn).get_table_names())

    def drift(conn: Connection) -> list[Any]:
        diffs = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), orm.Base.metadata)
        return [d for d in diffs if table in repr(d)]

    def indexes(conn: Connection) -> set[tuple[str, tuple[str, ...]]]:
        return {(i["name"], tuple(i["column_names"])) for i in inspect(conn).get_indexes(table)}

    async with db_engine.connect() as conn:
        assert await conn.run_sync(drift) == []
        assert await conn.run_sync(indexes) == {
            ("ix_control_commands_created_at", ("created_at",)),
            ("ix_control_commands_area_id_created_at", ("area_id", "created_at")),
            ("ix_control_commands_state", ("state",))}
    async with db_engine.begin() as conn:
        assert table not in await conn.run_sync(step, "downgrade", "0010")
    assert await current_revision(db_engine) == "0010"
    async with db_engine.begin() as conn:
        assert table in await conn.run_sync(step, "upgrade", "head")
    assert await current_revision(db_engine) == head_revision()
    await _record(db_engine, _snap("A"))  # the re-created table works
    assert await _list(db_engine) == ["A"]
