"""The layers of docs/architecture.md hold: kernel <- feature packages <- tower; dashboard talks HTTP only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("collector", "sla_rules", "alerting", "reconcilers")
PACKAGES = ("kernel", *FEATURES, "dashboard", "tower")

# Which of our packages each package may import.
ALLOWED: dict[str, set[str]] = {
    "kernel": {"kernel"},
    **{f: {"kernel", f} for f in FEATURES},
    "dashboard": {"dashboard"},
    "tower": set(PACKAGES) - {"dashboard"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_lower_layers(package: str) -> None:
    violations = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
        for path in sorted((ROOT / package).rglob("*.py"))
        if imported_packages(path) - ALLOWED[package]
    }
    assert violations == {}, f"{package} imports packages above or beside it: {violations}"


def test_the_check_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from tower.app import build_tower\nimport collector.service\n")
    assert imported_packages(bad) == {"tower", "collector"}


# The dashboard is a client of the HTTP API: no database driver, no store, no tower package.
STORE_LIBRARIES = {"chdb", "clickhouse_connect", "sqlalchemy"}


def test_the_dashboard_never_opens_the_store() -> None:
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "dashboard").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names = {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
        }
        if names & STORE_LIBRARIES:
            found[str(path.relative_to(ROOT))] = sorted(names & STORE_LIBRARIES)
    assert found == {}
    assert (ROOT / "dashboard" / "client.py").is_file()  # its one way to the tower
