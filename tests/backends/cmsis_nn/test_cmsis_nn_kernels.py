"""The portable CMSIS-NN subset is bit-exact with the TFLite int8 reference on random cases."""

from __future__ import annotations

import numpy as np
import pytest

from . import tflite_reference as ref
from .cmsis_nn_lib import CmsisNN, ConvParams, Dims, DwConvParams, Tile

SEEDS = range(24)
OK = 0
ARG_ERROR = -1


def _act(rng: np.random.Generator) -> tuple[int, int]:
    """The full int8 range, or a random fused-ReLU-like clamp."""
    if rng.random() < 0.5:
        return -128, 127
    lo = int(rng.integers(-128, 0))
    return lo, int(rng.integers(lo, 128))


def _multipliers(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel requantization of typical conv scales, now and then one above 1."""
    reals = 10.0 ** rng.uniform(-4.5, -1.0, size=n)
    if rng.random() < 0.2:
        reals[0] = rng.uniform(1.0, 3.0)
    return ref.quantize_multipliers(reals)


def _out_size(size: int, k: int, stride: int, pad: int, dilation: int, rng: np.random.Generator
              ) -> int:
    """A valid output size for padding `pad` before and 0..pad after."""
    extra = int(rng.integers(0, pad + 1))
    return max(1, (size + pad + extra - dilation * (k - 1) - 1) // stride + 1)


def _spatial(rng: np.random.Generator, dilate: bool) -> dict[str, tuple[int, int]]:
    kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
    stride = tuple(int(v) for v in rng.integers(1, 3, size=2))
    dil = tuple(int(v) for v in rng.integers(1, 3, size=2)) if dilate else (1, 1)
    pad = (int(rng.integers(0, kh)), int(rng.integers(0, kw)))
    return dict(kernel=(kh, kw), stride=stride, dilation=dil, pad=pad)


@pytest.mark.parametrize("seed", SEEDS)
def test_convolve_wrapper_s8(cmsis: CmsisNN, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sp = _spatial(rng, dilate=seed % 3 == 0)
    (kh, kw), stride, dil, pad = sp["kernel"], sp["stride"], sp["dilation"], sp["pad"]
    groups = 2 if seed % 5 == 4 else 1
    n = 1 + seed % 2
    h, w = (int(v) for v in rng.integers(dil[0] * (kh - 1) + 1, 10, size=2))
    w = max(w, dil[1] * (kw - 1) + 1)
    k_c = int(rng.integers(1, 9))
    c_out = groups * int(rng.integers(1, 7))
    out_hw = (_out_size(h, kh, stride[0], pad[0], dil[0], rng),
              _out_size(w, kw, stride[1], pad[1], dil[1], rng))
    x = rng.integers(-128, 128, size=(n, h, w, k_c * groups))
    wt = rng.integers(-127, 128, size=(c_out, kh, kw, k_c))
    bias = rng.integers(-(2**15), 2**15, size=c_out) if seed % 4 else None
    mult, shift = _multipliers(rng, c_out)
    q = dict(input_offset=int(rng.integers(-127, 129)), output_offset=int(rng.integers(-128, 128)),
             multiplier=mult, shift=shift, stride=stride, pad=pad, dilation=dil, out_hw=out_hw,
             act=_act(rng))
    status, got = cmsis.conv(x, wt, bias, **q)
    assert status == OK
    np.testing.assert_array_equal(got, ref.conv2d(x, wt, bias, **q))


@pytest.mark.parametrize("seed", SEEDS)
def test_depthwise_conv_wrapper_s8(cmsis: CmsisNN, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    sp = _spatial(rng, dilate=seed % 3 == 0)
    (kh, kw), stride, dil, pad = sp["kernel"], sp["stride"], sp["dilation"], sp["pad"]
    if seed % 4 == 0:
        (kh, kw), stride, pad = (3, 3), (1, 1), (1, 1)  # the shape of the real 3x3 fast path
    ch_mult = 1 + seed % 3 if seed % 2 else 1
    n = 1 + (seed % 5 == 1)
    h, w = (int(v) for v in rng.integers(dil[0] * (kh - 1) + 1, 10, size=2))
    w = max(w, dil[1] * (kw - 1) + 1)
    c_in = int(rng.integers(1, 12))
    out_hw = (_out_size(h, kh, stride[0], pad[0], dil[0], rng),
              _out_size(w, kw, stride[1], pad[1], dil[1], rng))
    x = rng.integers(-128, 128, size=(n, h, w, c_in))
    wt = rng.integers(-127, 128, size=(1, kh, kw, c_in * ch_mult))
    bias = rng.integers(-(2**15), 2**15, size=c_in * ch_mult) if seed % 4 != 1 else None
    mult, shift = _multipliers(rng, c_in * ch_mult)
    q = dict(input_offset=int(rng.integers(-127, 129)), output_offset=int(rng.integers(-128, 128)),
             multiplier=mult, shift=shift, ch_mult=ch_mult, stride=stride, pad=pad,
             dilation=dil, out_hw=out_hw, act=_act(rng))
    status, got = cmsis.depthwise(x, wt, bias, **q)
    assert status == OK
    np.testing.assert_array_equal(got, ref.depthwise_conv2d(x, wt, bias, **q))


@pytest.mark.parametrize("seed", SEEDS)
def test_fully_connected_s8(cmsis: CmsisNN, seed: int) -> None:
    rng = np.random.default_rng(2000 + seed)
    n, depth, c_out = 1 + seed % 3, int(rng.integers(1, 300)), int(rng.integers(1, 40))
    x = rng.integers(-128, 128, size=(n, depth))
    wt = rng.integers(-127, 128, size=(c_out, depth))
    bias = rng.integers(-(2**16), 2**16, size=c_out) if seed % 5 else None
    if seed % 2:  # per channel
        mult, shift = _multipliers(rng, c_out)
        m, s = mult, shift
    else:
        mult_t, shift_t = ref.quantize_multiplier(float(10.0 ** rng.uniform(-4.5, -1.0)))
        m, s = np.int64(mult_t), np.int64(shift_t)
    q = dict(input_offset=int(rng.integers(-127, 129)),
             filter_offset=0 if seed % 3 else int(rng.integers(-10, 10)),
             output_offset=int(rng.integers(-128, 128)), multiplier=m, shift=s, act=_act(rng))
    status, got = cmsis.fully_connected(x, wt, bias, **q)
    assert status == OK
    np.testing.assert_array_equal(got, ref.fully_connected(x, wt, bias, **q))


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("seed", range(16))
def test_pooling_s8(cmsis: CmsisNN, kind: str, seed: int) -> None:
    rng = np.random.default_rng(3000 + seed)
    kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    pad = (int(rng.integers(0, kh)), int(rng.integers(0, kw)))  # every window keeps a real tap
    n, c = 1 + seed % 2, int(rng.integers(1, 10))
    h, w = int(rng.integers(kh, 12)), int(rng.integers(kw, 12))
    out_hw = (_out_size(h, kh, stride[0], pad[0], 1, rng),
              _out_size(w, kw, stride[1], pad[1], 1, rng))
    x = rng.integers(-128, 128, size=(n, h, w, c))
    q = dict(stride=stride, pad=pad, out_hw=out_hw, act=_act(rng))
    status, got = cmsis.pool(kind, x, (kh, kw), **q)
    assert status == OK
    expect = (ref.max_pool if kind == "max" else ref.avg_pool)(x, (kh, kw), **q)
    np.testing.assert_array_equal(got, expect)


def test_avgpool_global_kws_shape(cmsis: CmsisNN) -> None:
    """KWS's AvgPool 24x5 valid over 25x5x64: exercises negative-sum rounding on a big window."""
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, size=(1, 25, 5, 64))
    q = dict(stride=(1, 1), pad=(0, 0), out_hw=(2, 1))
    status, got = cmsis.pool("avg", x, (24, 5), **q)
    assert status == OK
    np.testing.assert_array_equal(got, ref.avg_pool(x, (24, 5), **q))


