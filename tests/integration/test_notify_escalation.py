"""The NOTIF-1 acceptance: alarm → e-mail → escalation by SMS, against real servers.

An unacknowledged critical alarm sends an e-mail that a real SMTP server (aiosmtpd) receives;
15 minutes later (an injected clock, advanced; `tick` called) the on-call person gets an SMS
through a real SMPP session with the loopback SMSC. Acknowledged in time, no SMS is sent. A
repeated event, or a second notifier sharing the store, sends nothing twice. A temporary SMTP
failure is retried with backoff until it succeeds. Finally the same through RQ: a real
redis-server and an `rq.SimpleWorker` run the delivery jobs.

Nothing sleeps: the clock is a variable, deliveries are awaited (`InProcessJobs.join`) and RQ
workers run in burst mode.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from rq.timeouts import TimerDeathPenalty

from realtime.alarms.model import AlarmEvent, AlarmMode, AlarmStatus, EventKind, Priority
from realtime.notify import (
    DeliveryFailed,
    DeliveryStatus,
    InMemoryMessageStore,
    NotificationConfig,
    Notifier,
    OutgoingMessage,
    message_key,
    parse_config,
)
from realtime.notify.channels import SmsChannel, SmtpChannel, build_channel
from realtime.notify.jobs import InProcessJobs, RqJobs
from realtime.notify.model import Channel
from realtime.notify.sms import SmppSmsGateway
from tests.integration.test_notify_channels import SmppReceiver, SmtpSink, smtp_server

MSK = dt.timezone(dt.timedelta(hours=3))
T0 = dt.datetime(2024, 3, 4, 21, 0, tzinfo=MSK).astimezone(dt.UTC)  # a Monday night
ALARM = "station/GRP-12/p_out:hihi"


class Clock:
    """The injected clock: `now` moves only when the test says so."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


CONFIG: dict[str, Any] = {
    "timezone": "Europe/Moscow",
    "retry": {"max_attempts": 3, "base_delay_s": 30, "factor": 2, "max_delay_s": 600},
    "contacts": [
        {"name": "ivanov", "email": "ivanov@gas.example", "phone": "+79160000001"},
        {"name": "petrov", "email": "petrov@gas.example", "phone": "+79160000002", "language": "en"},
    ],
    "rosters": [{"name": "dispatch", "shifts": [
        {"start": "08:00", "end": "20:00", "contacts": ["ivanov"]},
        {"start": "20:00", "end": "08:00", "contacts": ["petrov"]},
    ]}],
    "rules": [{"name": "critical", "min_priority": "critical", "levels": [
        {"after_s": 0, "targets": [{"channel": "email", "contact": "ivanov"}]},
        {"after_s": 900, "targets": [{"channel": "sms", "roster": "dispatch"}]},
    ]}],
}


def alarm(kind: EventKind, ts: dt.datetime = T0, status: AlarmStatus = AlarmStatus.unack,
          user: str | None = None) -> AlarmEvent:
    return AlarmEvent(ALARM, kind, ts, status, AlarmMode.in_service, True, Priority.critical,
                      "station/GRP-12/p_out", "north", 7.9, user=user,
                      message="Давление на выходе ГРП-12 выше аварийного")


EMAIL_KEY = message_key(ALARM, T0, 0, "email", "ivanov")
SMS_KEY = message_key(ALARM, T0, 1, "sms", "petrov")


@pytest.fixture(scope="module")
def config() -> NotificationConfig:
    return parse_config(CONFIG)


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    with smtp_server(sink) as port:
        yield sink, port


@pytest.fixture
def sink(smtp: tuple[SmtpSink, int]) -> Iterator[SmtpSink]:
    s, _ = smtp
    s.mails.clear()
    s.replies.clear()
    s.data_commands = 0
    yield s
    s.replies.clear()


@pytest.fixture
async def smsc() -> AsyncIterator[SmppReceiver]:
    receiver = SmppReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.close()


@pytest.fixture
def channels(smtp: tuple[SmtpSink, int], smsc: SmppReceiver) -> dict[str, Channel]:
    return {"email": SmtpChannel("127.0.0.1", smtp[1], "scada@gas.example", timeout_s=5),
            "sms": SmsChannel(SmppSmsGateway("127.0.0.1", smsc.port, "gasops", "secret",
                                             "GASOPS", timeout_s=5))}


