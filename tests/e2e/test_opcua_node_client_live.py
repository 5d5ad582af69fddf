"""An independent OPC UA client (node-opcua) against the live server: the integrators' OPC UA
server in the app, its Select/Operate methods running the real command pipeline on the
simulated field (a real OPC UA write to the station simulator, read back through the driver),
checked through GraphQL (the command, the tag) and the audit log; a crew member is refused.

The node script is the one of tests/integration/test_opcua_server.py (against a fake command
port there); its `node_client` fixture finds node and node-opcua-client (or skips, or fails
under GASOPS_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opcua.server import NAMESPACE_URI
from tests._live import PASSWORD, LiveServer, start_live_server
from tests._services import free_port
from tests.e2e.test_control_api import _value, _wait_value
from tests.e2e.test_field_demo import _seed
from tests.integration.test_opcua_server import (  # noqa: F401  (node_client: a fixture)
    NODE_DIR,
    node_client,
    trust_node_client,
)

BASIC256SHA256 = "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
VALVE = "station/GRP-01/valve_pos"  # the station's outlet valve, on the simulated OPC UA field
PATH = ["Test T1", "GRP-01", "valve_pos"]  # the district folder carries the area's name
STEPS = ("command.selected", "command.operate", "command.written", "command.succeeded")


@pytest.fixture(scope="module")
def live_opcua(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The simulated field with the integrators' OPC UA server on (as in test_control_api)."""
    var = tmp_path_factory.mktemp("control-opcua-node")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    _seed(url)
    server = start_live_server(var, url, simulate_field=True, poll_period_s=0.2,
                               opcua_server_port=free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def node_config(tmp_path_factory: pytest.TempPathFactory, node_client: str,  # noqa: F811
                live_opcua: LiveServer) -> Path:
    """node-opcua's PKI folder, shared by the runs of this module (its certificate made once,
    refused by the server at first, then trusted as an administrator would)."""
    config = tmp_path_factory.mktemp("node-opcua-live")
    integrators = live_opcua.server.config.app.state.integrators
    asyncio.run(trust_node_client(node_client, integrators.server, config))
    return config


def _run_node(node: str, live: LiveServer, config: Path, user: str, action: str,
              await_value: float | None = None) -> dict[str, Any]:
    """One node-opcua session as `user`: browse to the valve, read it, Select `action`, Operate."""
    endpoint = live.server.config.app.state.integrators.server.endpoint
    options: dict[str, Any] = {
        "endpoint": endpoint, "user": user, "password": PASSWORD, "namespaceUri": NAMESPACE_URI,
        "path": PATH, "subscribe": False, "timeoutMs": 30_000,
        "select": {"action": action, "value": 0.0, "reason": f"node-opcua live {action}"}}
    if await_value is not None:
        options["awaitValue"] = await_value
    try:
        done = subprocess.run([node, str(NODE_DIR / "client.mjs"), json.dumps(options)],
                              capture_output=True, text=True, timeout=90, check=False,
                              env={**os.environ, "XDG_CONFIG_HOME": str(config)})
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"node client hung: {exc.stdout!r} {exc.stderr!r}") from None
    assert done.returncode == 0, f"node client failed: {done.stdout} {done.stderr[-2000:]}"
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("SUMMARY ")]
    return json.loads(line.removeprefix("SUMMARY "))  # type: ignore[no-any-return]


def _commands(live: LiveServer) -> list[dict[str, Any]]:
    body = live.gql("{ commands { id assetId action state outcome user } }", role="dispatcher")
    assert "errors" not in body, body
    return body["data"]["commands"]  # type: ignore[no-any-return]


def _audit(live: LiveServer, command_id: str) -> list[dict[str, Any]]:
    """The audit records of one command, oldest first, once the queued events are written."""
    app = live.server.config.app
    asyncio.run_coroutine_threadsafe(app.state.control.flush(), app.state.loop).result(10)
    body = live.gql('query($t: String!) { auditLog(first: 50, filter: {targetId: $t}) { edges '
                    '{ node { seq operation outcome actor role targetIds } } } }',
                    {"t": f"command:{command_id}"}, role="admin")
    assert "errors" not in body, body
    return sorted((e["node"] for e in body["data"]["auditLog"]["edges"]), key=lambda n: n["seq"])


