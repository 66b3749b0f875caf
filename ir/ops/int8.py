"""int8 ops with TFLite's int8 arithmetic (the arithmetic CMSIS-NN's s8 kernels are bit-exact with):
conv_s8, fully_connected_s8, max_pool_s8, avg_pool_s8, add_s8, mul_s8.

Canonical forms (layout NCHW; the quantization constants are attributes, the per-channel
requantization arrays are int32 constant inputs so they live in flash):
  conv_s8(x, w, multiplier, shift, bias?) {strides, pads, dilations, group, input_zero_point,
    output_zero_point, act_min, act_max}: x int8 [N, C, *sp], w int8 [OC, C / group, *k]
    (symmetric: zero point 0), bias int32 [OC]; multiplier/shift int32 [OC] (or [1]).
    y = clamp(requantize(sum((x - x_zp) * w) + bias) + y_zp, act_min, act_max).
  fully_connected_s8(x, w, multiplier, shift, bias?) {input_zero_point, weight_zero_point,
    output_zero_point, act_min, act_max}: x int8 [..., K], w int8 [OC, K] (CMSIS-NN's layout);
    one multiplier/shift (per tensor) or OC of them (per channel).
  max_pool_s8 / avg_pool_s8(x) {kernel_shape, strides, pads, ceil_mode, act_min, act_max}: over
    the taps inside the input (padding never counts); the average rounds half away from zero.
  add_s8(a, b) {a_zero_point, a_multiplier, a_shift, b_zero_point, b_multiplier, b_shift,
    left_shift (20), output_zero_point, output_multiplier, output_shift, act_min, act_max} and
  mul_s8(a, b) {a_zero_point, b_zero_point, output_zero_point, output_multiplier, output_shift,
    act_min, act_max}: TFLite's int8 Add and Mul; a and b broadcast like numpy.

Layout: conv_s8, max_pool_s8 and avg_pool_s8 take `layout="NHWC"` (the `layout-nhwc` pass sets it
on Cortex-M, where CMSIS-NN wants it): activations [N, *sp, C], conv weights [OC, *k, C / group]
(OHWI), depthwise weights (group == C > 1) [1, *k, OC] as TFLite and CMSIS-NN store them. The NHWC
loop nests accumulate over the contiguous channel dimension; the references transpose to NCHW.

`requantize` is TFLite's MultiplyByQuantizedMultiplier (x * multiplier * 2^shift / 2^31: a
saturating rounding doubling high multiply, then a rounding divide by a power of two) in the loop
IR; `np_requantize` is the same in numpy. Every op's loop nest goes through the former and every
reference through the latter. The conv loop nest is the one shared with conv_integer and
qlinear_conv (`nnc.ir.ops.quant.conv_int32_define`); a layout change (NHWC) starts there and at
`_act_at`.

>>> int(np_requantize(np.int64(1000), *quantize_multiplier(0.0123)))
12
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from nnc.ir import fixed_point
from nnc.ir.compute import ACC, Axis, Reduction, spatial_names, windows_of
from nnc.ir.fixed_point import INT32_MAX, INT32_MIN, wrap32
from nnc.ir.graph import Attrs
from nnc.ir.loops import (
    Buffer,
    Expr,
    KernelBuilder,
    Load,
    Var,
    binary,
    call,
    cast,
    const,
    maximum,
    minimum,
    select,
)
from nnc.ir.ops import (
    ComputeContext,
    InferFn,
    OpDef,
    OpError,
    broadcast_shapes,
    get_op,
    load_broadcast,
    register,
)
from nnc.ir.ops.nn import spatial_attrs, window_out_size
from nnc.ir.ops.quant import conv_int32_define
from nnc.ir.types import TensorType

INT8_MIN, INT8_MAX = -128, 127


# ---------------------------------------------------------------- fixed-point arithmetic (numpy)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.floor(abs(q) * 2**31 + 0.5)) * (1 if q > 0 else -1)  # std::round
    if abs(q_fixed) == 2**31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:  # TFLite caps the left shift
        return INT32_MAX, 30
    return q_fixed, shift


def np_requantize(x: np.ndarray | np.integer, multiplier: np.ndarray | int,
                  shift: np.ndarray | int) -> np.ndarray:
    """`nnc.ir.fixed_point.np_requantize`; a shift outside [-31, 30] is an OpError."""
    try:
        return fixed_point.np_requantize(x, multiplier, shift)
    except ValueError as e:
        raise OpError(str(e)) from None


def _np_finish(total: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int,
               attrs: Attrs) -> np.ndarray:
    out = np_requantize(total, multiplier, shift) + attrs.get_int("output_zero_point", 0)
    return np.clip(out, *_act(attrs)).astype(np.int8)


# ---------------------------------------------------------------- fixed-point arithmetic (loop IR)


def _bind(b: KernelBuilder, value: Expr, hint: str) -> Load:
    """Hold `value` in a scalar local, so expressions that use it several times stay small."""
    buf = b.local(value.dtype, hint)
    b.store(buf, (), value)
    return buf[()]


def requantize(b: KernelBuilder, x: Expr, multiplier: Expr, shift: Expr) -> Expr:
    """TFLite MultiplyByQuantizedMultiplier(x, multiplier, shift) as loop IR: the `requantize`
    intrinsic on int32 operands (`nnc.ir.fixed_point`; the C backend emits one 32-bit routine
    with a single 32x32->64 multiply). `b` is kept for callers that bind operands."""
    del b
    return call("requantize", _as_i32(x), _as_i32(multiplier), _as_i32(shift))


def _as_i32(e: Expr) -> Expr:
    return e if e.dtype == "int32" else cast(e, "int32")


def _finish(b: KernelBuilder, total: Expr, multiplier: Expr, shift: Expr, attrs: Attrs) -> Expr:
    """int8 output: clamp(requantize(total) + output zero point, act_min, act_max), in int32:
    clamping to [act_min - zp, act_max - zp] before adding zp is the same and cannot overflow."""
    zp = attrs.get_int("output_zero_point", 0)
    lo, hi = _act(attrs)
    r = minimum(maximum(requantize(b, total, multiplier, shift), lo - zp), hi - zp)
    return cast(r + zp if zp else r, "int8")


def _clamp_s8(v: Expr, lo: int, hi: int, in_int8: bool = False) -> Expr:
    """v clamped to [lo, hi] as int8; `in_int8`: v is known to lie in the int8 range already."""
    if lo > INT8_MIN or not in_int8:
        v = maximum(v, lo)
    if hi < INT8_MAX or not in_int8:
        v = minimum(v, hi)
    return cast(v, "int8")


# ---------------------------------------------------------------- attributes and type checks


def _act(attrs: Attrs) -> tuple[int, int]:
    return attrs.get_int("act_min", INT8_MIN), attrs.get_int("act_max", INT8_MAX)


def _check_attrs(kind: str, attrs: Attrs, zero_points: Sequence[str]) -> None:
    for key in zero_points:
        zp = attrs.get_int(key, 0)
        if not INT8_MIN <= zp <= INT8_MAX:
            raise OpError(f"{kind}: {key}={zp} is outside the int8 range")
    lo, hi = _act(attrs)
    if not INT8_MIN <= lo <= hi <= INT8_MAX:
        raise OpError(f"{kind}: activation range [{lo}, {hi}] must be ordered and within int8")


def _check_shift_attrs(kind: str, attrs: Attrs, prefixes: Sequence[str]) -> None:
    for p in prefixes:
        m, s = attrs.get_int(f"{p}_multiplier", 0), attrs.get_int(f"{p}_shift", 0)
        if not 0 <= m <= INT32_MAX or not -31 <= s <= 30:
            raise OpError(f"{kind}: {p}_multiplier={m} must be in [0, 2^31) and {p}_shift={s} "
                          "in [-31, 30]")


def _present(kind: str, types: Sequence[TensorType | None], required: int,
             total: int) -> list[TensorType | None]:
    ts = list(types) + [None] * (total - len(types))
    if len(ts) > total:
        raise OpError(f"{kind}: expects at most {total} inputs, got {len(types)}")
    if any(t is None for t in ts[:required]):
        raise OpError(f"{kind}: the first {required} inputs are required")
    return ts


def _int8(kind: str, t: TensorType, what: str) -> None:
    if t.dtype != "int8":
        raise OpError(f"{kind}: {what} must be int8, got {t}")


def _requant_inputs(kind: str, mult: TensorType | None, shift: TensorType | None,
                    bias: TensorType | None, oc: int) -> None:
    for t, what in ((mult, "multiplier"), (shift, "shift")):
        assert t is not None
        if t.dtype != "int32" or t.shape not in ((oc,), (1,)):
            raise OpError(f"{kind}: {what} {t} must be int32[{oc}] (per channel) or int32[1]")
    if bias is not None and (bias.dtype != "int32" or bias.shape != (oc,)):
        raise OpError(f"{kind}: bias {bias} must be int32[{oc}]")


def _channel(buf: Buffer, oc: Expr) -> Expr:
    """Element oc of a per-channel array, or its only element."""
    return buf[(0,)] if buf.size == 1 else buf[oc]


def _np_channel(v: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A per-channel array shaped to broadcast along `axis` of a rank-`rank` tensor."""
    shape = [1] * rank
    shape[axis] = -1
    return np.asarray(v, np.int64).reshape(shape)


