"""A field of gas regulator stations (GRP/ShRP) behind a real OPC UA server, with faults on command.

The demo's plant and the tests' device: an asyncua `Server` on a loopback port exposing, for each
station, ``p_in`` (Pa gauge, medium-pressure inlet), ``p_out`` (Pa gauge, low-pressure outlet),
``t_gas`` (°C), ``flow`` (m³/h at standard conditions), ``door`` (bool) and ``valve_pos`` (%,
writable set-point). Values follow a city district's daily and weekly demand curve with seeded
noise, updated every `period_s`, with source timestamps. NodeIds are the tag paths as string
identifiers in namespace ``urn:gasops:sim`` (see `opcua.nodes`).

Clients connect through a small TCP relay on the public port — the "field link" — so faults act
the way they do in the field: `drop()` resets every connection while the server keeps running,
`slow(delay_s)` adds latency on the link, `stop()`/`start()` kill and restart the whole server on
the same port. `freeze`, `set_value`, `set_bad` act on single values; `stall_publishing()` makes
the sessions open now stop receiving publish responses (no data, no keep-alives) while their
reads are still answered — the "connected but silent" session the driver's watchdog exists for;
`refuse_subscriptions()` makes the server turn down CreateSubscription (the driver then polls).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import ipaddress
import logging
import math
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

from opcua._security import generate_certificate
from opcua.nodes import NAMESPACE_URI, STATION_VARIABLES, split_station_path, station_path, station_points
from realtime.model import Quality, TagPath, Value

__all__ = ["SERVER_APPLICATION_URI", "StationSimulator", "demand_factor"]

log = logging.getLogger(__name__)

SERVER_APPLICATION_URI = "urn:gasops:sim:server"
_VARIANT = {"p_in": ua.VariantType.Double, "p_out": ua.VariantType.Double,
            "t_gas": ua.VariantType.Double, "flow": ua.VariantType.Double,
            "door": ua.VariantType.Boolean, "valve_pos": ua.VariantType.Double,
            "p_out_sp": ua.VariantType.Double}
_WRITABLE = frozenset({"valve_pos", "p_out_sp"})  # what clients may write: commands
_DOOR_OPENINGS_PER_DAY = 3.0  # inspections and the odd intrusion
_DOOR_OPEN_S = 600.0


def demand_factor(when: dt.datetime, utc_offset_h: float = 3.0) -> float:
    """Relative gas demand of a city district at `when` (about 0.45 at night, 1.0 at the evening peak).

    Morning (7:30) and evening (19:00) peaks on working days; on weekends the morning peak
    comes later (9:30) and the whole day is a little lower. `utc_offset_h` gives local time.
    """
    local = when.astimezone(dt.UTC) + dt.timedelta(hours=utc_offset_h)
    hour = local.hour + local.minute / 60 + local.second / 3600
    weekend = local.weekday() >= 5
    morning = 9.5 if weekend else 7.5

    def peak(centre: float, width: float) -> float:
        d = (hour - centre + 12) % 24 - 12  # wrap around midnight
        return math.exp(-((d / width) ** 2))

    shape = 0.45 + 0.35 * peak(morning, 1.6) + 0.55 * peak(19.0, 2.2) + 0.12 * peak(13.0, 2.5)
    return min(shape, 1.0) * (0.93 if weekend else 1.0)


@dataclass(frozen=True, slots=True)
class _Station:
    """Fixed parameters of one station, drawn from the seeded generator."""

    id: str
    q_nom: float  # m³/h (std) at demand factor 1, valve fully open
    p_in_nom: float  # Pa gauge, inlet at no flow
    p_out_sp: float  # Pa gauge, outlet set-point
    t_ground: float  # °C, soil temperature around the inlet pipe


class _PasswordUsers(UserManager):
    """Username/password users; everybody else is refused (BadUserAccessDenied)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        """The user for these credentials, or None to refuse."""
        expected = self._users.get(username or "")
        if expected is None or password is None:
            return None
        given = password.encode() if isinstance(password, str) else bytes(password)
        if not hmac.compare_digest(expected.encode(), given):
            return None
        return User(role=UserRole.User, name=username)


