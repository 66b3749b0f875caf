"""pad-depthwise-rows: full vector rows for the host's narrow depthwise convs.

A float depthwise conv (group = input = output channels, 2-D, stride 1, dilation 1) whose
output rows are 4-32 columns wide fills few vector lanes: the row loop is partitioned into
border / interior / border (KWS's 5-wide rows: 1 + 3 + 1 columns, scalar code). Here the input
is padded with explicit zeros instead (top, bottom, left as the conv's pads; on the right up
to a row of a multiple of 8 output columns), the conv runs unpadded on it (no guard, whole
8-lane rows), and a slice after the conv's elementwise epilogue keeps the real columns:

    %y = conv(%x, %w, %b) {group=64, pads=[1, 1, 1, 1]}; %r = relu(%y)        (%r: 64x25x5)
    →  %xp = pad(%x) {pads=[0, 0, 1, 1, 0, 0, 1, 4]}                          (64x27x10)
       %y' = conv(%xp, %w, %b) {group=64}; %r' = relu(%y')                    (64x25x8)
       %r = slice(%r') {starts=[0, 0, 0, 0], ends=[1, 64, 25, 5]}

The taps that were skipped outside the input now add 0 * w (exact, the sums otherwise run in
the same order), so only weights that are finite constants qualify (0 * inf would be NaN).
The epilogue moved before the slice is a chain of elementwise ops whose other operands are
constants constant along the row (a bias [C, 1, 1], a clip bound). Measured per layer (same
run, README "Host fp32"): 3x3 on 25x5x64 0.0120 -> 0.0066 ms, 12x12x256 0.0675 -> 0.0262 ms,
24x24x128 0.1135 -> 0.0379 ms; wider rows (48) and stride 2 gained nothing.
Host only: the pipelines of the other targets do not run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from nnc.ir.graph import Attrs, Graph, Op, Value, fresh_name
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

ROW_MULTIPLE = 8  # output columns per row after padding: a multiple of AVX2's 8 lanes


@dataclass(frozen=True)
class PadDepthwiseRowsOptions:
    min_width: int = 4  # narrower rows (3x3 planes) measured slower padded
    max_width: int = 32  # wider rows fill the lanes already (48: no gain)
    # dense convs (group 1) with output rows up to this wide run on an explicitly padded
    # input too (no widening, no slice): 0 = never
    max_dense_width: int = 32


def _dense(op: Op, types: dict[str, TensorType], consts: dict[str, np.ndarray],
           opts: PadDepthwiseRowsOptions) -> bool:
    """Whether `op` is a padded dense float 2-D conv with finite constant weights and output
    rows of at most `max_dense_width` columns (any stride: its lanes run along the output
    channels, the input is a broadcast)."""
    if op.kind != "conv" or len(op.outputs) != 1 or len(op.inputs) < 2:
        return False
    x, w = types.get(op.inputs[0]), consts.get(op.inputs[1])
    if x is None or w is None or x.dtype != "float32" or x.rank != 4 or w.ndim != 4:
        return False
    if op.attrs.get_int("group", 1) != 1 or not np.isfinite(w).all():
        return False
    _, pb, pe, dilations = spatial_attrs(op.attrs, 2)
    if dilations != (1, 1) or not any(pb + pe):
        return False
    return 1 <= op.outputs[0].type.shape[3] <= opts.max_dense_width


def _wide_width(op: Op, types: dict[str, TensorType], consts: dict[str, np.ndarray],
                opts: PadDepthwiseRowsOptions) -> int | None:
    """The padded output row width for `op`, None when it does not qualify."""
    if float_depthwise(op, types, consts) is None:
        return None
    out = op.outputs[0].type
    strides, pb, pe, dilations = spatial_attrs(op.attrs, 2)
    if strides != (1, 1) or dilations != (1, 1):
        return None
    ow = out.shape[3]
    if not opts.min_width <= ow <= opts.max_width:
        return None
    wide = -(-ow // ROW_MULTIPLE) * ROW_MULTIPLE
    if wide == ow and not any(pb + pe):
        return None  # full rows and no guard already
    return wide


@register_pass("pad-depthwise-rows", options=PadDepthwiseRowsOptions)
def pad_depthwise_rows(graph: Graph, ctx: PassContext) -> Graph:
    """Pad narrow depthwise convs' inputs to whole vector rows (see the module docstring)."""
    if getattr(ctx.target, "kind", "host") != "host":
        return graph
    opts = ctx.options if ctx.options is not None else PadDepthwiseRowsOptions()
    types, consts = graph.value_types(), graph.constant_map()
    used = set(types)
    splice = Splice()
    for op in graph.ops:
        if op in splice:
            continue
        wide = _wide_width(op, types, consts, opts)
        dense = wide is None and opts.max_dense_width > 0 and _dense(op, types, consts, opts)
        if wide is None and not dense:
            continue
        x = types[op.inputs[0]]
        _, pb, pe, _ = spatial_attrs(op.attrs, 2)
        if wide is None or wide == op.outputs[0].type.shape[3]:
            # full rows already (or a dense conv): only the explicit zero padding, no slice
            padded = TensorType((*x.shape[:2], x.shape[2] + pb[0] + pe[0],
                                 x.shape[3] + pb[1] + pe[1]), x.dtype)
            xp = fresh_name(f"{op.inputs[0]}_pad", used)
            used.add(xp)
            splice.replace([op], [
                Op("pad", (op.inputs[0],), (Value(xp, padded),),
                   Attrs.of(pads=(0, 0, pb[0], pb[1], 0, 0, pe[0], pe[1]), mode="constant",
                            value=0.0), name=f"{op.name}_pad" if op.name else ""),
                op.with_(inputs=(xp, *op.inputs[1:]), attrs=op.attrs.set(pads=(0, 0, 0, 0)))])
            continue
        chain = epilogue_chain(op, graph, consts)
        kw = consts[op.inputs[1]].shape[3]
        right = wide + kw - 1 - x.shape[3] - pb[1]
        padded = TensorType((*x.shape[:2], x.shape[2] + pb[0] + pe[0], wide + kw - 1), x.dtype)
        xp = fresh_name(f"{op.inputs[0]}_rows", used)
        used.add(xp)
        pad = Op("pad", (op.inputs[0],), (Value(xp, padded),),
                 Attrs.of(pads=(0, 0, pb[0], pb[1], 0, 0, pe[0], right), mode="constant",
                          value=0.0), name=f"{op.name}_pad" if op.name else "")
        copies = rebuild_chain(op, chain, suffix="_wide", used=used,
                               out_type=partial(with_row_width, width=wide), first_input=xp,
                               first_attrs=op.attrs.set(pads=(0, 0, 0, 0)))
        last = chain_end(op, chain)
        slice_ = Op("slice", (copies[-1].outputs[0].name,), (last,),
                    Attrs.of(starts=(0, 0, 0, 0), ends=last.type.shape, steps=(1, 1, 1, 1)),
                    name=f"{op.name}_rows" if op.name else "")
        splice.replace([op, *chain], [pad, *copies, slice_])
    return splice.apply(graph)
