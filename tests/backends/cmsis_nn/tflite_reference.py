"""The TFLite (Micro) int8 reference arithmetic in numpy, integer-exact.

CMSIS-NN's s8 kernels and nnc's generated int8 kernels must both match these bit for bit. Every
function works on int64 arrays holding int32 values and wraps to int32 where TFLite's C++ does.

    >>> m, s = quantize_multiplier(0.0123)
    >>> int(requantize(np.int64(1000), m, s))   # round(1000 * 0.0123)
    12

Conventions follow CMSIS-NN: tensors NHWC; conv filters [C_out, KH, KW, C_in / groups];
depthwise filters [1, KH, KW, C_in * ch_mult]; FC filters [C_out, depth]; `input_offset` is the
negated input zero point and `output_offset` the output zero point; `act` is the (min, max) clamp.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.int64]
Pair = tuple[int, int]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def wrap32(x: npt.ArrayLike) -> Array:
    """Two's-complement wrap to int32, kept as int64."""
    return np.asarray(x, dtype=np.int64).astype(np.int32).astype(np.int64)


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


def quantize_multipliers(reals: npt.ArrayLike) -> tuple[Array, Array]:
    """quantize_multiplier for each value: (multipliers, shifts)."""
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(reals)]
    return (np.array([p[0] for p in pairs], dtype=np.int64),
            np.array([p[1] for p in pairs], dtype=np.int64))


def srdhm(a: npt.ArrayLike, b: npt.ArrayLike) -> Array:
    """gemmlowp SaturatingRoundingDoublingHighMul of int32 values."""
    a64 = np.asarray(a, dtype=np.int64)
    b64 = np.asarray(b, dtype=np.int64)
    ab = a64 * b64
    v = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(v >= 0, v >> 31, -((-v) >> 31))  # C++ division truncates toward zero
    return np.where((a64 == INT32_MIN) & (b64 == INT32_MIN), INT32_MAX, high).astype(np.int64)


