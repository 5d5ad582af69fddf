"""The integrator OPC UA server against real clients on loopback: asyncua and node-opcua.

One server (and one DuckDB historian, one in-process bus) per module; every session is
Basic256Sha256 with a client certificate made in a temporary folder. The control pipeline is a
fake of our own `CommandPort`. Nothing sleeps: tests wait on notifications with a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua
from asyncua.crypto import security_policies

from opcua._security import generate_certificate
from opcua._server_space import eu_information, plan_address_space
from opcua.server import (
    APPLICATION_URI,
    NAMESPACE_URI,
    SEVERITY,
    CommandDenied,
    CommandRefused,
    IntegratorServer,
)
from realtime.alarms.model import ALARMS_TOPIC, AlarmEvent, AlarmMode, AlarmStatus, EventKind, Priority
from realtime.broadcast import Broadcast
from realtime.historian.base import Point
from realtime.historian.duckdb import DuckDBHistorian
from realtime.model import Quality, TagDef, TagValue
from realtime.store import TagStore
from tests._services import SERVICE_SKIP_PREFIX, free_port, skip_or_fail

P_OUT = "station/GRP-01/p_out"
FLOW = "station/GRP-01/flow"
DOOR = "station/GRP-01/door"
VALVE = "station/GRP-01/valve_pos"
T_GAS = "station/GRP-01/t_gas"
P_OUT_2 = "station/GRP-02/p_out"
U_POL = "skz/SKZ-7/u_pol"
STARTS = "meter/M-100/starts"
DEFS = [
    TagDef(P_OUT, unit="Pa", description="Outlet pressure", area_id="north", range_low=0.0,
           range_high=6000.0),
    TagDef(FLOW, unit="m3/h", area_id="north"),
    TagDef(DOOR, data_type="bool", area_id="north"),
    TagDef(VALVE, unit="%", area_id="north", range_low=0.0, range_high=100.0, writable=True),
    TagDef(T_GAS, unit="°C", area_id="north", range_low=-40.0, range_high=60.0),
    TagDef(P_OUT_2, unit="kPa", area_id="south"),
    TagDef(U_POL, unit="V", range_low=-3.0, range_high=0.0),
    TagDef(STARTS, data_type="int", area_id="south"),
]
ACCOUNTS = {"olga": ("s3cret", "operator"), "kolya": ("s3cret", "crew"), "integ": ("s3cret", "integrator"),
            "petrov": ("s3cret", "consumer")}
T0 = dt.datetime(2025, 3, 1, 6, 0, tzinfo=dt.UTC)
UNECE = "http://www.opcfoundation.org/UA/units/un/cefact"
WITHIN_S = 5.0  # a bound for waiting; tighter bounds are asserted where they matter
NODE_DIR = Path(__file__).parent / "opcua_node_client"


def users(username: str, password: str) -> str | None:
    """The accounts DB of these tests."""
    account = ACCOUNTS.get(username)
    if account is None or not hmac.compare_digest(account[0].encode(), password.encode()):
        return None
    return account[1]


@dataclass
class FakePort:
    """A control pipeline that records what it is asked and answers (or refuses) at once."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    refuse: CommandRefused | None = None

    async def select(self, user: str, role: str, target: str, action: str, value: float,
                     reason: str) -> dict[str, Any]:
        self.calls.append(("select", user, role, target, action, value, reason))
        if self.refuse is not None:
            raise self.refuse
        return {"command_id": f"cmd-{len(self.calls)}", "state": "selected", "target": target}

    async def operate(self, user: str, role: str, command_id: str) -> dict[str, Any]:
        self.calls.append(("operate", user, role, command_id))
        if self.refuse is not None:
            raise self.refuse
        return {"command_id": command_id, "state": "executed"}

    async def cancel(self, user: str, role: str, command_id: str) -> dict[str, Any]:
        self.calls.append(("cancel", user, role, command_id))
        if self.refuse is not None:
            raise self.refuse
        return {"command_id": command_id, "state": "cancelled"}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def good(value: Any, at: dt.datetime | None = None) -> TagValue:
    at = at or now()
    return TagValue(value, Quality.GOOD, at, at)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def client_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pair = generate_certificate(tmp_path_factory.mktemp("client-pki"), "test-client",
                                application_uri="urn:gasops:test-client")
    return pair.certificate, pair.private_key


@pytest.fixture(scope="module")
async def historian(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DuckDBHistorian]:
    h = DuckDBHistorian(tmp_path_factory.mktemp("history") / "history.duckdb")
    await h.start()
    minute = dt.timedelta(minutes=1)
    await h.write([Point(P_OUT, T0, 2510.0), Point(P_OUT, T0 + minute, 2520.0),
                   Point(P_OUT, T0 + 2 * minute, None, Quality.BAD_SENSOR_FAILURE),
                   Point(P_OUT, T0 + 3 * minute, 2540.0, Quality.UNCERTAIN_LAST_USABLE_VALUE),
                   Point(DOOR, T0, 0.0), Point(DOOR, T0 + minute, 1.0), Point(STARTS, T0, 7.0)])
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture(scope="module")
def store() -> TagStore:
    s = TagStore(DEFS)
    at = now()
    s.update_many({P_OUT: good(2500.0, at), FLOW: good(812.5, at), DOOR: good(False, at),
                   VALVE: good(100.0, at), T_GAS: good(6.5, at), P_OUT_2: good(2.6, at),
                   U_POL: good(-1.1, at), STARTS: good(3, at)})
    return s


