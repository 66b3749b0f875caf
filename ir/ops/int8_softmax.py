"""softmax_s8: TFLite's int8 softmax (what CMSIS-NN's `arm_softmax_s8` computes), bit for bit.

    softmax_s8(x) {axis, input_multiplier, input_left_shift, diff_min}: x int8; each row (the
      dimensions from `axis` on, flattened; default the last axis) is normalized on its own.
      The output is int8 with scale 1/256 and zero point -128 (TFLite's fixed output params).

The arithmetic is gemmlowp fixed point, as TFLite Micro's reference kernel and CMSIS-NN do it:
- per row, d = x - max(row); entries with d < diff_min output -128 and add nothing;
- d * input_multiplier * 2^input_left_shift / 2^31 is d * beta * input_scale in Q5.26
  (`softmax_s8_params`: TFLite PreprocessSoftmaxScaling with 5 integer bits, CalculateInputRadius);
- exp of it in Q0.31 (gemmlowp exp_on_negative_values), summed in Q12.19;
- the sum, normalized to [1, 2), is inverted by Newton-Raphson (one_over_one_plus_x_for_x_in_0_1);
- each output is exp * reciprocal rounded to 1/256 steps, minus 128, clamped to int8.

One deviation from the C kernels: when a row's sum of exps is >= 2^28 (512 or more entries close
to the row's maximum) the final rounding shift exceeds 31, which is undefined behaviour in TFLite
and CMSIS-NN; here (and in nnc's portable arm_softmax_s8) every such output rounds to 0, i.e. -128,
which is the exact result. Rows longer than 4095 are rejected: their sum could overflow Q12.19.

`np_softmax_s8` is the numpy reference; the loop nest builds the same steps in loop IR, with the
`requantize` intrinsic at shift 0 as gemmlowp's SaturatingRoundingDoublingHighMul.

>>> softmax_s8_params(0.1)
(1717986918, 23, -248)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nnc.ir.fixed_point import INT32_MAX, INT32_MIN
from nnc.ir.graph import Attrs
from nnc.ir.loops import (
    Const,
    Expr,
    KernelBuilder,
    Load,
    binary,
    call,
    cast,
    const,
    select,
)
from nnc.ir.ops import ComputeContext, OpDef, OpError, register
from nnc.ir.types import TensorType

INT8_MIN, INT8_MAX = -128, 127
OUTPUT_SCALE = 1.0 / 256.0  # TFLite's int8 softmax output parameters
OUTPUT_ZERO_POINT = -128
INTEGER_BITS = 5  # kScaledDiffIntegerBits: the scaled differences are Q5.26
ACCUM_BITS = 12  # kAccumulationIntegerBits: the sum of exps is Q12.19
MAX_ROW = (1 << (31 - (31 - ACCUM_BITS))) - 1  # 4095 exps of at most 1.0 fit in Q12.19

# exp(-1/8), 1/3 (Q0.31); exp(-2^k) for k = -2 .. 4 (Q0.31); 48/17, -32/17 (Q2.29)
EXP_MINUS_ONE_EIGHTH = 1895147668
ONE_THIRD = 715827883
EXP_OF_MINUS_POT = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)
C_48_OVER_17 = 1515870810
C_NEG_32_OVER_17 = -1010580540


# ---------------------------------------------------------------- parameters


def softmax_s8_params(input_scale: float, beta: float = 1.0) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, diff_min) for an int8 input of `input_scale`:
    TFLite PreprocessSoftmaxScaling (QuantizeMultiplierGreaterThanOne, left shift in [0, 31])
    and -CalculateInputRadius. Raises OpError when beta * input_scale * 2^26 < 1 (TFLite
    rejects that too)."""
    real = beta * input_scale * float(1 << (31 - INTEGER_BITS))
    if not math.isfinite(real) or real < 1.0:
        raise OpError(f"softmax_s8: input scale {input_scale!r} (beta {beta!r}) is too small: "
                      "TFLite's int8 softmax needs beta * scale >= 2^-26")
    real = min(real, float(INT32_MAX))
    q, shift = math.frexp(real)
    mult = int(math.floor(q * 2**31 + 0.5))  # std::round of a positive value
    if mult == 2**31:
        mult //= 2
        shift += 1
    radius = ((1 << INTEGER_BITS) - 1) * float(1 << (31 - INTEGER_BITS)) / float(1 << shift)
    return mult, shift, -int(math.floor(radius))


