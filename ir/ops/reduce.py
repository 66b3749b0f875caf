"""Reductions (reduce_sum/mean/max/min/prod/sum_square/l1/l2/log_sum/log_sum_exp) and
arg_max/arg_min.

Canonical attributes: `axes` is a sorted tuple of non-negative axes (never empty: the converter
turns "empty = all" into the full list and "noop_with_empty_axes" into no op), `keepdims` a bool.
reduce_* are declarative definitions (`nnc.ir.compute.Reduction`): the schedule decides the loop
nest; arg_max / arg_min keep a hand-written nest (an index, not a combine, is their result).
reduce_log_sum_exp takes a second input, the max over the axes with keepdims (the converter
emits the reduce_max), and sums exp(x - max): onnxruntime's overflow-free form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nnc.ir.compute import ACC, Axis, Reduction
from nnc.ir.graph import Attrs
from nnc.ir.loops import (
    Expr,
    Load,
    Var,
    call,
    cast,
    const,
    select,
)
from nnc.ir.ops import ComputeContext, OpDef, OpError, register
from nnc.ir.types import TensorType, is_float

# ---------------------------------------------------------------- helpers


def _axes(attrs: Attrs, rank: int) -> tuple[int, ...]:
    axes = attrs.get_ints("axes")
    if not axes or list(axes) != sorted(set(axes)) or not all(0 <= a < rank for a in axes):
        raise OpError(f"axes {axes} must be sorted, unique, non-empty and in [0, {rank})")
    return axes


def _reduced_shape(shape: Sequence[int], axes: Sequence[int], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if d in axes else n for d, n in enumerate(shape))
    return tuple(n for d, n in enumerate(shape) if d not in axes)


def _acc_dtype(dtype: str) -> str:
    # float16 accumulates in float32 (as onnxruntime does), everything else in its own type
    return "float32" if dtype == "float16" else dtype


def _lowest(dtype: str) -> float | int | bool:
    if dtype == "bool":
        return False
    return float("-inf") if is_float(dtype) else int(np.iinfo(dtype).min)


def _highest(dtype: str) -> float | int | bool:
    if dtype == "bool":
        return True
    return float("inf") if is_float(dtype) else int(np.iinfo(dtype).max)


def _merge(kept: Sequence[Expr], red: Sequence[Expr], axes: Sequence[int], rank: int) -> tuple:
    """Full input index from the kept-dim and reduced-dim loop variables."""
    it_k, it_r = iter(kept), iter(red)
    return tuple(next(it_r) if d in axes else next(it_k) for d in range(rank))


def _out_index(kept: Sequence[Expr], axes: Sequence[int], rank: int, keepdims: bool) -> tuple:
    if not keepdims:
        return tuple(kept)
    it = iter(kept)
    return tuple(const(0, "int64") if d in axes else next(it) for d in range(rank))


# ---------------------------------------------------------------- reduce_*


FLOAT_ONLY = ("reduce_l2", "reduce_log_sum", "reduce_log_sum_exp")


def _reduce_infer_for(kind: str) -> Callable[..., list[TensorType]]:
    def infer(types, attrs):
        t = types[0]
        if t is None:
            raise OpError("reduction input is required")
        axes = _axes(attrs, t.rank)
        if kind in FLOAT_ONLY and not is_float(t.dtype):
            raise OpError(f"{kind}: dtype {t.dtype} not supported (floats only)")
        if kind == "reduce_log_sum_exp":  # input 1: the max over the axes, kept dims
            m = types[1] if len(types) > 1 else None
            if m is None or m.shape != _reduced_shape(t.shape, axes, True):
                raise OpError(f"{kind}: input 1 {m} must be the max of {t} over {axes}, keepdims")
        return [TensorType(_reduced_shape(t.shape, axes, bool(attrs["keepdims"])), t.dtype)]

    return infer


def _reduce_reference(fn: Callable[..., np.ndarray]) -> Callable[..., list[np.ndarray]]:
    def ref(xs, attrs):
        x = xs[0]
        axes = tuple(int(a) for a in attrs["axes"])
        extra = [v for v in xs[1:] if v is not None]
        return [np.asarray(fn(x, axes, bool(attrs["keepdims"]), *extra)).astype(x.dtype)]

    return ref


def _np_sum(x, axes, keep):
    return np.sum(x, axis=axes, keepdims=keep, dtype=_acc_dtype(str(x.dtype)))


def _np_mean(x, axes, keep):
    if is_float(str(x.dtype)):
        return np.mean(x, axis=axes, keepdims=keep, dtype=_acc_dtype(str(x.dtype)))
    count = int(np.prod([x.shape[a] for a in axes]))
    # integer mean = integer sum / count, truncating like C division
    total = np.sum(x, axis=axes, keepdims=keep, dtype=x.dtype).astype(np.int64)
    return (np.sign(total) * (np.abs(total) // max(count, 1))).astype(x.dtype)


def _np_prod(x, axes, keep):
    return np.prod(x, axis=axes, keepdims=keep, dtype=_acc_dtype(str(x.dtype)))


def _np_sum_square(x, axes, keep):
    return _np_sum(x * x, axes, keep)


def _np_l1(x, axes, keep):
    return _np_sum(np.abs(x), axes, keep)


def _np_l2(x, axes, keep):
    return np.sqrt(_np_sum(x * x, axes, keep))


def _np_log_sum(x, axes, keep):
    return np.log(_np_sum(x, axes, keep))


def _np_log_sum_exp(x, axes, keep, m):
    """log(sum(exp(x - m))) + m with m the max over the axes (onnxruntime's stable form)."""
    acc = _acc_dtype(str(x.dtype))
    mf = m.astype(acc)
    total = np.log(np.sum(np.exp(x.astype(acc) - mf), axis=axes, keepdims=True)) + mf
    return total if keep else np.squeeze(total, axis=axes)


def _np_max(x, axes, keep):
    return np.max(x, axis=axes, keepdims=keep, initial=_lowest(str(x.dtype)))


def _np_min(x, axes, keep):
    return np.min(x, axis=axes, keepdims=keep, initial=_highest(str(x.dtype)))


_COMBINE = {"sum": "add", "mean": "add", "prod": "mul", "max": "max", "min": "min",
            "sum_square": "add", "l1": "add", "l2": "add", "log_sum": "add", "log_sum_exp": "add"}


def _abs(v: Expr) -> Expr:
    if is_float(v.dtype):
        return call("abs", v)
    return v if v.dtype.startswith("uint") or v.dtype == "bool" else select(v.lt(0), -v, v)


# what each element contributes, and what the sum becomes (`m`: log_sum_exp's max, kept dims)
_TERMS: dict[str, Callable[[Expr, Expr | None], Expr]] = {
    "sum_square": lambda v, m: v * v, "l1": lambda v, m: _abs(v), "l2": lambda v, m: v * v,
    "log_sum_exp": lambda v, m: call("exp", v - m),
}
_FINISH: dict[str, Callable[[Expr, Expr | None], Expr]] = {
    "l2": lambda a, m: call("sqrt", a), "log_sum": lambda a, m: call("log", a),
    "log_sum_exp": lambda a, m: call("log", a) + m,
}


def _reduce_compute(kind: str) -> Callable[[ComputeContext], None]:
    """One declarative definition (`nnc.ir.compute`): the kept dims o0.. as the spatial axes,
    the reduced dims r0.. as the reduce axes, combine add / mul / max / min (on bool max and
    min are or and and); max and min start from the first element (no infinities in the
    generated code), the mean divides on the way out; sum_square / l1 / l2 / log_sum /
    log_sum_exp are sums of a term of the element, finished (`_TERMS`, `_FINISH`)."""

    def compute(ctx: ComputeContext) -> None:
        x, out = ctx.inputs[0], ctx.outputs[0]
        assert x is not None
        rank = len(x.shape)
        axes = tuple(int(a) for a in ctx.attr("axes"))
        keep = bool(ctx.attr("keepdims"))
        kept_shape = [n for d, n in enumerate(x.shape) if d not in axes]
        red_shape = [x.shape[d] for d in axes]
        count = int(np.prod(red_shape)) if red_shape else 1
        adt = _acc_dtype(x.dtype)
        kept = [Var(f"o{i}") for i in range(len(kept_shape))]
        red = [Var(f"r{i}") for i in range(len(red_shape))]
        if kind in ("max", "min") and count > 0:
            first = _merge(kept, [const(0, "int64")] * len(axes), axes, rank)
            init: Expr = cast(Load(x.name, first, x.dtype), adt)
        elif kind in ("max", "min"):
            init = const(_lowest(adt) if kind == "max" else _highest(adt), adt)
        else:
            init = const(1 if kind == "prod" else 0, adt)
        term = cast(Load(x.name, _merge(kept, red, axes, rank), x.dtype), adt)
        m = None
        if kind == "log_sum_exp":
            mb = ctx.inputs[1]
            assert mb is not None
            m = cast(Load(mb.name, _out_index(kept, axes, rank, True), mb.dtype), adt)
        if kind in _TERMS:
            term = _TERMS[kind](term, m)
        result: Expr = Var(ACC, adt)
        if kind == "mean" and count > 0:
            result = result / const(count, adt)
        if kind in _FINISH:
            result = _FINISH[kind](result, m)
        idx = _out_index(kept, axes, rank, keep)
        target, value = ctx.output(0, idx, cast(result, out.dtype))
        dims = (*(Axis(v.name, n) for v, n in zip(kept, kept_shape, strict=True)),
                *(Axis(v.name, n, True) for v, n in zip(red, red_shape, strict=True)))
        ctx.b.define(Reduction(f"reduce_{kind}", dims, adt, init, term, target.name, idx, value,
                               combine=_COMBINE[kind], reassociate=is_float(adt)),
                     {b.name: b.shape for b in (*ctx.inputs, target) if b is not None})

    return compute


_REDUCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "sum": _np_sum, "mean": _np_mean, "max": _np_max, "min": _np_min, "prod": _np_prod,
    "sum_square": _np_sum_square, "l1": _np_l1, "l2": _np_l2, "log_sum": _np_log_sum,
    "log_sum_exp": _np_log_sum_exp,
}
for _kind, _fn in _REDUCTIONS.items():
    register(OpDef(
        f"reduce_{_kind}",
        infer=_reduce_infer_for(f"reduce_{_kind}"),
        reference=_reduce_reference(_fn),
        compute=_reduce_compute(_kind),
    ))