@pytest.fixture(scope="module")
def port() -> FakePort:
    return FakePort()


@pytest.fixture(scope="module")
def bus() -> Broadcast:
    return Broadcast()


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory, store: TagStore, historian: DuckDBHistorian,
                 bus: Broadcast, port: FakePort) -> AsyncIterator[IntegratorServer]:
    srv = IntegratorServer(store, host="127.0.0.1", port=free_port(), historian=historian, bus=bus,
                           cert_dir=tmp_path_factory.mktemp("server-pki"), users=users,
                           area_names={"north": "North district", "south": "South district"}, commands=port)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


Connect = Callable[..., AbstractAsyncContextManager[Client]]


@pytest.fixture
def connect(client_pki: tuple[Path, Path]) -> Connect:
    """``async with connect(server, user, password) as client``: a Basic256Sha256 session."""

    @contextlib.asynccontextmanager
    async def session(server: IntegratorServer, user: str | None = "olga", password: str = "s3cret",
                      mode: str = "SignAndEncrypt", trusted: bool = True) -> AsyncIterator[Client]:
        if trusted:  # an administrator put this client's certificate on the server's trust list
            trust(server, client_pki[0])
        client = Client(server.endpoint, timeout=10)
        client.application_uri = "urn:gasops:test-client"
        client.session_timeout = 60_000
        await client.set_security(security_policies.SecurityPolicyBasic256Sha256, str(client_pki[0]),
                                  str(client_pki[1]), server_certificate=str(server.certificate),
                                  mode=getattr(ua.MessageSecurityMode, mode))
        if user is not None:
            client.set_user(user)
            client.set_password(password)
        await client.connect()
        try:
            yield client
        finally:
            await client.disconnect()

    return session


def trust(server: IntegratorServer, certificate: Path) -> None:
    """Put a client certificate on `server`'s trust list, as an administrator would."""
    server.trust.trusted_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(certificate, server.trust.trusted_dir)


async def browse(client: Client, *names: str) -> Node:
    """Objects/GasNetwork/<names...> by browse name."""
    ns = await client.get_namespace_index(NAMESPACE_URI)
    return await client.nodes.objects.get_child([f"{ns}:GasNetwork", *(f"{ns}:{n}" for n in names)])


async def child_names(node: Node) -> set[str]:
    return {(await c.read_browse_name()).Name for c in await node.get_children()}


class Changes:
    """A data-change handler that queues (node id identifier, DataValue)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, ua.DataValue]] = asyncio.Queue()

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.queue.put_nowait((node.nodeid.Identifier, data.monitored_item.Value))

    async def next_for(self, ident: str, predicate: Callable[[ua.DataValue], bool]) -> ua.DataValue:
        async with asyncio.timeout(WITHIN_S):
            while True:
                got, dv = await self.queue.get()
                if got == ident and predicate(dv):
                    return dv


class Events:
    """An event handler that queues events."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def event_notification(self, event: Any) -> None:
        self.queue.put_nowait(event)

    async def next(self) -> Any:
        async with asyncio.timeout(WITHIN_S):
            return await self.queue.get()


# --------------------------------------------------------------------------- address space

