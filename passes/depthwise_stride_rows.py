"""depthwise-stride-rows: the host's stride-2 depthwise convs with contiguous row loads.

The host's depthwise tile puts the vector lanes along the output row; with a column stride of
2 each lane's input is every other element, and clang-15 (generic x86-64 cost model, AVX-512)
loads those with gathers (`vgatherqps`, 8 lanes each): VWW's stride-2 depthwise convs ran at
1.4-3.5 GMAC/s against 11-18 on stride 1. Here such a conv runs with column stride 1 instead
(every output column of the stride-1 conv, twice the MACs, contiguous loads), its elementwise
epilogue on those rows, and a slice with step 2 keeps the columns of the strided conv:

    %y = conv(%x, %w, %b) {group=16, strides=[2, 2], pads=[0, 0, 1, 1]}; %r = relu(%y)
                                                                    (%x: 16x48x48, %r: 16x24x24)
    →  %y' = conv(%x, %w, %b) {group=16, strides=[2, 1], pads=[0, 0, 1, 1]}; %r' = relu(%y')
                                                                    (%r': 16x24x47)
       %r = slice(%r') {starts=[0, 0, 0, 0], ends=[1, 16, 24, 47], steps=[1, 1, 1, 2]}

Column 2j of the stride-1 conv is column j of the strided one (same taps, same order), so the
result is the same. The epilogue is a chain of elementwise ops whose other operands are
constants constant along the row (`pad-depthwise-rows`). Host only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from nnc.ir.graph import Attrs, Graph, Op
from nnc.ir.ops.nn import spatial_attrs
from nnc.ir.types import TensorType
from nnc.passes._host_rows import (
    Splice,
    chain_end,
    epilogue_chain,
    float_depthwise,
    rebuild_chain,
    with_row_width,
)
from nnc.passes.manager import PassContext, register_pass


@dataclass(frozen=True)
class DepthwiseStrideRowsOptions:
    min_width: int = 4  # strided output rows at least this wide (3x3 planes: left alone)
    min_padded_width: int = 48  # with a left pad, input rows at least this wide (`_pays`)


def _pays(width: int, left_pad: int, opts: DepthwiseStrideRowsOptions) -> bool:
    """Whether stride-1 rows measured faster here. Per layer (`bench_host_layers --drop
    depthwise-stride-rows`, minimum, conv + slice against the strided conv): VWW's rows with
    no left pad gained at 48 and 24 wide, shufflenet's (left pad 1) at 56 (112x56x56 0.384 ->
    0.178 ms) but lost at 28 (136x28x28 0.109 -> 0.173 ms) and 14 (272x14x14 0.031 -> 0.070):
    there the stride-1 conv ran at ~3 GMAC/s, no faster per MAC than the strided one."""
    return left_pad == 0 or width >= opts.min_padded_width


def _strided(op: Op, types: dict[str, TensorType], consts: dict[str, np.ndarray],
             opts: DepthwiseStrideRowsOptions) -> bool:
    found = float_depthwise(op, types, consts, finite=False)
    if found is None:
        return False
    x, out = found[0], op.outputs[0].type
    strides, pb, _, dilations = spatial_attrs(op.attrs, 2)
    return strides[1] == 2 and dilations == (1, 1) and out.shape[3] >= opts.min_width \
        and _pays(x.shape[3], pb[1], opts)


@register_pass("depthwise-stride-rows", options=DepthwiseStrideRowsOptions)
def depthwise_stride_rows(graph: Graph, ctx: PassContext) -> Graph:
    """Stride-2 depthwise convs as stride-1 rows and a step-2 slice (module docstring)."""
    if getattr(ctx.target, "kind", "host") != "host":
        return graph
    opts = ctx.options if ctx.options is not None else DepthwiseStrideRowsOptions()
    types, consts = graph.value_types(), graph.constant_map()
    used = set(types)
    splice = Splice()
    for op in graph.ops:
        if op in splice or not _strided(op, types, consts, opts):
            continue
        chain = epilogue_chain(op, graph, consts)
        x = types[op.inputs[0]]
        strides, pb, pe, _ = spatial_attrs(op.attrs, 2)
        kw = consts[op.inputs[1]].shape[3]
        full = x.shape[3] + pb[1] + pe[1] - kw + 1  # the stride-1 row
        copies = rebuild_chain(
            op, chain, suffix="_cols", used=used,
            out_type=partial(with_row_width, width=full),
            first_attrs=op.attrs.set(strides=(strides[0], 1)))
        last = chain_end(op, chain)
        slice_ = Op("slice", (copies[-1].outputs[0].name,), (last,),
                    Attrs.of(starts=(0, 0, 0, 0), ends=(*last.type.shape[:3], full),
                             steps=(1, 1, 1, 2)),
                    name=f"{op.name}_cols" if op.name else "")
        splice.replace([op, *chain], [*copies, slice_])
    return splice.apply(graph)
