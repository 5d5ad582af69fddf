"""Settings: environment prefix, derived defaults, the generated secret key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from server.settings import HistorianKind, Settings


def test_defaults_live_under_var_dir(tmp_path: Path) -> None:
    s = Settings(var_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path / 'gasops.sqlite3'}"
    assert s.historian is HistorianKind.duckdb
    assert s.historian_url == str(tmp_path / "history.duckdb")
    assert (s.host, s.port) == ("127.0.0.1", 8000)


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GASOPS_PORT", "9123")
    monkeypatch.setenv("GASOPS_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    monkeypatch.setenv("GASOPS_REDIS_URL", "redis://127.0.0.1:6379/0")
    s = Settings(var_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert s.port == 9123 and s.database_url.startswith("postgresql")
    assert s.redis_url == "redis://127.0.0.1:6379/0"


def test_frozen_and_validated(tmp_path: Path) -> None:
    s = Settings(var_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        s.port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(port=70000, _env_file=None)  # type: ignore[call-arg]


def test_secret_key_is_generated_once_and_private(tmp_path: Path) -> None:
    s = Settings(var_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    key = s.signing_key()
    path = tmp_path / "secret_key"
    assert len(key) >= 48 and path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(var_dir=tmp_path, _env_file=None).signing_key() == key  # type: ignore[call-arg]
    explicit = Settings(var_dir=tmp_path, secret_key="from-settings", _env_file=None)  # type: ignore[call-arg]
    assert explicit.signing_key() == "from-settings"


def test_only_settings_reads_the_environment() -> None:
    root = Path(__file__).resolve().parents[3]
    offenders = [
        str(p.relative_to(root)) for pkg in ("server", "schema", "realtime", "opcua", "control",
                                             "twin_jax", "erp", "frontend")
        for p in (root / pkg).rglob("*.py")
        if p.name != "settings.py" and ("os.environ" in p.read_text() or "getenv" in p.read_text())
    ]
    assert offenders == []