async def test_browse_district_station_tag_with_engineering_units_and_range(
        server: IntegratorServer, connect: Connect) -> None:
    async with connect(server, "integ") as client:
        network = await browse(client)
        assert await child_names(network) == {"North district", "South district", "Unassigned"}
        assert await child_names(await browse(client, "North district")) == {"GRP-01"}
        assert await child_names(await browse(client, "Unassigned")) == {"SKZ-7"}
        station = await browse(client, "North district", "GRP-01")
        assert await child_names(station) == {"p_out", "flow", "door", "valve_pos", "t_gas", "Select",
                                              "Operate", "Cancel"}

        p_out = await browse(client, "North district", "GRP-01", "p_out")
        ns = await client.get_namespace_index(NAMESPACE_URI)
        assert p_out.nodeid == ua.NodeId(P_OUT, ns)  # nsu=urn:gasops:server;s=<tag path>
        dv = await p_out.read_data_value()
        assert dv.Value.Value == 2500.0 and dv.Value.VariantType is ua.VariantType.Double
        assert dv.StatusCode.is_good() and dv.SourceTimestamp is not None and dv.ServerTimestamp is not None
        assert await p_out.read_type_definition() == ua.NodeId(ua.ObjectIds.AnalogItemType)
        assert (await p_out.read_description()).Text == "Outlet pressure"
        units = await (await p_out.get_child(f"{ns}:EngineeringUnits")).read_value()
        assert (units.NamespaceUri, units.UnitId, units.DisplayName.Text) == (UNECE, 0x50414C, "Pa")  # PAL
        eu_range = await (await p_out.get_child(f"{ns}:EURange")).read_value()
        assert (eu_range.Low, eu_range.High) == (0.0, 6000.0)

        t_gas = await browse(client, "North district", "GRP-01", "t_gas")
        units = await (await t_gas.get_child(f"{ns}:EngineeringUnits")).read_value()
        assert (units.UnitId, units.DisplayName.Text) == (0x43454C, "°C")  # CEL

        flow = await browse(client, "North district", "GRP-01", "flow")  # no range: BaseAnalogType
        assert await flow.read_type_definition() == ua.NodeId(ua.ObjectIds.BaseAnalogType)
        assert await child_names(flow) == {"EngineeringUnits"}
        units = await (await flow.get_child(f"{ns}:EngineeringUnits")).read_value()
        assert (units.UnitId, units.DisplayName.Text) == (0x4D5148, "m³/h")  # MQH

        door = await browse(client, "North district", "GRP-01", "door")
        assert await door.read_type_definition() == ua.NodeId(ua.ObjectIds.BaseDataVariableType)
        assert (await door.read_data_value()).Value.VariantType is ua.VariantType.Boolean
        starts = await browse(client, "South district", "M-100", "starts")
        assert (await starts.read_data_value()).Value == ua.Variant(3, ua.VariantType.Int64)
        assert await child_names(await browse(client, "South district", "GRP-02")) == {"p_out"}  # no methods

        access = await p_out.read_attribute(ua.AttributeIds.UserAccessLevel)
        assert access.Value.Value == ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
        assert (await p_out.read_attribute(ua.AttributeIds.Historizing)).Value.Value is True


async def test_subscription_follows_the_store_and_a_bad_status_propagates(
        server: IntegratorServer, store: TagStore, connect: Connect) -> None:
    async with connect(server, "kolya") as client:  # crew may read and subscribe
        changes = Changes()
        sub = await client.create_subscription(50, changes)
        node = client.get_node(ua.NodeId(T_GAS, server.namespace_index))
        await sub.subscribe_data_change(node)
        await changes.next_for(T_GAS, lambda dv: dv.Value.Value == 6.5)  # the current value first

        measured = now() - dt.timedelta(seconds=3)
        store.update(T_GAS, TagValue(7.25, Quality.GOOD, measured, now()))
        start = time.monotonic()
        dv = await changes.next_for(T_GAS, lambda dv: dv.Value.Value == 7.25)
        assert time.monotonic() - start < 2.0  # 50 ms publishing; slack for a loaded 2-core runner
        assert dv.SourceTimestamp == measured and dv.StatusCode.is_good()
        assert dv.ServerTimestamp is not None and dv.ServerTimestamp > measured

        store.update(T_GAS, TagValue(7.25, Quality.BAD_SENSOR_FAILURE, measured, now()))
        dv = await changes.next_for(T_GAS, lambda dv: not dv.StatusCode.is_good())
        assert dv.StatusCode.value == Quality.BAD_SENSOR_FAILURE and dv.Value.Value is None

        store.update(T_GAS, TagValue(7.5, Quality.UNCERTAIN_LAST_USABLE_VALUE, now(), now()))
        dv = await changes.next_for(T_GAS, lambda dv: dv.StatusCode.is_uncertain())
        assert dv.StatusCode.value == Quality.UNCERTAIN_LAST_USABLE_VALUE and dv.Value.Value == 7.5
        await sub.delete()
    store.update(T_GAS, good(6.5))


async def test_writes_to_variables_are_refused(server: IntegratorServer, store: TagStore,
                                               connect: Connect) -> None:
    async with connect(server, "olga") as client:  # an operator: control goes through methods
        valve = client.get_node(ua.NodeId(VALVE, server.namespace_index))
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await valve.write_value(ua.DataValue(ua.Variant(10.0, ua.VariantType.Double)))
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await valve.write_attribute(ua.AttributeIds.DisplayName,
                                        ua.DataValue(ua.Variant(ua.LocalizedText("x"))))
        assert (await valve.read_value()) == 100.0
    state = store.get(VALVE)
    assert state is not None and state.value.value == 100.0


# --------------------------------------------------------------------------- history

