"""Each notification channel against a real server on loopback.

- e-mail: `SmtpChannel` against aiosmtpd (a real SMTP server in its own thread);
- SMS over SMPP: `SmppSmsGateway` against `SmppReceiver`, a minimal SMPP 3.4 SMSC written here
  on asyncio streams. It parses the PDUs itself (not with smpplib, so the client is checked
  against an independent reading of the spec): bind_transmitter, submit_sm, unbind,
  enquire_link, generic_nack for anything else;
- SMS over HTTP, webhooks, PBX voice hand-off: a Starlette app under uvicorn in a thread, whose
  route ``/{name}/{status}`` records the request and answers `status`.

The receivers are reused by ``test_notify_escalation.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from realtime.notify import DeliveryFailed, OutgoingMessage
from realtime.notify.channels import (
    PbxVoiceChannel,
    SmsChannel,
    SmtpChannel,
    WebhookChannel,
    build_channel,
)
from realtime.notify.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from realtime.notify.sms import HttpSmsGateway, SmppSmsGateway
from tests._services import free_port

T0 = dt.datetime(2024, 3, 4, 7, 5, tzinfo=dt.UTC)
RU_SUBJECT = "Авария (критический): Давление на выходе ГРП-12 выше нормы"
RU_BODY = "Сработала авария.\n\nЗначение: 7.25 бар\nРайон: Северный — «ГРП-12»\n"


def message(channel: str = "email", to: str = "ivanov@gas.example", **kw: Any) -> OutgoingMessage:
    fields: dict[str, Any] = dict(
        key=f"station/GRP-12/p_out:hi@{T0.isoformat()}#L0/{channel}/ivanov",
        alarm_id="station/GRP-12/p_out:hi", level=0, channel=channel, recipient="ivanov", to=to,
        language="ru", subject=RU_SUBJECT, body=RU_BODY,
        short="КРИТ: Давление выше нормы; station/GRP-12/p_out=7.25; 10:05",
        data={"type": "alarm", "alarm_id": "station/GRP-12/p_out:hi", "priority": 4})
    fields.update(kw)
    return OutgoingMessage(**fields)


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    return free_port()


# --------------------------------------------------------------------------- SMTP

@dataclass
class Mail:
    """One message as the SMTP server received it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated: bool


