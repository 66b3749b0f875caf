"""Quantization ops: compute definitions vs references (check_op), references vs onnx.reference
(bit-exact), type rules and macs. onnxruntime comparisons are in
tests/compiler/test_convert_quant.py."""

import numpy as np
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from nnc.ir.graph import Attrs
from nnc.ir.ops import OpError, get_op
from nnc.ir.types import TensorType
from nnc.testing import check_op

RNG = np.random.default_rng(11)


def _q(shape, dtype, lo=None, hi=None):
    info = np.iinfo(dtype)
    return RNG.integers(info.min if lo is None else lo, (info.max if hi is None else hi) + 1,
                        shape).astype(dtype)


def _s(*values, dtype=np.float32):
    return np.array(values if len(values) != 1 else values[0], dtype)


def _onnx_ref(op_type, inputs, **attrs):
    """One ONNX node evaluated by onnx.reference (absent optional inputs as None)."""
    names = [f"i{k}" if x is not None else "" for k, x in enumerate(inputs)]
    node = helper.make_node(op_type, names, ["y"], **attrs)
    inits = [numpy_helper.from_array(x, n) for n, x in zip(names, inputs, strict=True) if n]
    g = helper.make_graph([node], "g", [], [helper.make_empty_tensor_value_info("y")], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    return ReferenceEvaluator(model).run(None, {})[0]


def _ref(kind, inputs, **attrs):
    return get_op(kind).reference(inputs, Attrs.of(attrs))[0]


# ---------------------------------------------------------------- quantize / dequantize

TIES = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 126.5, 127.5, -128.5, 1e9, -1e9, 0.0],
                np.float32)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16"])
def test_quantize_rounds_half_to_even_and_saturates(dtype):
    zp = np.array(3 if dtype != "int16" else -5, dtype)
    out = check_op("quantize_linear", [TIES, _s(1.0), zp], {"dtype": dtype})[0]
    np.testing.assert_array_equal(out, _onnx_ref("QuantizeLinear", [TIES, _s(1.0), zp]))
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    assert out[-3] == hi and out[-2] == lo
    assert list(out[:4].astype(int) - int(zp)) == [-2, -2, 0, 0] or dtype.startswith("u")


def test_quantize_per_axis_and_default_uint8():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32) * 4
    scale = np.array([0.02, 0.05, 0.1], np.float32)
    zp = np.array([-3, 0, 7], np.int8)
    out = check_op("quantize_linear", [x, scale.reshape(1, 3, 1), zp.reshape(1, 3, 1)],
                   {"dtype": "int8"})[0]
    np.testing.assert_array_equal(out, _onnx_ref("QuantizeLinear", [x, scale, zp], axis=1))
    no_zp = check_op("quantize_linear", [x, _s(0.05), None], {"dtype": "uint8"})[0]
    np.testing.assert_array_equal(no_zp, _onnx_ref("QuantizeLinear", [x, _s(0.05)]))


@pytest.mark.parametrize("xdtype", [np.float16, np.int32])
def test_quantize_float16_and_int32_inputs(xdtype):
    x = (RNG.standard_normal((3, 5)) * 50).astype(xdtype)
    scale = _s(0.3, dtype=np.float16 if xdtype == np.float16 else np.float32)
    out = check_op("quantize_linear", [x, scale, np.array(1, np.int8)], {"dtype": "int8"})[0]
    np.testing.assert_array_equal(out, _onnx_ref("QuantizeLinear",
                                                 [x, scale, np.array(1, np.int8)]))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32"])
def test_dequantize_matches_onnx_reference(dtype):
    x = _q((2, 3, 2), dtype) if dtype != "int32" else _q((2, 3, 2), dtype, -99999, 99999)
    scale = np.array([0.5, 0.25, 0.125], np.float32)
    zp = _q((3,), dtype, 0, 9) if dtype != "int32" else np.zeros(3, np.int32)
    out = check_op("dequantize_linear", [x, scale.reshape(1, 3, 1), zp.reshape(1, 3, 1)],
                   {"dtype": "float32"})[0]
    np.testing.assert_array_equal(out, _onnx_ref("DequantizeLinear", [x, scale, zp], axis=1))


def test_dequantize_float16_scale_and_absent_zero_point():
    x = _q((4, 3), "int8")
    out = check_op("dequantize_linear", [x, _s(0.1, dtype=np.float16), None],
                   {"dtype": "float16"})[0]
    np.testing.assert_array_equal(out, _onnx_ref("DequantizeLinear",
                                                 [x, _s(0.1, dtype=np.float16)]))


# ---------------------------------------------------------------- integer conv / matmul

