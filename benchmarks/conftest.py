"""pytest-benchmark suite options: `pytest benchmarks/ --benchmark-only [--bench-models kws,ic]
[--bench-targets host,cortex-m7]` (see benchmarks/test_benchmarks.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-models", default="kws",
                     help="MLPerf Tiny models to benchmark: kws,vww,ic,ad (default: kws)")
    parser.addoption("--bench-targets", default="host,cortex-m7",
                     help="host and/or Cortex-M targets (default: host,cortex-m7)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    models = metafunc.config.getoption("--bench-models").split(",")
    targets = metafunc.config.getoption("--bench-targets").split(",")
    if "model_name" in metafunc.fixturenames:
        metafunc.parametrize("model_name", models, scope="module")
    if "device_target" in metafunc.fixturenames:
        metafunc.parametrize("device_target", [t for t in targets if t != "host"] or
                             [pytest.param("none", marks=pytest.mark.skip("no device target"))],
                             scope="module")
    if "host_target" in metafunc.fixturenames:
        metafunc.parametrize("host_target", ["host"] if "host" in targets else
                             [pytest.param("none", marks=pytest.mark.skip("no host target"))],
                             scope="module")


@pytest.fixture(autouse=True)
def _no_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNC_HISTORY", "off")
