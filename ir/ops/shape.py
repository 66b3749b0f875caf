"""Shape and data-movement ops: reshape (alias), transpose, concat, split, slice, gather, pad,
expand, tile, resize.

Attributes are canonical (the ONNX converters normalize them): axes are non-negative, per-dim
lists cover every dim, slice bounds are already clamped (`slice(...).indices(dim)` form).
Every compute definition is one loop nest per output (concat: one per input) of index arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from nnc.ir.graph import Attrs
from nnc.ir.loops import (
    Buffer,
    Expr,
    Load,
    call,
    cast,
    const,
    logical_and,
    maximum,
    minimum,
    select,
)
from nnc.ir.ops import (
    ComputeContext,
    OpDef,
    OpError,
    broadcast_shapes,
    load_broadcast,
    register,
)
from nnc.ir.types import TensorType, is_float

# ---------------------------------------------------------------- helpers


def _typ(types: Sequence[TensorType | None], i: int = 0) -> TensorType:
    t = types[i]
    if t is None:
        raise OpError(f"input {i} is required")
    return t


def _like(t: TensorType, shape: Sequence[int]) -> TensorType:
    """Same element type and per-tensor quantization as `t`, new shape (layout is dropped)."""
    quant = t.quant if t.quant is not None and t.quant.axis is None else None
    return TensorType(tuple(int(d) for d in shape), t.dtype, None, quant)


def _axis(attrs: Attrs, rank: int, key: str = "axis") -> int:
    axis = int(attrs[key])  # type: ignore[arg-type]
    if not 0 <= axis < rank:
        raise OpError(f"{key}={axis} out of range for rank {rank} (canonical axes are >= 0)")
    return axis


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _idx(i: int) -> Expr:
    return const(i, "int64")


# ---------------------------------------------------------------- reshape (alias)


def _reshape_infer(types, attrs):
    t = _typ(types)
    shape = tuple(int(d) for d in attrs["shape"])
    if any(d < 0 for d in shape) or _prod(shape) != t.size:
        raise OpError(f"reshape: cannot view {t} as shape {shape} (canonical shape has no 0/-1)")
    return [_like(t, shape)]


# One op kind for reshape, flatten, squeeze, unsqueeze: the output is the input's bytes.
register(OpDef(
    "reshape",
    infer=_reshape_infer,
    reference=lambda xs, a: [np.reshape(xs[0], tuple(a["shape"]))],  # type: ignore[arg-type]
    alias=True,
))

# ---------------------------------------------------------------- transpose


def _transpose_infer(types, attrs):
    t = _typ(types)
    perm = tuple(int(p) for p in attrs["perm"])
    if sorted(perm) != list(range(t.rank)):
        raise OpError(f"transpose: perm {perm} is not a permutation of rank {t.rank}")
    return [_like(t, [t.shape[p] for p in perm])]


def _transpose_compute(ctx: ComputeContext) -> None:
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    perm = tuple(int(p) for p in ctx.attr("perm"))
    # loop over the output so stores are contiguous; output dim k reads input dim perm[k]
    with ctx.b.loops(out.shape) as idx:
        src: list[Expr] = [_idx(0)] * len(perm)
        for k, p in enumerate(perm):
            src[p] = idx[k]
        ctx.store(0, idx, x[tuple(src)])


register(OpDef(
    "transpose",
    infer=_transpose_infer,
    reference=lambda xs, a: [np.transpose(xs[0], tuple(a["perm"]))],  # type: ignore[arg-type]
    compute=_transpose_compute,
))

# ---------------------------------------------------------------- concat


def _concat_infer(types, attrs):
    ts = [_typ(types, i) for i in range(len(types))]
    if not ts:
        raise OpError("concat needs at least one input")
    first = ts[0]
    axis = _axis(attrs, first.rank)
    total = 0
    for t in ts:
        if t.dtype != first.dtype or t.rank != first.rank:
            raise OpError(f"concat: inputs {first} and {t} differ in dtype or rank")
        pairs = enumerate(zip(t.shape, first.shape, strict=True))
        if any(a != b for d, (a, b) in pairs if d != axis):
            raise OpError(f"concat: shapes {first.shape} and {t.shape} differ off axis {axis}")
        total += t.shape[axis]
    shape = list(first.shape)
    shape[axis] = total
    return [_like(first, shape)]


def _concat_compute(ctx: ComputeContext) -> None:
    axis = int(ctx.attr("axis"))
    offset = 0
    for x in ctx.inputs:
        assert x is not None
        with ctx.b.loops(x.shape) as idx:
            dst = list(idx)
            dst[axis] = idx[axis] + offset
            ctx.store(0, dst, x[tuple(idx)])
        offset += x.shape[axis]


register(OpDef(
    "concat",
    infer=_concat_infer,
    reference=lambda xs, a: [np.concatenate(xs, axis=int(a["axis"]))],  # type: ignore[arg-type]
    compute=_concat_compute,
))

# ---------------------------------------------------------------- split


def _split_infer(types, attrs):
    t = _typ(types)
    axis = _axis(attrs, t.rank)
    splits = list(attrs.get_ints("splits"))
    if any(s < 0 for s in splits) or sum(splits) != t.shape[axis]:
        raise OpError(f"split: sizes {splits} do not add up to dim {t.shape[axis]} of {t}")
    outs = []
    for s in splits:
        shape = list(t.shape)
        shape[axis] = s
        outs.append(_like(t, shape))
    return outs


def _split_reference(xs, attrs):
    bounds = np.cumsum([int(s) for s in attrs["splits"]])[:-1]
    return np.split(xs[0], bounds, axis=int(attrs["axis"]))


def _split_compute(ctx: ComputeContext) -> None:
    x = ctx.inputs[0]
    assert x is not None
    axis = int(ctx.attr("axis"))
    offset = 0
    for k, out in enumerate(ctx.outputs):
        with ctx.b.loops(out.shape) as idx:
            src = list(idx)
            src[axis] = idx[axis] + offset
            ctx.store(k, idx, x[tuple(src)])
        offset += out.shape[axis]


register(OpDef(
    "split",
    infer=_split_infer,
    reference=_split_reference,
    compute=_split_compute,
))

# ---------------------------------------------------------------- slice


def normalize_slice(start: int, end: int, step: int, dim: int) -> tuple[int, int, int]:
    """ONNX/Python slice bounds → canonical (start, end, step): clamped, end may be -1 for
    negative steps (meaning "past index 0"). Raises OpError for step 0."""
    if step == 0:
        raise OpError("slice step must not be 0")
    return slice(int(start), int(end), int(step)).indices(int(dim))


def _slice_len(start: int, end: int, step: int) -> int:
    return len(range(start, end, step))


def _slice_infer(types, attrs):
    t = _typ(types)
    starts, ends, steps = (tuple(int(v) for v in attrs[k]) for k in ("starts", "ends", "steps"))
    if not len(starts) == len(ends) == len(steps) == t.rank:
        raise OpError(f"slice: starts/ends/steps must have one entry per dim of {t}")
    shape = []
    for s, e, st, d in zip(starts, ends, steps, t.shape, strict=True):
        lo, hi = (0, d) if st > 0 else (-1, d - 1)
        if st == 0 or not (lo <= s <= hi and lo <= e <= hi):
            raise OpError(f"slice: bounds ({s}, {e}, {st}) are not canonical for dim {d}")
        shape.append(_slice_len(s, e, st))
    return [_like(t, shape)]


def _slice_reference(xs, attrs):
    # e = -1 with a negative step means "through index 0"; an empty range must not wrap around
    sl = tuple(
        slice(s, e if e >= 0 else None, st) if _slice_len(s, e, st) else slice(0, 0)
        for s, e, st in zip(attrs["starts"], attrs["ends"], attrs["steps"], strict=True)
    )
    return [xs[0][sl]]


def _slice_compute(ctx: ComputeContext) -> None:
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    starts, steps = ctx.attr("starts"), ctx.attr("steps")
    with ctx.b.loops(out.shape) as idx:
        src = tuple(
            i if (s, st) == (0, 1) else i * int(st) + int(s)
            for i, s, st in zip(idx, starts, steps, strict=True)
        )
        ctx.store(0, idx, x[src])


register(OpDef(
    "slice",
    infer=_slice_infer,
    reference=_slice_reference,
    compute=_slice_compute,
))

# ---------------------------------------------------------------- gather


def _gather_infer(types, attrs):
    data, ind = _typ(types, 0), _typ(types, 1)
    axis = _axis(attrs, data.rank)
    if ind.dtype not in ("int32", "int64"):
        raise OpError(f"gather: indices must be int32 or int64, got {ind.dtype}")
    return [_like(data, data.shape[:axis] + ind.shape + data.shape[axis + 1 :])]


def _gather_compute(ctx: ComputeContext) -> None:
    x, ind, out = ctx.inputs[0], ctx.inputs[1], ctx.outputs[0]
    assert x is not None and ind is not None
    axis = int(ctx.attr("axis"))
    n = x.shape[axis]
    k = len(ind.shape)
    with ctx.b.loops(out.shape) as idx:
        v = cast(ind[tuple(idx[axis : axis + k])], "int64")
        v = select(v.lt(0), v + n, v)
        # out-of-range indices are invalid in ONNX; clamping keeps the generated code memory-safe
        v = minimum(maximum(v, 0), n - 1)
        src = tuple(idx[:axis]) + (v,) + tuple(idx[axis + k :])
        ctx.store(0, idx, x[src])


register(OpDef(
    "gather",
    infer=_gather_infer,
    reference=lambda xs, a: [np.take(xs[0], xs[1], axis=int(a["axis"]))],  # type: ignore[arg-type]
    compute=_gather_compute,
))

# ---------------------------------------------------------------- pad

PAD_MODES = ("constant", "reflect", "edge", "wrap")
# ONNX pad mode -> np.pad mode (the names agree; the Literal type is what np.pad wants)
_NP_PAD_MODES: dict[str, Literal["reflect", "edge", "wrap"]] = {
    "reflect": "reflect", "edge": "edge", "wrap": "wrap",
}


def _pad_infer(types, attrs):
    t = _typ(types)
    pads = list(attrs.get_ints("pads"))
    mode = str(attrs.get("mode", "constant"))
    if mode not in PAD_MODES:
        raise OpError(f"pad: unknown mode {mode!r}; expected one of {PAD_MODES}")
    if len(pads) != 2 * t.rank:
        raise OpError(f"pad: pads {pads} must have 2*rank={2 * t.rank} entries")
    r = t.rank
    shape = [d + pads[i] + pads[r + i] for i, d in enumerate(t.shape)]
    if any(d < 0 for d in shape):
        raise OpError(f"pad: negative pads {pads} crop more than {t.shape}")
    for i, d in enumerate(t.shape):
        if mode != "constant" and d == 0 and shape[i] > 0:
            raise OpError(f"pad: mode {mode!r} cannot pad an empty dim {i}")
    return [_like(t, shape)]


def _pad_reference(xs, attrs):
    x = xs[0]
    pads = [int(p) for p in attrs["pads"]]
    mode = str(attrs.get("mode", "constant"))
    r = x.ndim
    # negative pads crop first (ONNX allows them); np.pad takes only the non-negative part
    crop = tuple(slice(max(0, -pads[i]), x.shape[i] - max(0, -pads[r + i])) for i in range(r))
    x = x[crop]
    width = [(max(0, pads[i]), max(0, pads[r + i])) for i in range(r)]
    if mode == "constant":
        value = np.array(attrs.get("value", 0)).astype(x.dtype)
        return [np.pad(x, width, mode="constant", constant_values=value)]
    return [np.pad(x, width, mode=_NP_PAD_MODES[mode])]


def _nonneg_mod(i: Expr, n: int) -> Expr:
    return ((i % n) + n) % n


def _pad_source(i: Expr, n: int, mode: str) -> Expr:
    """Input index for (possibly out-of-range) index i of a dim of size n."""
    if mode == "edge":
        return minimum(maximum(i, 0), n - 1)
    if mode == "wrap":
        return _nonneg_mod(i, n)
    # reflect is periodic with period 2(n-1): fold into [0, 2n-2) then mirror the upper half
    if n == 1:
        return _idx(0)
    period = 2 * (n - 1)
    j = _nonneg_mod(i, period)
    return select(j.lt(n), j, period - j)


def _pad_rows(ctx: ComputeContext, x: Buffer, pads: list[int], value: Expr) -> None:
    """Constant padding by rows (no negative pads): a row inside the input is a loop of the
    fill value, the copy, a loop of the fill value; a row outside is the fill value. Each loop
    is contiguous and guard-free (vectorizable), where one loop over the padded row with a
    select per element measured 2.3 us for KWS's 64x25x5 -> 64x27x10."""
    out = ctx.outputs[0]
    r = len(x.shape)
    left, right, n = pads[r - 1], pads[2 * r - 1], x.shape[-1]
    with ctx.b.loops(out.shape[:-1]) as idx:
        inside: Expr | None = None
        src: list[Expr] = []
        for d in range(r - 1):
            i = idx[d] - pads[d] if pads[d] else idx[d]
            src.append(i)
            if pads[d] or pads[r + d]:
                ok = logical_and(i.ge(0), i.lt(x.shape[d]))
                inside = ok if inside is None else logical_and(inside, ok)

        def fill(start: int, count: int) -> None:
            if count > 0:
                with ctx.b.loop(count) as j:
                    ctx.store(0, (*idx, j + start if start else j), value)

        def row() -> None:
            fill(0, left)
            with ctx.b.loop(n) as j:
                ctx.store(0, (*idx, j + left if left else j), x[(*src, j)])
            fill(left + n, right)

        if inside is None:
            row()
        else:
            ctx.b.if_else(inside, row, lambda: fill(0, out.shape[-1]))


