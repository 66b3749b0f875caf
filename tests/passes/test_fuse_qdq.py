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
    reals = [float(np.float32(0.1)) * s / float(np.float32(0.05))
             for s in np.array([0.01, 0.02, 0.03, 0.04], np.float32).astype(np.float64)]
    # M in [2^-11, 0.5): multiplier round(M * 2^31) with shift 0, so requantization rounds once
    assert consts[conv.inputs[2]].tolist() == [int(np.floor(r * 2**31 + 0.5)) for r in reals]
    assert consts[conv.inputs[3]].tolist() == [0, 0, 0, 0]
    assert consts[conv.inputs[4]].dtype == np.int32
    assert np.array_equal(consts[conv.inputs[4]], g.constant_map()["b"])
    assert not any(c.data.dtype == np.float32 and c.data.size >= 27 for c in out.constants)
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32) * 3
    want_y = run_graph(g, {"x": x})["y"]
    got_y = run_graph(out, {"x": x})["y"]
    lsb = np.abs(got_y - want_y) / np.float32(0.05)
    assert lsb.max() <= 1.0 + 1e-4 and np.mean(lsb < 0.5) >= 0.99


def test_requantization_rounds_once_like_onnxruntime() -> None:
    """onnxruntime rounds acc * M once; TFLite's normalized multiplier with a right shift rounds
    twice (1 LSB off for ~2^-r of the codes, r the shift). fuse-qdq's multipliers for
    fully_connected_s8 make the same int8 arithmetic round once; below 2^-11 and from 0.5 up
    they are TFLite's own."""
    rng = np.random.default_rng(2)
    k, n = 64, 40
    x = rng.integers(-128, 128, (4096, k)).astype(np.int8)
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    reals = np.geomspace(2.0**-10, 0.4, n)  # right shifts 1..10 in TFLite's form
    ys, yz, x_scale = 1.0, np.int8(0), np.float32(1.0)
    ws = reals.astype(np.float32)
    ft = TensorType((4096, n), "float32")
    g = Graph("fc", (Value("x", TensorType((4096, k), "int8")),), (Value("y", ft),), (
        _c("w", w), _c("ws", ws), _c("wz", np.zeros(n, np.int8)), _c("xs", x_scale),
        _c("xz", np.int8(0)), _c("ys", np.float32(ys)), _c("yz", yz)), (
        Op("dequantize_linear", ("x", "xs", "xz"), (Value("xf", ft.with_shape((4096, k))),),
           Attrs.of(dtype="float32")),
        Op("dequantize_linear", ("w", "ws", "wz"), (Value("wf", TensorType((n, k), "float32")),),
           Attrs.of(dtype="float32", axis=0)),
        Op("gemm", ("xf", "wf"), (Value("g", ft),), Attrs.of(trans_b=1)),
        Op("quantize_linear", ("g", "ys", "yz"), (Value("q", ft.with_dtype("int8")),),
           Attrs.of(dtype="int8")),
        Op("dequantize_linear", ("q", "ys", "yz"), (Value("y", ft),), Attrs.of(dtype="float32"))))
    out = fuse_qdq_graph(g)
    fc = next(op for op in out.ops if op.kind == "fully_connected_s8")
    consts = out.constant_map()
    assert consts[fc.inputs[3]].tolist() == [0] * n
    got = run_graph(out, {"x": x})["y"]
    acc = x.astype(np.int64) @ w.astype(np.int64).T
    exact = np.clip(np.round(acc * ws.astype(np.float64)), -128, 127)  # float64: no ties here
    assert np.mean(got == exact) >= 0.9999, np.mean(got == exact)
    # TFLite's normalized pairs for the same layer: double rounding shows
    pairs = np.array([quantize_multiplier(float(r)) for r in ws.astype(np.float64)], np.int32)
    normalized = {fc.inputs[2]: pairs[:, 0], fc.inputs[3]: pairs[:, 1]}
    tfl = out.replace(constants=tuple(_c(c.name, normalized[c.name]) if c.name in normalized
                                      else c for c in out.constants))
    assert np.mean(run_graph(tfl, {"x": x})["y"] != exact) >= 0.001
    # outside [2^-11, 0.5): TFLite's pairs
    from nnc.passes.fuse_qdq import _single_rounding_multipliers
    mult, shift = _single_rounding_multipliers(np.array([2.0**-12, 0.5, 3.0]))
    want = [quantize_multiplier(v) for v in (2.0**-12, 0.5, 3.0)]
    assert list(zip(mult.tolist(), shift.tolist(), strict=True)) == want


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


# ---------------------------------------------------------------- softmax


