"""flatten-pointwise: which 1x1 convs run over their plane as one row, the graph it makes (same
values in the graph interpreter), and the compiled host model against onnxruntime."""

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
from nnc.passes.flatten_pointwise import flatten_pointwise
from nnc.passes.manager import PassContext

RNG = np.random.default_rng(0)


def pw_graph(h: int = 25, w: int = 5, k: int = 1, stride: int = 1, pad: int = 0,
             tail: tuple[str, ...] = ("relu", "mul_c"), out_relu: bool = True) -> Graph:
    """x [1, 8, h, w] -> conv k x k into 6 channels (bias) -> the `tail` ops ("relu", "mul_c":
    a multiply by a [6, 1, 1] constant, "mul_row": by a [w] constant, which broadcasts along
    the row) -> a final relu (unless out_relu is False: the chain then ends at the output)."""
    x = TensorType((1, 8, h, w), "float32")
    consts = (Constant.of("w", RNG.standard_normal((6, 8, k, k)).astype(np.float32)),
              Constant.of("b", RNG.standard_normal(6).astype(np.float32)),
              Constant.of("s", RNG.standard_normal((6, 1, 1)).astype(np.float32)),
              Constant.of("r", RNG.standard_normal(w).astype(np.float32)))
    types = {"x": x, **{c.name: c.value.type for c in consts}}
    attrs = Attrs.of(strides=(stride, stride), pads=(pad,) * 4, dilations=(1, 1), group=1,
                     kernel_shape=(k, k))
    specs = [("conv", ("x", "w", "b"), attrs, "y0")]
    for i, t in enumerate(tail):
        src = specs[-1][3]
        ins = {"relu": (src,), "mul_c": (src, "s"), "mul_row": (src, "r")}[t]
        specs.append(({"relu": "relu"}.get(t, "mul"), ins, Attrs(), f"y{i + 1}"))
    if out_relu:
        specs.append(("sigmoid", (specs[-1][3],), Attrs(), "out"))
    ops = []
    for kind, ins, a, out in specs:
        t = get_op(kind).infer([types[n] for n in ins], a)[0]
        types[out] = t
        ops.append(Op(kind, ins, (Value(out, t),), a, name=out))
    last = specs[-1][3]
    return Graph("g", (Value("x", x),), (Value(last, types[last]),), consts, tuple(ops))


def run_pass(g: Graph, target: str = "host") -> Graph:
    out = flatten_pointwise(g, PassContext(None, parse_target(target), {}))
    verify_graph(out)
    return out


def _same_values(g: Graph, out: Graph) -> None:
    x = RNG.standard_normal(g.inputs[0].type.shape).astype(np.float32)
    name = g.outputs[0].name
    np.testing.assert_allclose(run_graph(out, {"x": x})[name], run_graph(g, {"x": x})[name],
                               rtol=1e-6, atol=1e-6)


def test_the_conv_and_its_epilogue_run_on_the_flat_row() -> None:
    g = pw_graph()
    out = run_pass(g)
    assert [op.kind for op in out.ops] == ["reshape", "conv", "relu", "mul", "reshape",
                                           "sigmoid"]
    assert out.ops[0].outputs[0].type.shape == (1, 8, 1, 125)
    assert out.ops[3].outputs[0].type.shape == (1, 6, 1, 125)
    assert out.ops[4].outputs[0].type.shape == (1, 6, 25, 5)
    _same_values(g, out)


def test_a_graph_output_stays_after_the_reshape() -> None:
    g = pw_graph(out_relu=False)
    out = run_pass(g)
    assert [op.kind for op in out.ops] == ["reshape", "conv", "relu", "reshape", "mul"]
    _same_values(g, out)


def test_an_operand_along_the_row_stays_after_the_reshape() -> None:
    g = pw_graph(tail=("relu", "mul_row"))
    out = run_pass(g)
    assert [op.kind for op in out.ops] == ["reshape", "conv", "relu", "reshape", "mul",
                                           "sigmoid"]
    _same_values(g, out)


@pytest.mark.parametrize("why, graph", [
    ("3x3", pw_graph(k=3, pad=1)),
    ("stride 2", pw_graph(stride=2)),
    ("padded", pw_graph(pad=1)),
    ("rows of 48 fill the copies already", pw_graph(h=4, w=48)),
    ("one row already", pw_graph(h=1, w=20)),
    ("the conv's output is the graph's", pw_graph(tail=(), out_relu=False)),
])
def test_left_alone(why: str, graph: Graph) -> None:
    assert run_pass(graph) is graph, why


def test_only_on_the_host() -> None:
    g = pw_graph()
    assert run_pass(g, "cortex-m7") is g
    assert "flatten-pointwise" in PIPELINES["host"]
    assert all("flatten-pointwise" not in p for k, p in PIPELINES.items() if k != "host")


def test_compiled_matches_onnxruntime(tmp_path: Path) -> None:
    import onnxruntime as ort

    import nnc

    wt = RNG.standard_normal((16, 8, 1, 1)).astype(np.float32)
    b = RNG.standard_normal(16).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y0"]),
             helper.make_node("Relu", ["y0"], ["y1"]),
             helper.make_node("MaxPool", ["y1"], ["y"], kernel_shape=[2, 2])]
    g = helper.make_graph(nodes, "pw", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, 7, 6])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    x = RNG.standard_normal((1, 8, 7, 6)).astype(np.float32)
    compiled = nnc.compile(model, target="host", output_dir=tmp_path / "a", bench=False)
    assert [layer["op"] for layer in compiled.info["layers"]] == ["conv+relu", "max_pool"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(compiled.run({"x": x})["y"], sess.run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)
