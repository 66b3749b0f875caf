"""fuse-qdq: QDQ / QLinear patterns of already-quantized models → int8 ops (graph level)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from nnc.compiler.onnx.importer import import_model
from nnc.compiler.pipeline import PIPELINES
from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.interp import run_graph
from nnc.ir.types import QuantParams, TensorType
from nnc.ir.verify import verify_graph
from nnc.passes.fuse_qdq import fuse_qdq_graph
from nnc.passes.manager import registered_passes
from nnc.passes.quant_scheme import quantize_multiplier

# ---------------------------------------------------------------- hand-built Before / Expected


def _c(name: str, data: np.ndarray, quant: QuantParams | None = None) -> Constant:
    arr = np.array(data)
    arr.setflags(write=False)
    return Constant(Value(name, TensorType(arr.shape, str(arr.dtype), None, quant)), arr)


def _conv_qdq(x_dtype: str = "int8", w_zp: int = 0, y_scale: float = 0.05,
              act: str | None = None) -> Graph:
    """x(f32) → Q → DQ → conv(DQ(w), DQ(b)) → [act] → Q → DQ → y."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    b = rng.integers(-500, 500, 4).astype(np.int32)
    ws = np.array([0.01, 0.02, 0.03, 0.04], np.float32)
    xs, xz = np.float32(0.1), np.array(3 if x_dtype == "int8" else 128, x_dtype)
    f = TensorType((1, 3, 6, 6), "float32")
    q = TensorType((1, 3, 6, 6), x_dtype)
    wz = np.full((4, 1, 1, 1), w_zp, np.int8)
    consts = [_c("w", w), _c("ws", ws.reshape(4, 1, 1, 1)), _c("wz", wz),
              _c("b", b), _c("bs", ws * xs), _c("xs", xs), _c("xz", xz),
              _c("ys", np.float32(y_scale)),
              _c("yz", np.array(-5 if x_dtype == "int8" else 120, x_dtype))]
    yt = TensorType((1, 4, 6, 6), "float32")
    ops = [
        Op("quantize_linear", ("x", "xs", "xz"), (Value("xq", q),), Attrs.of(dtype=x_dtype)),
        Op("dequantize_linear", ("xq", "xs", "xz"), (Value("xf", f),), Attrs.of(dtype="float32")),
        Op("dequantize_linear", ("w", "ws", "wz"), (Value("wf", TensorType(w.shape, "float32")),),
           Attrs.of(dtype="float32")),
        Op("dequantize_linear", ("b", "bs"), (Value("bf", TensorType((4,), "float32")),),
           Attrs.of(dtype="float32")),
        Op("conv", ("xf", "wf", "bf"), (Value("c", yt),),
           Attrs.of(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=1), name="conv0"),
    ]
    last = "c"
    if act == "relu":
        ops.append(Op("relu", ("c",), (Value("r", yt),)))
        last = "r"
    ops += [
        Op("quantize_linear", (last, "ys", "yz"), (Value("yq", yt.with_dtype(x_dtype)),),
           Attrs.of(dtype=x_dtype)),
        Op("dequantize_linear", ("yq", "ys", "yz"), (Value("y", yt),), Attrs.of(dtype="float32")),
    ]
    return Graph("m", (Value("x", f),), (Value("y", yt),), tuple(consts), tuple(ops))


def test_conv_becomes_conv_s8_with_tflite_requantization() -> None:
    g = _conv_qdq(act="relu")
    out = fuse_qdq_graph(g)
    verify_graph(out)
    assert [op.kind for op in out.ops] == ["quantize_linear", "conv_s8", "dequantize_linear"]
    conv = out.ops[1]
    assert conv.outputs[0].name == "yq"  # takes over the Q's value: consumers need no rewiring
    assert conv.outputs[0].type.quant == QuantParams((float(np.float32(0.05)),), (-5,))
    assert conv.inputs[0] == "xq" and conv.inputs[1] == "w"
    a = conv.attrs
    assert (a["input_zero_point"], a["output_zero_point"]) == (3, -5)
    assert (a["act_min"], a["act_max"]) == (-5, 127)  # relu folded: real 0 is code -5
    consts = out.constant_map()
    types = out.value_types()
    assert types["w"].quant is not None and types["w"].quant.axis == 0
    want = [quantize_multiplier(float(np.float32(0.1)) * s / float(np.float32(0.05)))
            for s in np.array([0.01, 0.02, 0.03, 0.04], np.float32).astype(np.float64)]
    assert consts[conv.inputs[2]].tolist() == [m for m, _ in want]
    assert consts[conv.inputs[3]].tolist() == [s for _, s in want]
    assert consts[conv.inputs[4]].dtype == np.int32
    assert np.array_equal(consts[conv.inputs[4]], g.constant_map()["b"])
    assert not any(c.data.dtype == np.float32 and c.data.size >= 27 for c in out.constants)
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32) * 3
    want_y = run_graph(g, {"x": x})["y"]
    got_y = run_graph(out, {"x": x})["y"]
    lsb = np.abs(got_y - want_y) / np.float32(0.05)
    assert lsb.max() <= 1.0 + 1e-4 and np.mean(lsb < 0.5) >= 0.99