async def test_history_read_raw_serves_the_historian(server: IntegratorServer, connect: Connect) -> None:
    async with connect(server, "integ") as client:
        ns = server.namespace_index
        p_out = client.get_node(ua.NodeId(P_OUT, ns))
        values = await p_out.read_raw_history(T0, T0 + dt.timedelta(minutes=3))  # both ends inclusive
        assert [v.SourceTimestamp for v in values] == [T0 + dt.timedelta(minutes=i) for i in range(4)]
        assert [v.Value.Value for v in values] == [2510.0, 2520.0, None, 2540.0]
        assert [v.StatusCode.value for v in values] == [
            Quality.GOOD, Quality.GOOD, Quality.BAD_SENSOR_FAILURE, Quality.UNCERTAIN_LAST_USABLE_VALUE]
        newest_first = await p_out.read_raw_history(T0 + dt.timedelta(hours=1), T0)
        assert [v.Value.Value for v in newest_first] == [2540.0, None, 2520.0, 2510.0]
        first_two = await p_out.read_raw_history(T0, None, numvalues=2)
        assert [v.Value.Value for v in first_two] == [2510.0, 2520.0]

        door = await client.get_node(ua.NodeId(DOOR, ns)).read_raw_history(T0, T0 + dt.timedelta(hours=1))
        assert [v.Value for v in door] == [ua.Variant(False, ua.VariantType.Boolean),
                                           ua.Variant(True, ua.VariantType.Boolean)]
        starts = await client.get_node(ua.NodeId(STARTS, ns)).read_raw_history(T0, T0 + dt.timedelta(hours=1))
        assert [v.Value for v in starts] == [ua.Variant(7, ua.VariantType.Int64)]

        assert await client.get_node(ua.NodeId(FLOW, ns)).read_raw_history(T0, now()) == []  # no data
        assert await p_out.read_raw_history(T0 - dt.timedelta(days=2), T0 - dt.timedelta(days=1)) == []


# --------------------------------------------------------------------------- alarms

@pytest.mark.parametrize("priority", list(Priority))
async def test_an_alarm_on_the_bus_arrives_as_an_alarm_condition_event(
        priority: Priority, server: IntegratorServer, bus: Broadcast, connect: Connect) -> None:
    async with connect(server, "integ") as client:
        on_server, on_station = Events(), Events()
        sub_server = await client.create_subscription(50, on_server)
        await sub_server.subscribe_events(client.nodes.server, ua.ObjectIds.AlarmConditionType)
        sub_station = await client.create_subscription(50, on_station)
        await sub_station.subscribe_events(await browse(client, "North district", "GRP-01"),
                                           ua.ObjectIds.AlarmConditionType)
        at = now().replace(microsecond=0)
        event = AlarmEvent(f"{P_OUT}:hi", EventKind.activated, at, AlarmStatus.unack, AlarmMode.in_service,
                           True, priority, tag=P_OUT, area_id="north", value=3300.0,
                           message="Outlet pressure high", activated_at=at)
        bus.publish(ALARMS_TOPIC, event.to_message())
        for got in (await on_server.next(), await on_station.next()):
            assert got.Severity == SEVERITY[priority] == {1: 250, 2: 500, 3: 750, 4: 1000}[int(priority)]
            assert got.SourceName == P_OUT
            assert got.Message.Text == "Outlet pressure high"
            assert got.EventType == ua.NodeId(ua.ObjectIds.AlarmConditionType)
            assert got.Time == at and got.ConditionName == f"{P_OUT}:hi"
            assert getattr(got, "ActiveState/Id") is True and getattr(got, "AckedState/Id") is False
            assert got.SourceNode == ua.NodeId(P_OUT, server.namespace_index) and got.Retain is True

        acked = AlarmEvent(f"{P_OUT}:hi", EventKind.acknowledged, now(), AlarmStatus.acked,
                           AlarmMode.in_service, True, priority, tag=P_OUT, user="olga", message="")
        bus.publish(ALARMS_TOPIC, {"type": "resync"})  # ignored
        bus.publish(ALARMS_TOPIC, acked.to_message())
        got = await on_server.next()
        assert getattr(got, "ActiveState/Id") is True and getattr(got, "AckedState/Id") is True
        assert got.Message.Text == f"{P_OUT}:hi: acknowledged"
        await sub_server.delete()
        await sub_station.delete()


# --------------------------------------------------------------------------- methods

async def test_operator_select_operate_cancel_reach_the_port(server: IntegratorServer, port: FakePort,
                                                             connect: Connect) -> None:
    port.calls.clear()
    async with connect(server, "olga") as client:
        ns = server.namespace_index
        station = await browse(client, "North district", "GRP-01")
        selected = json.loads(await station.call_method(f"{ns}:Select", "close", 0.0, "leak on the outlet"))
        assert selected == {"command_id": "cmd-1", "state": "selected", "target": "GRP-01"}
        operated = json.loads(await station.call_method(f"{ns}:Operate", selected["command_id"]))
        assert operated == {"command_id": "cmd-1", "state": "executed"}
        cancelled = json.loads(await station.call_method(f"{ns}:Cancel", "cmd-9"))
        assert cancelled["state"] == "cancelled"
        with pytest.raises(ua.uaerrors.BadTypeMismatch):
            await station.call_method(f"{ns}:Select", "open", "fifty", "x")
        with pytest.raises(ua.uaerrors.BadArgumentsMissing):
            await station.call_method(f"{ns}:Operate")
    assert port.calls == [("select", "olga", "operator", "GRP-01", "close", 0.0, "leak on the outlet"),
                          ("operate", "olga", "operator", "cmd-1"), ("cancel", "olga", "operator", "cmd-9")]


