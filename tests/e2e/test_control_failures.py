"""Commands that fail in the field, end to end on the simulated field: a valve actuator in LOCAL
is refused at select (its selector bit is a tag), one switched to LOCAL mid-stroke never reports
the new position, an SKZ rectifier answers the write with a Modbus exception. Each
command ends failed with the reason; the tag keeps its old, good value; the audit log holds every
step. The faults come from the simulated plant's fault-injection hooks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from realtime.simulators.modbus_plant import ModbusPlant
from tests._live import LiveServer, start_live_server
from tests.e2e.test_control_api import OPERATE, _select, _value, _wait_value
from tests.e2e.test_field_demo import _seed

READBACK_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    var = tmp_path_factory.mktemp("control-failures")
    url = f"sqlite+aiosqlite:///{var / 'gasops.sqlite3'}"
    _seed(url)
    server = start_live_server(var, url, simulate_field=True, poll_period_s=0.2,
                               command_readback_timeout_s=READBACK_TIMEOUT_S)
    try:
        yield server
    finally:
        server.stop()


def _on_loop(live: LiveServer, fn: Callable[..., Any], *args: Any) -> Any:
    """Call `fn` in the server's event loop (where the plants run) and wait for it."""
    app = live.server.config.app

    async def call() -> Any:
        return fn(*args)

    return asyncio.run_coroutine_threadsafe(call(), app.state.loop).result(5)


def _plant_of(live: LiveServer, tag: str) -> tuple[ModbusPlant, int]:
    """The simulated plant serving `tag`, and the tag's unit id on it (from the tag's source)."""
    field = live.server.config.app.state.telemetry.field
    src = field.sources[tag]
    _, port = field.line_addresses[src["line"]]
    plant = next(p for p in field.plants if p.port == port)
    unit = int(src["unit"])
    assert plant.devices[unit].model == src["model"]
    return plant, unit


def _steps(live: LiveServer, command_id: str) -> list[dict[str, Any]]:
    """The command's audit records, oldest first (after flushing the control's queue)."""
    app = live.server.config.app
    asyncio.run_coroutine_threadsafe(app.state.control.flush(), app.state.loop).result(5)
    body = live.gql('query($t: String!) { auditLog(first: 100, filter: {operationPrefix: "command.", '
                    'targetId: $t}) { edges { node { seq operation outcome actor diff } } } }',
                    {"t": f"command:{command_id}"}, role="admin")
    assert "errors" not in body, body
    return sorted((e["node"] for e in body["data"]["auditLog"]["edges"]), key=lambda n: n["seq"])


def _operate(live: LiveServer, role: str, command_id: str) -> dict[str, Any]:
    body = live.gql(OPERATE, {"id": command_id}, role=role)
    assert "errors" not in body, body
    done = body["data"]["operateCommand"]
    assert done["__typename"] == "CommandSuccess", done
    return done["command"]  # type: ignore[no-any-return]


def _good_value(live: LiveServer, path: str) -> Any:
    cur = live.gql('query($p: String!) { tag(path: $p) { current { value good quality } } }',
                   {"p": path}, role="operator")["data"]["tag"]["current"]
    assert cur is not None and cur["good"], cur
    return cur["value"]


def _wait_for(what: str, predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := predicate()):
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.1)
    return got


def _remote(live: LiveServer, path: str = "valve/V-R1/remote") -> Any:
    cur = live.gql('query($p: String!) { tag(path: $p) { current { value good } } }',
                   {"p": path}, role="operator")["data"]["tag"]["current"]
    return cur["value"] if cur and cur["good"] else None


def test_a_valve_in_local_is_refused_at_select(live: LiveServer) -> None:
    """The actuator's selector bit is a tag: LOCAL is known before anything is written."""
    assert _wait_value(live, "valve/V-R1/position") == 100.0
    plant, unit = _plant_of(live, "valve/V-R1/position")
    _wait_for("REMOTE on the remote tag", lambda: _remote(live) is True)
    _on_loop(live, plant.set_local, unit, True)
    try:
        _wait_for("LOCAL on the remote tag", lambda: _remote(live) is False)
        sel = _select(live, "operator", "valve", "V-R1", "set_position", 80.0)
        assert sel["__typename"] == "CommandRefusal" and sel["rule"] == "actuator", sel
        assert "LOCAL" in sel["message"] and "V-R1" in sel["message"]
    finally:
        _on_loop(live, plant.set_local, unit, False)
    _wait_for("REMOTE again", lambda: _remote(live) is True)
    assert plant.devices[unit].values["position"] == 100.0  # nothing was written


