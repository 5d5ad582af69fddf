"""Shared fixtures: service plugins, a migrated database on SQLite and PostgreSQL, a live server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from erp.adapters.db import create_engine, migrate
from tests._live import LiveServer, start_live_server
from tests._services import *  # noqa: F403 - fixtures and hooks of the service plugin
from tests._services import __all__ as _service_names

__all__ = [*_service_names, "db_engine", "live_server", "migrated_engine"]


async def migrated_engine(backend: str, request: pytest.FixtureRequest, path: Path,
                          ) -> AsyncEngine:
    """A migrated engine on a fresh database: a SQLite file at `path`, or a new PostgreSQL
    database in the session's cluster (dropped after the test)."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{path}"
    else:
        url = request.getfixturevalue("make_pg_database")()
    engine = create_engine(url)
    await migrate(engine)
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database migrated to head: once on SQLite, once on PostgreSQL."""
    engine = await migrated_engine(request.param, request, tmp_path / "registry.sqlite3")
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A uvicorn server on SQLite with one user per role, shared by a test module."""
    live = start_live_server(tmp_path_factory.mktemp("live"))
    try:
        yield live
    finally:
        live.stop()