def rounding_divide_by_pot(x: npt.ArrayLike, exponent: npt.ArrayLike) -> Array:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent, nearest, ties away from zero."""
    x64 = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    threshold = (mask >> 1) + (x64 < 0)
    return (x64 >> e) + ((x64 & mask) > threshold)


def saturating_left_shift(x: npt.ArrayLike, exponent: int) -> Array:
    """gemmlowp SaturatingRoundingMultiplyByPOT for exponent > 0."""
    x64 = np.asarray(x, dtype=np.int64)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x64 > threshold, INT32_MAX,
                    np.where(x64 < -threshold, INT32_MIN, x64 << exponent)).astype(np.int64)


def requantize(x: npt.ArrayLike, multiplier: npt.ArrayLike, shift: npt.ArrayLike) -> Array:
    """TFLite MultiplyByQuantizedMultiplier (CMSIS-NN arm_nn_requantize); broadcasts."""
    s = np.asarray(shift, dtype=np.int64)
    left = np.maximum(s, 0)
    shifted = wrap32(np.asarray(x, dtype=np.int64) << left)
    return rounding_divide_by_pot(srdhm(shifted, multiplier), np.maximum(-s, 0))


def _finish(acc: Array, multiplier: npt.ArrayLike, shift: npt.ArrayLike, output_offset: int,
            act: Pair) -> npt.NDArray[np.int8]:
    out = requantize(acc, multiplier, shift) + output_offset
    return np.clip(out, act[0], act[1]).astype(np.int8)


def _out_size(size: int, kernel: int, stride: int, pad: int, dilation: int, pad_end: int) -> int:
    return (size + pad + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def _patches(x: Array, kh: int, kw: int, stride: Pair, pad: Pair, dilation: Pair,
             out_hw: Pair) -> Array:
    """[N, OH, OW, KH, KW, C] windows of x (NHWC) zero-padded; stride/pad/dilation are (h, w)."""
    n, h, w, c = x.shape
    oh, ow = out_hw
    need_h = (oh - 1) * stride[0] + dilation[0] * (kh - 1) + 1
    need_w = (ow - 1) * stride[1] + dilation[1] * (kw - 1) + 1
    padded = np.zeros((n, max(need_h, pad[0] + h), max(need_w, pad[1] + w), c), dtype=np.int64)
    padded[:, pad[0]:pad[0] + h, pad[1]:pad[1] + w] = x
    out = np.empty((n, oh, ow, kh, kw, c), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dilation[0], kx * dilation[1]
            out[:, :, :, ky, kx] = padded[:, y0:y0 + (oh - 1) * stride[0] + 1:stride[0],
                                          x0:x0 + (ow - 1) * stride[1] + 1:stride[1]]
    return out


def conv2d(x: npt.ArrayLike, w: npt.ArrayLike, bias: npt.ArrayLike | None, *, input_offset: int,
           output_offset: int, multiplier: npt.ArrayLike, shift: npt.ArrayLike,
           stride: Pair = (1, 1), pad: Pair = (0, 0), dilation: Pair = (1, 1),
           out_hw: Pair | None = None, act: Pair = (-128, 127)) -> npt.NDArray[np.int8]:
    """TFLite int8 per-channel Conv2D; x NHWC, w [C_out, KH, KW, C_in / groups]; pad = (top, left).

    Without out_hw the output is the size symmetric padding gives."""
    x64 = np.asarray(x, dtype=np.int64) + input_offset  # padding taps become 0
    w64 = np.asarray(w, dtype=np.int64)
    c_out, kh, kw, kc = w64.shape
    groups = x64.shape[3] // kc
    if out_hw is None:
        out_hw = (_out_size(x64.shape[1], kh, stride[0], pad[0], dilation[0], pad[0]),
                  _out_size(x64.shape[2], kw, stride[1], pad[1], dilation[1], pad[1]))
    p = _patches(x64, kh, kw, stride, pad, dilation, out_hw)
    per_group = c_out // groups
    acc = np.empty(p.shape[:3] + (c_out,), dtype=np.int64)
    for g in range(groups):
        pg = p[..., g * kc:(g + 1) * kc]
        wg = w64[g * per_group:(g + 1) * per_group]
        acc[..., g * per_group:(g + 1) * per_group] = np.einsum("nyxijc,oijc->nyxo", pg, wg)
    if bias is not None:
        acc += np.asarray(bias, dtype=np.int64)
    return _finish(wrap32(acc), multiplier, shift, output_offset, act)


def depthwise_conv2d(x: npt.ArrayLike, w: npt.ArrayLike, bias: npt.ArrayLike | None, *,
                     input_offset: int, output_offset: int, multiplier: npt.ArrayLike,
                     shift: npt.ArrayLike, ch_mult: int = 1, stride: Pair = (1, 1),
                     pad: Pair = (0, 0), dilation: Pair = (1, 1), out_hw: Pair | None = None,
                     act: Pair = (-128, 127)) -> npt.NDArray[np.int8]:
    """TFLite int8 per-channel DepthwiseConv2D; w [1, KH, KW, C_in * ch_mult]."""
    x64 = np.asarray(x, dtype=np.int64) + input_offset
    w64 = np.asarray(w, dtype=np.int64)[0]
    kh, kw, c_out = w64.shape
    if out_hw is None:
        out_hw = (_out_size(x64.shape[1], kh, stride[0], pad[0], dilation[0], pad[0]),
                  _out_size(x64.shape[2], kw, stride[1], pad[1], dilation[1], pad[1]))
    p = _patches(x64, kh, kw, stride, pad, dilation, out_hw)
    p = np.repeat(p, ch_mult, axis=-1)  # output channel ic * ch_mult + m reads input channel ic
    acc = np.einsum("nyxijc,ijc->nyxc", p, w64)
    if bias is not None:
        acc += np.asarray(bias, dtype=np.int64)
    assert acc.shape[-1] == c_out
    return _finish(wrap32(acc), multiplier, shift, output_offset, act)


def fully_connected(x: npt.ArrayLike, w: npt.ArrayLike, bias: npt.ArrayLike | None, *,
                    input_offset: int, filter_offset: int, output_offset: int,
                    multiplier: npt.ArrayLike, shift: npt.ArrayLike,
                    act: Pair = (-128, 127)) -> npt.NDArray[np.int8]:
    """TFLite int8 FullyConnected; x [N, depth], w [C_out, depth]; per-tensor or per-channel."""
    x64 = np.asarray(x, dtype=np.int64) + input_offset
    w64 = np.asarray(w, dtype=np.int64) + filter_offset
    acc = x64 @ w64.T
    if bias is not None:
        acc += np.asarray(bias, dtype=np.int64)
    return _finish(wrap32(acc), multiplier, shift, output_offset, act)


def _pool_windows(x: npt.ArrayLike, kernel: Pair, stride: Pair, pad: Pair,
                  out_hw: Pair) -> tuple[Array, npt.NDArray[np.bool_]]:
    """Windows [N, OH, OW, KH, KW, C] and the mask of taps inside the input."""
    x64 = np.asarray(x, dtype=np.int64)
    inside = np.ones(x64.shape[:3] + (1,), dtype=np.int64)
    values = _patches(x64, kernel[0], kernel[1], stride, pad, (1, 1), out_hw)
    mask = _patches(inside, kernel[0], kernel[1], stride, pad, (1, 1), out_hw) == 1
    return values, mask


def max_pool(x: npt.ArrayLike, kernel: Pair, *, stride: Pair, pad: Pair = (0, 0),
             out_hw: Pair, act: Pair = (-128, 127)) -> npt.NDArray[np.int8]:
    """TFLite int8 MaxPool2D over the taps inside the input."""
    values, mask = _pool_windows(x, kernel, stride, pad, out_hw)
    values = np.where(mask, values, -128)
    out = values.max(axis=(3, 4))
    return np.clip(out, act[0], act[1]).astype(np.int8)


def avg_pool(x: npt.ArrayLike, kernel: Pair, *, stride: Pair, pad: Pair = (0, 0),
             out_hw: Pair, act: Pair = (-128, 127)) -> npt.NDArray[np.int8]:
    """TFLite int8 AveragePool2D: mean of the taps inside the input, ties away from zero."""
    values, mask = _pool_windows(x, kernel, stride, pad, out_hw)
    total = np.where(mask, values, 0).sum(axis=(3, 4))
    count = mask.sum(axis=(3, 4)).astype(np.int64)
    half = count // 2
    avg = np.where(total > 0, (total + half) // count, -((-(total - half)) // count))
    return np.clip(avg, act[0], act[1]).astype(np.int8)


def add_params(scale_1: float, scale_2: float, scale_out: float,
               left_shift: int = 20) -> dict[str, int]:
    """TFLite int8 Add's multipliers for CMSIS-NN arm_elementwise_add_s8 (left_shift 20)."""
    twice_max = 2 * max(scale_1, scale_2)
    m1, s1 = quantize_multiplier(scale_1 / twice_max)
    m2, s2 = quantize_multiplier(scale_2 / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << left_shift) * scale_out))
    return dict(input_1_mult=m1, input_1_shift=s1, input_2_mult=m2, input_2_shift=s2,
                left_shift=left_shift, out_mult=mo, out_shift=so)


