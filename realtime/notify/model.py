"""Notification value types and the `Channel` port: what a message is and what became of it.

Everything here is plain data, JSON-able where it crosses a process (an `OutgoingMessage` goes
into an RQ job), so the rules, the notifier, the store and the job runners share one vocabulary
and depend on nothing but the alarm model.

Delivery statuses of one message (`DeliveryStatus`)::

    queued ─┬─▶ sent
            ├─▶ failed(reason)              a permanent failure, or the last attempt failed
            └─▶ retrying(attempt, reason) ──▶ sent | failed | retrying | cancelled
    cancelled                               an escalation the alarm no longer needs (first
                                            and only status), or a retry of one

The de-duplication key (`message_key`) names one message of one activation: whoever claims it
first in the `MessageStore` sends it; everyone else (a repeated event, a second process) sees
the claim and sends nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal, Protocol

__all__ = [
    "CHANNEL_KINDS",
    "AttemptResult",
    "Channel",
    "ChannelKind",
    "Clock",
    "ConfigError",
    "DeliveryFailed",
    "DeliveryJob",
    "DeliveryStatus",
    "NotifyError",
    "OutgoingMessage",
    "StatusChange",
    "activation_prefix",
    "message_key",
]

ChannelKind = Literal["email", "sms", "webhook", "voice"]
CHANNEL_KINDS: Final[tuple[ChannelKind, ...]] = ("email", "sms", "webhook", "voice")
Clock = Callable[[], dt.datetime]  # returns tz-aware UTC "now"; injected so tests never sleep


class NotifyError(Exception):
    """Base of the notification errors."""


class ConfigError(NotifyError, ValueError):
    """The notification config is invalid; the message starts with the path of the bad field."""


class DeliveryFailed(NotifyError):
    """A channel could not deliver a message.

    `permanent` failures (bad address, rejected credentials, 4xx) are not retried: trying again
    would fail the same way. Temporary ones (timeouts, 5xx, a server saying "try later") are
    retried with backoff.
    """

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent

    def __repr__(self) -> str:
        return f"DeliveryFailed({self.reason!r}, permanent={self.permanent})"


class DeliveryStatus(StrEnum):
    """Where a message stands (see the module docstring for the transitions)."""

    queued = "queued"
    sent = "sent"
    failed = "failed"
    retrying = "retrying"
    cancelled = "cancelled"


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One entry of a message's status history.

    `attempt` is the number of delivery attempts made so far (0 while queued or cancelled);
    `next_attempt_at` is set on `retrying`.
    """

    status: DeliveryStatus
    at: dt.datetime
    attempt: int = 0
    reason: str = ""
    next_attempt_at: dt.datetime | None = None


def activation_prefix(alarm_id: str, activation_ts: dt.datetime) -> str:
    """The start shared by the keys of every message of one activation."""
    return f"{alarm_id}@{activation_ts.astimezone(dt.UTC).isoformat()}#"


def message_key(alarm_id: str, activation_ts: dt.datetime, level: int, channel: str,
                recipient: str) -> str:
    """The de-duplication key: one message per activation, level, channel and recipient."""
    return f"{activation_prefix(alarm_id, activation_ts)}L{level}/{channel}/{recipient}"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One rendered message for one recipient on one channel.

    `to` is the address in the channel's terms: an e-mail address, a phone number (E.164,
    ``+7...``) for SMS and voice, a URL for a webhook ('' = the channel's own URL). `short` is
    the SMS / voice text (fits one SMS part); `data` is the alarm event as JSON
    (`AlarmEvent.to_message`), for machine receivers.
    """

    key: str
    alarm_id: str
    level: int
    channel: str
    recipient: str  # the contact's name
    to: str
    language: str
    subject: str
    body: str
    short: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (for job payloads)."""
        return {"key": self.key, "alarm_id": self.alarm_id, "level": self.level,
                "channel": self.channel, "recipient": self.recipient, "to": self.to,
                "language": self.language, "subject": self.subject, "body": self.body,
                "short": self.short, "data": dict(self.data)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OutgoingMessage:
        """The message of a dict made by `to_json`."""
        return cls(str(d["key"]), str(d["alarm_id"]), int(d["level"]), str(d["channel"]),
                   str(d["recipient"]), str(d["to"]), str(d["language"]), str(d["subject"]),
                   str(d["body"]), str(d["short"]), dict(d.get("data") or {}))


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """One delivery attempt of `message` (attempts count from 1)."""

    message: OutgoingMessage
    attempt: int = 1

    @property
    def key(self) -> str:
        """The message's de-duplication key."""
        return self.message.key


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one delivery attempt came to; `permanent` only matters when not `ok`."""

    key: str
    attempt: int
    ok: bool
    permanent: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the RQ status hash holds these)."""
        return {"key": self.key, "attempt": self.attempt, "ok": self.ok,
                "permanent": self.permanent, "reason": self.reason}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AttemptResult:
        """The result of a dict made by `to_json`."""
        return cls(str(d["key"]), int(d["attempt"]), bool(d["ok"]), bool(d.get("permanent")),
                   str(d.get("reason", "")))


class Channel(Protocol):
    """Delivers messages of one kind (e-mail, SMS, webhook, voice)."""

    async def send(self, msg: OutgoingMessage) -> None:
        """Deliver `msg` or raise `DeliveryFailed` (never anything else for expected failures)."""
        ...
