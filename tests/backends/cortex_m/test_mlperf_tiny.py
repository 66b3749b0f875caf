"""The four MLPerf Tiny models (fp32) on the emulated Cortex-M7 and Cortex-M4: outputs match the
host target (rtol 1e-4) and instruction counts are repeatable. A few seconds per model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.models import MODELS
from nnc.backends.c.build import build
from nnc.backends.c.emit import emit_c
from nnc.backends.c.run import HostModel
from nnc.backends.cortex_m import DeviceModel, build_firmware

from .conftest import lower

pytestmark = [pytest.mark.needs_arm, pytest.mark.needs_qemu]


@pytest.mark.parametrize("target", ["cortex-m7", "cortex-m4"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_tiny_matches_host(name: str, target: str, tmp_path: Path) -> None:
    module = lower(MODELS[name]())
    build(module, tmp_path / "host", opt_level=2, bench=False)
    host = HostModel(tmp_path / "host")
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in host.inputs}
    info = build_firmware(emit_c(module), tmp_path / "dev", target, module)
    dev = DeviceModel(tmp_path / "dev")
    run = dev.execute(feeds)
    expected = host.run(feeds)
    for out_name, want in expected.items():
        np.testing.assert_allclose(run.outputs[out_name], want, rtol=1e-4, atol=1e-6)
    bench = dev.benchmark(feeds)
    assert bench["instructions"] == dev.ticks_to_instructions(run.total_ticks)
    assert [la["instructions"] for la in bench["layers"]] == \
        [dev.ticks_to_instructions(t) for t in run.layer_ticks]
    assert bench["flash_bytes"] == info.flash_bytes
    assert bench["macs"] > 0 and 1 < bench["instructions_per_mac"] < 50
