"""The package map of docs/architecture.md, enforced: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"server", "schema", "realtime", "opcua", "control", "twin_jax", "erp", "frontend"}
ALLOWED = {
    "server": OURS,
    "schema": {"schema", "erp", "realtime", "control"},
    "opcua": {"opcua", "realtime"},
    "control": {"control", "realtime"},
    "realtime": {"realtime"},
    "twin_jax": {"twin_jax"},
    "erp": {"erp"},
    "frontend": {"frontend"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_map_allows(package: str) -> None:
    bad = {
        str(p.relative_to(ROOT)): sorted(_imports(p) - ALLOWED[package])
        for p in (ROOT / package).rglob("*.py")
        if "node_modules" not in p.parts and _imports(p) - ALLOWED[package]
    }
    assert bad == {}


def test_sqlalchemy_stays_out_of_the_api_layer() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "schema").rglob("*.py")
                 if "sqlalchemy" in {n.split(".")[0] for n in _all_imports(p)}]
    assert offenders == []


def _all_imports(path: Path) -> set[str]:
    """Imports that run (those under `if TYPE_CHECKING:` only serve type hints)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out
