"""Quantization ops: quantize_linear, dequantize_linear, conv_integer, matmul_integer,
qlinear_conv, qlinear_matmul (ONNX's QDQ and QOperator forms).

Canonical forms (the ONNX converters in nnc.compiler.onnx.quant produce them):
  quantize_linear(x, scale, zero_point?) {dtype}: scale and zero point broadcast against x (the
    converter reshapes per-axis vectors and expands blocks). y = saturate(round_half_even(
    x / scale) + zero_point); x / scale in float32 (float16 operands: the quotient is rounded to
    half first, as onnx.reference divides in half; int32 x: float64, as onnx.reference). NaN
    quantizes to the lowest code (-128 for int8, 0 for uint8), as onnxruntime and TFLite's
    reference kernel do on x86, on every target (C leaves the float->int conversion of NaN
    undefined; Arm's vcvt would give the zero point).
  dequantize_linear(x, scale, zero_point?) {dtype}: y = float32(x - zero_point) * scale, cast to
    dtype; scale and zero point broadcast against x.
  conv_integer(x, w, x_zero_point?, w_zero_point?) {strides, pads, dilations, group}: the int32
    sum of (x - x_zp) * (w - w_zp); padding contributes 0 (it holds the zero point).
  matmul_integer(a, b, a_zero_point?, b_zero_point?): int32 numpy matmul of (a - a_zp) and
    (b - b_zp); both operands of rank >= 2.
  qlinear_conv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias?) and
  qlinear_matmul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp): that int32 accumulation
    (plus the int32 bias) requantized as onnxruntime does: M = x_scale * w_scale / y_scale in
    the scales' precision, y = saturate(round_half_even(float32(acc) * M) + y_zp).
    onnx.reference adds y_zp before rounding and multiplies in float64; both differ from the
    QuantizeLinear rule (and onnxruntime) only on exact ties with an odd zero point.
The activation zero points and scales (x, y, a) hold one element; w's and b's hold one or one per
output channel (conv) or column (matmul).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nnc.ir.compute import ACC, Axis, Reduction, spatial_names, windows_of
from nnc.ir.graph import Attrs
from nnc.ir.loops import Buffer, Expr, Var, call, cast, const, maximum, minimum, select
from nnc.ir.ops import (
    ComputeContext,
    OpDef,
    OpError,
    get_op,
    register,
)
from nnc.ir.ops.nn import (
    matmul_definition,
    spatial_attrs,
)
from nnc.ir.types import TensorType

QUANT_DTYPES = frozenset({"int8", "uint8", "int16", "uint16"})
DEQUANT_DTYPES = QUANT_DTYPES | {"int32"}
INT8_DTYPES = frozenset({"int8", "uint8"})
SCALE_DTYPES = frozenset({"float32", "float16"})
QUANTIZE_INPUT_DTYPES = frozenset({"float32", "float16", "int32"})
# Finish = (int32 accumulator, output-channel index) -> the value stored
Finish = Callable[[Expr, Expr], Expr]


# ---------------------------------------------------------------- shared helpers


def qrange(dtype: str) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _args(kind: str, types: Sequence[TensorType | None], required: int,
          total: int) -> list[TensorType | None]:
    ts = list(types) + [None] * (total - len(types))
    if len(ts) > total:
        raise OpError(f"{kind}: expects at most {total} inputs, got {len(types)}")
    missing = [i for i in range(required) if ts[i] is None]
    if missing:
        raise OpError(f"{kind}: input(s) {missing} are required")
    return ts


def _dtype_in(kind: str, t: TensorType, allowed: frozenset[str], what: str) -> None:
    if t.dtype not in allowed:
        raise OpError(f"{kind}: {what} dtype {t.dtype} not supported (allowed: {sorted(allowed)})")


def _out_dtype(kind: str, attrs: Attrs, allowed: frozenset[str]) -> str:
    dt = attrs.get("dtype")
    if dt not in allowed:
        raise OpError(f"{kind}: attribute dtype={dt!r} must be one of {sorted(allowed)}")
    return str(dt)


def _broadcasts(kind: str, t: TensorType | None, into: TensorType, what: str) -> None:
    if t is None:
        return
    try:
        ok = t.rank <= into.rank and np.broadcast_shapes(t.shape, into.shape) == into.shape
    except ValueError:
        ok = False
    if not ok:
        raise OpError(f"{kind}: {what} {t} does not broadcast to the input {into}")


def _per_channel(kind: str, t: TensorType | None, n: int, what: str) -> None:
    """One element, or a 1-D tensor of n (per output channel / column)."""
    if t is not None and t.size != 1 and t.shape != (n,):
        raise OpError(f"{kind}: {what} {t} must hold one element or {n} (one per channel)")


def _single(kind: str, t: TensorType | None, what: str) -> None:
    if t is not None and t.size != 1:
        raise OpError(f"{kind}: {what} {t} must hold one element (per-tensor)")


def _zp_matches(kind: str, zp: TensorType | None, x: TensorType, what: str) -> None:
    if zp is not None and zp.dtype != x.dtype:
        raise OpError(f"{kind}: {what} dtype {zp.dtype} differs from its operand's {x.dtype}")


def _first(buf: Buffer) -> Expr:
    return buf[(0,) * len(buf.shape)]


def _at(buf: Buffer | None, i: Expr) -> Expr | None:
    """Element i of a per-channel tensor, or its only element."""
    if buf is None:
        return None
    return _first(buf) if buf.size == 1 else buf[i]


def _centered(value: Expr, zp: Expr | None) -> Expr:
    """int32(value - zero point)."""
    v = cast(value, "int32")
    return v if zp is None else v - cast(zp, "int32")


def _np_centered(x: np.ndarray, zp: np.ndarray | None, shape: tuple[int, ...] = ()) -> np.ndarray:
    x32 = x.astype(np.int32)
    if zp is None:
        return x32
    z = zp.astype(np.int32)
    return x32 - (z.reshape(()) if z.size == 1 else z.reshape(shape or z.shape))


def _multiplier(s1: Expr, s2: Expr, s3: Expr) -> Expr:
    """float32 s1 * s2 / s3; all-float16 scales round to half after each step, as numpy does."""
    if s1.dtype == s2.dtype == s3.dtype == "float16":
        prod = cast(cast(cast(s1, "float32") * cast(s2, "float32"), "float16"), "float32")
        return cast(cast(prod / cast(s3, "float32"), "float16"), "float32")
    return cast(s1, "float32") * cast(s2, "float32") / cast(s3, "float32")


def _np_multiplier(s1: np.ndarray, s2: np.ndarray, s3: np.ndarray) -> np.ndarray:
    if s1.dtype == s2.dtype == s3.dtype == np.float16:
        return ((s1 * s2) / s3).astype(np.float32)
    f = np.float32
    return (s1.astype(f) * s2.astype(f)) / s3.astype(f)


def _requant(acc: Expr, mult: Expr, zp: Expr, dtype: str) -> Expr:
    """saturate(round_half_even(float32(acc) * mult) + zp) as `dtype` (clamped before the
    int conversion, so out-of-range values saturate instead of wrapping)."""
    lo, hi = qrange(dtype)
    z = cast(zp, "int32")
    zf = cast(z, "float32")
    r = minimum(maximum(call("round", cast(acc, "float32") * mult), lo - zf), hi - zf)
    return cast(cast(r, "int32") + z, dtype)


def _np_requant(acc: np.ndarray, mult: np.ndarray, zp: np.ndarray, dtype: str) -> np.ndarray:
    lo, hi = qrange(dtype)
    z = zp.astype(np.int32).reshape(())
    zf = np.float32(z)
    r = np.clip(np.rint(acc.astype(np.float32) * mult), np.float32(lo) - zf, np.float32(hi) - zf)
    return (r.astype(np.int32) + z).astype(dtype)


# ---------------------------------------------------------------- quantize / dequantize


def _quantize_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    kind = "quantize_linear"
    x, scale, zp = _args(kind, types, 2, 3)
    assert x is not None and scale is not None
    dtype = _out_dtype(kind, attrs, QUANT_DTYPES)
    _dtype_in(kind, x, QUANTIZE_INPUT_DTYPES, "input")
    _dtype_in(kind, scale, SCALE_DTYPES, "scale")
    if zp is not None and zp.dtype != dtype:
        raise OpError(f"{kind}: zero point dtype {zp.dtype} differs from the output dtype {dtype}")
    _broadcasts(kind, scale, x, "scale")
    _broadcasts(kind, zp, x, "zero point")
    return [TensorType(x.shape, dtype, x.layout)]


def _quotient_dtype(x: str) -> str:
    return "float64" if x == "int32" else "float32"


def _quantize_scalar(args: Sequence[Expr], attrs: Attrs, dt: str) -> Expr:
    x, scale = args[0], args[1]
    zp = args[2] if len(args) > 2 else None
    wide = _quotient_dtype(x.dtype)
    q = cast(x, wide) / cast(scale, wide)
    if x.dtype == scale.dtype == "float16":
        q = cast(cast(q, "float16"), "float32")
    lo, hi = qrange(dt)
    zf = cast(zp, wide) if zp is not None else const(0, wide)
    r = minimum(maximum(call("round", q), lo - zf), hi - zf)
    r = select(call("isnan", q), lo - zf, r)  # NaN: the lowest code (module docstring)
    y = cast(r, "int32")
    return cast(y if zp is None else y + cast(zp, "int32"), dt)


def _quantize_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, scale = xs[0], xs[1]
    zp = xs[2] if len(xs) > 2 else None
    assert x is not None and scale is not None
    dt = str(attrs["dtype"])
    wide = np.dtype(_quotient_dtype(str(x.dtype)))
    with np.errstate(all="ignore"):
        if x.dtype == scale.dtype == np.float16:
            q = (x / scale).astype(np.float32)
        else:
            q = x.astype(wide) / scale.astype(wide)
        lo, hi = qrange(dt)
        zf = zp.astype(wide) if zp is not None else wide.type(0)
        r = np.where(np.isnan(q), lo - zf, np.clip(np.rint(q), lo - zf, hi - zf))
        y = r.astype(np.int32) + (zp.astype(np.int32) if zp is not None else np.int32(0))
    return [np.broadcast_to(y, x.shape).astype(dt)]


register(OpDef(
    "quantize_linear", infer=_quantize_infer, reference=_quantize_reference,
    scalar=_quantize_scalar,
))


def _dequantize_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    kind = "dequantize_linear"
    x, scale, zp = _args(kind, types, 2, 3)
    assert x is not None and scale is not None
    dtype = _out_dtype(kind, attrs, SCALE_DTYPES)
    _dtype_in(kind, x, DEQUANT_DTYPES, "input")
    _dtype_in(kind, scale, SCALE_DTYPES, "scale")
    _zp_matches(kind, zp, x, "zero point")
    _broadcasts(kind, scale, x, "scale")
    _broadcasts(kind, zp, x, "zero point")
    return [TensorType(x.shape, dtype, x.layout)]


def _dequantize_scalar(args: Sequence[Expr], attrs: Attrs, dt: str) -> Expr:
    zp = args[2] if len(args) > 2 else None
    d = cast(_centered(args[0], zp), "float32")
    return cast(d * cast(args[1], "float32"), dt)


def _dequantize_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, scale = xs[0], xs[1]
    zp = xs[2] if len(xs) > 2 else None
    assert x is not None and scale is not None
    d = x.astype(np.int32) - (zp.astype(np.int32) if zp is not None else np.int32(0))
    y = d.astype(np.float32) * scale.astype(np.float32)
    return [np.broadcast_to(y, x.shape).astype(str(attrs["dtype"]))]


register(OpDef(
    "dequantize_linear", infer=_dequantize_infer, reference=_dequantize_reference,
    scalar=_dequantize_scalar,
))


# ---------------------------------------------------------------- integer conv


def _conv_shape(kind: str, x: TensorType, w: TensorType, attrs: Attrs) -> tuple[int, ...]:
    """Output shape by conv's own type rule (the geometry is the same)."""
    _dtype_in(kind, x, INT8_DTYPES, "input")
    _dtype_in(kind, w, INT8_DTYPES, "weight")
    try:
        t = get_op("conv").infer([x.with_dtype("int32"), w.with_dtype("int32")], attrs)[0]
    except OpError as e:
        raise OpError(f"{kind}: {e}") from None
    return t.shape