@pytest.mark.parametrize("seed", range(16))
def test_softmax_s8(cmsis: CmsisNN, seed: int) -> None:
    rng = np.random.default_rng(4000 + seed)
    rows, row_size = int(rng.integers(1, 6)), int(rng.integers(1, 40))
    scale = float(10.0 ** rng.uniform(-2.5, -0.5))  # diff_min from -2^10ish down to -40ish
    beta = 1.0 if seed % 3 else float(rng.uniform(0.5, 2.0))
    mult, shift, diff_min = ref.softmax_params(beta, scale)
    x = rng.integers(-128, 128, size=(rows, row_size))
    got = cmsis.softmax(x, mult=mult, shift=shift, diff_min=diff_min)
    expect = ref.softmax(x, mult=mult, shift=shift, diff_min=diff_min)
    np.testing.assert_array_equal(got, expect)


def test_softmax_reference_is_a_softmax() -> None:
    """The reference itself approximates softmax to within 1/256 steps (sanity of the port)."""
    rng = np.random.default_rng(5)
    scale = 0.05
    mult, shift, diff_min = ref.softmax_params(1.0, scale)
    x = rng.integers(-128, 128, size=(8, 12))
    got = (ref.softmax(x, mult=mult, shift=shift, diff_min=diff_min).astype(np.float64) + 128) / 256
    e = np.exp(scale * (x - x.max(axis=1, keepdims=True)))
    np.testing.assert_allclose(got, e / e.sum(axis=1, keepdims=True), atol=1.5 / 256)