class World:
    """A notifier with in-process jobs, an in-memory store and the injected clock."""

    def __init__(self, config: NotificationConfig, channels: dict[str, Channel],
                 store: InMemoryMessageStore | None = None, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.store = store or InMemoryMessageStore()
        self.jobs = InProcessJobs()
        self.notifier = Notifier(config, channels, self.store, self.clock, self.jobs)

    async def event(self, ev: AlarmEvent) -> None:
        await self.notifier.on_event(ev)
        await self.jobs.join()

    async def at(self, seconds_after_t0: float) -> None:
        """Move the clock to T0 + `seconds_after_t0`, tick, and wait for the deliveries."""
        self.clock.now = T0 + dt.timedelta(seconds=seconds_after_t0)
        await self.notifier.tick()
        await self.jobs.join()

    async def statuses(self, key: str) -> list[tuple[str, int, float]]:
        """(status, attempt, seconds after T0) of each history entry of `key`."""
        record = await self.store.get(key)
        assert record is not None, f"no message {key}"
        return [(c.status.value, c.attempt, (c.at - T0).total_seconds()) for c in record.history]


@pytest.fixture
async def world(config: NotificationConfig, channels: dict[str, Channel]) -> AsyncIterator[World]:
    w = World(config, channels)
    try:
        yield w
    finally:
        await w.jobs.close()


async def test_unacknowledged_alarm_escalates_from_email_to_sms_of_the_on_call_person(
        world: World, sink: SmtpSink, smsc: SmppReceiver) -> None:
    await world.event(alarm(EventKind.activated))
    [mail] = sink.mails
    assert mail.rcpt_tos == ["ivanov@gas.example"]
    assert mail.message["Subject"] == "Авария (критический): Давление на выходе ГРП-12 выше аварийного"
    assert "Время: 04.03.2024 21:00:00 MSK" in mail.message.get_content()
    assert await world.statuses(EMAIL_KEY) == [("queued", 0, 0), ("sent", 1, 0)]
    assert [(p.channel, p.contact.name) for p in world.notifier.pending(ALARM)] == [("sms", "petrov")]

    await world.at(899)
    assert smsc.submits == [] and len(sink.mails) == 1

    await world.at(900)
    assert [s.destination_addr for s in smsc.submits] == ["79160000002"]  # petrov: night shift
    [sms] = smsc.texts()
    assert sms.startswith("CRITICAL NOT ACKED 15min: Давление") and sms.endswith("=7.9; 21:00")
    assert len(sms) <= 70
    assert await world.statuses(SMS_KEY) == [("queued", 0, 900), ("sent", 1, 900)]
    assert world.notifier.pending() == []

    await world.event(alarm(EventKind.acknowledged, T0 + dt.timedelta(seconds=950),
                            AlarmStatus.acked, "petrov"))
    await world.at(5000)
    assert len(smsc.submits) == 1 and len(sink.mails) == 1


async def test_acknowledged_in_time_no_escalation_is_sent(world: World, sink: SmtpSink,
                                                         smsc: SmppReceiver) -> None:
    await world.event(alarm(EventKind.activated))
    await world.at(300)
    await world.event(alarm(EventKind.acknowledged, world.clock(), AlarmStatus.acked, "ivanov"))
    assert world.notifier.pending() == []
    await world.at(900)
    await world.at(3600)
    assert smsc.submits == [] and smsc.binds == []
    assert len(sink.mails) == 1
    record = await world.store.get(SMS_KEY)
    assert record is not None and record.status is DeliveryStatus.cancelled
    assert record.last.reason == "alarm acknowledged" and len(record.history) == 1


@pytest.mark.parametrize(("kind", "status"), [
    (EventKind.shelved, AlarmStatus.unack), (EventKind.suppressed, AlarmStatus.unack),
    (EventKind.out_of_service, AlarmStatus.unack), (EventKind.cleared, AlarmStatus.normal)])
async def test_shelving_suppression_or_a_normal_clear_ends_the_escalation(
        world: World, smsc: SmppReceiver, sink: SmtpSink, kind: EventKind,
        status: AlarmStatus) -> None:
    await world.event(alarm(EventKind.activated))
    await world.event(alarm(kind, T0 + dt.timedelta(seconds=60), status))
    await world.at(900)
    assert smsc.submits == []
    record = await world.store.get(SMS_KEY)
    assert record is not None and record.status is DeliveryStatus.cancelled


async def test_an_unacknowledged_return_to_normal_keeps_escalating(
        world: World, smsc: SmppReceiver, sink: SmtpSink) -> None:
    await world.event(alarm(EventKind.activated))
    await world.event(alarm(EventKind.cleared, T0 + dt.timedelta(seconds=60), AlarmStatus.rtn_unack))
    await world.at(900)
    assert len(smsc.submits) == 1


async def test_a_repeated_event_or_a_second_process_sends_nothing_twice(
        config: NotificationConfig, channels: dict[str, Channel], sink: SmtpSink,
        smsc: SmppReceiver) -> None:
    store = InMemoryMessageStore()  # what both processes share (the database, in production)
    clock = Clock()
    one, two = World(config, channels, store, clock), World(config, channels, store, clock)
    try:
        await one.event(alarm(EventKind.activated))
        await one.event(alarm(EventKind.activated))  # the bus delivered it twice
        await two.event(alarm(EventKind.activated))  # the other process saw it too
        assert len(sink.mails) == 1 and sink.data_commands == 1
        assert len(two.notifier.pending()) == 1  # both plan the escalation ...
        await asyncio.gather(one.at(900), two.at(900))
        assert len(smsc.submits) == 1  # ... one sends it
        assert await one.statuses(SMS_KEY) == [("queued", 0, 900), ("sent", 1, 900)]
    finally:
        await one.jobs.close()
        await two.jobs.close()


async def test_a_temporary_smtp_failure_is_retried_with_backoff_until_sent(
        world: World, sink: SmtpSink) -> None:
    sink.replies.extend(["451 4.3.0 Try again later", "421 4.4.2 Connection dropped"])
    await world.event(alarm(EventKind.activated))
    assert sink.mails == [] and world.notifier.retries_waiting == 1
    record = await world.store.get(EMAIL_KEY)
    assert record is not None and record.status is DeliveryStatus.retrying
    assert record.last.next_attempt_at == T0 + dt.timedelta(seconds=30)
    assert "451" in record.last.reason

    await world.at(29)
    assert sink.data_commands == 1  # not yet
    await world.at(30)
    assert sink.data_commands == 2 and sink.mails == []
    await world.at(30 + 59)
    assert sink.data_commands == 2  # the second delay is twice the first
    await world.at(30 + 60)
    assert len(sink.mails) == 1
    assert await world.statuses(EMAIL_KEY) == [
        ("queued", 0, 0), ("retrying", 1, 0), ("retrying", 2, 30), ("sent", 3, 90)]


async def test_permanent_failures_and_exhausted_retries_fail(world: World, sink: SmtpSink) -> None:
    sink.replies.append("550 5.1.1 No such mailbox")
    await world.event(alarm(EventKind.activated))
    assert await world.statuses(EMAIL_KEY) == [("queued", 0, 0), ("failed", 1, 0)]
    assert world.notifier.retries_waiting == 0

    sink.replies.extend(["451 4.3.0 busy"] * 3)
    later = T0 + dt.timedelta(hours=1)
    world.clock.now = later
    await world.event(alarm(EventKind.activated, later))  # a new activation: new messages
    for s in (30, 90):
        await world.at(3600 + s)
    key = message_key(ALARM, later, 0, "email", "ivanov")
    assert [(st, n) for st, n, _ in await world.statuses(key)] == [
        ("queued", 0), ("retrying", 1), ("retrying", 2), ("failed", 3)]
    assert sink.mails == []


async def test_a_crashing_channel_is_logged_and_recorded_not_lost(
        config: NotificationConfig, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def send(self, msg: OutgoingMessage) -> None:
            raise RuntimeError("bug in a channel")

    class Refusing:
        async def send(self, msg: OutgoingMessage) -> None:
            raise DeliveryFailed("no route", permanent=True)

    w = World(config, {"email": Broken(), "sms": Refusing()})
    try:
        with caplog.at_level(logging.ERROR, logger="realtime.notify.jobs"):
            await w.event(alarm(EventKind.activated))
        record = await w.store.get(EMAIL_KEY)
        assert record is not None and record.status is DeliveryStatus.retrying
        assert record.last.reason == "unexpected error: RuntimeError('bug in a channel')"
        assert any("bug in a channel" in (r.exc_text or "") for r in caplog.records)
        await w.at(900)
        assert await w.statuses(SMS_KEY) == [("queued", 0, 900), ("failed", 1, 900)]
    finally:
        await w.jobs.close()


def test_a_notifier_refuses_a_config_using_a_channel_it_was_not_given(
        config: NotificationConfig) -> None:
    with pytest.raises(ValueError, match=r"\['sms'\]"):
        Notifier(config, {"email": SmtpChannel("127.0.0.1", 25, "a@b.c")}, InMemoryMessageStore(),
                 Clock(), InProcessJobs())


# --------------------------------------------------------------------------- RQ

class ThreadWorker(SimpleWorker):
    """A SimpleWorker that can run in a thread: no signal handlers, a timer for timeouts."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        """Signals belong to the main thread; the test stops the worker by burst mode."""


def run_worker(redis_url: str, queue_name: str) -> bool:
    """Run a burst worker on `queue_name` (in a thread); whether it ran any job."""
    connection = Redis.from_url(redis_url)
    try:
        worker = ThreadWorker([Queue(queue_name, connection=connection)], connection=connection)
        return worker.work(burst=True, logging_level="WARNING")
    finally:
        connection.close()


async def test_rq_jobs_deliver_through_a_worker_and_report_back(
        redis_url: str, config: NotificationConfig, sink: SmtpSink, smsc: SmppReceiver,
        smtp: tuple[SmtpSink, int]) -> None:
    specs = {"email": {"type": "smtp", "host": "127.0.0.1", "port": smtp[1],
                       "sender": "scada@gas.example", "timeout_s": 5},
             "sms": {"type": "sms_smpp", "host": "127.0.0.1", "port": smsc.port, "system_id": "gasops",
                     "password": "secret", "source_addr": "GASOPS", "timeout_s": 5}}
    queue_name = f"notify-test-{uuid.uuid4().hex[:8]}"
    jobs = RqJobs(redis_url, queue_name, specs)
    clock, store = Clock(), InMemoryMessageStore()
    notifier = Notifier(config, {k: build_channel(v) for k, v in specs.items()}, store, clock, jobs)
    sink.replies.append("451 4.3.0 Try again later")  # the first attempt fails, in the worker
    redis = Redis.from_url(redis_url)
    try:
        await notifier.on_event(alarm(EventKind.activated))
        assert jobs.outstanding == 1 and sink.data_commands == 0  # enqueued, not run
        [queued] = Queue(queue_name, connection=redis).jobs
        [payload] = queued.args
        assert json.loads(json.dumps(payload)) == payload  # JSON-able all the way
        assert payload["message"]["to"] == "ivanov@gas.example" and payload["attempt"] == 1

        assert await asyncio.to_thread(run_worker, redis_url, queue_name)
        await notifier.tick()
        record = await store.get(EMAIL_KEY)
        assert record is not None and record.status is DeliveryStatus.retrying
        assert "451" in record.last.reason

        clock.advance(30)
        await notifier.tick()  # the retry is enqueued as attempt 2
        assert await asyncio.to_thread(run_worker, redis_url, queue_name)
        await notifier.tick()
        [mail] = sink.mails
        assert mail.rcpt_tos == ["ivanov@gas.example"]
        assert mail.message["Subject"].startswith("Авария (критический)")
        assert [(c.status.value, c.attempt) for c in (await store.get(EMAIL_KEY)).history] == [  # type: ignore[union-attr]
            ("queued", 0), ("retrying", 1), ("sent", 2)]
        assert jobs.outstanding == 0
        assert not await asyncio.to_thread(redis.exists, jobs.status_hash)  # results are taken

        clock.advance(870)  # T0 + 900 s: the SMS escalation, also through RQ
        await notifier.tick()
        assert await asyncio.to_thread(run_worker, redis_url, queue_name)
        await notifier.tick()
        assert smsc.texts()[0].startswith("CRITICAL NOT ACKED 15min")
        assert (await store.get(SMS_KEY)).status is DeliveryStatus.sent  # type: ignore[union-attr]
    finally:
        await jobs.close()
        redis.close()