def _conv_integer_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    kind = "conv_integer"
    x, w, xz, wz = _args(kind, types, 2, 4)
    assert x is not None and w is not None
    shape = _conv_shape(kind, x, w, attrs)
    _zp_matches(kind, xz, x, "x zero point")
    _zp_matches(kind, wz, w, "w zero point")
    _single(kind, xz, "x zero point")
    _per_channel(kind, wz, w.shape[0], "w zero point")
    return [TensorType(shape, "int32")]


def _np_conv_acc(x: np.ndarray, xz: np.ndarray | None, w: np.ndarray, wz: np.ndarray | None,
                 bias: np.ndarray | None, attrs: Attrs) -> np.ndarray:
    wshape = (w.shape[0],) + (1,) * (w.ndim - 1)
    args = [_np_centered(x, xz), _np_centered(w, wz, wshape)]
    if bias is not None:
        args.append(bias.astype(np.int32))
    return np.asarray(get_op("conv").reference(args, attrs)[0])


def _conv_integer_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, w, xz, wz = (list(xs) + [None] * 4)[:4]
    assert x is not None and w is not None
    return [_np_conv_acc(x, xz, w, wz, None, attrs)]


def conv_int32_define(ctx: ComputeContext, kind: str, x: Buffer, w: Buffer,
                      x_zero: Expr | None, wz: Buffer | None, bias: Buffer | None,
                      finish: Finish) -> None:
    """The integer NCHW/OIHW conv shared by conv_integer, qlinear_conv and conv_s8, as one
    declarative definition (`nnc.ir.compute`): axes n, oc, the output positions, then the
    reduce axes ic (of the group), the taps; the int32 sum of (x - x_zero) * (w - w_zp[oc])
    starts at the bias, and `finish(acc, oc)` is the stored value (requantize, clamp, ...).
    A tap in the padding is skipped: the padding is the zero point, so it would add 0."""
    out = ctx.outputs[0]
    nsp = len(x.shape) - 2
    strides, pb, _, dil = spatial_attrs(ctx.attrs, nsp)
    group = int(ctx.attr("group", 1))
    oc_n, cg = w.shape[0], w.shape[1]
    ocg = oc_n // group
    ks = w.shape[2:]
    onames, knames = spatial_names(nsp)
    n, oc = Var("n"), Var("oc")
    pos = [Var(o) * st + Var(k) * d - p if (st, d, p) != (1, 1, 0) else Var(o) + Var(k)
           for o, k, st, d, p in zip(onames, knames, strides, dil, pb, strict=True)]
    axes = [Axis("n", x.shape[0]), Axis("oc", oc_n),
            *(Axis(o, e) for o, e in zip(onames, out.shape[2:], strict=True))]
    icg: Expr = const(0, "int64")
    if cg > 1:
        axes.append(Axis("ic", cg, True))
        icg = Var("ic")
    axes += [Axis(k, e, True) for k, e in zip(knames, ks, strict=True)]
    g = oc // ocg if ocg > 1 else oc
    ic = icg if group == 1 else g * cg + icg if cg > 1 else g
    xv = _centered(x[(n, ic, *pos)], x_zero)
    term = xv * _centered(w[(oc, icg, *(Var(k) for k in knames))], _at(wz, oc))
    init = cast(bias[oc], "int32") if bias is not None else const(0, "int32")
    idx = (n, oc, *(Var(o) for o in onames))
    target, value = ctx.output(0, idx, finish(Var(ACC, "int32"), oc))
    ctx.b.define(Reduction(
        kind, tuple(axes), "int32", init, term, target.name, idx, value,
        windows=windows_of(onames, knames, x.shape[2:], out.shape[2:], ks, strides, dil, pb)),
        {b.name: b.shape for b in (x, w, wz, bias, target) if b is not None})


