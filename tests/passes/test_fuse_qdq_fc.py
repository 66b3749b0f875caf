"""fuse-qdq: the fully connected forms tf2onnx writes for TFLite's FULLY_CONNECTED, and the
`rounding` option (TFLite's double rounding or onnxruntime's single one)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.backends.target import parse_target
from nnc.compiler.onnx.importer import import_model
from nnc.ir.fixed_point import np_requantize
from nnc.ir.graph import Graph
from nnc.ir.interp import run_graph
from nnc.passes.fuse_qdq import (
    FuseQdqOptions,
    _fc_reals,
    fuse_qdq,
    fuse_qdq_graph,
    requant_multipliers,
)
from nnc.passes.manager import PassContext, PassError, parse_pipeline
from nnc.passes.quant_scheme import quantize_multiplier

K, N = 48, 20
X_SCALE, X_ZP, Y_SCALE, Y_ZP = 0.05, -3, 0.07, -128


def _fc_model(form: str, lead: tuple[int, ...] = (1,), relu: bool = True, seed: int = 0,
              y_scale: float = Y_SCALE, y_zp: int = Y_ZP, residual: bool = False):
    """int8 x [*lead, K] → DQ → fully connected (as `form` writes it) → [Relu] → Q → int8 y.

    forms: "matmul_add" (MatMul with W [K, N], then Add(DQ(bias int32))), "bias_first" (the Add's
    operands swapped), "float_bias" (Add of a float constant), "transposed" (MatMul with
    Transpose(DQ(W [N, K]))), "per_channel" (W [K, N] with one scale per output, axis 1),
    "gemm_add" (Gemm without C, then the Add), "no_bias" (MatMul alone). `residual`: the Add
    adds a second int8 input r [*lead, N] instead of the bias."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (N, K)).astype(np.int8)  # TFLite's [N, K]
    per_channel = form == "per_channel"
    ws = (rng.uniform(0.002, 0.006, N) if per_channel else np.array(0.004)).astype(np.float32)
    bias = rng.integers(-3000, 3000, N).astype(np.int32)
    bs = (np.float32(X_SCALE) * ws).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(X_SCALE, np.float32), "xs"),
        numpy_helper.from_array(np.array(X_ZP, np.int8), "xz"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
        numpy_helper.from_array(np.array(y_zp, np.int8), "yz"),
        numpy_helper.from_array(ws, "ws"),
        numpy_helper.from_array(np.zeros(ws.shape, np.int8), "wz"),
        numpy_helper.from_array(bs, "bs"),
        numpy_helper.from_array(np.zeros(bs.shape, np.int32), "bz"),
        numpy_helper.from_array(bias, "b"),
    ]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"])]
    if form == "transposed":
        inits.append(numpy_helper.from_array(w, "w"))
        nodes += [helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf_nk"]),
                  helper.make_node("Transpose", ["wf_nk"], ["wf"], perm=[1, 0])]
    else:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), "w"))
        nodes.append(helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"],
                                      **({"axis": 1} if per_channel else {})))
    if form == "gemm_add":
        nodes.append(helper.make_node("Gemm", ["xf", "wf"], ["mm"]))
    else:
        nodes.append(helper.make_node("MatMul", ["xf", "wf"], ["mm"]))
    last = "mm"
    if form != "no_bias":
        if residual:
            nodes.append(helper.make_node("DequantizeLinear", ["r", "xs", "xz"], ["bf"]))
        elif form == "float_bias":
            inits.append(numpy_helper.from_array((bias * bs).astype(np.float32), "bf"))
        else:
            nodes.append(helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bf"],
                                          **({"axis": 0} if per_channel else {})))
        pair = ["bf", "mm"] if form == "bias_first" else ["mm", "bf"]
        nodes.append(helper.make_node("Add", pair, ["biased"]))
        last = "biased"
    if relu:
        nodes.append(helper.make_node("Relu", [last], ["act"]))
        last = "act"
    nodes.append(helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["y"]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.INT8, [*lead, K])]
    if residual:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.INT8, [*lead, N]))
    graph = helper.make_graph(
        nodes, "fc", inputs,
        [helper.make_tensor_value_info("y", TensorProto.INT8, [*lead, N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model, w, ws, bias


def _inputs(lead: tuple[int, ...], n: int = 64, seed: int = 1, spread: int = 128
            ) -> list[np.ndarray]:
    """n int8 inputs uniform in [X_ZP - spread, X_ZP + spread) (clipped to int8)."""
    rng = np.random.default_rng(seed)
    return [np.clip(rng.integers(X_ZP - spread, X_ZP + spread, (*lead, K)), -128, 127)
            .astype(np.int8) for _ in range(n)]


def _tflite_fc(x: np.ndarray, w: np.ndarray, ws: np.ndarray, bias: np.ndarray | None,
               relu: bool, y_scale: float = Y_SCALE, y_zp: int = Y_ZP) -> np.ndarray:
    """TFLite's reference int8 FULLY_CONNECTED (and TFLite Micro's, CMSIS-NN's): int32
    accumulation, MultiplyByQuantizedMultiplier with QuantizeMultiplier's pair (per tensor:
    M = double(float(x_scale * w_scale)) / y_scale)."""
    acc = (x.astype(np.int64) - X_ZP) @ w.astype(np.int64).T
    if bias is not None:
        acc = acc + bias
    if ws.size == 1:
        reals = [float(np.float32(X_SCALE) * np.float32(ws)) / float(np.float32(y_scale))]
    else:
        reals = [float(np.float32(X_SCALE)) * float(s) / float(np.float32(y_scale)) for s in ws]
    pairs = [quantize_multiplier(r) for r in reals]
    m = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs])
    y = np_requantize(acc, m, s) + y_zp
    return np.clip(y, y_zp if relu else -128, 127).astype(np.int8)


def _only_fc(g: Graph) -> None:
    assert [op.kind for op in g.ops] == ["fully_connected_s8"], [op.kind for op in g.ops]
    big_float = [c.name for c in g.constants if c.data.dtype == np.float32 and c.data.size > 1]
    assert not big_float, big_float
    types = g.value_types()
    fc = g.ops[0]
    assert types[fc.inputs[1]].dtype == "int8" and types[fc.inputs[1]].shape == (N, K)
    assert len(fc.inputs) == 5 and types[fc.inputs[4]].dtype == "int32"


FORMS = ["matmul_add", "bias_first", "float_bias", "transposed", "per_channel", "gemm_add"]


@pytest.mark.parametrize("form", FORMS)
def test_tf2onnx_fully_connected_forms_become_one_int8_fc(form: str) -> None:
    model, w, ws, bias = _fc_model(form)
    g = import_model(model)
    for rounding in ("tflite", "onnx"):
        fused = fuse_qdq_graph(g, rounding)
        _only_fc(fused)
        # the weight in the op's [N, K] layout, whichever way the model stored it
        assert np.array_equal(fused.constant_map()[fused.ops[0].inputs[1]], w)
    fused = fuse_qdq_graph(g, "tflite")
    for x in _inputs((1,)):
        got = run_graph(fused, {"x": x})["y"]
        np.testing.assert_array_equal(got, _tflite_fc(x, w, ws, bias, relu=True))


@pytest.mark.parametrize("lead", [(1,), (1, 5), (3, 2)])
def test_matmul_add_over_the_last_axis_of_any_rank(lead: tuple[int, ...]) -> None:
    model, w, ws, bias = _fc_model("matmul_add", lead=lead, relu=False)
    fused = fuse_qdq_graph(import_model(model), "tflite")
    _only_fc(fused)
    for x in _inputs(lead, 8):
        np.testing.assert_array_equal(run_graph(fused, {"x": x})["y"],
                                      _tflite_fc(x, w, ws, bias, relu=False))


def test_onnx_rounding_rounds_once_tflite_rounding_as_tflite() -> None:
    """"onnx" rounding gives round(acc * M) (onnxruntime's float requantization, one rounding)
    on (nearly) every code; "tflite" rounding rounds twice (M = 0.0116 here: a right shift of
    6), ~1% of the codes 1 LSB off that, and is exactly TFLite's FC. Both stay within 1 LSB of
    the unfused float QDQ graph."""
    ys = 0.0173
    model, w, ws, bias = _fc_model("matmul_add", relu=False, y_scale=ys, y_zp=0)
    g = import_model(model)
    xs = _inputs((1,), 200, spread=20)  # outputs within int8: few saturate
    acc = np.stack([(x.astype(np.int64) - X_ZP) @ w.astype(np.int64).T + bias for x in xs])
    m = float(np.float32(X_SCALE)) * float(ws) / float(np.float32(ys))
    once = np.clip(np.round(acc * m), -128, 127)
    assert np.mean(np.abs(once) < 127) > 0.9
    qdq = np.stack([run_graph(g, {"x": x})["y"] for x in xs]).astype(np.int64)
    got = {}
    for rounding in ("tflite", "onnx"):
        fused = fuse_qdq_graph(g, rounding)
        got[rounding] = np.stack([run_graph(fused, {"x": x})["y"] for x in xs]).astype(np.int64)
        assert np.abs(got[rounding] - qdq).max() <= 1
    exact = {r: float(np.mean(v == once)) for r, v in got.items()}
    assert exact["onnx"] >= 0.999 and exact["tflite"] < 0.997, exact
    tflite = np.stack([_tflite_fc(x, w, ws, bias, False, ys, 0) for x in xs])
    np.testing.assert_array_equal(got["tflite"], tflite)


def test_rounding_modes_encode_the_multipliers_differently() -> None:
    reals = np.array([0.003, 0.02, 0.3, 0.75])
    mt, st = requant_multipliers(reals, "tflite")
    mo, so = requant_multipliers(reals, "onnx")
    assert [quantize_multiplier(r) for r in reals] == list(zip(mt.tolist(), st.tolist(),
                                                               strict=True))
    assert so.tolist() == [0, 0, 0, 0] and mo[:3].tolist() == [
        int(np.floor(r * 2**31 + 0.5)) for r in reals[:3]]
    assert (mo[3], so[3]) == (mt[3], st[3])  # from 0.5 up both are QuantizeMultiplier's
    with pytest.raises(ValueError, match="tflite, onnx"):
        requant_multipliers(reals, "round")


def test_per_tensor_fc_multiplier_takes_the_scale_product_in_float32() -> None:
    """TFLite's GetQuantizedConvolutionMultipler: double(float(x_scale * w_scale)) / y_scale;
    per channel (and convs) the product is in double."""
    xs, ws, ys = 0.0371, np.array([0.00437]), 0.0913
    want = float(np.float32(np.float32(xs) * np.float32(ws[0]))) / float(np.float32(ys))
    assert _fc_reals(xs, ws, ys, "tflite").tolist() == [want]
    assert _fc_reals(xs, ws, ys, "onnx").tolist() == [
        float(np.float32(xs)) * ws[0] / float(np.float32(ys))]


def test_matmul_whose_add_is_not_a_bias_keeps_the_add() -> None:
    """An add of another activation (a residual) is no bias: the MatMul's output must be
    quantized right after it for a rewrite, so both stay float."""
    model, *_ = _fc_model("matmul_add", relu=False, residual=True)
    fused = fuse_qdq_graph(import_model(model), "tflite")
    kinds = [op.kind for op in fused.ops]
    assert "matmul" in kinds and "add" in kinds and "fully_connected_s8" not in kinds


def test_bias_that_does_not_broadcast_along_the_last_axis_stays_float() -> None:
    model, *_ = _fc_model("float_bias", lead=(1, 5), relu=False)
    init = next(t for t in model.graph.initializer if t.name == "bf")
    init.CopyFrom(numpy_helper.from_array(np.ones((5, N), np.float32), "bf"))
    kinds = [op.kind for op in fuse_qdq_graph(import_model(model), "tflite").ops]
    assert "fully_connected_s8" not in kinds


def test_fuse_qdq_pass_rounds_the_tflite_way_unless_told() -> None:
    model, *_ = _fc_model("matmul_add")
    g = import_model(model)

    def shift_of(target: str, options: FuseQdqOptions | None) -> list[int]:
        ctx = PassContext(options=options, target=parse_target(target))
        out = fuse_qdq(g, ctx)
        assert ctx.facts["int8_rounding"] in ("tflite", "onnx")
        return out.constant_map()[out.ops[0].inputs[3]].tolist()

    tflite_shift = shift_of("cortex-m7", None)
    assert tflite_shift[0] < 0  # QuantizeMultiplier's right shift: rounds twice
    assert shift_of("host", None) == tflite_shift  # one default on every target
    assert shift_of("host", FuseQdqOptions("onnx")) == [0]  # one rounding
    assert shift_of("host", FuseQdqOptions("tflite")) == tflite_shift
    assert shift_of("cortex-m4", FuseQdqOptions("onnx")) == [0]


def test_rounding_option_in_a_pipeline_string() -> None:
    (step,) = parse_pipeline("fuse-qdq{rounding=tflite}")
    assert step.options == FuseQdqOptions("tflite")
    with pytest.raises(PassError, match="rounding must be one of tflite, onnx"):
        parse_pipeline("fuse-qdq{rounding=nearest}")
