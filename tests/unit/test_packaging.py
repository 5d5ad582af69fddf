"""Our top-level packages shadow unrelated PyPI names (`schema`, `control`, …): make sure the
ones imported are this repository's, and that the installed set is consistent."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ["server", "schema", "realtime", "opcua", "control", "twin_jax", "erp", "frontend"]


@pytest.mark.parametrize("name", PACKAGES)
def test_package_imports_from_this_repository(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().parent == REPO / name


def test_pip_check_passes() -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_console_script_is_installed() -> None:
    result = subprocess.run([str(Path(sys.executable).with_name("gasops")), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for verb in ("migrate", "seed-demo", "serve", "demo", "network", "audit", "user", "token"):
        assert verb in result.stdout