def _conv_integer_compute(ctx: ComputeContext) -> None:
    x, w, xz, wz = (list(ctx.inputs) + [None] * 4)[:4]
    assert x is not None and w is not None
    x_zero = None if xz is None else _first(xz)
    conv_int32_define(ctx, "conv_integer", x, w, x_zero, wz, None, lambda acc, oc: acc)


def _conv_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType], a: Attrs) -> int:
    w = ins[1]
    assert w is not None
    return outs[0].size * int(np.prod(w.shape[1:]))


register(OpDef(
    "conv_integer", infer=_conv_integer_infer, reference=_conv_integer_reference,
    compute=_conv_integer_compute, macs=_conv_macs,
))


# ---------------------------------------------------------------- qlinear conv


def _check_scales(kind: str, *scales: TensorType | None) -> None:
    for s in scales:
        assert s is not None
        _dtype_in(kind, s, SCALE_DTYPES, "scale")


def _qlinear_conv_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    kind = "qlinear_conv"
    x, xs, xz, w, ws, wz, ys, yz, bias = _args(kind, types, 8, 9)
    assert x is not None and w is not None and yz is not None
    shape = _conv_shape(kind, x, w, attrs)
    _check_scales(kind, xs, ws, ys)
    _zp_matches(kind, xz, x, "x zero point")
    _zp_matches(kind, wz, w, "w zero point")
    _dtype_in(kind, yz, INT8_DTYPES, "y zero point")
    for t, what in ((xs, "x scale"), (xz, "x zero point"), (ys, "y scale"), (yz, "y zero point")):
        _single(kind, t, what)
    _per_channel(kind, ws, w.shape[0], "w scale")
    _per_channel(kind, wz, w.shape[0], "w zero point")
    if bias is not None and (bias.dtype != "int32" or bias.shape != (w.shape[0],)):
        raise OpError(f"qlinear_conv: bias {bias} must be int32[{w.shape[0]}]")
    return [TensorType(shape, yz.dtype)]


