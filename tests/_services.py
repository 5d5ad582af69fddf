"""Pytest plugin: throwaway PostgreSQL, Redis and Chromium for integration tests.

Load it with ``from tests._services import *`` in the root conftest (fixtures and hooks are
exported through ``__all__``) or with ``-p tests._services``.

Each service fixture starts its own server on a free loopback port and stops it afterwards; no
system service is used. A missing service skips the test with a reason that starts with
``"service unavailable:"``. Under ``GASOPS_REQUIRE_SERVICES=1`` (CI) it fails instead: the
fixtures call :func:`skip_or_fail`, and the ``pytest_runtest_makereport`` hook below turns any
other skip with that prefix into a failure, so CI cannot pass green with nothing tested.

Servers are started with blocking subprocess calls from sync session fixtures, outside any
event loop; waiting for a server to come up is the one place where polling with a short sleep
is unavoidable.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

__all__ = [
    "SERVICE_SKIP_PREFIX",
    "PostgresCluster",
    "chromium_path",
    "drop_postgres_database",
    "free_port",
    "fresh_postgres_database",
    "make_pg_database",
    "postgres_cluster",
    "postgres_url",
    "pytest_collection_modifyitems",
    "pytest_make_collect_report",
    "pytest_runtest_makereport",
    "redis_url",
    "require_services",
    "skip_or_fail",
]

SERVICE_SKIP_PREFIX = "service unavailable:"
REQUIRE_ENV = "GASOPS_REQUIRE_SERVICES"

_START_ATTEMPTS = 5  # fresh ports to try when the chosen one was taken meanwhile
_PORT_TAKEN = re.compile(r"address already in use|could not bind|could not create listen socket",
                         re.IGNORECASE)
_SERVICE_FIXTURES = frozenset(
    {"postgres_cluster", "postgres_url", "make_pg_database", "redis_url", "chromium_path"})
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


# --------------------------------------------------------------------------- policy

def require_services() -> bool:
    """True when missing services must fail the run (``GASOPS_REQUIRE_SERVICES=1``)."""
    return os.environ.get(REQUIRE_ENV, "") == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with `reason` locally; fail with it when services are required."""
    if require_services():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def _skip_reason(longrepr: Any) -> str | None:
    """The reason of a skip report (``longrepr`` is ``(path, lineno, "Skipped: reason")``)."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return None


def _as_service_failure(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a "service unavailable" skip into a failure, in place, under CI. Idempotent."""
    if not (report.skipped and require_services()):
        return
    reason = _skip_reason(report.longrepr)
    if reason is None or not reason.startswith(SERVICE_SKIP_PREFIX):
        return
    report.outcome = "failed"
    report.longrepr = f"{reason} ({REQUIRE_ENV}=1: a missing service fails the run)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                     pytest.TestReport]:
    """Under CI, a test skipped for a missing service is reported as failed."""
    report = yield
    _as_service_failure(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
        collector: pytest.Collector) -> Generator[None, pytest.CollectReport,
                                                  pytest.CollectReport]:
    """Same for a module skipped at import (``pytest.skip(..., allow_module_level=True)``)."""
    report = yield
    _as_service_failure(report)
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a service fixture ``services``, so ``-m "not services"`` works."""
    for item in items:
        if _SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


# --------------------------------------------------------------------------- helpers

def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty log>"


def _child_env() -> dict[str, str]:
    """The environment for server tools: English messages, no stray libpq settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return env


# --------------------------------------------------------------------------- PostgreSQL

def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


def _find_pg_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: PATH first, then the newest Debian one."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


@dataclass(frozen=True)
class PostgresCluster:
    """A running throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, superuser ``postgres``)."""

    bindir: Path
    datadir: Path
    port: int
    host: str = "127.0.0.1"
    user: str = "postgres"

    def url(self, database: str = "gasops", driver: str = "asyncpg") -> str:
        """The SQLAlchemy URL of `database` (``postgresql+asyncpg://...`` by default)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` through ``psql`` over TCP; raise with psql's message on error."""
        cmd = [str(self.bindir / "psql"), "-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
               "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", database, "-c", sql]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=_child_env(),
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}) on {sql!r}: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh random name by default); return its URL."""
        name = name or f"gasops_t_{uuid.uuid4().hex[:12]}"
        _check_db_name(name)
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop `name`, disconnecting whoever is still connected to it."""
        _check_db_name(name)
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _check_db_name(name: str) -> None:
    if not _DB_NAME.match(name):
        raise ValueError(f"database name {name!r} must match {_DB_NAME.pattern}")