# Tensor indexing, kept in one place so a layout change (NHWC) touches only these two.


def _act_at(buf: Buffer, n: Expr, c: Expr, spatial: Sequence[Expr]) -> Load:
    """Activation element (n, c, *spatial); NCHW."""
    return buf[(n, c, *spatial)]


# ---------------------------------------------------------------- layouts


def is_nhwc(attrs: Attrs) -> bool:
    layout = attrs.get("layout", "NCHW")
    if layout not in ("NCHW", "NHWC"):
        raise OpError(f"layout={layout!r} must be 'NCHW' or 'NHWC'")
    return layout == "NHWC"


def to_nhwc_perm(rank: int) -> tuple[int, ...]:
    """Transpose permutation NCHW -> NHWC (channels last) for a rank-`rank` tensor."""
    return (0, *range(2, rank), 1)


def to_nchw_perm(rank: int) -> tuple[int, ...]:
    """Transpose permutation NHWC -> NCHW."""
    return (0, rank - 1, *range(1, rank - 1))


def is_depthwise(group: int, channels: int) -> bool:
    return group > 1 and group == channels


def conv_weight_perm(rank: int, depthwise: bool) -> tuple[int, ...]:
    """Transpose permutation of conv weights OIHW -> NHWC form: OHWI, or [1, *k, OC] when
    depthwise (I is 1 there)."""
    return (1, *range(2, rank), 0) if depthwise else (0, *range(2, rank), 1)


