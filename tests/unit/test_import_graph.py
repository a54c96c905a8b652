"""The import graph keeps the rooms apart: the functional core (schemas/, streams/, ingest/, signing/ and
the read-model fold) reaches no shell and no I/O library, not even through another module or a
function-local import; controlplane/ has no import cycle. Read from the source with ast, nothing is
imported."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = (
    "agents",
    "cli",
    "controlplane",
    "ingest",
    "projections",
    "schemas",
    "signing",
    "streams",
    "telemetry",
)
CORE_PACKAGES = ("schemas", "streams", "ingest", "signing")
CORE_MODULES = ("projections.fold",)
FORBIDDEN = ("agents", "cli", "controlplane", "faust", "aiokafka", "pymongo")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {
    module_name(p): p for package in PROJECT for p in sorted((REPO / package).rglob("*.py"))
}


def imports(module: str) -> Iterator[str]:
    """Every module ``module`` imports, at the top or inside a function, as absolute names."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "__future__":
                continue
            yield base
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    yield f"{base}.{alias.name}"


def core() -> list[str]:
    return sorted(m for m in MODULES if m.split(".")[0] in CORE_PACKAGES or m in CORE_MODULES)


def reachable(start: str) -> dict[str, str]:
    """Every name imported from ``start`` on, through project modules, with the module importing it."""
    seen: dict[str, str] = {}
    todo = [start]
    visited = {start}
    while todo:
        current = todo.pop()
        for name in imports(current):
            seen.setdefault(name, current)
            if name in MODULES and name not in visited:
                visited.add(name)
                todo.append(name)
    return seen


def test_the_core_reaches_no_shell_and_no_io_library() -> None:
    assert "streams.resolve" in core()
    assert "projections.fold" in core()
    offences = []
    for module in core():
        for name, importer in reachable(module).items():
            if name.split(".")[0] in FORBIDDEN:
                offences.append(f"{module} reaches {name} (imported by {importer})")
    assert offences == []


def test_the_check_sees_function_local_and_transitive_imports() -> None:
    # agents.worker imports faust; cli.main imports its commands lazily, inside functions.
    assert "faust" in {n.split(".")[0] for n in reachable("agents.worker")}
    assert "importlib" in set(imports("cli.main"))


def test_controlplane_has_no_import_cycle() -> None:
    graph = {
        m: sorted({n for n in imports(m) if n in MODULES and n.startswith("controlplane.") and n != m})
        for m in MODULES
        if m.startswith("controlplane.")
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []
