"""The command history outlives the server process: commands selected, operated and cancelled
on one server are listed, as they stand, by a second server process on the same database while
the first runs, and by the first again after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests._live import LiveServer, start_live_server
from tests.e2e.test_control_api import OPERATE, _select, _wait_value
from tests.e2e.test_field_demo import _seed

LIST = """query($first: Int! = 50, $open: Boolean! = false, $before: String) {
  commands(first: $first, openOnly: $open, before: $before) {
    id state user assetId action value reason outcome checks impact { method } } }"""
CANCEL = """mutation($id: String!) { cancelCommand(commandId: $id, reason: "not now") {
  __typename ... on CommandSuccess { command { state } } } }"""


def _list(live: LiveServer, **variables: Any) -> list[dict[str, Any]]:
    body = live.gql(LIST, variables, role="operator")
    assert "errors" not in body, body
    return body["data"]["commands"]  # type: ignore[no-any-return]


def _flush(live: LiveServer) -> None:
    app = live.server.config.app
    asyncio.run_coroutine_threadsafe(app.state.control.flush(), app.state.loop).result(5)


def _restarted(var: Path, url: str, tokens: dict[str, str]) -> LiveServer:
    live = start_live_server(var, url, create_users=False)
    live.tokens.update(tokens)  # the same users and signing key
    return live


def test_the_command_history_outlives_the_server_process(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gasops.sqlite3'}"
    _seed(url)
    first = start_live_server(tmp_path / "a", url, simulate_field=True, poll_period_s=0.2)
    tokens = dict(first.tokens)
    try:
        assert _wait_value(first, "valve/V-R1/position") == 100.0
        done = _select(first, "operator", "valve", "V-R1", "set_position", 90.0)["command"]
        operated = first.gql(OPERATE, {"id": done["id"]}, role="operator")
        assert operated["data"]["operateCommand"]["command"]["state"] == "succeeded", operated
        dropped = _select(first, "operator", "valve", "V-R1", "set_position", 95.0)["command"]
        cancel = first.gql(CANCEL, {"id": dropped["id"]}, role="operator")
        assert cancel["data"]["cancelCommand"]["command"]["state"] == "cancelled", cancel
        held = _select(first, "operator", "valve", "V-R1", "set_position", 97.0)["command"]
        ids = [held["id"], dropped["id"], done["id"]]
        listed = _list(first)
        assert [c["id"] for c in listed] == ids
        assert [c["state"] for c in listed] == ["selected", "cancelled", "succeeded"]
        assert [c["id"] for c in _list(first, open=True)] == [held["id"]]
        assert [c["id"] for c in _list(first, first=1, before=held["id"])] == [dropped["id"]]

        _flush(first)
        second = _restarted(tmp_path / "b", url, tokens)  # another process, no field, no memory
        try:
            assert _list(second) == listed
            assert [c["id"] for c in _list(second, open=True)] == [held["id"]]
            assert [c["id"] for c in _list(second, before=dropped["id"])] == [done["id"]]
            unknown = second.gql(LIST, {"before": "CMD-nope"}, role="operator")
            assert "no command 'CMD-nope'" in unknown["errors"][0]["message"]
            first.gql(CANCEL, {"id": held["id"]}, role="operator")
            _flush(first)
            assert _list(second, open=True) == []  # the first process's step, read here
            assert _list(second)[0]["state"] == "cancelled"
        finally:
            second.stop()
        listed = _list(first)
    finally:
        first.stop()

    again = _restarted(tmp_path / "a", url, tokens)
    try:
        after = _list(again)
        assert after == listed and [c["id"] for c in after] == ids
        assert [c["state"] for c in after] == ["cancelled", "cancelled", "succeeded"]
        assert after[2]["outcome"].startswith("read back") and after[2]["value"] == 90.0
        assert after[2]["user"] == "operator" and after[2]["impact"]["method"] == "graph"
        assert "communication" in after[2]["checks"] and after[2]["reason"] == "e2e test"
    finally:
        again.stop()
