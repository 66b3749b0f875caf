"""sink-reshapes: which elementwise ops move before the reshape they read, the graph it makes
(same values in the graph interpreter), and a compiled residual block against onnxruntime."""

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
from nnc.passes.sink_reshapes import sink_reshapes

RNG = np.random.default_rng(0)
PLANE, FLAT = (1, 6, 4, 5), (1, 6, 1, 20)


def residual_graph(other: str = "s", source: str = "conv", shape: tuple[int, ...] = PLANE,
                   out_is_view: bool = False) -> Graph:
    """x [1, 8, 1, 20] -> `source` (a 1x1 conv into 6 channels; "input": none, x is
    [1, 6, 1, 20]) -> reshape to `shape` -> add(·, `other`) -> relu. `other`: "s" a second
    input of the reshaped shape, "c" a scalar constant, "row" a [5] constant (broadcast along
    the rows), "rs": relu(s)."""
    x = TensorType((1, 8 if source == "conv" else 6, 1, 20), "float32")
    consts = (Constant.of("w", RNG.standard_normal((6, 8, 1, 1)).astype(np.float32)),
              Constant.of("c", np.array([0.5], np.float32)),
              Constant.of("row", RNG.standard_normal(5).astype(np.float32)))
    inputs = [Value("x", x), Value("s", TensorType(shape, "float32"))]
    types = {v.name: v.type for v in inputs} | {c.name: c.value.type for c in consts}
    conv = Attrs.of(strides=(1, 1), pads=(0,) * 4, dilations=(1, 1), group=1,
                    kernel_shape=(1, 1))
    specs = [("reshape", ("y0" if source == "conv" else "x",), Attrs.of(shape=shape), "v"),
             ("add", ("v", other), Attrs(), "a"), ("relu", ("a",), Attrs(), "out")]
    if source == "conv":
        specs.insert(0, ("conv", ("x", "w"), conv, "y0"))
    if other == "rs":
        specs.insert(0, ("relu", ("s",), Attrs(), "rs"))
    ops = []
    for kind, ins, a, out in specs:
        t = get_op(kind).infer([types[n] for n in ins], a)[0]
        types[out] = t
        ops.append(Op(kind, ins, (Value(out, t),), a, name=out))
    outs = [Value("out", types["out"])] + ([Value("v", types["v"])] if out_is_view else [])
    return Graph("g", tuple(inputs), tuple(outs), consts, tuple(ops))


def run_pass(g: Graph, target: str = "host") -> Graph:
    out = sink_reshapes(g, PassContext(None, parse_target(target), {}))
    verify_graph(out)
    return out


def _same_values(g: Graph, out: Graph) -> None:
    feeds = {v.name: RNG.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs}
    want, got = run_graph(g, feeds), run_graph(out, feeds)
    for v in g.outputs:
        np.testing.assert_allclose(got[v.name], want[v.name], rtol=1e-6, atol=1e-6)


def test_the_add_and_relu_move_before_the_reshape() -> None:
    g = residual_graph()
    out = run_pass(g)
    assert [op.kind for op in out.ops] == ["conv", "reshape", "add", "relu", "reshape"]
    view, add, relu, back = out.ops[1:]
    assert view.inputs == ("s",) and view.outputs[0].type.shape == FLAT
    assert add.inputs == ("y0", view.outputs[0].name)
    assert relu.outputs[0].type.shape == FLAT
    assert back.outputs[0].name == "out" and back.outputs[0].type.shape == PLANE
    _same_values(g, out)


def test_a_scalar_operand_moves_as_it_is() -> None:
    g = residual_graph(other="c")
    out = run_pass(g)
    assert [op.kind for op in out.ops] == ["conv", "add", "relu", "reshape"]
    assert out.ops[1].inputs == ("y0", "c")
    _same_values(g, out)


@pytest.mark.parametrize("why, graph", [
    ("a [5] constant broadcasts along the plane's rows, not the flat row",
     residual_graph(other="row")),
    ("the add takes relu(s) as an epilogue where it is", residual_graph(other="rs")),
    ("the reshape's source is a graph input: nothing to fuse with", residual_graph(source="input")),
    ("the reshaped value is a graph output too", residual_graph(out_is_view=True)),
])
def test_left_alone(why: str, graph: Graph) -> None:
    assert run_pass(graph) is graph, why


def test_only_on_the_host() -> None:
    g = residual_graph()
    assert run_pass(g, "cortex-m7") is g
    assert PIPELINES["host"].index("sink-reshapes") == PIPELINES["host"].index(
        "flatten-pointwise") + 1
    assert all("sink-reshapes" not in p for k, p in PIPELINES.items() if k != "host")


def test_a_flattened_conv_takes_its_residual_add(tmp_path: Path) -> None:
    import onnxruntime as ort

    import nnc

    wt = RNG.standard_normal((8, 8, 1, 1)).astype(np.float32)
    b = RNG.standard_normal(8).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y0"]),
             helper.make_node("Add", ["y0", "x"], ["y1"]),
             helper.make_node("Relu", ["y1"], ["y2"]),
             helper.make_node("MaxPool", ["y2"], ["y"], kernel_shape=[2, 2])]
    g = helper.make_graph(nodes, "res", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, 7, 6])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    x = RNG.standard_normal((1, 8, 7, 6)).astype(np.float32)
    compiled = nnc.compile(model, target="host", output_dir=tmp_path / "a", bench=False)
    assert [layer["op"] for layer in compiled.info["layers"]] == ["conv+add+relu", "max_pool"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(compiled.run({"x": x})["y"], sess.run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)