def _qlinear_conv_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, xsc, xz, w, wsc, wz, ysc, yz, bias = (list(xs) + [None] * 9)[:9]
    assert x is not None and w is not None and xsc is not None and wsc is not None
    assert ysc is not None and yz is not None
    acc = _np_conv_acc(x, xz, w, wz, bias, attrs)
    mult = _np_multiplier(xsc.reshape(()), wsc.reshape(-1), ysc.reshape(()))
    mult = mult.reshape((1, -1) + (1,) * (x.ndim - 2))
    return [_np_requant(acc, mult, yz, str(yz.dtype))]


def _qlinear_conv_compute(ctx: ComputeContext) -> None:
    x, xs, xz, w, ws, wz, ys, yz, bias = (list(ctx.inputs) + [None] * 9)[:9]
    assert x is not None and w is not None and xs is not None and ws is not None
    assert ys is not None and yz is not None
    out_dtype = ctx.outputs[0].dtype

    def finish(acc: Expr, oc: Expr) -> Expr:
        wsv = _at(ws, oc)
        assert wsv is not None
        mult = _multiplier(_first(xs), wsv, _first(ys))
        return _requant(acc, mult, _first(yz), out_dtype)

    conv_int32_define(ctx, "qlinear_conv", x, w, None if xz is None else _first(xz), wz, bias,
                      finish)


