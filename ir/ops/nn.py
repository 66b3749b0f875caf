"""Neural-network ops: conv, conv_transpose, gemm, matmul, pools, normalizations, lrn, softmax.

Canonical attribute forms (the ONNX converters fill them in; missing ones take the defaults):
  conv / conv_transpose: strides, pads (begins then ends), dilations (one per spatial dim), group;
    conv_transpose also output_padding (auto_pad and output_shape are resolved into pads).
  gemm: alpha, beta, trans_a, trans_b.        matmul: numpy semantics, no attributes.
  max_pool / average_pool: kernel_shape, strides, pads, dilations, ceil_mode;
    average_pool also count_include_pad; max_pool also with_indices (a second, int64 output: the
    flat index of each max in the input, first max wins) and storage_order (0: row-major
    spatial index, 1: column-major).
  batch_normalization / instance_normalization: epsilon.   layer_normalization: axis, epsilon.
  lrn: size, alpha, beta, bias.
  softmax / log_softmax: axes (sorted, non-negative), normalized jointly.

Float16 computes in float32 (accumulators, references) and rounds once at the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from nnc.ir.compute import ACC, Axis, Reduction, spatial_names, windows_of
from nnc.ir.graph import Attrs
from nnc.ir.loops import (
    Buffer,
    Expr,
    KernelBuilder,
    Var,
    binary,
    call,
    cast,
    const,
    logical_and,
    maximum,
    select,
)
from nnc.ir.ops import (
    ComputeContext,
    OpDef,
    OpError,
    broadcast_index,
    broadcast_shapes,
    register,
)
from nnc.ir.types import TensorType, is_float

FLOATS = frozenset({"float16", "float32", "float64"})
NUMERIC_DTYPES = frozenset({
    "float16", "float32", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64",
})


# ---------------------------------------------------------------- shared helpers


def acc_dtype(dtype: str) -> str:
    """Accumulator dtype: float16 accumulates in float32, everything else in itself."""
    return "float32" if dtype == "float16" else dtype


def _np_acc(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def _check_dtype(kind: str, t: TensorType, allowed: frozenset[str]) -> None:
    if t.dtype not in allowed:
        raise OpError(f"{kind}: dtype {t.dtype} not supported (allowed: {sorted(allowed)})")


def _ints(attrs: Attrs, key: str, n: int, default: int) -> tuple[int, ...]:
    v = attrs.get(key)
    if v is None:
        return (default,) * n
    vals = attrs.get_ints(key)
    if len(vals) != n:
        raise OpError(f"attribute {key}={vals} must have {n} values")
    return vals


def spatial_attrs(
    attrs: Attrs, nsp: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(strides, pads_begin, pads_end, dilations) with defaults, validated."""
    strides = _ints(attrs, "strides", nsp, 1)
    pads = _ints(attrs, "pads", 2 * nsp, 0)
    dilations = _ints(attrs, "dilations", nsp, 1)
    if min(strides, default=1) < 1 or min(dilations, default=1) < 1:
        raise OpError(f"strides {strides} and dilations {dilations} must be >= 1")
    if min(pads, default=0) < 0:
        raise OpError(f"negative pads {pads} are not supported")
    return strides, pads[:nsp], pads[nsp:], dilations


def window_out_size(size: int, k: int, s: int, pb: int, pe: int, d: int, ceil: bool) -> int:
    """Output length of a sliding window; with ceil_mode a window starting in the end padding
    is dropped (ONNX/onnxruntime semantics)."""
    span = size + pb + pe - ((k - 1) * d + 1)
    if span < 0:
        raise OpError(f"window {k} (dilation {d}) larger than padded input {size + pb + pe}")
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + pb:
        out -= 1
    return out


def _mul(e: Expr, n: int) -> Expr:
    return e if n == 1 else e * n


def _add(e: Expr, n: int) -> Expr:
    return e if n == 0 else e + n


def _and(conds: Sequence[Expr]) -> Expr | None:
    out: Expr | None = None
    for c in conds:
        out = c if out is None else logical_and(out, c)
    return out


def window_positions(
    out_idx: Sequence[Expr],
    k_idx: Sequence[Expr],
    in_sizes: Sequence[int],
    out_sizes: Sequence[int],
    k_sizes: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads_begin: Sequence[int],
) -> tuple[list[Expr], Expr | None]:
    """Input positions o*s + k*d - pb of a window tap and the bounds check they need (None if
    every tap of every window is inside the input)."""
    pos: list[Expr] = []
    conds: list[Expr] = []
    for o, k, size, osz, ksz, s, d, pb in zip(
        out_idx, k_idx, in_sizes, out_sizes, k_sizes, strides, dilations, pads_begin, strict=True
    ):
        p = _add(_mul(o, s) + _mul(k, d), -pb)
        pos.append(p)
        if pb > 0:
            conds.append(p.ge(0))
        if (osz - 1) * s + (ksz - 1) * d - pb >= size:
            conds.append(p.lt(size))
    return pos, _and(conds)


def _window_slices(
    kidx: Sequence[int], dil: Sequence[int], strides: Sequence[int], out_sp: Sequence[int]
) -> tuple[slice, ...]:
    return tuple(
        slice(k * d, k * d + (o - 1) * s + 1, s)
        for k, d, s, o in zip(kidx, dil, strides, out_sp, strict=True)
    )


def _load(buf: Buffer, idx: Sequence[Expr], dtype: str) -> Expr:
    return cast(buf[tuple(idx)], dtype)


def _min_value(dtype: str) -> float | int:
    """Identity of max: the lowest finite value, as onnxruntime uses (no infinities in C)."""
    if is_float(dtype):
        return float(np.finfo(dtype).min)
    return int(np.iinfo(dtype).min)


# ---------------------------------------------------------------- conv


def _conv_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, w = types[0], types[1]
    bias = types[2] if len(types) > 2 else None
    assert x is not None and w is not None
    _check_dtype("conv", x, NUMERIC_DTYPES)
    if x.rank < 3 or w.rank != x.rank:
        raise OpError(f"conv: input {x} and weight {w} must have equal rank >= 3")
    if w.dtype != x.dtype:
        raise OpError(f"conv: weight dtype {w.dtype} differs from input dtype {x.dtype}")
    nsp = x.rank - 2
    group = attrs.get_int("group", 1)
    oc, cg = w.shape[0], w.shape[1]
    if group < 1 or x.shape[1] != cg * group or oc % group:
        raise OpError(f"conv: input {x}, weight {w} and group={group} are inconsistent")
    if bias is not None and bias.shape != (oc,):
        raise OpError(f"conv: bias shape {bias.shape} must be ({oc},)")
    ks = attrs.get("kernel_shape")
    if ks is not None and tuple(ks) != w.shape[2:]:  # type: ignore[arg-type]
        raise OpError(f"conv: kernel_shape {ks} disagrees with weight shape {w.shape}")
    strides, pb, pe, dil = spatial_attrs(attrs, nsp)
    out_sp = tuple(
        window_out_size(n, k, s, b, e, d, ceil=False)
        for n, k, s, b, e, d in zip(x.shape[2:], w.shape[2:], strides, pb, pe, dil, strict=True)
    )
    return [TensorType((x.shape[0], oc, *out_sp), x.dtype)]


