"""The one interface every device driver implements, and its errors.

A driver owns its connection(s), its lock(s) and any inter-frame delay; nothing else talks to
the device. It reports values as `TagValue`s through the callback given to `subscribe`, turns
failures into data (quality Bad with a sub-code) and recovers by itself. Addresses are
driver-specific strings (an OPC UA NodeId, a Modbus "unit/map-point" reference); the mapping
from tag paths to addresses is configuration, not driver code.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence

from realtime.model import TagPath, TagValue, Value

__all__ = [
    "BadResponse",
    "ConnectionLost",
    "Driver",
    "DriverError",
    "Listener",
    "Timeout",
    "Unsubscribe",
]

Listener = Callable[[Mapping[TagPath, TagValue]], None]  # a batch of new values
Unsubscribe = Callable[[], None]


class DriverError(Exception):
    """Base of every driver failure."""


class ConnectionLost(DriverError):
    """The device or endpoint is unreachable."""


class Timeout(DriverError):
    """The device did not answer in time."""


class BadResponse(DriverError):
    """The device answered, but with an error or garbage."""


class Driver(abc.ABC):
    """A connection to one endpoint (an OPC UA server, a Modbus line) and its points."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection; raises `ConnectionLost` if the endpoint cannot be reached.

        After a successful connect the driver keeps itself connected (reconnects with backoff).
        """

    @abc.abstractmethod
    async def read(self, paths: Sequence[TagPath]) -> dict[TagPath, TagValue]:
        """Read the current values now (bad quality for points that fail)."""

    @abc.abstractmethod
    async def write(self, path: TagPath, value: Value) -> None:
        """Write one value (control); raises a `DriverError` when the device refuses it."""

    @abc.abstractmethod
    def subscribe(self, paths: Sequence[TagPath], listener: Listener) -> Unsubscribe:
        """Deliver changes of `paths` to `listener` (by push or polling); returns unsubscribe.

        A path the driver has no address for, or a closed driver, raises `DriverError` at once
        (a configuration mistake, not a field failure).
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop every task and close the connection; idempotent."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether the endpoint is reachable right now."""