def _inverse(perm: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def _shape_perm(shape: Sequence[int], perm: Sequence[int]) -> tuple[int, ...]:
    return tuple(shape[p] for p in perm)


def _nchw_attrs(attrs: Attrs) -> Attrs:
    return Attrs.of({k: attrs[k] for k in attrs if k != "layout"})


# ---------------------------------------------------------------- conv_s8


def _conv_nchw_types(x: TensorType, w: TensorType,
                     attrs: Attrs) -> tuple[TensorType, TensorType]:
    """x and w of an NHWC conv_s8 as the NCHW / OIHW types they stand for."""
    if x.rank < 3 or w.rank != x.rank:
        raise OpError(f"conv_s8: input {x} and weight {w} must have the same rank >= 3")
    dw = is_depthwise(attrs.get_int("group", 1), x.shape[-1])
    wperm = _inverse(conv_weight_perm(w.rank, dw))
    return (TensorType(_shape_perm(x.shape, to_nchw_perm(x.rank)), x.dtype),
            TensorType(_shape_perm(w.shape, wperm), w.dtype))


def _conv_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    kind = "conv_s8"
    x, w, mult, shift, bias = _present(kind, types, 4, 5)
    assert x is not None and w is not None
    _int8(kind, x, "input")
    _int8(kind, w, "weight")
    _check_attrs(kind, attrs, ("input_zero_point", "output_zero_point"))
    nhwc = is_nhwc(attrs)
    xn, wn = _conv_nchw_types(x, w, attrs) if nhwc else (x, w)
    try:
        t = get_op("conv").infer([xn.with_dtype("int32"), wn.with_dtype("int32")],
                                 _nchw_attrs(attrs))[0]
    except OpError as e:
        raise OpError(f"{kind}: {e}") from None
    _requant_inputs(kind, mult, shift, bias, wn.shape[0])
    shape = _shape_perm(t.shape, to_nhwc_perm(t.rank)) if nhwc else t.shape
    return [TensorType(shape, "int8", "NHWC" if nhwc else None)]


def _conv_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, w, mult, shift, bias = (list(xs) + [None] * 5)[:5]
    assert x is not None and w is not None and mult is not None and shift is not None
    if is_nhwc(attrs):
        dw = is_depthwise(attrs.get_int("group", 1), x.shape[-1])
        xn = x.transpose(to_nchw_perm(x.ndim))
        wn = w.transpose(_inverse(conv_weight_perm(w.ndim, dw)))
        (y,) = _conv_reference([xn, wn, mult, shift, bias], _nchw_attrs(attrs))
        return [np.ascontiguousarray(y.transpose(to_nhwc_perm(y.ndim)))]
    x64 = x.astype(np.int64) - attrs.get_int("input_zero_point", 0)  # padding is the zero point
    acc = np.asarray(get_op("conv").reference([x64, w.astype(np.int64)], attrs)[0])
    if bias is not None:
        acc = acc + _np_channel(bias, x.ndim, 1)
    rank = x.ndim
    return [_np_finish(wrap32(acc), _np_channel(mult, rank, 1), _np_channel(shift, rank, 1),
                       attrs)]


def _conv_compute(ctx: ComputeContext) -> None:
    """NHWC: its own definition; NCHW: the shared integer conv definition
    (`conv_int32_define`) with each accumulator requantized, offset and clamped on the way out."""
    x, w, mult, shift = ctx.inputs[:4]
    bias = ctx.inputs[4] if len(ctx.inputs) > 4 else None
    assert x is not None and w is not None and mult is not None and shift is not None
    x_zp = ctx.attrs.get_int("input_zero_point", 0)
    if is_nhwc(ctx.attrs):
        _conv_nhwc_compute(ctx, x, w, mult, shift, bias, x_zp)
        return

    def finish(acc: Expr, oc: Expr) -> Expr:
        return _finish(ctx.b, acc, _channel(mult, oc), _channel(shift, oc), ctx.attrs)

    conv_int32_define(ctx, "conv_s8", x, w, const(x_zp, "int32") if x_zp else None, None, bias,
                      finish)


def _bias_at(bias: Buffer | None, o: Expr) -> Expr:
    """An accumulator's start: the int32 bias of output channel o, or 0."""
    return cast(bias[o], "int32") if bias is not None else const(0, "int32")


def _centered(v: Load, zero_point: int) -> Expr:
    """An int8 element as int32, minus the zero point."""
    return cast(v, "int32") - zero_point if zero_point else cast(v, "int32")


def _conv_nhwc_compute(ctx: ComputeContext, x: Buffer, w: Buffer, mult: Buffer, shift: Buffer,
                       bias: Buffer | None, x_zp: int) -> None:
    """NHWC conv as one declarative definition (`nnc.ir.compute`): axes n, the output
    positions, oc, then the reduce axes: the taps and, unless depthwise, the input channels of
    the group. The schedule (passes/default_schedule.py) decides the loop nest."""
    out = ctx.outputs[0]
    nsp = len(x.shape) - 2
    strides, pb, _, dil = spatial_attrs(ctx.attrs, nsp)
    group = ctx.attrs.get_int("group", 1)
    c_in, oc_n = x.shape[-1], out.shape[-1]
    ks = w.shape[1:-1]
    in_sp, out_sp = x.shape[1:-1], out.shape[1:-1]
    onames, knames = spatial_names(nsp)
    n, oc = Var("n"), Var("oc")
    pos = [Var(o) * st + Var(k) * d - p if (st, d, p) != (1, 1, 0) else Var(o) + Var(k)
           for o, k, st, d, p in zip(onames, knames, strides, dil, pb, strict=True)]
    kvars = tuple(Var(k) for k in knames)
    axes = [Axis("n", x.shape[0]), *(Axis(o, e) for o, e in zip(onames, out_sp, strict=True)),
            Axis("oc", oc_n), *(Axis(k, e, True) for k, e in zip(knames, ks, strict=True))]
    if is_depthwise(group, c_in):
        per = oc_n // c_in  # channel multiplier
        ic: Expr = oc if per == 1 else oc / per
        wv = w[(0, *kvars, oc)]
    else:
        cg, ocg = c_in // group, oc_n // group
        axes.append(Axis("ic", cg, True))
        ic = Var("ic") if group == 1 else (oc / ocg) * cg + Var("ic")
        wv = w[(oc, *kvars, Var("ic"))]
    term = _centered(x[(n, *pos, ic)], x_zp) * cast(wv, "int32")
    # with the input offset folded into the bias, a tap in the padding adds back zp * sum(w)
    # over its channels (`_conv_pack`), int32 [OC * taps]
    pad_fix = ctx.inputs[5] if len(ctx.inputs) > 5 else None
    outside = None
    if pad_fix is not None:
        flat: Expr = kvars[0]
        for k, extent in zip(kvars[1:], ks[1:], strict=True):
            flat = flat * extent + k
        outside = pad_fix[oc * int(np.prod(ks)) + flat,]
    idx = (n, *(Var(o) for o in onames), oc)
    value = _finish(ctx.b, Var(ACC, "int32"), _channel(mult, oc), _channel(shift, oc), ctx.attrs)
    target, value = ctx.output(0, idx, value)
    ctx.b.define(Reduction(
        "conv_s8", tuple(axes), "int32", _bias_at(bias, oc), term, target.name, idx, value,
        windows=windows_of(onames, knames, in_sp, out_sp, ks, strides, dil, pb),
        outside=outside, operands=(("w", w.name),)), _shapes(ctx, target))


def _shapes(ctx: ComputeContext, target: Buffer) -> dict[str, tuple[int, ...]]:
    bufs = [b for b in (*ctx.inputs, target) if b is not None]
    return {b.name: b.shape for b in bufs}


def _fold_offset(attrs: Attrs, key: str, w: np.ndarray, bias: np.ndarray | None,
                 ) -> tuple[Attrs, np.ndarray] | None:
    """sum((x - zp) * w) + bias == sum(x * w) + (bias - zp * sum(w)) exactly (int32 wraps both
    ways): the input offset folded into the bias, or None when there is none or it overflows."""
    zp = attrs.get_int(key, 0)
    if not zp:
        return None
    folded = (np.zeros(w.shape[0], np.int64) if bias is None else bias.astype(np.int64)) \
        - zp * w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
    if folded.min() < INT32_MIN or folded.max() > INT32_MAX:
        return None
    return attrs.set(**{key: 0}), folded.astype(np.int32)


def _fold_weights(attrs: Attrs, arrays: Sequence[np.ndarray | None], present: Sequence[bool],
                  fold: bool) -> tuple[Attrs, dict[int, np.ndarray]] | None:
    """Shared by conv (group 1, NHWC) and fully connected: the input offset folded into the
    bias when every tap reads the input (`fold`) and the bias is known at compile time."""
    w = arrays[1]
    bias = arrays[4] if len(arrays) > 4 else None
    if w is None or not fold:
        return None
    bias_known = bias is not None or len(present) < 5 or not present[4]  # constant, or none
    folded = _fold_offset(attrs, "input_zero_point", w, bias) if bias_known else None
    if folded is None:
        return None
    attrs, b = folded
    return attrs, {4: b}


def _conv_pack(attrs: Attrs, arrays: Sequence[np.ndarray | None], present: Sequence[bool],
               ) -> tuple[Attrs, dict[int, np.ndarray]] | None:
    """Group-1 NHWC convs: the input offset folded into the bias. With padding, a tap outside
    the input then owes zp * sum over its channels of w (what (pad - zp) * w, pad = zp,
    contributes to the unfolded sum): an int32 [OC, taps] input 5."""
    w = arrays[1]
    zp = attrs.get_int("input_zero_point", 0)
    if not is_nhwc(attrs) or w is None or attrs.get_int("group", 1) != 1:
        return None
    _, pb, pe, _ = spatial_attrs(attrs, w.ndim - 2)
    padded = any(pb) or any(pe)
    # a padded conv with few input channels (a first layer) gains less from the fold than the
    # padding check's second branch costs
    found = _fold_weights(attrs, arrays, present, fold=not padded or w.shape[-1] >= 8)
    if found is None:
        return None
    new_attrs, replaced = found
    if zp and padded and 4 in replaced:
        per_tap = w.reshape(w.shape[0], -1, w.shape[-1]).astype(np.int64).sum(axis=2)
        replaced[5] = (zp * per_tap).astype(np.int32).ravel()  # |zp * 127 * C| < 2^31
    return new_attrs, replaced


def _conv_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType], a: Attrs) -> int:
    x, w = ins[0], ins[1]
    assert w is not None
    if is_nhwc(a):  # taps x input channels per group
        assert x is not None
        return outs[0].size * int(np.prod(w.shape[1:-1])) * (x.shape[-1] // a.get_int("group", 1))
    return outs[0].size * int(np.prod(w.shape[1:]))


register(OpDef(
    "conv_s8", infer=_conv_infer, reference=_conv_reference, compute=_conv_compute,
    macs=_conv_macs, static_inputs=(2, 3), pack=_conv_pack,
))


# ---------------------------------------------------------------- fully_connected_s8


def _fc_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    kind = "fully_connected_s8"
    x, w, mult, shift, bias = _present(kind, types, 4, 5)
    assert x is not None and w is not None
    _int8(kind, x, "input")
    _int8(kind, w, "weight")
    _check_attrs(kind, attrs, ("input_zero_point", "weight_zero_point", "output_zero_point"))
    if x.rank < 1 or w.rank != 2 or x.shape[-1] != w.shape[1]:
        raise OpError(f"{kind}: input {x} and weight {w} differ in depth (the weight must be "
                      f"[OC, {x.shape[-1] if x.rank else '?'}])")
    _requant_inputs(kind, mult, shift, bias, w.shape[0])
    return [TensorType((*x.shape[:-1], w.shape[0]), "int8")]


def _fc_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, w, mult, shift, bias = (list(xs) + [None] * 5)[:5]
    assert x is not None and w is not None and mult is not None and shift is not None
    x64 = x.astype(np.int64) - attrs.get_int("input_zero_point", 0)
    w64 = w.astype(np.int64) - attrs.get_int("weight_zero_point", 0)
    acc = x64 @ w64.T
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    m, s = np.asarray(mult, np.int64), np.asarray(shift, np.int64)
    return [_np_finish(wrap32(acc), m, s, attrs)]


def _fc_compute(ctx: ComputeContext) -> None:
    """Dot products over the contiguous depth as one declarative definition: axes m0.. (the
    leading dims), oc, and the reduce axis k."""
    x, w, mult, shift = ctx.inputs[:4]
    bias = ctx.inputs[4] if len(ctx.inputs) > 4 else None
    assert x is not None and w is not None and mult is not None and shift is not None
    x_zp = ctx.attrs.get_int("input_zero_point", 0)
    w_zp = ctx.attrs.get_int("weight_zero_point", 0)
    out = ctx.outputs[0]
    oc_n, depth = out.shape[-1], x.shape[-1]
    lead = tuple(Var(f"m{i}") for i in range(len(out.shape) - 1))
    oc, k = Var("oc"), Var("k")
    wv = cast(w[oc, k], "int32")
    term = _centered(x[(*lead, k)], x_zp) * (wv - w_zp if w_zp else wv)
    axes = (*(Axis(v.name, e) for v, e in zip(lead, out.shape[:-1], strict=True)),
            Axis("oc", oc_n), Axis("k", depth, True))
    idx = (*lead, oc)
    value = _finish(ctx.b, Var(ACC, "int32"), _channel(mult, oc), _channel(shift, oc), ctx.attrs)
    target, value = ctx.output(0, idx, value)
    ctx.b.define(Reduction("fully_connected_s8", axes, "int32", _bias_at(bias, oc), term,
                           target.name, idx, value, operands=(("w", w.name),)),
                 _shapes(ctx, target))


def _fc_pack(attrs: Attrs, arrays: Sequence[np.ndarray | None], present: Sequence[bool],
             ) -> tuple[Attrs, dict[int, np.ndarray]] | None:
    return _fold_weights(attrs, arrays, present,
                         fold=attrs.get_int("weight_zero_point", 0) == 0)


def _fc_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType], a: Attrs) -> int:
    w = ins[1]
    assert w is not None
    return outs[0].size * w.shape[1]


