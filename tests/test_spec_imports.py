"""The spec imports top-down: no import cycle among ``backends/spec`` modules, no import inside a function
or method there (which would hide a cycle), MoUE a leaf, and the package docstring's module map in an
order every module respects (each imports only modules listed above it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import backends.spec

SPEC = Path(backends.spec.__file__).parent
PACKAGE = "backends.spec"
REPO = SPEC.parents[1]


def _targets(node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """The package's modules one import statement names (``__init__`` for a name of the package itself)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name == PACKAGE or a.name.startswith(PACKAGE + ".")]
        return {n[len(PACKAGE) + 1 :].split(".")[0] if n != PACKAGE else "__init__" for n in names}
    if node.level == 1:
        base = node.module or ""
    elif node.level == 0 and node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
        base = node.module[len(PACKAGE) + 1 :]
    else:
        return set()
    if base:
        return {base.split(".")[0]}
    return {a.name if a.name in modules else "__init__" for a in node.names}


def import_graph(sources: dict[str, str]) -> tuple[dict[str, set[str]], list[str]]:
    """``{module: package modules it imports}`` and one problem line per import inside a function body."""
    modules = set(sources)
    graph: dict[str, set[str]] = {name: set() for name in sources}
    nested: list[str] = []

    def visit(module: str, node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if function is not None:
                    nested.append(f"{module}.py:{child.lineno}: import inside {function}(): {ast.unparse(child)}")
                graph[module] |= _targets(child, modules)
            visit(module, child, child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function)

    for module, source in sources.items():
        visit(module, ast.parse(source), None)
    return graph, nested


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def problems(sources: dict[str, str]) -> list[str]:
    """Every import cycle and every import inside a function body, as readable lines (empty: top-down)."""
    graph, nested = import_graph(sources)
    return [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)] + nested


def spec_sources() -> dict[str, str]:
    return {path.stem: path.read_text(encoding="utf-8") for path in sorted(SPEC.glob("*.py"))}


def test_the_spec_imports_top_down():
    assert problems(spec_sources()) == []


def test_moue_is_a_leaf():
    graph, _ = import_graph(spec_sources())
    assert [m for m, targets in graph.items() if "moue" in targets] == ["__init__"]
    training = ast.parse((REPO / "harness" / "training.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(training) if isinstance(n, ast.ImportFrom)}
    assert f"{PACKAGE}.moue" not in imported


def test_the_module_map_is_an_import_order():
    """``backends/spec/__init__.py``'s docstring lists every module once, each importing only those above it."""
    order = re.findall(r"^- ``(\w+)``", backends.spec.__doc__, flags=re.MULTILINE)
    assert sorted(order) == sorted(set(spec_sources()) - {"__init__"})
    graph, _ = import_graph(spec_sources())
    for position, module in enumerate(order):
        assert graph[module] <= set(order[:position]), (module, graph[module] - set(order[:position]))


def test_the_checker_finds_a_cycle_and_nested_imports():
    sources = {
        "a": "from .b import x\n",
        "b": "from backends.spec.c import y\n",
        "c": "from . import a\n",
        "d": "import numpy as np\n\ndef f():\n    from .a import x\n    return x\n",
        "e": "class K:\n    def m(self):\n        import os\n        return os\n",
        "f": "from . import f\n",
    }
    found = problems(sources)
    assert "import cycle: a <-> b <-> c" in found
    assert "import cycle: f" in found
    assert any(line.startswith("d.py:4: import inside f()") for line in found)
    assert any(line.startswith("e.py:3: import inside m()") for line in found)
    assert len(found) == 4, found
    assert problems({"a": "from .b import x\n", "b": "import math\n"}) == []
