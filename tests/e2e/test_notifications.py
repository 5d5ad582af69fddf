"""Alarm notifications through the running server: a real SMTP server (aiosmtpd) receives the
first-level e-mail of an unacknowledged alarm and, after the escalation delay, the second-level
one; acknowledging in time stops the escalation; `alarmNotifications` lists the messages with
their delivery history, kept in the database. (Escalation with an injected clock, SMS over
SMPP, retries and RQ are covered in tests/integration/test_notify_escalation.py.)"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator

import pytest

from tests._live import LiveServer, start_live_server
from tests.e2e._network import seed_stations, station_records
from tests.e2e.test_alarms_api import ACK, _add_user, _login, _seed_alarms
from tests.e2e.test_telemetry_api import feed
from tests.integration.test_notify_channels import SmtpSink, smtp_server

ESCALATE_AFTER_S = 3
NOTIFICATIONS = """query($id: String!) { alarmNotifications(alarmId: $id) { key level channel
    recipient to status attempts history { status at attempt reason nextAttemptAt } } }"""


@pytest.fixture(scope="module")
def mail() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    with smtp_server(sink) as port:
        yield sink, port


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory,
         mail: tuple[SmtpSink, int]) -> Iterator[LiveServer]:
    var = tmp_path_factory.mktemp("notify")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    seed_stations(url, station_records("GRP-01", "NORTH") + station_records("GRP-03", "NORTH")[1:])
    _seed_alarms(url)
    config = var / "notify.json"
    config.write_text(json.dumps({
        "timezone": "Europe/Moscow",
        "contacts": [{"name": "ivanov", "email": "ivanov@gas.test", "language": "ru"},
                     {"name": "petrov", "email": "petrov@gas.test", "language": "en"}],
        "rules": [{"name": "north-high", "areas": ["NORTH"], "min_priority": "high",
                   "levels": [{"after_s": 0, "targets": [{"channel": "email", "contact": "ivanov"}]},
                              {"after_s": ESCALATE_AFTER_S,
                               "targets": [{"channel": "email", "contact": "petrov"}]}]}]}))
    server = start_live_server(var, url, notify_config_file=config, notify_channels={
        "email": {"type": "smtp", "host": "127.0.0.1", "port": mail[1],
                  "sender": "scada@gas.test"}})
    try:
        yield server
    finally:
        server.stop()


def _mails_to(sink: SmtpSink, address: str, about: str) -> list[str]:
    return [str(m.message["Subject"]) + "\n" + m.message.get_content() for m in sink.mails
            if address in m.rcpt_tos and about in m.message.get_content()]


def _wait(predicate: object, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("not in time")


def test_an_unacknowledged_alarm_is_mailed_then_escalated(live: LiveServer,
                                                          mail: tuple[SmtpSink, int]) -> None:
    sink, _ = mail
    feed(live, {"station/GRP-01/door": False})
    t0 = time.monotonic()
    feed(live, {"station/GRP-01/door": True})
    _wait(lambda: _mails_to(sink, "ivanov@gas.test", "GRP-01"), 5)
    first = time.monotonic() - t0
    assert not _mails_to(sink, "petrov@gas.test", "GRP-01")
    _wait(lambda: _mails_to(sink, "petrov@gas.test", "GRP-01"), ESCALATE_AFTER_S + 5)
    second = time.monotonic() - t0
    assert first < 3 and ESCALATE_AFTER_S <= second < ESCALATE_AFTER_S + 5, (first, second)
    (ru,) = _mails_to(sink, "ivanov@gas.test", "GRP-01")
    assert "ВЫСОКИЙ" in ru.upper() or "высок" in ru.lower()  # Russian template, priority named


def test_acknowledging_in_time_stops_the_escalation(live: LiveServer,
                                                    mail: tuple[SmtpSink, int]) -> None:
    sink, _ = mail
    feed(live, {"station/GRP-03/door": False})
    feed(live, {"station/GRP-03/door": True})
    _wait(lambda: _mails_to(sink, "ivanov@gas.test", "GRP-03"), 5)
    alarms = live.gql('{ activeAlarms(areaId: "NORTH") { id } }', role="operator")
    door = next(a["id"] for a in alarms["data"]["activeAlarms"] if a["id"].startswith(
        "station/GRP-03/door"))
    done = live.gql(ACK, {"id": door, "c": "seen"}, role="operator")
    assert done["data"]["acknowledgeAlarm"]["__typename"] == "AlarmActionSuccess"
    time.sleep(ESCALATE_AFTER_S + 1.5)  # past the escalation delay: nothing may come
    assert _mails_to(sink, "petrov@gas.test", "GRP-03") == []
    assert len(_mails_to(sink, "ivanov@gas.test", "GRP-03")) == 1  # and no duplicate


def _door_alarm(live: LiveServer, station: str) -> str:
    alarms = live.gql('{ activeAlarms(areaId: "NORTH") { id } }', role="operator")
    return next(a["id"] for a in alarms["data"]["activeAlarms"]
                if a["id"].startswith(f"station/{station}/door"))


def test_the_messages_of_an_alarm_and_their_delivery_are_listed(
        live: LiveServer, mail: tuple[SmtpSink, int]) -> None:
    sink, _ = mail
    if not _mails_to(sink, "petrov@gas.test", "GRP-01"):  # run on its own: escalate first
        test_an_unacknowledged_alarm_is_mailed_then_escalated(live, mail)
    door = _door_alarm(live, "GRP-01")

    def notices(role: str | None = "operator", token: str | None = None) -> list[dict[str, object]]:
        body = live.gql(NOTIFICATIONS, {"id": door}, role=role, token=token)
        assert "errors" not in body, body
        return body["data"]["alarmNotifications"]  # type: ignore[no-any-return]

    _wait(lambda: [n["status"] for n in notices()] == ["sent", "sent"], 5)
    got = notices()
    assert [(n["level"], n["channel"], n["recipient"], n["to"], n["attempts"]) for n in got] == [
        (0, "email", "ivanov", "ivanov@gas.test", 1), (1, "email", "petrov", "petrov@gas.test", 1)]
    assert all(n["key"].startswith(door + "@") for n in got)  # type: ignore[union-attr]
    histories = [[(h["status"], h["attempt"], h["reason"], h["nextAttemptAt"])
                  for h in n["history"]] for n in got]  # type: ignore[attr-defined]
    assert histories == [[("queued", 0, "", None), ("sent", 1, "", None)]] * 2
    queued_at = [dt.datetime.fromisoformat(n["history"][0]["at"]) for n in got]  # type: ignore[index]
    assert ESCALATE_AFTER_S <= (queued_at[1] - queued_at[0]).total_seconds() < ESCALATE_AFTER_S + 3
    if _mails_to(sink, "ivanov@gas.test", "GRP-03"):  # acknowledged in time: escalation cancelled
        acked = live.gql(NOTIFICATIONS, {"id": _door_alarm(live, "GRP-03")}, role="dispatcher")
        assert [(n["level"], n["status"], n["history"][-1]["reason"])
                for n in acked["data"]["alarmNotifications"]] == [
            (0, "sent", ""), (1, "cancelled", "alarm acknowledged")]

    assert notices(role="admin") == got
    _add_user(live.settings.database_url, "nowhere-operator", "operator", [])
    assert notices(role=None, token=_login(live, "nowhere-operator")) == []  # not in its areas
    denied = live.gql(NOTIFICATIONS, {"id": door}, role="consumer")
    assert denied["data"] is None and denied["errors"]
    unknown = live.gql(NOTIFICATIONS, {"id": "station/NONE/door:discrete"}, role="operator")
    assert unknown["data"]["alarmNotifications"] == []
