"""The service fixtures start real servers, and a missing service fails the run under CI."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

import tests._services as services
from erp.adapters.db import create_engine
from tests._services import (
    SERVICE_SKIP_PREFIX,
    PostgresCluster,
    drop_postgres_database,
    free_port,
    fresh_postgres_database,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


async def _scalar(url: str, sql: str) -> object:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(text(sql))
    finally:
        await engine.dispose()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 1024 <= port <= 65535


async def test_postgres_url_is_postgresql_15(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
    assert postgres_url.endswith("/gasops")
    version = await _scalar(postgres_url, "SELECT version()")
    assert isinstance(version, str) and version.startswith("PostgreSQL 15"), version
    assert await _scalar(postgres_url, "SELECT current_database()") == "gasops"


async def test_make_pg_database_is_empty_and_dropped(
        make_pg_database: Callable[..., str], postgres_cluster: PostgresCluster) -> None:
    url = make_pg_database()
    name = url.rsplit("/", 1)[1]
    assert await _scalar(url, "SELECT current_database()") == name
    tables = await _scalar(
        url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
    assert tables == 0
    listed = postgres_cluster.psql("SELECT datname FROM pg_database ORDER BY datname")
    assert name in listed.splitlines()


def test_make_pg_database_dropped_the_previous_one(postgres_cluster: PostgresCluster) -> None:
    names = postgres_cluster.psql("SELECT datname FROM pg_database").splitlines()
    assert not [n for n in names if n.startswith("gasops_t_")], names


async def test_fresh_postgres_database_from_async_code(postgres_url: str) -> None:
    name = f"gasops_a_{uuid.uuid4().hex[:8]}"
    url = await fresh_postgres_database(postgres_url, name)
    try:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:  # a live connection: the drop must force it off
                await conn.execute(text("CREATE TABLE t (x int)"))
                await conn.execute(text("INSERT INTO t VALUES (42)"))
            assert await _scalar(url, "SELECT x FROM t") == 42
        finally:
            await engine.dispose()
    finally:
        await drop_postgres_database(postgres_url, name)
    assert await _scalar(
        postgres_url, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == 0


async def test_redis_round_trip(redis_url: str, request: pytest.FixtureRequest) -> None:
    import redis.asyncio as aioredis

    assert request.node.get_closest_marker("services") is not None  # added by the plugin

    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.set("gasops:probe", "42", ex=60)
        assert await client.get("gasops:probe") == b"42"
        info = await client.info("server")
        assert str(info["redis_version"]).split(".")[0].isdigit()
    finally:
        await client.aclose()


def test_chromium_runs_headless(chromium_path: str) -> None:
    version = subprocess.run([chromium_path, "--version"], capture_output=True, text=True,
                             timeout=60, check=True)
    assert "Chromium" in version.stdout
    dom = subprocess.run(
        [chromium_path, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--dump-dom", "data:text/html,<p id=probe>gasops</p>"],
        capture_output=True, text=True, timeout=60, check=True)
    assert '<p id="probe">gasops</p>' in dom.stdout


# --------------------------------------------------------------------------- start failures

def test_redis_retries_a_port_taken_meanwhile(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server = shutil.which("redis-server")
    if server is None:
        services.skip_or_fail(f"{SERVICE_SKIP_PREFIX} redis-server not found")
    with socket.socket() as squatter:  # accepts connections but never answers PING
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = itertools.chain([taken], iter(free_port, None))
        monkeypatch.setattr(services, "free_port", lambda: next(ports))
        proc, port = services._start_redis(server, tmp_path)
        try:
            assert port != taken
            assert services._redis_answers(port)
        finally:
            services._stop(proc)


def test_postgres_start_failure_shows_the_server_log(monkeypatch: pytest.MonkeyPatch) -> None:
    if services._find_pg_bindir() is None:
        services.skip_or_fail(f"{SERVICE_SKIP_PREFIX} PostgreSQL binaries not found")
    real_run = services._PgRunner.run

    def bad_option(self: services._PgRunner, tool: str, *args: str,
                   timeout: float) -> subprocess.CompletedProcess[str]:
        args = tuple(a.replace("max_connections=200", "max_connections=lots") for a in args)
        return real_run(self, tool, *args, timeout=timeout)

    monkeypatch.setattr(services._PgRunner, "run", bad_option)
    with pytest.raises(pytest.fail.Exception) as failed, services._postgres_cluster():
        pass
    message = str(failed.value)
    assert "server log tail" in message
    assert 'invalid value for parameter "max_connections": "lots"' in message


# --------------------------------------------------------------------------- skip -> fail

_PROBE_TESTS = textwrap.dedent(f'''
    import pytest
    from tests._services import skip_or_fail

    def test_missing_via_helper():
        skip_or_fail("{SERVICE_SKIP_PREFIX} FakeDB not installed")

    def test_missing_via_plain_skip():
        pytest.skip("{SERVICE_SKIP_PREFIX} FakeQueue not installed")

    def test_missing_redis_fixture(redis_url):
        pass

    def test_unrelated_skip():
        pytest.skip("not a service: stays a skip")
''')


def _run_probe(tmp_path: Path, *, require: bool) -> dict[str, str]:
    """Run the probe tests in a child pytest with no redis-server on PATH; outcome per test."""
    (tmp_path / "test_probe.py").write_text(_PROBE_TESTS)
    junit = tmp_path / f"junit-{int(require)}.xml"
    env = {k: v for k, v in os.environ.items() if k != "GASOPS_REQUIRE_SERVICES"}
    env.update(PATH=str(tmp_path), PYTHONPATH=str(REPO_ROOT), PYTHONDONTWRITEBYTECODE="1")
    if require:
        env["GASOPS_REQUIRE_SERVICES"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests._services", "-p", "no:cacheprovider",
         "-p", "no:asyncio", "-q", f"--junitxml={junit}", "--rootdir", str(tmp_path),
         "test_probe.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == (1 if require else 0), done.stdout + done.stderr
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in {"skipped", "failure", "error"}]
        outcomes[case.attrib["name"]] = kinds[0] if kinds else "passed"
    return outcomes


def test_missing_service_skips_locally(tmp_path: Path) -> None:
    assert _run_probe(tmp_path, require=False) == {
        "test_missing_via_helper": "skipped",
        "test_missing_via_plain_skip": "skipped",
        "test_missing_redis_fixture": "skipped",
        "test_unrelated_skip": "skipped",
    }


def test_missing_service_fails_under_ci(tmp_path: Path) -> None:
    assert _run_probe(tmp_path, require=True) == {
        "test_missing_via_helper": "failure",
        "test_missing_via_plain_skip": "failure",
        "test_missing_redis_fixture": "error",  # fails in setup
        "test_unrelated_skip": "skipped",
    }