def _operate(live: LiveServer, node: str, config: Path, action: str, was: float,
             want: float) -> str:
    """Select and Operate `action` as the operator over node-opcua; the command id, checked."""
    summary = _run_node(node, live, config, "operator", action, await_value=want)
    assert summary["security"] == {"mode": "SignAndEncrypt", "policy": BASIC256SHA256}, summary
    assert summary["browsed"] == ["GasNetwork", *PATH], summary
    assert summary["status"] == "Good" and summary["value"] == was, summary
    assert summary["select"]["status"] == "Good", summary
    selected = json.loads(summary["select"]["output"][0])
    assert selected["state"] == "selected" and selected["action"] == action, selected
    assert summary["operate"]["status"] == "Good", summary
    operated = json.loads(summary["operate"]["output"][0])
    assert operated["command_id"] == selected["command_id"], (selected, operated)
    assert operated["state"] == "succeeded" and operated["outcome"] == f"read back {want}", operated
    assert summary["after"] == want, summary  # the independent client reads the new position too
    return str(selected["command_id"])


def test_node_opcua_closes_and_reopens_a_stations_valve_through_the_pipeline(
        node_client: str, live_opcua: LiveServer, node_config: Path) -> None:  # noqa: F811
    live = live_opcua
    assert _wait_value(live, VALVE, within=60.0) == 100.0
    closed = _operate(live, node_client, node_config, "close", 100.0, 0.0)
    assert _value(live, VALVE) == 0.0
    by_id = {c["id"]: c for c in _commands(live)}
    assert by_id[closed] == {"id": closed, "assetId": "GRP-01", "action": "close",
                             "state": "succeeded", "outcome": "read back 0.0", "user": "operator"}
    steps = _audit(live, closed)
    assert [s["operation"] for s in steps] == list(STEPS), steps
    assert all(s["actor"] == "operator" and s["role"] == "operator" and s["outcome"] == "ok"
               and "station:GRP-01" in s["targetIds"] for s in steps), steps

    opened = _operate(live, node_client, node_config, "open", 0.0, 100.0)  # and back, as it was
    assert _value(live, VALVE) == 100.0
    assert {"id": opened, "assetId": "GRP-01", "action": "open", "state": "succeeded",
            "outcome": "read back 100.0", "user": "operator"} in _commands(live)
    assert [s["operation"] for s in _audit(live, opened)] == list(STEPS)


def test_node_opcua_as_crew_is_refused_at_select(
        node_client: str, live_opcua: LiveServer, node_config: Path) -> None:  # noqa: F811
    live = live_opcua
    before = {c["id"] for c in _commands(live)}
    crew = _run_node(node_client, live, node_config, "crew", "close")
    assert crew["security"] == {"mode": "SignAndEncrypt", "policy": BASIC256SHA256}, crew
    assert crew["value"] is not None  # crew may read
    assert crew["select"]["status"] == "BadUserAccessDenied" and "operate" not in crew, crew
    assert "may not send commands" in json.loads(crew["select"]["output"][0])["message"]
    assert {c["id"] for c in _commands(live)} == before  # nothing selected
    assert _value(live, VALVE) == 100.0
    # the refusal never reached the pipeline, and is audited all the same
    app = live.server.config.app
    asyncio.run_coroutine_threadsafe(app.state.control.flush(), app.state.loop).result(10)
    body = live.gql('{ auditLog(first: 20, filter: {operationPrefix: "command.refused", '
                    'targetId: "station:GRP-01"}) { edges { node { actor role outcome diff } } } }',
                    role="admin")
    assert "errors" not in body, body
    refusals = [e["node"] for e in body["data"]["auditLog"]["edges"] if e["node"]["actor"] == "crew"]
    assert refusals and refusals[0]["role"] == "crew" and refusals[0]["outcome"] == "refused"
    assert refusals[0]["diff"]["via"] == "opcua" and refusals[0]["diff"]["rule"] == "role"
    assert "may not send commands" in refusals[0]["diff"]["message"]