class _PgRunner:
    """Runs PostgreSQL server tools as ``postgres`` when we are root (initdb refuses root)."""

    def __init__(self, bindir: Path, workdir: Path) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise _Unavailable("runuser not found (needed to run PostgreSQL as root)")
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise _Unavailable("no 'postgres' user to run PostgreSQL as") from None
            self.prefix = [runuser, "-u", "postgres", "--"]

    def run(self, tool: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run `tool` from the bin dir; never raises on a non-zero exit, only on timeout."""
        cmd = [*self.prefix, str(self.bindir / tool), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=self.workdir, env=_child_env(), stdin=subprocess.DEVNULL,
                              check=False)


class _Unavailable(Exception):
    """A service cannot run here at all (as opposed to failing to start)."""


def _start_postgres(runner: _PgRunner, datadir: Path) -> int:
    """``pg_ctl start`` on a free port, retrying when the port was taken; return the port."""
    log = datadir / "log"
    for _ in range(_START_ATTEMPTS):
        port = free_port()
        log.unlink(missing_ok=True)
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {datadir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        done = runner.run("pg_ctl", "-D", str(datadir), "-l", str(log), "-w", "-t", "60",
                          "-o", options, "start", timeout=90)
        if done.returncode == 0:
            return port
        tail = _tail(log)
        if _PORT_TAKEN.search(tail) is None:
            pytest.fail(f"PostgreSQL failed to start (pg_ctl exit {done.returncode}):\n"
                        f"{done.stdout}{done.stderr}\n--- server log tail ({log}) ---\n{tail}",
                        pytrace=False)
        runner.run("pg_ctl", "-D", str(datadir), "-m", "immediate", "-w", "stop", timeout=30)
    pytest.fail(f"PostgreSQL: no free port after {_START_ATTEMPTS} attempts", pytrace=False)


@contextlib.contextmanager
def _postgres_cluster() -> Iterator[PostgresCluster]:
    bindir = _find_pg_bindir()
    if bindir is None:
        skip_or_fail(f"{SERVICE_SKIP_PREFIX} PostgreSQL binaries not found (initdb, pg_ctl)")
    datadir = Path(tempfile.mkdtemp(prefix="gasops-pg-"))
    started = False
    runner: _PgRunner | None = None
    try:
        try:
            runner = _PgRunner(bindir, Path(tempfile.gettempdir()))
        except _Unavailable as exc:
            skip_or_fail(f"{SERVICE_SKIP_PREFIX} PostgreSQL: {exc}")
        assert runner is not None
        datadir.chmod(0o700)
        if runner.prefix:
            shutil.chown(datadir, user="postgres", group="postgres")
        done = runner.run("initdb", "-D", str(datadir), "-U", "postgres", "--auth=trust",
                          "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
                          timeout=120)
        if done.returncode != 0:
            pytest.fail(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}",
                        pytrace=False)
        port = _start_postgres(runner, datadir)
        started = True
        cluster = PostgresCluster(bindir=bindir, datadir=datadir, port=port)
        cluster.psql('CREATE DATABASE "gasops"')
        yield cluster
    finally:
        if started and runner is not None:
            stop = runner.run("pg_ctl", "-D", str(datadir), "-m", "immediate", "-w", "-t", "30",
                              "stop", timeout=60)
            if stop.returncode != 0:  # leave the directory: the server may still be using it
                raise RuntimeError(f"pg_ctl stop failed: {stop.stdout}{stop.stderr}")
        shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster with an empty ``gasops`` database, for the whole session."""
    with _postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """``postgresql+asyncpg://postgres@127.0.0.1:PORT/gasops`` (shared by the whole session)."""
    return postgres_cluster.url("gasops")


@pytest.fixture
def make_pg_database(postgres_cluster: PostgresCluster) -> Iterator[Callable[..., str]]:
    """A factory ``make_pg_database(name=None) -> url`` of empty databases, dropped after the test.

    For a database per module, call ``postgres_cluster.create_database()`` and
    ``drop_database()`` from a module-scoped fixture instead.
    """
    made: list[str] = []

    def make(name: str | None = None) -> str:
        url = postgres_cluster.create_database(name)
        made.append(url.rsplit("/", 1)[1])
        return url

    yield make
    for name in reversed(made):
        postgres_cluster.drop_database(name)


def _asyncpg_dsn(url: str, database: str) -> str:
    base = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
    return base.rsplit("/", 1)[0] + "/" + database


async def _admin_execute(admin_url: str, sql: str) -> None:
    """Run `sql` on the ``postgres`` maintenance database of the cluster of `admin_url`."""
    import asyncpg  # type: ignore[import-untyped]  # imported late: only PostgreSQL tests need it

    conn = await asyncpg.connect(_asyncpg_dsn(admin_url, "postgres"), timeout=30)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fresh_postgres_database(admin_url: str, name: str) -> str:
    """Create empty database `name` next to `admin_url` (from async code); return its URL."""
    _check_db_name(name)
    await _admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def drop_postgres_database(admin_url: str, name: str) -> None:
    """Drop database `name` next to `admin_url`, disconnecting its users."""
    _check_db_name(name)
    await _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- Redis

def _redis_answers(port: int) -> bool:
    """One PING, no retries, short timeouts (whatever holds the port may not be Redis)."""
    import redis  # imported late: only Redis tests need it
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5,
                         socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _start_redis(server: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``redis-server`` on a free port and wait for PING; retry when the port was taken."""
    log = workdir / "log"
    for _ in range(_START_ATTEMPTS):
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", str(workdir)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        deadline = time.monotonic() + 15
        try:
            while proc.poll() is None:
                if _redis_answers(port):
                    return proc, port
                if time.monotonic() > deadline:  # running yet silent: give up, don't hang
                    pytest.fail(f"redis-server did not answer PING in 15 s:\n{_tail(log)}",
                                pytrace=False)
                time.sleep(0.02)  # waiting on another process: nothing to wait on but time
        except BaseException:
            _stop(proc)
            raise
        if _PORT_TAKEN.search(_tail(log)) is None:
            pytest.fail(f"redis-server exited with {proc.returncode}:\n{_tail(log)}",
                        pytrace=False)
    pytest.fail(f"redis-server: no free port after {_START_ATTEMPTS} attempts", pytrace=False)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a private ``redis-server`` (no persistence)."""
    server = shutil.which("redis-server")
    if server is None:
        skip_or_fail(f"{SERVICE_SKIP_PREFIX} redis-server not found")
    workdir = Path(tempfile.mkdtemp(prefix="gasops-redis-"))
    try:
        proc, port = _start_redis(server, workdir)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- Chromium

@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium executable (drive it headless with ``--no-sandbox`` as root)."""
    for candidate in (shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    skip_or_fail(f"{SERVICE_SKIP_PREFIX} chromium not found")