@pytest.mark.parametrize("seed", range(12))
def test_elementwise_add_s8(cmsis: CmsisNN, seed: int) -> None:
    rng = np.random.default_rng(5000 + seed)
    s1, s2, so = (float(v) for v in 10.0 ** rng.uniform(-2.5, -0.5, size=3))
    size = int(rng.integers(1, 300))
    a, b = rng.integers(-128, 128, size=size), rng.integers(-128, 128, size=size)
    q = dict(input_1_offset=int(rng.integers(-127, 129)),
             input_2_offset=int(rng.integers(-127, 129)),
             out_offset=int(rng.integers(-128, 128)), act=_act(rng), **ref.add_params(s1, s2, so))
    status, got = cmsis.add(a, b, **q)
    assert status == OK
    np.testing.assert_array_equal(got, ref.add(a, b, **q))


@pytest.mark.parametrize("seed", range(12))
def test_elementwise_mul_s8(cmsis: CmsisNN, seed: int) -> None:
    rng = np.random.default_rng(6000 + seed)
    s1, s2, so = (float(v) for v in 10.0 ** rng.uniform(-2.5, -0.5, size=3))
    mult, shift = ref.quantize_multiplier(s1 * s2 / so)
    size = int(rng.integers(1, 300))
    a, b = rng.integers(-128, 128, size=size), rng.integers(-128, 128, size=size)
    q = dict(input_1_offset=int(rng.integers(-127, 129)),
             input_2_offset=int(rng.integers(-127, 129)),
             out_offset=int(rng.integers(-128, 128)), out_mult=mult, out_shift=shift, act=_act(rng))
    status, got = cmsis.mul(a, b, **q)
    assert status == OK
    np.testing.assert_array_equal(got, ref.mul(a, b, **q))


def test_vector_sum_s8(cmsis: CmsisNN) -> None:
    rng = np.random.default_rng(8)
    w = rng.integers(-127, 128, size=(7, 33))
    bias = rng.integers(-1000, 1000, size=7)
    status, got = cmsis.vector_sum(w, 5, 0, bias)
    assert status == OK
    np.testing.assert_array_equal(got, w.sum(axis=1) * 5 + bias)
    np.testing.assert_array_equal(cmsis.vector_sum(w, 1, 0, None)[1], w.sum(axis=1))
    # rhs_offset (CMSIS-NN >= v7.0.0) is added to every element before the sum
    np.testing.assert_array_equal(cmsis.vector_sum(w, -3, 7, bias)[1],
                                  (w + 7).sum(axis=1) * -3 + bias)
    # lhs_offset 0: the bias alone
    np.testing.assert_array_equal(cmsis.vector_sum(w, 0, 7, bias)[1], bias)