def _conv_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, w = xs[0], xs[1]
    bias = xs[2] if len(xs) > 2 else None
    assert x is not None and w is not None
    dt, acc = x.dtype, _np_acc(x.dtype)
    nsp = x.ndim - 2
    strides, pb, pe, dil = spatial_attrs(attrs, nsp)
    group = attrs.get_int("group", 1)
    n, c = x.shape[:2]
    oc, cg = w.shape[:2]
    ocg, ks = oc // group, w.shape[2:]
    geometry = zip(x.shape[2:], ks, strides, pb, pe, dil, strict=True)
    out_sp = tuple(window_out_size(n, k, s, b, e, d, ceil=False) for n, k, s, b, e, d in geometry)
    xp = np.pad(x.astype(acc), [(0, 0), (0, 0), *zip(pb, pe, strict=True)])
    xg = xp.reshape(n, group, cg, *xp.shape[2:])
    wg = w.astype(acc).reshape(group, ocg, cg, *ks)
    out = np.zeros((n, group, ocg, *out_sp), acc)
    for kidx in np.ndindex(*ks):
        patch = xg[(slice(None),) * 3 + _window_slices(kidx, dil, strides, out_sp)]
        out += np.einsum("ngc...,goc->ngo...", patch, wg[(slice(None),) * 3 + kidx])
    out = out.reshape(n, oc, *out_sp)
    if bias is not None:
        out += bias.astype(acc).reshape(oc, *[1] * nsp)
    return [out.astype(dt)]


def tap_range(k: int, size: int, out_size: int, s: int, d: int, pb: int) -> tuple[int, int]:
    """Outputs o in [lo, hi) whose tap k reads inside the input: 0 <= o*s + k*d - pb < size
    (lo == hi when none does)."""
    off = k * d - pb
    lo = max(0, -(off // s))
    hi = min(out_size, (size - 1 - off) // s + 1)
    return lo, max(lo, hi)


def maybe_if(b: KernelBuilder, cond: Expr | None) -> AbstractContextManager[None]:
    return nullcontext() if cond is None else b.if_(cond)


def _conv_compute(ctx: ComputeContext) -> None:
    """NCHW conv as one declarative definition (`nnc.ir.compute`): axes n, oc, the output
    positions (od/oh/ow), then the reduce axes: the input channels of the group (none when
    depthwise) and the taps. Float sums may be regrouped (`reassociate`): the schedule
    (passes/default_schedule.py) picks the register tile, vector lanes and loop order."""
    x, w = ctx.inputs[0], ctx.inputs[1]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    out = ctx.outputs[0]
    assert x is not None and w is not None
    ad = acc_dtype(out.dtype)
    nsp = len(x.shape) - 2
    strides, pb, _, dil = spatial_attrs(ctx.attrs, nsp)
    group = int(ctx.attr("group", 1))
    oc_n, ocg = out.shape[1], out.shape[1] // group
    cg = x.shape[1] // group
    # `_conv_pack` stores constant weights channels-last ([IC, taps..., OC]; per group
    # [G, IC/G, taps..., OC/G]), so a vector of output channels is one contiguous load
    packed = bool(ctx.attrs.get_int("weight_oc_last", 0))
    grouped = packed and group > 1  # the group is an axis of its own: g, then oc in it
    ks = w.shape[2:-1] if grouped else w.shape[1:-1] if packed else w.shape[2:]
    onames, knames = spatial_names(nsp)
    n, oc = Var("n"), Var("oc")
    pos = [_add(_mul(Var(o), st) + _mul(Var(k), d), -p)
           for o, k, st, d, p in zip(onames, knames, strides, dil, pb, strict=True)]
    axes = [Axis("n", x.shape[0])]
    axes += [Axis("g", group), Axis("oc", ocg)] if grouped else [Axis("oc", oc_n)]
    axes += [Axis(o, e) for o, e in zip(onames, out.shape[2:], strict=True)]
    if cg > 1:
        axes.append(Axis("ic", cg, True))
        icg: Expr = Var("ic")
    else:
        icg = const(0, "int64")
    axes += [Axis(k, e, True) for k, e in zip(knames, ks, strict=True)]
    kv = tuple(Var(k) for k in knames)
    out_c: Expr = oc
    if grouped:
        out_c = Var("g") * ocg + oc
        ic = Var("g") * cg + icg if cg > 1 else Var("g")
        widx: tuple[Expr, ...] = (Var("g"), icg, *kv, oc)
    else:
        if group == 1:
            ic = icg
        else:
            g = oc // ocg if ocg > 1 else oc
            ic = g * cg + icg if cg > 1 else g
        widx = (icg, *kv, oc) if packed else (oc, icg, *kv)
    term = _load(x, (n, ic, *pos), ad) * _load(w, widx, ad)
    init = _load(bias, (out_c,), ad) if bias is not None else const(0, ad)
    idx = (n, out_c, *(Var(o) for o in onames))
    target, value = ctx.output(0, idx, cast(Var(ACC, ad), out.dtype))
    ctx.b.define(Reduction(
        "conv", tuple(axes), ad, init, term, target.name, idx, value,
        windows=windows_of(onames, knames, x.shape[2:], out.shape[2:], ks, strides, dil, pb),
        reassociate=is_float(ad)),
        {b.name: b.shape for b in (x, w, bias, target) if b is not None})


def _conv_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType], a: Attrs) -> int:
    w = ins[1]
    assert w is not None
    return outs[0].size * int(np.prod(w.shape[1:]))


def _conv_pack(attrs: Attrs, arrays: Sequence[np.ndarray | None], present: Sequence[bool],
               ) -> tuple[Attrs, dict[int, np.ndarray]] | None:
    """Constant weights channels-last (`weight_oc_last`), so output channels are contiguous:
    dense [OC, IC, taps...] -> [IC, taps..., OC]; grouped (not depthwise) per group
    [G, IC/G, taps..., OC/G]."""
    w = arrays[1] if len(arrays) > 1 else None
    group = attrs.get_int("group", 1)
    if w is None or attrs.get_int("weight_oc_last", 0) or (group > 1 and w.shape[1] == 1):
        return None
    if group == 1:
        return attrs.set(weight_oc_last=1), {1: np.ascontiguousarray(np.moveaxis(w, 0, -1))}
    per = w.reshape(group, w.shape[0] // group, *w.shape[1:])
    return attrs.set(weight_oc_last=1), {1: np.ascontiguousarray(np.moveaxis(per, 1, -1))}


register(OpDef(
    "conv", infer=_conv_infer, reference=_conv_reference, compute=_conv_compute, macs=_conv_macs,
    pack=_conv_pack,
))


# ---------------------------------------------------------------- depthwise_flat


def flat_plane_masks(height: int, width: int, kw: int, pad_left: int) -> np.ndarray:
    """depthwise_flat's column masks: m[j, p] = 1 where output p = h * width + w reads a column
    inside the row at tap column j (0 <= w + j - pad_left < width), else 0; float32 [kw, H*W]."""
    cols = np.arange(height * width) % width
    taps = np.arange(kw)[:, None]
    inside = (cols[None, :] + taps - pad_left >= 0) & (cols[None, :] + taps - pad_left < width)
    return inside.astype(np.float32)


def _flat_geometry(w_shape: Sequence[int], attrs: Attrs) -> tuple[int, int, int, int]:
    """(row width, plane, kernel rows, kernel columns) of a depthwise_flat op."""
    return (attrs.get_int("width"), attrs.get_int("plane"), int(w_shape[2]), int(w_shape[3]))


def _depthwise_flat_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, w, m = types[0], types[1], types[2]
    bias = types[3] if len(types) > 3 else None
    assert x is not None and w is not None and m is not None
    _check_dtype("depthwise_flat", x, FLOATS)
    width, plane, kh, kw = _flat_geometry(w.shape, attrs)
    c = x.shape[1]
    if x.rank != 4 or x.shape[2] != 1 or w.shape[:2] != (c, 1) or w.dtype != x.dtype:
        raise OpError(f"depthwise_flat: input {x} and weight {w} must be [N, C, 1, L] and "
                      f"[C, 1, KH, KW] of one dtype")
    if m.shape != (kw, plane) or m.dtype != x.dtype:
        raise OpError(f"depthwise_flat: mask {m} must be [{kw}, {plane}] {x.dtype}")
    if width < 1 or plane % width or x.shape[3] < plane + (kh - 1) * width + kw - 1:
        raise OpError(f"depthwise_flat: input {x} too short for a {plane // max(width, 1)}x"
                      f"{width} plane and a {kh}x{kw} kernel")
    if bias is not None and bias.shape != (c,):
        raise OpError(f"depthwise_flat: bias shape {bias.shape} must be ({c},)")
    return [TensorType((x.shape[0], c, 1, plane), x.dtype)]


def _depthwise_flat_reference(xs: Sequence[np.ndarray | None], attrs: Attrs
                              ) -> list[np.ndarray]:
    x, w, m = xs[0], xs[1], xs[2]
    bias = xs[3] if len(xs) > 3 else None
    assert x is not None and w is not None and m is not None
    width, plane, kh, kw = _flat_geometry(w.shape, attrs)
    acc = _np_acc(x.dtype)
    out = np.zeros((x.shape[0], x.shape[1], 1, plane), acc)
    if bias is not None:
        out += bias.astype(acc).reshape(-1, 1, 1)
    for i in range(kh):
        for j in range(kw):
            off = i * width + j
            tap = np.where(m[j] != 0, x[..., off:off + plane].astype(acc), 0)
            out += tap * w[:, 0, i, j].astype(acc).reshape(-1, 1, 1)
    return [out.astype(x.dtype)]


def _depthwise_flat_compute(ctx: ComputeContext) -> None:
    """A depthwise conv over a plane stored as one zero-padded row (`flat-depthwise`, host):
    output p = h * W + w is the sum over taps (i, j) of x[p + i * W + j] * w[i, j], where the
    input row starts with the conv's top rows and left columns of zeros, so a tap above or below
    the plane reads a zero and one left or right of the row reads the neighbouring row's
    element, which the column mask m[j, p] (0 or 1, `flat_plane_masks`) drops. Every index is
    affine: the lanes run along the whole plane (KWS's 25x5: 8 vectors of 16, not 25 rows of 5)."""
    x, w, m = ctx.inputs[0], ctx.inputs[1], ctx.inputs[2]
    bias = ctx.inputs[3] if len(ctx.inputs) > 3 else None
    out = ctx.outputs[0]
    assert x is not None and w is not None and m is not None
    width, plane, kh, kw = _flat_geometry(w.shape, ctx.attrs)
    ad = acc_dtype(out.dtype)
    n, c, p, i, j = Var("n"), Var("oc"), Var("ow"), Var("kh"), Var("kw")
    axes = (Axis("n", x.shape[0]), Axis("oc", x.shape[1]), Axis("oh", 1), Axis("ow", plane),
            Axis("kh", kh, True), Axis("kw", kw, True))
    zero = const(0, "int64")
    tap = _load(x, (n, c, zero, p + i * width + j), ad)
    inside = binary("ne", m[j, p], const(0, m.dtype))
    term = select(inside, tap, const(0, ad)) * _load(w, (c, zero, i, j), ad)
    init = _load(bias, (c,), ad) if bias is not None else const(0, ad)
    idx = (n, c, Var("oh"), p)
    target, value = ctx.output(0, idx, cast(Var(ACC, ad), out.dtype))
    ctx.b.define(Reduction("depthwise_flat", axes, ad, init, term, target.name, idx, value,
                           reassociate=is_float(ad)),
                 {b.name: b.shape for b in (x, w, m, bias, target) if b is not None})


def _depthwise_flat_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType],
                         a: Attrs) -> int:
    w = ins[1]
    assert w is not None
    return outs[0].size * int(np.prod(w.shape[2:]))