register(OpDef(
    "fully_connected_s8", infer=_fc_infer, reference=_fc_reference, compute=_fc_compute,
    macs=_fc_macs, static_inputs=(2, 3), pack=_fc_pack,
))


# ---------------------------------------------------------------- max_pool_s8 / avg_pool_s8


def _pool_geometry(kind: str, x_shape: Sequence[int], attrs: Attrs) -> tuple[
        tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(kernel, strides, pads_begin, out_spatial); every window holds a tap inside the input."""
    nsp = len(x_shape) - 2
    if "kernel_shape" not in attrs:
        raise OpError(f"{kind}: kernel_shape attribute is required")
    ks = attrs.get_ints("kernel_shape")
    strides, pb, pe, dil = spatial_attrs(attrs, nsp)
    if len(ks) != nsp or any(d != 1 for d in dil):
        raise OpError(f"{kind}: kernel_shape {ks} must have {nsp} values; dilations unsupported")
    if any(p >= k or q >= k for k, p, q in zip(ks, pb, pe, strict=True)):
        raise OpError(f"{kind}: pads {pb + pe} must be smaller than the kernel {ks}")
    ceil = bool(attrs.get("ceil_mode", 0))
    out_sp = tuple(window_out_size(n, k, s, p, q, 1, ceil)
                   for n, k, s, p, q in zip(x_shape[2:], ks, strides, pb, pe, strict=True))
    return ks, strides, pb, out_sp


def _pool_infer_for(kind: str) -> InferFn:
    def infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
        (x,) = _present(kind, types, 1, 1)
        assert x is not None
        _int8(kind, x, "input")
        if x.rank < 3:
            raise OpError(f"{kind}: input {x} must have rank >= 3 (N, C, spatial...)")
        _check_attrs(kind, attrs, ())
        if is_nhwc(attrs):
            nchw = _shape_perm(x.shape, to_nchw_perm(x.rank))
            out_sp = _pool_geometry(kind, nchw, attrs)[3]
            return [TensorType((x.shape[0], *out_sp, x.shape[-1]), "int8", "NHWC")]
        out_sp = _pool_geometry(kind, x.shape, attrs)[3]
        return [TensorType((*x.shape[:2], *out_sp), "int8")]

    return infer


def _np_taps(kind: str, x: np.ndarray, attrs: Attrs) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every kernel tap as a strided view over the input padded with 0, and where it is inside."""
    ks, strides, pb, out_sp = _pool_geometry(kind, x.shape, attrs)
    ends = [max(0, (o - 1) * s + k - p - n)
            for o, s, k, p, n in zip(out_sp, strides, ks, pb, x.shape[2:], strict=True)]
    widths = [(0, 0), (0, 0), *zip(pb, ends, strict=True)]
    xp = np.pad(x.astype(np.int64), widths)
    inside = np.pad(np.ones(x.shape[2:], bool), widths[2:])
    values, masks = [], []
    for kidx in np.ndindex(*ks):
        sl = tuple(slice(k, k + (o - 1) * s + 1, s)
                   for k, s, o in zip(kidx, strides, out_sp, strict=True))
        values.append(xp[(slice(None), slice(None), *sl)])
        masks.append(inside[sl])
    return values, masks


def _nhwc_reference(fn: Callable[[Sequence[np.ndarray | None], Attrs], list[np.ndarray]]
                    ) -> Callable[[Sequence[np.ndarray | None], Attrs], list[np.ndarray]]:
    """A pool reference that also takes layout="NHWC" (through NCHW)."""

    def reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        x = xs[0]
        assert x is not None
        if not is_nhwc(attrs):
            return fn(xs, attrs)
        (y,) = fn([x.transpose(to_nchw_perm(x.ndim))], _nchw_attrs(attrs))
        return [np.ascontiguousarray(y.transpose(to_nhwc_perm(y.ndim)))]

    return reference


def _max_pool_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    values, masks = _np_taps("max_pool_s8", x, attrs)
    best = np.maximum.reduce([np.where(m, v, INT8_MIN) for v, m in zip(values, masks,
                                                                       strict=True)])
    return [np.clip(best, *_act(attrs)).astype(np.int8)]


def _avg_pool_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    values, masks = _np_taps("avg_pool_s8", x, attrs)
    total = np.add.reduce([np.where(m, v, 0) for v, m in zip(values, masks, strict=True)])
    count = np.add.reduce([m.astype(np.int64) for m in masks])
    half = count // 2
    # C division truncates: (total +- half) / count rounds half away from zero
    avg = np.where(total > 0, (total + half) // count, -((half - total) // count))
    return [np.clip(avg, *_act(attrs)).astype(np.int8)]


def _window_count(idx: Sequence[Expr], x_shape: Sequence[int], ks: Sequence[int],
                  strides: Sequence[int], pb: Sequence[int], out_sp: Sequence[int]) -> Expr:
    """Number of taps of the window at output `idx` that are inside the input (int32)."""
    count: Expr = const(1, "int32")
    fixed = 1
    for o, n, k, s, p, on in zip(idx, x_shape, ks, strides, pb, out_sp, strict=True):
        if p == 0 and (on - 1) * s + k <= n:
            fixed *= k  # no window of this dim is clipped
            continue
        start = o * s - p if p else o * s
        inside = minimum(start + k, n) - maximum(start, 0)
        count = count * cast(inside, "int32")
    return count * fixed if fixed != 1 else count


def _pool_compute_for(is_max: bool) -> Callable[[ComputeContext], None]:
    """int8 max/average pooling (NCHW or NHWC) as one declarative definition: axes n, the
    output positions and the channels (c; before the positions in NCHW), the window taps
    reduced in int32 (combine max or add) with the padding windows skipping taps outside the
    input; the average rounds half away from zero by the count of taps inside."""

    def compute(ctx: ComputeContext) -> None:
        x = ctx.inputs[0]
        assert x is not None
        kind = "max_pool_s8" if is_max else "avg_pool_s8"
        lo, hi = _act(ctx.attrs)
        nhwc = is_nhwc(ctx.attrs)
        nchw = _shape_perm(x.shape, to_nchw_perm(len(x.shape))) if nhwc else x.shape
        ks, strides, pb, out_sp = _pool_geometry(kind, nchw, ctx.attrs)
        in_sp = nchw[2:]
        onames, knames = spatial_names(len(ks))
        pos = [Var(o) * st + Var(k) - p if (st, p) != (1, 0) else Var(o) + Var(k)
               for o, k, st, p in zip(onames, knames, strides, pb, strict=True)]
        n, c = Var("n"), Var("c")
        outs = tuple(Axis(o, e) for o, e in zip(onames, out_sp, strict=True))
        chan = Axis("c", nchw[1])
        axes = (Axis("n", nchw[0]), *((*outs, chan) if nhwc else (chan, *outs)),
                *(Axis(k, e, True) for k, e in zip(knames, ks, strict=True)))
        term = cast(x[(n, *pos, c)] if nhwc else _act_at(x, n, c, pos), "int32")
        acc = Var(ACC, "int32")
        if is_max:
            value = _clamp_s8(acc, lo, hi, in_int8=True)
        else:
            count = _window_count([Var(o) for o in onames], in_sp, ks, strides, pb, out_sp)
            half = count / 2
            avg = select(acc.gt(0), (acc + half) / count, (acc - half) / count)
            value = _clamp_s8(avg, lo, hi, in_int8=True)
        sp = tuple(Var(o) for o in onames)
        idx = (n, *sp, c) if nhwc else (n, c, *sp)
        target, value = ctx.output(0, idx, value)
        ctx.b.define(Reduction(
            kind, axes, "int32", const(INT8_MIN if is_max else 0, "int32"), term, target.name,
            idx, value, combine="max" if is_max else "add",
            windows=windows_of(onames, knames, in_sp, out_sp, ks, strides, (1,) * len(ks), pb)),
            _shapes(ctx, target))

    return compute


def _pool_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType], a: Attrs) -> int:
    return outs[0].size * int(np.prod(a.get_ints("kernel_shape")))