def _qlinear_conv_macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType],
                       a: Attrs) -> int:
    w = ins[3]
    assert w is not None
    return outs[0].size * int(np.prod(w.shape[1:]))


register(OpDef(
    "qlinear_conv", infer=_qlinear_conv_infer, reference=_qlinear_conv_reference,
    compute=_qlinear_conv_compute, macs=_qlinear_conv_macs,
))


# ---------------------------------------------------------------- integer matmul


def _matmul_shape(kind: str, a: TensorType, b: TensorType) -> tuple[int, ...]:
    _dtype_in(kind, a, INT8_DTYPES, "A")
    _dtype_in(kind, b, INT8_DTYPES, "B")
    if a.rank < 2 or b.rank < 2:
        raise OpError(f"{kind}: operands must have rank >= 2, got {a} and {b}")
    try:
        t = get_op("matmul").infer([a.with_dtype("int32"), b.with_dtype("int32")], Attrs())[0]
    except OpError as e:
        raise OpError(f"{kind}: {e}") from None
    return t.shape


def _matmul_integer_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    kind = "matmul_integer"
    a, b, az, bz = _args(kind, types, 2, 4)
    assert a is not None and b is not None
    shape = _matmul_shape(kind, a, b)
    _zp_matches(kind, az, a, "A zero point")
    _zp_matches(kind, bz, b, "B zero point")
    _single(kind, az, "A zero point")
    _per_channel(kind, bz, b.shape[-1], "B zero point")
    return [TensorType(shape, "int32")]


def _np_matmul_acc(a: np.ndarray, az: np.ndarray | None, b: np.ndarray,
                   bz: np.ndarray | None) -> np.ndarray:
    return np.matmul(_np_centered(a, az), _np_centered(b, bz))


def _matmul_integer_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    a, b, az, bz = (list(xs) + [None] * 4)[:4]
    assert a is not None and b is not None
    return [_np_matmul_acc(a, az, b, bz)]


