"""The import graph of each distribution has no cycles (module-level imports, TYPE_CHECKING aside).

A cycle makes import order matter and hides which module is the foundation of which; the
layout in CONTRIBUTING.md relies on there being none.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "eventbus_core": ROOT / "eventbus_core/src/eventbus_core",
    "eventbus_memory": ROOT / "eventbus_memory/src/eventbus_memory",
    "eventbus_redis": ROOT / "eventbus_redis/src/eventbus_redis",
    "eventbus_nats": ROOT / "eventbus_nats/src/eventbus_nats",
}


def module_name(package: str, base: Path, path: Path) -> str:
    parts = [package, *path.relative_to(base).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def top_level_imports(tree: ast.Module) -> list[str]:
    """Modules imported when the module is imported: module level and under plain `if`/`try`."""
    found: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` names both; import_graph keeps the submodule when it
                # is one, else the package.
                found.extend(f"{node.module}:{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    visit(tree.body)
    return found


def import_graph(package: str, base: Path) -> dict[str, set[str]]:
    modules = {module_name(package, base, p): p for p in base.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = top_level_imports(ast.parse(path.read_text()))
        # `from pkg import name` imports pkg/__init__ (a package's own __init__ is not an edge
        # to itself); only edges inside this distribution matter for cycles.
        edges = set()
        for target in targets:
            module, _, attr = target.partition(":")
            edges.add(f"{module}.{attr}" if f"{module}.{attr}" in modules else module)
        graph[name] = {t for t in edges if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycles(package: str) -> None:
    graph = import_graph(package, PACKAGES[package])
    # The package __init__ re-exports its modules; importing `eventbus_core.x` runs the
    # __init__ first, so edges *into* the top __init__ are not cycles of the design.
    for targets in graph.values():
        targets.discard(package)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
