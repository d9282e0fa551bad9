"""Layering: the import graph of harness/, adapters/ and metrics/ has no cycle, and lower layers never import
higher ones (data → convert → adapter → metrics → report; the runner above them, the launchers on top).

The graph is read from the sources with `ast` (no import runs): every ``import``/``from`` statement, at module
level and inside functions, that names a project module. Imports under ``if TYPE_CHECKING:`` are left out:
they never run, so they cannot close a cycle. An ``import a.b`` needs ``a/__init__.py`` too; package
``__init__`` modules are nodes like any other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "adapters", "metrics")
MAX_LINES = 400

#: What the runner, the launchers and the report are: nothing below them may import them.
RUNNER = {"harness.plan", "harness.planner", "harness.run", "harness.launch_local", "harness.launch_slurm",
          "harness.status"}
REPORT = {"harness.report", "harness.figures", "harness.stats", "harness.results"}
#: The data layer: records, masks, COCO, files. It imports no runner, launcher, report, adapter or metric.
DATA = ("harness.records", "harness.masks", "harness.coco", "harness.io", "harness.digest", "harness.images",
        "harness.errors")


def modules() -> dict[str, Path]:
    """Every module of the three packages: dotted name → file."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for type hints only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules a module imports (module level and inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:  # `from harness.x import name`: name is not a module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:  # `from harness import envs` imports the module harness.envs
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: each strongly connected component of more than one module (Tarjan), with one
    cycle through it spelled out as ``a → b → … → a``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_path_through(sorted(c)[0], c, edges) for c in components]


def _path_through(start: str, component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from `start` back to itself inside `component` (breadth-first)."""
    parent: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & component):
                if w == start:
                    path = [v]
                    while (up := parent[path[-1]]) is not None:
                        path.append(up)
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


def closure(name: str, edges: dict[str, set[str]]) -> set[str]:
    """Every module `name` imports, directly or through others."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for w in edges.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


# --------------------------------------------------------------------------------------------- tests


def test_the_graph_reader_sees_module_and_function_level_imports() -> None:
    edges = graph()
    assert "harness.plan" in edges["harness.run"]  # module level
    assert "harness.launch_slurm" in edges["harness.commands.bench"]  # inside a function
    assert "harness.masks" in edges["harness.records"]  # `from harness.masks import ...`
    assert "harness.envs" in edges["harness.plan"]  # `from harness import envs`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    """None at all, module- or function-level, in harness, metrics or adapters."""
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" → ".join(c) for c in found)


def test_metrics_import_neither_harness_nor_adapters() -> None:
    edges = graph()
    bad = {m: sorted(w for w in edges[m] if not w.startswith("metrics")) for m in edges if m.startswith("metrics")}
    assert not {m: w for m, w in bad.items() if w}


@pytest.mark.parametrize("name", DATA)
def test_the_data_layer_imports_no_runner_launcher_report_adapter_or_metric(name: str) -> None:
    reached = closure(name, graph())
    bad = sorted(m for m in reached if m in RUNNER | REPORT or m.split(".")[0] in ("adapters", "metrics"))
    assert not bad, f"{name} imports (directly or through others) {bad}"


def test_adapters_import_no_runner_launcher_or_report() -> None:
    edges = graph()
    bad = {m: sorted(closure(m, edges) & (RUNNER | REPORT)) for m in edges if m.startswith("adapters")}
    assert not {m: w for m, w in bad.items() if w}


def test_the_runner_never_imports_a_launcher_and_the_plan_no_runner() -> None:
    edges = graph()
    launchers = {"harness.launch_local", "harness.launch_slurm", "harness.status"}
    assert not closure("harness.run", edges) & launchers
    assert not closure("harness.planner", edges) & (launchers | {"harness.run"})
    assert not closure("harness.plan", edges) & (launchers | {"harness.run", "harness.planner"})
    assert not closure("harness.status", edges) & {"harness.run", "harness.launch_local", "harness.launch_slurm"}


def test_no_source_file_over_the_limit() -> None:
    """House rule: no file over 400 lines in harness/ and metrics/ (adapters: see the contract tests)."""
    long = {str(p.relative_to(REPO)): n for package in ("harness", "metrics")
            for p in (REPO / package).rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"