# ---------------------------------------------------------------- arg_max / arg_min


def _arg_infer(types, attrs):
    t = types[0]
    if t is None:
        raise OpError("arg_max/arg_min input is required")
    axis = int(attrs["axis"])
    if not 0 <= axis < t.rank:
        raise OpError(f"axis={axis} out of range for rank {t.rank} (canonical axes are >= 0)")
    if t.shape[axis] == 0:
        raise OpError(f"arg_max/arg_min over an empty axis {axis} of {t}")
    return [TensorType(_reduced_shape(t.shape, (axis,), bool(attrs["keepdims"])), "int64")]


def _arg_reference(fn: Callable[..., np.ndarray]) -> Callable[..., list[np.ndarray]]:
    def ref(xs, attrs):
        x, axis = xs[0], int(attrs["axis"])
        if attrs.get("select_last_index", False):
            idx = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            idx = fn(x, axis=axis)
        if attrs["keepdims"]:
            idx = np.expand_dims(idx, axis)
        return [np.asarray(idx, dtype=np.int64)]

    return ref


def _arg_compute(kind: str) -> Callable[[ComputeContext], None]:
    def compute(ctx: ComputeContext) -> None:
        x = ctx.inputs[0]
        assert x is not None
        rank = len(x.shape)
        axis = int(ctx.attr("axis"))
        keep = bool(ctx.attr("keepdims"))
        last = bool(ctx.attr("select_last_index", False))
        kept_shape = [n for d, n in enumerate(x.shape) if d != axis]
        best = ctx.b.local(x.dtype, "best")
        arg = ctx.b.local("int64", "arg")
        with ctx.b.loops(kept_shape, "o") as kept:
            first = _merge(kept, [const(0, "int64")], (axis,), rank)
            ctx.b.store(best, (), Load(x.name, first, x.dtype))
            ctx.b.store(arg, (), const(0, "int64"))
            with ctx.b.loop(x.shape[axis], "r") as j:
                v = Load(x.name, _merge(kept, [j], (axis,), rank), x.dtype)
                b = best[()]
                if kind == "max":
                    better = v.ge(b) if last else v.gt(b)
                else:
                    better = v.le(b) if last else v.lt(b)
                ctx.b.store(arg, (), select(better, j, arg[()]))
                ctx.b.store(best, (), select(better, v, b))
            ctx.store(0, _out_index(kept, (axis,), rank, keep), arg[()])

    return compute


register(OpDef(
    "arg_max",
    infer=_arg_infer,
    reference=_arg_reference(np.argmax),
    compute=_arg_compute("max"),
))
register(OpDef(
    "arg_min",
    infer=_arg_infer,
    reference=_arg_reference(np.argmin),
    compute=_arg_compute("min"),
))
