"""The delivery channels: e-mail (SMTP), SMS (through a gateway), webhook and voice (a PBX).

Each implements the `Channel` port (`realtime.notify.model`): ``await send(msg)`` returns when
the next hop accepted the message and raises `DeliveryFailed(permanent=...)` otherwise, so the
notifier can tell "retry later" from "fix the config". A channel holds no connection between
messages (alarm notifications are rare; a fresh connection each time has nothing to go stale),
hence nothing to close.

`build_channel` makes a channel from a JSON-able spec: the server builds specs from its settings
(secrets included, never from the repository), builds its channels from them, and an RQ worker
rebuilds the same channel from the same spec (`realtime.notify.jobs.deliver_job`). Specs::

    {"type": "smtp", "host", "port", "sender", "username"?, "password"?, "starttls"?, "timeout_s"?}
    {"type": "sms_http", "url", "token", "timeout_s"?}
    {"type": "sms_smpp", "host", "port", "system_id", "password", "source_addr", "timeout_s"?}
    {"type": "webhook", "url", "secret", "timeout_s"?}
    {"type": "pbx", "url", "secret", "callback_url"?, "timeout_s"?}
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
import json
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from realtime.notify._http import post
from realtime.notify.model import Channel, Clock, DeliveryFailed, OutgoingMessage
from realtime.notify.signing import signed_headers
from realtime.notify.sms import HttpSmsGateway, SmppSmsGateway, SmsGateway

__all__ = ["PbxVoiceChannel", "SmsChannel", "SmtpChannel", "WebhookChannel", "build_channel"]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SmtpChannel:
    """E-mail through an SMTP relay (stdlib smtplib, run in a worker thread).

    Subject and body are UTF-8 (RFC 2047 headers, base64 body when not ASCII), so Russian text
    survives any relay. 5xx replies and refused credentials are permanent; 4xx replies,
    timeouts and refused connections are temporary.
    """

    def __init__(self, host: str, port: int, sender: str, username: str | None = None,
                 password: str | None = None, starttls: bool = False, timeout_s: float = 30.0,
                 clock: Clock = _utcnow) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout_s = timeout_s
        self._clock = clock

    async def send(self, msg: OutgoingMessage) -> None:
        """Send `msg` to ``msg.to``."""
        await asyncio.to_thread(self._send, self._email(msg))

    def _email(self, msg: OutgoingMessage) -> EmailMessage:
        em = EmailMessage()
        em["From"] = self.sender
        em["To"] = msg.to
        em["Subject"] = msg.subject
        em["Date"] = email.utils.format_datetime(self._clock())
        # the same id for every retry, so a receiver can drop a duplicate
        em["Message-ID"] = f"<{hashlib.sha256(msg.key.encode()).hexdigest()[:32]}@gasops>"
        if msg.body.isascii():
            em.set_content(msg.body)
        else:
            em.set_content(msg.body, charset="utf-8", cte="base64")
        return em

    def _send(self, em: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self._password or "")
                smtp.send_message(em)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryFailed(f"SMTP: recipient refused: {exc.recipients}",
                                 permanent=all(c >= 500 for c in codes)) from exc
        except smtplib.SMTPResponseException as exc:  # auth, sender, data refused
            reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
                else str(exc.smtp_error)
            raise DeliveryFailed(f"SMTP: {exc.smtp_code} {reply}",
                                 permanent=500 <= exc.smtp_code < 600) from exc
        except smtplib.SMTPNotSupportedError as exc:  # e.g. no STARTTLS: a config error
            raise DeliveryFailed(f"SMTP: {exc}", permanent=True) from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, timed out, disconnected
            raise DeliveryFailed(f"SMTP {self.host}:{self.port}: {exc!r}", permanent=False) from exc


class SmsChannel:
    """SMS through an `SmsGateway`: sends the message's one-part `short` text to ``msg.to``."""

    def __init__(self, gateway: SmsGateway) -> None:
        self.gateway = gateway

    async def send(self, msg: OutgoingMessage) -> None:
        """Hand the short text to the gateway."""
        await self.gateway.send_sms(msg.to, msg.short, msg.key)


class WebhookChannel:
    """A signed JSON POST (see `signing`) to the contact's URL, or to this channel's `url`.

    Body: ``{"id", "alarm_id", "level", "recipient", "language", "subject", "text", "short",
    "event"}`` where `id` is the de-duplication key (the same on every retry) and `event` the
    alarm event as on the bus.
    """

    def __init__(self, url: str, secret: str, timeout_s: float = 10.0,
                 clock: Clock = _utcnow) -> None:
        self.url = url
        self._secret = secret
        self.timeout_s = timeout_s
        self._clock = clock

    async def send(self, msg: OutgoingMessage) -> None:
        """POST the message; 2xx is delivered."""
        body = _json({"id": msg.key, "alarm_id": msg.alarm_id, "level": msg.level,
                      "recipient": msg.recipient, "language": msg.language,
                      "subject": msg.subject, "text": msg.body, "short": msg.short,
                      "event": dict(msg.data)})
        await post(msg.to or self.url, body, signed_headers(self._secret, body, self._clock()),
                   self.timeout_s, "webhook")


class PbxVoiceChannel:
    """A voice call handed to the PBX (e.g. an Asterisk/FreeSWITCH dialplan service) by a signed
    webhook: ``{"id", "call_to", "text", "language", "alarm_id", "callback"}``.

    The PBX dials `call_to`, reads `text` with its TTS in `language`, and may report the outcome
    (answered, acknowledged by DTMF) to `callback` with the message `id`. The text is the
    subject line: one sentence that reads well aloud, unlike the abbreviated SMS form.
    """

    def __init__(self, url: str, secret: str, callback_url: str | None = None,
                 timeout_s: float = 10.0, clock: Clock = _utcnow) -> None:
        self.url = url
        self._secret = secret
        self.callback_url = callback_url
        self.timeout_s = timeout_s
        self._clock = clock

    async def send(self, msg: OutgoingMessage) -> None:
        """Ask the PBX to place the call; 2xx means it accepted the job (not that it rang)."""
        body = _json({"id": msg.key, "call_to": msg.to, "text": msg.subject,
                      "language": msg.language, "alarm_id": msg.alarm_id,
                      "callback": self.callback_url})
        await post(self.url, body, signed_headers(self._secret, body, self._clock()),
                   self.timeout_s, "PBX")


def _json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()


_FACTORIES: dict[str, Any] = {
    "smtp": SmtpChannel,
    "sms_http": lambda **kw: SmsChannel(HttpSmsGateway(**kw)),
    "sms_smpp": lambda **kw: SmsChannel(SmppSmsGateway(**kw)),
    "webhook": WebhookChannel,
    "pbx": PbxVoiceChannel,
}


def build_channel(spec: Mapping[str, Any]) -> Channel:
    """The channel a JSON-able spec describes (see the module docstring); ValueError if bad."""
    kind = spec.get("type")
    if kind not in _FACTORIES:
        raise ValueError(f"channel spec: type must be one of {', '.join(_FACTORIES)}, got {kind!r}")
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    try:
        channel: Channel = _FACTORIES[kind](**kwargs)
    except TypeError as exc:  # a missing or unknown field
        raise ValueError(f"channel spec {kind!r}: {exc}") from None
    return channel
