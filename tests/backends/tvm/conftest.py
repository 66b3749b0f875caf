"""TVM tests run where apache-tvm is installed (`make test` installs the [tvm] extra); elsewhere
they skip with the reason."""

from __future__ import annotations

import importlib.util

import pytest

HAVE_TVM = importlib.util.find_spec("tvm") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="apache-tvm is not installed (pip install nnc[tvm])")
    for item in items:
        if "needs_tvm" in item.keywords and not HAVE_TVM:
            item.add_marker(skip)
