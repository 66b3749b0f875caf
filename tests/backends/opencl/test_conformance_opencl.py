"""A bounded slice of the ONNX node conformance on --target opencl (the whole selection against
the host's passes is `python -m benchmarks.conformance_opencl`; its figure is in the README)."""

from __future__ import annotations

import pytest

from benchmarks import conformance_opencl
from tests import test_conformance as conf

# one case per kind of kernel: conv, gemm, reductions, pooling, a recurrent op, resize, float16,
# select, normalization, and a padded average that counts the padding
CASES = ("test_conv_with_strides_padding", "test_gemm_all_attributes", "test_softmax_axis_1",
         "test_maxpool_2d_pads", "test_lstm_defaults", "test_resize_upsample_scales_linear",
         "test_cast_FLOAT_to_FLOAT16", "test_where_example", "test_batchnorm_epsilon",
         "test_averagepool_2d_pads_count_include_pad")


@pytest.mark.needs_opencl
def test_conformance_slice_passes_on_opencl() -> None:
    assert conformance_opencl.BAR == 0.98
    cases = [c for c in conf.select_cases() if c.name in CASES]
    assert len(cases) == len(CASES)
    summary = conf.run_conformance(cases, "opencl", workers=2)
    assert not summary.failures, summary.table()
