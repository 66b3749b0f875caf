"""Shared pieces of the host's row-reshaping graph passes (`pad-depthwise-rows`,
`depthwise-stride-rows`, `flatten-pointwise`).

Each of them runs a conv on other rows than its own (padded, stride 1, flattened), moves the
conv's elementwise epilogue (the chain `fuse-ops` folds into it) onto those rows, and puts one
op after the chain that gives the original last value back (a slice, a reshape):

    chain = epilogue_chain(conv, graph, consts)
    copies = rebuild_chain(conv, chain, suffix="_wide", used=used,
                           out_type=partial(with_row_width, width=8))
    splice.replace([conv, *chain], [*before, *copies, back(copies[-1], chain_end(conv, chain))])
    return splice.apply(graph)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nnc.ir.graph import Attrs, Graph, Op, Value, fresh_name
from nnc.ir.ops import get_op
from nnc.ir.types import TensorType


def float_depthwise(op: Op, types: dict[str, TensorType], consts: dict[str, np.ndarray],
                    finite: bool = True) -> tuple[TensorType, np.ndarray] | None:
    """(input type, weights) of `op` when it is a float32 2-D depthwise conv (group = input =
    output channels) with constant weights, finite ones where `finite` (a tap on explicit
    zeros then adds exactly 0 * w); else None."""
    if op.kind != "conv" or len(op.outputs) != 1 or len(op.inputs) < 2:
        return None
    x, w = types.get(op.inputs[0]), consts.get(op.inputs[1])
    if x is None or w is None or x.dtype != "float32" or x.rank != 4 or w.ndim != 4:
        return None
    channels = x.shape[1]
    if op.attrs.get_int("group", 1) != channels or w.shape[:2] != (channels, 1) \
            or op.outputs[0].type.shape[1] != channels or (finite and not np.isfinite(w).all()):
        return None
    return x, w


def row_constant(shape: tuple[int, ...]) -> bool:
    """Whether a constant operand of this shape broadcasts the same along a wider last axis."""
    return len(shape) == 0 or shape[-1] == 1


def epilogue_chain(first: Op, graph: Graph, consts: dict[str, np.ndarray],
                   constant_ok: Callable[[tuple[int, ...]], bool] = row_constant) -> list[Op]:
    """The elementwise ops after `first` (each the sole user of the one before) that may run
    on other rows: their only non-constant operand is the previous output, their other
    operands constants whose shapes `constant_ok` accepts (default: constant along the row)."""
    users, outputs = graph.consumers(), set(graph.output_names())
    chain: list[Op] = []
    value = first.outputs[0].name
    while value not in outputs and len(users.get(value, [])) == 1:
        op = users[value][0]
        if len(op.outputs) != 1 or op.body is not None or get_op(op.kind).scalar is None:
            break
        others = [i for i in op.inputs if i and i != value]
        if op.inputs.count(value) != 1 or not all(
                i in consts and constant_ok(consts[i].shape) for i in others):
            break
        if op.outputs[0].type.shape != first.outputs[0].type.shape:
            break
        chain.append(op)
        value = op.outputs[0].name
    return chain


def flat_constant(shape: tuple[int, ...]) -> bool:
    """Whether a constant of this shape broadcasts the same over [.., 1, H*W] as over
    [.., H, W]: its last two dims (where present) are 1."""
    return all(d == 1 for d in shape[-2:])


def flat_type(t: TensorType) -> TensorType:
    """`t` (rank 4, [N, C, H, W]) with its plane as one row: [N, C, 1, H*W]."""
    return TensorType((*t.shape[:2], 1, t.shape[2] * t.shape[3]), t.dtype)


def with_row_width(t: TensorType, width: int) -> TensorType:
    """`t` (rank 4) with rows `width` wide."""
    return TensorType((*t.shape[:3], width), t.dtype)


def chain_end(first: Op, chain: Sequence[Op]) -> Value:
    """The value the chain `first, *chain` ends in (what the op after the copies must give)."""
    return (chain[-1] if chain else first).outputs[0]


def rebuild_chain(first: Op, chain: Sequence[Op], *, suffix: str, used: set[str],
                  out_type: Callable[[TensorType], TensorType], first_input: str | None = None,
                  first_attrs: Attrs | None = None) -> list[Op]:
    """Copies of `first` and its `chain` on new values (`<name><suffix>`, fresh in `used`, which
    grows) of the types `out_type` gives, each copy reading the one before; `first` reads
    `first_input` in place of its input 0 and takes `first_attrs` where given."""
    renames: dict[str, str] = {}
    copies: list[Op] = []
    for o in [first, *chain]:
        out = o.outputs[0]
        name = fresh_name(f"{out.name}{suffix}", used)
        renames[out.name] = name
        inputs = tuple(first_input if (o is first and i == 0 and first_input is not None)
                       else renames.get(v, v) for i, v in enumerate(o.inputs))
        attrs = first_attrs if (o is first and first_attrs is not None) else o.attrs
        copies.append(o.with_(inputs=inputs, attrs=attrs,
                              outputs=(Value(name, out_type(out.type)),)))
    return copies


class Splice:
    """Ops of a graph replaced by others, applied in the graph's order in one pass."""

    def __init__(self) -> None:
        self._new: dict[int, list[Op]] = {}

    def __contains__(self, op: Op) -> bool:
        return id(op) in self._new

    def replace(self, old: Sequence[Op], new: Sequence[Op]) -> None:
        """`new` stands where `old[0]` stood; the rest of `old` goes."""
        self._new[id(old[0])] = list(new)
        for o in old[1:]:
            self._new[id(o)] = []

    def apply(self, graph: Graph) -> Graph:
        if not self._new:
            return graph
        ops: list[Op] = []
        for op in graph.ops:
            ops.extend(self._new.get(id(op), [op]))
        return graph.replace(ops=tuple(ops))
