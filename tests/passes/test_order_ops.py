"""order-ops: a branchy graph gets a cheaper order, optimal orders stay, exact vs brute force."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.interp import run_graph
from nnc.ir.ops import get_op
from nnc.ir.types import TensorType
from nnc.ir.verify import verify_graph
from nnc.passes.manager import PassContext, PassManager
from nnc.passes.order_ops import OrderOpsOptions, order_ops

Spec = tuple[str, Sequence[str], dict[str, Any], str]  # kind, inputs, attrs, output name


def build(inputs: dict[str, tuple[int, ...]], consts: dict[str, np.ndarray],
          ops: Sequence[Spec], outputs: Sequence[str]) -> Graph:
    """A float32 graph; op output types come from the type rules."""
    types = {n: TensorType(s, "float32") for n, s in inputs.items()}
    constants = tuple(Constant.of(n, a.astype(np.float32)) for n, a in consts.items())
    types.update({c.name: c.value.type for c in constants})
    built = []
    for kind, ins, attrs, out in ops:
        t = get_op(kind).infer([types[n] for n in ins], Attrs.of(attrs))[0]
        types[out] = t
        built.append(Op(kind, tuple(ins), (Value(out, t),), Attrs.of(attrs), name=out))
    return Graph("g", tuple(Value(n, types[n]) for n in inputs), tuple(
        Value(n, types[n]) for n in outputs), constants, tuple(built))


def run(graph: Graph, **opts: int) -> tuple[Graph, dict]:
    ctx = PassContext(OrderOpsOptions(**opts))
    out = order_ops(graph, ctx)
    verify_graph(out)
    return out, ctx.facts["order_ops"]


def peak(graph: Graph) -> int:
    """Most intermediate bytes live while one op runs, simulated independently of the pass."""
    outputs = set(graph.output_names())
    last_use = {name: i for i, op in enumerate(graph.ops) for name in op.inputs}
    size = {v.name: 4 * int(np.prod(v.type.shape)) for op in graph.ops for v in op.outputs
            if v.name not in outputs}
    live: dict[str, int] = {}
    top = 0
    for i, op in enumerate(graph.ops):
        live.update({v.name: size[v.name] for v in op.outputs if v.name in size})
        top = max(top, sum(live.values()))
        live = {n: s for n, s in live.items() if last_use.get(n, -1) > i}
    return top


def branchy() -> Graph:
    """Two branches that each blow x up to 1024 floats and shrink it back, emitted breadth
    first: the naive order holds both big tensors at once."""
    rng = np.random.default_rng(0)
    consts = {"wa": rng.standard_normal((16, 1024)), "wb": rng.standard_normal((16, 1024)),
              "va": rng.standard_normal((1024, 4)), "vb": rng.standard_normal((1024, 4)),
              "wo": rng.standard_normal((4, 2))}
    return build({"x": (1, 16)}, consts, [
        ("matmul", ("x", "wa"), {}, "big_a"), ("matmul", ("x", "wb"), {}, "big_b"),
        ("matmul", ("big_a", "va"), {}, "small_a"), ("matmul", ("big_b", "vb"), {}, "small_b"),
        ("add", ("small_a", "small_b"), {}, "s"), ("matmul", ("s", "wo"), {}, "y"),
    ], ["y"])


def names(graph: Graph) -> list[str]:
    return [op.name for op in graph.ops]


def test_branchy_graph_gets_the_lower_peak_order() -> None:
    before = branchy()
    after, facts = run(before)
    assert names(after) == ["big_a", "small_a", "big_b", "small_b", "s", "y"]
    assert peak(before) == facts["peak_before"] == 2 * 4096 + 16
    assert peak(after) == facts["peak_after"] == 4096 + 2 * 16
    assert facts["segments_reordered"] == 1
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)}
    np.testing.assert_array_equal(run_graph(after, feeds)["y"], run_graph(before, feeds)["y"])


def test_greedy_fallback_finds_it_too() -> None:
    after, facts = run(branchy(), max_states=1)
    assert names(after) == ["big_a", "small_a", "big_b", "small_b", "s", "y"]
    assert facts["peak_after"] == 4096 + 2 * 16


def test_optimal_order_and_chains_are_kept_as_is() -> None:
    depth_first = branchy().replace(ops=tuple(branchy().ops[i] for i in (0, 2, 1, 3, 4, 5)))
    after, facts = run(depth_first)
    assert after is depth_first and facts["segments_reordered"] == 0
    chain = build({"x": (1, 4)}, {"w": np.ones((4, 4))},
                  [("matmul", ("x", "w"), {}, "a"), ("relu", ("a",), {}, "b"),
                   ("matmul", ("b", "w"), {}, "y")], ["y"])
    assert run(chain)[0] is chain


def test_alias_shares_its_input_bytes() -> None:
    # the reshape of big_a keeps big_a alive until small_a, at no extra cost
    g = branchy()
    ops = list(g.ops)
    t = TensorType((1, 32, 32), "float32")
    ops.insert(1, Op("reshape", ("big_a",), (Value("view_a", t),),
                     Attrs.of(shape=(1, 32, 32)), name="view_a"))
    ops.insert(2, Op("reshape", ("view_a",), (Value("flat_a", TensorType((1, 1024), "float32")),),
                     Attrs.of(shape=(1, 1024)), name="flat_a"))
    ops[4] = ops[4].with_(inputs=("flat_a", "va"))  # small_a reads the view
    g = g.replace(ops=tuple(ops))
    verify_graph(g)
    after, facts = run(g)
    assert facts["peak_before"] == 2 * 4096 + 16 and facts["peak_after"] == 4096 + 2 * 16
    assert names(after)[:4] == ["big_a", "view_a", "flat_a", "small_a"]


def random_graph(seed: int) -> Graph:
    """A random DAG of matmuls (resize a value) and concats (join two) on (1, width) values."""
    rng = np.random.default_rng(seed)
    widths = {"x": 4}
    consts: dict[str, np.ndarray] = {}
    spec: list[Spec] = []
    for i in range(int(rng.integers(4, 8))):
        srcs = list(widths)
        if len(srcs) > 1 and rng.random() < 0.35:
            a, b = rng.choice(srcs, size=2, replace=False)
            spec.append(("concat", (str(a), str(b)), {"axis": 1}, f"v{i}"))
            widths[f"v{i}"] = widths[str(a)] + widths[str(b)]
        else:
            src = str(rng.choice(srcs))
            m = int(rng.choice([1, 2, 8, 32, 64]))
            consts[f"w{i}"] = np.ones((widths[src], m))
            spec.append(("matmul", (src, f"w{i}"), {}, f"v{i}"))
            widths[f"v{i}"] = m
    used = {n for _, ins, _, _ in spec for n in ins}
    outputs = [out for _, _, _, out in spec if out not in used]
    return build({"x": (1, 4)}, consts, spec, outputs)


def topological_orders(graph: Graph) -> list[tuple[int, ...]]:
    producer = {v.name: i for i, op in enumerate(graph.ops) for v in op.outputs}
    deps = [{producer[n] for n in op.inputs if n in producer} for op in graph.ops]
    return [p for p in itertools.permutations(range(len(graph.ops)))
            if all(deps[i] <= set(p[:k]) for k, i in enumerate(p))]


@pytest.mark.parametrize("seed", range(30))
def test_exact_search_matches_brute_force(seed: int) -> None:
    g = random_graph(seed)
    best = min(peak(g.replace(ops=tuple(g.ops[i] for i in order)))
               for order in topological_orders(g))
    after, facts = run(g)
    assert peak(after) == facts["peak_after"] == best
    assert facts["peak_before"] == peak(g) >= best
    greedy, gfacts = run(g, max_states=1)
    assert gfacts["peak_after"] == peak(greedy) >= best
    assert gfacts["peak_after"] <= peak(g)


def test_cortex_m_pipeline_orders_after_fusion() -> None:
    from nnc.compiler.pipeline import PIPELINES

    cm = PIPELINES["cortex-m"]
    assert cm.index("fuse-ops") < cm.index("order-ops") < cm.index("lower-to-loops")
    upto = ",".join(p for p in cm if p != "check-fit")
    host = ",".join(PIPELINES["host"])
    pm, pm_host = PassManager(upto), PassManager(host)
    pm.run(branchy())
    pm_host.run(branchy())
    # after fusion the add is small_b's epilogue; the order still saves one big tensor
    assert pm.facts["memory"]["floor_bytes"] < pm_host.facts["memory"]["floor_bytes"]
    assert pm.facts["memory"]["arena_bytes"] == 4096 + 16
