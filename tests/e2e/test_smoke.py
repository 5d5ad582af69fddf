"""End-to-end smoke over HTTP: login, create, query, refuse, audit."""

from __future__ import annotations

import httpx

from tests._live import LiveServer


def test_health_and_ready(live_server: LiveServer) -> None:
    assert httpx.get(live_server.url + "/health").json() == {"status": "ok"}
    body = httpx.get(live_server.url + "/ready").json()
    assert body["status"] == "ready", body


def test_anonymous_query_is_forbidden(live_server: LiveServer) -> None:
    body = live_server.gql("{ networkSummary { nodes } }", role=None)
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "sign in" in body["errors"][0]["message"]