register(OpDef(
    "depthwise_flat", infer=_depthwise_flat_infer, reference=_depthwise_flat_reference,
    compute=_depthwise_flat_compute, macs=_depthwise_flat_macs, static_inputs=(2,),
))


# ---------------------------------------------------------------- conv_transpose


def conv_transpose_out_size(
    size: int, k: int, s: int, pb: int, pe: int, d: int, out_pad: int
) -> int:
    return s * (size - 1) + out_pad + (k - 1) * d + 1 - pb - pe


def _convt_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, w = types[0], types[1]
    bias = types[2] if len(types) > 2 else None
    assert x is not None and w is not None
    _check_dtype("conv_transpose", x, NUMERIC_DTYPES)
    if x.rank < 3 or w.rank != x.rank:
        raise OpError(f"conv_transpose: input {x} and weight {w} must have equal rank >= 3")
    if w.dtype != x.dtype:
        raise OpError(f"conv_transpose: weight dtype {w.dtype} differs from input {x.dtype}")
    nsp = x.rank - 2
    group = attrs.get_int("group", 1)
    if group < 1 or w.shape[0] != x.shape[1] or x.shape[1] % group:
        raise OpError(f"conv_transpose: input {x}, weight {w}, group={group} are inconsistent")
    oc = w.shape[1] * group
    if bias is not None and bias.shape != (oc,):
        raise OpError(f"conv_transpose: bias shape {bias.shape} must be ({oc},)")
    strides, pb, pe, dil = spatial_attrs(attrs, nsp)
    opad = _ints(attrs, "output_padding", nsp, 0)
    out_sp = tuple(
        conv_transpose_out_size(*args)
        for args in zip(x.shape[2:], w.shape[2:], strides, pb, pe, dil, opad, strict=True)
    )
    if min(out_sp) < 1:
        raise OpError(f"conv_transpose: output spatial shape {out_sp} is empty")
    return [TensorType((x.shape[0], oc, *out_sp), x.dtype)]


def _convt_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, w = xs[0], xs[1]
    bias = xs[2] if len(xs) > 2 else None
    assert x is not None and w is not None
    dt, acc = x.dtype, _np_acc(x.dtype)
    nsp = x.ndim - 2
    strides, pb, pe, dil = spatial_attrs(attrs, nsp)
    opad = _ints(attrs, "output_padding", nsp, 0)
    group = attrs.get_int("group", 1)
    n, c = x.shape[:2]
    cg, ocg, ks = c // group, w.shape[1], w.shape[2:]
    in_sp = x.shape[2:]
    # scatter every kernel tap into the uncropped output, then crop the pads
    full = [
        s * (i - 1) + (k - 1) * d + 1 + op
        for i, k, s, d, op in zip(in_sp, ks, strides, dil, opad, strict=True)
    ]
    out = np.zeros((n, group, ocg, *full), acc)
    xg = x.astype(acc).reshape(n, group, cg, *in_sp)
    wg = w.astype(acc).reshape(group, cg, ocg, *ks)
    for kidx in np.ndindex(*ks):
        contrib = np.einsum("ngc...,gco->ngo...", xg, wg[(slice(None),) * 3 + kidx])
        out[(slice(None),) * 3 + _window_slices(kidx, dil, strides, in_sp)] += contrib
    crop = tuple(slice(b, f - e) for b, e, f in zip(pb, pe, full, strict=True))
    out = out[(slice(None),) * 3 + crop]
    out = out.reshape(n, group * ocg, *out.shape[3:])
    if bias is not None:
        out = out + bias.astype(acc).reshape(group * ocg, *[1] * nsp)
    return [out.astype(dt)]