CONV_CASES = [
    ((1, 2, 5, 6), (3, 2, 3, 3), {}),
    ((1, 4, 6, 5), (6, 2, 3, 2), dict(group=2, strides=(2, 1), pads=(1, 0, 2, 1),
                                      dilations=(1, 2))),
    ((1, 3, 5, 5), (3, 1, 3, 3), dict(group=3, pads=(1, 1, 1, 1))),  # depthwise
    ((2, 2, 7), (2, 2, 3), dict(strides=(2,), pads=(2, 1))),  # 1-D
    ((1, 1, 3, 4, 4), (2, 1, 2, 3, 3), dict(pads=(1, 1, 0, 0, 1, 1))),  # 3-D
]


def _conv_attrs(nsp, attrs):
    return {"strides": (1,) * nsp, "pads": (0,) * 2 * nsp, "dilations": (1,) * nsp,
            "group": 1, **attrs}


@pytest.mark.parametrize("xshape,wshape,attrs", CONV_CASES)
def test_conv_integer(xshape, wshape, attrs):
    a = _conv_attrs(len(xshape) - 2, attrs)
    x, w = _q(xshape, "uint8"), _q(wshape, "int8")
    # onnx.reference expands a per-channel w zero point for 2-D convs only
    w_zp = _q((wshape[0],), "int8", -3, 3) if len(xshape) == 4 else np.array(2, np.int8)
    inputs = [x, w, np.array(128, np.uint8), w_zp]
    out = check_op("conv_integer", inputs, a, constant_inputs=(1, 3))[0]
    onnx_attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in a.items()}
    np.testing.assert_array_equal(out, _onnx_ref("ConvInteger", inputs, **onnx_attrs))


def test_conv_integer_without_zero_points():
    x, w = _q((1, 2, 4, 4), "int8"), _q((2, 2, 3, 3), "int8")
    out = check_op("conv_integer", [x, w], _conv_attrs(2, {"pads": (1, 1, 1, 1)}))[0]
    np.testing.assert_array_equal(out, _onnx_ref("ConvInteger", [x, w], pads=[1, 1, 1, 1]))


@pytest.mark.parametrize("xshape,wshape,attrs", CONV_CASES[:4])
@pytest.mark.parametrize("xdtype,per_channel", [("uint8", True), ("int8", False)])
def test_qlinear_conv(xshape, wshape, attrs, xdtype, per_channel):
    a = _conv_attrs(len(xshape) - 2, attrs)
    oc = wshape[0]
    x, w = _q(xshape, xdtype), _q(wshape, "int8", -127, 127)
    w_scale = np.linspace(0.002, 0.01, oc).astype(np.float32) if per_channel else _s(0.004)
    inputs = [x, _s(0.05), np.array(7, xdtype), w, w_scale, np.zeros(oc if per_channel else (),
              np.int8), _s(0.3), np.array(-4 if xdtype == "int8" else 130, xdtype),
              RNG.integers(-2000, 2000, oc).astype(np.int32)]
    out = check_op("qlinear_conv", inputs, a, constant_inputs=(3, 4, 5, 8))[0]
    assert out.dtype == np.dtype(xdtype)
    onnx_attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in a.items()}
    if len(xshape) == 4:  # onnx.reference's per-channel scale handling is 2-D only
        np.testing.assert_array_equal(out, _onnx_ref("QLinearConv", inputs, **onnx_attrs))


def test_qlinear_conv_saturates():
    x, w = _q((1, 2, 4, 4), "uint8"), _q((2, 2, 3, 3), "int8")
    inputs = [x, _s(1.0), np.array(0, np.uint8), w, _s(1.0), np.array(0, np.int8), _s(0.001),
              np.array(100, np.uint8)]
    out = check_op("qlinear_conv", inputs, _conv_attrs(2, {}))[0]
    assert set(np.unique(out)) <= {0, 255}


MATMUL_CASES = [((3, 5), (5, 4)), ((2, 3, 5), (5, 4)), ((2, 1, 3, 4), (3, 4, 2)),
                ((1, 6), (6, 1))]


@pytest.mark.parametrize("ashape,bshape", MATMUL_CASES)
def test_matmul_integer(ashape, bshape):
    a, b = _q(ashape, "uint8"), _q(bshape, "int8")
    inputs = [a, b, np.array(100, np.uint8), _q((bshape[-1],), "int8", -5, 5)]
    out = check_op("matmul_integer", inputs, {})[0]
    np.testing.assert_array_equal(out, _onnx_ref("MatMulInteger", inputs))
    check_op("matmul_integer", [a, b], {})