async def call_raw(client: Client, obj: Node, method: str, *args: ua.Variant) -> ua.CallMethodResult:
    """CallMethod without asyncua's raise-on-Bad, to see the output arguments of a refusal."""
    ns = await client.get_namespace_index(NAMESPACE_URI)
    method_id = (await obj.get_child(f"{ns}:{method}")).nodeid
    request = ua.CallMethodRequest(ObjectId=obj.nodeid, MethodId=method_id, InputArguments=list(args))
    (result,) = await client.uaclient.call([request])
    return result


async def test_a_crew_member_is_refused_before_the_port(server: IntegratorServer, port: FakePort,
                                                        connect: Connect) -> None:
    port.calls.clear()
    async with connect(server, "kolya") as client:
        ns = server.namespace_index
        station = await browse(client, "North district", "GRP-01")
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await station.call_method(f"{ns}:Select", "open", 50.0, "try")
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await station.call_method(f"{ns}:Operate", "cmd-1")
        result = await call_raw(client, station, "Cancel", ua.Variant("cmd-1"))
        assert result.StatusCode.value == ua.StatusCodes.BadUserAccessDenied
        assert "'crew' may not send commands" in json.loads(result.OutputArguments[0].Value)["message"]
    assert port.calls == []


@pytest.mark.parametrize(("refusal", "code"), [
    (CommandRefused("interlock: GRP-01 is in maintenance"), ua.StatusCodes.BadInvalidState),
    (CommandDenied("GRP-01 is outside your areas"), ua.StatusCodes.BadUserAccessDenied),
])
async def test_a_refusal_of_the_port_is_a_bad_status_with_its_message(
        refusal: CommandRefused, code: int, server: IntegratorServer, port: FakePort,
        connect: Connect) -> None:
    port.calls.clear()
    port.refuse = refusal
    try:
        async with connect(server, "olga") as client:
            station = await browse(client, "North district", "GRP-01")
            result = await call_raw(client, station, "Select", ua.Variant("open"),
                                    ua.Variant(50.0, ua.VariantType.Double), ua.Variant("test"))
            assert result.StatusCode.value == code
            body = json.loads(result.OutputArguments[0].Value)
            assert body == {"ok": False, "status": ua.StatusCode(code).name, "message": refusal.message}
            with pytest.raises(ua.UaStatusCodeError) as raised:
                await station.call_method(f"{server.namespace_index}:Operate", "cmd-1")
            assert raised.value.code == code
    finally:
        port.refuse = None
    assert [c[0] for c in port.calls] == ["select", "operate"]


# --------------------------------------------------------------------------- security

async def test_only_basic256sha256_endpoints_with_user_name_tokens(server: IntegratorServer) -> None:
    endpoints = await Client(server.endpoint, timeout=10).connect_and_get_server_endpoints()
    offered = {(e.SecurityPolicyUri, e.SecurityMode) for e in endpoints}
    b256 = security_policies.SecurityPolicyBasic256Sha256.URI
    assert offered == {(b256, ua.MessageSecurityMode.Sign), (b256, ua.MessageSecurityMode.SignAndEncrypt)}
    assert {t.TokenType for e in endpoints for t in e.UserIdentityTokens} == {ua.UserTokenType.UserName}
    assert all(e.Server.ApplicationUri == APPLICATION_URI for e in endpoints)