def _convt_compute(ctx: ComputeContext) -> None:
    """Output-centric: out[o] gathers x[i] over taps with i*s + k*d - pb == o."""
    b = ctx.b
    x, w = ctx.inputs[0], ctx.inputs[1]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    out = ctx.outputs[0]
    assert x is not None and w is not None
    ad = acc_dtype(out.dtype)
    nsp = len(x.shape) - 2
    strides, pb, _, dil = spatial_attrs(ctx.attrs, nsp)
    group = int(ctx.attr("group", 1))
    cg, ocg, ks = x.shape[1] // group, w.shape[1], w.shape[2:]
    acc = b.local(ad)
    with b.loops(out.shape) as idx:
        n, oc, osp = idx[0], idx[1], idx[2:]
        b.store(acc, (), _load(bias, (oc,), ad) if bias is not None else const(0, ad))
        with b.loop(cg, "c") as icg:
            ic = icg if group == 1 else (oc // ocg) * cg + icg
            ocl = oc if group == 1 else oc % ocg
            with b.loops(ks, "k") as kidx:
                pos: list[Expr] = []
                conds: list[Expr] = []
                geometry = zip(osp, kidx, strides, dil, pb, x.shape[2:], strict=True)
                for o, k, s, d, p, size in geometry:
                    num = _add(o - _mul(k, d), p)  # == i * s for a contributing tap
                    conds += [num.ge(0), num.lt(size * s)]
                    if s > 1:
                        conds.append((num % s).eq(0))
                    pos.append(num if s == 1 else num // s)
                prod = _load(x, (n, ic, *pos), ad) * _load(w, (ic, ocl, *kidx), ad)
                b.store(acc, (), acc[()] + select(_and(conds), prod, 0))  # type: ignore[arg-type]
        ctx.store(0, idx, cast(acc[()], out.dtype))


def _convt_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType], a: Attrs) -> int:
    x, w = ins[0], ins[1]
    assert x is not None and w is not None
    return x.size * int(np.prod(w.shape[1:]))


register(OpDef(
    "conv_transpose", infer=_convt_infer, reference=_convt_reference, compute=_convt_compute,
    macs=_convt_macs,
))


# ---------------------------------------------------------------- gemm


def _gemm_dims(types: Sequence[TensorType | None], attrs: Attrs) -> tuple[int, int, int]:
    a, b = types[0], types[1]
    assert a is not None and b is not None
    if a.rank != 2 or b.rank != 2:
        raise OpError(f"gemm: A {a} and B {b} must be 2-D")
    m, k = a.shape[::-1] if attrs.get("trans_a", 0) else a.shape
    kb, n = b.shape[::-1] if attrs.get("trans_b", 0) else b.shape
    if k != kb:
        raise OpError(f"gemm: inner dimensions differ (A {a}, B {b}, attrs {dict(attrs)})")
    return m, k, n


def _gemm_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    a, b = types[0], types[1]
    c = types[2] if len(types) > 2 else None
    assert a is not None and b is not None
    _check_dtype("gemm", a, NUMERIC_DTYPES)
    m, _, n = _gemm_dims(types, attrs)
    for t in (b, c):
        if t is not None and t.dtype != a.dtype:
            raise OpError(f"gemm: operand dtypes differ ({a.dtype} vs {t.dtype})")
    if c is not None and broadcast_shapes(c.shape, (m, n)) != (m, n):
        raise OpError(f"gemm: C {c} does not broadcast to ({m}, {n})")
    if not is_float(a.dtype):
        for key in ("alpha", "beta"):
            v = float(attrs.get(key, 1.0))  # type: ignore[arg-type]
            if v != int(v):
                raise OpError(f"gemm: non-integral {key}={v} with integer dtype {a.dtype}")
    return [TensorType((m, n), a.dtype)]


def _gemm_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    a, b = xs[0], xs[1]
    c = xs[2] if len(xs) > 2 else None
    assert a is not None and b is not None
    dt, acc = a.dtype, _np_acc(a.dtype)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))  # type: ignore[arg-type]
    a = a.astype(acc).T if attrs.get("trans_a", 0) else a.astype(acc)
    b = b.astype(acc).T if attrs.get("trans_b", 0) else b.astype(acc)
    y = a @ b
    if alpha != 1.0:
        y = y * acc.type(alpha)
    if c is not None and beta != 0.0:
        y = y + (c.astype(acc) if beta == 1.0 else c.astype(acc) * acc.type(beta))
    return [y.astype(dt)]


def _gemm_compute(ctx: ComputeContext) -> None:
    """One declarative definition (`nnc.ir.compute`): axes m0 (rows of A), oc (columns of B)
    and the reduce axis k; alpha and beta * C applied on the way out. Float sums may be
    regrouped; the schedule picks the register tile (passes/default_schedule.py). Constant
    B arrives [K, N] (`_gemm_pack`), so output columns are contiguous."""
    a_buf, b_buf = ctx.inputs[0], ctx.inputs[1]
    c_buf = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    assert a_buf is not None and b_buf is not None
    out = ctx.outputs[0]
    ad = acc_dtype(out.dtype)
    ta, tb = bool(ctx.attr("trans_a", 0)), bool(ctx.attr("trans_b", 0))
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    k_n = a_buf.shape[0] if ta else a_buf.shape[1]
    m_n, n_n = out.shape
    m, n, k = Var("m0"), Var("oc"), Var("k")
    term = _load(a_buf, (k, m) if ta else (m, k), ad) * _load(b_buf, (n, k) if tb else (k, n), ad)
    y: Expr = Var(ACC, ad)
    if alpha != 1.0:
        y = y * alpha
    if c_buf is not None and beta != 0.0:
        cv = _load(c_buf, broadcast_index(c_buf.shape, (m, n)), ad)
        y = y + (cv if beta == 1.0 else cv * beta)
    idx = (m, n)
    target, value = ctx.output(0, idx, cast(y, out.dtype))
    axes = (Axis("m0", m_n), Axis("oc", n_n), Axis("k", k_n, True))
    ctx.b.define(Reduction("gemm", axes, ad, const(0, ad), term, target.name, idx, value,
                           reassociate=is_float(ad)),
                 {b.name: b.shape for b in (a_buf, b_buf, c_buf, target) if b is not None})


def _gemm_pack(attrs: Attrs, arrays: Sequence[np.ndarray | None], present: Sequence[bool],
               ) -> tuple[Attrs, dict[int, np.ndarray]] | None:
    """A constant transposed B stored [K, N] (trans_b cleared): output columns contiguous."""
    b = arrays[1] if len(arrays) > 1 else None
    if b is None or not attrs.get_int("trans_b", 0):
        return None
    return attrs.set(trans_b=0), {1: np.ascontiguousarray(b.T)}


def _gemm_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType], a: Attrs) -> int:
    m, k, n = _gemm_dims(ins, a)
    return m * k * n


register(OpDef(
    "gemm", infer=_gemm_infer, reference=_gemm_reference, compute=_gemm_compute, macs=_gemm_macs,
    pack=_gemm_pack,
))


# ---------------------------------------------------------------- matmul


def _matmul_shapes(a: TensorType, b: TensorType) -> tuple[tuple[int, ...], int]:
    """Output shape and reduction length of numpy matmul."""
    if a.rank == 0 or b.rank == 0:
        raise OpError(f"matmul: operands must not be scalars ({a}, {b})")
    ka = a.shape[-1]
    kb = b.shape[0] if b.rank == 1 else b.shape[-2]
    if ka != kb:
        raise OpError(f"matmul: inner dimensions differ ({a}, {b})")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m = a.shape[-2:-1] if a.rank >= 2 else ()
    n = b.shape[-1:] if b.rank >= 2 else ()
    return (*batch, *m, *n), ka