def _matmul_define(ctx: ComputeContext, kind: str, a: Buffer, bm: Buffer, az: Buffer | None,
                   bz: Buffer | None, finish: Callable[[Expr, Expr], Expr]) -> None:
    """The int32 sum of (A[..., m, k] - a_zp) * (B[..., k, n] - b_zp[n]) as a declarative
    definition (`nnc.ir.ops.nn.matmul_definition`), `finish(acc, n)` on the way out."""
    out = ctx.outputs[0]
    a_zero = None if az is None else _first(az)

    def term(av: Expr, bv: Expr, n: Expr | None) -> Expr:
        assert n is not None
        a32 = av if a_zero is None else av - cast(a_zero, "int32")
        zb = _at(bz, n)
        return a32 * (bv if zb is None else bv - cast(zb, "int32"))

    axes, idx, product = matmul_definition(a, bm, out.shape, "int32", term)
    target, value = ctx.output(0, idx, finish(Var(ACC, "int32"), Var("oc")))
    ctx.b.define(Reduction(kind, axes, "int32", const(0, "int32"), product, target.name, idx,
                           value),
                 {b.name: b.shape for b in (a, bm, az, bz, target) if b is not None})


def _matmul_integer_compute(ctx: ComputeContext) -> None:
    a, b, az, bz = (list(ctx.inputs) + [None] * 4)[:4]
    assert a is not None and b is not None
    _matmul_define(ctx, "matmul_integer", a, b, az, bz, lambda acc, n: acc)


def _matmul_macs_for(b_index: int) -> Callable[..., int]:
    def macs(ins: Sequence[TensorType | None], outs: Sequence[TensorType], a: Attrs) -> int:
        b = ins[b_index]
        assert b is not None
        return outs[0].size * b.shape[-2]

    return macs


register(OpDef(
    "matmul_integer", infer=_matmul_integer_infer, reference=_matmul_integer_reference,
    compute=_matmul_integer_compute, macs=_matmul_macs_for(1),
))


# ---------------------------------------------------------------- qlinear matmul


def _qlinear_matmul_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    kind = "qlinear_matmul"
    a, asc, az, b, bsc, bz, ys, yz = _args(kind, types, 8, 8)
    assert a is not None and b is not None and yz is not None
    shape = _matmul_shape(kind, a, b)
    _check_scales(kind, asc, bsc, ys)
    _zp_matches(kind, az, a, "A zero point")
    _zp_matches(kind, bz, b, "B zero point")
    _dtype_in(kind, yz, INT8_DTYPES, "y zero point")
    for t, what in ((asc, "A scale"), (az, "A zero point"), (ys, "y scale"), (yz, "y zero point")):
        _single(kind, t, what)
    _per_channel(kind, bsc, b.shape[-1], "B scale")
    _per_channel(kind, bz, b.shape[-1], "B zero point")
    return [TensorType(shape, yz.dtype)]


def _qlinear_matmul_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    a, asc, az, b, bsc, bz, ysc, yz = xs[:8]
    assert a is not None and b is not None and asc is not None and bsc is not None
    assert ysc is not None and yz is not None
    acc = _np_matmul_acc(a, az, b, bz)
    mult = _np_multiplier(asc.reshape(()), bsc.reshape(-1), ysc.reshape(()))
    return [_np_requant(acc, mult, yz, str(yz.dtype))]


def _qlinear_matmul_compute(ctx: ComputeContext) -> None:
    a, asc, az, b, bsc, bz, ys, yz = ctx.inputs[:8]
    assert a is not None and b is not None and asc is not None and bsc is not None
    assert ys is not None and yz is not None
    out_dtype = ctx.outputs[0].dtype

    def finish(acc: Expr, n: Expr) -> Expr:
        bsv = _at(bsc, n)
        assert bsv is not None
        mult = _multiplier(_first(asc), bsv, _first(ys))
        return _requant(acc, mult, _first(yz), out_dtype)

    _matmul_define(ctx, "qlinear_matmul", a, b, az, bz, finish)


register(OpDef(
    "qlinear_matmul", infer=_qlinear_matmul_infer, reference=_qlinear_matmul_reference,
    compute=_qlinear_matmul_compute, macs=_matmul_macs_for(3),
))
