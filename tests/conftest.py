"""Shared pytest setup: the repository root on sys.path, so tests can import `benchmarks.…`."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _history_in_tmp(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`nnc bench` / `nnc eval` record into a history file: never the real one in tests
    (subprocesses inherit the variable)."""
    monkeypatch.setenv("NNC_HISTORY", str(tmp_path_factory.getbasetemp() / "history.sqlite"))
    # a developer's tuning cache (XDG default) must not change what the tests compile
    monkeypatch.setenv("NNC_TUNING_CACHE", "off")
