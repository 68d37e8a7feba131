"""The package's layers import only downwards: contract <- platform <- steps (every import, lazy ones too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mlsteps

PACKAGE = Path(mlsteps.__file__).resolve().parent


def imported_modules(layer: str) -> dict[str, set[str]]:
    """Each module of ``mlsteps.<layer>`` with every module it imports, at any depth of its code."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(PACKAGE))] = names
    return found


def offending(layer: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    return {
        module: sorted(name for name in names if name.startswith(forbidden))
        for module, names in imported_modules(layer).items()
        if any(name.startswith(forbidden) for name in names)
    }


def test_the_walk_sees_imports_inside_functions() -> None:
    assert "mlsteps.steps.features.build_batch" in imported_modules("steps")["steps/reproduce.py"]


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("contract", ("mlsteps.platform", "mlsteps.steps", "mlsteps.reports")),
        ("platform", ("mlsteps.steps",)),
        ("logic", ("mlsteps.steps", "mlsteps.reports")),
        ("reports", ("mlsteps.steps",)),
    ],
    ids=["contract", "platform", "logic", "reports"],
)
def test_a_layer_imports_nothing_from_the_layers_above_it(layer: str, forbidden: tuple[str, ...]) -> None:
    assert offending(layer, forbidden) == {}