def _pad_compute(ctx: ComputeContext) -> None:
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    pads = [int(p) for p in ctx.attr("pads")]
    mode = str(ctx.attr("mode", "constant"))
    r = len(x.shape)
    if mode == "constant" and r >= 1 and min(pads) >= 0 and x.shape[-1] > 0:
        _pad_rows(ctx, x, pads, const(ctx.attr("value", 0), x.dtype))
        return
    with ctx.b.loops(out.shape) as idx:
        src: list[Expr] = []
        inside: Expr | None = None
        for d in range(r):
            # negative pads crop first; the mode then pads the cropped range [cb, cb + n)
            cb, ce = max(0, -pads[d]), max(0, -pads[r + d])
            n = x.shape[d] - cb - ce
            i = idx[d] - pads[d] if pads[d] else idx[d]
            if pads[d] <= 0 and pads[r + d] <= 0:
                src.append(i)
                continue
            if mode == "constant":
                ok = logical_and(i.ge(cb), i.lt(cb + n))
                inside = ok if inside is None else logical_and(inside, ok)
                src.append(i)
            else:
                j = i - cb if pads[d] > 0 else idx[d]
                j = _pad_source(j, n, mode)
                src.append(j + cb if cb else j)
        value: Expr = x[tuple(src)]
        if inside is not None:
            value = select(inside, value, const(ctx.attr("value", 0), x.dtype))
        ctx.store(0, idx, value)


