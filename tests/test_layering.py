"""The data flows one way (docs/architecture.md): registry -> config -> plan -> models/data ->
engine -> results -> report. A module lower in that order never imports one above it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# module -> packages it must not load (directly or through anything it imports)
BELOW = {
    "spgnet.config": ("spgnet.workflow.plan", "spgnet.models", "spgnet.data", "spgnet.engine", "spgnet.analysis"),
    "spgnet.workflow.plan": ("spgnet.models", "spgnet.data", "spgnet.engine", "spgnet.analysis"),
    "spgnet.data.labels": ("spgnet.models", "spgnet.engine", "spgnet.analysis", "spgnet.workflow.plan"),
    "spgnet.data.synthetic": ("spgnet.models", "spgnet.engine", "spgnet.analysis", "spgnet.workflow.plan"),
    "spgnet.models": ("spgnet.engine", "spgnet.analysis", "spgnet.workflow.plan"),
    # the recipe's page reads the config (and one constant of the models); the report renders it
    "spgnet.recipe": ("spgnet.workflow.plan", "spgnet.data", "spgnet.engine", "spgnet.analysis"),
}


def _loaded_after_import(module: str) -> list[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("module", sorted(BELOW))
def test_no_module_imports_a_later_stage(module):
    loaded = _loaded_after_import(module)
    wrong = [m for m in loaded if m.startswith(BELOW[module])]
    assert not wrong, f"importing {module} loads {wrong}"


def _imports_in_source(path) -> set[str]:
    """Every ``spgnet...`` module a file imports, at the top or inside a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.startswith("spgnet")}


@pytest.mark.parametrize("module", sorted(BELOW))
def test_no_deferred_import_of_a_later_stage(module):
    """Imports inside functions too: e.g. the plan once imported the analysis modules for the
    figure names, which import the plan (an import circle)."""
    from pathlib import Path

    import spgnet

    root = Path(spgnet.__file__).parent
    relative = Path(*module.split(".")[1:])
    files = sorted((root / relative).rglob("*.py")) if (root / relative).is_dir() else [root / relative.with_suffix(".py")]
    assert files
    for path in files:
        wrong = sorted(name for name in _imports_in_source(path) if name.startswith(BELOW[module]))
        assert not wrong, f"{path.relative_to(root.parent)} imports {wrong}"


# ---------------------------------------------------------------- no import circle, small modules


def _module_files() -> dict[str, "Path"]:
    """``spgnet`` module name -> its file (a package's ``__init__.py`` under the package's name)."""
    from pathlib import Path

    import spgnet

    root = Path(spgnet.__file__).parent
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the ``spgnet`` modules it imports, at the top or inside a function (``from pkg
    import name`` counts as an import of ``pkg.name`` when that is a module, else of ``pkg``)."""
    import ast

    modules = _module_files()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            edges |= {target for target in map(owner, (n for n in names if n.startswith("spgnet"))) if target}
        graph[module] = edges - {module}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_the_circle_finder_sees_a_circle():
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_anywhere():
    """Deferred imports count: a circle broken only by importing inside a function is still one
    (issue 23: the config imported its schema, which imported the project root back)."""
    graph = import_graph()
    assert "spgnet.engine.train.loop" in graph and graph["spgnet.engine.train.loop"]
    assert import_circles(graph) == []


#: Modules allowed above the size limit, each saying in its docstring why it is one piece.
LARGE_MODULES: dict[str, str] = {}
MAX_LINES = 450


def test_no_module_over_the_size_limit():
    too_long = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _module_files().items()}
    too_long = {name: lines for name, lines in too_long.items() if lines > MAX_LINES and name not in LARGE_MODULES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
    assert len(LARGE_MODULES) <= 2