def add(a: npt.ArrayLike, b: npt.ArrayLike, *, input_1_offset: int, input_1_mult: int,
        input_1_shift: int, input_2_offset: int, input_2_mult: int, input_2_shift: int,
        left_shift: int, out_offset: int, out_mult: int, out_shift: int,
        act: Pair = (-128, 127)) -> npt.NDArray[np.int8]:
    """TFLite int8 Add (same shapes)."""
    a64 = wrap32((np.asarray(a, dtype=np.int64) + input_1_offset) << left_shift)
    b64 = wrap32((np.asarray(b, dtype=np.int64) + input_2_offset) << left_shift)
    total = wrap32(requantize(a64, input_1_mult, input_1_shift)
                   + requantize(b64, input_2_mult, input_2_shift))
    return _finish(total, out_mult, out_shift, out_offset, act)


def mul(a: npt.ArrayLike, b: npt.ArrayLike, *, input_1_offset: int, input_2_offset: int,
        out_offset: int, out_mult: int, out_shift: int,
        act: Pair = (-128, 127)) -> npt.NDArray[np.int8]:
    """TFLite int8 Mul (same shapes)."""
    prod = ((np.asarray(a, dtype=np.int64) + input_1_offset)
            * (np.asarray(b, dtype=np.int64) + input_2_offset))
    return _finish(wrap32(prod), out_mult, out_shift, out_offset, act)


# ---- softmax: gemmlowp fixed point, as TFLite's int8 reference softmax --------------------------

