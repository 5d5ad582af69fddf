"""Commands end to end on the simulated field: GraphQL select → operate → a real Modbus write
to the simulated actuator or rectifier → read-back through the driver → succeeded; refusals;
and the audit log holding every step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests._live import LiveServer, start_live_server
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
