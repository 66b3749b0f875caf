"""flatten-pointwise: the host's 1x1 convs over their whole plane as one output row.

A float 1x1 conv (stride 1, no padding, dilation 1) reads and writes each pixel of its plane on
its own, so [N, C, H, W] may be viewed as [N, C, 1, H*W] (a reshape is an alias: no copy). The
host's register tile puts the output channels in the vector lanes and up to 12 output columns
as unrolled copies (`host_vector_steps`); on KWS's 5-wide rows that left 5 copies, on VWW's 6x6
and 3x3 planes 6 and 3. On the flat row the copies run along the whole plane (12 per tile):

    %y = conv(%x, %w, %b); %r = relu(%y)                         (%x: 64x25x5, %r: 64x25x5)
    →  %xf = reshape(%x) {shape=[1, 64, 1, 125]}
       %yf = conv(%xf, %w, %b); %rf = relu(%yf)
       %r = reshape(%rf) {shape=[1, 64, 25, 5]}

The elementwise epilogue moved onto the flat row is a chain of ops whose other operands are
constants equal along both the rows and the columns (a bias [C, 1, 1], a clip bound), as in
`pad-depthwise-rows`. Measured per layer (`benchmarks/bench_layer.py`, same run): KWS's 64 -> 64
channel pointwise conv on 25x5 0.0094 -> 0.0075-0.0085 ms. Planes with rows wider than
`max_width` fill the copies already and are left alone. Host only.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnc.ir.graph import Attrs, Graph, Op, Value, fresh_name
from nnc.ir.ops.nn import spatial_attrs
from nnc.ir.types import TensorType
from nnc.passes._host_rows import (
    Splice,
    chain_end,
    epilogue_chain,
    flat_constant,
    flat_type,
    rebuild_chain,
)
from nnc.passes.manager import PassContext, register_pass


@dataclass(frozen=True)
class FlattenPointwiseOptions:
    max_width: int = 32  # rows at most this wide are flattened (12 copies fit a wider row)


def _pointwise(op: Op, types: dict[str, TensorType], opts: FlattenPointwiseOptions) -> bool:
    if op.kind != "conv" or len(op.outputs) != 1 or len(op.inputs) < 2:
        return False
    x, w = types.get(op.inputs[0]), types.get(op.inputs[1])
    out = op.outputs[0].type
    if x is None or w is None or x.dtype != "float32" or x.rank != 4 or w.rank != 4:
        return False
    if w.shape[2:] != (1, 1) or op.attrs.get_int("weight_oc_last", 0):
        return False
    strides, pb, pe, dilations = spatial_attrs(op.attrs, 2)
    if strides != (1, 1) or dilations != (1, 1) or any(pb + pe):
        return False
    return out.shape[2] > 1 and out.shape[3] <= opts.max_width


@register_pass("flatten-pointwise", options=FlattenPointwiseOptions)
def flatten_pointwise(graph: Graph, ctx: PassContext) -> Graph:
    """View narrow 1x1 convs' planes as one row (see the module docstring)."""
    if getattr(ctx.target, "kind", "host") != "host":
        return graph
    opts = ctx.options if ctx.options is not None else FlattenPointwiseOptions()
    types, consts = graph.value_types(), graph.constant_map()
    outputs = set(graph.output_names())
    used = set(types)
    splice = Splice()
    for op in graph.ops:
        if op in splice or not _pointwise(op, types, opts):
            continue
        if op.outputs[0].name in outputs:
            continue  # a graph output keeps its own shape and buffer
        chain = epilogue_chain(op, graph, consts, flat_constant)
        while chain and chain[-1].outputs[0].name in outputs:
            chain.pop()
        x = types[op.inputs[0]]
        xf = fresh_name(f"{op.inputs[0]}_flat", used)
        used.add(xf)
        flat_in = Op("reshape", (op.inputs[0],), (Value(xf, flat_type(x)),),
                     Attrs.of(shape=flat_type(x).shape), name=f"{op.name}_flat" if op.name else "")
        copies = rebuild_chain(op, chain, suffix="_flat", used=used, out_type=flat_type,
                               first_input=xf)
        last = chain_end(op, chain)
        plane = Op("reshape", (copies[-1].outputs[0].name,), (last,),
                   Attrs.of(shape=last.type.shape), name=f"{op.name}_plane" if op.name else "")
        splice.replace([op, *chain], [flat_in, *copies, plane])
    return splice.apply(graph)