SOFTMAX_INPUT_INTEGER_BITS = 5  # (x - max) * beta is held in Q5.26
SOFTMAX_ACCUM_BITS = 12  # the sum of exps in Q12.19


def softmax_params(beta: float, input_scale: float) -> tuple[int, int, int]:
    """TFLite PreprocessSoftmaxScaling + CalculateInputRadius: (mult, shift, diff_min)."""
    real = min(beta * input_scale * (1 << (31 - SOFTMAX_INPUT_INTEGER_BITS)), 2.0**31 - 1.0)
    mult, shift = quantize_multiplier(real)  # real >= 1 for int8 inputs: shift >= 0
    assert shift >= 0, "softmax needs beta * input_scale * 2^26 >= 1"
    max_rescaled = (((1 << SOFTMAX_INPUT_INTEGER_BITS) - 1)
                    * 2.0 ** (31 - SOFTMAX_INPUT_INTEGER_BITS) / 2.0**shift)
    return mult, shift, -int(math.floor(max_rescaled))


def _exp_on_interval_minus_quarter_to_zero(a: Array) -> Array:
    constant_term = 1895147668  # exp(-1/8) in Q0.31
    one_third = 715827883
    x = wrap32(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(wrap32(srdhm(wrap32(x4_over_4 + x3), one_third) + x2), 1)
    return wrap32(constant_term + srdhm(constant_term, wrap32(x + poly)))


def exp_on_negative_values(a: npt.ArrayLike) -> Array:
    """gemmlowp exp_on_negative_values: a <= 0 in Q5.26 -> exp(a) in Q0.31."""
    a64 = np.asarray(a, dtype=np.int64)
    frac_bits = 31 - SOFTMAX_INPUT_INTEGER_BITS
    one_quarter = 1 << (frac_bits - 2)
    a_mod = wrap32((a64 & (one_quarter - 1)) - one_quarter)
    result = _exp_on_interval_minus_quarter_to_zero(
        saturating_left_shift(a_mod, SOFTMAX_INPUT_INTEGER_BITS))
    remainder = wrap32(a_mod - a64)
    multipliers = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)
    for k, m in zip(range(-2, 5), multipliers, strict=True):
        bit = (remainder >> (frac_bits + k)) & 1
        result = np.where(bit == 1, srdhm(result, m), result)
    return np.where(a64 == 0, INT32_MAX, result).astype(np.int64)


def one_over_one_plus_x(a: npt.ArrayLike) -> Array:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1, Q0.31 in and out."""
    s = np.asarray(a, dtype=np.int64) + INT32_MAX
    half_denominator = np.where(s >= 0, (s + 1) // 2, -((-(s - 1)) // 2))  # (s + sign) / 2
    one_q2 = 1 << 29
    x = wrap32(1515870810 + srdhm(half_denominator, -1010580540))
    for _ in range(3):
        one_minus = wrap32(one_q2 - srdhm(half_denominator, x))
        x = wrap32(x + saturating_left_shift(srdhm(x, one_minus), 2))
    return saturating_left_shift(x, 1)


def softmax(x: npt.ArrayLike, *, mult: int, shift: int, diff_min: int) -> npt.NDArray[np.int8]:
    """TFLite int8 Softmax over the last axis; output scale 1/256, zero point -128."""
    x64 = np.asarray(x, dtype=np.int64)
    diff = x64 - x64.max(axis=-1, keepdims=True)
    valid = diff >= diff_min
    exps = exp_on_negative_values(np.where(valid, srdhm(wrap32(diff << shift), mult), 0))
    total = np.where(valid, rounding_divide_by_pot(exps, SOFTMAX_ACCUM_BITS), 0).sum(
        axis=-1, keepdims=True)
    headroom = np.array([32 - int(v).bit_length() for v in total.ravel()],
                        dtype=np.int64).reshape(total.shape)
    reciprocal = one_over_one_plus_x(wrap32((total << headroom) - (1 << 31)))
    bits_over_unit = SOFTMAX_ACCUM_BITS - headroom + 31 - 8
    out = rounding_divide_by_pot(srdhm(reciprocal, exps), bits_over_unit) - 128
    return np.where(valid, np.clip(out, -128, 127), -128).astype(np.int8)
