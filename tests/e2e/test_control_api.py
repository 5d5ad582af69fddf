"""Commands end to end on the simulated field: GraphQL select → operate → a real Modbus write
to the simulated actuator or rectifier → read-back through the driver → succeeded; refusals;
and the audit log holding every step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests._live import LiveServer, start_live_server
from tests.e2e.test_alarms_api import _seed_alarms
from tests.e2e.test_field_demo import _seed

COMMAND = "command { id state outcome needsApproval checks impact { consumersCutOff method } }"
SELECT = f"""mutation($k: String!, $a: String!, $act: String!, $v: Float, $r: String!) {{
  selectCommand(targetKind: $k, assetId: $a, action: $act, value: $v, reason: $r) {{
    __typename ... on CommandSuccess {{ {COMMAND} }} ... on CommandRefusal {{ message rule }} }} }}"""
OPERATE = f"""mutation($id: String!) {{ operateCommand(commandId: $id) {{
    __typename ... on CommandSuccess {{ {COMMAND} }} ... on CommandRefusal {{ message rule }} }} }}"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    var = tmp_path_factory.mktemp("control")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    _seed(url)
    _seed_alarms(url)
    server = start_live_server(var, url, simulate_field=True, poll_period_s=0.2)
    try:
        yield server
    finally:
        server.stop()


def _value(live: LiveServer, path: str) -> Any:
    body = live.gql('query($p: String!) { tag(path: $p) { current { value good } } }', {"p": path},
                    role="operator")
    cur = body["data"]["tag"]["current"]
    return cur["value"] if cur and cur["good"] else None