def _attrs_of(attrs: Attrs) -> tuple[int, int, int]:
    return (attrs.get_int("input_multiplier"), attrs.get_int("input_left_shift"),
            attrs.get_int("diff_min"))


def _axis(attrs: Attrs, rank: int) -> int:
    axis = attrs.get_int("axis", -1)
    if not -rank <= axis < rank:
        raise OpError(f"softmax_s8: axis {axis} out of range for rank {rank}")
    return axis % rank


def rows_of(shape: Sequence[int], attrs: Attrs) -> tuple[int, int]:
    """(number of rows, row size) of a softmax_s8 input of `shape`."""
    axis = _axis(attrs, len(shape))
    return int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64))


# ---------------------------------------------------------------- type rule


def _infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    if len(types) != 1 or types[0] is None:
        raise OpError(f"softmax_s8: expects one input, got {len(types)}")
    x = types[0]
    if x.dtype != "int8":
        raise OpError(f"softmax_s8: input must be int8, got {x}")
    if x.rank == 0:
        raise OpError("softmax_s8: input must have rank >= 1")
    for key in ("input_multiplier", "input_left_shift", "diff_min"):
        if key not in attrs:
            raise OpError(f"softmax_s8: attribute {key} is required (see softmax_s8_params)")
    mult, shift, diff_min = _attrs_of(attrs)
    if not 0 <= mult <= INT32_MAX or not 0 <= shift <= 31:
        raise OpError(f"softmax_s8: input_multiplier={mult} must be in [0, 2^31) and "
                      f"input_left_shift={shift} in [0, 31]")
    # |d| * 2^shift must fit in int32 for every counted difference d >= diff_min
    limit = ((1 << INTEGER_BITS) - 1) * (1 << (31 - INTEGER_BITS)) >> shift
    if not -limit <= diff_min <= 0:
        raise OpError(f"softmax_s8: diff_min={diff_min} must be in [{-limit}, 0] for "
                      f"input_left_shift={shift}")
    _, row = rows_of(x.shape, attrs)
    if not 1 <= row <= MAX_ROW:
        raise OpError(f"softmax_s8: a row of {row} elements is outside [1, {MAX_ROW}] (the sum "
                      "of exps is held in Q12.19)")
    return [TensorType(x.shape, "int8", x.layout)]


# ---------------------------------------------------------------- numpy reference (int64 values)


def _wrap(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.int64).astype(np.int32).astype(np.int64)


