"""The house's layering, read from the source with ``ast`` (imports at module level and inside
functions both count): ``llome_core`` < ``api`` < ``worker`` < ``llome_cli`` (``benchmarks``
beside the command line); no import cycle among the modules of ``api``, ``worker`` and
``llome_core``; ``llome_core`` imports no web, database or Celery package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"llome_core": 0, "api": 1, "worker": 2, "llome_cli": 3, "benchmarks": 3}
CYCLE_FREE = ("llome_core", "api", "worker")
NOT_IN_CORE = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "celery",
    "kombu",
    "redis",
    "psycopg",
    "uvicorn",
)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports: ``from a.b import c`` names ``a.b.c`` when that is a module
    of ours, else ``a.b``; relative imports are resolved against ``name``'s package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in MODULES else base)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    return LAYERS.get(module.split(".")[0])


def test_no_lower_layer_imports_a_higher_one() -> None:
    upward = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if (low := _layer(name)) is not None and (high := _layer(target)) is not None and high > low
    )
    assert upward == []


def test_llome_core_imports_no_web_database_or_celery_package() -> None:
    banned = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.split(".")[0] == "llome_core"
        for target in targets
        if target.split(".")[0] in NOT_IN_CORE
    )
    assert banned == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.mark.parametrize("package", CYCLE_FREE)
def test_no_import_cycle_among_the_modules_of(package: str) -> None:
    # Per package: with no upward import (the test above), a cycle cannot cross packages.
    ours = {name for name in GRAPH if name.split(".")[0] == package}
    graph = {name: {t for t in GRAPH[name] if t in ours and t != name} for name in ours}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", ["api.main", "worker.tasks", "llome_cli", "llome_core.loop"])
def test_the_import_reader_sees_the_entry_modules(module: str) -> None:
    assert GRAPH.get(module)
