"""The import structure of `harness`: layers point one way and nothing imports in a circle.

    kernels  <-  core (perf: `harness project`)  <-  bench, train  <-  accept, scheduler, catalog  <-  load, runner, cli

Every import counts, also those inside functions; a function-level import is allowed only for an
optional or heavy library, never for harness's own modules (a lazy import that dodges a cycle
hides the cycle). `kernels` counts as optional here: importing it imports Triton (about 0.4 s),
which a benchmark rank pays only when it builds a kernel case. docs/architecture.md draws the
same map.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "kernels")

LAYERS: list[tuple[str, ...]] = [
    ("kernels",),
    ("harness", "harness.errors", "harness.units", "harness.dtypes", "harness.config", "harness.results",
     "harness.dist", "harness.launch", "harness.devices", "harness.hardware", "harness.telemetry",
     "harness.display", "harness.plots", "harness.tasks", "harness.perf"),
    ("harness.bench", "harness.train"),
    ("harness.accept", "harness.scheduler", "harness.catalog"),
    ("harness.load", "harness.runner", "harness.cli", "harness.__main__"),
]  # fmt: skip
"""Lowest first; a module belongs to the layer of its longest listed prefix."""
SIBLINGS_APART = {("harness.bench", "harness.train")}
"""Parts of one layer that must not import each other."""
LAZY_ALLOWED = ("torch", "deepspeed", "triton", "kernels", "wandb", "pynvml", "mpi4py", "matplotlib", "submitit",
                "psutil", "duckdb")  # fmt: skip
"""Third-party (or heavy standard) libraries a function may import on use."""


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path]) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function, line) for every import of `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                out.extend((alias.name, inner, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join([*parts[: len(parts) - child.level + 1], base]).strip(".")
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    out.append((full if full in known else base, inner, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return out


def layer_of(name: str) -> tuple[int, str] | None:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (index, prefix)
    return best


def own(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, bool, int]]]:
    known = modules()
    return {name: [i for i in imports(path, name, known) if own(i[0])] for name, path in known.items()}


def test_every_module_has_a_layer() -> None:
    missing = [name for name in modules() if layer_of(name) is None]
    assert not missing, f"place these modules in LAYERS (and docs/architecture.md): {missing}"


def test_imports_point_down_the_layers(graph: dict) -> None:
    bad = []
    for name, edges in graph.items():
        mine = layer_of(name)
        for target, _, line in edges:
            theirs = layer_of(target)
            if mine is None or theirs is None:
                continue
            if theirs[0] > mine[0] or (mine[1], theirs[1]) in SIBLINGS_APART or (theirs[1], mine[1]) in SIBLINGS_APART:
                bad.append(f"{name}:{line} imports {target} ({theirs[1]} is not below {mine[1]})")
    assert not bad, "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            connect(node)
    return found


def test_no_module_cycle(graph: dict) -> None:
    edges = {name: {t for t, _, _ in targets if t != name} for name, targets in graph.items()}
    assert _cycles(edges) == []


def test_no_subpackage_cycle(graph: dict) -> None:
    def top(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:2])

    edges: dict[str, set[str]] = defaultdict(set)
    for name, targets in graph.items():
        for target, _, _ in targets:
            if top(target) != top(name):
                edges[top(name)].add(top(target))
    assert _cycles(dict(edges)) == []


def test_function_level_imports_are_only_heavy_third_party() -> None:
    known = modules()
    bad = []
    for name, path in known.items():
        for target, nested, line in imports(path, name, known):
            if nested and target.split(".")[0] not in LAZY_ALLOWED:
                bad.append(f"{name}:{line} imports {target} inside a function")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_cycles_and_lazy_imports(tmp_path: Path) -> None:
    """The checks above can fail: a planted cycle through a function-level import is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from harness import runner\n    return runner\n")
    found = imports(module, "harness.bench.m", {"harness.runner": module})
    assert ("harness.runner", True, 4) in found
    assert layer_of("harness.bench.m") == (2, "harness.bench") and layer_of("harness.runner")[0] == 4