def test_argument_errors(cmsis: CmsisNN) -> None:
    x = np.zeros((1, 4, 4, 3))
    one = (np.array([1 << 30] * 4), np.array([0] * 4))
    conv = dict(input_offset=0, output_offset=0, multiplier=one[0], shift=one[1], stride=(1, 1),
                pad=(0, 0), dilation=(1, 1), out_hw=(4, 4))
    # 3 input channels cannot be split into groups of 2
    assert cmsis.conv(x, np.zeros((4, 1, 1, 2)), None, **conv)[0] == ARG_ERROR
    # depthwise output channels must be C_in * ch_mult
    dw = dict(conv, ch_mult=2)
    assert cmsis.depthwise(x, np.zeros((1, 1, 1, 4)), None, **dw)[0] == ARG_ERROR
    # an average over a window lying wholly in the padding is undefined
    status, _ = cmsis.pool("avg", x, (2, 2), stride=(1, 1), pad=(3, 3), out_hw=(1, 1))
    assert status == ARG_ERROR


def test_quantize_multiplier_matches_tflite() -> None:
    assert ref.quantize_multiplier(0.5) == (1 << 30, 0)
    assert ref.quantize_multiplier(1.0) == (1 << 30, 1)
    assert ref.quantize_multiplier(0.0) == (0, 0)
    assert ref.quantize_multiplier(2.0**-40) == (0, 0)
    m, s = ref.quantize_multiplier(0.0123)
    assert abs(m * 2.0 ** (s - 31) - 0.0123) < 2.0**-31
    # the doubling high multiply rounds ties up; the rounding shift rounds them away from zero
    assert int(ref.requantize(np.int64(3), 1 << 30, 0)) == 2  # 1.5 -> 2
    assert int(ref.requantize(np.int64(-3), 1 << 30, 0)) == -1  # -1.5 -> -1
    assert int(ref.requantize(np.int64(-3), 1 << 30, -1)) == -1  # -1.5 -> -1, -0.5 -> -1


def test_buffer_sizes(cmsis: CmsisNN) -> None:
    """Host build: the plain-C sizes; the _dsp/_mve getters: what CMSIS-NN needs on M4/M7, M55."""
    conv3 = ConvParams(0, 0, Tile(1, 1), Tile(1, 1), Tile(1, 1))
    conv1 = ConvParams(0, 0, Tile(1, 1), Tile(0, 0), Tile(1, 1))
    inp, f3, f1, out = Dims(1, 8, 8, 6), Dims(16, 3, 3, 6), Dims(16, 1, 1, 6), Dims(1, 8, 8, 16)
    g = cmsis.getter
    assert g("arm_convolve_wrapper_s8_get_buffer_size", conv3, inp, f3, out) == 4 * 56  # 54 -> 56
    assert g("arm_convolve_wrapper_s8_get_buffer_size_dsp", conv3, inp, f3, out) == 4 * 56
    assert g("arm_convolve_wrapper_s8_get_buffer_size_mve", conv3, inp, f3, out) == 4 * 64
    assert g("arm_convolve_wrapper_s8_get_buffer_size", conv1, inp, f1, out) == 0
    dw3 = DwConvParams(0, 0, 1, Tile(1, 1), Tile(1, 1), Tile(1, 1))
    din, d3, d5, dout = Dims(1, 8, 8, 16), Dims(1, 3, 3, 16), Dims(1, 5, 5, 16), Dims(1, 8, 8, 16)
    assert g("arm_depthwise_conv_wrapper_s8_get_buffer_size", dw3, din, d3, dout) == 0
    assert g("arm_depthwise_conv_wrapper_s8_get_buffer_size_dsp", dw3, din, d3, dout) == 0
    assert g("arm_depthwise_conv_wrapper_s8_get_buffer_size_dsp", dw3, din, d5, dout) == 16 * 25 * 2
    assert g("arm_depthwise_conv_wrapper_s8_get_buffer_size_mve", dw3, din, d3, dout) == 4 * 124 * 9
    fc = Dims(256, 1, 1, 64)
    assert g("arm_fully_connected_s8_get_buffer_size", fc) == 0
    assert g("arm_fully_connected_s8_get_buffer_size_mve", fc) == 64 * 4
    assert g("arm_avgpool_s8_get_buffer_size", 5, 64) == 0
    assert g("arm_avgpool_s8_get_buffer_size_dsp", 5, 64) == 256
    assert g("arm_avgpool_s8_get_buffer_size_mve", 5, 64) == 0