register(OpDef(
    "pad",
    infer=_pad_infer,
    reference=_pad_reference,
    compute=_pad_compute,
))

# ---------------------------------------------------------------- expand, tile


def _expand_infer(types, attrs):
    t = _typ(types)
    return [_like(t, broadcast_shapes(t.shape, attrs.get_ints("shape")))]


def _expand_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    return [np.broadcast_to(x, broadcast_shapes(x.shape, attrs.get_ints("shape"))).copy()]


def _expand_compute(ctx: ComputeContext) -> None:
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    with ctx.b.loops(out.shape) as idx:
        ctx.store(0, idx, load_broadcast(x, idx))


register(OpDef(
    "expand",
    infer=_expand_infer,
    reference=_expand_reference,
    compute=_expand_compute,
))


def _tile_infer(types, attrs):
    t = _typ(types)
    reps = list(attrs.get_ints("repeats"))
    if len(reps) != t.rank or any(r < 0 for r in reps):
        raise OpError(f"tile: repeats {reps} must be {t.rank} non-negative ints")
    return [_like(t, [d * r for d, r in zip(t.shape, reps, strict=True)])]


def _tile_compute(ctx: ComputeContext) -> None:
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    reps = [int(r) for r in ctx.attr("repeats")]
    with ctx.b.loops(out.shape) as idx:
        src = tuple(i if r == 1 else i % n for i, n, r in zip(idx, x.shape, reps, strict=True))
        ctx.store(0, idx, x[src])


