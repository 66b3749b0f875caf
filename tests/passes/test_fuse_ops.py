"""fuse-ops: Before/After on small graphs, numerics checked with the graph interpreter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.interp import run_graph
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.ops import get_op
from nnc.ir.printer import print_graph
from nnc.ir.types import TensorType
from nnc.ir.verify import verify_graph
from nnc.passes.fuse_ops import fuse_ops
from nnc.passes.manager import PassContext, PassManager

Spec = tuple[str, Sequence[str], dict[str, Any], str]  # kind, inputs, attrs, output name


def build(inputs: dict[str, tuple[int, ...]], consts: dict[str, np.ndarray],
          ops: Sequence[Spec], outputs: Sequence[str]) -> Graph:
    """A float32 graph; op output types come from the type rules."""
    types = {n: TensorType(s, "float32") for n, s in inputs.items()}
    constants = tuple(Constant.of(n, a.astype(np.float32)) for n, a in consts.items())
    types.update({c.name: c.value.type for c in constants})
    built = []
    for kind, ins, attrs, out in ops:
        t = get_op(kind).infer([types[n] if n else None for n in ins], Attrs.of(attrs))[0]
        types[out] = t
        built.append(Op(kind, tuple(ins), (Value(out, t),), Attrs.of(attrs), name=f"{out}_op"))
    return Graph("g", tuple(Value(n, types[n]) for n in inputs), tuple(
        Value(n, types[n]) for n in outputs), constants, tuple(built))


def run(graph: Graph) -> Graph:
    out = fuse_ops(graph, PassContext())
    verify_graph(out)
    return out


def same_numerics(before: Graph, after: Graph, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    feeds = {v.name: rng.standard_normal(v.type.shape).astype(np.float32) for v in before.inputs}
    want, got = run_graph(before, feeds), run_graph(after, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)


CONV = {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1), "group": 1}


def conv_graph(extra: Sequence[Spec] = (), outputs: Sequence[str] = ("y",)) -> Graph:
    rng = np.random.default_rng(1)
    return build(
        {"x": (1, 2, 4, 4)},
        {"w": rng.standard_normal((3, 2, 3, 3)), "b": rng.standard_normal(3),
         "s": rng.standard_normal((3, 1, 1))},
        [("conv", ("x", "w", "b"), CONV, "c"), ("add", ("c", "s"), {}, "a"),
         ("relu", ("a",), {}, "y"), *extra],
        outputs,
    )


def test_conv_add_relu_become_one_fused_op() -> None:
    before = conv_graph()
    after = run(before)
    assert print_graph(after, elide_constants=True) == (
        "graph @g(%x: f32[1,2,4,4]) -> (%y: f32[1,3,4,4]) {\n"
        "  const %w: f32[3,2,3,3] = dense<...>\n"
        "  const %b: f32[3] = dense<...>\n"
        "  const %s: f32[3,1,1] = dense<...>\n"
        "  %y: f32[1,3,4,4] = fused(%x, %w, %b, %s) {ops = \"conv+add+relu\"} loc(\"c_op\")\n"
        "    graph @c_op(%x: f32[1,2,4,4], %w: f32[3,2,3,3], %b: f32[3], %s: f32[3,1,1])"
        " -> (%y: f32[1,3,4,4]) {\n"
        "      %c: f32[1,3,4,4] = conv(%x, %w, %b) {dilations = [1, 1], group = 1, "
        "pads = [1, 1, 1, 1], strides = [1, 1]} loc(\"c_op\")\n"
        "      %a: f32[1,3,4,4] = add(%c, %s) loc(\"a_op\")\n"
        "      %y: f32[1,3,4,4] = relu(%a) loc(\"y_op\")\n"
        "      return %y\n"
        "    }\n"
        "  return %y\n"
        "}\n"
    )
    same_numerics(before, after)


def test_value_with_two_consumers_ends_the_chain() -> None:
    # a feeds relu and the extra sigmoid: conv+add fuse, relu and sigmoid stay alone
    before = conv_graph([("sigmoid", ("a",), {}, "z")], outputs=("y", "z"))
    after = run(before)
    assert [(op.kind, op.attr("ops")) for op in after.ops] == [
        ("fused", "conv+add"), ("relu", None), ("sigmoid", None)]
    same_numerics(before, after)


def test_graph_output_ends_the_chain() -> None:
    before = conv_graph(outputs=("a", "y"))
    after = run(before)
    assert [(op.kind, op.attr("ops")) for op in after.ops] == [("fused", "conv+add"),
                                                              ("relu", None)]
    same_numerics(before, after)


def test_elementwise_chain_fuses_with_first_op_as_anchor() -> None:
    before = build({"x": (2, 3), "y": (2, 3)}, {"k": np.full((3,), 2.0)},
                   [("add", ("x", "y"), {}, "s"), ("mul", ("k", "s"), {}, "m"),
                    ("sigmoid", ("m",), {}, "o")], ["o"])
    after = run(before)
    (op,) = after.ops
    assert op.attr("ops") == "add+mul+sigmoid" and op.inputs == ("x", "y", "k")
    assert op.body is not None and [v.name for v in op.body.inputs] == ["x", "y", "k"]
    same_numerics(before, after)


def test_single_op_stays_plain() -> None:
    before = build({"x": (2, 3)}, {}, [("relu", ("x",), {}, "y")], ["y"])
    assert run(before) is before


def test_broadcast_that_grows_the_shape_is_not_fused() -> None:
    before = build({"x": (1, 3), "y": (2, 3)}, {},
                   [("relu", ("x",), {}, "r"), ("add", ("r", "y"), {}, "o")], ["o"])
    assert run(before) is before


def test_chain_value_used_twice_by_one_op_is_not_fused() -> None:
    before = build({"x": (2, 3)}, {},
                   [("relu", ("x",), {}, "r"), ("mul", ("r", "r"), {}, "o")], ["o"])
    assert run(before) is before


def test_alias_op_is_no_anchor() -> None:
    before = build({"x": (2, 3)}, {},
                   [("reshape", ("x",), {"shape": (3, 2)}, "r"), ("relu", ("r",), {}, "a"),
                    ("neg", ("a",), {}, "o")], ["o"])
    after = run(before)
    assert [(op.kind, op.attr("ops")) for op in after.ops] == [("reshape", None),
                                                              ("fused", "relu+neg")]
    same_numerics(before, after)


def test_fused_op_goes_where_the_chain_ends() -> None:
    # the add's second input is computed after the conv: the fused op must come after it
    before = build(
        {"x": (1, 2, 4, 4), "z": (1, 3, 4, 4)}, {"w": np.ones((3, 2, 3, 3))},
        [("conv", ("x", "w", ""), CONV, "c"), ("exp", ("z",), {}, "e"),
         ("add", ("c", "e"), {}, "o")], ["o"])
    after = run(before)
    assert [op.kind for op in after.ops] == ["exp", "fused"]
    assert after.ops[1].inputs == ("x", "w", "e")
    same_numerics(before, after)


def test_fusing_twice_changes_nothing() -> None:
    once = run(conv_graph())
    assert run(once) is once


def test_fused_graph_lowers_to_one_kernel_with_same_numerics() -> None:
    before = conv_graph()
    module = PassManager("fuse-ops,lower-to-loops,default-schedule,schedule,plan-memory").run(
        before)
    assert [k.op_kind for k in module.kernels] == ["conv+add+relu"]
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 4)).astype(np.float32)
    got = run_loop_module(module, {module.inputs[0]: x})[module.outputs[0]]
    np.testing.assert_allclose(got, run_graph(before, {"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_a_long_chain_is_cut_into_kernels_of_at_most_max_chain_ops() -> None:
    from nnc.passes.fuse_ops import MAX_CHAIN

    n = 2 * MAX_CHAIN + 5
    specs: list[Spec] = [("relu", ["x" if i == 0 else f"t{i - 1}"], {}, f"t{i}") for i in range(n)]
    g = build({"x": (1, 8)}, {}, specs, [f"t{n - 1}"])
    out = run(g)
    sizes = [len(op.body.ops) if op.body is not None else 1 for op in out.ops]
    assert sum(sizes) == n and max(sizes) == MAX_CHAIN and len(out.ops) == 3
    x = {"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)}
    np.testing.assert_array_equal(run_graph(out, x)[f"t{n - 1}"], run_graph(g, x)[f"t{n - 1}"])
