"""A bounded slice of the ONNX node conformance on --target opencl (the whole selection against
the host's passes is `python -m benchmarks.conformance_opencl`; its figure is in the README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# one case per kind of kernel: conv, gemm, a reduction, a recurrent op, float16, a padded
# average that counts the padding
CASES = ("test_conv_with_strides_padding", "test_gemm_all_attributes", "test_softmax_axis_1",
         "test_lstm_defaults", "test_cast_FLOAT_to_FLOAT16",
         "test_averagepool_2d_pads_count_include_pad")


@pytest.mark.needs_opencl
def test_conformance_slice_passes_on_opencl(tmp_path: Path) -> None:
    """In a fresh process: this one has initialized OpenCL (conftest), and the runner forks."""
    out = tmp_path / "slice.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.conformance_opencl", "--cases",
                           ",".join(CASES), "--json", str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert out.exists(), proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["cases"] == len(CASES) and r["host_passed"] == len(CASES), r
    assert r["both_passed"] == len(CASES), r["opencl_only_failures"]
    assert proc.returncode == 0
