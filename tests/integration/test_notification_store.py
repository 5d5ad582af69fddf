"""The notification `MessageStore` in the database (`DbMessageStore` over
`erp.services.notifications`), on SQLite and PostgreSQL, held to the same contract as
`InMemoryMessageStore`; claims racing from two stores (two processes) on one database; the
notifier on the database store; migration 0006 down and up."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from erp.adapters import orm
from erp.adapters.db import (
    alembic_config,
    create_engine,
    current_revision,
    head_revision,
    session_factory,
)
from erp.services import notifications as stored
from realtime.alarms.model import AlarmEvent, AlarmMode, AlarmStatus, EventKind, Priority
from realtime.notify import (
    DeliveryStatus,
    InMemoryMessageStore,
    MessageStore,
    Notifier,
    OutgoingMessage,
    StatusChange,
    UnknownMessage,
    message_key,
    parse_config,
)
from realtime.notify.jobs import InProcessJobs
from server.notifications import DbMessageStore, Notifications
from tests.conftest import migrated_engine

MSK = dt.timezone(dt.timedelta(hours=3))
T0 = dt.datetime(2026, 1, 15, 6, 0, tzinfo=dt.UTC)
ALARM = "station/GRP-12/p_out:hihi"
OTHER = "station/GRP-07/door:discrete"
TABLES = {"notification_messages", "notification_status_changes"}


def _msg(alarm_id: str = ALARM, level: int = 0, channel: str = "email",
         recipient: str = "ivanov", ts: dt.datetime = T0) -> OutgoingMessage:
    return OutgoingMessage(
        message_key(alarm_id, ts, level, channel, recipient), alarm_id, level, channel, recipient,
        f"{recipient}@gas.example" if channel == "email" else "+79160000001", "ru",
        "Авария (критический): давление на выходе ГРП-12", "Тело письма\nстрока 2", "КРИТ 7.9",
        {"alarm_id": alarm_id, "value": 7.9, "priority": 4, "nested": {"ok": [1, 2.5, None]}})


def _queued(at: dt.datetime = T0) -> StatusChange:
    return StatusChange(DeliveryStatus.queued, at)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageStore]:
    """The same contract, three adapters."""
    if request.param == "memory":
        yield InMemoryMessageStore()
        return
    engine = await migrated_engine(request.param, request, tmp_path / "notify.sqlite3")
    try:
        yield DbMessageStore(session_factory(engine))
    finally:
        await engine.dispose()


# --- the MessageStore contract ---------------------------------------------------------------


async def test_a_key_is_claimed_once_and_the_message_kept_whole(store: MessageStore) -> None:
    msg = _msg()
    assert await store.get(msg.key) is None
    assert await store.claim(msg, _queued()) is True
    assert await store.claim(msg, _queued(T0 + dt.timedelta(seconds=1))) is False
    assert await store.claim(msg, StatusChange(DeliveryStatus.cancelled, T0, reason="x")) is False
    record = await store.get(msg.key)
    assert record is not None
    assert record.message == msg and record.key == msg.key
    assert record.history == (_queued(),) and record.status is DeliveryStatus.queued
    assert record.history[0].at.utcoffset() == dt.timedelta(0)


async def test_status_changes_are_kept_in_order(store: MessageStore) -> None:
    msg = _msg()
    retry_at = T0 + dt.timedelta(seconds=30)
    changes = [
        _queued(),
        StatusChange(DeliveryStatus.retrying, T0 + dt.timedelta(seconds=1), 1,
                     "451 4.3.0 Try again later", retry_at.astimezone(MSK)),
        StatusChange(DeliveryStatus.retrying, retry_at, 2, "421 connection dropped",
                     T0 + dt.timedelta(seconds=90)),
        StatusChange(DeliveryStatus.sent, T0 + dt.timedelta(seconds=90, microseconds=123456), 3),
    ]
    assert await store.claim(msg, changes[0])
    for change in changes[1:]:
        await store.set_status(msg.key, change)
    record = await store.get(msg.key)
    assert record is not None
    assert record.history == tuple(changes)
    assert [c.status for c in record.history] == [DeliveryStatus.queued, DeliveryStatus.retrying,
                                                  DeliveryStatus.retrying, DeliveryStatus.sent]
    assert record.status is DeliveryStatus.sent and record.last.attempt == 3
    assert record.history[1].next_attempt_at == retry_at


async def test_an_unknown_key_is_an_error_and_reads_as_nothing(store: MessageStore) -> None:
    with pytest.raises(UnknownMessage):
        await store.set_status("nobody@claimed#L0/email/x", StatusChange(DeliveryStatus.sent, T0, 1))
    assert await store.get("nobody@claimed#L0/email/x") is None
    assert await store.for_alarm(ALARM) == []
    assert await store.claim(_msg(), _queued())  # the failed call left nothing half-done
    with pytest.raises(KeyError):  # UnknownMessage is a KeyError, as callers may expect
        await store.set_status(_msg(level=1).key, _queued())


async def test_for_alarm_lists_its_messages_in_claim_order(store: MessageStore) -> None:
    later = T0 + dt.timedelta(minutes=20)
    claims = [  # deliberately not in key order
        _msg(level=2, channel="sms", recipient="sidorov"),
        _msg(OTHER),
        _msg(level=0, channel="webhook", recipient="scada"),
        _msg(level=1, channel="email", recipient="petrov"),
        _msg(ts=later),  # the next activation of the same alarm
        _msg(OTHER, level=1),
        _msg(level=0, channel="email", recipient="abramov"),
    ]
    for i, m in enumerate(claims):
        assert await store.claim(m, _queued(T0 + dt.timedelta(seconds=i)))
    await store.set_status(claims[3].key, StatusChange(DeliveryStatus.sent, later, 1))
    assert not await store.claim(claims[0], _queued(later))
    got = await store.for_alarm(ALARM)
    assert [r.key for r in got] == [m.key for m in claims if m.alarm_id == ALARM]
    assert [r.message for r in got] == [m for m in claims if m.alarm_id == ALARM]
    assert [r.status for r in got] == [DeliveryStatus.queued, DeliveryStatus.queued,
                                       DeliveryStatus.sent, DeliveryStatus.queued,
                                       DeliveryStatus.queued]
    assert [r.key for r in await store.for_alarm(OTHER)] == [claims[1].key, claims[5].key]


# --- the database adapter ----------------------------------------------------------------------


async def test_two_stores_racing_for_the_same_keys_claim_each_once(db_engine: AsyncEngine) -> None:
    """Two processes (two engines, two stores) on one database: of many concurrent claims of a
    key exactly one wins, and the history holds only the winner's first status."""
    second = create_engine(db_engine.url.render_as_string(hide_password=False))
    try:
        one, two = DbMessageStore(session_factory(db_engine)), DbMessageStore(session_factory(second))
        msgs = [_msg(level=level, recipient=f"r{i}") for level in (0, 1) for i in range(4)]
        calls = [(m.key, store.claim(m, _queued(T0 + dt.timedelta(seconds=n))))
                 for n in range(6) for m in msgs for store in (one, two)]
        results = await asyncio.gather(*(c for _, c in calls))
        wins = {m.key: 0 for m in msgs}
        for (key, _), won in zip(calls, results, strict=True):
            wins[key] += won
        assert wins == {m.key: 1 for m in msgs}
        for m in msgs:
            record = await two.get(m.key)
            assert record is not None and len(record.history) == 1
            assert record.message == m
        assert len(await one.for_alarm(ALARM)) == len(msgs)
    finally:
        await second.dispose()