async def test_a_client_without_security_cannot_connect(server: IntegratorServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    plain = Client(server.endpoint, timeout=10)
    plain.set_user("olga")
    plain.set_password("s3cret")
    with pytest.raises(ua.UaError, match="No matching endpoints"):
        await plain.connect()

    # A client that ignores the endpoint list and activates a session over the None channel
    # (which asyncua keeps open for GetEndpoints) is refused by the server itself.
    fake = ua.EndpointDescription(
        EndpointUrl=server.endpoint, SecurityMode=ua.MessageSecurityMode.None_,
        SecurityPolicyUri=security_policies.SecurityPolicyNone.URI,
        UserIdentityTokens=[ua.UserTokenPolicy(PolicyId="username", TokenType=ua.UserTokenType.UserName,
                                               SecurityPolicyUri=security_policies.SecurityPolicyNone.URI)])
    monkeypatch.setattr(Client, "find_endpoint", staticmethod(lambda *args: fake))
    rogue = Client(server.endpoint, timeout=10)
    rogue.set_user("olga")
    rogue.set_password("s3cret")
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        await rogue.connect()
    await rogue.disconnect()


@pytest.mark.parametrize(("user", "password", "error"), [
    (None, "", ua.uaerrors.BadIdentityTokenRejected),  # anonymous
    ("olga", "guess", ua.uaerrors.BadUserAccessDenied),
    ("nobody", "s3cret", ua.uaerrors.BadUserAccessDenied),
    ("petrov", "s3cret", ua.uaerrors.BadUserAccessDenied),  # a consumer may not read telemetry
])
async def test_sessions_are_refused(user: str | None, password: str, error: type[Exception],
                                    server: IntegratorServer, connect: Connect) -> None:
    with pytest.raises(error):
        async with connect(server, user, password):
            pass


async def test_an_unknown_client_certificate_is_refused_until_an_administrator_trusts_it(
        tmp_path: Path, connect: Connect) -> None:
    store = TagStore([TagDef(P_OUT, unit="Pa")])
    srv = IntegratorServer(store, port=free_port(), cert_dir=tmp_path / "pki", users=users)
    await srv.start()
    try:
        with pytest.raises(ua.uaerrors.BadCertificateUntrusted):
            async with connect(srv, "olga", trusted=False):
                pass
        # the refused certificate waits in rejected/ (also with the right password)
        (rejected,) = srv.trust.rejected_dir.iterdir()
        assert rejected.name.startswith("test-client-") and rejected.suffix == ".der"
        assert not any(srv.trust.trusted_dir.iterdir())
        rejected.rename(srv.trust.trusted_dir / rejected.name)  # the administrator's decision
        async with connect(srv, "olga", trusted=False) as client:  # no restart needed
            assert await child_names(await browse(client)) == {"Unassigned"}
        (srv.trust.trusted_dir / rejected.name).unlink()  # and taken back
        with pytest.raises(ua.uaerrors.BadCertificateUntrusted):
            async with connect(srv, "olga", trusted=False):
                pass
    finally:
        await srv.stop()


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_both_secure_modes_serve_sessions(mode: str, server: IntegratorServer,
                                                 connect: Connect) -> None:
    async with connect(server, "integ", mode=mode) as client:
        assert await client.get_node(ua.NodeId(P_OUT_2, server.namespace_index)).read_value() == 2.6


async def test_anonymous_when_allowed_reads_but_cannot_command(
        tmp_path: Path, store: TagStore, port: FakePort, connect: Connect) -> None:
    srv = IntegratorServer(store, port=free_port(), cert_dir=tmp_path / "pki", users=users,
                           allow_anonymous=True, commands=port)
    port.calls.clear()
    async with srv, connect(srv, None) as client:
        assert await client.get_node(ua.NodeId(U_POL, srv.namespace_index)).read_value() == -1.1
        station = await browse(client, "north", "GRP-01")  # no area_names: the id
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await station.call_method(f"{srv.namespace_index}:Select", "open", 1.0, "anonymous")
    assert port.calls == []


# --------------------------------------------------------------------------- lifecycle

async def test_start_stop_idempotent_no_leaked_tasks_certificate_kept(tmp_path: Path,
                                                                       connect: Connect) -> None:
    before = asyncio.all_tasks()
    store = TagStore([TagDef(P_OUT, unit="Pa")])
    srv = IntegratorServer(store, port=free_port(), cert_dir=tmp_path / "pki", users=users, bus=Broadcast())
    await srv.start()
    await srv.start()
    assert srv.running and srv.certificate is not None
    certificate = srv.certificate.read_bytes()
    async with connect(srv, "integ") as client:
        node = await browse(client, "Unassigned", "GRP-01", "p_out")
        assert (await node.read_data_value()).Value.Value is None  # no value yet
        changes = Changes()
        await (await client.create_subscription(50, changes)).subscribe_data_change(node)
        store.update(P_OUT, good(1.5))
        await changes.next_for(P_OUT, lambda dv: dv.Value.Value == 1.5)
        await asyncio.to_thread(store.update, P_OUT, good(2.5))  # a driver feeding from a thread
        await changes.next_for(P_OUT, lambda dv: dv.Value.Value == 2.5)
    await srv.stop()
    await srv.stop()
    assert not srv.running
    leaked = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert not leaked, leaked
    await srv.start()  # restarts with the certificate made on first start
    try:
        assert srv.certificate.read_bytes() == certificate
    finally:
        await srv.stop()


async def test_tags_defined_after_start_appear_with_their_first_value(tmp_path: Path,
                                                                      connect: Connect) -> None:
    """A smart meter's tags are defined on its first push, long after the server started: each
    gets its variable (and its asset and district, if new) with its first value, no restart."""
    store = TagStore([TagDef(P_OUT, unit="Pa", area_id="north")])
    srv = IntegratorServer(store, port=free_port(), cert_dir=tmp_path / "pki", users=users,
                           area_names={"north": "North district", "east": "East district"},
                           commands=FakePort(), include=lambda t: not t.path.startswith("twin/"))
    await srv.start()
    try:
        async with connect(srv, "olga") as client:
            assert await child_names(await browse(client)) == {"North district"}
            meter_vb, p_in, valve = "meter/M-900/vb", "station/GRP-01/p_in", "valve/V-9/position"
            store.define(TagDef(meter_vb, unit="m3", area_id="east"))  # new asset, new district
            store.define(TagDef(p_in, unit="Pa", area_id="north", range_low=0.0, range_high=6e5))
            store.define(TagDef(valve, unit="%", area_id="east", writable=True))
            store.define(TagDef("twin/node/N1/p", unit="Pa", area_id="east"))  # left out
            store.update_many({meter_vb: good(1234.5), p_in: good(301_000.0), valve: good(100.0),
                               "twin/node/N1/p": good(2800.0)})
            async with asyncio.timeout(WITHIN_S):
                # polled (noqa): a client sees the address space only by reading it
                while "East district" not in await child_names(await browse(client)):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            node = await browse(client, "East district", "M-900", "vb")
            ns = await client.get_namespace_index(NAMESPACE_URI)
            assert node.nodeid == ua.NodeId(meter_vb, ns)
            async with asyncio.timeout(WITHIN_S):  # the value lands just after the node
                while (await node.read_data_value()).Value.Value != 1234.5:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            units = await (await node.get_child(f"{ns}:EngineeringUnits")).read_value()
            assert units.DisplayName.Text == "m³"
            station = await browse(client, "North district", "GRP-01")  # an existing asset
            assert await child_names(station) == {"p_out", "p_in"}
            eu_range = await (await station.get_child([f"{ns}:p_in", f"{ns}:EURange"])).read_value()
            assert (eu_range.Low, eu_range.High) == (0.0, 6e5)
            assert await child_names(await browse(client, "East district", "V-9")) == {
                "position", "Select", "Operate", "Cancel"}  # writable: the control methods too
            assert await child_names(await browse(client, "East district")) == {"M-900", "V-9"}
            changes = Changes()
            await (await client.create_subscription(50, changes)).subscribe_data_change(node)
            store.update(meter_vb, good(1240.0))
            await changes.next_for(meter_vb, lambda dv: dv.Value.Value == 1240.0)
    finally:
        await srv.stop()


async def test_a_failed_start_leaves_nothing_behind(tmp_path: Path) -> None:
    store = TagStore([TagDef(P_OUT, unit="Pa")])
    srv = IntegratorServer(store, port=free_port(), cert_dir=tmp_path / "pki", users=users)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(srv.endpoint.rsplit(":", 1)[1])))
        taken.listen()
        before = asyncio.all_tasks()
        with pytest.raises(OSError, match="address already in use"):
            await srv.start()
        assert not srv.running and not {t for t in asyncio.all_tasks() - before if not t.done()}
    store.update(P_OUT, good(1.0))  # no listener left behind to fail
    await srv.stop()  # harmless