@pytest.mark.parametrize("variant", ["uint8", "asymmetric-weights"])
def test_unsupported_forms_stay_float(variant: str) -> None:
    g = _conv_qdq(x_dtype="uint8") if variant == "uint8" else _conv_qdq(w_zp=2)
    out = fuse_qdq_graph(g)
    assert [op.kind for op in out.ops] == [op.kind for op in g.ops]
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)
    assert np.array_equal(run_graph(out, {"x": x})["y"], run_graph(g, {"x": x})["y"])


def test_graph_without_quantization_is_unchanged() -> None:
    g = Graph("m", (Value("x", TensorType((2,), "float32")),),
              (Value("y", TensorType((2,), "float32")),), (),
              (Op("relu", ("x",), (Value("y", TensorType((2,), "float32")),)),))
    assert fuse_qdq_graph(g) is g


def test_registered_and_in_both_pipelines() -> None:
    assert "fuse-qdq" in registered_passes()
    for steps in PIPELINES.values():
        assert "fuse-qdq" in steps and steps.index("fuse-qdq") < steps.index("fold-constants")


# ---------------------------------------------------------------- onnxruntime quantize_static


class _Reader(CalibrationDataReader):
    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self.it = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.it, None)


def _small_net() -> onnx.ModelProto:
    """conv+relu → maxpool → conv, residual add, mul → global avg pool → flatten → gemm."""
    rng = np.random.default_rng(3)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "p1"], ["a"]),
        helper.make_node("Mul", ["a", "p1"], ["m"]),
        helper.make_node("GlobalAveragePool", ["m"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 8, 8, 3, 3), w("b2", 8), w("w3", 5, 8),
         w("b3", 5)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what the installed onnxruntime reads
    return model


def _quantized(tmp: Path, model: onnx.ModelProto, fmt: QuantFormat) -> Path:
    src, dst = tmp / "float.onnx", tmp / "quant.onnx"
    onnx.save(model, src)
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(16)]
    quantize_static(str(src), str(dst), _Reader(samples), quant_format=fmt, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return dst


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    # onnxruntime's fused int8 kernels (AVX2 without VNNI) saturate with full-range weights
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return list(ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                .run(None, feeds))


def test_quantize_static_qdq_net_fuses_and_agrees_with_onnxruntime(tmp_path: Path) -> None:
    path = _quantized(tmp_path, _small_net(), QuantFormat.QDQ)
    g = import_model(path)
    out = fuse_qdq_graph(g)
    verify_graph(out)
    kinds = [op.kind for op in out.ops]
    for k in ("conv_s8", "max_pool_s8", "add_s8", "mul_s8", "fully_connected_s8"):
        assert k in kinds, kinds
    assert kinds.count("conv") == kinds.count("gemm") == 0
    types = out.value_types()
    for op in out.ops:
        if op.kind in ("conv_s8", "fully_connected_s8"):
            w = types[op.inputs[1]]
            assert w.dtype == "int8" and w.quant is not None
            assert op.inputs[1] in out.constant_map()
    floats = [c for c in out.constants if c.data.dtype == np.float32 and c.data.size > 8]
    assert not floats, [c.name for c in floats]  # no float copy of a weight
    # the int8 codes before the final dequantize_linear, against onnxruntime's
    final_dq = out.producers()["y"]
    scale = float(out.constant_map()[final_dq.inputs[1]].ravel()[0])
    rng = np.random.default_rng(7)
    lsb = []
    for _ in range(20):
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        ref = _ort(path, {"x": x})[0]
        got = run_graph(out, {"x": x})["y"]
        lsb.append(np.round(np.abs(got.astype(np.float64) - ref) / scale))
    d = np.concatenate([a.ravel() for a in lsb])
    assert np.mean(d <= 1) >= 0.99 and np.mean(d == 0) >= 0.9, (np.mean(d <= 1), np.mean(d == 0))
