"""Fixtures for the portable CMSIS-NN subset: the library built once per session for the host."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .cmsis_nn_lib import CmsisNN, build_library


@pytest.fixture(scope="session")
def cmsis(tmp_path_factory: pytest.TempPathFactory) -> CmsisNN:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("needs a host C compiler")
    out: Path = tmp_path_factory.mktemp("cmsis_nn")
    return CmsisNN(build_library(out))
