"""The `gasops` command line as a user runs it (subprocesses, own var/ directory)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

GASOPS = str(Path(sys.executable).with_name("gasops"))


def _run(var: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GASOPS_VAR_DIR": str(var), "GASOPS_LOG_LEVEL": "WARNING"}
    return subprocess.run([GASOPS, *args], capture_output=True, text=True, env=env, timeout=120)


def test_migrate_user_token_and_audit_verify(tmp_path: Path) -> None:
    assert _run(tmp_path, "migrate").returncode == 0
    r = _run(tmp_path, "user", "add", "ivanov", "--role", "integrator", "--password",
             "long-enough-1", "--all-areas")
    assert r.returncode == 0, r.stderr
    r = _run(tmp_path, "user", "add", "x", "--role", "pope", "--password", "long-enough-1")
    assert r.returncode == 2 and "role" in r.stderr
    r = _run(tmp_path, "token", "create", "ivanov", "--name", "scada")
    assert r.returncode == 0 and r.stdout.startswith("gso_")
    r = _run(tmp_path, "audit", "verify")
    assert r.returncode == 0 and "intact: 2 records" in r.stdout
    with sqlite3.connect(tmp_path / "gasops.sqlite3") as db:
        db.execute("UPDATE audit_records SET operation = 'nothing' WHERE seq = 1")
    r = _run(tmp_path, "audit", "verify")
    assert r.returncode == 1 and "BROKEN at record 1" in r.stdout
