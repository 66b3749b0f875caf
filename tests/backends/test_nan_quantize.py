"""NaN -> int8: quantizing NaN is undefined in C (a float -> int conversion out of range), and
x86 and Arm disagree. nnc defines it as the lowest code (-128 for int8, 0 for uint8), as
onnxruntime and TFLite's reference kernel do on x86: host output == onnxruntime, Cortex-M
(QEMU) == host, for an ONNX QuantizeLinear and for `--quantize int8` input quantization."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.compiler.api import compile as nnc_compile
from nnc.ir.graph import Attrs
from nnc.ir.ops import get_op

X = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, 1.25, -3.0, 1e30], np.float32)


def _quantize_model(elem: int, zp: int) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
        "nanq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(X)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(X)])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
         helper.make_tensor("z", elem, [], [zp])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_the_reference_quantizes_nan_to_the_lowest_code() -> None:
    q = get_op("quantize_linear").reference(
        [X, np.array(0.1, np.float32), np.array(5, np.int8)], Attrs.of(dtype="int8"))[0]
    assert list(q[:4]) == [-128, -128, 127, -128]


@pytest.mark.parametrize("elem,zp", [(TensorProto.INT8, 5), (TensorProto.UINT8, 100)])
def test_host_matches_onnxruntime_on_nan(tmp_path, elem, zp) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_quantize_model(elem, zp), str(path))
    cm = nnc_compile(str(path), output_dir=tmp_path / "out", bench=False)
    got = cm.run({"x": X})["y"]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": X})[0]
    np.testing.assert_array_equal(got, ref)


@pytest.mark.needs_qemu
@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="needs qemu-system-arm")
def test_cortex_m_matches_host_on_nan(tmp_path) -> None:
    """`--quantize int8` quantizes the float input in generated C on both targets."""
    w = numpy_helper.from_array(np.linspace(-1, 1, 8 * 4, dtype=np.float32).reshape(8, 4), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "nanmm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    calib = {"x": np.random.default_rng(0).uniform(-2, 2, (16, 1, 8)).astype(np.float32)}
    outs = {}
    for target in ("host", "cortex-m7"):
        cm = nnc_compile(str(path), target=target, output_dir=tmp_path / target, bench=False,
                         quantize="int8", calibration=calib)
        outs[target] = cm.run({"x": X.reshape(1, 8)})["y"]
    np.testing.assert_array_equal(outs["host"], outs["cortex-m7"])
    assert np.isfinite(outs["host"]).all()
