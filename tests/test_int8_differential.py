"""Every build of an int8 model gives the same bits: the differential test of issue 11.

For each of the 14 test models (MLPerf Tiny four + benchmarks/models/zoo.py: squeeze-excite with
Paddle and opset-14 hard-swish, unnamed nodes, layout transposes, a detector neck with Resize /
ConvTranspose / Concat / HardSigmoid gates / broadcast Mul, grouped and dilated convs, ...) the
int8 outputs of the graph interpreter, the host build (generated and CMSIS-NN kernels), every
Cortex-M target (CMSIS-NN kernels at -O3, the M7 also at -O0) and every Cortex-M target with
generated kernels (plus the OpenCL build) must be identical. Outputs a float op computes after
the last int8 layer may differ by libm rounding ("~"). `python -m benchmarks.int8_differential`
runs the same matrix.
"""

from __future__ import annotations

import shutil

import pytest

from benchmarks.int8_differential import VARIANTS, agrees, all_models, disagreements

needs_tools = pytest.mark.skipif(
    not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make install)")
MODELS = all_models()


@needs_tools
@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_int8_outputs_identical_on_every_build(name):
    bad = disagreements(name, list(VARIANTS))
    assert not bad, f"{name}: {bad}"


def test_differential_compare_sees_one_lsb():
    import numpy as np

    from benchmarks.int8_differential import compare

    ref = [{"y": np.array([0.5, 0.25], np.float32)}]
    assert compare(ref, [{"y": np.array([0.5, 0.25], np.float32)}], {"y": 0.25}) == "="
    off = compare(ref, [{"y": np.array([0.5, 0.5], np.float32)}], {"y": 0.25})
    assert off == "1/2 differ, max 1 LSB" and not agrees(off)
    # no dequantize scale (a float op's output): tiny libm differences are "~", big ones are not
    assert agrees(compare(ref, [{"y": np.array([0.5, 0.2500001], np.float32)}], {}))
    assert not agrees(compare(ref, [{"y": np.array([0.5, 0.26], np.float32)}], {}))