class SmtpSink:
    """An aiosmtpd handler keeping what it receives; `replies` scripts the next DATA answers."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.replies: deque[str] = deque()
        self.data_commands = 0

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.data_commands += 1
        if self.replies:
            return self.replies.popleft()
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.mails.append(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), parsed,
                               bool(session.authenticated)))
        return "250 2.0.0 OK"


@contextmanager
def smtp_server(sink: SmtpSink, **kwargs: Any) -> Iterator[int]:
    """aiosmtpd on a free loopback port (in its own thread and loop); yields the port."""
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    try:
        yield int(controller.port)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    with smtp_server(sink) as port:
        yield sink, port


async def test_smtp_delivers_russian_subject_and_body(smtp: tuple[SmtpSink, int]) -> None:
    sink, port = smtp
    before = len(sink.mails)
    channel = SmtpChannel("127.0.0.1", port, "SCADA <scada@gas.example>", timeout_s=5,
                          clock=lambda: T0)
    await channel.send(message())
    mail = sink.mails[before]
    assert mail.rcpt_tos == ["ivanov@gas.example"]
    assert mail.mail_from == "scada@gas.example"
    assert mail.message["To"] == "ivanov@gas.example"
    assert mail.message["Subject"] == RU_SUBJECT
    assert mail.message.get_content() == RU_BODY
    assert mail.message["Date"] == "Mon, 04 Mar 2024 07:05:00 +0000"
    assert not mail.authenticated
    await channel.send(message())  # a retry carries the same Message-ID: receivers can dedup
    assert sink.mails[before + 1].message["Message-ID"] == mail.message["Message-ID"]


def test_smtp_logs_in_and_refused_credentials_are_permanent() -> None:
    def authenticator(server: Any, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data == (b"notify", b"s3cret")
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 235/535

    sink = SmtpSink()
    with smtp_server(sink, authenticator=authenticator, auth_require_tls=False) as port:
        good = SmtpChannel("127.0.0.1", port, "scada@gas.example", "notify", "s3cret", timeout_s=5)
        asyncio.run(good.send(message()))
        bad = SmtpChannel("127.0.0.1", port, "scada@gas.example", "notify", "guess", timeout_s=5)
        with pytest.raises(DeliveryFailed) as err:
            asyncio.run(bad.send(message()))
    assert [m.authenticated for m in sink.mails] == [True]
    assert err.value.permanent and "535" in err.value.reason


@pytest.mark.parametrize(("reply", "permanent"), [
    ("451 4.3.0 Mailbox busy, try again later", False),
    ("554 5.7.1 Message rejected", True),
])
async def test_smtp_replies_decide_temporary_or_permanent(
        smtp: tuple[SmtpSink, int], reply: str, permanent: bool) -> None:
    sink, port = smtp
    sink.replies.append(reply)
    with pytest.raises(DeliveryFailed) as err:
        await SmtpChannel("127.0.0.1", port, "scada@gas.example", timeout_s=5).send(message())
    assert err.value.permanent is permanent
    assert reply.split()[0] in err.value.reason


async def test_smtp_connection_refused_is_temporary() -> None:
    with pytest.raises(DeliveryFailed) as err:
        await SmtpChannel("127.0.0.1", closed_port(), "scada@gas.example", timeout_s=5).send(message())
    assert not err.value.permanent


# --------------------------------------------------------------------------- SMPP

BIND_TRANSMITTER, SUBMIT_SM, UNBIND, ENQUIRE_LINK = 0x02, 0x04, 0x06, 0x15
RESP = 0x80000000
GENERIC_NACK = 0x80000000
ESME_RINVPASWD, ESME_RINVCMDID = 0x0E, 0x03


@dataclass
class Submit:
    """One submit_sm as the SMSC parsed it."""

    source_ton: int
    source_npi: int
    source_addr: str
    dest_ton: int
    dest_npi: int
    destination_addr: str
    esm_class: int
    data_coding: int
    short_message: bytes

    def payload(self) -> tuple[bytes, tuple[int, int, int] | None]:
        """The user data without its concatenation header, and (ref, total, seq) if any."""
        if not self.esm_class & 0x40:
            return self.short_message, None
        udhl = self.short_message[0]
        udh = self.short_message[1:1 + udhl]
        assert udh[:2] == b"\x00\x03", "expected an 8-bit concatenation IE"
        return self.short_message[1 + udhl:], (udh[2], udh[3], udh[4])


@dataclass
class SmppReceiver:
    """A minimal SMPP 3.4 SMSC on loopback (asyncio); records binds, submits and unbinds."""

    system_id: str = "gasops"
    password: str = "secret"
    submit_status: int = 0  # what submit_sm_resp answers (0 = accepted)
    enquire_before_resp: bool = False  # send an enquire_link before each submit_sm_resp
    binds: list[tuple[str, str, int]] = field(default_factory=list)  # system_id, password, status
    submits: list[Submit] = field(default_factory=list)
    unbinds: int = 0
    enquire_link_resps: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _next_id: int = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    def texts(self) -> list[str]:
        """The decoded texts, concatenated parts joined, in arrival order."""
        out: list[str] = []
        pending: dict[int, dict[int, bytes]] = {}
        for s in self.submits:
            data, concat = s.payload()
            codec = "utf-16-be" if s.data_coding == 8 else "ascii"
            if concat is None:
                out.append(data.decode(codec))
                continue
            ref, total, seq = concat
            pending.setdefault(ref, {})[seq] = data
            if len(pending[ref]) == total:
                parts = pending.pop(ref)
                out.append(b"".join(parts[i] for i in range(1, total + 1)).decode(codec))
        return out

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        seq_out = 0x1000
        try:
            while True:
                header = await reader.readexactly(16)
                length, command, _status, seq = struct.unpack(">IIII", header)
                body = await reader.readexactly(length - 16)
                if command == BIND_TRANSMITTER:
                    system_id, password, *_ = _cstrings(body, 3)
                    ok = (system_id, password) == (self.system_id, self.password)
                    status = 0 if ok else ESME_RINVPASWD
                    self.binds.append((system_id, password, status))
                    _send(writer, RESP | BIND_TRANSMITTER, status, seq, _c("smsc") if ok else b"")
                elif command == SUBMIT_SM:
                    self.submits.append(_parse_submit(body))
                    if self.enquire_before_resp:
                        seq_out += 1
                        _send(writer, ENQUIRE_LINK, 0, seq_out, b"")
                    self._next_id += 1
                    ok = self.submit_status == 0
                    _send(writer, RESP | SUBMIT_SM, self.submit_status, seq,
                          _c(f"msg-{self._next_id}") if ok else b"")
                elif command == RESP | ENQUIRE_LINK:
                    self.enquire_link_resps += 1
                elif command == ENQUIRE_LINK:
                    _send(writer, RESP | ENQUIRE_LINK, 0, seq, b"")
                elif command == UNBIND:
                    self.unbinds += 1
                    _send(writer, RESP | UNBIND, 0, seq, b"")
                else:
                    _send(writer, GENERIC_NACK, ESME_RINVCMDID, seq, b"")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        finally:
            self._writers.discard(writer)
            writer.close()


def _c(text: str) -> bytes:
    return text.encode("ascii") + b"\x00"


def _send(writer: asyncio.StreamWriter, command: int, status: int, seq: int, body: bytes) -> None:
    writer.write(struct.pack(">IIII", 16 + len(body), command, status, seq) + body)


def _cstrings(body: bytes, n: int, start: int = 0) -> list[Any]:
    """`n` NUL-terminated strings from `start`, then the offset after them."""
    out: list[Any] = []
    pos = start
    for _ in range(n):
        end = body.index(b"\x00", pos)
        out.append(body[pos:end].decode("ascii"))
        pos = end + 1
    return [*out, pos]


def _parse_submit(body: bytes) -> Submit:
    _service_type, pos = _cstrings(body, 1)
    source_ton, source_npi = body[pos], body[pos + 1]
    source_addr, pos = _cstrings(body, 1, pos + 2)
    dest_ton, dest_npi = body[pos], body[pos + 1]
    destination, pos = _cstrings(body, 1, pos + 2)
    esm_class = body[pos]  # then protocol_id, priority_flag
    _schedule, _validity, pos = _cstrings(body, 2, pos + 3)
    # registered_delivery, replace_if_present, data_coding, sm_default_msg_id, sm_length
    data_coding, sm_length = body[pos + 2], body[pos + 4]
    short_message = body[pos + 5:pos + 5 + sm_length]
    return Submit(source_ton, source_npi, source_addr, dest_ton, dest_npi, destination, esm_class,
                  data_coding, short_message)


@pytest.fixture
async def smsc() -> AsyncIterator[SmppReceiver]:
    receiver = SmppReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.close()


def smpp_gateway(receiver: SmppReceiver, password: str = "secret") -> SmppSmsGateway:
    return SmppSmsGateway("127.0.0.1", receiver.port, "gasops", password, "GASOPS", timeout_s=5)


async def test_smpp_submits_cyrillic_as_ucs2(smsc: SmppReceiver) -> None:
    text = "КРИТ: Давление на выходе ГРП-12 выше нормы; 7.25 бар"
    await SmsChannel(smpp_gateway(smsc)).send(message("sms", "+79160000001", short=text))
    assert smsc.binds == [("gasops", "secret", 0)]
    [submit] = smsc.submits
    assert (submit.destination_addr, submit.dest_ton, submit.dest_npi) == ("79160000001", 1, 1)
    assert (submit.source_addr, submit.source_ton) == ("GASOPS", 5)  # alphanumeric sender
    assert submit.data_coding == 8 and submit.esm_class == 0
    assert smsc.texts() == [text]
    assert smsc.unbinds == 1


async def test_smpp_splits_a_long_text_into_concatenated_parts(smsc: SmppReceiver) -> None:
    text = "Авария не квитирована в течение 15 минут. " * 4  # 168 characters: 3 UCS-2 parts
    await smpp_gateway(smsc).send_sms("+79160000002", text, "id-2")
    assert len(smsc.submits) == 3
    assert all(s.esm_class & 0x40 and s.data_coding == 8 for s in smsc.submits)
    assert [s.payload()[1][1:] for s in smsc.submits] == [(3, 1), (3, 2), (3, 3)]  # type: ignore[index]
    assert smsc.texts() == [text]


async def test_smpp_sends_gsm_text_with_the_default_coding(smsc: SmppReceiver) -> None:
    await smpp_gateway(smsc).send_sms("+79160000003", "CRITICAL: outlet pressure high", "id-3")
    assert [s.data_coding for s in smsc.submits] == [0]
    assert smsc.texts() == ["CRITICAL: outlet pressure high"]


async def test_smpp_wrong_password_is_a_permanent_failure(smsc: SmppReceiver) -> None:
    with pytest.raises(DeliveryFailed) as err:
        await smpp_gateway(smsc, password="wrong").send_sms("+79160000001", "текст", "id-4")
    assert err.value.permanent
    assert "Invalid Password" in err.value.reason
    assert smsc.binds == [("gasops", "wrong", ESME_RINVPASWD)] and smsc.submits == []


async def test_smpp_answers_an_enquire_link_while_waiting_for_the_submit_resp(
        smsc: SmppReceiver) -> None:
    smsc.enquire_before_resp = True
    await smpp_gateway(smsc).send_sms("+79160000001", "проверка", "id-5")
    assert smsc.enquire_link_resps == 1 and smsc.texts() == ["проверка"]


async def test_smpp_throttling_is_temporary_and_an_unreachable_smsc_too(smsc: SmppReceiver) -> None:
    smsc.submit_status = 0x58  # ESME_RTHROTTLED
    with pytest.raises(DeliveryFailed) as err:
        await smpp_gateway(smsc).send_sms("+79160000001", "текст", "id-6")
    assert not err.value.permanent and "Throttling" in err.value.reason
    gone = SmppSmsGateway("127.0.0.1", closed_port(), "gasops", "secret", "GASOPS", timeout_s=5)
    with pytest.raises(DeliveryFailed) as err:
        await gone.send_sms("+79160000001", "текст", "id-7")
    assert not err.value.permanent


# --------------------------------------------------------------------------- HTTP

@dataclass
class HttpRequest:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    """Starlette under uvicorn in a thread: POST ``/{name}/{status}`` is recorded, answers status."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []
        self.port = free_port()
        app = Starlette(routes=[Route("/{name}/{status:int}", self._endpoint, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", ws="none", http="h11")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="http-receiver", daemon=True)

    def url(self, name: str, status: int) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/{status}"

    async def _endpoint(self, request: Request) -> JSONResponse:
        self.requests.append(HttpRequest(request.url.path, dict(request.headers), await request.body()))
        status = request.path_params["status"]
        return JSONResponse({"ok": status < 300}, status_code=status)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:  # a server in another thread: nothing to await but time
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="module")
def http() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_http_sms_gateway_posts_json_with_the_token(http: HttpReceiver) -> None:
    gateway = HttpSmsGateway(http.url("sms", 202), "tok-123", timeout_s=5)
    await gateway.send_sms("+79160000001", "КРИТ: давление выше нормы", "key-1")
    req = http.requests[-1]
    assert req.path == "/sms/202"
    assert req.headers["authorization"] == "Bearer tok-123"
    assert req.json() == {"to": "+79160000001", "text": "КРИТ: давление выше нормы", "id": "key-1"}


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (503, False), (429, False),
                                                   (400, True), (401, True), (404, True)])
