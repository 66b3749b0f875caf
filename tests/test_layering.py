"""Imports run downward only (STYLE.md): compiler → passes → ir, backends → ir. The IR knows no
pass, backend or importer; passes never reach into backends/ or compiler/ (lowering to library
calls is a pass, rendering and building are the backend's)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "ir": ("nnc.passes", "nnc.backends", "nnc.compiler"),
    "passes": ("nnc.backends", "nnc.compiler"),
    "backends": ("nnc.passes", "nnc.compiler"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_only_go_downward(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in _imports(path):
            if module.startswith(FORBIDDEN[package]):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "\n".join(bad)