def _matmul_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    a, b = types[0], types[1]
    assert a is not None and b is not None
    _check_dtype("matmul", a, NUMERIC_DTYPES)
    if a.dtype != b.dtype:
        raise OpError(f"matmul: operand dtypes differ ({a.dtype} vs {b.dtype})")
    return [TensorType(_matmul_shapes(a, b)[0], a.dtype)]


def _matmul_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    a, b = xs[0], xs[1]
    assert a is not None and b is not None
    acc = _np_acc(a.dtype)
    return [np.matmul(a.astype(acc), b.astype(acc)).astype(a.dtype)]


def matmul_definition(a_buf: Buffer, b_buf: Buffer, out_shape: Sequence[int], acc: str,
                      term: Any) -> tuple[tuple[Axis, ...], tuple[Expr, ...], Expr]:
    """The axes, output index and term of numpy matmul as a reduction: the batch axes b0..
    (broadcast), m0 (rows of A, when A is not 1-D), oc (columns of B, when B is not 1-D) and
    the reduce axis k; `term(a, b, oc)` maps the loads of A and B (the `acc` casts applied) and
    oc (None with a 1-D B) to the product. Shared by matmul, matmul_integer and qlinear_matmul;
    the names match gemm's, so the default schedules treat them alike."""
    ra, rb = len(a_buf.shape), len(b_buf.shape)
    nbatch = len(out_shape) - (ra >= 2) - (rb >= 2)
    batch = tuple(Var(f"b{i}") for i in range(nbatch))
    m = Var("m0") if ra >= 2 else None
    oc = Var("oc") if rb >= 2 else None
    k = Var("k")
    a_idx = (*broadcast_index(a_buf.shape[:-2], batch), m, k) if m is not None else (k,)
    b_idx = (*broadcast_index(b_buf.shape[:-2], batch), k, oc) if oc is not None else (k,)
    spatial = (*batch, *(v for v in (m, oc) if v is not None))
    axes = (*(Axis(v.name, e) for v, e in zip(spatial, out_shape, strict=True)),
            Axis("k", a_buf.shape[-1], True))
    return axes, spatial, term(_load(a_buf, a_idx, acc), _load(b_buf, b_idx, acc), oc)


def _matmul_compute(ctx: ComputeContext) -> None:
    """As gemm, one declarative definition (`matmul_definition`); the schedule picks the
    register tile (passes/default_schedule.py)."""
    a_buf, b_buf = ctx.inputs[0], ctx.inputs[1]
    assert a_buf is not None and b_buf is not None
    out = ctx.outputs[0]
    ad = acc_dtype(out.dtype)
    axes, idx, term = matmul_definition(a_buf, b_buf, out.shape, ad,
                                        lambda a, b, oc: a * b)
    target, value = ctx.output(0, idx, cast(Var(ACC, ad), out.dtype))
    ctx.b.define(Reduction("matmul", axes, ad, const(0, ad), term, target.name, idx, value,
                           reassociate=is_float(ad)),
                 {b.name: b.shape for b in (a_buf, b_buf, target)})


def _matmul_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType], a: Attrs) -> int:
    x, y = ins[0], ins[1]
    assert x is not None and y is not None
    return outs[0].size * _matmul_shapes(x, y)[1]


register(OpDef(
    "matmul", infer=_matmul_infer, reference=_matmul_reference, compute=_matmul_compute,
    macs=_matmul_macs,
))


# ---------------------------------------------------------------- max_pool / average_pool


def _pool_geometry(
    x_shape: Sequence[int], attrs: Attrs
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...],
           tuple[int, ...]]:
    """(kernel, strides, pads_begin, pads_end, dilations, out_spatial)."""
    nsp = len(x_shape) - 2
    if "kernel_shape" not in attrs:
        raise OpError("pool: kernel_shape attribute is required")
    ks = _ints(attrs, "kernel_shape", nsp, 1)
    strides, pb, pe, dil = spatial_attrs(attrs, nsp)
    ceil = bool(attrs.get("ceil_mode", 0))
    if any(p >= k or q >= k for k, p, q in zip(ks, pb, pe, strict=True)):
        raise OpError(f"pool: pads {pb + pe} must be smaller than kernel {ks}")
    geometry = zip(x_shape[2:], ks, strides, pb, pe, dil, strict=True)
    out_sp = tuple(window_out_size(n, k, s, b, e, d, ceil=ceil) for n, k, s, b, e, d in geometry)
    return ks, strides, pb, pe, dil, out_sp


def _pool_infer_for(kind: str, allowed: frozenset[str]) -> Any:
    def infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
        x = types[0]
        assert x is not None
        _check_dtype(kind, x, allowed)
        if x.rank < 3:
            raise OpError(f"{kind}: input {x} must have rank >= 3 (N, C, spatial...)")
        out_sp = _pool_geometry(x.shape, attrs)[5]
        out = TensorType((*x.shape[:2], *out_sp), x.dtype)
        if kind == "max_pool" and attrs.get("with_indices", False):
            if attrs.get_int("storage_order", 0) not in (0, 1):
                raise OpError(f"max_pool: storage_order {attrs['storage_order']} is not 0 or 1")
            return [out, TensorType(out.shape, "int64")]
        return [out]

    return infer


def _pool_windows(x: np.ndarray, attrs: Attrs, fill: float | int) -> tuple[list[np.ndarray], Any]:
    """Every kernel tap as a strided view over the padded input (padding = fill)."""
    ks, strides, pb, pe, dil, out_sp = _pool_geometry(x.shape, attrs)
    # extra end padding so ceil-mode windows that run past the end pad stay in range
    need = [
        (o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_sp, strides, ks, dil, strict=True)
    ]
    ends = [max(e, n - p - i) for e, n, p, i in zip(pe, need, pb, x.shape[2:], strict=True)]
    xp = np.pad(x, [(0, 0), (0, 0), *zip(pb, ends, strict=True)], constant_values=fill)
    taps = [
        xp[(slice(None),) * 2 + _window_slices(kidx, dil, strides, out_sp)]
        for kidx in np.ndindex(*ks)
    ]
    return taps, (ks, strides, pb, pe, dil, out_sp, ends)


def _flat_indices(shape: Sequence[int], storage_order: int) -> np.ndarray:
    """The Indices output's number for every input element: (n*C + c) * spatial size plus the
    row-major (storage_order 0) or column-major (1) spatial offset."""
    sp = tuple(shape[2:])
    size = int(np.prod(sp))
    numbers = np.arange(size, dtype=np.int64)
    spatial = numbers.reshape(sp) if storage_order == 0 else numbers.reshape(sp[::-1]).T
    nc = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape[0], shape[1], *[1] * len(sp))
    return nc * size + spatial


def _max_pool_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    lowest = _min_value(str(x.dtype))
    taps, _ = _pool_windows(x, attrs, lowest)
    if not attrs.get("with_indices", False):
        return [np.maximum.reduce(taps)]
    flat = _flat_indices(x.shape, attrs.get_int("storage_order", 0))
    index_taps, _ = _pool_windows(flat, attrs, -1)
    best = np.full(taps[0].shape, lowest, x.dtype)
    where = np.full(taps[0].shape, -1, np.int64)
    for v, i in zip(taps, index_taps, strict=True):  # strictly greater: the first max wins
        better = v > best
        best = np.where(better, v, best)
        where = np.where(better, i, where)
    return [best, where]


