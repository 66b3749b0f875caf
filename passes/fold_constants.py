"""fold-constants: evaluate ops whose inputs are all constants and replace them by constants.

Each foldable op runs through its numpy reference (the graph interpreter's `run_op`, so fused ops
fold too); its outputs become constants under the same names, so consumers need no rewiring.
Constants no op and no graph output uses afterwards are dropped.

    %y = add(%w, %b)   with %w, %b constant   →   const %y = <w + b>
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir.graph import Constant, Graph, Op, Value
from nnc.ir.interp import run_op
from nnc.passes.manager import PassContext, register_pass


@dataclass(frozen=True)
class FoldConstantsOptions:
    # ops whose outputs hold more elements than this stay (folding would bloat the weights)
    max_elements: int = 64 * 1024 * 1024


class FoldError(Exception):
    """An op with constant inputs failed to evaluate."""


def _frozen(array: np.ndarray, value: Value) -> Constant:
    data = np.array(array, dtype=value.type.dtype, copy=True).reshape(value.type.shape)
    data.setflags(write=False)
    return Constant(value, data)  # keep the value's type (layout, quant params) as it was


def _foldable(op: Op, known: dict[str, np.ndarray], outputs: set[str], limit: int) -> bool:
    if not all(name in known for name in op.inputs if name):
        return False
    # an op computing a graph output stays: outputs are buffers the runtime fills, not weights
    if any(v.name in outputs for v in op.outputs):
        return False
    return sum(v.type.size for v in op.outputs) <= limit


def drop_unused_constants(graph: Graph) -> Graph:
    """The graph without constants that no op input and no graph output names."""
    used = {name for op in graph.ops for name in op.inputs if name}
    used |= set(graph.output_names())
    kept = tuple(c for c in graph.constants if c.name in used)
    return graph if len(kept) == len(graph.constants) else graph.replace(constants=kept)


@register_pass("fold-constants", options=FoldConstantsOptions)
def fold_constants(graph: Graph, ctx: PassContext) -> Graph:
    """Replace ops whose inputs are all constants by their (precomputed) outputs."""
    opts = ctx.options if ctx.options is not None else FoldConstantsOptions()
    known = graph.constant_map()
    outputs = set(graph.output_names())
    constants = list(graph.constants)
    ops: list[Op] = []
    for op in graph.ops:
        if not _foldable(op, known, outputs, opts.max_elements):
            ops.append(op)
            continue
        args = [known[name] if name else None for name in op.inputs]
        try:
            results = run_op(op, args)
        except Exception as e:
            raise FoldError(f"cannot fold {op.kind} '{op.name}': {type(e).__name__}: {e}") from e
        for value, result in zip(op.outputs, results, strict=True):
            c = _frozen(result, value)
            constants.append(c)
            known[value.name] = c.data
    folded = graph.replace(constants=tuple(constants), ops=tuple(ops))
    return drop_unused_constants(folded)
