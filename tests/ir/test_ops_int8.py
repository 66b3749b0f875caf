"""int8 ops (TFLite arithmetic): the loop nests equal the references bit for bit (check_op), the
references equal the TFLite reference in tests/backends/cmsis_nn/tflite_reference.py, the shared
requantization helper is exact on edge values in the loop interpreter and in C, type rules, and
one int8 graph compiled to C and run on the host."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.backends.c.build import build
from nnc.backends.c.run import HostModel
from nnc.compiler.pipeline import default_pipeline
from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.interp import run_graph
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loops import Buffer, KernelBuilder, LoopModule, const
from nnc.ir.ops import OpError, get_op
from nnc.ir.ops.int8 import np_requantize, quantize_multiplier, requantize
from nnc.ir.parser import parse_graph
from nnc.ir.printer import print_graph
from nnc.ir.types import TensorType
from nnc.passes.manager import PassContext, PassManager
from nnc.testing import check_op
from tests.backends.cmsis_nn import tflite_reference as tfl

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
# the requantization inputs are constants (they land in flash): multiplier, shift, bias
CONV_CONSTS = (1, 2, 3, 4)


def _ref(kind, inputs, **attrs):
    return get_op(kind).reference(inputs, Attrs.of(attrs))[0]


def _s8(rng, shape, lo=-128):
    return rng.integers(lo, 128, shape).astype(np.int8)


def _multipliers(rng, n, big=False):
    """int32 per-channel (multiplier, shift) of typical conv scales; `big` adds reals >= 1."""
    reals = 10.0 ** rng.uniform(-4.5, -1.0, size=n)
    if big:
        reals[: max(1, n // 2)] = rng.uniform(1.0, 3000.0, size=max(1, n // 2))
    m, s = tfl.quantize_multipliers(reals)
    return m.astype(np.int32), s.astype(np.int32)


def _act(rng):
    if rng.random() < 0.5:
        return -128, 127
    lo = int(rng.integers(-128, 0))
    return lo, int(rng.integers(lo, 128))


def _nhwc(x):
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


# ---------------------------------------------------------------- requantization arithmetic

EDGE_X = [0, 1, -1, 2, -2, 3, -3, 1000, -1000, 12345, -12345, 2**20, -(2**20), 2**30, -(2**30),
          I32_MAX, I32_MIN, I32_MAX - 1, I32_MIN + 1]
EDGE_M = [0, 1, 2**30, 2**30 + 1, 1518500250, I32_MAX, I32_MIN, -(2**30), 12345]
EDGE_S = [-31, -30, -17, -8, -2, -1, 0, 1, 2, 8, 20, 30]


def _edge_grid():
    x, m, s = np.meshgrid(EDGE_X, EDGE_M, EDGE_S, indexing="ij")
    return x.ravel().astype(np.int32), m.ravel().astype(np.int32), s.ravel().astype(np.int32)


def test_quantize_multiplier_matches_tflite():
    for real in [1e-9, 1e-6, 0.0123, 0.5, 0.99999999999, 1.0, 1.5, 3000.0, 2.0**31, 0.0]:
        assert quantize_multiplier(real) == tfl.quantize_multiplier(real)


def test_np_requantize_matches_tflite_on_edge_values():
    x, m, s = _edge_grid()
    np.testing.assert_array_equal(np_requantize(x, m, s), tfl.requantize(x, m, s))
    rng = np.random.default_rng(0)
    x = rng.integers(I32_MIN, I32_MAX, 5000, dtype=np.int64)
    m = rng.integers(0, I32_MAX, 5000, dtype=np.int64)
    s = rng.integers(-31, 31, 5000)
    np.testing.assert_array_equal(np_requantize(x, m, s), tfl.requantize(x, m, s))
    # INT32_MIN * INT32_MIN is the one product that saturates
    assert int(np_requantize(np.int64(I32_MIN), I32_MIN, 0)) == I32_MAX


def test_np_requantize_rejects_out_of_range_shifts():
    with pytest.raises(OpError, match=r"shifts must lie in \[-31, 30\]"):
        np_requantize(np.int64(5), 2**30, 31)


def _requant_module(static_shifts):
    """y[i] = requantize(x[i], m[i], s[i]); then one kernel per constant shift (folded form)."""
    n = len(EDGE_X) * len(EDGE_M) * len(EDGE_S)
    k = len(EDGE_X) * len(EDGE_M)
    x, m, s = (Buffer(v, (n,), "int32", "input") for v in ("x", "m", "s"))
    y = Buffer("y", (n,), "int32", "output")
    kb = KernelBuilder("rq")
    with kb.loop(n) as i:
        kb.store(y, (i,), requantize(kb, x[i], m[i], s[i]))
    kernels = [kb.build(("x", "m", "s", "y"))]
    buffers = [x, m, s, y]
    for shift in static_shifts:
        out = Buffer(f"y{shift + 31}", (k,), "int32", "output")
        kb = KernelBuilder(f"rq{shift + 31}")
        with kb.loop(k) as i:
            j = i * len(EDGE_S)  # the grid's (x, m) pairs: shift varies fastest
            kb.store(out, (i,), requantize(kb, x[j], m[j], const(shift, "int32")))
        kernels.append(kb.build(("x", "m", out.name)))
        buffers.append(out)
    outs = tuple(b.name for b in buffers[3:])
    return LoopModule("rq", tuple(buffers), tuple(kernels), ("x", "m", "s"), outs, {}, 0,
                      ("x", "m", "s"), outs)


def _check_requant_outputs(got):
    x, m, s = _edge_grid()
    np.testing.assert_array_equal(got["y"], tfl.requantize(x, m, s))
    k = len(EDGE_X) * len(EDGE_M)
    for shift in EDGE_S:
        name = f"y{shift + 31}"
        if name in got:  # x, m of the grid vary fastest within one shift (x major, m, s minor)
            xs = x.reshape(k, len(EDGE_S))[:, 0]
            ms = m.reshape(k, len(EDGE_S))[:, 0]
            np.testing.assert_array_equal(got[name], tfl.requantize(xs, ms, shift), name)


def test_requantize_loop_ir_is_exact_in_the_interpreter():
    x, m, s = _edge_grid()
    module = _requant_module((-31, -5, 0, 7, 30))
    got = run_loop_module(module, {"x": x, "m": m, "s": s})
    _check_requant_outputs(got)


def test_requantize_loop_ir_is_exact_in_c(tmp_path):
    x, m, s = _edge_grid()
    module = _requant_module(tuple(EDGE_S))
    build(module, tmp_path / "rq", opt_level=2, werror=True, bench=False)
    got = HostModel(tmp_path / "rq").run({"x": x, "m": m, "s": s})
    _check_requant_outputs(got)


# ---------------------------------------------------------------- conv_s8


def _conv_case(rng, group=1, ch_mult=None, dilate=False, big=False):
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    stride = tuple(int(v) for v in rng.integers(1, 3, 2))
    dil = tuple(int(v) for v in rng.integers(1, 3, 2)) if dilate else (1, 1)
    pb = (int(rng.integers(0, kh)), int(rng.integers(0, kw)))
    pe = (int(rng.integers(0, pb[0] + 1)), int(rng.integers(0, pb[1] + 1)))
    h = int(rng.integers(dil[0] * (kh - 1) + 1, 6))
    w = int(rng.integers(dil[1] * (kw - 1) + 1, 7))
    if ch_mult is not None:  # depthwise: one input channel per group
        c = int(rng.integers(1, 4))
        group, cg, oc = c, 1, c * ch_mult
    else:
        cg = int(rng.integers(1, 4))
        oc = group * int(rng.integers(1, 4))
    x = _s8(rng, (1, cg * group, h, w))
    wt = _s8(rng, (oc, cg, kh, kw), lo=-127)
    bias = rng.integers(-(2**15), 2**15, oc).astype(np.int32)
    mult, shift = _multipliers(rng, oc, big)
    lo, hi = _act(rng)
    attrs = dict(strides=stride, pads=pb + pe, dilations=dil, group=group,
                 input_zero_point=int(rng.integers(-128, 128)),
                 output_zero_point=int(rng.integers(-128, 128)), act_min=lo, act_max=hi)
    return [x, wt, mult, shift, bias], attrs


@pytest.mark.parametrize("seed", range(8))
def test_conv_s8_loop_nest_matches_reference_and_tflite(seed):
    rng = np.random.default_rng(seed)
    inputs, attrs = _conv_case(rng, group=2 if seed % 4 == 3 else 1, dilate=seed % 3 == 0,
                               big=seed == 5)
    if seed % 2:
        inputs = inputs[:4]  # no bias
    got = check_op("conv_s8", inputs, attrs, constant_inputs=CONV_CONSTS)[0]
    x, wt, mult, shift = inputs[:4]
    bias = inputs[4] if len(inputs) > 4 else None
    pads = attrs["pads"]
    want = tfl.conv2d(_nhwc(x), np.transpose(wt, (0, 2, 3, 1)), bias,
                      input_offset=-attrs["input_zero_point"],
                      output_offset=attrs["output_zero_point"], multiplier=mult, shift=shift,
                      stride=attrs["strides"], pad=pads[:2], dilation=attrs["dilations"],
                      out_hw=got.shape[2:], act=(attrs["act_min"], attrs["act_max"]))
    np.testing.assert_array_equal(_nhwc(got), want)


@pytest.mark.parametrize("seed", range(5))
def test_depthwise_conv_s8_matches_tflite(seed):
    rng = np.random.default_rng(100 + seed)
    ch_mult = 1 + seed % 2
    inputs, attrs = _conv_case(rng, ch_mult=ch_mult, dilate=seed == 2)
    got = check_op("conv_s8", inputs, attrs, constant_inputs=CONV_CONSTS)[0]
    x, wt, mult, shift, bias = inputs
    want = tfl.depthwise_conv2d(
        _nhwc(x), np.transpose(wt[:, 0], (1, 2, 0))[None], bias,
        input_offset=-attrs["input_zero_point"], output_offset=attrs["output_zero_point"],
        multiplier=mult, shift=shift, ch_mult=ch_mult, stride=attrs["strides"],
        pad=attrs["pads"][:2], dilation=attrs["dilations"], out_hw=got.shape[2:],
        act=(attrs["act_min"], attrs["act_max"]))
    np.testing.assert_array_equal(_nhwc(got), want)


def test_conv_s8_saturates_and_clamps():
    rng = np.random.default_rng(7)
    x = np.full((1, 2, 3, 3), 127, np.int8)
    x[0, 1] = -128
    wt = np.array([127, -127, 3, -3], np.int8).reshape(4, 1, 1, 1).repeat(2, axis=1)
    wt[:, 1] = 127
    mult = np.array([I32_MAX, 2**30, 1, 0], np.int32)  # the largest real multipliers and none
    shift = np.array([30, 30, -31, 0], np.int32)
    attrs = dict(input_zero_point=-128, output_zero_point=0, act_min=-100, act_max=90)
    got = check_op("conv_s8", [x, wt, mult, shift, rng.integers(-9, 9, 4).astype(np.int32)],
                   attrs, constant_inputs=CONV_CONSTS)[0]
    assert got[0, 0].max() == 90 and got[0, 3].min() == 0  # saturated high, then clamped
    assert got.min() >= -100 and got.max() <= 90


def test_conv_s8_1d_and_per_tensor_multiplier():
    rng = np.random.default_rng(8)
    x = _s8(rng, (2, 3, 7))
    wt = _s8(rng, (4, 3, 3), lo=-127)
    m, s = quantize_multiplier(0.004)
    check_op("conv_s8", [x, wt, np.array([m], np.int32), np.array([s], np.int32)],
             dict(pads=(1, 0), strides=(2,), input_zero_point=3, output_zero_point=-7),
             constant_inputs=(1, 2, 3))


# ---------------------------------------------------------------- fully_connected_s8


@pytest.mark.parametrize("seed", range(6))
def test_fully_connected_s8_per_tensor_and_per_channel(seed):
    rng = np.random.default_rng(200 + seed)
    n, depth, oc = 1 + seed % 3, int(rng.integers(1, 40)), int(rng.integers(1, 9))
    x = _s8(rng, (n, depth))
    wt = _s8(rng, (oc, depth), lo=-127)
    bias = rng.integers(-(2**16), 2**16, oc).astype(np.int32) if seed % 3 else None
    mult, shift = _multipliers(rng, oc if seed % 2 else 1, big=seed == 4)
    lo, hi = _act(rng)
    attrs = dict(input_zero_point=int(rng.integers(-128, 128)),
                 weight_zero_point=0 if seed % 3 else int(rng.integers(-10, 10)),
                 output_zero_point=int(rng.integers(-128, 128)), act_min=lo, act_max=hi)
    inputs = [x, wt, mult, shift] + ([bias] if bias is not None else [])
    got = check_op("fully_connected_s8", inputs, attrs, constant_inputs=CONV_CONSTS)[0]
    m, s = (mult, shift) if seed % 2 else (np.int64(mult[0]), np.int64(shift[0]))
    want = tfl.fully_connected(x, wt, bias, input_offset=-attrs["input_zero_point"],
                               filter_offset=-attrs["weight_zero_point"],
                               output_offset=attrs["output_zero_point"], multiplier=m, shift=s,
                               act=(lo, hi))
    np.testing.assert_array_equal(got, want)


def test_fully_connected_s8_batched_leading_dims():
    rng = np.random.default_rng(9)
    x = _s8(rng, (2, 3, 5))
    wt = _s8(rng, (4, 5), lo=-127)
    mult, shift = _multipliers(rng, 4)
    got = check_op("fully_connected_s8", [x, wt, mult, shift], dict(input_zero_point=1),
                   constant_inputs=(1, 2, 3))[0]
    flat = _ref("fully_connected_s8", [x.reshape(6, 5), wt, mult, shift], input_zero_point=1)
    np.testing.assert_array_equal(got.reshape(6, 4), flat)


# ---------------------------------------------------------------- pools


@pytest.mark.parametrize("kind", ["max_pool_s8", "avg_pool_s8"])
@pytest.mark.parametrize("seed", range(6))
def test_pools_match_reference_and_tflite(kind, seed):
    rng = np.random.default_rng(300 + seed)
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    stride = tuple(int(v) for v in rng.integers(1, 3, 2))
    pb = (int(rng.integers(0, kh)), int(rng.integers(0, kw)))
    pe = (int(rng.integers(0, kh)), int(rng.integers(0, kw)))
    x = _s8(rng, (1 + seed % 2, 2, int(rng.integers(kh, 7)), int(rng.integers(kw, 7))))
    lo, hi = _act(rng)
    attrs = dict(kernel_shape=(kh, kw), strides=stride, pads=pb + pe, ceil_mode=seed % 3 == 1,
                 act_min=lo, act_max=hi)
    got = check_op(kind, [x], attrs)[0]
    fn = tfl.max_pool if kind == "max_pool_s8" else tfl.avg_pool
    want = fn(_nhwc(x), (kh, kw), stride=stride, pad=pb, out_hw=got.shape[2:], act=(lo, hi))
    np.testing.assert_array_equal(_nhwc(got), want)


def test_avg_pool_s8_rounds_half_away_from_zero():
    x = np.array([[[[1, 2], [-1, -2], [3, 4], [-3, -4]]]], np.int8).transpose(0, 1, 3, 2)
    # windows of two: 1.5 -> 2, -1.5 -> -2, 3.5 -> 4, -3.5 -> -4
    got = check_op("avg_pool_s8", [np.ascontiguousarray(x)], dict(kernel_shape=(2, 1),
                                                                  strides=(2, 1)))[0]
    assert got.ravel().tolist() == [2, -2, 4, -4]


def test_avg_pool_s8_counts_only_inside_taps():
    x = np.full((1, 1, 2, 2), -100, np.int8)
    got = check_op("avg_pool_s8", [x], dict(kernel_shape=(3, 3), pads=(1, 1, 1, 1)))[0]
    assert (got == -100).all()  # padding would pull the average toward 0


# ---------------------------------------------------------------- add_s8 / mul_s8


def _add_attrs(rng, s1, s2, so):
    p = tfl.add_params(s1, s2, so)
    lo, hi = _act(rng)
    return dict(a_zero_point=int(rng.integers(-128, 128)),
                b_zero_point=int(rng.integers(-128, 128)),
                output_zero_point=int(rng.integers(-128, 128)), a_multiplier=p["input_1_mult"],
                a_shift=p["input_1_shift"], b_multiplier=p["input_2_mult"],
                b_shift=p["input_2_shift"], left_shift=p["left_shift"],
                output_multiplier=p["out_mult"], output_shift=p["out_shift"], act_min=lo,
                act_max=hi)


@pytest.mark.parametrize("seed", range(5))
def test_add_s8_matches_tflite(seed):
    rng = np.random.default_rng(400 + seed)
    scales = 10.0 ** rng.uniform(-3, 0, 3)
    if seed == 4:
        scales[2] = 1e-4  # tiny output scale: everything saturates
    attrs = _add_attrs(rng, *scales)
    a, b = _s8(rng, (2, 3, 4)), _s8(rng, (2, 3, 4))
    got = check_op("add_s8", [a, b], attrs)[0]
    want = tfl.add(a, b, input_1_offset=-attrs["a_zero_point"], input_1_mult=attrs["a_multiplier"],
                   input_1_shift=attrs["a_shift"], input_2_offset=-attrs["b_zero_point"],
                   input_2_mult=attrs["b_multiplier"], input_2_shift=attrs["b_shift"],
                   left_shift=20, out_offset=attrs["output_zero_point"],
                   out_mult=attrs["output_multiplier"], out_shift=attrs["output_shift"],
                   act=(attrs["act_min"], attrs["act_max"]))
    np.testing.assert_array_equal(got, want)
    if seed == 4:
        assert set(np.unique(got)) <= {attrs["act_min"], attrs["act_max"],
                                       attrs["output_zero_point"]}


def test_add_s8_broadcasts():
    rng = np.random.default_rng(10)
    attrs = _add_attrs(rng, 0.02, 0.05, 0.04)
    a, b = _s8(rng, (1, 3, 2, 2)), _s8(rng, (3, 1, 1))
    got = check_op("add_s8", [a, b], attrs)[0]
    full = _ref("add_s8", [a, np.broadcast_to(b, a.shape).copy()], **attrs)
    np.testing.assert_array_equal(got, full)


@pytest.mark.parametrize("seed", range(4))
def test_mul_s8_matches_tflite(seed):
    rng = np.random.default_rng(500 + seed)
    m, s = tfl.quantize_multiplier(float(10.0 ** rng.uniform(-5, 0 if seed < 3 else 2)))
    lo, hi = _act(rng)
    attrs = dict(a_zero_point=int(rng.integers(-128, 128)),
                 b_zero_point=int(rng.integers(-128, 128)),
                 output_zero_point=int(rng.integers(-128, 128)), output_multiplier=m,
                 output_shift=s, act_min=lo, act_max=hi)
    a, b = _s8(rng, (3, 5)), _s8(rng, (3, 5))
    got = check_op("mul_s8", [a, b], attrs)[0]
    want = tfl.mul(a, b, input_1_offset=-attrs["a_zero_point"],
                   input_2_offset=-attrs["b_zero_point"], out_offset=attrs["output_zero_point"],
                   out_mult=m, out_shift=s, act=(lo, hi))
    np.testing.assert_array_equal(got, want)
    b1 = _s8(rng, (1, 5))
    check_op("mul_s8", [a, b1], attrs)


# ---------------------------------------------------------------- type rules, macs


def _infer(kind, types, **attrs):
    return get_op(kind).infer(types, Attrs.of(attrs))


def _t(shape, dtype="int8"):
    return TensorType(tuple(shape), dtype)


def test_type_rules():
    x, w = _t((1, 4, 5, 5)), _t((6, 2, 3, 3))
    m, s, b = _t((6,), "int32"), _t((6,), "int32"), _t((6,), "int32")
    assert _infer("conv_s8", [x, w, m, s, b], group=2, pads=(1, 1, 1, 1))[0] == _t((1, 6, 5, 5))
    assert _infer("conv_s8", [x, w, _t((1,), "int32"), _t((1,), "int32")], group=2)[0].shape == (
        1, 6, 3, 3)
    assert _infer("fully_connected_s8", [_t((2, 7)), _t((3, 7)), _t((3,), "int32"),
                                         _t((1,), "int32")])[0] == _t((2, 3))
    assert _infer("max_pool_s8", [x], kernel_shape=(2, 2), strides=(2, 2))[0] == _t((1, 4, 2, 2))
    assert _infer("avg_pool_s8", [x], kernel_shape=(2, 2), ceil_mode=1, strides=(2, 2))[0] == _t(
        (1, 4, 3, 3))
    assert _infer("add_s8", [_t((2, 1, 3)), _t((4, 1))])[0] == _t((2, 4, 3))
    assert _infer("mul_s8", [_t((3,)), _t((3,))])[0] == _t((3,))


@pytest.mark.parametrize("kind, types, attrs, message", [
    ("conv_s8", [_t((1, 4, 5, 5), "float32"), _t((6, 4, 3, 3)), _t((6,), "int32"),
                 _t((6,), "int32")], {}, "input must be int8"),
    ("conv_s8", [_t((1, 4, 5, 5)), _t((6, 4, 3, 3)), _t((5,), "int32"), _t((6,), "int32")], {},
     r"multiplier i32\[5\] must be int32\[6\]"),
    ("conv_s8", [_t((1, 4, 5, 5)), _t((6, 4, 3, 3)), _t((6,), "int32"), _t((6,), "int8")], {},
     "shift"),
    ("conv_s8", [_t((1, 4, 5, 5)), _t((6, 4, 3, 3)), _t((6,), "int32"), _t((6,), "int32"),
                 _t((6,), "int8")], {}, "bias"),
    ("conv_s8", [_t((1, 4, 5, 5)), _t((6, 3, 3, 3)), _t((6,), "int32"), _t((6,), "int32")], {},
     "inconsistent"),
    ("conv_s8", [_t((1, 4, 5, 5)), _t((6, 4, 3, 3)), _t((6,), "int32"), _t((6,), "int32")],
     {"input_zero_point": 128}, "outside the int8 range"),
    ("conv_s8", [_t((1, 4, 5, 5)), _t((6, 4, 3, 3))], {}, "inputs are required"),
    ("fully_connected_s8", [_t((2, 7)), _t((3, 6)), _t((3,), "int32"), _t((3,), "int32")], {},
     "differ in depth"),
    ("max_pool_s8", [_t((1, 2, 4, 4))], {"kernel_shape": (2, 2), "act_min": 5, "act_max": 4},
     "activation range"),
    ("max_pool_s8", [_t((1, 2, 4, 4))], {}, "kernel_shape attribute is required"),
    ("avg_pool_s8", [_t((1, 2, 4, 4))], {"kernel_shape": (2, 2), "pads": (2, 0, 0, 0)},
     "smaller than the kernel"),
    ("avg_pool_s8", [_t((1, 2, 4, 4))], {"kernel_shape": (2, 2), "dilations": (2, 2)},
     "dilations unsupported"),
    ("add_s8", [_t((2, 3)), _t((4,))], {}, "do not broadcast"),
    ("add_s8", [_t((2, 3)), _t((3,))], {"a_shift": 31}, "a_shift=31"),
    ("add_s8", [_t((2, 3)), _t((3,))], {"left_shift": 24}, "left_shift=24"),
    ("mul_s8", [_t((3,)), _t((3,), "uint8")], {}, "input B must be int8"),
])
def test_type_rule_errors(kind, types, attrs, message):
    with pytest.raises(OpError, match=message):
        _infer(kind, types, **attrs)


def test_macs():
    conv = get_op("conv_s8").macs
    assert conv is not None
    w = _t((6, 2, 3, 3))
    assert conv([None, w], [_t((1, 6, 4, 4))], Attrs()) == 16 * 6 * 18
    fc = get_op("fully_connected_s8").macs
    assert fc is not None and fc([None, _t((3, 7))], [_t((2, 3))], Attrs()) == 42
    pool = get_op("avg_pool_s8").macs
    assert pool is not None
    assert pool([None], [_t((1, 2, 2, 2))], Attrs.of(dict(kernel_shape=(3, 3)))) == 72


# ---------------------------------------------------------------- compiled to C, run on the host


def _int8_graph(rng):
    """x -> conv_s8 (3x3, pad 1) -> max_pool_s8 -> add_s8(., y) -> out; plus a depthwise conv_s8
    -> avg_pool_s8 and a fully_connected_s8 on the same input, as further outputs."""
    x = Value("x", _t((1, 3, 6, 6)))
    y = Value("y", _t((1, 4, 3, 3)))
    m1, s1 = _multipliers(rng, 4)
    consts = [
        Constant.of("w1", _s8(rng, (4, 3, 3, 3), lo=-127)), Constant.of("m1", m1),
        Constant.of("s1", s1), Constant.of("b1", rng.integers(-500, 500, 4).astype(np.int32)),
    ]
    m2, s2 = _multipliers(rng, 6, big=True)
    consts += [Constant.of("w2", _s8(rng, (6, 1, 3, 3), lo=-127)), Constant.of("m2", m2),
               Constant.of("s2", s2)]
    m3, s3 = _multipliers(rng, 5)
    consts += [Constant.of("w3", _s8(rng, (5, 2), lo=-127)), Constant.of("m3", m3),
               Constant.of("s3", s3), Constant.of("b3", rng.integers(-99, 99, 5).astype(np.int32))]
    add = _add_attrs(rng, 0.03, 0.07, 0.05)

    def v(name, shape):
        return Value(name, _t(shape))

    ops = (
        Op("conv_s8", ("x", "w1", "m1", "s1", "b1"), (v("c1", (1, 4, 6, 6)),),
           Attrs.of(dict(pads=(1, 1, 1, 1), input_zero_point=-5, output_zero_point=7,
                         act_min=-128, act_max=100)), "conv"),
        Op("max_pool_s8", ("c1",), (v("p1", (1, 4, 3, 3)),),
           Attrs.of(dict(kernel_shape=(2, 2), strides=(2, 2))), "pool"),
        Op("add_s8", ("p1", "y"), (v("out", (1, 4, 3, 3)),), Attrs.of(add), "add"),
        Op("conv_s8", ("x", "w2", "m2", "s2"), (v("c2", (1, 6, 3, 3)),),
           Attrs.of(dict(group=3, strides=(2, 2), pads=(1, 1, 0, 0), input_zero_point=-5,
                         output_zero_point=-20)), "dwconv"),
        Op("avg_pool_s8", ("c2",), (v("out2", (1, 6, 2, 2)),),
           Attrs.of(dict(kernel_shape=(2, 2), strides=(2, 2), ceil_mode=1, act_min=-50)),
           "avgpool"),
        Op("fully_connected_s8", ("out2", "w3", "m3", "s3", "b3"), (v("out3", (1, 6, 2, 5)),),
           Attrs.of(dict(input_zero_point=-20, output_zero_point=3)), "fc"),
    )
    outs = (v("out", (1, 4, 3, 3)), v("out2", (1, 6, 2, 2)), v("out3", (1, 6, 2, 5)))
    return Graph("int8", (x, y), outs, tuple(consts), ops)


def test_int8_graph_compiles_to_c_bit_exact(tmp_path):
    rng = np.random.default_rng(12)
    graph = _int8_graph(rng)
    module = PassManager(default_pipeline("host")).run(graph)
    assert {k.op_kind for k in module.kernels} >= {"conv_s8", "max_pool_s8", "add_s8",
                                                  "avg_pool_s8", "fully_connected_s8"}
    build(module, tmp_path / "m", opt_level=2, werror=True, bench=False)
    model = HostModel(tmp_path / "m")
    for _ in range(3):
        feeds = {"x": _s8(rng, (1, 3, 6, 6)), "y": _s8(rng, (1, 4, 3, 3))}
        want = run_graph(graph, feeds)
        got = model.run(feeds)
        for name in ("out", "out2", "out3"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        # the loop interpreter agrees too (same loop module)
        loop = run_loop_module(module, {module.inputs[0]: feeds["x"],
                                        module.inputs[1]: feeds["y"]})
        for name, k in zip(module.output_names, module.outputs, strict=True):
            np.testing.assert_array_equal(loop[k], want[name])


def test_int8_graph_prints_and_parses_back():
    text = print_graph(_int8_graph(np.random.default_rng(3)))
    assert "conv_s8" in text and "input_zero_point = -5" in text
    assert print_graph(parse_graph(text)) == text


# ---------------------------------------------------------------- NHWC layout


@pytest.mark.parametrize("seed", range(10))
def test_nhwc_conv_s8_equals_nchw(seed):
    """layout="NHWC" (OHWI weights; depthwise [1, KH, KW, OC]) gives the NCHW op's result,
    transposed, in the loop nest and the reference."""
    from nnc.ir.ops.int8 import conv_weight_perm, is_depthwise

    rng = np.random.default_rng(900 + seed)
    kind = seed % 3
    if kind == 0:
        inputs, attrs = _conv_case(rng, dilate=seed == 3)
    elif kind == 1:
        inputs, attrs = _conv_case(rng, ch_mult=1 + seed % 2, dilate=seed == 4)
    else:
        inputs, attrs = _conv_case(rng, group=2)
    want = _ref("conv_s8", inputs, **attrs)
    x, wt = inputs[:2]
    dw = is_depthwise(attrs["group"], x.shape[1])
    nhwc = [_nhwc(x), np.ascontiguousarray(wt.transpose(conv_weight_perm(4, dw))), *inputs[2:]]
    got = check_op("conv_s8", nhwc, dict(attrs, layout="NHWC"), constant_inputs=CONV_CONSTS)[0]
    np.testing.assert_array_equal(got, _nhwc(want))


@pytest.mark.parametrize("kind", ["max_pool_s8", "avg_pool_s8"])
@pytest.mark.parametrize("seed", range(4))
def test_nhwc_pools_equal_nchw(kind, seed):
    rng = np.random.default_rng(950 + seed)
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    pads = (int(rng.integers(0, kh)), int(rng.integers(0, kw))) * 2
    x = _s8(rng, (1 + seed % 2, 3, int(rng.integers(kh, 7)), int(rng.integers(kw, 7))))
    attrs = dict(kernel_shape=(kh, kw), strides=(1 + seed % 2, 1), pads=pads,
                 ceil_mode=seed == 1, act_min=-100, act_max=120)
    want = _ref(kind, [x], **attrs)
    got = check_op(kind, [_nhwc(x)], dict(attrs, layout="NHWC"))[0]
    np.testing.assert_array_equal(got, _nhwc(want))


def test_nhwc_rejects_unknown_layout():
    x = np.zeros((1, 2, 2, 2), np.int8)
    with pytest.raises(OpError, match="layout"):
        get_op("max_pool_s8").infer([TensorType(x.shape, "int8")],
                                    Attrs.of(kernel_shape=(1, 1), layout="NCWH"))


def _wide_conv_case(rng, oc, c, pads, zp, bias=True):
    kh, kw = 3, 2
    x = _s8(rng, (1, int(rng.integers(5, 8)), int(rng.integers(4, 7)), c))
    wt = _s8(rng, (oc, kh, kw, c), lo=-127)
    mult, shift = _multipliers(rng, oc)
    lo, hi = _act(rng)
    attrs = dict(strides=(1, 2), pads=pads, dilations=(1, 1), group=1, layout="NHWC",
                 input_zero_point=zp, output_zero_point=int(rng.integers(-128, 128)),
                 act_min=lo, act_max=hi)
    inputs = [x, wt, mult, shift]
    if bias:
        inputs.append(rng.integers(-(2**15), 2**15, oc).astype(np.int32))
    return inputs, attrs


@pytest.mark.parametrize("oc, c, pads, zp, bias", [
    (4, 8, (0, 0, 0, 0), 17, True),      # blocks only; offset folded into the bias
    (7, 9, (1, 1, 1, 0), -128, True),    # padded: folded offset + padding correction, tail
    (6, 3, (2, 1, 0, 1), 5, False),      # few input channels: packed, offset not folded
    (9, 16, (1, 0, 1, 1), 0, False),     # no offset to fold
    (13, 8, (0, 0, 0, 0), -3, False),    # no bias: the folded offset becomes one
])
@pytest.mark.parametrize("const_w", [True, False])
def test_blocked_conv_s8_with_packed_weights_matches_reference(oc, c, pads, zp, bias, const_w):
    """Group-1 NHWC convs; with constant weights the lowering folds the input offset into the
    bias (`_conv_pack`)."""
    rng = np.random.default_rng(oc * 100 + c)
    inputs, attrs = _wide_conv_case(rng, oc, c, pads, zp, bias)
    consts = CONV_CONSTS if const_w else (2, 3, 4)
    check_op("conv_s8", inputs, attrs, constant_inputs=consts)


@pytest.mark.parametrize("oc, depth, x_zp, w_zp, bias", [
    (4, 10, 9, 0, True), (11, 7, -128, 0, False), (6, 5, 3, -2, True), (2, 9, 4, 0, True)])
def test_blocked_fully_connected_s8_with_packed_weights(oc, depth, x_zp, w_zp, bias):
    rng = np.random.default_rng(oc + depth)
    x = _s8(rng, (3, depth))
    wt = _s8(rng, (oc, depth), lo=-127)
    mult, shift = _multipliers(rng, oc)
    inputs = [x, wt, mult, shift] + ([rng.integers(-5000, 5000, oc).astype(np.int32)]
                                      if bias else [])
    attrs = dict(input_zero_point=x_zp, weight_zero_point=w_zp, output_zero_point=-7)
    check_op("fully_connected_s8", inputs, attrs, constant_inputs=CONV_CONSTS)


def test_packing_folds_offset_only_in_the_loop_nest():
    """The graph keeps its bias; the loop module holds the folded bias and the per-tap padding
    correction instead (the weights stay as they are: their layout is the schedule's)."""
    from nnc.passes.lower_to_loops import lower_to_loops
    from nnc.testing import single_op_graph

    rng = np.random.default_rng(3)
    inputs, attrs = _wide_conv_case(rng, 8, 8, (1, 1, 1, 1), -20)
    graph = single_op_graph("conv_s8", inputs, attrs, CONV_CONSTS)
    module = lower_to_loops(graph, PassContext())
    packed = {n: v for n, v in module.constants.items() if "packed" in n}
    assert sorted(len(v) for v in packed.values()) == [8, 8 * 6]  # bias, fix
    assert all(v.dtype == np.int32 for v in packed.values())
    assert len(module.constants) == 3 + len(packed)  # w, multiplier, shift: the bias is gone