register(OpDef(
    "max_pool_s8", infer=_pool_infer_for("max_pool_s8"),
    reference=_nhwc_reference(_max_pool_reference), compute=_pool_compute_for(True),
    macs=_pool_macs,
))
register(OpDef(
    "avg_pool_s8", infer=_pool_infer_for("avg_pool_s8"),
    reference=_nhwc_reference(_avg_pool_reference), compute=_pool_compute_for(False),
    macs=_pool_macs,
))


# ---------------------------------------------------------------- add_s8 / mul_s8


def _binary_infer_for(kind: str, zero_points: Sequence[str],
                      shifts: Sequence[str]) -> InferFn:
    def infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
        a, bt = _present(kind, types, 2, 2)
        assert a is not None and bt is not None
        _int8(kind, a, "input A")
        _int8(kind, bt, "input B")
        _check_attrs(kind, attrs, zero_points)
        _check_shift_attrs(kind, attrs, shifts)
        left = attrs.get_int("left_shift", 20)
        if not 0 <= left <= 22:  # (x - zp) << left_shift must stay within int32
            raise OpError(f"{kind}: left_shift={left} must be in [0, 22]")
        return [TensorType(broadcast_shapes(a.shape, bt.shape), "int8")]

    return infer


def _mult(attrs: Attrs, prefix: str) -> tuple[int, int]:
    return attrs.get_int(f"{prefix}_multiplier", 0), attrs.get_int(f"{prefix}_shift", 0)


