"""fold-constants: Before/After on small graphs, numerics checked with the graph interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.interp import run_graph
from nnc.ir.printer import print_graph
from nnc.ir.types import TensorType
from nnc.ir.verify import verify_graph
from nnc.passes.fold_constants import FoldConstantsOptions, fold_constants
from nnc.passes.manager import PassContext, PassManager

F4 = TensorType((4,), "float32")


def v(name: str, t: TensorType = F4) -> Value:
    return Value(name, t)


def c(name: str, data: list[float]) -> Constant:
    return Constant.of(name, np.array(data, np.float32))


def run(graph: Graph, **opts: int) -> Graph:
    out = fold_constants(graph, PassContext(FoldConstantsOptions(**opts)))
    verify_graph(out)
    return out


def folded_chain() -> Graph:
    # t = w + b; u = relu(t); y = x + u     (t and u are computable at compile time)
    return Graph(
        "g",
        inputs=(v("x"),),
        outputs=(v("y"),),
        constants=(c("w", [1, -2, 3, -4]), c("b", [0.5, 0.5, 0.5, 0.5])),
        ops=(
            Op("add", ("w", "b"), (v("t"),), name="add0"),
            Op("relu", ("t",), (v("u"),), name="relu0"),
            Op("add", ("x", "u"), (v("y"),), name="add1"),
        ),
    )


def test_folds_chain_and_drops_unused_constants() -> None:
    before = folded_chain()
    after = run(before)
    assert print_graph(after, elide_constants=True) == (
        "graph @g(%x: f32[4]) -> (%y: f32[4]) {\n"
        "  const %u: f32[4] = dense<...>\n"
        "  %y: f32[4] = add(%x, %u) loc(\"add1\")\n"
        "  return %y\n"
        "}\n"
    )
    np.testing.assert_array_equal(after.constant_map()["u"], [1.5, 0, 3.5, 0])
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(run_graph(after, {"x": x})["y"], run_graph(before, {"x": x})["y"])


def test_input_graph_is_not_mutated() -> None:
    before = folded_chain()
    text = print_graph(before)
    run(before)
    assert print_graph(before) == text


def test_op_with_runtime_input_stays() -> None:
    g = Graph("g", (v("x"),), (v("y"),), (c("w", [1, 2, 3, 4]),),
              (Op("add", ("x", "w"), (v("y"),)),))
    after = run(g)
    assert after.ops == g.ops and [k.name for k in after.constants] == ["w"]


def test_op_computing_a_graph_output_stays() -> None:
    g = Graph("g", (), (v("y"),), (c("w", [1, 2, 3, 4]),), (Op("relu", ("w",), (v("y"),)),))
    after = run(g)
    assert [op.kind for op in after.ops] == ["relu"]


def test_size_limit_keeps_big_results() -> None:
    g = folded_chain()
    assert [op.name for op in run(g, max_elements=3).ops] == ["add0", "relu0", "add1"]
    assert [op.name for op in run(g, max_elements=4).ops] == ["add1"]


def test_keeps_declared_type_and_casts_result() -> None:
    i8 = TensorType((4,), "int8")
    g = Graph(
        "g", (v("x"),), (v("y"),), (Constant.of("q", np.array([1, -2, 3, -4], np.int8)),),
        (Op("cast", ("q",), (v("f"),), Attrs.of(to="float32")), Op("add", ("x", "f"), (v("y"),))),
    )
    assert g.constants[0].value.type == i8
    after = run(g)
    f = after.constant_map()["f"]
    assert f.dtype == np.float32 and not f.flags.writeable
    np.testing.assert_array_equal(f, [1, -2, 3, -4])


def test_absent_optional_input_does_not_block_folding() -> None:
    g = Graph(
        "g", (v("x"),), (v("y"),), (c("w", [-1, 2, -3, 4]),),
        (Op("clip", ("w", "", ""), (v("k"),)), Op("add", ("x", "k"), (v("y"),))),
    )
    after = run(g)
    assert [op.kind for op in after.ops] == ["add"]
    np.testing.assert_array_equal(after.constant_map()["k"], [-1, 2, -3, 4])


def test_failing_reference_names_the_op() -> None:
    g = Graph(
        "g", (v("x"),), (v("y"),), (c("w", [1, 2, 3, 4]),),
        (Op("reshape", ("w",), (v("r"),), Attrs.of(shape=(5,)), name="bad"),
         Op("add", ("x", "r"), (v("y"),))),
    )
    with pytest.raises(Exception, match="reshape 'bad'"):
        fold_constants(g, PassContext())


def test_runs_from_pipeline_text() -> None:
    pm = PassManager("fold-constants{max_elements=4}")
    assert pm.pipeline_text() == "fold-constants{max_elements=4}"
    after = pm.run(folded_chain())
    assert [op.name for op in after.ops] == ["add1"]
