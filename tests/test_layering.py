"""The import direction of DESIGN §1, read from the source: guard/ and compiler/ are pure,
shared/ is the ground floor, api/ and workers/ never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"api", "workers", "guard", "compiler", "shared", "warden", "bench", "tests"}

ALLOWED = {
    "guard": {"guard"},
    "compiler": {"compiler"},
    "shared": {"shared"},
    "api": {"api", "shared", "guard", "compiler"},
    "workers": {"workers", "shared", "guard", "compiler"},
}
# Pure packages may use these third-party libraries and nothing that does I/O for them.
PURE_THIRD_PARTY = {"cryptography", "rfc8785", "openai", "anthropic"}
FORBIDDEN_IN_PURE = {"flask", "celery", "kombu", "psycopg2", "redis", "requests", "gunicorn", "werkzeug",
                     "marshmallow", "httpx", "socket", "urllib.request", "http.client", "subprocess"}


def _modules(path: Path) -> set[str]:
    """Full dotted names of absolute imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def _imports(path: Path) -> set[str]:
    return {m.split(".")[0] for m in _modules(path)}


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_direction(package: str) -> None:
    problems = []
    for f in _files(package):
        for mod in _imports(f) & PROJECT:
            if mod not in ALLOWED[package]:
                problems.append(f"{f.relative_to(ROOT)} imports {mod}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", ["guard", "compiler"])
def test_pure_packages_do_no_io(package: str) -> None:
    problems = []
    for f in _files(package):
        mods = _modules(f)
        bad = {m for m in mods if m in FORBIDDEN_IN_PURE or m.split(".")[0] in FORBIDDEN_IN_PURE}
        if bad:
            problems.append(f"{f.relative_to(ROOT)} imports {sorted(bad)}")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_imports() -> None:
    """Guard against a vacuous pass: the files exist and the parser finds imports in them."""
    assert _files("api") and _files("guard")
    assert "shared" in _imports(ROOT / "api" / "app.py")