def _np_srdhm(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul."""
    a64, b64 = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a64 * b64
    v = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(v >= 0, v >> 31, -((-v) >> 31))  # C division truncates toward zero
    return np.where((a64 == INT32_MIN) & (b64 == INT32_MIN), INT32_MAX, high)


def _np_rdivpot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT (ties away from zero), exact for any exponent < 63."""
    e = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    return (x >> e) + ((x & mask) > (mask >> 1) + (x < 0))


def _np_sat_shl(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT for a positive exponent."""
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX,
                    np.where(x < -threshold, INT32_MIN, _wrap(x << exponent)))


def np_exp_on_negative_values(a: np.ndarray) -> np.ndarray:
    """exp(a) for a <= 0 in Q5.26, result in Q0.31."""
    quarter = 1 << (31 - INTEGER_BITS - 2)
    a_mod = (a & (quarter - 1)) - quarter  # in [-1/4, 0)
    x = _wrap(_np_sat_shl(a_mod, INTEGER_BITS) + (1 << 28))  # Q0.31, + 1/8
    x2 = _np_srdhm(x, x)
    x3 = _np_srdhm(x2, x)
    x4 = _np_srdhm(x2, x2)
    poly = _np_rdivpot(_wrap(_np_srdhm(_wrap(_np_rdivpot(x4, 2) + x3), ONE_THIRD) + x2), 1)
    result = _wrap(EXP_MINUS_ONE_EIGHTH + _np_srdhm(EXP_MINUS_ONE_EIGHTH, _wrap(x + poly)))
    remainder = _wrap(a_mod - a)
    for k, m in enumerate(EXP_OF_MINUS_POT):
        result = np.where(remainder & (quarter << k), _np_srdhm(result, m), result)
    return np.where(a == 0, INT32_MAX, result)


def np_one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """1 / (1 + a) for a in [0, 1) in Q0.31, result in Q0.31."""
    half_denominator = (a + INT32_MAX + 1) >> 1  # RoundingHalfSum(a, 1.0) for a >= 0
    x = _wrap(C_48_OVER_17 + _np_srdhm(half_denominator, C_NEG_32_OVER_17))
    for _ in range(3):
        one_minus = _wrap((1 << 29) - _np_srdhm(half_denominator, x))
        x = _wrap(x + _np_sat_shl(_np_srdhm(x, one_minus), 2))
    return _np_sat_shl(x, 1)


def np_softmax_s8(x: np.ndarray, mult: int, shift: int, diff_min: int) -> np.ndarray:
    """TFLite int8 softmax of `x` [rows, row_size] (int8) -> int8."""
    x64 = np.asarray(x, np.int64)
    diff = x64 - x64.max(axis=-1, keepdims=True)
    valid = diff >= diff_min
    scaled = _np_srdhm(_wrap(np.where(valid, diff, 0) << shift), mult)
    exps = np_exp_on_negative_values(scaled)
    total = np.where(valid, _np_rdivpot(exps, ACCUM_BITS), 0).sum(axis=-1, keepdims=True)
    headroom = 32 - np.vectorize(lambda v: int(v).bit_length(), otypes=[np.int64])(total)
    reciprocal = np_one_over_one_plus_x((total << headroom) - (1 << 31))
    bits_over_unit = ACCUM_BITS - headroom + 31 - 8
    out = _np_rdivpot(_np_srdhm(reciprocal, exps), bits_over_unit) + INT8_MIN
    return np.where(valid, np.clip(out, INT8_MIN, INT8_MAX), INT8_MIN).astype(np.int8)


def _reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    rows, row = rows_of(x.shape, attrs)
    y = np_softmax_s8(x.reshape(rows, row), *_attrs_of(attrs))
    return [y.reshape(x.shape)]


# ---------------------------------------------------------------- loop nest


def _i32(v: int) -> Expr:
    return const(v, "int32")


def _i64(v: int) -> Expr:
    return const(v, "int64")


class _Fixed:
    """gemmlowp fixed-point steps as loop IR; values used more than once go to scalar locals, so
    the expressions stay small and C evaluates each once."""

    def __init__(self, b: KernelBuilder) -> None:
        self.b = b

    def bind(self, value: Expr, hint: str) -> Load:
        buf = self.b.local(value.dtype, hint)
        self.b.store(buf, (), value)
        return buf[()]

    def held(self, value: Expr, hint: str) -> Expr:
        return value if isinstance(value, Load | Const) else self.bind(value, hint)

    @staticmethod
    def srdhm(a: Expr, m: Expr | int) -> Expr:
        """SaturatingRoundingDoublingHighMul: TFLite's requantize with shift 0."""
        return call("requantize", a, m if isinstance(m, Expr) else _i32(m), _i32(0))

    def rdivpot(self, x: Expr, exponent: int) -> Expr:
        """RoundingDivideByPOT by a constant exponent in [1, 31] (int32)."""
        x = self.held(x, "rd")
        mask = (1 << exponent) - 1
        threshold = select(x.lt(0), _i32((mask >> 1) + 1), _i32(mask >> 1))
        up = binary("and", x, _i32(mask)).gt(threshold)
        return binary("shr", x, _i32(exponent)) + select(up, _i32(1), _i32(0))

    def sat_shl(self, x: Expr, exponent: int) -> Expr:
        """SaturatingRoundingMultiplyByPOT for a positive exponent (int32)."""
        x = self.held(x, "sat")
        threshold = (1 << (31 - exponent)) - 1
        return select(x.gt(threshold), _i32(INT32_MAX),
                      select(x.lt(-threshold), _i32(INT32_MIN),
                             binary("shl", x, _i32(exponent))))

    def exp_on_negative_values(self, a: Load) -> Load:
        """exp(a), a <= 0 in Q5.26 -> Q0.31."""
        quarter = 1 << (31 - INTEGER_BITS - 2)
        a_mod = self.bind(binary("and", a, _i32(quarter - 1)) - quarter, "amod")
        # a_mod in [-2^24, 0): the Q5.26 -> Q0.31 rescale cannot saturate
        x = self.bind(binary("shl", a_mod, _i32(INTEGER_BITS)) + (1 << 28), "ex")
        x2 = self.bind(self.srdhm(x, x), "ex2")
        x3 = self.srdhm(x2, x)
        x4_over_4 = self.rdivpot(self.srdhm(x2, x2), 2)
        poly = self.bind(self.rdivpot(self.srdhm(x4_over_4 + x3, ONE_THIRD) + x2, 1), "poly")
        result = self.bind(
            self.srdhm(_i32(EXP_MINUS_ONE_EIGHTH), x + poly) + EXP_MINUS_ONE_EIGHTH, "exp")
        remainder = self.bind(a_mod - a, "rem")
        for k, m in enumerate(EXP_OF_MINUS_POT):
            bit = binary("and", remainder, _i32(quarter << k)).ne(0)
            self.b.store(result.buffer, (), select(bit, self.srdhm(result, m), result))
        self.b.store(result.buffer, (), select(a.eq(0), _i32(INT32_MAX), result))
        return result

    def one_over_one_plus_x(self, a: Expr) -> Load:
        """1 / (1 + a), a in [0, 1) in Q0.31 -> Q0.31."""
        # RoundingHalfSum(a, 1.0) = (a + 2^31 - 1 + 1) / 2, for a >= 0
        half_denominator = self.bind(binary("shr", a, _i32(1)) + (1 << 30), "hden")
        x = self.bind(self.srdhm(half_denominator, C_NEG_32_OVER_17) + C_48_OVER_17, "nr")
        for _ in range(3):
            one_minus = self.bind(_i32(1 << 29) - self.srdhm(half_denominator, x), "nr1m")
            self.b.store(x.buffer, (), x + self.sat_shl(self.srdhm(x, one_minus), 2))
        return self.bind(self.sat_shl(x, 1), "recip")


def _compute(ctx: ComputeContext) -> None:
    """Per row: the max; the sum of exps (Q12.19) of the entries within diff_min of it; its
    reciprocal; then each output. The exps are computed twice (as CMSIS-NN does), so the only
    memory is a few scalars."""
    b = ctx.b
    x = ctx.inputs[0]
    assert x is not None
    mult, shift, diff_min = _attrs_of(ctx.attrs)
    axis = _axis(ctx.attrs, len(x.shape))
    f = _Fixed(b)
    mx, total, res = b.local("int32", "max"), b.local("int32", "sum"), b.local("int8", "res")

    def diff_of(idx: tuple[Expr, ...]) -> Load:
        return f.bind(cast(x[idx], "int32") - mx[()], "diff")

    def exp_of(diff: Load) -> Load:
        """exp(diff * beta * scale) in Q0.31, for diff >= diff_min (no overflow)."""
        shifted = binary("shl", diff, _i32(shift)) if shift else diff
        return f.exp_on_negative_values(f.bind(f.srdhm(shifted, mult), "scaled"))

    with b.loops(x.shape[:axis]) as outer:
        b.store(mx, (), _i32(INT8_MIN))
        with b.loops(x.shape[axis:], "r") as inner:
            b.store(mx, (), binary("max", mx[()], cast(x[(*outer, *inner)], "int32")))
        b.store(total, (), _i32(0))
        with b.loops(x.shape[axis:], "r") as inner:
            diff = diff_of((*outer, *inner))
            with b.if_(diff.ge(diff_min)):
                b.store(total, (), total[()] + f.rdivpot(exp_of(diff), ACCUM_BITS))
        # normalize the sum (>= 2^19: the max contributes 1.0) to [2^31, 2^32): its headroom
        norm = f.bind(cast(total[()], "int64"), "norm")
        headroom = f.bind(_i64(0), "headroom")
        for step in (16, 8, 4, 2, 1):
            with b.if_(norm.lt(1 << (32 - step))):
                b.store(norm.buffer, (), binary("shl", norm, _i64(step)))
                b.store(headroom.buffer, (), headroom + step)
        reciprocal = f.one_over_one_plus_x(cast(norm - (1 << 31), "int32"))
        # the final shift: 23..35; past 31 every output rounds to 0 (exact in int64)
        bits = f.bind(_i64(ACCUM_BITS + 31 - 8) - headroom, "bits")
        mask = f.bind(binary("shl", _i64(1), bits) - 1, "mask")
        with b.loops(x.shape[axis:], "j") as inner:
            idx = (*outer, *inner)
            diff = diff_of(idx)
            b.store(res, (), const(INT8_MIN, "int8"))
            with b.if_(diff.ge(diff_min)):
                p = f.bind(cast(f.srdhm(reciprocal, exp_of(diff)), "int64"), "prob")  # >= 0
                up = binary("and", p, mask).gt(binary("shr", mask, _i64(1)))
                q = binary("shr", p, bits) + select(up, _i64(1), _i64(0)) + INT8_MIN
                b.store(res, (), cast(binary("min", q, _i64(INT8_MAX)), "int8"))  # q >= -128
            ctx.store(0, idx, res[()])


register(OpDef("softmax_s8", infer=_infer, reference=_reference, compute=_compute))