register(OpDef(
    "tile",
    infer=_tile_infer,
    reference=lambda xs, a: [np.tile(xs[0], tuple(a["repeats"]))],  # type: ignore[arg-type]
    compute=_tile_compute,
))

# ---------------------------------------------------------------- resize
# Coordinates are computed in float32 like onnxruntime so nearest picks the same pixel. With scales
# given, ONNX uses the unrounded resized length (attr lengths_from_scales); onnxruntime rounds it.
# Attributes: mode (nearest, linear, cubic), coordinate_transformation_mode, nearest_mode, roi,
# extrapolation_value, scales, sizes, lengths_from_scales, cubic_coeff_a (default -0.75),
# exclude_outside and antialias (bools, default false).
# Cubic, and linear with antialias, use a "kernel" path: per resized dim the taps around the
# source coordinate weighted by kernel((tap - x) * s), s = min(scale, 1) with antialias (a wider,
# lower kernel when downscaling) else 1; taps clamp to the edge, or with exclude_outside get weight
# 0; the weights are normalized to sum 1 (ONNX reference semantics).

COORD_MODES = (
    "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
    "tf_half_pixel_for_nn", "tf_crop_and_resize",
)
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


def _resize_infer(types, attrs):
    t = _typ(types)
    sizes = attrs.get_ints("sizes")
    scales = attrs.get_floats("scales")
    mode, coord = str(attrs["mode"]), str(attrs["coordinate_transformation_mode"])
    if len(sizes) != t.rank or len(scales) != t.rank:
        raise OpError(f"resize: sizes {sizes} and scales {scales} need one entry per dim of {t}")
    if mode not in ("nearest", "linear", "cubic"):
        raise OpError(f"resize: mode {mode!r} is not supported (nearest, linear, cubic)")
    if coord not in COORD_MODES:
        raise OpError(f"resize: unknown coordinate_transformation_mode {coord!r}")
    if mode == "nearest" and str(attrs["nearest_mode"]) not in NEAREST_MODES:
        raise OpError(f"resize: unknown nearest_mode {attrs['nearest_mode']!r}")
    if mode != "nearest" and not is_float(t.dtype):
        raise OpError(f"resize: {mode} mode needs a float tensor, got {t.dtype}")
    if coord == "tf_crop_and_resize" and len(attrs.get_floats("roi")) != 2 * t.rank:
        raise OpError("resize: tf_crop_and_resize needs a roi with 2*rank entries")
    return [_like(t, sizes)]