def _avg_pool_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    acc = _np_acc(x.dtype)
    taps, (ks, strides, pb, pe, dil, out_sp, ends) = _pool_windows(x.astype(acc), attrs, 0)
    total = np.add.reduce(taps)
    # count the taps inside the input, or inside input+pads with count_include_pad
    nc = [(0, 0), (0, 0)]
    if attrs.get("count_include_pad", 0):
        padded = tuple(i + p + q for i, p, q in zip(x.shape[2:], pb, pe, strict=True))
        mask = np.pad(np.ones((1, 1, *padded), acc),
                      nc + [(0, e - q) for q, e in zip(pe, ends, strict=True)])
    else:
        mask = np.pad(np.ones((1, 1, *x.shape[2:]), acc), nc + list(zip(pb, ends, strict=True)))
    counts = np.add.reduce([
        mask[(slice(None),) * 2 + _window_slices(kidx, dil, strides, out_sp)]
        for kidx in np.ndindex(*ks)
    ])
    return [(total / counts).astype(x.dtype)]


def window_counts(out_n: int, k: int, s: int, d: int, pb: int, lo: int, hi: int) -> list[int]:
    """For each output of one dim, how many of its window's taps land in [lo, hi)."""
    return [sum(1 for j in range(k) if lo <= o * s + j * d - pb < hi) for o in range(out_n)]


def count_expr(v: Expr, counts: Sequence[int], dtype: str) -> Expr:
    """counts[v] as an expression: the most common count, the others selected by value of v (a
    border's few outputs)."""
    common = max(set(counts), key=counts.count)
    e: Expr = const(common, dtype)
    for o, c in reversed(list(enumerate(counts))):
        if c != common:
            e = select(v.eq(o), const(c, dtype), e)
    return e


def _pool_compute_for(kind: str) -> Any:
    """max/average pooling as one declarative definition (`nnc.ir.compute`): axes n, c, the
    output positions, and the window taps reduced (combine max or add); the padding windows
    skip taps outside the input (the lowest value never wins a max, zero adds nothing). The
    average divides by the window's count of taps inside the input (with count_include_pad,
    inside input and pads): per dim a constant with the border outputs selected."""

    def compute(ctx: ComputeContext) -> None:
        x = ctx.inputs[0]
        assert x is not None
        out = ctx.outputs[0]
        ad = acc_dtype(out.dtype)
        ks, strides, pb, pe, dil, out_sp = _pool_geometry(x.shape, ctx.attrs)
        is_max = kind == "max_pool"
        include = bool(ctx.attr("count_include_pad", 0))
        nsp = len(ks)
        onames, knames = spatial_names(nsp)
        pos = [_add(_mul(Var(o), st) + _mul(Var(k), d), -p)
               for o, k, st, d, p in zip(onames, knames, strides, dil, pb, strict=True)]
        axes = (Axis("n", x.shape[0]), Axis("c", x.shape[1]),
                *(Axis(o, e) for o, e in zip(onames, out_sp, strict=True)),
                *(Axis(k, e, True) for k, e in zip(knames, ks, strict=True)))
        n, c = Var("n"), Var("c")
        term = _load(x, (n, c, *pos), ad)
        res: Expr = Var(ACC, ad)
        if not is_max:
            count: Expr | None = None
            fixed = 1
            for o, size, osz, k, st, d, p, q in zip(onames, x.shape[2:], out_sp, ks, strides,
                                                    dil, pb, pe, strict=True):
                lo, hi = (-p, size + q) if include else (0, size)
                counts = window_counts(osz, k, st, d, p, lo, hi)
                if len(set(counts)) == 1:
                    fixed *= counts[0]
                    continue
                e = count_expr(Var(o), counts, "int64")
                count = e if count is None else count * e
            if count is None:
                res = res / float(fixed)
            else:
                res = res / cast(count * fixed if fixed != 1 else count, ad)
        idx = (n, c, *(Var(o) for o in onames))
        target, value = ctx.output(0, idx, cast(res, out.dtype))
        init = const(_min_value(ad) if is_max else 0, ad)
        ctx.b.define(Reduction(
            kind, axes, ad, init, term, target.name, idx, value,
            combine="max" if is_max else "add",
            windows=windows_of(onames, knames, x.shape[2:], out_sp, ks, strides, dil, pb),
            reassociate=is_float(ad)),
            {b.name: b.shape for b in (x, target)})

    return compute


def _flat_index_expr(nc: Sequence[Expr], pos: Sequence[Expr], shape: Sequence[int],
                     storage_order: int) -> Expr:
    """Loop-IR form of `_flat_indices` at input position (n, c, *pos)."""
    sp = shape[2:]
    order = range(len(sp)) if storage_order == 0 else reversed(range(len(sp)))
    offset: Expr | None = None
    for d in order:  # Horner form over the spatial dims in storage order
        offset = pos[d] if offset is None else _mul(offset, sp[d]) + pos[d]
    assert offset is not None
    return _mul(_mul(nc[0], shape[1]) + nc[1], int(np.prod(sp))) + offset


def _max_pool_indices_compute(ctx: ComputeContext) -> None:
    """Max and its flat input index; padded taps never win (strict >, so the first max wins)."""
    b = ctx.b
    x = ctx.inputs[0]
    assert x is not None
    out = ctx.outputs[0]
    ad = acc_dtype(out.dtype)
    ks, strides, pb, _, dil, out_sp = _pool_geometry(x.shape, ctx.attrs)
    order = int(ctx.attr("storage_order", 0))
    lowest = _min_value(ad)
    best, where = b.local(ad, "best"), b.local("int64", "arg")
    with b.loops(out.shape) as idx:
        b.store(best, (), const(lowest, ad))
        b.store(where, (), const(-1, "int64"))
        with b.loops(ks, "k") as kidx:
            pos, cond = window_positions(idx[2:], kidx, x.shape[2:], out_sp, ks, strides, dil, pb)
            v = _load(x, (*idx[:2], *pos), ad)
            v = v if cond is None else select(cond, v, lowest)
            better = v.gt(best[()])
            b.store(where, (), select(better, _flat_index_expr(idx[:2], pos, x.shape, order),
                                      where[()]))
            b.store(best, (), select(better, v, best[()]))
        ctx.store(0, idx, cast(best[()], out.dtype))
        ctx.store(1, idx, where[()])


def _max_pool_compute(ctx: ComputeContext) -> None:
    if ctx.attr("with_indices", False):
        _max_pool_indices_compute(ctx)
    else:
        _pool_compute_for("max_pool")(ctx)


def _pool_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType], a: Attrs) -> int:
    return outs[0].size * int(np.prod(a["kernel_shape"]))  # type: ignore[arg-type]


register(OpDef(
    "max_pool", infer=_pool_infer_for("max_pool", NUMERIC_DTYPES),
    reference=_max_pool_reference, compute=_max_pool_compute, macs=_pool_macs,
))
register(OpDef(
    "average_pool", infer=_pool_infer_for("average_pool", FLOATS),
    reference=_avg_pool_reference, compute=_pool_compute_for("average_pool"), macs=_pool_macs,
))


# ---------------------------------------------------------------- global pools


def _global_infer_for(kind: str, allowed: frozenset[str]) -> Any:
    def infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
        x = types[0]
        assert x is not None
        _check_dtype(kind, x, allowed)
        if x.rank < 3:
            raise OpError(f"{kind}: input {x} must have rank >= 3 (N, C, spatial...)")
        return [TensorType((*x.shape[:2], *[1] * (x.rank - 2)), x.dtype)]

    return infer


def _global_reference_for(is_max: bool) -> Any:
    def reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        x = xs[0]
        assert x is not None
        axes = tuple(range(2, x.ndim))
        if is_max:
            return [np.max(x, axis=axes, keepdims=True)]
        return [np.mean(x.astype(_np_acc(x.dtype)), axis=axes, keepdims=True).astype(x.dtype)]

    return reference