def _add_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    a, b = xs[0], xs[1]
    assert a is not None and b is not None
    left = attrs.get_int("left_shift", 20)
    sa = wrap32((a.astype(np.int64) - attrs.get_int("a_zero_point", 0)) << left)
    sb = wrap32((b.astype(np.int64) - attrs.get_int("b_zero_point", 0)) << left)
    total = wrap32(np_requantize(sa, *_mult(attrs, "a")) + np_requantize(sb, *_mult(attrs, "b")))
    return [_np_finish(total, *_mult(attrs, "output"), attrs)]


def _i32(v: int) -> Expr:
    return const(v, "int32")


def _elementwise_axes(ctx: ComputeContext) -> tuple[tuple[Axis, ...], tuple[Expr, ...]]:
    """The axes of an elementwise definition (one per output dim, `i0`, `i1`, ...) and the
    output index in them."""
    axes = tuple(Axis(f"i{d}", e) for d, e in enumerate(ctx.outputs[0].shape))
    return axes, tuple(Var(a.name) for a in axes)


def _add_compute(ctx: ComputeContext) -> None:
    """add_s8 as an elementwise definition (`nnc.ir.compute`, no reduce axis): init and term
    are the two inputs rescaled to the common scale ((x - zp) << left_shift, requantized by
    their own multiplier and shift), combined by an int32 add (wrapping like TFLite's sum),
    finished by the output requantization, offset and clamp (CMSIS-NN's
    arm_elementwise_add_s8)."""
    a, bb = ctx.inputs[0], ctx.inputs[1]
    assert a is not None and bb is not None
    attrs = ctx.attrs
    left = attrs.get_int("left_shift", 20)
    axes, idx = _elementwise_axes(ctx)

    def rescaled(buf: Buffer, p: str) -> Expr:
        v = _centered(load_broadcast(buf, idx), attrs.get_int(f"{p}_zero_point", 0))
        shifted = binary("shl", v, _i32(left)) if left else v  # |v| < 2^8, left <= 22
        m, s = _mult(attrs, p)
        return requantize(ctx.b, shifted, _i32(m), _i32(s))

    m, s = _mult(attrs, "output")
    value = _finish(ctx.b, Var(ACC, "int32"), _i32(m), _i32(s), attrs)
    target, value = ctx.output(0, idx, value)
    ctx.b.define(Reduction("add_s8", axes, "int32", rescaled(a, "a"), rescaled(bb, "b"),
                           target.name, idx, value), _shapes(ctx, target))