def _resize_dims(attrs: Attrs, in_shape: Sequence[int]) -> list[int]:
    """Dims that are really resized (the rest map output index i to input index i)."""
    coord = str(attrs["coordinate_transformation_mode"])
    dims = []
    sizes, scales = attrs.get_ints("sizes"), attrs.get_floats("scales")
    for d, (n, m, s) in enumerate(zip(in_shape, sizes, scales, strict=True)):
        if n != m or float(s) != 1.0 or coord == "tf_crop_and_resize":
            dims.append(d)
    return dims


def _coord_params(attrs: Attrs, d: int, n: int) -> tuple[float, float, float, float, float]:
    scale = float(np.float32(attrs.get_floats("scales")[d]))
    # with scales given, ONNX takes the resized length as the unrounded float n * scale
    m = (float(np.float32(n) * np.float32(scale)) if attrs.get("lengths_from_scales", False)
         else attrs.get_ints("sizes")[d])
    roi = attrs.get_floats("roi", ())
    r = len(roi) // 2
    lo, hi = (float(roi[d]), float(roi[r + d])) if roi else (0.0, 1.0)
    return scale, float(m), float(n), lo, hi


def _coord_np(attrs: Attrs, d: int, n: int) -> np.ndarray:
    """float32 source coordinate of every output index of dim d (ONNX formulas, float32 math)."""
    f = np.float32
    scale, m, nn, lo, hi = (f(v) for v in _coord_params(attrs, d, n))
    x = np.arange(attrs.get_ints("sizes")[d], dtype=np.float32)
    coord = str(attrs["coordinate_transformation_mode"])
    if coord == "asymmetric":
        return x / scale
    if coord == "pytorch_half_pixel":
        return (x + f(0.5)) / scale - f(0.5) if m > 1 else np.zeros_like(x)
    if coord == "tf_half_pixel_for_nn":
        return (x + f(0.5)) / scale
    if coord == "align_corners":
        return x * (nn - f(1)) / (m - f(1)) if m > 1 else np.zeros_like(x)
    if coord == "tf_crop_and_resize":
        if m > 1:
            return lo * (nn - f(1)) + (x * (hi - lo) * (nn - f(1))) / (m - f(1))
        return np.full_like(x, f(0.5) * (lo + hi) * (nn - f(1)))
    if coord == "half_pixel_symmetric":
        out_f = scale * nn
        adjust = f(attrs.get_ints("sizes")[d]) / out_f
        offset = (nn / f(2)) * (f(1) - adjust)
        return offset + (x + f(0.5)) / scale - f(0.5)
    return (x + f(0.5)) / scale - f(0.5)  # half_pixel


