"""eliminate-dead-code: drop ops and constants that no graph output depends on.

Liveness runs backwards from the graph outputs: an op is live when one of its outputs is used by a
live op or is a graph output. Graph inputs always stay (they are the model's interface). Fused ops'
bodies are cleaned the same way (their inputs stay, they bind by position).
"""

from __future__ import annotations

from nnc.ir.graph import Graph, Op
from nnc.passes.manager import PassContext, register_pass


def _live_ops(graph: Graph) -> tuple[tuple[Op, ...], set[str]]:
    """The live ops in their original order, and every value name they or the outputs use."""
    needed = set(graph.output_names())
    live: list[Op] = []
    for op in reversed(graph.ops):
        if any(v.name in needed for v in op.outputs):
            live.append(op)
            needed.update(name for name in op.inputs if name)
    return tuple(reversed(live)), needed


def _clean_body(op: Op) -> Op:
    if op.body is None:
        return op
    body = eliminate_dead_code_graph(op.body)
    return op if body is op.body else op.with_(body=body)


def eliminate_dead_code_graph(graph: Graph) -> Graph:
    ops, needed = _live_ops(graph)
    ops = tuple(_clean_body(op) for op in ops)
    constants = tuple(c for c in graph.constants if c.name in needed)
    if len(ops) == len(graph.ops) and len(constants) == len(graph.constants) and all(
        a is b for a, b in zip(ops, graph.ops, strict=True)
    ):
        return graph
    return graph.replace(ops=ops, constants=constants)


@register_pass("eliminate-dead-code")
def eliminate_dead_code(graph: Graph, ctx: PassContext) -> Graph:
    """Drop ops and constants that no graph output depends on."""
    return eliminate_dead_code_graph(graph)