class _Relay:
    """A TCP relay from the public port to the OPC UA server: the field link faults act on."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.delay_s = 0.0
        self._server: asyncio.Server | None = None
        self._upstream: tuple[str, int] | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, upstream: tuple[str, int]) -> None:
        """Listen on the public port and forward each connection to `upstream`."""
        self._upstream = upstream
        self._server = await asyncio.start_server(self._accept, self.host, self.port)

    def drop(self) -> int:
        """Reset every open link (both sides see a connection reset); returns how many."""
        links = list(self._links)
        for client_side, server_side in links:
            client_side.transport.abort()
            server_side.transport.abort()
        return len(links)

    async def stop(self) -> None:
        """Stop listening, reset every link and wait for the relay tasks to end."""
        if self._server is not None:
            self._server.close()
        self.drop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            pass  # stop(): the link is reset below
        except OSError:  # a reset or refused link is what this relay is for; not an error
            log.debug("relay link ended", exc_info=True)
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._upstream is not None
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        link = (writer, up_writer)
        self._links.add(link)
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer)),
                 asyncio.ensure_future(self._pump(up_reader, writer))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._links.discard(link)
            up_writer.transport.abort()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                sink.write(data)
                await sink.drain()


class StationSimulator:
    """Stations behind an OPC UA server on ``opc.tcp://host:port``; start, fault, stop, restart.

    With `cert_dir`, the server offers only Basic256Sha256 Sign and SignAndEncrypt, with a
    self-signed certificate generated there (`server_certificate`); without it, only
    NoSecurity. With `users` (name → password), a UserName token is required and checked;
    without them, anonymous sessions are accepted.
    """

    def __init__(self, stations: Sequence[str], *, port: int, host: str = "127.0.0.1",
                 period_s: float = 1.0, seed: int = 0, cert_dir: Path | None = None,
                 users: Mapping[str, str] | None = None, utc_offset_h: float = 3.0,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 setpoints_pa: Mapping[str, float] | None = None,
                 plant: Callable[[str], tuple[float, float, float] | None] | None = None) -> None:
        """`plant`, when given, supplies each station's (flow m³/h, p_in Pa, p_out Pa) — the demo's
        hydraulic plant (`server/plant.py`); the simulator adds sensor noise. Without it, or
        while it has no answer, the stations follow their own statistical model."""
        if not stations:
            raise ValueError("a simulator needs at least one station")
        if period_s <= 0:
            raise ValueError("period_s must be positive")
        self._host = host
        self._port = port
        self._period_s = period_s
        self._cert_dir = cert_dir
        self._users = dict(users) if users else None
        self._utc_offset_h = utc_offset_h
        self._clock = clock
        self._rng = random.Random(seed)
        self._setpoints = dict(setpoints_pa or {})  # outlet set-points from the registry
        self._plant = plant
        self._stations = [self._draw_station(s) for s in stations]
        self._points = station_points(stations)
        self._relay = _Relay(host, port)
        self._server: Server | None = None
        self._updater: asyncio.Task[None] | None = None
        self._node_ids: dict[TagPath, ua.NodeId] = {}
        self._frozen: set[TagPath] = set()
        self._status: dict[TagPath, int] = {}
        self._values: dict[TagPath, Value] = {}
        self._source_ts: dict[TagPath, dt.datetime] = {}
        self._door_until: dict[str, dt.datetime] = {}
        self._server_cert: Path | None = None
        self._server_key: Path | None = None
        now = clock()
        for station in self._stations:
            self._values[station_path(station.id, "valve_pos")] = 100.0
            self._values[station_path(station.id, "p_out_sp")] = station.p_out_sp
            self._values[station_path(station.id, "door")] = False
            self._values.update(self._sample(station, now))
        self._source_ts = dict.fromkeys(self._values, now)

    # ------------------------------------------------------------------ properties

    @property
    def endpoint(self) -> str:
        """The URL clients connect to."""
        return f"opc.tcp://{self._host}:{self._port}"

    @property
    def points(self) -> dict[TagPath, str]:
        """Tag path → NodeId of every simulated variable (the driver's `points`)."""
        return dict(self._points)

    @property
    def server_certificate(self) -> Path | None:
        """The server's certificate (DER) when running secured, else None."""
        return self._server_cert

    @property
    def running(self) -> bool:
        """Whether the server is up."""
        return self._server is not None

    def value(self, path: TagPath) -> Value:
        """The value the simulator last wrote (or a client wrote) for `path`."""
        self._check(path)
        if path.endswith(("/valve_pos", "/p_out_sp")) and self._server is not None:
            self._values[path] = self._read_server_value(path)
        return self._values[path]

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Build the server (fresh sessions, same values), listen on the port, start updating."""
        if self._server is not None:
            return
        server = Server(user_manager=_PasswordUsers(self._users) if self._users else None)
        await server.init()
        server.disable_clock(True)  # its 1 s loop would only delay stop(); clients don't read it
        server.set_server_name("gasops station simulator")
        await server.set_application_uri(SERVER_APPLICATION_URI)
        server.set_endpoint(self.endpoint)
        server.socket_address = (self._host, 0)  # the relay owns the public port
        if self._cert_dir is not None:
            if self._server_cert is None:
                try:  # name the bind address in the certificate: clients check it
                    addresses: tuple[str, ...] = (str(ipaddress.ip_address(self._host)),)
                    names = None
                except ValueError:
                    addresses, names = (), sorted({"localhost", socket.gethostname(), self._host})
                pair = generate_certificate(self._cert_dir, "simulator", hostnames=names, addresses=addresses,
                                            application_uri=SERVER_APPLICATION_URI)
                self._server_cert, self._server_key = pair.certificate, pair.private_key
            await server.load_certificate(str(self._server_cert))
            await server.load_private_key(str(self._server_key))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_Sign,
                                        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.UserNameIdentityToken] if self._users else [ua.AnonymousIdentityToken])
        await self._build_address_space(server)
        await server.start()
        try:
            assert server.bserver is not None
            await self._relay.start((self._host, server.bserver.port))
        except BaseException:
            await server.stop()
            raise
        self._server = server
        self._updater = asyncio.get_running_loop().create_task(self._update_loop(), name="opcua-sim-updater")
        log.info("station simulator listening on %s (%d stations)", self.endpoint, len(self._stations))

    async def stop(self) -> None:
        """Kill the server: stop updating, reset every link, close the port. Idempotent."""
        server, self._server = self._server, None
        updater, self._updater = self._updater, None
        if updater is not None:
            updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await updater
        if server is None:
            return
        for path in self._values:  # keep client-written set-points across a restart
            if path.endswith(("/valve_pos", "/p_out_sp")):
                self._values[path] = self._read_server_value(path, server)
        await self._relay.stop()
        await server.stop()
        log.info("station simulator on %s stopped", self.endpoint)

    async def __aenter__(self) -> StationSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ faults

    def freeze(self, path: TagPath) -> None:
        """Stop updating `path` (it keeps its value and source timestamp)."""
        self._check(path)
        self._frozen.add(path)

    def unfreeze(self, path: TagPath) -> None:
        """Resume updating `path`."""
        self._frozen.discard(path)

    async def set_value(self, path: TagPath, value: Value) -> None:
        """Write `value` now (fresh source timestamp) and freeze it there."""
        self._check(path)
        self._frozen.add(path)
        await self._write(path, value, self._clock())

    async def set_bad(self, path: TagPath, code: int = Quality.BAD_SENSOR_FAILURE) -> None:
        """Give `path` a Bad status code now; it stays Bad (and frozen) until `clear_bad`."""
        self._check(path)
        if Quality.from_status_code(code).is_good:
            raise ValueError(f"not a Bad status code: {code:#010x}")
        self._status[path] = int(code)
        await self._write(path, self._values[path], self._clock())

    async def clear_bad(self, path: TagPath) -> None:
        """Back to Good quality and normal updates."""
        self._status.pop(path, None)
        self._frozen.discard(path)
        await self._write(path, self._values[path], self._clock())

    def slow(self, delay_s: float) -> None:
        """Delay every chunk on the link by `delay_s` in each direction (0 restores)."""
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        self._relay.delay_s = delay_s

    def drop(self) -> int:
        """Reset every client connection (the server keeps running); returns how many."""
        return self._relay.drop()

    def stall_publishing(self) -> int:
        """Silence the sessions connected now: no publish responses, reads still answered.

        Sessions opened later are not affected. Returns how many connections were stalled.
        """
        server = self._require_server()
        assert server.bserver is not None
        stalled = 0
        for proto in list(server.bserver.clients):
            processor = proto.processor
            if processor is None:
                continue
            send = processor.send_response

            def muted(requesthandle: Any, seqhdr: Any, response: Any, *args: Any,
                      _send: Callable[..., None] = send) -> None:
                if isinstance(response, ua.PublishResponse):
                    return  # swallowed: the client waits forever for data or a keep-alive
                _send(requesthandle, seqhdr, response, *args)

            processor.send_response = muted  # type: ignore[method-assign]
            stalled += 1
        return stalled

    def refuse_subscriptions(self, refuse: bool = True) -> None:
        """Make CreateSubscription fail with BadTooManySubscriptions (or accept it again)."""
        server = self._require_server()
        server.iserver.max_subscriptions = 0 if refuse else 1_000

    # ------------------------------------------------------------------ internals

    def _check(self, path: TagPath) -> None:
        if path not in self._points:
            raise KeyError(f"no simulated tag {path!r}")

    def _require_server(self) -> Server:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return self._server

    def _draw_station(self, station: str) -> _Station:
        rng = self._rng
        q_nom = round(rng.uniform(300.0, 1500.0), 1)
        p_in_nom = round(rng.uniform(280_000.0, 320_000.0), -2)
        p_out_sp = round(rng.uniform(2_000.0, 3_000.0), -1)
        if station in self._setpoints:
            p_out_sp = self._setpoints[station]
            p_in_nom = max(p_in_nom, round(1.5 * p_out_sp, -2))  # a GRS reduces high pressure
        return _Station(id=station, q_nom=q_nom, p_in_nom=p_in_nom, p_out_sp=p_out_sp,
                        t_ground=round(rng.uniform(4.0, 10.0), 1))

    def _sample(self, station: _Station, now: dt.datetime) -> dict[TagPath, Value]:
        """The next analog values of one station (flow, pressures, temperature)."""
        rng = self._rng
        valve = float(self._values.get(station_path(station.id, "valve_pos"), 100.0) or 0.0)
        opening = min(max(valve, 0.0), 100.0) / 100.0
        load = demand_factor(now, self._utc_offset_h) * opening
        flow = max(station.q_nom * load * (1.0 + rng.gauss(0.0, 0.02)), 0.0)
        rel = flow / station.q_nom
        p_in = station.p_in_nom * (1.0 - 0.08 * rel * rel) + rng.gauss(0.0, 400.0)
        # the regulator droops a little with flow; a nearly shut valve starves the outlet
        # (4 % of the set-point at nominal flow, noise 0.3 %: a healthy regulator stays inside
        # the ±10 % alarm band, as in the field)
        sp = float(self._values.get(station_path(station.id, "p_out_sp"), station.p_out_sp))
        p_out = (sp * (1.0 - 0.04 * rel)) * min(1.0, opening * 5.0) + rng.gauss(0.0, 0.003 * sp)
        physical = self._plant(station.id) if self._plant is not None else None
        if physical is not None:  # the hydraulic plant's values, read through noisy sensors
            q, p_in_true, p_out_true = physical
            flow = max(q * (1.0 + rng.gauss(0.0, 0.01)), 0.0)
            rel = flow / station.q_nom
            p_in = p_in_true + rng.gauss(0.0, 200.0)
            p_out = p_out_true + rng.gauss(0.0, 0.001 * max(station.p_out_sp, 1.0))
        local_hour = (now.astimezone(dt.UTC).hour + self._utc_offset_h) % 24
        t_gas = (station.t_ground - 1.5 * min(rel, 1.0)  # Joule-Thomson cooling across the regulator
                 + 0.6 * math.sin(2 * math.pi * (local_hour - 9) / 24) + rng.gauss(0.0, 0.05))
        return {station_path(station.id, "flow"): round(flow, 2),
                station_path(station.id, "p_in"): round(p_in, 1),
                station_path(station.id, "p_out"): round(max(p_out, 0.0), 1),
                station_path(station.id, "t_gas"): round(t_gas, 2)}

    def _door(self, station: _Station, now: dt.datetime) -> bool:
        until = self._door_until.get(station.id)
        if until is not None and now < until:
            return True
        chance = self._period_s * _DOOR_OPENINGS_PER_DAY / 86_400.0
        if self._rng.random() < chance:
            self._door_until[station.id] = now + dt.timedelta(seconds=_DOOR_OPEN_S)
            return True
        return False

    async def _build_address_space(self, server: Server) -> None:
        idx = await server.register_namespace(NAMESPACE_URI)
        folder = await server.nodes.objects.add_folder(ua.NodeId("station", idx),
                                                       ua.QualifiedName("Stations", idx))
        self._node_ids = {}
        for station in self._stations:
            obj = await folder.add_object(ua.NodeId(f"station/{station.id}", idx),
                                          ua.QualifiedName(station.id, idx))
            for variable in STATION_VARIABLES:
                path = station_path(station.id, variable)
                node_id = ua.NodeId(path, idx)
                node = await obj.add_variable(node_id, ua.QualifiedName(variable, idx),
                                              ua.Variant(self._values[path], _VARIANT[variable]))
                if variable in _WRITABLE:
                    await node.set_writable(True)
                self._node_ids[path] = node_id
                await server.write_attribute_value(node_id, self._data_value(path, self._values[path],
                                                                             self._source_ts[path]))

    def _data_value(self, path: TagPath, value: Value, when: dt.datetime) -> ua.DataValue:
        _, variable = split_station_path(path)
        return ua.DataValue(ua.Variant(value, _VARIANT[variable]),
                            StatusCode=ua.StatusCode(self._status.get(path, 0)),
                            SourceTimestamp=when, ServerTimestamp=when)

    async def _write(self, path: TagPath, value: Value, when: dt.datetime) -> None:
        self._values[path] = value
        self._source_ts[path] = when
        if self._server is not None:
            await self._server.write_attribute_value(self._node_ids[path],
                                                     self._data_value(path, value, when))

    def _read_server_value(self, path: TagPath, server: Server | None = None) -> Value:
        server = server or self._server
        assert server is not None
        dv = server.read_attribute_value(self._node_ids[path])
        return dv.Value.Value if dv.Value is not None else None  # type: ignore[no-any-return]

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(self._period_s)
            try:
                await self._tick(self._clock())
            except Exception:  # a bug in the model must not silence the whole plant
                log.exception("station simulator update failed")

    async def _tick(self, now: dt.datetime) -> None:
        for station in self._stations:
            for name in _WRITABLE:  # clients write the valve position and the set-point
                path = station_path(station.id, name)
                self._values[path] = self._read_server_value(path)
            values: dict[TagPath, Value] = dict(self._sample(station, now))
            door = station_path(station.id, "door")
            is_open = self._door(station, now)
            if is_open != self._values[door]:
                values[door] = is_open
            for path, value in values.items():
                if path in self._frozen or path in self._status:
                    continue
                await self._write(path, value, now)