def _coord_expr(attrs: Attrs, d: int, n: int, i: Expr) -> Expr:
    """The same formulas as `_coord_np` as a float32 loop-IR expression of output index i."""
    scale, m, nn, lo, hi = _coord_params(attrs, d, n)
    x = cast(i, "float32")
    f = lambda v: const(v, "float32")  # noqa: E731
    coord = str(attrs["coordinate_transformation_mode"])
    if coord == "asymmetric":
        return x / f(scale)
    if coord == "pytorch_half_pixel":
        return (x + f(0.5)) / f(scale) - f(0.5) if m > 1 else f(0.0)
    if coord == "tf_half_pixel_for_nn":
        return (x + f(0.5)) / f(scale)
    if coord == "align_corners":
        return x * f(nn - 1) / f(m - 1) if m > 1 else f(0.0)
    if coord == "tf_crop_and_resize":
        f32 = np.float32
        if m > 1:
            start = f(float(f32(lo) * f32(nn - 1)))
            return start + (x * f(float(f32(hi) - f32(lo))) * f(nn - 1)) / f(m - 1)
        return f(float(f32(0.5) * (f32(lo) + f32(hi)) * f32(nn - 1)))
    if coord == "half_pixel_symmetric":
        f32 = np.float32
        adjust = f32(attrs.get_ints("sizes")[d]) / (f32(scale) * f32(nn))
        offset = float((f32(nn) / f32(2)) * (f32(1) - adjust))
        return f(offset) + (x + f(0.5)) / f(scale) - f(0.5)
    return (x + f(0.5)) / f(scale) - f(0.5)


def _nearest_np(x: np.ndarray, mode: str, scale: float) -> np.ndarray:
    if mode == "simple":  # Resize-10 / Upsample: ceil when downsampling, truncate otherwise
        return np.ceil(x) if scale < 1 else np.trunc(x)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    if mode == "round_prefer_ceil":
        return np.floor(x + np.float32(0.5))
    return np.ceil(x - np.float32(0.5))  # round_prefer_floor


def _nearest_expr(x: Expr, mode: str, scale: float) -> Expr:
    half = const(0.5, "float32")
    if mode == "simple":
        if scale < 1:
            return cast(call("ceil", x), "int64")
        return cast(x, "int64")  # C truncation, as onnxruntime
    if mode == "floor":
        return cast(call("floor", x), "int64")
    if mode == "ceil":
        return cast(call("ceil", x), "int64")
    if mode == "round_prefer_ceil":
        return cast(call("floor", x + half), "int64")
    return cast(call("ceil", x - half), "int64")


def _kernel_path(attrs: Attrs) -> bool:
    """Cubic, or linear with antialias: the general tap/kernel path instead of 2-tap linear."""
    mode = str(attrs["mode"])
    return mode == "cubic" or (mode == "linear" and bool(attrs.get("antialias", False)))


def _kernel_taps(attrs: Attrs, d: int) -> tuple[float, int]:
    """(s, half) for dim d: the kernel's scale s and the taps floor(x) + 1 - half .. floor(x) +
    half; outside them the scaled kernel is 0 (linear support 1, cubic 2)."""
    radius = 2.0 if str(attrs["mode"]) == "cubic" else 1.0
    s = 1.0
    if attrs.get("antialias", False):
        s = min(float(attrs.get_floats("scales")[d]), 1.0)
    return s, int(-np.floor(-radius / s))


def _kernel_np(t: np.ndarray, attrs: Attrs) -> np.ndarray:
    """Kernel weight at distance t >= 0 (float64)."""
    if str(attrs["mode"]) != "cubic":
        return np.clip(1.0 - t, 0.0, 1.0)
    a = attrs.get_float("cubic_coeff_a", -0.75)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _kernel_expr(t: Expr, attrs: Attrs) -> Expr:
    """`_kernel_np` as a loop-IR expression."""
    if str(attrs["mode"]) != "cubic":
        return maximum(1.0 - t, 0.0)
    a = attrs.get_float("cubic_coeff_a", -0.75)
    t2 = t * t
    near = ((a + 2) * t - (a + 3)) * t2 + 1.0
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return select(t.le(1.0), near, select(t.lt(2.0), far, 0.0))


