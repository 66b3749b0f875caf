"""eliminate-dead-code: Before/After on small graphs."""

from __future__ import annotations

import numpy as np

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.interp import run_graph
from nnc.ir.printer import print_graph
from nnc.ir.types import TensorType
from nnc.ir.verify import verify_graph
from nnc.passes.eliminate_dead_code import eliminate_dead_code
from nnc.passes.manager import PassContext

F4 = TensorType((4,), "float32")


def v(name: str) -> Value:
    return Value(name, F4)


def c(name: str) -> Constant:
    return Constant.of(name, np.arange(4, dtype=np.float32))


def run(graph: Graph) -> Graph:
    out = eliminate_dead_code(graph, PassContext())
    verify_graph(out)
    return out


def test_drops_dead_ops_and_their_constants() -> None:
    before = Graph(
        "g",
        inputs=(v("x"), v("unused")),
        outputs=(v("y"),),
        constants=(c("w"), c("dead_w")),
        ops=(
            Op("add", ("x", "dead_w"), (v("d0"),), name="dead0"),
            Op("add", ("x", "w"), (v("t"),), name="live0"),
            Op("relu", ("d0",), (v("d1"),), name="dead1"),
            Op("relu", ("t",), (v("y"),), name="live1"),
        ),
    )
    after = run(before)
    assert print_graph(after, elide_constants=True) == (
        "graph @g(%x: f32[4], %unused: f32[4]) -> (%y: f32[4]) {\n"
        "  const %w: f32[4] = dense<...>\n"
        "  %t: f32[4] = add(%x, %w) loc(\"live0\")\n"
        "  %y: f32[4] = relu(%t) loc(\"live1\")\n"
        "  return %y\n"
        "}\n"
    )
    x = np.linspace(-2, 2, 4).astype(np.float32)
    feeds = {"x": x, "unused": x}
    np.testing.assert_array_equal(run_graph(after, feeds)["y"], run_graph(before, feeds)["y"])


def test_keeps_multi_output_op_if_one_output_is_used() -> None:
    f2 = TensorType((2,), "float32")
    g = Graph(
        "g", (v("x"),), (Value("hi", f2),), (),
        (Op("split", ("x",), (Value("lo", f2), Value("hi", f2)), Attrs.of(axis=0, splits=(2, 2))),),
    )
    assert run(g) is g


def test_constant_graph_output_is_kept() -> None:
    g = Graph("g", (v("x"),), (v("w"), v("y")), (c("w"),), (Op("relu", ("x",), (v("y"),)),))
    assert run(g) is g


def test_cleans_fused_bodies() -> None:
    body = Graph(
        "f", (v("x"),), (v("y"),), (),
        (Op("relu", ("x",), (v("dead"),)), Op("neg", ("x",), (v("y"),))),
    )
    g = Graph("g", (v("x"),), (v("y"),), (),
              (Op("fused", ("x",), (v("y"),), Attrs.of(ops="relu+neg"), "f", body),))
    after = run(g)
    inner = after.ops[0].body
    assert inner is not None and [op.kind for op in inner.ops] == ["neg"]
    assert g.ops[0].body is body and len(body.ops) == 2  # the input is untouched
