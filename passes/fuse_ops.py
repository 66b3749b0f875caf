"""fuse-ops: group an anchor op with the chain of elementwise ops that follows it into one op.

    %c = conv(%x, %w, %b); %a = add(%c, %s); %y = relu(%a)
    →  %y = fused{ops="conv+add+relu"}(%x, %w, %b, %s) { the three ops }

The fused op's body is a graph whose inputs are the external values in first-use order (same
names), so lowering emits one loop nest: the anchor's compute with the chain applied as an epilogue
through `ComputeContext.store`, and no buffer for the intermediates.

Rules: the anchor is any non-alias op with one output; each epilogue op is elementwise (`scalar`
and `fusable`), uses the chain value exactly once, has one output of the anchor's output shape and
other inputs that broadcast into it; the chain value has one consumer and is not a graph output.
Chains of one op stay plain ops; a chain stops at `MAX_CHAIN` ops (the next op anchors a new one),
so a kernel's expression stays shallow for the recursive expression walkers and C compilers'
nesting limits (clang's bracket depth is 256). The fused op sits where the chain's last op was,
which keeps the graph topologically ordered (every input of the chain is defined before its
last op).
"""

from __future__ import annotations

import numpy as np

from nnc.ir.graph import Attrs, Graph, Op, Value
from nnc.ir.ops import OpDef, get_op
from nnc.ir.types import TensorType
from nnc.passes.manager import PassContext, register_pass

MAX_CHAIN = 32


def _opdef(op: Op) -> OpDef | None:
    if op.body is not None:
        return None  # already fused
    try:
        return get_op(op.kind)
    except KeyError:
        return None


def _is_anchor(op: Op) -> bool:
    d = _opdef(op)
    return d is not None and not d.alias and len(op.outputs) == 1


def _broadcasts_into(shape: tuple[int, ...], out: tuple[int, ...]) -> bool:
    try:
        return tuple(np.broadcast_shapes(shape, out)) == out
    except ValueError:
        return False


def _epilogue_of(
    chain_value: str,
    out_shape: tuple[int, ...],
    users: dict[str, list[Op]],
    outputs: set[str],
    types: dict[str, TensorType],
) -> Op | None:
    """The op that extends the chain ending in `chain_value`, or None."""
    if chain_value in outputs:
        return None
    consumers = users.get(chain_value, [])
    if len(consumers) != 1:
        return None
    op = consumers[0]
    d = _opdef(op)
    if d is None or d.scalar is None or not d.fusable or d.alias or len(op.outputs) != 1:
        return None
    if op.inputs.count(chain_value) != 1 or op.outputs[0].type.shape != out_shape:
        return None
    others = [n for n in op.inputs if n and n != chain_value]
    if not all(_broadcasts_into(types[n].shape, out_shape) for n in others):
        return None
    return op


def _fused_op(chain: list[Op], types: dict[str, TensorType]) -> Op:
    anchor, last = chain[0], chain[-1]
    internal = {v.name for op in chain[:-1] for v in op.outputs}
    externals: list[str] = []
    for op in chain:
        for name in op.inputs:
            if name and name not in internal and name not in externals:
                externals.append(name)
    name = anchor.name or anchor.outputs[0].name
    out: Value = last.outputs[0]
    body = Graph(
        name=name,
        inputs=tuple(Value(n, types[n]) for n in externals),
        outputs=(out,),
        constants=(),
        ops=tuple(chain),
    )
    kinds = "+".join(op.kind for op in chain)
    return Op("fused", tuple(externals), (out,), Attrs.of(ops=kinds), name=name, body=body)


def fuse_graph(graph: Graph) -> Graph:
    users = graph.consumers()
    types = graph.value_types()
    outputs = set(graph.output_names())
    chain_of: dict[int, list[Op]] = {}  # id(last op of a chain) -> the chain
    taken: set[int] = set()
    for op in graph.ops:
        if id(op) in taken or not _is_anchor(op):
            continue
        chain = [op]
        shape = op.outputs[0].type.shape
        while len(chain) < MAX_CHAIN and (
                nxt := _epilogue_of(chain[-1].outputs[0].name, shape, users, outputs, types)):
            if id(nxt) in taken:
                break
            chain.append(nxt)
        if len(chain) > 1:
            taken.update(id(o) for o in chain)
            chain_of[id(chain[-1])] = chain
    if not chain_of:
        return graph
    ops: list[Op] = []
    for op in graph.ops:
        if id(op) in chain_of:
            ops.append(_fused_op(chain_of[id(op)], types))
        elif id(op) not in taken:
            ops.append(op)
    return graph.replace(ops=tuple(ops))


@register_pass("fuse-ops")
def fuse_ops(graph: Graph, ctx: PassContext) -> Graph:
    """Fuse each anchor op with its chain of following elementwise ops into one `fused` op."""
    return fuse_graph(graph)