def _kernel_matrix(attrs: Attrs, d: int, n: int) -> np.ndarray:
    """(output, input) weights of dim d on the kernel path, rows normalized."""
    c = _coord_np(attrs, d, n).astype(np.float64)
    s, half = _kernel_taps(attrs, d)
    taps = np.floor(c)[:, None] + np.arange(1 - half, half + 1)[None, :]
    w = _kernel_np(np.abs(taps - c[:, None]) * s, attrs)
    if attrs.get("exclude_outside", False):
        w = np.where((taps < 0) | (taps > n - 1), 0.0, w)
    total = w.sum(axis=1, keepdims=True)
    w = w / np.where(total == 0, 1.0, total)
    mat = np.zeros((len(c), n))
    rows = np.broadcast_to(np.arange(len(c))[:, None], taps.shape)
    np.add.at(mat, (rows, np.clip(taps, 0, n - 1).astype(np.int64)), w)
    return mat


def _resize_reference(xs, attrs):
    x = xs[0]
    mode = str(attrs["mode"])
    if _kernel_path(attrs):
        return _resize_kernel_reference(x, attrs)
    extrapolate = str(attrs["coordinate_transformation_mode"]) == "tf_crop_and_resize"
    outside = np.zeros(tuple(int(s) for s in attrs["sizes"]), dtype=bool)
    res = x.astype(np.float32) if mode == "linear" and x.dtype == np.float16 else x
    for d in _resize_dims(attrs, x.shape):
        n = x.shape[d]
        c = _coord_np(attrs, d, n)
        bad = (c < 0) | (c > np.float32(n - 1))
        shape = [1] * x.ndim
        shape[d] = len(c)
        outside |= bad.reshape(shape)
        if mode == "nearest":
            i = _nearest_np(c, str(attrs["nearest_mode"]), float(attrs["scales"][d]))
            res = np.take(res, np.clip(i.astype(np.int64), 0, n - 1), axis=d)
        else:
            c = np.clip(c, np.float32(0), np.float32(n - 1))
            i0 = np.minimum(c.astype(np.int64), n - 1)
            i1 = np.minimum(i0 + 1, n - 1)
            w1 = (c - i0.astype(np.float32)).astype(res.dtype).reshape(shape)
            res = np.take(res, i0, axis=d) * (1 - w1) + np.take(res, i1, axis=d) * w1
    if extrapolate:
        fill = np.array(attrs.get("extrapolation_value", 0.0)).astype(res.dtype)
        res = np.where(outside, fill, res)
    return [res.astype(x.dtype)]


def _outside_mask(attrs: Attrs, shape: Sequence[int]) -> np.ndarray:
    """tf_crop_and_resize: output positions whose source coordinate is outside the input."""
    outside = np.zeros(attrs.get_ints("sizes"), dtype=np.bool_)
    for d in _resize_dims(attrs, shape):
        c = _coord_np(attrs, d, shape[d])
        view = [1] * len(shape)
        view[d] = len(c)
        outside = outside | ((c < 0) | (c > np.float32(shape[d] - 1))).reshape(view)
    return outside


def _resize_kernel_reference(x: np.ndarray, attrs: Attrs) -> list[np.ndarray]:
    res = x.astype(np.float64)
    for d in _resize_dims(attrs, x.shape):
        mat = _kernel_matrix(attrs, d, x.shape[d])
        res = np.moveaxis(np.tensordot(mat, np.moveaxis(res, d, 0), axes=1), 0, d)
    if str(attrs["coordinate_transformation_mode"]) == "tf_crop_and_resize":
        res = np.where(_outside_mask(attrs, x.shape), attrs.get_float("extrapolation_value", 0.0),
                       res)
    return [res.astype(x.dtype)]


