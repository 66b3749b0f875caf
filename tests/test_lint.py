"""The code base stays lint- and type-clean: `ruff check .` and mypy (configured in pyproject)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_clean() -> None:
    # prefer the ruff installed with this interpreter (`make test` does not activate the venv)
    if importlib.util.find_spec("ruff") is not None:
        cmd = [sys.executable, "-m", "ruff"]
    elif (exe := shutil.which("ruff")) is not None:
        cmd = [exe]
    else:
        pytest.skip("ruff is not installed")
    r = _run([*cmd, "check", "."])
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    # the packages to check (nnc.ir, nnc.passes) and all options live in pyproject's [tool.mypy]
    r = _run([sys.executable, "-m", "mypy"])
    assert r.returncode == 0, r.stdout + r.stderr