class Recording:
    """A channel that records what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, msg: OutgoingMessage) -> None:
        await asyncio.sleep(0)
        self.sent.append(msg.key)


async def test_two_notifiers_on_the_database_send_each_message_once(
        db_engine: AsyncEngine) -> None:
    config = parse_config({
        "contacts": [{"name": "ivanov", "email": "ivanov@gas.example"},
                     {"name": "petrov", "email": "petrov@gas.example"}],
        "rules": [{"name": "all", "levels": [
            {"after_s": 0, "targets": [{"channel": "email", "contact": "ivanov"}]},
            {"after_s": 900, "targets": [{"channel": "email", "contact": "petrov"}]}]}]})
    second = create_engine(db_engine.url.render_as_string(hide_password=False))
    channel = Recording()
    now = T0
    jobs = [InProcessJobs(), InProcessJobs()]
    stores = [DbMessageStore(session_factory(e)) for e in (db_engine, second)]
    notifiers = [Notifier(config, {"email": channel}, store, lambda: now, j)
                 for store, j in zip(stores, jobs, strict=True)]
    event = AlarmEvent(ALARM, EventKind.activated, T0, AlarmStatus.unack, AlarmMode.in_service,
                       True, Priority.critical, "station/GRP-12/p_out", "north", 7.9)
    try:
        await asyncio.gather(*(n.on_event(event) for n in notifiers for _ in range(3)))
        await asyncio.gather(*(j.join() for j in jobs))
        now = T0 + dt.timedelta(seconds=900)
        await asyncio.gather(*(n.tick() for n in notifiers))
        await asyncio.gather(*(j.join() for j in jobs))
        first, escalation = (message_key(ALARM, T0, 0, "email", "ivanov"),
                             message_key(ALARM, T0, 1, "email", "petrov"))
        assert sorted(channel.sent) == sorted([first, escalation])
        records = await stores[1].for_alarm(ALARM)
        assert [(r.key, [c.status.value for c in r.history]) for r in records] == [
            (first, ["queued", "sent"]), (escalation, ["queued", "sent"])]
    finally:
        for j in jobs:
            await j.close()
        await second.dispose()


async def test_service_reads_history_and_finds_stale_queued_messages(
        db_engine: AsyncEngine) -> None:
    db = session_factory(db_engine)
    stuck, sent = _msg(), _msg(level=1, recipient="petrov")
    async with db.begin() as s:
        for m in (stuck, sent):
            assert await stored.claim_message(s, m.key, m.alarm_id, m.level, m.channel, m.recipient,
                                              m.to_json(), {"status": "queued", "at": T0})
        await stored.add_status(s, sent.key, {"status": "sent", "at": T0, "attempt": 1})
    async with db() as s:
        found = await stored.message_record(s, sent.key)
        assert found is not None
        assert (found.status, found.attempts, found.level, found.channel, found.recipient) == (
            "sent", 1, 1, "email", "petrov")
        assert [c.status for c in found.history] == ["queued", "sent"]
        assert found.message == sent.to_json() and found.created_at == found.updated_at == T0
        assert [m.key for m in await stored.stale_queued(s, T0 + dt.timedelta(minutes=5))] == [
            stuck.key]
        assert await stored.stale_queued(s, T0) == []
        assert await stored.message_record(s, "no-such-key") is None
    async with db.begin() as s:
        with pytest.raises(LookupError):
            await stored.add_status(s, "no-such-key", {"status": "sent", "at": T0})
        with pytest.raises(ValueError, match="unknown notification status"):
            await stored.add_status(s, stuck.key, {"status": "delivered", "at": T0})
        with pytest.raises(ValueError, match="tz-aware"):
            await stored.add_status(s, stuck.key, {"status": "sent", "at": T0.replace(tzinfo=None)})


async def test_the_server_warns_at_start_about_messages_claimed_but_never_sent(
        db_engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = session_factory(db_engine)
    stuck = _msg(alarm_id=f"station/X-{uuid.uuid4().hex[:6]}/door:discrete")
    assert await DbMessageStore(db).claim(stuck, _queued())
    config = tmp_path / "notify.json"
    config.write_text("{}")
    for now, expected in ((T0 + dt.timedelta(minutes=4), False),
                          (T0 + dt.timedelta(minutes=6), True)):
        caplog.clear()
        notifications = Notifications(config, {}, db=db, clock=lambda now=now: now, tick_s=3600)
        assert isinstance(notifications.store, DbMessageStore)
        with caplog.at_level(logging.WARNING, logger="gasops.notifications"):
            await notifications.start()
            await notifications.stop()
        warned = [r.getMessage() for r in caplog.records if r.name == "gasops.notifications"]
        assert bool(warned) is expected, warned
        if expected:
            assert "1 message(s)" in warned[0] and stuck.key in warned[0]
    assert isinstance(Notifications(config, {}).store, InMemoryMessageStore)


# --- migration ---------------------------------------------------------------------------------


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_migration_0006_downgrades_and_upgrades_again(db_engine: AsyncEngine) -> None:
    cfg = alembic_config(db_engine.url.render_as_string(hide_password=False))

    def step(conn: Connection, direction: str, target: str) -> set[str]:
        cfg.attributes["connection"] = conn
        getattr(command, direction)(cfg, target)
        return _tables(conn)

    def drift(conn: Connection) -> list[object]:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                 orm.Base.metadata)
        return [d for d in diffs if _mentions(d, TABLES)]

    async with db_engine.connect() as conn:
        assert TABLES <= await conn.run_sync(_tables)
        assert await conn.run_sync(drift) == []  # the migration builds what the model says
    async with db_engine.begin() as conn:
        after_down = await conn.run_sync(step, "downgrade", "0005")
    assert not TABLES & after_down and {"alarm_events", "alarm_definitions"} <= after_down
    assert await current_revision(db_engine) == "0005"
    async with db_engine.begin() as conn:
        assert TABLES <= await conn.run_sync(step, "upgrade", "head")
    assert await current_revision(db_engine) == head_revision()
    store = DbMessageStore(session_factory(db_engine))  # the re-created tables work
    assert await store.claim(_msg(), _queued()) and not await store.claim(_msg(), _queued())


def _mentions(diff: object, tables: set[str]) -> bool:
    """Whether an autogenerate diff entry concerns one of `tables`."""
    if isinstance(diff, list | tuple):
        return any(_mentions(d, tables) for d in diff)
    if isinstance(diff, str):
        return diff in tables
    table = getattr(diff, "table", None)
    return getattr(diff, "name", None) in tables or getattr(table, "name", None) in tables