def _resize_kernel_compute(ctx: ComputeContext) -> None:
    """One accumulation loop nest over the taps of every resized dim; the weights are separable,
    so dividing by the summed weight products normalizes every dim at once."""
    b = ctx.b
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    attrs = ctx.attrs
    dims = _resize_dims(attrs, x.shape)
    wdt = "float32" if x.dtype == "float16" else x.dtype
    exclude = bool(attrs.get("exclude_outside", False))
    params = {d: _kernel_taps(attrs, d) for d in dims}
    coords = {d: b.local("float32", f"x{d}") for d in dims}
    floors = {d: b.local("int64", f"f{d}") for d in dims}
    acc, total = b.local(wdt, "acc"), b.local(wdt, "wsum")
    with b.loops(out.shape) as idx:
        inside: Expr | None = None
        for d in dims:
            c = _coord_expr(attrs, d, x.shape[d], idx[d])
            b.store(coords[d], (), c)
            b.store(floors[d], (), cast(call("floor", coords[d][()]), "int64"))
            if str(attrs["coordinate_transformation_mode"]) == "tf_crop_and_resize":
                ok = logical_and(coords[d][()].ge(0.0), coords[d][()].le(float(x.shape[d] - 1)))
                inside = ok if inside is None else logical_and(inside, ok)
        b.store(acc, (), const(0.0, wdt))
        b.store(total, (), const(0.0, wdt))
        with b.loops([2 * params[d][1] for d in dims], "t") as js:
            src = list(idx)
            weight: Expr | None = None
            for d, j in zip(dims, js, strict=True):
                s, half = params[d]
                n = x.shape[d]
                tap = floors[d][()] + (j + (1 - half))
                dist = call("abs", cast(tap, wdt) - cast(coords[d][()], wdt))
                w = _kernel_expr(dist if s == 1.0 else dist * s, attrs)
                if exclude:
                    w = select(logical_and(tap.ge(0), tap.lt(n)), w, 0.0)
                weight = w if weight is None else weight * w
                src[d] = minimum(maximum(tap, 0), n - 1)
            assert weight is not None
            b.store(acc, (), acc[()] + weight * cast(Load(x.name, tuple(src), x.dtype), wdt))
            b.store(total, (), total[()] + weight)
        value = acc[()] / select(total[()].eq(0.0), const(1.0, wdt), total[()])
        if inside is not None:
            value = select(inside, value, attrs.get_float("extrapolation_value", 0.0))
        ctx.store(0, idx, cast(value, x.dtype))


def _resize_compute(ctx: ComputeContext) -> None:
    if _kernel_path(ctx.attrs):
        _resize_kernel_compute(ctx)
        return
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    attrs = ctx.attrs
    mode = str(attrs["mode"])
    extrapolate = str(attrs["coordinate_transformation_mode"]) == "tf_crop_and_resize"
    dims = _resize_dims(attrs, x.shape)
    wdt = "float32" if x.dtype == "float16" else x.dtype  # weight / accumulation dtype
    with ctx.b.loops(out.shape) as idx:
        inside: Expr | None = None
        # per resized dim: list of (input index, weight) taps
        taps: dict[int, list[tuple[Expr, Expr | None]]] = {}
        for d in dims:
            n = x.shape[d]
            c = _coord_expr(attrs, d, n, idx[d])
            if extrapolate:
                ok = logical_and(c.ge(0.0), c.le(float(n - 1)))
                inside = ok if inside is None else logical_and(inside, ok)
            if mode == "nearest":
                i = _nearest_expr(c, str(attrs["nearest_mode"]), attrs.get_floats("scales")[d])
                taps[d] = [(minimum(maximum(i, 0), n - 1), None)]
            else:
                cc = minimum(maximum(c, 0.0), float(n - 1))
                i0 = minimum(cast(cc, "int64"), n - 1)
                i1 = minimum(i0 + 1, n - 1)
                w1 = cast(cc - cast(i0, "float32"), wdt)
                taps[d] = [(i0, const(1.0, wdt) - w1), (i1, w1)]
        value = _sum_taps(x, idx, dims, taps, wdt, mode)
        if inside is not None:
            fill = const(attrs.get_float("extrapolation_value", 0.0), x.dtype)
            value = select(inside, value, fill)
        ctx.store(0, idx, value)


def _sum_taps(x, idx, dims, taps, wdt, mode):
    """Sum over the corners of the taps (one corner for nearest, 2^k for k-linear)."""
    corners: list[tuple[list[Expr], Expr | None]] = [(list(idx), None)]
    for d in dims:
        nxt = []
        for src, w in corners:
            for i, tw in taps[d]:
                s = list(src)
                s[d] = i
                nxt.append((s, tw if w is None else (tw if tw is None else w * tw)))
        corners = nxt
    if mode == "nearest":
        return Load(x.name, tuple(corners[0][0]), x.dtype)
    total: Expr | None = None
    for src, w in corners:
        term = cast(Load(x.name, tuple(src), x.dtype), wdt)
        term = term if w is None else w * term
        total = term if total is None else total + term
    assert total is not None
    return cast(total, x.dtype)


register(OpDef(
    "resize",
    infer=_resize_infer,
    reference=_resize_reference,
    compute=_resize_compute,
))