# --------------------------------------------------------------------------- the plan, without a server

def test_plan_groups_tags_into_districts_and_assets() -> None:
    defs = [TagDef("station/GRP-01/p_out", area_id="n"), TagDef("station/GRP-01/line/2/p", area_id="n"),
            TagDef("meter/M-1/v", asset_id="GRP-01", area_id="n"),  # the registry's asset id wins
            TagDef("station/GRP-02/p_out", area_id="s"), TagDef("station/GRP-02/x/p_out", area_id="s"),
            TagDef("skz/SKZ-1/u"), TagDef("skz/SKZ-1/i", area_id="e"),  # asset area: first one that has one
            TagDef("weather/t_air", area_id="n"), TagDef("dup/D-1/p", area_id="x")]
    plan = plan_address_space(defs, {"n": "Center", "s": "Center", "e": "East"})
    assert [(d.area_id, d.name) for d in plan] == [
        ("n", "Center (n)"), ("s", "Center (s)"), ("e", "East"), ("x", "x")]  # clashing names get their id
    center = plan[0]
    assert [(a.id, a.kind, [n for n, _ in a.tags]) for a in center.assets] == [
        ("GRP-01", "meter", ["line.2.p", "p_out", "v"])]
    assert [n for n, _ in center.tags] == ["t_air"]  # no asset: directly in the district
    assert [(a.id, [n for n, _ in a.tags]) for a in plan[1].assets] == [("GRP-02", ["p_out", "x.p_out"])]
    assert [(a.id, [n for n, _ in a.tags]) for a in plan[2].assets] == [("SKZ-1", ["i", "u"])]
    clash = plan_address_space([TagDef("a/X/p"), TagDef("b/X/p")])  # same browse name under one asset
    assert [n for n, _ in clash[0].assets[0].tags] == ["a/X/p", "b/X/p"]
    assert clash[0].name == "Unassigned" and not clash[0].assets[0].controllable


def test_engineering_units_fall_back_to_a_display_name() -> None:
    known = eu_information("kWh")
    assert (known.NamespaceUri, known.UnitId, known.DisplayName.Text) == (UNECE, 0x4B5748, "kW·h")
    assert eu_information("GJ").UnitId == 0x4756 and eu_information("%").UnitId == 0x5031
    assert eu_information("m³").UnitId == eu_information("m3").UnitId == 0x4D5451
    other = eu_information("mm")
    assert (other.NamespaceUri, other.UnitId, other.DisplayName.Text) == (NAMESPACE_URI, -1, "mm")


# --------------------------------------------------------------------------- an independent client

