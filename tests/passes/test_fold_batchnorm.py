"""fold-batchnorm: Before/After on small graphs, numerics checked with the graph interpreter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.interp import run_graph
from nnc.ir.ops import get_op
from nnc.ir.printer import print_graph
from nnc.ir.types import TensorType
from nnc.ir.verify import verify_graph
from nnc.passes.fold_batchnorm import fold_batchnorm
from nnc.passes.manager import PassContext

Spec = tuple[str, Sequence[str], dict[str, Any], str]  # kind, inputs, attrs, output name
CONV = {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1), "group": 1}
RNG = np.random.default_rng(0)


def build(inputs: dict[str, tuple[int, ...]], consts: dict[str, np.ndarray],
          ops: Sequence[Spec], outputs: Sequence[str], dtype: str = "float32") -> Graph:
    types = {n: TensorType(s, dtype) for n, s in inputs.items()}
    constants = tuple(Constant.of(n, a.astype(dtype)) for n, a in consts.items())
    types.update({c.name: c.value.type for c in constants})
    built = []
    for kind, ins, attrs, out in ops:
        t = get_op(kind).infer([types[n] if n else None for n in ins], Attrs.of(attrs))[0]
        types[out] = t
        built.append(Op(kind, tuple(ins), (Value(out, t),), Attrs.of(attrs), name=f"{out}_op"))
    return Graph("g", tuple(Value(n, types[n]) for n in inputs), tuple(
        Value(n, types[n]) for n in outputs), constants, tuple(built))


def bn_params(c: int) -> dict[str, np.ndarray]:
    return {"scale": RNG.uniform(0.5, 2, c), "bias": RNG.standard_normal(c),
            "mean": RNG.standard_normal(c), "var": RNG.uniform(0.1, 2, c)}


BN = ("scale", "bias", "mean", "var")


def run(graph: Graph) -> Graph:
    out = fold_batchnorm(graph, PassContext())
    verify_graph(out)
    return out


def same_numerics(before: Graph, after: Graph, rtol: float = 1e-5) -> None:
    rng = np.random.default_rng(3)
    feeds = {v.name: rng.standard_normal(v.type.shape).astype(v.type.dtype) for v in before.inputs}
    want, got = run_graph(before, feeds), run_graph(after, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("group", [1, 2])
def test_conv_bn_folds_into_weights(bias: bool, group: int) -> None:
    consts = {"w": RNG.standard_normal((4, 4 // group, 3, 3)), **bn_params(4)}
    if bias:
        consts["b"] = RNG.standard_normal(4)
    before = build({"x": (1, 4, 5, 5)}, consts, [
        ("conv", ("x", "w", "b" if bias else ""), {**CONV, "group": group}, "c"),
        ("batch_normalization", ("c", *BN), {"epsilon": 1e-3}, "y"),
    ], ["y"])
    after = run(before)
    (conv,) = after.ops
    assert conv.kind == "conv" and conv.outputs == before.outputs and conv.name == "c_op"
    assert conv.inputs[0] == "x" and conv.inputs[1] == "w_bn"
    assert sorted(c.name for c in after.constants) == sorted(conv.inputs[1:])
    same_numerics(before, after)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_bn_folds_with_c_and_beta(trans_b: int) -> None:
    w = RNG.standard_normal((5, 3) if trans_b else (3, 5))
    before = build({"a": (2, 3)}, {"w": w, "c": RNG.standard_normal((2, 1)), **bn_params(5)}, [
        ("gemm", ("a", "w", "c"), {"alpha": 0.5, "beta": 2.0, "trans_a": 0, "trans_b": trans_b},
         "g"),
        ("batch_normalization", ("g", *BN), {"epsilon": 1e-5}, "y"),
    ], ["y"])
    after = run(before)
    (gemm,) = after.ops
    assert gemm.kind == "gemm" and gemm.attr("beta") == 1.0 and gemm.attr("alpha") == 0.5
    same_numerics(before, after)


def test_gemm_without_c() -> None:
    before = build({"a": (2, 3)}, {"w": RNG.standard_normal((2, 4)), **bn_params(4)}, [
        ("gemm", ("a", "w"), {"trans_a": 1}, "g"),
        ("batch_normalization", ("g", *BN), {}, "y"),
    ], ["y"])
    after = run(before)
    assert [op.kind for op in after.ops] == ["gemm"] and len(after.ops[0].inputs) == 3
    same_numerics(before, after)


def test_matmul_bn_becomes_gemm() -> None:
    before = build({"a": (2, 3)}, {"w": RNG.standard_normal((3, 4)), **bn_params(4)}, [
        ("matmul", ("a", "w"), {}, "m"),
        ("batch_normalization", ("m", *BN), {}, "y"),
    ], ["y"])
    after = run(before)
    assert [op.kind for op in after.ops] == ["gemm"]
    same_numerics(before, after)


def test_other_bn_becomes_mul_add_with_broadcast_constants() -> None:
    before = build({"x": (1, 3, 2, 2)}, bn_params(3), [
        ("relu", ("x",), {}, "r"),
        ("batch_normalization", ("r", *BN), {}, "y"),
    ], ["y"])
    after = run(before)
    assert print_graph(after, elide_constants=True) == (
        "graph @g(%x: f32[1,3,2,2]) -> (%y: f32[1,3,2,2]) {\n"
        "  const %y_op_scale: f32[3,1,1] = dense<...>\n"
        "  const %y_op_shift: f32[3,1,1] = dense<...>\n"
        "  %r: f32[1,3,2,2] = relu(%x) loc(\"r_op\")\n"
        "  %y_op_scaled: f32[1,3,2,2] = mul(%r, %y_op_scale) loc(\"y_op_mul\")\n"
        "  %y: f32[1,3,2,2] = add(%y_op_scaled, %y_op_shift) loc(\"y_op_add\")\n"
        "  return %y\n"
        "}\n"
    )
    same_numerics(before, after)


def test_conv_with_two_consumers_keeps_its_weights() -> None:
    before = build({"x": (1, 2, 3, 3)}, {"w": RNG.standard_normal((2, 2, 1, 1)), **bn_params(2)}, [
        ("conv", ("x", "w", ""), {**CONV, "pads": (0, 0, 0, 0)}, "c"),
        ("batch_normalization", ("c", *BN), {}, "y"),
        ("relu", ("c",), {}, "z"),
    ], ["y", "z"])
    after = run(before)
    assert [op.kind for op in after.ops] == ["conv", "mul", "add", "relu"]
    same_numerics(before, after)


def test_rank2_bn_and_float64() -> None:
    before = build({"x": (4, 3)}, bn_params(3), [
        ("batch_normalization", ("x", *BN), {"epsilon": 0.1}, "y")], ["y"], dtype="float64")
    after = run(before)
    assert [c.value.type.shape for c in after.constants] == [(3,), (3,)]
    assert after.constants[0].value.type.dtype == "float64"
    same_numerics(before, after, rtol=1e-12)


def test_bn_with_runtime_parameters_stays() -> None:
    before = build({"x": (1, 2, 2, 2), "mean": (2,)},
                   {k: v for k, v in bn_params(2).items() if k != "mean"},
                   [("batch_normalization", ("x", *BN), {}, "y")], ["y"])
    assert run(before) is before


def test_unrelated_unused_constants_stay() -> None:
    before = build({"x": (2, 3)}, {**bn_params(3), "other": np.ones(2)},
                   [("batch_normalization", ("x", *BN), {}, "y")], ["y"])
    after = run(before)
    assert "other" in [c.name for c in after.constants]
    assert not {"scale", "bias", "mean", "var"} & {c.name for c in after.constants}


@pytest.mark.parametrize("bias_first", [False, True])
@pytest.mark.parametrize("c_shape", [(4,), (1, 4)])
def test_matmul_add_bn_becomes_gemm_with_bias(bias_first: bool, c_shape: tuple[int, ...]) -> None:
    add_in = ("c", "m") if bias_first else ("m", "c")
    before = build({"a": (2, 3)}, {"w": RNG.standard_normal((3, 4)),
                                   "c": RNG.standard_normal(c_shape), **bn_params(4)}, [
        ("matmul", ("a", "w"), {}, "m"),
        ("add", add_in, {}, "s"),
        ("batch_normalization", ("s", *BN), {"epsilon": 1e-3}, "y"),
        ("relu", ("y",), {}, "r"),
    ], ["r"])
    after = run(before)
    assert print_graph(after, elide_constants=True) == (
        "graph @g(%a: f32[2,3]) -> (%r: f32[2,4]) {\n"
        "  const %w_bn: f32[3,4] = dense<...>\n"
        f"  const %c_bn_bias: f32[{','.join(map(str, c_shape))}] = dense<...>\n"
        "  %y: f32[2,4] = gemm(%a, %w_bn, %c_bn_bias) {alpha = 1.0, beta = 1.0, trans_a = 0, "
        "trans_b = 0} loc(\"m_op\")\n"
        "  %r: f32[2,4] = relu(%y) loc(\"r_op\")\n"
        "  return %r\n"
        "}\n"
    )
    same_numerics(before, after)


def test_matmul_add_with_a_second_consumer_keeps_its_weights() -> None:
    before = build({"a": (2, 3)}, {"w": RNG.standard_normal((3, 4)), "c": RNG.standard_normal(4),
                                   **bn_params(4)}, [
        ("matmul", ("a", "w"), {}, "m"),
        ("add", ("m", "c"), {}, "s"),
        ("batch_normalization", ("s", *BN), {}, "y"),
        ("relu", ("m",), {}, "z"),
    ], ["y", "z"])
    after = run(before)
    assert [op.kind for op in after.ops] == ["matmul", "add", "mul", "add", "relu"]
    same_numerics(before, after)


@pytest.mark.parametrize("case", ["rank3", "runtime-bias", "bias-broadcasts-up"])
def test_matmul_add_bn_not_on_the_feature_axis_or_not_constant_stays(case: str) -> None:
    """Rank 3: the batch norm's channel axis 1 is not the matmul's feature axis (same size here,
    so only the axis tells them apart). A runtime bias, or one that broadcasts the sum to a
    larger shape, is no gemm c."""
    inputs: dict[str, tuple[int, ...]] = {"a": (1, 4, 5) if case == "rank3" else (1, 3)}
    consts = {"w": RNG.standard_normal((5, 4) if case == "rank3" else (3, 4)), **bn_params(4)}
    if case == "runtime-bias":
        inputs["c"] = (4,)
    else:
        consts["c"] = RNG.standard_normal((2, 4) if case == "bias-broadcasts-up" else (4,))
    before = build(inputs, consts, [
        ("matmul", ("a", "w"), {}, "m"),
        ("add", ("m", "c"), {}, "s"),
        ("batch_normalization", ("s", *BN), {}, "y"),
    ], ["y"])
    after = run(before)
    assert [op.kind for op in after.ops] == ["matmul", "add", "mul", "add"]
    same_numerics(before, after)


def test_ad_autoencoder_folds_every_bn_and_matches_onnxruntime() -> None:
    """MLPerf Tiny AD (Dense → BN → ReLU, Dense alternating Gemm and MatMul+Add): after the float
    passes only gemm/relu remain, with onnxruntime's outputs; quantize then makes a pure chain of
    fully_connected_s8 (no int8 mul/add standing for a BN)."""
    ort = pytest.importorskip("onnxruntime")
    from benchmarks.models import MODELS
    from nnc.compiler.onnx.importer import import_model
    from nnc.passes.calibrate import calibrate
    from nnc.passes.manager import PassManager
    from nnc.passes.quantize import quantize_graph

    model = MODELS["ad"]()
    g = PassManager("fold-constants,eliminate-dead-code,fold-batchnorm,fold-constants").run(
        import_model(model))
    assert {op.kind for op in g.ops} == {"gemm", "relu", "reshape"}
    assert [op.kind for op in g.ops].count("gemm") == 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    samples = [{"input": rng.standard_normal((1, 640)).astype(np.float32)} for _ in range(8)]
    for s in samples[:3]:
        np.testing.assert_allclose(run_graph(g, s)["output"], sess.run(None, s)[0],
                                   rtol=1e-4, atol=1e-4)
    q = quantize_graph(g, calibrate(g, samples))
    kinds = [op.kind for op in q.ops]
    assert kinds == ["quantize_linear", *["fully_connected_s8"] * 10, "reshape",
                     "dequantize_linear"], kinds