def _wait_value(live: LiveServer, path: str, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        v = _value(live, path)
        if v is not None:
            return v
        time.sleep(0.1)
    raise AssertionError(f"no good value of {path}")


def _select(live: LiveServer, role: str, kind: str, asset: str, action: str,
            value: float | None = None) -> dict[str, Any]:
    body = live.gql(SELECT, {"k": kind, "a": asset, "act": action, "v": value,
                             "r": "e2e test"}, role=role)
    assert "errors" not in body, body
    return body["data"]["selectCommand"]  # type: ignore[no-any-return]


def test_a_valve_moves_over_modbus_and_reads_back(live: LiveServer) -> None:
    assert _wait_value(live, "valve/V-R1/position") == 100.0
    sel = _select(live, "operator", "valve", "V-R1", "set_position", 90.0)
    assert sel["__typename"] == "CommandSuccess", sel
    cmd = sel["command"]
    assert cmd["state"] == "selected" and cmd["impact"]["method"] == "graph"
    assert "communication" in cmd["checks"]
    done = live.gql(OPERATE, {"id": cmd["id"]}, role="operator")["data"]["operateCommand"]
    assert done["__typename"] == "CommandSuccess", done
    assert done["command"]["state"] == "succeeded", done
    assert abs(_value(live, "valve/V-R1/position") - 90.0) <= 2.0


def test_a_stations_outlet_valve_closes_over_opcua_and_reads_back(live: LiveServer) -> None:
    assert _wait_value(live, "station/GRP-01/valve_pos") == 100.0
    for action, want in (("close", 0.0), ("open", 100.0)):  # and back, for the other tests
        sel = _select(live, "dispatcher", "station", "GRP-01", action)
        assert sel["__typename"] == "CommandSuccess", sel
        done = live.gql(OPERATE, {"id": sel["command"]["id"]}, role="dispatcher")
        cmd = done["data"]["operateCommand"]["command"]
        assert cmd["state"] == "succeeded" and cmd["outcome"] == f"read back {want}", cmd
        assert _value(live, "station/GRP-01/valve_pos") == want


def test_an_skz_mode_change_goes_over_modbus_rtu_and_reads_back(live: LiveServer) -> None:
    before = _wait_value(live, "skz/SKZ-01/mode")
    new = 1 if before != 1 else 2
    cmd = _select(live, "dispatcher", "skz", "SKZ-01", "set_skz_mode", float(new))["command"]
    done = live.gql(OPERATE, {"id": cmd["id"]}, role="dispatcher")["data"]["operateCommand"]
    assert done["command"]["state"] == "succeeded", done
    assert _value(live, "skz/SKZ-01/mode") == new


def test_refusals_over_graphql(live: LiveServer) -> None:
    crew = live.gql(SELECT, {"k": "valve", "a": "V-R1", "act": "close", "r": "x"}, role="crew")
    assert crew["data"]["selectCommand"]["__typename"] == "Forbidden"
    manual = _select(live, "operator", "valve", "V-M1", "close")
    assert manual["__typename"] == "CommandRefusal" and manual["rule"] == "target"
    sel = _select(live, "operator", "valve", "V-R1", "set_position", 95.0)["command"]
    other = live.gql(OPERATE, {"id": sel["id"]}, role="dispatcher")["data"]["operateCommand"]
    assert other["__typename"] == "CommandRefusal" and other["rule"] == "owner"
    cancelled = live.gql('mutation($id: String!) { cancelCommand(commandId: $id, reason: "no") '
                         '{ __typename ... on CommandSuccess { command { state } } } }',
                         {"id": sel["id"]}, role="operator")
    assert cancelled["data"]["cancelCommand"]["command"]["state"] == "cancelled"


def test_the_audit_log_holds_every_step(live: LiveServer) -> None:
    app = live.server.config.app
    import asyncio

    asyncio.run_coroutine_threadsafe(app.state.control.flush(), app.state.loop).result(5)
    body = live.gql('{ auditLog(first: 100, filter: {operationPrefix: "command."}) { edges { node '
                    '{ operation outcome actor targetIds } } } }', role="admin")
    ops = [e["node"]["operation"] for e in body["data"]["auditLog"]["edges"]]
    for step in ("command.selected", "command.operate", "command.written", "command.succeeded",
                 "command.refused", "command.cancelled"):
        assert step in ops, (step, ops)


# --------------------------------------------------------------------------- over OPC UA


@pytest.fixture(scope="module")
def live_opcua(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The same field, with the integrators' OPC UA server on."""
    from tests._services import free_port

    var = tmp_path_factory.mktemp("control-opcua")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    _seed(url)
    server = start_live_server(var, url, simulate_field=True, poll_period_s=0.2,
                               opcua_server_port=free_port())
    try:
        yield server
    finally:
        server.stop()


async def test_select_and_operate_over_opcua_run_the_same_pipeline(
        live_opcua: LiveServer, tmp_path: Any) -> None:
    import json

    from asyncua import Client, ua
    from asyncua.crypto import security_policies

    from opcua._security import generate_certificate
    from opcua.server import NAMESPACE_URI
    from tests._live import PASSWORD
    from tests.integration.test_opcua_server import call_raw, trust

    live = live_opcua
    assert _wait_value(live, "valve/V-R1/position") == 100.0
    integrators = live.server.config.app.state.integrators
    pair = generate_certificate(tmp_path, "e2e-client", application_uri="urn:gasops:e2e-client")
    trust(integrators.server, pair.certificate)  # on the server's trust list

    async def session(user: str) -> Client:
        client = Client(integrators.server.endpoint, timeout=40)
        client.application_uri = "urn:gasops:e2e-client"
        await client.set_security(security_policies.SecurityPolicyBasic256Sha256,
                                  str(pair.certificate), str(pair.private_key),
                                  server_certificate=str(integrators.server.certificate),
                                  mode=ua.MessageSecurityMode.SignAndEncrypt)
        client.set_user(user)
        client.set_password(PASSWORD)
        await client.connect()
        return client

    client = await session("operator")
    try:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        valve = client.get_node(ua.NodeId("asset/V-R1", ns))
        selected = await call_raw(client, valve, "Select", ua.Variant("set_position"),
                                  ua.Variant(92.0), ua.Variant("integrator test"))
        assert selected.StatusCode.is_good(), selected
        command_id = json.loads(selected.OutputArguments[0].Value)["command_id"]
        operated = await call_raw(client, valve, "Operate", ua.Variant(command_id))
        outcome = json.loads(operated.OutputArguments[0].Value)
        assert operated.StatusCode.is_good() and outcome["state"] == "succeeded", outcome
    finally:
        await client.disconnect()
    crew = await session("crew")
    try:
        ns = await crew.get_namespace_index(NAMESPACE_URI)
        refused = await call_raw(crew, crew.get_node(ua.NodeId("asset/V-R1", ns)), "Select",
                                 ua.Variant("close"), ua.Variant(0.0), ua.Variant("x"))
        assert refused.StatusCode.value == ua.StatusCodes.BadUserAccessDenied
    finally:
        await crew.disconnect()
    assert abs(_value(live, "valve/V-R1/position") - 92.0) <= 2.0
    commands = live.gql("{ commands { assetId state user } }", role="dispatcher")["data"]["commands"]
    assert {"assetId": "V-R1", "state": "succeeded", "user": "operator"} in commands


def test_maintenance_locks_out_commands_and_suppresses_alarms(live: LiveServer) -> None:
    start = live.gql('mutation { startMaintenance(targetKind: "valve", assetId: "V-R1", '
                     'reason: "WO-17: actuator gearbox") { __typename ... on MaintenanceSuccess '
                     '{ inMaintenance alarmsSuppressed } } }', role="engineer")
    assert start["data"]["startMaintenance"] == {"__typename": "MaintenanceSuccess",
                                                 "inMaintenance": True, "alarmsSuppressed": 2}
    locked = _select(live, "operator", "valve", "V-R1", "set_position", 50.0)
    assert locked["__typename"] == "CommandRefusal" and locked["rule"] == "lockout"
    assert "WO-17" in locked["message"]
    alarms = live.gql('{ activeAlarms(includeNormal: true) { id mode } }', role="operator")
    modes = {a["id"]: a["mode"] for a in alarms["data"]["activeAlarms"]
             if a["id"].startswith("valve/V-R1/")}
    assert modes and set(modes.values()) == {"suppressed"}
    crew = live.gql('mutation { endMaintenance(targetKind: "valve", assetId: "V-R1") '
                    '{ __typename } }', role="crew")
    assert crew["data"]["endMaintenance"]["__typename"] == "Forbidden"
    end = live.gql('mutation { endMaintenance(targetKind: "valve", assetId: "V-R1") '
                   '{ __typename ... on MaintenanceSuccess { inMaintenance } } }', role="engineer")
    assert end["data"]["endMaintenance"]["inMaintenance"] is False
    again = _select(live, "operator", "valve", "V-R1", "set_position", 97.0)
    assert again["__typename"] == "CommandSuccess", again
    live.gql('mutation($id: String!) { cancelCommand(commandId: $id) { __typename } }',
             {"id": again["command"]["id"]}, role="operator")


def test_a_stations_outlet_setpoint_is_written_over_opcua_and_read_back(live: LiveServer) -> None:
    # One command only: GRP-01 was closed and opened above, and 3 in 10 min is its rate limit.
    assert _wait_value(live, "station/GRP-01/p_out_sp") == 2800.0  # the registry's set-point
    sel = _select(live, "dispatcher", "station", "GRP-01", "set_outlet_setpoint", 2750.0)
    assert sel["__typename"] == "CommandSuccess", sel
    done = live.gql(OPERATE, {"id": sel["command"]["id"]}, role="dispatcher")
    cmd = done["data"]["operateCommand"]["command"]
    assert cmd["state"] == "succeeded", cmd
    assert _value(live, "station/GRP-01/p_out_sp") == 2750.0
