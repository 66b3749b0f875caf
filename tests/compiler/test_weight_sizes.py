"""The Cortex-M flash check before any weight is read (`nnc.compiler.onnx.weight_sizes`): a
576 MB Gemm stored as external data (a sparse file here) is refused for cortex-m7 in < 2 s
without loading it; weights nnc only sees after import (a Constant node) are still refused
right after import."""

from __future__ import annotations

import resource
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.compiler.api import compile as nnc_compile
from nnc.compiler.onnx.weight_sizes import weight_sizes
from nnc.errors import NncError

N = 12_000  # 12,000 x 12,000 float32 = 576,000,000 bytes


def _external_gemm(tmp_path, length: int | None = N * N * 4) -> str:
    w = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[N, N])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", length)):
        if value is not None:
            e = w.external_data.add()
            e.key, e.value = key, str(value)
    with open(tmp_path / "w.bin", "wb") as f:
        f.truncate(N * N * 4)  # sparse: no block of it is written
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])], [w])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_576_mb_gemm_is_refused_without_reading_it(tmp_path, quantize) -> None:
    path = _external_gemm(tmp_path)
    q = {"quantize": "int8", "calibration": "random"} if quantize else {}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    t0 = time.perf_counter()
    with pytest.raises(NncError, match=r"weights alone need [\d,]+ B.* \(checked before loading "
                       r"them\); largest weights: w \(") as e:
        nnc_compile(path, target="cortex-m7", output_dir=tmp_path / "o", **q)
    # reading the data took 64 s here; the memory check below is the exact signal
    assert time.perf_counter() - t0 < 20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # not 576 MB
    assert ("144,000,000 B as int8" if quantize else "576,000,000 B") in str(e.value)
    assert not (tmp_path / "o").exists()
    assert (tmp_path / "w.bin").stat().st_blocks * 512 < 1 << 20


def test_sizes_come_from_dims_and_a_damaged_length_is_left_to_the_importer(tmp_path) -> None:
    assert weight_sizes(_external_gemm(tmp_path), int8=False) == [("w", N * N * 4)]
    assert weight_sizes(_external_gemm(tmp_path), int8=True) == [("w", N * N)]
    assert weight_sizes(_external_gemm(tmp_path, length=12), int8=False) == []


def test_weights_seen_only_after_import_are_still_refused(tmp_path) -> None:
    w = numpy_helper.from_array(np.zeros((2048, 2048), np.float32), "wv")
    g = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=w, name="c"),
         helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2048])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2048])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    assert weight_sizes(m, int8=False) == []
    with pytest.raises(NncError, match=r"weights alone need .* \(checked right after import\)"):
        nnc_compile(m, target="cortex-m7", output_dir=tmp_path / "o")