async def test_http_status_decides_temporary_or_permanent(http: HttpReceiver, status: int,
                                                          permanent: bool) -> None:
    with pytest.raises(DeliveryFailed) as err:
        await HttpSmsGateway(http.url("sms", status), "tok", timeout_s=5).send_sms("+7916", "x", "k")
    assert err.value.permanent is permanent
    assert f"HTTP {status}" in err.value.reason
    with pytest.raises(DeliveryFailed) as err:
        await WebhookChannel(http.url("hook", status), "s", timeout_s=5).send(message("webhook", ""))
    assert err.value.permanent is permanent


async def test_http_timeouts_and_refused_connections_are_temporary() -> None:
    with silent_server() as port:
        gateway = HttpSmsGateway(f"http://127.0.0.1:{port}/sms", "tok", timeout_s=0.3)
        with pytest.raises(DeliveryFailed) as err:
            await gateway.send_sms("+79160000001", "x", "k")
        assert not err.value.permanent and "timed out" in err.value.reason
    gateway = HttpSmsGateway(f"http://127.0.0.1:{closed_port()}/sms", "tok", timeout_s=5)
    with pytest.raises(DeliveryFailed) as err:
        await gateway.send_sms("+79160000001", "x", "k")
    assert not err.value.permanent


async def test_webhook_is_signed_and_the_signature_verifies(http: HttpReceiver) -> None:
    channel = WebhookChannel(http.url("hook", 200), "hook-secret", timeout_s=5, clock=lambda: T0)
    await channel.send(message("webhook", ""))  # '' = the channel's own URL
    req = http.requests[-1]
    assert req.path == "/hook/200"
    ts, sig = req.headers[TIMESTAMP_HEADER.lower()], req.headers[SIGNATURE_HEADER.lower()]
    assert ts == str(int(T0.timestamp())) and sig.startswith("sha256=")
    assert verify_signature("hook-secret", ts, req.body, sig, now=T0 + dt.timedelta(seconds=10))
    assert not verify_signature("other-secret", ts, req.body, sig, now=T0)
    assert not verify_signature("hook-secret", ts, req.body + b" ", sig, now=T0)  # tampered
    assert not verify_signature("hook-secret", ts, req.body, sig, now=T0 + dt.timedelta(seconds=301))
    assert not verify_signature("hook-secret", "not-a-number", req.body, sig, now=T0)
    body = req.json()
    assert body["id"] == message().key.replace("/email/", "/webhook/")
    assert body["subject"] == RU_SUBJECT and body["text"] == RU_BODY
    assert body["event"]["priority"] == 4
    # a contact's own URL wins over the channel's
    await channel.send(message("webhook", http.url("contact-hook", 204)))
    assert http.requests[-1].path == "/contact-hook/204"


