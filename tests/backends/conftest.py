"""Fixtures for C backend tests: build a LoopModule into a temp dir and load it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nnc.backends.c.build import build
from nnc.backends.c.run import HostModel
from nnc.ir.loop_verify import verify_loop_module
from nnc.ir.loops import LoopModule


@pytest.fixture
def compile_module(tmp_path: Path) -> Callable[..., HostModel]:
    """compile_module(module, **build_options) -> HostModel, built with -Werror at -O1."""
    counter = iter(range(1000))

    def run(module: LoopModule, **options: Any) -> HostModel:
        verify_loop_module(module)
        out = tmp_path / f"build{next(counter)}"
        opts: dict[str, Any] = dict(opt_level=1, werror=True, bench=False)
        opts.update(options)
        build(module, out, **opts)
        return HostModel(out, prefix=opts.get("prefix"))

    return run