def _global_compute_for(is_max: bool) -> Any:
    """A declarative definition: axes n, c and every spatial position reduced (max, or the sum
    divided by the plane's size)."""

    def compute(ctx: ComputeContext) -> None:
        x = ctx.inputs[0]
        assert x is not None
        out = ctx.outputs[0]
        ad = acc_dtype(out.dtype)
        sp = x.shape[2:]
        _, knames = spatial_names(len(sp))
        axes = (Axis("n", x.shape[0]), Axis("c", x.shape[1]),
                *(Axis(k, e, True) for k, e in zip(knames, sp, strict=True)))
        n, c = Var("n"), Var("c")
        term = _load(x, (n, c, *(Var(k) for k in knames)), ad)
        res: Expr = Var(ACC, ad)
        if not is_max:
            res = res / float(np.prod(sp))
        idx = (n, c, *(const(0, "int64") for _ in sp))
        target, value = ctx.output(0, idx, cast(res, out.dtype))
        kind = "global_max_pool" if is_max else "global_average_pool"
        ctx.b.define(Reduction(
            kind, axes, ad, const(_min_value(ad) if is_max else 0, ad), term, target.name, idx,
            value, combine="max" if is_max else "add", reassociate=is_float(ad)),
            {b.name: b.shape for b in (x, target)})

    return compute


def _global_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType], a: Attrs) -> int:
    x = ins[0]
    assert x is not None
    return x.size


register(OpDef(
    "global_average_pool", infer=_global_infer_for("global_average_pool", FLOATS),
    reference=_global_reference_for(False), compute=_global_compute_for(False),
    macs=_global_macs,
))
register(OpDef(
    "global_max_pool", infer=_global_infer_for("global_max_pool", NUMERIC_DTYPES),
    reference=_global_reference_for(True), compute=_global_compute_for(True), macs=_global_macs,
))


# ---------------------------------------------------------------- batch_normalization


def _bn_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    assert x is not None
    _check_dtype("batch_normalization", x, FLOATS)
    if x.rank < 2 or len(types) != 5:
        raise OpError(f"batch_normalization: needs x (rank >= 2), scale, bias, mean, var; got {x}")
    for name, t in zip(("scale", "bias", "mean", "var"), types[1:], strict=True):
        if t is None or t.shape != (x.shape[1],):
            raise OpError(f"batch_normalization: {name} {t} must have shape ({x.shape[1]},)")
    return [x]


def _channel(v: np.ndarray, rank: int, acc: np.dtype) -> np.ndarray:
    return v.astype(acc).reshape(-1, *[1] * (rank - 2))


def _bn_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, scale, bias, mean, var = xs
    assert x is not None and scale is not None and bias is not None
    assert mean is not None and var is not None
    acc, r = _np_acc(x.dtype), x.ndim
    eps = acc.type(attrs.get("epsilon", 1e-5))
    inv = _channel(scale, r, acc) / np.sqrt(_channel(var, r, acc) + eps)
    y = (x.astype(acc) - _channel(mean, r, acc)) * inv + _channel(bias, r, acc)
    return [y.astype(x.dtype)]


def _bn_compute(ctx: ComputeContext) -> None:
    """Per (n, c): fold the statistics into one scale and shift, then y = x * k + shift."""
    b = ctx.b
    x, scale, bias, mean, var = ctx.inputs
    assert x is not None and scale is not None and bias is not None
    assert mean is not None and var is not None
    out = ctx.outputs[0]
    ad = acc_dtype(out.dtype)
    eps = float(ctx.attr("epsilon", 1e-5))
    k, shift = b.local(ad, "k"), b.local(ad, "shift")
    with b.loops(x.shape[:2]) as (n, c):
        b.store(k, (), _load(scale, (c,), ad) / call("sqrt", _load(var, (c,), ad) + eps))
        b.store(shift, (), _load(bias, (c,), ad) - _load(mean, (c,), ad) * k[()])
        with b.loops(x.shape[2:]) as sp:
            y = _load(x, (n, c, *sp), ad) * k[()] + shift[()]
            ctx.store(0, (n, c, *sp), cast(y, out.dtype))


register(OpDef(
    "batch_normalization", infer=_bn_infer, reference=_bn_reference, compute=_bn_compute,
))


# ---------------------------------------------------------------- instance / layer normalization