@pytest.mark.parametrize("ashape,bshape", MATMUL_CASES)
@pytest.mark.parametrize("sdtype", [np.float32, np.float16])
def test_qlinear_matmul(ashape, bshape, sdtype):
    a, b = _q(ashape, "int8"), _q(bshape, "int8")
    n = bshape[-1]
    inputs = [a, _s(0.05, dtype=sdtype), np.array(3, np.int8), b,
              np.linspace(0.01, 0.02, n).astype(sdtype), np.zeros(n, np.int8),
              _s(0.4, dtype=sdtype), np.array(-10, np.int8)]
    out = check_op("qlinear_matmul", inputs, {})[0]
    scalar_b = inputs[:4] + [_s(0.015, dtype=sdtype), np.array(0, np.int8)] + inputs[6:]
    np.testing.assert_array_equal(check_op("qlinear_matmul", scalar_b, {})[0],
                                  _onnx_ref("QLinearMatMul", scalar_b))
    assert out.shape == np.matmul(a, b).shape


# ---------------------------------------------------------------- type rules, macs


def _t(shape, dtype):
    return TensorType(tuple(shape), dtype)


@pytest.mark.parametrize("kind,types,attrs,message", [
    ("quantize_linear", [_t((2, 3), "float32"), _t((), "float32"), _t((), "uint8")],
     {"dtype": "int8"}, "differs from the output dtype"),
    ("quantize_linear", [_t((2, 3), "float32"), _t((), "float32")], {"dtype": "float32"},
     "must be one of"),
    ("quantize_linear", [_t((2, 3), "int8"), _t((), "float32")], {"dtype": "int8"},
     "input dtype int8"),
    ("quantize_linear", [_t((2, 3), "float32"), _t((4,), "float32")], {"dtype": "int8"},
     "does not broadcast"),
    ("dequantize_linear", [_t((2, 3), "int8"), _t((), "float32"), _t((), "uint8")],
     {"dtype": "float32"}, "zero point dtype uint8"),
    ("dequantize_linear", [_t((2, 3), "float32"), _t((), "float32")], {"dtype": "float32"},
     "input dtype float32"),
    ("conv_integer", [_t((1, 2, 4, 4), "uint8"), _t((3, 2, 3, 3), "int8"), None,
                      _t((2,), "int8")], {}, "one per channel"),
    ("conv_integer", [_t((1, 2, 4, 4), "uint8"), _t((3, 4, 3, 3), "int8")], {},
     "inconsistent"),
    ("qlinear_conv", [_t((1, 2, 4, 4), "uint8"), _t((), "float32"), _t((), "uint8"),
                      _t((3, 2, 3, 3), "int8"), _t((3,), "float32"), _t((3,), "int8"),
                      _t((), "float32"), _t((), "uint8"), _t((3,), "int64")], {},
     "bias"),
    ("qlinear_conv", [_t((1, 2, 4, 4), "uint8"), _t((), "float32"), _t((), "uint8"),
                      _t((3, 2, 3, 3), "int8"), _t((3,), "float32"), _t((3,), "int8"),
                      _t((), "float32")], {}, "required"),
    ("matmul_integer", [_t((4,), "uint8"), _t((4, 2), "int8")], {}, "rank >= 2"),
    ("matmul_integer", [_t((3, 4), "uint8"), _t((4, 2), "int8"), _t((3,), "uint8")], {},
     "per-tensor"),
    ("qlinear_matmul", [_t((3, 4), "int8"), _t((), "float64"), _t((), "int8"),
                        _t((4, 2), "int8"), _t((), "float32"), _t((), "int8"),
                        _t((), "float32"), _t((), "int8")], {}, "scale dtype float64"),
])
def test_type_rule_errors(kind, types, attrs, message):
    with pytest.raises(OpError, match=message):
        get_op(kind).infer(types, Attrs.of(attrs))


def test_output_types_and_macs():
    conv = get_op("qlinear_conv")
    ins = [_t((1, 2, 5, 5), "uint8"), _t((), "float32"), _t((), "uint8"),
           _t((4, 2, 3, 3), "int8"), _t((4,), "float32"), _t((4,), "int8"), _t((), "float32"),
           _t((), "int8")]
    attrs = Attrs.of(_conv_attrs(2, {"pads": (1, 1, 1, 1)}))
    (out,) = conv.infer(ins, attrs)
    assert out == _t((1, 4, 5, 5), "int8")
    assert conv.macs is not None and conv.macs(ins, [out], attrs) == 4 * 25 * 18
    mm = get_op("matmul_integer")
    ins = [_t((2, 3, 4), "int8"), _t((4, 5), "uint8")]
    (out,) = mm.infer(ins, Attrs())
    assert out == _t((2, 3, 5), "int32")
    assert mm.macs is not None and mm.macs(ins, [out], Attrs()) == 2 * 3 * 5 * 4
