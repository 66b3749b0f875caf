"""pad-depthwise-rows: which convs it pads, the graph it makes (verified, same values in the graph
interpreter), and the compiled host model: bit-identical with and without the pass, and equal
to onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.backends.target import parse_target
from nnc.compiler.pipeline import PIPELINES
from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.interp import run_graph
from nnc.ir.ops import get_op
from nnc.ir.types import TensorType
from nnc.ir.verify import verify_graph
from nnc.passes.manager import PassContext
from nnc.passes.pad_depthwise_rows import pad_depthwise_rows

RNG = np.random.default_rng(0)


def dw_graph(c: int = 8, h: int = 25, w: int = 5, stride: int = 1, weight_scale: float = 1.0,
             tail: tuple[str, ...] = ("relu",)) -> Graph:
    """x -> depthwise 3x3 conv (pad 1, bias) -> the `tail` ops ("relu", "mul_c": a multiply
    by a per-channel [C, 1, 1] constant, "add_x": an add of the graph input, which must stay
    after the slice)."""
    x = TensorType((1, c, h, w), "float32")
    consts = (Constant.of("w", (RNG.standard_normal((c, 1, 3, 3)) * weight_scale)
                          .astype(np.float32)),
              Constant.of("b", RNG.standard_normal(c).astype(np.float32)),
              Constant.of("s", RNG.standard_normal((c, 1, 1)).astype(np.float32)))
    types = {"x": x, **{k.name: k.value.type for k in consts}}
    attrs = Attrs.of(strides=(stride, stride), pads=(1, 1, 1, 1), dilations=(1, 1), group=c,
                     kernel_shape=(3, 3))
    specs = [("conv", ("x", "w", "b"), attrs, "y0")]
    for i, t in enumerate(tail):
        src = specs[-1][3]
        ins = {"relu": (src,), "mul_c": (src, "s"), "add_x": (src, "x")}[t]
        specs.append(({"add_x": "add", "mul_c": "mul"}.get(t, t), ins, Attrs(), f"y{i + 1}"))
    ops = []
    for kind, ins, a, out in specs:
        t = get_op(kind).infer([types[n] for n in ins], a)[0]
        types[out] = t
        ops.append(Op(kind, ins, (Value(out, t),), a, name=out))
    last = specs[-1][3]
    return Graph("g", (Value("x", x),), (Value(last, types[last]),), consts, tuple(ops))


def run_pass(g: Graph, target: str = "host") -> Graph:
    out = pad_depthwise_rows(g, PassContext(None, parse_target(target), {}))
    verify_graph(out)
    return out


def test_narrow_rows_are_padded_and_the_epilogue_runs_on_the_wide_rows() -> None:
    g = dw_graph(tail=("relu", "mul_c"))
    out = run_pass(g)
    assert [op.kind for op in out.ops] == ["pad", "conv", "relu", "mul", "slice"]
    pad, conv, relu, _, sl = out.ops
    assert pad.attr("pads") == (0, 0, 1, 1, 0, 0, 1, 4)  # 5 columns -> 8, + 2 for the taps
    assert pad.outputs[0].type.shape == (1, 8, 27, 10)
    assert conv.attr("pads") == (0, 0, 0, 0) and relu.outputs[0].type.shape == (1, 8, 25, 8)
    assert sl.outputs[0] == g.outputs[0] and sl.attr("ends") == (1, 8, 25, 5)
    x = RNG.standard_normal((1, 8, 25, 5)).astype(np.float32)
    want = run_graph(g, {"x": x})[g.outputs[0].name]
    np.testing.assert_allclose(run_graph(out, {"x": x})[g.outputs[0].name], want, rtol=1e-6,
                               atol=1e-6)


def test_an_add_of_another_tensor_stays_after_the_slice() -> None:
    out = run_pass(dw_graph(tail=("relu", "add_x")))
    assert [op.kind for op in out.ops] == ["pad", "conv", "relu", "slice", "add"]


def test_whole_rows_get_only_the_padding() -> None:
    """16-wide rows are whole vectors already: the explicit padding, no slice."""
    g = dw_graph(h=6, w=16)
    out = run_pass(g)
    assert [op.kind for op in out.ops] == ["pad", "conv", "relu"]
    assert out.ops[0].attr("pads") == (0, 0, 1, 1, 0, 0, 1, 1)
    x = RNG.standard_normal((1, 8, 6, 16)).astype(np.float32)
    np.testing.assert_array_equal(run_graph(out, {"x": x})[g.outputs[0].name],
                                  run_graph(g, {"x": x})[g.outputs[0].name])


def _dense_graph(w: int, pads: tuple[int, ...] = (1, 1, 1, 1), stride: int = 1) -> Graph:
    x = TensorType((1, 3, 8, w), "float32")
    consts = (Constant.of("w", RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)),)
    attrs = Attrs.of(strides=(stride, stride), pads=pads, dilations=(1, 1), group=1,
                     kernel_shape=(3, 3))
    t = get_op("conv").infer([x, consts[0].value.type], attrs)[0]
    return Graph("g", (Value("x", x),), (Value("y", t),), consts,
                 (Op("conv", ("x", "w"), (Value("y", t),), attrs, name="y"),))


@pytest.mark.parametrize("stride, pads", [(1, (1, 1, 1, 1)), (2, (0, 0, 1, 1))])
def test_dense_convs_get_explicit_padding(stride: int, pads: tuple[int, ...]) -> None:
    g = _dense_graph(16, pads, stride)
    out = run_pass(g)
    assert [op.kind for op in out.ops] == ["pad", "conv"]
    assert out.ops[1].attr("pads") == (0, 0, 0, 0)
    assert out.ops[0].attr("pads") == (0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3])
    x = RNG.standard_normal((1, 3, 8, 16)).astype(np.float32)
    np.testing.assert_allclose(run_graph(out, {"x": x})["y"], run_graph(g, {"x": x})["y"],
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("why, graph", [
    ("unpadded", _dense_graph(16, (0, 0, 0, 0))),
    ("rows of 48 (> max_dense_width)", _dense_graph(50)),
    ("stride 2", dw_graph(stride=2)),
    ("rows of 48 fill the lanes already", dw_graph(h=6, w=48)),
    ("rows of 3: measured slower padded", dw_graph(h=3, w=3)),
    ("0 * inf is not the skipped tap", dw_graph(weight_scale=np.inf)),
])
def test_left_alone(why: str, graph: Graph) -> None:
    assert run_pass(graph) is graph, why


def test_only_on_the_host() -> None:
    g = dw_graph()
    assert run_pass(g, "cortex-m7") is g
    assert "pad-depthwise-rows" in PIPELINES["host"]
    assert all("pad-depthwise-rows" not in p for k, p in PIPELINES.items() if k != "host")


def _onnx_dw(c: int, h: int, w: int) -> tuple[object, np.ndarray]:
    wt = RNG.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(c).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y0"], pads=[1] * 4, group=c),
             helper.make_node("Relu", ["y0"], ["y"])]
    g = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, c, h, w])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    return model, RNG.standard_normal((1, c, h, w)).astype(np.float32)


@pytest.mark.parametrize("shape", [(16, 25, 5), (8, 12, 12)])
def test_compiled_bits_equal_without_the_pass_and_match_onnxruntime(shape, tmp_path: Path
                                                                     ) -> None:
    import onnxruntime as ort

    import nnc

    model, x = _onnx_dw(*shape)
    # these planes run flat where the vectors allow (flat-depthwise, its own tests)
    rows = ",".join(p for p in PIPELINES["host"] if p != "flat-depthwise")
    padded = nnc.compile(model, target="host", output_dir=tmp_path / "a", bench=False,
                         pipeline=rows)
    assert [layer["op"] for layer in padded.info["layers"]] == ["pad", "conv+relu", "slice"]
    plain = nnc.compile(model, target="host", output_dir=tmp_path / "b", bench=False,
                        pipeline=",".join(p for p in PIPELINES["host"]
                                          if p not in ("pad-depthwise-rows", "flat-depthwise")))
    assert [layer["op"] for layer in plain.info["layers"]] == ["conv+relu"]
    got = padded.run({"x": x})["y"]
    np.testing.assert_array_equal(got, plain.run({"x": x})["y"])  # the zeros add exactly 0
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)
