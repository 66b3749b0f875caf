"""softmax_s8 (TFLite's int8 softmax): the numpy reference equals the independent TFLite port in
tests/backends/cmsis_nn/tflite_reference.py, the loop nest equals the reference in the loop
interpreter and compiled to C, CMSIS-NN's arm_softmax_s8 (portable build) equals both, and the
outputs lie within 1 LSB of onnxruntime's QDQ softmax; parameters and type rules."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.backends.c.build import build
from nnc.backends.c.run import HostModel
from nnc.ir.graph import Attrs, Graph, Op, Value
from nnc.ir.loops import CallExtern, walk_stmts
from nnc.ir.ops import OpError, get_op
from nnc.ir.ops.int8_softmax import MAX_ROW, np_softmax_s8, softmax_s8_params
from nnc.ir.types import TensorType
from nnc.passes.manager import PassManager
from nnc.testing import check_op
from tests.backends.cmsis_nn import tflite_reference as tfl

# from just above TFLite's floor (beta * scale >= 2^-26) to one step spanning e^-40
SCALES = (2e-8, 1e-4, 0.004, 0.05, 0.3, 2.0, 40.0)
ROW_SIZES = (1, 2, 10, 12, 1000)


def _attrs(scale: float, axis: int = -1) -> dict[str, int]:
    mult, shift, diff_min = softmax_s8_params(scale)
    return dict(axis=axis, input_multiplier=mult, input_left_shift=shift, diff_min=diff_min)


def _rows(rng: np.random.Generator, row: int) -> np.ndarray:
    """Four rows: random, all equal (the largest sum of exps), one peak over -128s, and a
    narrow random spread near 127."""
    return np.stack([
        rng.integers(-128, 128, row),
        np.full(row, int(rng.integers(-128, 128))),
        np.where(np.arange(row) == rng.integers(0, row), 127, -128),
        rng.integers(120, 128, row),
    ]).astype(np.int8)


def _ref(x: np.ndarray, attrs: dict[str, int]) -> np.ndarray:
    return get_op("softmax_s8").reference([x], Attrs.of(attrs))[0]


# ---------------------------------------------------------------- parameters


def test_params_match_tflite():
    for scale in (2e-8, 1e-6, 1e-4, 0.004, 0.05, 0.1, 0.3, 1.0, 2.0, 10.0):
        assert softmax_s8_params(scale) == tfl.softmax_params(1.0, scale), scale
    assert softmax_s8_params(0.05, beta=1.7) == tfl.softmax_params(1.7, 0.05)


def test_params_of_large_scales_use_the_31_bit_shift():
    """beta * scale * 2^26 is capped at 2^31 - 1; TFLite's QuantizeMultiplierGreaterThanOne then
    gives a left shift of 31, and only the row's maximum itself counts (diff_min 0)."""
    assert softmax_s8_params(40.0) == (2**31 - 1, 31, 0)
    assert softmax_s8_params(1e6) == (2**31 - 1, 31, 0)


def test_too_small_scale_is_rejected():
    with pytest.raises(OpError, match="too small"):
        softmax_s8_params(1e-8)


# ---------------------------------------------------------------- reference


@pytest.mark.parametrize("scale", SCALES)
def test_reference_equals_the_tflite_port(scale):
    rng = np.random.default_rng(int(scale * 1e9) % 2**32)
    mult, shift, diff_min = softmax_s8_params(scale)
    for row in ROW_SIZES:
        x = _rows(rng, row)
        want = tfl.softmax(x, mult=mult, shift=shift, diff_min=diff_min)
        np.testing.assert_array_equal(np_softmax_s8(x, mult, shift, diff_min), want,
                                      f"row {row}")