def _softmax_qdq(y_scale: float = 1 / 256, y_zp: int = -128, axes: tuple[int, ...] = (1,)
                 ) -> Graph:
    """x int8 [3, 10] → DQ → softmax → Q → DQ → y."""
    f = TensorType((3, 10), "float32")
    consts = [_c("xs", np.float32(0.07)), _c("xz", np.int8(4)), _c("ys", np.float32(y_scale)),
              _c("yz", np.int8(y_zp))]
    ops = [
        Op("dequantize_linear", ("x", "xs", "xz"), (Value("xf", f),), Attrs.of(dtype="float32")),
        Op("softmax", ("xf",), (Value("p", f),), Attrs.of(axes=axes), name="sm"),
        Op("quantize_linear", ("p", "ys", "yz"), (Value("pq", f.with_dtype("int8")),),
           Attrs.of(dtype="int8")),
        Op("dequantize_linear", ("pq", "ys", "yz"), (Value("y", f),), Attrs.of(dtype="float32")),
    ]
    return Graph("sm", (Value("x", f.with_dtype("int8")),), (Value("y", f),), tuple(consts),
                 tuple(ops))


def test_softmax_becomes_softmax_s8() -> None:
    from nnc.ir.ops.int8_softmax import softmax_s8_params

    g = _softmax_qdq()
    out = fuse_qdq_graph(g)
    verify_graph(out)
    assert [op.kind for op in out.ops] == ["softmax_s8", "dequantize_linear"]
    sm = out.ops[0]
    mult, shift, diff_min = softmax_s8_params(float(np.float32(0.07)))
    assert dict(sm.attrs) == dict(axis=1, input_multiplier=mult, input_left_shift=shift,
                                  diff_min=diff_min)
    assert sm.outputs[0].type.quant == QuantParams((1 / 256,), (-128,))
    x = np.random.default_rng(4).integers(-128, 128, (3, 10)).astype(np.int8)
    lsb = np.abs(run_graph(out, {"x": x})["y"] - run_graph(g, {"x": x})["y"]) * 256
    assert lsb.max() <= 1.0 + 1e-6


def test_softmax_with_other_output_params_stays_float_and_says_why() -> None:
    g = _softmax_qdq(y_scale=1 / 255, y_zp=-128)
    with pytest.warns(UserWarning, match=r"softmax 'sm' stays float.*scale 1/256, zero point"):
        out = fuse_qdq_graph(g)
    assert [op.kind for op in out.ops] == [op.kind for op in g.ops]
    g = _softmax_qdq(axes=(0,))  # not the trailing axis: no int8 softmax, silently
    assert [op.kind for op in fuse_qdq_graph(g).ops] == [op.kind for op in g.ops]


def _classifier() -> onnx.ModelProto:
    """gemm → softmax, the MLPerf Tiny classifiers' head."""
    rng = np.random.default_rng(5)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]),
         helper.make_node("Gemm", ["f", "w", "b"], ["g"], transB=1),
         helper.make_node("Softmax", ["g"], ["y"], axis=-1)], "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12])],
        [numpy_helper.from_array(rng.normal(0, 0.1, (12, 192)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(0, 0.3, 12).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_quantize_static_qlinear_softmax_becomes_softmax_s8(tmp_path: Path) -> None:
    """onnxruntime's QOperator format fixes Softmax's output at scale 1/256, zero point -128
    (com.microsoft QLinearSoftmax): softmax_s8, within 1 LSB of onnxruntime's own run."""
    path = _quantized(tmp_path, _classifier(), QuantFormat.QOperator)
    out = fuse_qdq_graph(import_model(path))
    kinds = [op.kind for op in out.ops]
    assert "softmax_s8" in kinds and "softmax" not in kinds, kinds
    rng = np.random.default_rng(8)
    for _ in range(10):
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        lsb = np.abs(run_graph(out, {"x": x})["y"] - _ort(path, {"x": x})[0]) * 256
        assert lsb.max() <= 1.0 + 1e-6, lsb.max()


def test_quantize_static_qdq_softmax_at_1_over_255_stays_float(tmp_path: Path) -> None:
    """onnxruntime's QDQ format calibrates Softmax's output to [0, 1]: scale 1/255, which no
    int8 softmax kernel produces; the float softmax between its DQ and Q stays, with a warning."""
    path = _quantized(tmp_path, _classifier(), QuantFormat.QDQ)
    with pytest.warns(UserWarning, match="stays float: its output is quantized with scale "
                                         "0.00392157, zero point -128"):
        out = fuse_qdq_graph(import_model(path))
    kinds = [op.kind for op in out.ops]
    assert "softmax" in kinds and "fully_connected_s8" in kinds, kinds
