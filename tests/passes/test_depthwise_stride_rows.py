"""depthwise-stride-rows: which depthwise convs run on stride-1 rows, the graph it makes (same
values in the graph interpreter), and the compiled host model: bit-identical with and without
the pass, and equal to onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.backends.target import parse_target
from nnc.compiler.pipeline import PIPELINES
from nnc.ir.graph import Graph
from nnc.ir.interp import run_graph
from nnc.ir.verify import verify_graph
from nnc.passes.depthwise_stride_rows import depthwise_stride_rows
from nnc.passes.manager import PassContext
from tests.passes.test_pad_depthwise_rows import dw_graph

RNG = np.random.default_rng(0)


def run_pass(g: Graph, target: str = "host") -> Graph:
    out = depthwise_stride_rows(g, PassContext(None, parse_target(target), {}))
    verify_graph(out)
    return out


@pytest.mark.parametrize("w", [56, 57])
def test_stride_one_rows_then_a_step_two_slice(w: int) -> None:
    g = dw_graph(h=24, w=w, stride=2, tail=("relu", "mul_c", "add_x")[:2])
    out = run_pass(g)
    assert [op.kind for op in out.ops] == ["conv", "relu", "mul", "slice"]
    conv, _, mul, sl = out.ops
    assert conv.attr("strides") == (2, 1) and conv.attr("pads") == (1, 1, 1, 1)
    assert mul.outputs[0].type.shape == (1, 8, 12, w)  # the stride-1 row: w + 2 - 3 + 1
    assert sl.attr("steps") == (1, 1, 1, 2) and sl.outputs[0] == g.outputs[0]
    x = RNG.standard_normal((1, 8, 24, w)).astype(np.float32)
    name = g.outputs[0].name
    np.testing.assert_array_equal(run_graph(out, {"x": x})[name], run_graph(g, {"x": x})[name])


@pytest.mark.parametrize("why, graph", [
    ("stride 1", dw_graph()),
    ("3-wide strided rows", dw_graph(h=6, w=6, stride=2)),
    ("a left pad on 28-wide rows (shufflenet: slower)", dw_graph(h=28, w=28, stride=2)),
])
def test_left_alone(why: str, graph: Graph) -> None:
    assert run_pass(graph) is graph, why


def test_only_on_the_host() -> None:
    g = dw_graph(h=24, w=56, stride=2)
    assert run_pass(g) is not g
    assert run_pass(g, "cortex-m7") is g
    assert "depthwise-stride-rows" in PIPELINES["host"]
    assert all("depthwise-stride-rows" not in p for k, p in PIPELINES.items() if k != "host")


@pytest.mark.parametrize("pads, w", [([0, 0, 1, 1], 24), ([1, 1, 1, 1], 56)])
def test_compiled_bits_equal_without_the_pass_and_match_onnxruntime(pads, w: int,
                                                                     tmp_path: Path) -> None:
    import onnxruntime as ort

    import nnc

    c, h = 16, 24
    wt = RNG.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(c).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y0"], pads=pads, strides=[2, 2],
                              group=c),
             helper.make_node("Relu", ["y0"], ["y"])]
    g = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, c, h, w])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    x = RNG.standard_normal((1, c, h, w)).astype(np.float32)
    rows = nnc.compile(model, target="host", output_dir=tmp_path / "a", bench=False)
    assert [layer["op"] for layer in rows.info["layers"]] == ["conv+relu", "slice"]
    plain = nnc.compile(model, target="host", output_dir=tmp_path / "b", bench=False,
                        pipeline=",".join(p for p in PIPELINES["host"]
                                          if p != "depthwise-stride-rows"))
    assert [layer["op"] for layer in plain.info["layers"]] == ["conv+relu"]
    got = rows.run({"x": x})["y"]
    np.testing.assert_array_equal(got, plain.run({"x": x})["y"])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)