def test_reference_is_a_softmax():
    rng = np.random.default_rng(1)
    for scale in (0.02, 0.1, 0.5):
        x = rng.integers(-128, 128, (16, 12)).astype(np.int8)
        got = (_ref(x, _attrs(scale)).astype(np.float64) + 128) / 256
        e = np.exp(scale * (x - x.max(axis=1, keepdims=True).astype(np.float64)))
        np.testing.assert_allclose(got, e / e.sum(axis=1, keepdims=True), atol=1.0 / 256)


def test_long_rows_of_equal_values_round_to_zero():
    """A row whose sum of exps is >= 2^28 needs a rounding shift past 31 (undefined in C in
    TFLite and CMSIS-NN); the exact result, 256/1000 of a 1/256 step, rounds to 0: -128."""
    x = np.full((1, 1000), 5, np.int8)
    np.testing.assert_array_equal(_ref(x, _attrs(1e-4)), np.full((1, 1000), -128, np.int8))
    x = np.full((1, 500), 5, np.int8)  # sum < 2^28, shift 31: 256 / 500 steps round to 1
    assert set(_ref(x, _attrs(1e-4)).ravel()) == {-127}
    x = np.full((1, 100), 5, np.int8)  # 2.56 steps
    assert set(_ref(x, _attrs(1e-4)).ravel()) == {-125}


# ---------------------------------------------------------------- loop nest (interpreter)


@pytest.mark.parametrize("scale", SCALES)
def test_loop_nest_equals_reference(scale):
    rng = np.random.default_rng(17 + int(scale * 1000))
    for row in ROW_SIZES[:-1]:
        check_op("softmax_s8", [_rows(rng, row)], _attrs(scale), rtol=0, atol=0)


@pytest.mark.parametrize("scale", [1e-4, 0.05])
def test_loop_nest_equals_reference_on_long_rows(scale):
    """Rows of 1000 (the Python loop interpreter is slow: two rows, one with a sum >= 2^28)."""
    x = _rows(np.random.default_rng(8), 1000)[:2]
    check_op("softmax_s8", [x], _attrs(scale), rtol=0, atol=0)


def test_loop_nest_over_trailing_axes():
    """axis=1 of [2, 3, 4]: rows of 12 (ONNX's opset < 13 flattening), and axis=-1 of rank 3."""
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (2, 3, 4)).astype(np.int8)
    got = check_op("softmax_s8", [x], _attrs(0.05, axis=1), rtol=0, atol=0)[0]
    np.testing.assert_array_equal(got.reshape(2, 12), _ref(x.reshape(2, 12), _attrs(0.05)))
    got = check_op("softmax_s8", [x], _attrs(0.05, axis=-1), rtol=0, atol=0)[0]
    np.testing.assert_array_equal(got.reshape(6, 4), _ref(x.reshape(6, 4), _attrs(0.05)))


# ---------------------------------------------------------------- compiled to C; CMSIS-NN


def _graph(rng: np.random.Generator) -> tuple[Graph, dict[str, np.ndarray]]:
    """One softmax_s8 per (scale, row size), plus a rank-3 one over its last two axes."""
    inputs, outputs, ops, feeds = [], [], [], {}
    cases = [(s, (4, r), -1) for s in SCALES for r in ROW_SIZES] + [(0.03, (2, 3, 5), 1)]
    for k, (scale, shape, axis) in enumerate(cases):
        x = _rows(rng, shape[-1]) if len(shape) == 2 else \
            rng.integers(-128, 128, shape).astype(np.int8)
        t = TensorType(shape, "int8")
        inputs.append(Value(f"x{k}", t))
        outputs.append(Value(f"y{k}", t))
        ops.append(Op("softmax_s8", (f"x{k}",), (outputs[-1],), Attrs.of(_attrs(scale, axis)),
                      f"softmax{k}"))
        feeds[f"x{k}"] = x
    return Graph("softmax_s8", tuple(inputs), tuple(outputs), (), tuple(ops)), feeds


