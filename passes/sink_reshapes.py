"""sink-reshapes: an elementwise op after a reshape runs before it, on the reshape's source.

A reshape is an alias (no copy), and an elementwise op computes each element on its own, so
`e(reshape(x), r)` equals `reshape(e(x, reshape⁻¹(r)))` when every other operand `r` has the
reshaped shape (it is viewed back to `x`'s shape, another alias) or one element. Moved before
the reshape, the op follows `x`'s producer directly and `fuse-ops` can make it that op's
epilogue. `flatten-pointwise` leaves a residual add of a 1x1 conv after the reshape back to the
plane (its operand is no constant), so the add ran as a kernel of its own:

    %yf = conv(%xf, %w, %b); %y = reshape(%yf) {shape=[1, 136, 28, 28]}
    %a = add(%y, %s); %r = relu(%a)                              (%s: 1x136x28x28)
    →  %sf = reshape(%s) {shape=[1, 136, 1, 784]}
       %yf = conv(%xf, %w, %b); %af = add(%yf, %sf); %rf = relu(%af)
       %r = reshape(%rf) {shape=[1, 136, 28, 28]}

Only where `x` is the sole-use output of a non-alias op (so the move lets a fusion happen), no
operand of the op is one already, and the reshape's output has no other use and is no graph
output. Repeated until nothing moves, so a
chain of elementwise ops sinks as a whole. Host only (after `flatten-pointwise`).
"""

from __future__ import annotations

import math

from nnc.ir.graph import Attrs, Graph, Op, Value, fresh_name
from nnc.ir.ops import get_op
from nnc.ir.types import TensorType
from nnc.passes.manager import PassContext, register_pass


def _elementwise(op: Op) -> bool:
    if op.body is not None or len(op.outputs) != 1:
        return False
    try:
        d = get_op(op.kind)
    except KeyError:
        return False
    return d.scalar is not None and d.fusable and not d.alias


def _fusable_source(name: str, producers: dict[str, Op], users: dict[str, list[Op]],
                    outputs: set[str]) -> bool:
    """Whether `name` is the sole-use, non-output result of a non-alias op."""
    op = producers.get(name)
    if op is None or len(op.outputs) != 1 or name in outputs or len(users.get(name, [])) != 1:
        return False
    if op.body is not None:
        return True  # a fused op (not yet, in the host pipeline) is no alias
    try:
        return not get_op(op.kind).alias
    except KeyError:
        return False


def _sink_one(graph: Graph) -> Graph | None:
    """The graph with one elementwise op moved before the reshape it reads, or None."""
    producers, users = graph.producers(), graph.consumers()
    types, outputs = graph.value_types(), set(graph.output_names())
    for e in graph.ops:
        if not _elementwise(e):
            continue
        out = e.outputs[0].type
        if any(_fusable_source(n, producers, users, outputs) for n in e.inputs if n):
            continue  # fusable where it is already (and a move would go back and forth)
        for i, v in enumerate(e.inputs):
            r = producers.get(v)
            if r is None or r.kind != "reshape" or r.body is not None or v in outputs \
                    or len(users.get(v, [])) != 1 or e.inputs.count(v) != 1:
                continue
            x = r.inputs[0]
            if types[v].shape != out.shape \
                    or not _fusable_source(x, producers, users, outputs):
                continue
            others = [n for j, n in enumerate(e.inputs) if j != i and n]
            x_rank = len(types[x].shape)
            if not all(types[n].shape == out.shape
                       or (math.prod(types[n].shape) == 1 and len(types[n].shape) <= x_rank)
                       for n in others):
                continue
            return _moved(graph, e, r, i, types)
    return None


def _moved(graph: Graph, e: Op, r: Op, i: int, types: dict[str, TensorType]) -> Graph:
    used = set(types)
    x_shape = types[r.inputs[0]].shape
    out = e.outputs[0]
    new_ops: list[Op] = []
    inputs: list[str] = []
    for j, n in enumerate(e.inputs):
        if j == i:
            inputs.append(r.inputs[0])
        elif n and types[n].shape == out.type.shape and math.prod(out.type.shape) != 1:
            view = fresh_name(f"{n}_view", used)
            new_ops.append(Op("reshape", (n,), (Value(view, TensorType(x_shape, types[n].dtype)),),
                              Attrs.of(shape=x_shape), name=f"{e.name}_view" if e.name else ""))
            inputs.append(view)
        else:
            inputs.append(n)
    moved = fresh_name(f"{out.name}_src", used)
    new_ops.append(e.with_(inputs=tuple(inputs),
                           outputs=(Value(moved, TensorType(x_shape, out.type.dtype)),)))
    new_ops.append(r.with_(inputs=(moved,), outputs=(out,)))
    ops: list[Op] = []
    for op in graph.ops:
        if op is r:
            continue  # its only user was `e`
        ops.extend(new_ops if op is e else [op])
    return graph.replace(ops=tuple(ops))


@register_pass("sink-reshapes")
def sink_reshapes(graph: Graph, ctx: PassContext) -> Graph:
    """Move elementwise ops before the reshapes they read (see the module docstring)."""
    if getattr(ctx.target, "kind", "host") != "host":
        return graph
    while (moved := _sink_one(graph)) is not None:
        graph = moved
    return graph