def test_a_valve_switched_to_local_mid_stroke_never_reports_the_new_position(
        live: LiveServer) -> None:
    tag = "valve/V-R1/position"
    assert _wait_value(live, tag) == 100.0
    plant, unit = _plant_of(live, tag)
    _wait_for("REMOTE on the remote tag", lambda: _remote(live) is True)
    sel = _select(live, "operator", "valve", "V-R1", "set_position", 80.0)
    assert sel["__typename"] == "CommandSuccess", sel
    command_id = sel["command"]["id"]
    pipeline = live.server.config.app.state.control.pipeline
    outcome: dict[str, Any] = {}
    operating = threading.Thread(target=lambda: outcome.update(_operate(live, "operator", command_id)))
    operating.start()
    try:
        # once it is operating the checks have passed; the field man turns the selector now
        _wait_for("the command operating", lambda: _on_loop(live, lambda: next(
            c.state.value for c in pipeline.commands() if c.id == command_id)) != "selected")
        _on_loop(live, plant.set_local, unit, True)
        operating.join(READBACK_TIMEOUT_S + 30)
        assert not operating.is_alive()
        cmd = outcome
        assert cmd["state"] == "failed", cmd
        assert cmd["outcome"].startswith(f"no read-back of 80.0 within {READBACK_TIMEOUT_S} s "
                                         "(last value "), cmd
        assert 80.0 < plant.devices[unit].values["position"] <= 100.0  # it stopped short
        status = _on_loop(live, lambda: int(plant.devices[unit].values["status"]))
        assert not status & 1 << 5  # the actuator's `remote` bit is off
    finally:
        _on_loop(live, plant.set_local, unit, False)
    steps = _steps(live, cmd["id"])
    assert [s["operation"] for s in steps] == ["command.selected", "command.operate",
                                               "command.written", "command.failed"], steps
    assert all(s["actor"] == "operator" for s in steps)
    assert steps[2]["diff"]["tag"] == tag and steps[2]["diff"]["value"] == 80.0
    assert steps[-1]["diff"]["outcome"] == cmd["outcome"]
    assert steps[-1]["diff"]["state"] == "failed"
    assert [st["outcome"] for st in steps] == ["ok", "ok", "ok", "failed"]  # findable by outcome


def test_an_skz_rectifier_that_rejects_the_write_fails_the_command(live: LiveServer) -> None:
    tag = "skz/SKZ-01/mode"
    before = _wait_value(live, tag)
    new = 1 if before != 1 else 2
    plant, unit = _plant_of(live, tag)
    _on_loop(live, plant.reject_writes, unit, 4)
    try:
        sel = _select(live, "dispatcher", "skz", "SKZ-01", "set_skz_mode", float(new))
        assert sel["__typename"] == "CommandSuccess", sel
        cmd = _operate(live, "dispatcher", sel["command"]["id"])
        assert cmd["state"] == "failed", cmd
        assert cmd["outcome"].startswith("the device refused the write: "), cmd
        assert f"write 'mode' of 'unit-{unit}' refused with exception 0x04" in cmd["outcome"], cmd
        assert _good_value(live, tag) == before
    finally:
        _on_loop(live, plant.reject_writes, unit, None)
    steps = _steps(live, cmd["id"])
    assert [s["operation"] for s in steps] == ["command.selected", "command.operate",
                                               "command.failed"], steps  # nothing was written
    assert all(s["actor"] == "dispatcher" for s in steps)
    assert steps[-1]["diff"]["outcome"] == cmd["outcome"]
    assert steps[-1]["diff"]["state"] == "failed"
    assert _good_value(live, tag) == before
    # the rectifier accepts writes again: the same change now goes through
    sel = _select(live, "dispatcher", "skz", "SKZ-01", "set_skz_mode", float(new))
    assert _operate(live, "dispatcher", sel["command"]["id"])["state"] == "succeeded"
    assert _value(live, tag) == new