def _mul_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    a, b = xs[0], xs[1]
    assert a is not None and b is not None
    prod = ((a.astype(np.int64) - attrs.get_int("a_zero_point", 0))
            * (b.astype(np.int64) - attrs.get_int("b_zero_point", 0)))
    return [_np_finish(prod, *_mult(attrs, "output"), attrs)]


def _mul_compute(ctx: ComputeContext) -> None:
    """mul_s8 as an elementwise definition: the two centered inputs combined by an int32
    multiply (|va * vb| < 2^16), finished by the output requantization, offset and clamp."""
    a, bb = ctx.inputs[0], ctx.inputs[1]
    assert a is not None and bb is not None
    attrs = ctx.attrs
    axes, idx = _elementwise_axes(ctx)
    va = _centered(load_broadcast(a, idx), attrs.get_int("a_zero_point", 0))
    vb = _centered(load_broadcast(bb, idx), attrs.get_int("b_zero_point", 0))
    m, s = _mult(attrs, "output")
    value = _finish(ctx.b, Var(ACC, "int32"), _i32(m), _i32(s), attrs)
    target, value = ctx.output(0, idx, value)
    ctx.b.define(Reduction("mul_s8", axes, "int32", va, vb, target.name, idx, value,
                           combine="mul"), _shapes(ctx, target))


register(OpDef(
    "add_s8",
    infer=_binary_infer_for(
        "add_s8", ("a_zero_point", "b_zero_point", "output_zero_point"), ("a", "b", "output")),
    reference=_add_reference, compute=_add_compute,
))
register(OpDef(
    "mul_s8",
    infer=_binary_infer_for(
        "mul_s8", ("a_zero_point", "b_zero_point", "output_zero_point"), ("output",)),
    reference=_mul_reference, compute=_mul_compute,
))