@pytest.fixture(scope="module")
def node_client() -> str:
    """The node executable, with node-opcua-client installed from the lock file (npm ci, once)."""
    node = shutil.which("node")
    if node is None:
        skip_or_fail(f"{SERVICE_SKIP_PREFIX} node/npm not found (the node-opcua client test)")
    if not (NODE_DIR / "node_modules" / "node-opcua-client" / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None:
            skip_or_fail(f"{SERVICE_SKIP_PREFIX} node/npm: npm not found to install node-opcua-client")
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                              cwd=NODE_DIR, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            skip_or_fail(f"{SERVICE_SKIP_PREFIX} node/npm: npm ci in {NODE_DIR} failed: {done.stderr[-500:]}")
    return node


async def node_process(node: str, options: dict[str, Any], config: Path) -> tuple[int, str, str]:
    """Run client.mjs with `options` and node-opcua's PKI in `config`: (exit code, out, err)."""
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "client.mjs"), json.dumps(options), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "XDG_CONFIG_HOME": str(config)})
    try:
        async with asyncio.timeout(90):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def trust_node_client(node: str, server: IntegratorServer, config: Path) -> None:
    """The OPC UA trust workflow with node-opcua's own certificate (made on its first run): the
    server refuses it and keeps it in rejected/; the administrator moves it to trusted/."""
    options = {"endpoint": server.endpoint, "user": "nobody", "password": "-",
               "namespaceUri": NAMESPACE_URI, "path": [], "timeoutMs": 20_000}
    code, out, err = await node_process(node, options, config)
    assert code != 0 and "BadCertificateUntrusted" in out + err, (out + err)[-2000:]
    (refused,) = [p for p in server.trust.rejected_dir.iterdir()
                  if p.name.startswith("gasops-node-test-client")]
    refused.rename(server.trust.trusted_dir / refused.name)


async def run_node_client(node: str, server: IntegratorServer, store: TagStore, config: Path,
                          user: str) -> dict[str, Any]:
    options = {"endpoint": server.endpoint, "user": user, "password": "s3cret", "namespaceUri": NAMESPACE_URI,
               "path": ["North district", "GRP-01", "p_out"], "historyStart": T0.isoformat(),
               "historyEnd": (T0 + dt.timedelta(hours=1)).isoformat(),
               "select": {"action": "open", "value": 42.5, "reason": "node-opcua test"}, "timeoutMs": 20_000}

    async def keep_changing() -> None:  # the client waits for a change after subscribing
        value = 2500.0
        while True:
            await asyncio.sleep(0.2)  # a plant that changes every 200 ms
            value += 1.0
            store.update(P_OUT, good(value))

    changer = asyncio.get_running_loop().create_task(keep_changing())
    try:
        code, out, err = await node_process(node, options, config)
    finally:
        changer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await changer
    assert code == 0, f"node client failed: {out} {err[-2000:]}"
    (line,) = [x for x in out.splitlines() if x.startswith("SUMMARY ")]
    return json.loads(line.removeprefix("SUMMARY "))  # type: ignore[no-any-return]


async def test_node_opcua_client_as_operator_and_as_crew(
        node_client: str, server: IntegratorServer, store: TagStore, port: FakePort,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    config = tmp_path_factory.mktemp("node-opcua-config")
    await trust_node_client(node_client, server, config)  # refused first, then trusted
    port.calls.clear()
    summary = await run_node_client(node_client, server, store, config, "olga")
    assert summary["security"] == {"mode": "SignAndEncrypt",
                                   "policy": security_policies.SecurityPolicyBasic256Sha256.URI}
    assert summary["browsed"] == ["GasNetwork", "North district", "GRP-01", "p_out"]
    assert summary["nodeId"] == f"ns={server.namespace_index};s={P_OUT}"
    assert summary["status"] == "Good" and summary["dataType"] == "Double" and summary["value"] >= 2500
    assert summary["engineeringUnits"] == {"displayName": "Pa", "unitId": 0x50414C, "namespaceUri": UNECE}
    assert summary["euRange"] == {"low": 0.0, "high": 6000.0}
    assert len(summary["changes"]) == 2 and summary["changes"][0] != summary["changes"][1]
    assert summary["history"]["status"] == "Good"
    assert [(v["value"], v["status"]) for v in summary["history"]["values"]] == [
        (2510, "Good"), (2520, "Good"), (None, "BadSensorFailure"), (2540, "UncertainLastUsableValue")]
    assert summary["select"]["status"] == "Good"
    assert json.loads(summary["select"]["output"][0])["state"] == "selected"
    assert summary["operate"]["status"] == "Good"
    assert json.loads(summary["operate"]["output"][0])["state"] == "executed"
    assert port.calls == [("select", "olga", "operator", "GRP-01", "open", 42.5, "node-opcua test"),
                          ("operate", "olga", "operator", "cmd-1")]

    port.calls.clear()
    crew = await run_node_client(node_client, server, store, config, "kolya")
    assert crew["value"] is not None and len(crew["changes"]) == 2  # crew may read and subscribe
    assert crew["select"]["status"] == "BadUserAccessDenied" and "operate" not in crew
    assert "may not send commands" in json.loads(crew["select"]["output"][0])["message"]
    assert port.calls == []
    store.update(P_OUT, good(2500.0))
