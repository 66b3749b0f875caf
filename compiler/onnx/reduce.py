"""ONNX converters for reductions (ReduceSum/Mean/Max/Min/Prod/SumSquare/L1/L2/LogSum/
LogSumExp) and ArgMax/ArgMin.

Axes come as an attribute, or as an optional input from opset 13 (ReduceSum) / 18 (the others).
The graph-IR ops always get an explicit, sorted, non-negative axes list: empty axes mean "all
axes", unless noop_with_empty_axes is set, in which case the node is the identity.
"""

from __future__ import annotations

import numpy as np

from nnc.compiler.onnx.registry import ConversionError, ConvertContext, converter


def _reduce_axes(ctx: ConvertContext, input_since: int, rank: int) -> list[int] | None:
    """Canonical axes, or None for the identity (noop_with_empty_axes with no axes)."""
    if ctx.opset < input_since:
        raw = ctx.attr("axes")
        axes = [] if raw is None else [int(a) for a in raw]
        noop = False
    else:
        axes = ([int(a) for a in np.asarray(ctx.require_const(1, "axes")).reshape(-1)]
                if ctx.has_input(1) else [])
        noop = bool(ctx.attr("noop_with_empty_axes", 0))
    if not axes:
        return None if noop else list(range(rank))
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ConversionError(f"axis {a} is out of range for rank {rank}")
        out.append(a + rank if a < 0 else a)
    if len(set(out)) != len(out):
        raise ConversionError(f"axes {axes} contain duplicates")
    return sorted(out)


def _make_reduce(kind: str, input_since: int):  # type: ignore[no-untyped-def]
    def convert(ctx: ConvertContext) -> list[str]:
        t = ctx.type(0)
        if t is None:
            raise ConversionError("input 0 is required")
        axes = _reduce_axes(ctx, input_since, t.rank)
        if axes is None:
            return [ctx.input(0)]
        keepdims = bool(ctx.attr("keepdims", 1))
        if t.rank == 0:
            return [ctx.input(0)]  # a scalar reduces to itself
        return ctx.emit(kind, [ctx.input(0)], {"axes": tuple(axes), "keepdims": keepdims},
                        outputs=ctx.node.output)

    convert.__name__ = f"convert_{kind}"
    return convert


for _op, _kind, _since in (
    ("ReduceSum", "reduce_sum", 13),
    ("ReduceMean", "reduce_mean", 18),
    ("ReduceMax", "reduce_max", 18),
    ("ReduceMin", "reduce_min", 18),
    ("ReduceProd", "reduce_prod", 18),
    ("ReduceSumSquare", "reduce_sum_square", 18),
    ("ReduceL1", "reduce_l1", 18),
    ("ReduceL2", "reduce_l2", 18),
    ("ReduceLogSum", "reduce_log_sum", 18),
):
    converter(_op, since=1)(_make_reduce(_kind, _since))


@converter("ReduceLogSumExp", since=1)
def convert_reduce_log_sum_exp(ctx: ConvertContext) -> list[str]:
    """log(sum(exp(x - m))) + m, m = ReduceMax(x) over the same axes (keepdims): no overflow
    for large x, as onnxruntime computes it."""
    t = ctx.type(0)
    if t is None:
        raise ConversionError("input 0 is required")
    axes = _reduce_axes(ctx, 18, t.rank)
    if axes is None or t.rank == 0:
        return [ctx.input(0)]
    attrs = {"axes": tuple(axes), "keepdims": bool(ctx.attr("keepdims", 1))}
    m = ctx.emit("reduce_max", [ctx.input(0)], {"axes": tuple(axes), "keepdims": True})[0]
    return ctx.emit("reduce_log_sum_exp", [ctx.input(0), m], attrs, outputs=ctx.node.output)


def _make_arg(kind: str):  # type: ignore[no-untyped-def]
    def convert(ctx: ConvertContext) -> list[str]:
        t = ctx.type(0)
        if t is None:
            raise ConversionError("input 0 is required")
        axis = int(ctx.attr("axis", 0))
        if not -t.rank <= axis < t.rank:
            raise ConversionError(f"axis {axis} is out of range for rank {t.rank}")
        attrs = {
            "axis": axis + t.rank if axis < 0 else axis,
            "keepdims": bool(ctx.attr("keepdims", 1)),
            "select_last_index": ctx.opset >= 12 and bool(ctx.attr("select_last_index", 0)),
        }
        return ctx.emit(kind, [ctx.input(0)], attrs, outputs=ctx.node.output)

    convert.__name__ = f"convert_{kind}"
    return convert


converter("ArgMax", since=1)(_make_arg("arg_max"))
converter("ArgMin", since=1)(_make_arg("arg_min"))