async def test_pbx_voice_hand_off_is_a_signed_call_request(http: HttpReceiver) -> None:
    channel = PbxVoiceChannel(http.url("pbx", 202), "pbx-secret",
                              callback_url="https://scada.example/api/voice-callback", clock=lambda: T0)
    await channel.send(message("voice", "+79160000001"))
    req = http.requests[-1]
    assert req.json() == {"id": message("voice").key, "call_to": "+79160000001", "text": RU_SUBJECT,
                          "language": "ru", "alarm_id": "station/GRP-12/p_out:hi",
                          "callback": "https://scada.example/api/voice-callback"}
    assert verify_signature("pbx-secret", req.headers["x-gasops-timestamp"], req.body,
                            req.headers["x-gasops-signature"], now=T0)
    with pytest.raises(DeliveryFailed) as err:
        await PbxVoiceChannel(http.url("pbx", 503), "pbx-secret").send(message("voice", "+7916"))
    assert not err.value.permanent


def test_channels_are_built_from_json_specs() -> None:
    smtp_spec = {"type": "smtp", "host": "127.0.0.1", "port": 25, "sender": "a@b.c", "starttls": True}
    assert isinstance(build_channel(smtp_spec), SmtpChannel)
    sms = build_channel({"type": "sms_smpp", "host": "h", "port": 2775, "system_id": "s",
                         "password": "p", "source_addr": "GASOPS"})
    assert isinstance(sms, SmsChannel) and isinstance(sms.gateway, SmppSmsGateway)
    assert isinstance(build_channel({"type": "pbx", "url": "http://pbx/", "secret": "x"}),
                      PbxVoiceChannel)
    with pytest.raises(ValueError, match="type must be one of"):
        build_channel({"type": "fax"})
    with pytest.raises(ValueError, match="'webhook'.*secret"):
        build_channel({"type": "webhook", "url": "http://x/"})