@pytest.mark.parametrize("kernels", ["generated", "cmsis-nn"])
def test_compiled_c_equals_reference(tmp_path, kernels):
    graph, feeds = _graph(np.random.default_rng(99))
    module = PassManager(f"lower-to-loops{{kernels={kernels}}},plan-memory").run(graph)
    calls = [s.fn for k in module.kernels for s in walk_stmts(k.body)
             if isinstance(s, CallExtern)]
    assert calls == (["arm_softmax_s8"] * len(graph.ops) if kernels == "cmsis-nn" else [])
    build(module, tmp_path / "m", opt_level=2, werror=True, bench=False)
    got = HostModel(tmp_path / "m").run(feeds)
    for op in graph.ops:
        want = _ref(feeds[op.inputs[0]], dict(op.attrs))
        np.testing.assert_array_equal(got[op.outputs[0].name], want, op.name)


# ---------------------------------------------------------------- against onnxruntime


def _ort_qdq_softmax(x: np.ndarray, scale: float, zp: int, level: ort.GraphOptimizationLevel
                     ) -> np.ndarray:
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["d"]),
             helper.make_node("Softmax", ["d"], ["p"], axis=-1),
             helper.make_node("QuantizeLinear", ["p", "ys", "yz"], ["y"])]
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"),
             numpy_helper.from_array(np.array(zp, np.int8), "z"),
             numpy_helper.from_array(np.array(1 / 256, np.float32), "ys"),
             numpy_helper.from_array(np.array(-128, np.int8), "yz")]
    g = helper.make_graph(nodes, "qdq_softmax",
                          [helper.make_tensor_value_info("x", TensorProto.INT8, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, x.shape)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL])
def test_within_one_lsb_of_onnxruntime(level):
    """onnxruntime's float softmax (or its QLinearSoftmax table) rounds once; TFLite's fixed point
    is within 1 LSB of it. The input scale is a float32, as both store it."""
    rng = np.random.default_rng(5)
    for scale in (1e-4, 0.004, 0.05, 0.3, 2.0):
        scale = float(np.float32(scale))
        for row in (1, 2, 10, 12, 100):
            x = np.concatenate([_rows(rng, row), rng.integers(-128, 128, (12, row))]).astype(
                np.int8)
            want = _ort_qdq_softmax(x, scale, int(rng.integers(-20, 20)), level)
            got = _ref(x, _attrs(scale))
            diff = np.abs(got.astype(np.int32) - want)
            assert diff.max() <= 1, (scale, row, diff.max())


# ---------------------------------------------------------------- type rule


def _infer(shape, dtype="int8", **attrs):
    return get_op("softmax_s8").infer([TensorType(shape, dtype)], Attrs.of(attrs))


def test_type_rule():
    t = _infer((2, 3, 5), **_attrs(0.1, axis=1))[0]
    assert t == TensorType((2, 3, 5), "int8")
    assert _infer((1, MAX_ROW), **_attrs(0.1))[0].shape == (1, MAX_ROW)


@pytest.mark.parametrize("shape, dtype, attrs, message", [
    ((2, 4), "float32", _attrs(0.1), "input must be int8"),
    ((), "int8", _attrs(0.1), "rank >= 1"),
    ((2, 4), "int8", dict(input_multiplier=2**30, input_left_shift=3), "diff_min is required"),
    ((2, 4), "int8", dict(_attrs(0.1), input_left_shift=32), r"input_left_shift=32 in \[0, 31\]"),
    ((2, 4), "int8", dict(_attrs(0.1), diff_min=-5000), "diff_min=-5000 must be in"),
    ((2, 4), "int8", dict(_attrs(0.1), diff_min=1), "diff_min=1 must be in"),
    ((2, 4), "int8", _attrs(0.1, axis=2), "axis 2 out of range"),
    ((1, MAX_ROW + 1), "int8", _attrs(0.1), "row of 4096 elements"),
    ((2, 0), "int8", _attrs(0.1), "row of 0 elements"),
])
def test_type_rule_errors(shape, dtype, attrs, message):
    with pytest.raises(OpError, match=message):
        _infer(shape, dtype, **attrs)
