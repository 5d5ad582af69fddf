"""The message store port (`MessageStore`) and its in-memory adapter.

The store is where de-duplication happens and where delivery status lives. `claim` is the one
operation that must be atomic: it records a message under its key only if nobody has, and says
whether this caller won. Every sender claims before it sends, so a repeated alarm event, a
replay after a restart or a second server process seeing the same event sends nothing twice —
as long as they share the store. A database adapter implements `claim` as
``INSERT ... ON CONFLICT (key) DO NOTHING`` and checks the row count; `set_status` appends to a
history table and updates the current status; `get` and `for_alarm` are plain reads.

`InMemoryMessageStore` serves one process (the embedded default and the tests).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from realtime.notify.model import DeliveryStatus, OutgoingMessage, StatusChange

__all__ = ["InMemoryMessageStore", "MessageRecord", "MessageStore", "UnknownMessage"]


class UnknownMessage(KeyError):
    """No message was claimed under that key."""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A claimed message, its current status and the history that led there (oldest first)."""

    message: OutgoingMessage
    history: tuple[StatusChange, ...]

    @property
    def key(self) -> str:
        """The de-duplication key."""
        return self.message.key

    @property
    def status(self) -> DeliveryStatus:
        """The latest status."""
        return self.history[-1].status

    @property
    def last(self) -> StatusChange:
        """The latest status change (its reason, attempt count, next attempt)."""
        return self.history[-1]


class MessageStore(ABC):
    """Where messages are claimed (de-duplication) and their delivery status is kept."""

    @abstractmethod
    async def claim(self, message: OutgoingMessage, change: StatusChange) -> bool:
        """Record `message` under ``message.key`` with its first status `change` (queued, or
        cancelled for an escalation that is no longer needed), atomically, unless the key is
        already recorded; True if this call recorded it (and so must act on it)."""

    @abstractmethod
    async def set_status(self, key: str, change: StatusChange) -> None:
        """Append `change` to the history of `key`; `UnknownMessage` if it was never claimed."""

    @abstractmethod
    async def get(self, key: str) -> MessageRecord | None:
        """The record of `key`, or None."""

    @abstractmethod
    async def for_alarm(self, alarm_id: str) -> list[MessageRecord]:
        """Every record of `alarm_id`, in claim order."""


@dataclass(slots=True)
class _Entry:
    message: OutgoingMessage
    history: list[StatusChange] = field(default_factory=list)


class InMemoryMessageStore(MessageStore):
    """A dict: atomic enough within one event loop, since `claim` never awaits."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    async def claim(self, message: OutgoingMessage, change: StatusChange) -> bool:
        """See `MessageStore.claim`."""
        if message.key in self._entries:
            return False
        self._entries[message.key] = _Entry(message, [change])
        return True

    async def set_status(self, key: str, change: StatusChange) -> None:
        """See `MessageStore.set_status`."""
        try:
            self._entries[key].history.append(change)
        except KeyError:
            raise UnknownMessage(key) from None

    async def get(self, key: str) -> MessageRecord | None:
        """See `MessageStore.get`."""
        entry = self._entries.get(key)
        return None if entry is None else MessageRecord(entry.message, tuple(entry.history))

    async def for_alarm(self, alarm_id: str) -> list[MessageRecord]:
        """See `MessageStore.for_alarm`."""
        return [MessageRecord(e.message, tuple(e.history)) for e in self._entries.values()
                if e.message.alarm_id == alarm_id]
