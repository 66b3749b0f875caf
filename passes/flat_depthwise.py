"""flat-depthwise: the host's narrow depthwise convs over their whole plane as one row.

A float depthwise conv (group = channels, 2-D, stride 1, dilation 1) on a plane whose rows are
narrower than one vector (KWS's 25x5) fills few lanes row by row; `pad-depthwise-rows` widens
each row to 8 columns (37% of the lanes padding on 5-wide rows) and needs a pad copy before
and a slice copy after. Here the plane is one flat row instead (a reshape: the same bytes),
zero-padded once at its two ends (the conv's top rows and left columns before, bottom rows
and right columns after: a contiguous copy), and a `depthwise_flat` op runs the taps along the
flat row, tap (i, j) at offset i * W + j; a tap left or right of a row reads the neighbouring
row's element, which a constant column mask [KW, H*W] drops (`flat_plane_masks`):

    %y = conv(%x, %w, %b) {group=64, pads=[1, 1, 1, 1]}; %r = relu(%y)        (%r: 64x25x5)
    ->  %xf = reshape(%x) (64x1x125); %xp = pad(%xf) {pads=[0, 0, 0, 6, 0, 0, 0, 6]}  (64x1x137)
        %y' = depthwise_flat(%xp, %w, %mask, %b) {width=5, plane=125}; %r' = relu(%y')
        %r = reshape(%r') (64x25x5)

The conv's epilogue (a chain of elementwise ops whose constants broadcast alike over the flat
row, `fuse-ops` folds it in) moves onto the flat row. A dropped tap adds 0 * w, so only
weights that are finite constants qualify (0 * inf would be NaN). Needs the conv's column
padding to keep the row width (left + right = KW - 1). Measured per layer (KWS 3x3 on
64x25x5, `bench_host_layers`): pad + conv + slice 0.0015 + 0.0030 + 0.0012 ms -> pad + flat
conv 0.0003 + 0.0023 ms; KWS 1.46x -> 1.09x onnxruntime (README "Host latency"). Host only:
the other targets' pipelines do not run it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value, fresh_name
from nnc.ir.ops.nn import flat_plane_masks, spatial_attrs
from nnc.ir.types import TensorType
from nnc.passes._host_rows import (
    Splice,
    chain_end,
    epilogue_chain,
    flat_constant,
    flat_type,
    float_depthwise,
    rebuild_chain,
)
from nnc.passes.default_schedule import host_flat_vectors, host_registers
from nnc.passes.manager import PassContext, register_pass


@dataclass(frozen=True)
class FlatDepthwiseOptions:
    # rows narrower than this many columns (and than one vector of the target) run flat
    max_width: int = 15
    # planes of fewer vectors of outputs stay as they are: VWW's 6x6 (3 vectors of 16) took
    # 0.0028 ms flat against 0.0006 + 0.0015 padded to rows of 8 (`pad-depthwise-rows`); and
    # of more than the registers hold (`host_flat_vectors`: 12 on AVX-512, 6 on AVX2)
    min_vectors: int = 4


def _lanes(target: object) -> int:
    return max(1, host_registers(target)[1] // 32)


def _qualifies(op: Op, types: dict[str, TensorType], consts: dict[str, np.ndarray],
               opts: FlatDepthwiseOptions, ctx_target: object) -> bool:
    lanes = _lanes(ctx_target)
    found = float_depthwise(op, types, consts)
    if found is None:
        return False
    x, w = found
    out = op.outputs[0].type
    strides, pb, pe, dilations = spatial_attrs(op.attrs, 2)
    if strides != (1, 1) or dilations != (1, 1) or pb[1] + pe[1] != w.shape[3] - 1:
        return False
    width = x.shape[3]
    if not 1 < width <= min(opts.max_width, lanes - 1) or out.shape[3] != width:
        return False
    vectors = -(-out.shape[2] * width // lanes)
    return opts.min_vectors <= vectors <= host_flat_vectors(ctx_target)


@register_pass("flat-depthwise", options=FlatDepthwiseOptions)
def flat_depthwise(graph: Graph, ctx: PassContext) -> Graph:
    """Run narrow depthwise convs along their plane as one row (see the module docstring)."""
    if getattr(ctx.target, "kind", "host") != "host":
        return graph
    opts = ctx.options if ctx.options is not None else FlatDepthwiseOptions()
    types, consts = graph.value_types(), graph.constant_map()
    outputs = set(graph.output_names())
    used = set(types)
    splice = Splice()
    masks: list[Constant] = []
    for op in graph.ops:
        if op in splice or op.outputs[0].name in outputs \
                or not _qualifies(op, types, consts, opts, ctx.target):
            continue
        chain = epilogue_chain(op, graph, consts, flat_constant)
        while chain and chain[-1].outputs[0].name in outputs:
            chain.pop()
        x, w = types[op.inputs[0]], consts[op.inputs[1]]
        _, pb, pe, _ = spatial_attrs(op.attrs, 2)
        height, width = op.outputs[0].type.shape[2:]
        plane = height * width
        before = pb[0] * width + pb[1]
        after = pe[0] * width + pe[1]
        flat = flat_type(x)
        padded = TensorType((*flat.shape[:3], flat.shape[3] + before + after), x.dtype)

        def fresh(base: str) -> str:
            name = fresh_name(base, used)
            used.add(name)
            return name

        xf, xp, m = fresh(f"{op.inputs[0]}_flat"), fresh(f"{op.inputs[0]}_flatpad"), \
            fresh(f"{op.name or op.outputs[0].name}_cols")
        masks.append(Constant.of(m, flat_plane_masks(height, width, w.shape[3], pb[1])))
        label = op.name or op.outputs[0].name
        ops = [Op("reshape", (op.inputs[0],), (Value(xf, flat),), Attrs.of(shape=flat.shape),
                  name=f"{label}_flat"),
               Op("pad", (xf,), (Value(xp, padded),),
                  Attrs.of(pads=(0, 0, 0, before, 0, 0, 0, after), mode="constant", value=0.0),
                  name=f"{label}_pad")]
        bias = op.inputs[2] if len(op.inputs) > 2 else ""
        conv = Op("depthwise_flat", (xp, op.inputs[1], m, *((bias,) if bias else ())),
                  op.outputs, Attrs.of(width=width, plane=plane), name=op.name)
        copies = rebuild_chain(conv, chain, suffix="_flat", used=used, out_type=flat_type)
        last = chain_end(op, chain)
        ops += [*copies, Op("reshape", (copies[-1].outputs[0].name,), (last,),
                            Attrs.of(shape=last.type.shape), name=f"{label}_plane")]
        splice.replace([op, *chain], ops)
    if not masks:
        return graph
    return splice.apply(graph).replace(constants=(*graph.constants, *masks))