def _norm_reference(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) over `axes`, in the accumulator dtype."""
    acc = _np_acc(x.dtype)
    xa = x.astype(acc)
    mean = xa.mean(axis=axes, keepdims=True)
    var = ((xa - mean) ** 2).mean(axis=axes, keepdims=True)
    return (xa - mean) / np.sqrt(var + acc.type(eps))


def _normalize_rows(
    ctx: ComputeContext,
    outer: tuple[int, ...],
    inner: tuple[int, ...],
    affine: Any,
) -> None:
    """Two-pass mean/variance over the `inner` (trailing) dims for each `outer` index, then
    store affine(normalized, full_index) for every element."""
    b = ctx.b
    x = ctx.inputs[0]
    assert x is not None
    out = ctx.outputs[0]
    ad = acc_dtype(out.dtype)
    eps = float(ctx.attr("epsilon", 1e-5))
    count = float(np.prod(inner))
    mean, var = b.local(ad, "mean"), b.local(ad, "var")
    with b.loops(outer) as oi:
        b.store(mean, (), const(0, ad))
        with b.loops(inner, "r") as ii:
            b.store(mean, (), mean[()] + _load(x, (*oi, *ii), ad))
        b.store(mean, (), mean[()] / count)
        b.store(var, (), const(0, ad))
        with b.loops(inner, "r") as ii:
            d = _load(x, (*oi, *ii), ad) - mean[()]
            b.store(var, (), var[()] + d * d)
        b.store(var, (), const(1, ad) / call("sqrt", var[()] / count + eps))
        with b.loops(inner, "j") as ii:
            full = (*oi, *ii)
            y = (_load(x, full, ad) - mean[()]) * var[()]
            ctx.store(0, full, cast(affine(y, full, ad), out.dtype))


def _in_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    assert x is not None
    _check_dtype("instance_normalization", x, FLOATS)
    if x.rank < 3 or len(types) != 3:
        raise OpError(f"instance_normalization: needs x (rank >= 3), scale, bias; got {x}")
    for name, t in zip(("scale", "bias"), types[1:], strict=True):
        if t is None or t.shape != (x.shape[1],):
            raise OpError(f"instance_normalization: {name} {t} must have shape ({x.shape[1]},)")
    return [x]


def _in_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, scale, bias = xs
    assert x is not None and scale is not None and bias is not None
    acc, r = _np_acc(x.dtype), x.ndim
    y = _norm_reference(x, tuple(range(2, r)), float(attrs.get("epsilon", 1e-5)))  # type: ignore[arg-type]
    return [(y * _channel(scale, r, acc) + _channel(bias, r, acc)).astype(x.dtype)]


def _in_compute(ctx: ComputeContext) -> None:
    x, scale, bias = ctx.inputs
    assert x is not None and scale is not None and bias is not None

    def affine(y: Expr, idx: tuple[Expr, ...], ad: str) -> Expr:
        return y * _load(scale, (idx[1],), ad) + _load(bias, (idx[1],), ad)

    _normalize_rows(ctx, x.shape[:2], x.shape[2:], affine)


register(OpDef(
    "instance_normalization", infer=_in_infer, reference=_in_reference, compute=_in_compute,
))


def _ln_axis(attrs: Attrs, rank: int) -> int:
    axis = int(attrs.get("axis", -1))  # type: ignore[arg-type]
    if not -rank <= axis < rank:
        raise OpError(f"layer_normalization: axis {axis} out of range for rank {rank}")
    return axis % rank


def _ln_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    assert x is not None
    _check_dtype("layer_normalization", x, FLOATS)
    _ln_axis(attrs, x.rank)
    for name, t in zip(("scale", "bias"), types[1:3], strict=False):
        if t is not None and broadcast_shapes(t.shape, x.shape) != x.shape:
            raise OpError(f"layer_normalization: {name} {t} does not broadcast to {x}")
    if len(types) < 2 or types[1] is None:
        raise OpError("layer_normalization: scale input is required")
    return [x]


def _ln_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, scale = xs[0], xs[1]
    bias = xs[2] if len(xs) > 2 else None
    assert x is not None and scale is not None
    acc = _np_acc(x.dtype)
    axis = _ln_axis(attrs, x.ndim)
    y = _norm_reference(x, tuple(range(axis, x.ndim)), float(attrs.get("epsilon", 1e-5)))  # type: ignore[arg-type]
    y = y * scale.astype(acc)
    if bias is not None:
        y = y + bias.astype(acc)
    return [y.astype(x.dtype)]


def _ln_compute(ctx: ComputeContext) -> None:
    x, scale = ctx.inputs[0], ctx.inputs[1]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    assert x is not None and scale is not None
    axis = _ln_axis(ctx.attrs, len(x.shape))

    def affine(y: Expr, idx: tuple[Expr, ...], ad: str) -> Expr:
        y = y * _load(scale, broadcast_index(scale.shape, idx), ad)
        if bias is not None:
            y = y + _load(bias, broadcast_index(bias.shape, idx), ad)
        return y

    _normalize_rows(ctx, x.shape[:axis], x.shape[axis:], affine)


register(OpDef(
    "layer_normalization", infer=_ln_infer, reference=_ln_reference, compute=_ln_compute,
))


# ---------------------------------------------------------------- lrn


def _lrn_params(attrs: Attrs) -> tuple[int, float, float, float]:
    if "size" not in attrs:
        raise OpError("lrn: size attribute is required")
    size = int(attrs["size"])  # type: ignore[arg-type]
    if size < 1:
        raise OpError(f"lrn: size {size} must be >= 1")
    alpha = float(attrs.get("alpha", 1e-4))  # type: ignore[arg-type]
    beta = float(attrs.get("beta", 0.75))  # type: ignore[arg-type]
    bias = float(attrs.get("bias", 1.0))  # type: ignore[arg-type]
    return size, alpha, beta, bias


def _lrn_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x = types[0]
    assert x is not None
    _check_dtype("lrn", x, FLOATS)
    if x.rank < 3:
        raise OpError(f"lrn: input {x} must have rank >= 3")
    _lrn_params(attrs)
    return [x]


def _lrn_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    size, alpha, beta, bias = _lrn_params(attrs)
    acc = _np_acc(x.dtype)
    xa = x.astype(acc)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.pad(xa * xa, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    c = x.shape[1]
    total = np.add.reduce([sq[:, j : j + c] for j in range(size)])
    den = (acc.type(bias) + acc.type(alpha / size) * total) ** acc.type(beta)
    return [(xa / den).astype(x.dtype)]


def _lrn_compute(ctx: ComputeContext) -> None:
    b = ctx.b
    x = ctx.inputs[0]
    assert x is not None
    out = ctx.outputs[0]
    ad = acc_dtype(out.dtype)
    size, alpha, beta, bias = _lrn_params(ctx.attrs)
    lo, c_n = (size - 1) // 2, x.shape[1]
    acc = b.local(ad)
    with b.loops(x.shape) as idx:
        b.store(acc, (), const(0, ad))
        with b.loop(size, "j") as j:
            cc = _add(idx[1] + j, -lo)
            v = _load(x, (idx[0], cc, *idx[2:]), ad)
            b.store(acc, (), acc[()] + select(logical_and(cc.ge(0), cc.lt(c_n)), v * v, 0))
        den = binary("pow", acc[()] * (alpha / size) + bias, const(beta, ad))
        ctx.store(0, idx, cast(_load(x, idx, ad) / den, out.dtype))


register(OpDef("lrn", infer=_lrn_infer, reference=_lrn_reference, compute=_lrn_compute))


# ---------------------------------------------------------------- softmax / log_softmax


def _softmax_axes(attrs: Attrs, rank: int) -> tuple[int, ...]:
    axes = attrs.get_ints("axes", (rank - 1,) if rank else ())
    norm = sorted({a % rank if rank else 0 for a in axes})
    if not all(-rank <= a < max(rank, 1) for a in axes):
        raise OpError(f"softmax: axes {axes} out of range for rank {rank}")
    return tuple(norm)


def _softmax_infer_for(kind: str) -> Any:
    def infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
        x = types[0]
        assert x is not None
        _check_dtype(kind, x, FLOATS)
        if x.rank == 0:
            raise OpError(f"{kind}: input must have rank >= 1")
        _softmax_axes(attrs, x.rank)
        return [x]

    return infer


def _softmax_reference_for(log: bool) -> Any:
    def reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        x = xs[0]
        assert x is not None
        axes = _softmax_axes(attrs, x.ndim)
        xa = x.astype(_np_acc(x.dtype))
        d = xa - xa.max(axis=axes, keepdims=True)
        s = np.exp(d).sum(axis=axes, keepdims=True)
        return [(d - np.log(s) if log else np.exp(d) / s).astype(x.dtype)]

    return reference


def _softmax_compute_for(log: bool) -> Any:
    """Per row: max, sum of exp(x - max), then exp(x - max) / sum (or x - max - log(sum))."""

    def compute(ctx: ComputeContext) -> None:
        b = ctx.b
        x = ctx.inputs[0]
        assert x is not None
        out = ctx.outputs[0]
        ad = acc_dtype(out.dtype)
        rank = len(x.shape)
        axes = _softmax_axes(ctx.attrs, rank)
        outer_dims = [d for d in range(rank) if d not in axes]
        inner = tuple(x.shape[d] for d in axes)

        def full(oi: tuple[Expr, ...], ii: tuple[Expr, ...]) -> tuple[Expr, ...]:
            pos = dict(zip(outer_dims, oi, strict=True)) | dict(zip(axes, ii, strict=True))
            return tuple(pos[d] for d in range(rank))

        mx, total = b.local(ad, "max"), b.local(ad, "sum")
        with b.loops([x.shape[d] for d in outer_dims]) as oi:
            b.store(mx, (), const(_min_value(ad), ad))
            with b.loops(inner, "r") as ii:
                b.store(mx, (), maximum(mx[()], _load(x, full(oi, ii), ad)))
            b.store(total, (), const(0, ad))
            with b.loops(inner, "r") as ii:
                b.store(total, (), total[()] + call("exp", _load(x, full(oi, ii), ad) - mx[()]))
            if log:
                b.store(total, (), mx[()] + call("log", total[()]))
            else:
                b.store(total, (), const(1, ad) / total[()])
            with b.loops(inner, "j") as ii:
                idx = full(oi, ii)
                v = _load(x, idx, ad)
                y = v - total[()] if log else call("exp", v - mx[()]) * total[()]
                ctx.store(0, idx, cast(y, out.dtype))

    return compute


for _kind, _log in (("softmax", False), ("log_softmax", True)):
    register(OpDef(
        _kind, infer=_softmax_infer_for(_kind), reference=_softmax_reference_for(_log),
        compute=_softmax_compute_for(_log),
    ))
