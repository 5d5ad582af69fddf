"""A real uvicorn server on a free loopback port, in a thread, for end-to-end tests."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from erp.adapters.db import create_engine, migrate, session_factory
from erp.domain.access import Role
from erp.services import accounts, audit
from server.app import create_app
from server.settings import Settings
from tests._services import free_port

__all__ = ["LiveServer", "PASSWORD", "start_live_server"]

PASSWORD = "test-password-1"


@dataclass
class LiveServer:
    """A running server: its URLs, settings, and a token per role (one user per role)."""

    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base HTTP URL."""
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def graphql_url(self) -> str:
        """HTTP GraphQL endpoint."""
        return self.url + "/graphql"

    @property
    def ws_url(self) -> str:
        """WebSocket GraphQL endpoint."""
        return f"ws://127.0.0.1:{self.settings.port}/graphql"

    def gql(self, query: str, variables: dict[str, Any] | None = None,
            role: str | None = "admin", token: str | None = None) -> dict[str, Any]:
        """POST a GraphQL operation as `role` (or with `token`); the JSON body."""
        headers = {}
        tok = token or (self.tokens[role] if role else None)
        if tok:
            headers["authorization"] = f"Bearer {tok}"
        r = httpx.post(self.graphql_url, json={"query": query, "variables": variables or {}},
                       headers=headers, timeout=30)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout=15)


async def _prepare(settings: Settings, create_users: bool) -> None:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        if not create_users:
            return
        async with session_factory(engine).begin() as s:
            for role in Role:
                await accounts.create_user(s, role.value, PASSWORD, role.value,
                                           audit.Actor("test", "admin"), all_areas=True)
    finally:
        await engine.dispose()


def start_live_server(var_dir: Path, database_url: str | None = None, *,
                      create_users: bool = True, port: int | None = None,
                      **overrides: Any) -> LiveServer:
    """Migrate, add one user per role (password `PASSWORD`), serve, and log everyone in.

    The live twin is off unless a test asks for it (`twin_enabled=True`): importing JAX and
    compiling a network costs seconds that most servers of the suite do not need. `port` lets a
    test restart a server where its clients expect it.
    """
    overrides.setdefault("twin_enabled", False)
    settings = Settings(var_dir=var_dir, database_url=database_url or "",
                        port=port or free_port(),
                        secret_key="test-secret-key-not-for-production", **overrides)
    # Runs in a fresh loop in a worker thread: the caller may itself be inside a running loop.
    prep = threading.Thread(target=lambda: asyncio.run(_prepare(settings, create_users)))
    prep.start()
    prep.join()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port,
                            log_level="warning", ws="websockets-sansio", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    live = LiveServer(settings, server, thread)
    if not create_users:
        return live
    for role in Role:
        body = live.gql('mutation($u: String!, $p: String!) { login(username: $u, password: $p)'
                        ' { ... on LoginSuccess { accessToken } } }',
                        {"u": role.value, "p": PASSWORD}, role=None)
        live.tokens[role.value] = body["data"]["login"]["accessToken"]
    return live
