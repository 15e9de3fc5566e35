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
