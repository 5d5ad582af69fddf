"""The OPC UA client driver: one session per endpoint, monitored items (or polling), supervised.

`OpcUaDriver` keeps one asyncua session to one server. Subscribed tags are monitored items of
one subscription (sampling interval, queue, a data-change filter with an absolute or percent
deadband); each publish response becomes one batch of `TagValue`s for the listeners, quality
from the StatusCode and `source_ts` from the SourceTimestamp. When the server refuses
subscriptions (or with ``mode="poll"``) the same tags are read every `poll_interval_s` instead.

One task per driver — the supervisor — owns the session. It notices a lost link at once
(asyncua reports the transport state change), and it keeps a watchdog: a subscription that gets
neither a data change nor a keep-alive for `watchdog_s` is a dead session even if asyncua still
calls it connected (asyncua 2.1 can stall like that after a brief link drop), so it is torn
down. On any loss every subscribed tag is delivered as ``Quality.BAD_NOT_CONNECTED`` (value
None), the supervisor reconnects with exponential backoff on a brand-new client (asyncua's own
auto-reconnect stays off: recovery is ours, explicit and in one place), recreates the monitored
items and the fresh values follow. It logs once when the link goes down and once when it is
back. Writes are serialized per session (concurrent writes on one asyncua ≥ 2.0 session are
unsafe).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.crypto import security_policies
from asyncua.observer import Observer

from opcua.nodes import NodeRef, parse_node_id, to_ua_node_id
from realtime.drivers.base import (
    BadResponse,
    ConnectionLost,
    Driver,
    DriverError,
    Listener,
    Timeout,
    Unsubscribe,
)
from realtime.model import Deadband, DeadbandKind, Quality, TagPath, TagValue, Value

__all__ = ["CLIENT_APPLICATION_URI", "AccessDenied", "Backoff", "DriverStats", "OpcUaDriver", "Security"]

log = logging.getLogger(__name__)

CLIENT_APPLICATION_URI = "urn:gasops:opcua-client"
_ACCESS_DENIED = frozenset({ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadIdentityTokenInvalid,
                            ua.StatusCodes.BadIdentityTokenRejected})
_FILTER_REFUSED = frozenset({ua.StatusCodes.BadFilterNotAllowed,
                             ua.StatusCodes.BadMonitoredItemFilterUnsupported,
                             ua.StatusCodes.BadDeadbandFilterInvalid})
_INTEGER_TYPES = frozenset({ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16,
                            ua.VariantType.UInt16, ua.VariantType.Int32, ua.VariantType.UInt32,
                            ua.VariantType.Int64, ua.VariantType.UInt64})
_FLOAT_TYPES = frozenset({ua.VariantType.Float, ua.VariantType.Double})


class AccessDenied(BadResponse):
    """The server refused the user (wrong name or password, or an identity token it won't take)."""


@dataclass(frozen=True, slots=True)
class Security:
    """Message security for a session: Basic256Sha256 with a client certificate.

    Without `server_certificate` the server's certificate is taken from its endpoint list
    (trust on first use); pin it in production.
    """

    certificate: Path
    private_key: Path
    server_certificate: Path | None = None
    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    application_uri: str = CLIENT_APPLICATION_URI

    def __post_init__(self) -> None:
        if self.policy != "Basic256Sha256":
            raise ValueError(f"unsupported security policy {self.policy!r}")
        if self.mode not in ("Sign", "SignAndEncrypt"):
            raise ValueError(f"unsupported security mode {self.mode!r}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: `initial_s`, doubled after each failed attempt, capped at `max_s`."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")


@dataclass(frozen=True, slots=True)
class DriverStats:
    """Counters of a driver's life, for health pages and tests."""

    connected: bool
    polling: bool  # the current session reads instead of subscribing
    sessions: int  # sessions opened (1 after connect; +1 per recovery)
    disconnects: int  # sessions lost or torn down (watchdog included)
    watchdog_trips: int
    failed_attempts: int  # reconnect attempts that failed
    notifications: int  # values received by subscription or poll
    last_error: str | None


@dataclass(frozen=True, slots=True)
class _Entry:
    """One `subscribe` call: its paths and listener (identity matters, not equality)."""

    paths: frozenset[TagPath]
    listener: Listener = field(compare=False)


@dataclass(eq=False)
class _Session:
    """One asyncua client with its subscription and what the driver knows of it."""

    client: Client
    namespaces: list[str] = field(default_factory=list)
    subscription: Subscription | None = None
    polling: bool = False
    lost: str | None = None  # set when asyncua reports the transport gone
    last_alive: float = 0.0  # monotonic time of the last data change, keep-alive or poll
    node_ids: dict[TagPath, ua.NodeId] = field(default_factory=dict)
    items: dict[TagPath, int | None] = field(default_factory=dict)  # monitored item id; None: refused
    handle_of: dict[TagPath, int] = field(default_factory=dict)
    by_handle: dict[int, TagPath] = field(default_factory=dict)
    poll_paths: set[TagPath] = field(default_factory=set)
    polled: dict[TagPath, tuple[Any, int, dt.datetime | None]] = field(default_factory=dict)
    next_poll: float = 0.0
    next_refresh: float = 0.0  # when the unchanged values are reported again
    watchdog_s: float = 0.0  # set from the driver's; wider if the server's keep-alives are slower
    variant_types: dict[TagPath, ua.VariantType] = field(default_factory=dict)


class _Broken(Exception):
    """The current session can no longer be used; the supervisor replaces it."""


class _SessionEvents(Observer):
    """asyncua's callbacks for one session, forwarded to the driver while that session is current."""

    def __init__(self, driver: OpcUaDriver, session: _Session) -> None:
        self._driver = driver
        self._session = session

    def on_state_change(self, state: UaClientState) -> None:
        """asyncua's client state moved; DISCONNECTED means the transport is gone."""
        if state is UaClientState.DISCONNECTED:
            self._driver._on_transport_lost(self._session)

    def on_notification(self, subscription_id: int | None, event_count: int) -> None:
        """A publish response arrived (a keep-alive has no events): the session is alive."""
        self._driver._on_alive(self._session)

    def datachange_notification(self, node: Any, val: Any, data: DataChangeNotif) -> None:
        """One monitored item changed."""
        self._driver._on_data_change(self._session, data)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        """The server (or asyncua) says the subscription itself changed state."""
        self._driver._on_subscription_status(self._session, status)


class OpcUaDriver(Driver):
    """A `Driver` for one OPC UA server; `points` maps tag paths to NodeId strings."""

    def __init__(
        self,
        endpoint: str,
        points: Mapping[TagPath, str],
        *,
        username: str | None = None,
        password: str | None = None,
        security: Security | None = None,
        mode: Literal["subscribe", "poll"] = "subscribe",
        sampling_interval_ms: float = 500.0,
        publishing_interval_ms: float = 500.0,
        queue_size: int = 10,
        deadband: Deadband = Deadband(),  # noqa: B008 - frozen value object
        deadbands: Mapping[TagPath, Deadband] | None = None,
        poll_interval_s: float = 1.0,
        watchdog_s: float = 10.0,
        refresh_s: float = 5.0,
        request_timeout_s: float = 4.0,
        session_timeout_s: float = 60.0,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen value object
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        if mode not in ("subscribe", "poll"):
            raise ValueError(f"mode must be 'subscribe' or 'poll', not {mode!r}")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        for name, number in (("sampling_interval_ms", sampling_interval_ms),
                             ("publishing_interval_ms", publishing_interval_ms),
                             ("poll_interval_s", poll_interval_s), ("watchdog_s", watchdog_s),
                             ("refresh_s", refresh_s),
                             ("request_timeout_s", request_timeout_s),
                             ("session_timeout_s", session_timeout_s), ("queue_size", queue_size)):
            if number <= 0:
                raise ValueError(f"{name} must be positive")
        self._endpoint = endpoint
        # A subscription reports changes only: a door that stays shut says nothing for hours.
        # While the session proves alive (data or keep-alives within the watchdog), the last
        # values are reported again every `refresh_s`, so that staleness downstream (which
        # counts any report) tells a silent tag from a quiet one.
        self._refresh_s = refresh_s
        self._refs: dict[TagPath, NodeRef] = {path: parse_node_id(node) for path, node in points.items()}
        self._username = username
        self._password = password
        self._security = security
        self._mode = mode
        self._sampling_ms = float(sampling_interval_ms)
        self._publishing_ms = float(publishing_interval_ms)
        self._queue_size = int(queue_size)
        self._deadband = deadband
        self._deadbands = dict(deadbands or {})
        self._poll_interval_s = poll_interval_s
        self._watchdog_s = watchdog_s
        self._request_timeout_s = request_timeout_s
        self._session_timeout_s = session_timeout_s
        self._backoff = backoff
        self._clock = clock

        self._entries: list[_Entry] = []
        self._last: dict[TagPath, TagValue] = {}
        self._pending: dict[TagPath, TagValue] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._session: _Session | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._sync_wanted = False
        self._write_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._handles = itertools.count(1_000_001)  # client handles; asyncua's own start at 201
        self._closed = False
        self._down_since: float | None = None
        self._outage_attempts = 0
        self._warned_polling = False
        self._sessions = 0
        self._disconnects = 0
        self._watchdog_trips = 0
        self._failed_attempts = 0
        self._notifications = 0
        self._last_error: str | None = None

    # ------------------------------------------------------------------ Driver API

    @property
    def connected(self) -> bool:
        """Whether a session is up right now."""
        return self._session is not None and self._session.lost is None

    @property
    def running(self) -> bool:
        """Whether the supervisor is alive (from `connect` until `close`)."""
        return self._task is not None and not self._task.done()

    @property
    def endpoint(self) -> str:
        """The server URL."""
        return self._endpoint

    @property
    def stats(self) -> DriverStats:
        """A snapshot of the counters."""
        session = self._session
        return DriverStats(connected=self.connected, polling=bool(session and session.polling),
                           sessions=self._sessions, disconnects=self._disconnects,
                           watchdog_trips=self._watchdog_trips, failed_attempts=self._failed_attempts,
                           notifications=self._notifications, last_error=self._last_error)

    async def connect(self) -> None:
        """Open the session (raises `ConnectionLost`, or `AccessDenied` / `BadResponse` when
        the server refuses us), then keep it up from the supervisor task."""
        async with self._connect_lock:
            await self._connect()

    async def _connect(self) -> None:
        if self._closed:
            raise DriverError("the driver is closed")
        if self._task is not None:
            return
        try:
            session = await self._open()
            await self._activate(session)
        except _Broken as exc:
            await self._discard_current()
            self._last_error = str(exc)
            raise ConnectionLost(f"OPC UA {self._endpoint}: {exc}") from exc
        except DriverError as exc:
            self._last_error = str(exc)
            if isinstance(exc, Timeout):
                raise ConnectionLost(str(exc)) from exc
            raise
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"opcua {self._endpoint}")
        self._task.add_done_callback(self._supervisor_done)

    async def read(self, paths: Sequence[TagPath]) -> dict[TagPath, TagValue]:
        """Read the current values now; a point that cannot be read gets a Bad quality."""
        now = self._clock()
        out: dict[TagPath, TagValue] = {}
        session = self._session
        wanted: list[TagPath] = []
        for path in paths:
            if path not in self._refs:
                out[path] = TagValue(None, Quality.BAD_CONFIG_ERROR, now, now)
            elif session is None or session.lost is not None:
                out[path] = TagValue(None, Quality.BAD_NOT_CONNECTED, now, now)
            else:
                wanted.append(path)
        if session is not None and wanted:
            resolved: list[tuple[TagPath, ua.NodeId]] = []
            for path in wanted:
                try:
                    resolved.append((path, self._node_id(session, path)))
                except LookupError:
                    out[path] = TagValue(None, Quality.BAD_CONFIG_ERROR, now, now)
            if resolved:
                failure = Quality.BAD_COMMUNICATION_ERROR
                try:
                    values = await session.client.uaclient.read_attributes([n for _, n in resolved],
                                                                           ua.AttributeIds.Value)
                except TimeoutError:
                    values = [None] * len(resolved)
                    failure = Quality.BAD_TIMEOUT
                except (ConnectionError, OSError, ua.UaError):
                    values = [None] * len(resolved)
                    failure = Quality.BAD_NOT_CONNECTED if session.lost else Quality.BAD_COMMUNICATION_ERROR
                for (path, _), dv in zip(resolved, values, strict=True):
                    out[path] = self._tag_value(dv) if dv is not None else TagValue(None, failure, now, now)
        return {path: out[path] for path in paths}

    async def write(self, path: TagPath, value: Value) -> None:
        """Write one value; raises `ConnectionLost`, `Timeout` or `BadResponse` (refused)."""
        if path not in self._refs:
            raise DriverError(f"no OPC UA point for tag {path!r}")
        async with self._write_lock:
            session = self._session
            if session is None or session.lost is not None:
                raise ConnectionLost(f"OPC UA {self._endpoint} is not connected")
            what = f"write {path} on {self._endpoint}"
            try:
                node_id = self._node_id(session, path)
                vtype = session.variant_types.get(path)
                if vtype is None:
                    vtype = await session.client.get_node(node_id).read_data_type_as_variant_type()
                    session.variant_types[path] = vtype
                variant = ua.Variant(_coerce(value, vtype, path), vtype)
                results = await session.client.uaclient.write_attributes(
                    [node_id], [ua.DataValue(variant)], ua.AttributeIds.Value)
            except LookupError as exc:
                raise DriverError(f"{what}: {exc}") from exc
            except (ConnectionError, OSError, ua.UaError) as exc:
                raise _driver_error(exc, what) from exc
            status = results[0]
            if not status.is_good():
                raise BadResponse(f"{what}: the server refused it ({status.name})")

    def subscribe(self, paths: Sequence[TagPath], listener: Listener) -> Unsubscribe:
        """Deliver changes of `paths` to `listener` (last known values first); returns unsubscribe."""
        if self._closed:
            raise DriverError(f"OPC UA {self._endpoint}: the driver is closed")
        unknown = sorted(set(paths) - self._refs.keys())
        if unknown:
            raise DriverError(f"no OPC UA point for {unknown}")
        entry = _Entry(frozenset(paths), listener)
        self._entries.append(entry)
        self._request_sync()
        with contextlib.suppress(RuntimeError):  # no loop yet: nothing known to replay anyway
            asyncio.get_running_loop().call_soon(self._replay, entry)

        def unsubscribe() -> None:
            if entry in self._entries:
                self._entries.remove(entry)
                self._request_sync()

        return unsubscribe

    async def close(self) -> None:
        """Stop the supervisor and close the session; idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            # asyncua swallows a CancelledError that lands while it awaits its own tasks'
            # cancellation (Client.close_session), so cancel until the supervisor is really gone.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
        await self._discard_current()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending.clear()

    # ------------------------------------------------------------------ supervision

    async def _supervise(self) -> None:
        """The one task that owns the session: watch it, replace it when it fails."""
        delay = self._backoff.initial_s
        while not self._closed:
            try:
                if self._session is None:
                    try:
                        session = await self._open()
                        await self._activate(session)
                    except (DriverError, _Broken) as exc:
                        await self._discard_current()
                        self._failed_attempts += 1
                        self._outage_attempts += 1
                        self._last_error = str(exc)
                        log.debug("OPC UA %s: reconnect failed (%s); next try in %.1f s",
                                  self._endpoint, exc, delay)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, self._backoff.max_s)
                        continue
                    delay = self._backoff.initial_s
                    self._note_up()
                    session = self._session
                    assert session is not None
                else:
                    session = self._session
                reason = await self._watch(session)
                await self._drop_session(reason)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug of ours: say so loudly, then start over from a clean state
                log.exception("OPC UA %s: supervisor error; replacing the session", self._endpoint)
                await self._drop_session("internal error")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff.max_s)

    async def _watch(self, session: _Session) -> str:
        """Wait until `session` must be replaced; returns why. Runs polls and item changes."""
        while True:
            self._wake.clear()
            if session.lost is not None:
                return session.lost
            try:
                if self._sync_wanted:
                    self._sync_wanted = False
                    await self._sync(session)
                now = time.monotonic()
                if session.polling and now >= session.next_poll:
                    await self._poll(session)
                    session.next_poll = now + self._poll_interval_s
            except _Broken as exc:
                return str(exc)
            now = time.monotonic()
            if session.polling:
                deadline = session.next_poll
            else:
                deadline = session.last_alive + session.watchdog_s
                if now >= deadline:
                    self._watchdog_trips += 1
                    return f"watchdog: no data change or keep-alive for {session.watchdog_s:g} s"
                if now >= session.next_refresh:  # alive: the quiet values are still true
                    session.next_refresh = now + self._refresh_s
                    for entry in list(self._entries):
                        self._replay(entry)
                deadline = min(deadline, session.next_refresh)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(deadline - now, 0.0)):
                    await self._wake.wait()

    async def _open(self) -> _Session:
        """A new client, connected, with its subscription (or set to poll); raises DriverError."""
        client = Client(self._endpoint, timeout=self._request_timeout_s,
                        watchdog_intervall=max(0.5, min(self._watchdog_s / 2, 5.0)))
        client.session_timeout = self._session_timeout_s * 1000
        client.name = client.description = "gasops"
        session = _Session(client, watchdog_s=self._watchdog_s)
        events = _SessionEvents(self, session)
        client.uaclient.observer = events
        what = f"OPC UA {self._endpoint}"
        try:
            if self._security is not None:
                sec = self._security
                client.application_uri = sec.application_uri
                server_cert = str(sec.server_certificate) if sec.server_certificate else None
                await client.set_security(security_policies.SecurityPolicyBasic256Sha256,
                                          str(sec.certificate), str(sec.private_key),
                                          server_certificate=server_cert,
                                          mode=getattr(ua.MessageSecurityMode, sec.mode))
            if self._username is not None:
                client.set_user(self._username)
                client.set_password(self._password or "")
            await client.connect()
            session.namespaces = list(await client.get_namespace_array())
            if self._mode == "poll":
                session.polling = True
            else:
                try:
                    session.subscription = await client.create_subscription(
                        self._subscription_params(self._publishing_ms), events)
                    await self._keep_keepalives_short(session, session.subscription)
                except ua.UaStatusCodeError as exc:
                    session.polling = True
                    if not self._warned_polling:
                        self._warned_polling = True
                        log.warning("%s refused a subscription (%s); polling every %g s instead",
                                    what, ua.StatusCode(exc.code).name, self._poll_interval_s)
        except BaseException as exc:
            await self._close_client(client)
            if isinstance(exc, Exception):
                raise _driver_error(exc, what) from exc
            raise
        return session

    async def _activate(self, session: _Session) -> None:
        """Make `session` current and monitor (or poll) every subscribed tag on it."""
        self._session = session
        self._sessions += 1
        session.last_alive = time.monotonic()
        session.next_refresh = session.last_alive + self._refresh_s
        self._sync_wanted = False
        await self._sync(session)

    async def _drop_session(self, reason: str) -> None:
        """Tear the current session down and mark every subscribed tag Bad (not connected)."""
        session = self._session
        if session is None:
            return
        self._disconnects += 1
        self._last_error = reason
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("OPC UA %s: connection down (%s); reconnecting", self._endpoint, reason)
        self._flush()
        self._session = None
        now = self._clock()
        self._emit({path: TagValue(None, Quality.BAD_NOT_CONNECTED, now, now) for path in self._desired()})
        await self._close_client(session.client)
        self._sync_wanted = True  # the next session starts from the listeners, not from this one

    def _note_up(self) -> None:
        if self._down_since is not None:
            log.info("OPC UA %s: connection restored after %.1f s (%d failed attempts)", self._endpoint,
                     time.monotonic() - self._down_since, self._outage_attempts)
            self._down_since = None
            self._outage_attempts = 0

    async def _discard_current(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await self._close_client(session.client)

    async def _close_client(self, client: Client) -> None:
        """Close a client's session and socket, whatever state it is in; never raises."""
        linked = client.uaclient.state in (UaClientState.CONNECTED, UaClientState.CHANNEL_OPEN)
        try:
            async with asyncio.timeout(self._request_timeout_s):
                await client.close_session()  # also stops asyncua's own tasks for this client
                if linked:
                    await client.close_secure_channel()
        except (TimeoutError, ConnectionError, OSError, ua.UaError) as exc:
            log.debug("OPC UA %s: closing a session: %r", self._endpoint, exc)
        finally:
            client.disconnect_socket()

    def _supervisor_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("OPC UA %s: supervisor ended", self._endpoint, exc_info=task.exception())

    # ------------------------------------------------------------------ items and polling

    def _desired(self) -> set[TagPath]:
        return set().union(*(e.paths for e in self._entries)) if self._entries else set()

    def _request_sync(self) -> None:
        self._sync_wanted = True
        self._wake.set()

    def _keepalive_count(self, publishing_ms: float) -> int:
        """Publishing intervals per keep-alive: three keep-alives per watchdog period."""
        return max(1, math.ceil(self._watchdog_s / 3 * 1000 / publishing_ms))

    def _subscription_params(self, publishing_ms: float) -> ua.CreateSubscriptionParameters:
        keepalive_count = self._keepalive_count(publishing_ms)
        return ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing_ms,
            RequestedLifetimeCount=keepalive_count * 10,  # the spec wants at least 3 keep-alives
            RequestedMaxKeepAliveCount=keepalive_count,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0)

    async def _keep_keepalives_short(self, session: _Session, sub: Subscription) -> None:
        """Keep the keep-alive period inside the watchdog when the server revised the interval.

        asyncua answers a revised publishing interval by stretching the keep-alive count to
        3/4 of the session timeout, which would starve the watchdog on a quiet subscription.
        """
        interval = float(sub.parameters.RequestedPublishingInterval)
        if interval <= 0 or interval == self._publishing_ms:
            return
        wanted = self._subscription_params(interval)
        params = ua.ModifySubscriptionParameters(
            SubscriptionId=sub.subscription_id, RequestedPublishingInterval=interval,
            RequestedLifetimeCount=wanted.RequestedLifetimeCount,
            RequestedMaxKeepAliveCount=wanted.RequestedMaxKeepAliveCount,
            MaxNotificationsPerPublish=0, Priority=0)
        await sub.update(params)
        keepalive_s = interval * sub.parameters.RequestedMaxKeepAliveCount / 1000
        session.watchdog_s = max(self._watchdog_s, 2 * keepalive_s)
        log.info("OPC UA %s revised the publishing interval to %g ms; keep-alive every %.1f s, "
                 "watchdog %.1f s", self._endpoint, interval, keepalive_s, session.watchdog_s)

    async def _sync(self, session: _Session) -> None:
        """Bring monitored items (or the poll list) in line with the listeners' paths."""
        desired = self._desired()
        if session.polling:
            if desired - session.poll_paths:
                session.next_poll = 0.0
            session.poll_paths = desired
            return
        sub = session.subscription
        assert sub is not None
        removed = [p for p in session.items if p not in desired]
        stale_ids = [i for i in (session.items.pop(p) for p in removed) if i is not None]
        for path in removed:
            session.by_handle.pop(session.handle_of.pop(path), None)
        if stale_ids:
            with self._guard("delete monitored items"):
                await sub.unsubscribe(stale_ids)
        added = sorted(p for p in desired if p not in session.items)
        if added:
            await self._monitor(session, sub, added, with_filter=True)

    async def _monitor(self, session: _Session, sub: Subscription, paths: list[TagPath], *,
                       with_filter: bool) -> None:
        now = self._clock()
        refused: dict[TagPath, TagValue] = {}
        requests: list[tuple[TagPath, ua.MonitoredItemCreateRequest]] = []
        for path in paths:
            try:
                node_id = self._node_id(session, path)
            except LookupError as exc:
                log.warning("OPC UA %s: cannot monitor %s: %s", self._endpoint, path, exc)
                session.items[path] = None
                refused[path] = TagValue(None, Quality.BAD_CONFIG_ERROR, now, now)
                continue
            handle = next(self._handles)
            session.handle_of[path] = handle
            session.by_handle[handle] = path
            flt = self._filter(path) if with_filter else None
            requests.append((path, self._item_request(node_id, handle, flt)))
        results: list[int | ua.StatusCode] = []
        if requests:
            with self._guard("create monitored items"):
                results = await sub.create_monitored_items([r for _, r in requests])
        retry: list[TagPath] = []
        for (path, _), result in zip(requests, results, strict=True):
            if not isinstance(result, ua.StatusCode):
                session.items[path] = result
                continue
            session.by_handle.pop(session.handle_of.pop(path), None)
            if with_filter and result.value in _FILTER_REFUSED and self._filter(path) is not None:
                retry.append(path)  # e.g. a deadband on a Boolean: monitor it without one
                continue
            session.items[path] = None
            log.warning("OPC UA %s: the server refused to monitor %s (%s)", self._endpoint, path, result.name)
            refused[path] = TagValue(None, Quality.from_status_code(result.value), now, now)
        if refused:
            self._flush()
            self._emit(refused)
        if retry:
            await self._monitor(session, sub, retry, with_filter=False)

    def _filter(self, path: TagPath) -> ua.DataChangeFilter | None:
        deadband = self._deadbands.get(path, self._deadband)
        if deadband.kind is DeadbandKind.none:
            return None
        kind = ua.DeadbandType.Absolute if deadband.kind is DeadbandKind.absolute else ua.DeadbandType.Percent
        return ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=kind,
                                   DeadbandValue=float(deadband.value))

    def _item_request(self, node_id: ua.NodeId, handle: int,
                      flt: ua.DataChangeFilter | None) -> ua.MonitoredItemCreateRequest:
        params = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=self._sampling_ms,
                                         QueueSize=self._queue_size, DiscardOldest=True)
        if flt is not None:
            params.Filter = flt
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params)

    async def _poll(self, session: _Session) -> None:
        """Read every polled tag; deliver those whose value, status or source time moved."""
        paths: list[TagPath] = []
        node_ids: list[ua.NodeId] = []
        for path in sorted(session.poll_paths):
            try:
                node_ids.append(self._node_id(session, path))
                paths.append(path)
            except LookupError:
                if path not in session.polled:
                    now = self._clock()
                    session.polled[path] = (None, Quality.BAD_CONFIG_ERROR, None)
                    self._emit({path: TagValue(None, Quality.BAD_CONFIG_ERROR, now, now)})
        if node_ids:
            with self._guard("poll"):
                values = await session.client.uaclient.read_attributes(node_ids, ua.AttributeIds.Value)
        else:
            values = []
        session.last_alive = time.monotonic()
        changed: dict[TagPath, TagValue] = {}
        for path, dv in zip(paths, values, strict=True):
            status = dv.StatusCode.value if dv.StatusCode is not None else 0
            key = (dv.Value.Value if dv.Value is not None else None, status, dv.SourceTimestamp)
            if session.polled.get(path) != key:
                session.polled[path] = key
                changed[path] = self._tag_value(dv)
        if changed:
            self._notifications += len(changed)
            self._flush()
            self._emit(changed)

    def _node_id(self, session: _Session, path: TagPath) -> ua.NodeId:
        node_id = session.node_ids.get(path)
        if node_id is None:
            node_id = session.node_ids[path] = to_ua_node_id(self._refs[path], session.namespaces)
        return node_id

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn a failed request on the session into `_Broken` (the session gets replaced)."""
        try:
            yield
        except (ConnectionError, OSError, ua.UaError) as exc:
            raise _Broken(f"{what}: {_describe(exc)}") from exc

    # ------------------------------------------------------------------ asyncua callbacks

    def _on_transport_lost(self, session: _Session) -> None:
        if session is not self._session or session.lost is not None:
            return
        session.lost = "connection lost"
        # asyncua 2.1's publish loop logs each transport loss as an ERROR with a traceback
        # ("Publish iteration crashed") and retries every second until the session is closed.
        # Its pending request has just failed; cancelling the loop now, before it wakes, keeps
        # the log truthful: the loss is expected and recovery is the supervisor's job.
        publish = session.client.uaclient._publish_task
        if publish is not None and not publish.done():
            publish.cancel()
        self._wake.set()

    def _on_alive(self, session: _Session) -> None:
        if session is self._session:
            session.last_alive = time.monotonic()

    def _on_subscription_status(self, session: _Session, status: ua.StatusChangeNotification) -> None:
        if session is not self._session or session.lost is not None:
            return
        if not status.Status.is_good():
            session.lost = f"subscription status {status.Status.name}"
            self._wake.set()

    def _on_data_change(self, session: _Session, data: DataChangeNotif) -> None:
        if session is not self._session:
            return  # a late notification of a session already replaced
        session.last_alive = time.monotonic()
        path = session.by_handle.get(data.monitored_item.ClientHandle)
        if path is None:
            return
        self._notifications += 1
        self._queue(path, self._tag_value(data.monitored_item.Value))

    # ------------------------------------------------------------------ delivery

    def _tag_value(self, dv: ua.DataValue) -> TagValue:
        now = self._clock()
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        value = _plain(dv.Value.Value) if dv.Value is not None else None
        source = dv.SourceTimestamp or dv.ServerTimestamp or now
        if source.tzinfo is None:
            source = source.replace(tzinfo=dt.UTC)  # OPC UA DateTime is UTC
        return TagValue(value, Quality.from_status_code(status), source, now)

    def _queue(self, path: TagPath, value: TagValue) -> None:
        """Collect values of one publish response into one batch (a repeat flushes first)."""
        if path in self._pending:
            self._flush()
        self._pending[path] = value
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch, self._pending = self._pending, {}
        if batch:
            self._emit(batch)

    def _emit(self, values: Mapping[TagPath, TagValue]) -> None:
        self._last.update(values)
        for entry in list(self._entries):
            batch = {p: v for p, v in values.items() if p in entry.paths}
            if batch:
                self._call(entry, batch)

    def _replay(self, entry: _Entry) -> None:
        if entry in self._entries:
            batch = {p: self._last[p] for p in entry.paths if p in self._last}
            if batch:
                self._call(entry, batch)

    def _call(self, entry: _Entry, batch: Mapping[TagPath, TagValue]) -> None:
        try:
            entry.listener(batch)
        except Exception:  # one broken consumer must not starve the others or the driver
            log.exception("OPC UA %s: a listener failed", self._endpoint)


def _plain(value: Any) -> Value:
    """An OPC UA variant value as a gasops `Value` (float, int, bool, str or None)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _coerce(value: Value, vtype: ua.VariantType, path: TagPath) -> Any:
    """`value` as the Python type asyncua encodes as `vtype`; `DriverError` if it does not fit."""
    if vtype is ua.VariantType.Boolean:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif vtype in _FLOAT_TYPES:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif vtype in _INTEGER_TYPES:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif vtype is ua.VariantType.String:
        if isinstance(value, str):
            return value
    else:
        return value
    raise DriverError(f"cannot write {value!r} to {path}: the node holds {vtype.name}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ua.UaStatusCodeError):
        return ua.StatusCode(exc.code).name
    return repr(exc) if not str(exc) else f"{type(exc).__name__}: {exc}"


def _driver_error(exc: BaseException, what: str) -> DriverError:
    """The `DriverError` for an asyncua or socket failure of `what`."""
    if isinstance(exc, ua.UaStatusCodeError):
        name = ua.StatusCode(exc.code).name
        if exc.code in _ACCESS_DENIED:
            return AccessDenied(f"{what}: the server refused the user ({name})")
        return BadResponse(f"{what}: {name}")
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, TimeoutError):
        return Timeout(f"{what}: no answer in time")
    if isinstance(exc, OSError):
        return ConnectionLost(f"{what}: {_describe(exc)}")
    if isinstance(exc, ua.UaError):
        return BadResponse(f"{what}: {_describe(exc)}")
    return DriverError(f"{what}: {_describe(exc)}")
