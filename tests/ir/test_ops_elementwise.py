"""Elementwise ops: numpy references against onnxruntime, scalar rules against the references
(through the loop-IR interpreter), type rules and their errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from nnc.ir.graph import Attrs
from nnc.ir.ops import OpError, get_op
from nnc.ir.types import TensorType
from nnc.testing import assert_close, check_op

SHAPE = (2, 3, 4)
INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
SIGNED_INTS = ["int8", "int16", "int32", "int64"]


def sample(dtype: str, shape: tuple[int, ...] = SHAPE, domain: str = "any", seed: int = 0
           ) -> np.ndarray:
    """Small test tensors; `domain` keeps inputs where the op is defined."""
    return np.asarray(_sample(dtype, shape, domain, np.random.default_rng(seed)))


def _sample(dtype: str, shape: tuple[int, ...], domain: str, rng: np.random.Generator
            ) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith("uint"):
        lo, hi = (1, 9) if domain == "nonzero" else (0, 9)
        return rng.integers(lo, hi, shape).astype(dtype)
    if dtype.startswith("int"):
        x = rng.integers(-9, 9, shape).astype(dtype)
        return np.where(x == 0, 1, x).astype(dtype) if domain == "nonzero" else x
    x = rng.standard_normal(shape) * 2
    if domain == "positive":
        x = np.abs(x) + 0.1
    elif domain == "unit":
        x = rng.uniform(-0.95, 0.95, shape)
    elif domain == "above1":
        x = np.abs(x) + 1.05
    elif domain == "nonzero":
        x = np.where(np.abs(x) < 0.1, 0.5, x)
    return x.astype(dtype)


def run_ort(op_type: str, inputs: list[np.ndarray], attrs: dict[str, Any] | None = None,
            opset: int = 17) -> np.ndarray:
    """Run one ONNX node in onnxruntime."""
    names = [f"x{i}" for i in range(len(inputs))]
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in zip(names, inputs, strict=True)]
    out = helper.ValueInfoProto()
    out.name = "y"
    node = helper.make_node(op_type, names, ["y"], **(attrs or {}))
    model = helper.make_model(helper.make_graph([node], "g", vis, [out]),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, dict(zip(names, inputs, strict=True)))[0])


def reference(kind: str, inputs: list[np.ndarray], attrs: dict[str, Any] | None = None
              ) -> np.ndarray:
    return np.asarray(get_op(kind).reference(inputs, Attrs.of(attrs or {}))[0])


# kind -> (ONNX op, attrs (same in ONNX and graph IR), opset, input domain)
FLOAT_UNARY: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "sqrt": ("Sqrt", {}, 17, "positive"), "exp": ("Exp", {}, 17, "any"),
    "log": ("Log", {}, 17, "positive"), "tanh": ("Tanh", {}, 17, "any"),
    "floor": ("Floor", {}, 17, "any"), "ceil": ("Ceil", {}, 17, "any"),
    "sin": ("Sin", {}, 17, "any"), "cos": ("Cos", {}, 17, "any"), "tan": ("Tan", {}, 17, "unit"),
    "asin": ("Asin", {}, 17, "unit"), "acos": ("Acos", {}, 17, "unit"),
    "atan": ("Atan", {}, 17, "any"), "sinh": ("Sinh", {}, 17, "any"),
    "cosh": ("Cosh", {}, 17, "any"), "asinh": ("Asinh", {}, 17, "any"),
    "acosh": ("Acosh", {}, 17, "above1"), "atanh": ("Atanh", {}, 17, "unit"),
    "erf": ("Erf", {}, 17, "any"), "reciprocal": ("Reciprocal", {}, 17, "nonzero"),
    "sigmoid": ("Sigmoid", {}, 17, "any"), "softplus": ("Softplus", {}, 17, "any"),
    "softsign": ("Softsign", {}, 17, "any"), "mish": ("Mish", {}, 18, "any"),
    "leaky_relu": ("LeakyRelu", {"alpha": 0.1}, 17, "any"),
    "elu": ("Elu", {"alpha": 0.5}, 17, "any"),
    "selu": ("Selu", {"alpha": 1.5, "gamma": 1.1}, 17, "any"),
    "celu": ("Celu", {"alpha": 0.7}, 17, "any"),
    "thresholded_relu": ("ThresholdedRelu", {"alpha": 0.3}, 17, "any"),
    "hard_sigmoid": ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 17, "any"),
    "hard_swish": ("HardSwish", {}, 17, "any"), "swish": ("Swish", {"alpha": 0.8}, 24, "any"),
    "gelu": ("Gelu", {"approximate": "none"}, 20, "any"),
}
INT_UNARY: dict[str, tuple[str, list[str]]] = {
    "relu": ("Relu", ["float32", *SIGNED_INTS]),
    "neg": ("Neg", ["float32", *SIGNED_INTS]),
    "abs": ("Abs", ["float32", *INTS]),
    "sign": ("Sign", ["float32", *INTS]),
}
BINARY: dict[str, tuple[str, list[str]]] = {
    "add": ("Add", ["float32", *INTS]), "sub": ("Sub", ["float32", *INTS]),
    "mul": ("Mul", ["float32", *INTS]), "div": ("Div", ["float32", *INTS]),
    "min": ("Min", ["float32", *INTS]), "max": ("Max", ["float32", *INTS]),
    "equal": ("Equal", ["float32", "int32", "int64", "bool"]),
    "less": ("Less", ["float32", "int32", "uint8"]),
    "greater": ("Greater", ["float32", "int64", "int8"]),
    "less_equal": ("LessOrEqual", ["float32", "int32"]),
    "greater_equal": ("GreaterOrEqual", ["float32", "int64"]),
    "and": ("And", ["bool"]), "or": ("Or", ["bool"]), "xor": ("Xor", ["bool"]),
}


def _ort_or_skip(op_type: str, inputs: list[np.ndarray], attrs: dict[str, Any], opset: int
                 ) -> np.ndarray:
    try:
        return run_ort(op_type, inputs, attrs, opset)
    except Exception as e:  # NOT_IMPLEMENTED: a dtype onnxruntime lacks
        if "NOT_IMPLEMENTED" in str(e) or "Could not find an implementation" in str(e):
            pytest.skip(f"onnxruntime has no {op_type} kernel for these dtypes")
        raise


# ---------------------------------------------------------------- float unary ops


@pytest.mark.parametrize("kind", sorted(FLOAT_UNARY))
def test_float_unary_reference_matches_onnxruntime(kind: str) -> None:
    op_type, attrs, opset, domain = FLOAT_UNARY[kind]
    x = sample("float32", domain=domain)
    assert_close(reference(kind, [x], attrs), run_ort(op_type, [x], attrs, opset), 1e-5, 1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("kind", sorted(FLOAT_UNARY))
def test_float_unary_scalar_rule(kind: str, dtype: str) -> None:
    _, attrs, _, domain = FLOAT_UNARY[kind]
    tol = 1e-3 if dtype == "float16" else 1e-5
    check_op(kind, [sample(dtype, domain=domain)], attrs, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_float_unary_other_dtypes_match_onnxruntime(dtype: str) -> None:
    for kind in ("exp", "sigmoid", "tanh", "sqrt", "leaky_relu"):
        op_type, attrs, opset, domain = FLOAT_UNARY[kind]
        x = sample(dtype, domain=domain)
        tol = 1e-3 if dtype == "float16" else 1e-7
        assert_close(reference(kind, [x], attrs), run_ort(op_type, [x], attrs, opset), tol, tol)


def test_gelu_tanh_approximation_matches_onnxruntime() -> None:
    x = sample("float32")
    attrs = {"approximate": "tanh"}
    assert_close(reference("gelu", [x], attrs), run_ort("Gelu", [x], attrs, 20), 1e-5, 1e-6)
    check_op("gelu", [x], attrs)


def test_defaults_match_onnxruntime() -> None:
    x = sample("float32")
    for kind, op_type in [("leaky_relu", "LeakyRelu"), ("elu", "Elu"), ("selu", "Selu"),
                          ("hard_sigmoid", "HardSigmoid"), ("gelu", "Gelu")]:
        assert_close(reference(kind, [x]), run_ort(op_type, [x], {}, 20), 1e-5, 1e-6, kind)


def test_large_magnitudes_do_not_overflow() -> None:
    x = np.array([-100.0, -20.0, 0.0, 20.0, 100.0], np.float32)
    for kind, op_type in [("sigmoid", "Sigmoid"), ("softplus", "Softplus"), ("mish", "Mish")]:
        ref = reference(kind, [x])
        assert np.isfinite(ref).all(), kind
        assert_close(ref, run_ort(op_type, [x], {}, 18), 1e-5, 1e-6, kind)
        check_op(kind, [x])


SPECIAL = np.array([0.0, -0.0, 1.5, -2.5, np.inf, -np.inf, np.nan], np.float32)


@pytest.mark.parametrize("pos,neg", [(1, 1), (1, 0), (0, 1), (0, 0)])
def test_is_inf(pos: int, neg: int) -> None:
    attrs = {"detect_positive": pos, "detect_negative": neg}
    ref = reference("is_inf", [SPECIAL], attrs)
    np.testing.assert_array_equal(ref, run_ort("IsInf", [SPECIAL], attrs, 20))
    check_op("is_inf", [SPECIAL], attrs)


def test_is_nan_and_sign_on_special_values() -> None:
    np.testing.assert_array_equal(reference("is_nan", [SPECIAL]), run_ort("IsNaN", [SPECIAL]))
    check_op("is_nan", [SPECIAL])
    assert_close(reference("sign", [SPECIAL]), run_ort("Sign", [SPECIAL]), 0, 0)
    check_op("sign", [SPECIAL])


# ---------------------------------------------------------------- unary ops on ints too


@pytest.mark.parametrize("kind,dtype", [(k, d) for k, (_, ds) in INT_UNARY.items() for d in ds])
def test_int_unary(kind: str, dtype: str) -> None:
    x = sample(dtype)
    check_op(kind, [x], {})
    assert_close(reference(kind, [x]), _ort_or_skip(INT_UNARY[kind][0], [x], {}, 17), 1e-6, 1e-6)


def test_not() -> None:
    x = sample("bool")
    np.testing.assert_array_equal(reference("not", [x]), run_ort("Not", [x]))
    check_op("not", [x])


@pytest.mark.parametrize("dtype,lo,hi", [
    ("float32", -1.0, 1.5), ("float16", -0.5, 0.5), ("float64", 0.0, 2.0), ("int8", -3, 4),
    ("uint8", 2, 5), ("int64", -4, 6), ("int32", 3, -3),
])
def test_clip(dtype: str, lo: float, hi: float) -> None:
    x = sample(dtype)
    ref = reference("clip", [x], {"min": lo, "max": hi})
    bounds = [np.array(lo, dtype), np.array(hi, dtype)]
    assert_close(ref, run_ort("Clip", [x, *bounds], {}, 13), 1e-6, 1e-6)
    check_op("clip", [x], {"min": lo, "max": hi})


def test_clip_one_sided_and_unbounded() -> None:
    x = sample("float32")
    np.testing.assert_array_equal(reference("clip", [x], {"min": 0.0}), np.maximum(x, 0))
    np.testing.assert_array_equal(reference("clip", [x], {"max": 0.5}), np.minimum(x, 0.5))
    np.testing.assert_array_equal(reference("clip", [x], {}), x)
    check_op("clip", [x], {"max": 0.5})
    check_op("clip", [x], {})


# ---------------------------------------------------------------- binary ops


@pytest.mark.parametrize("kind,dtype", [(k, d) for k, (_, ds) in BINARY.items() for d in ds])
def test_binary(kind: str, dtype: str) -> None:
    a = sample(dtype, (2, 1, 4), seed=1)
    b = sample(dtype, (3, 1), domain="nonzero" if kind == "div" else "any", seed=2)
    check_op(kind, [a, b], {})
    expected = _ort_or_skip(BINARY[kind][0], [a, b], {}, 17)
    assert_close(reference(kind, [a, b]), expected, 1e-6, 1e-6)


def test_integer_division_truncates_toward_zero() -> None:
    a = np.array([7, -7, 7, -7, 0, 6], np.int32)
    b = np.array([2, 2, -2, -2, 3, -3], np.int32)
    expected = np.array([3, -3, -3, 3, 0, -2], np.int32)
    np.testing.assert_array_equal(reference("div", [a, b]), expected)
    np.testing.assert_array_equal(run_ort("Div", [a, b]), expected)
    check_op("div", [a, b])


def test_float16_binary() -> None:
    a, b = sample("float16", seed=1), sample("float16", (4,), seed=2)
    for kind, op_type in [("add", "Add"), ("mul", "Mul"), ("div", "Div"), ("max", "Max")]:
        assert_close(reference(kind, [a, b]), run_ort(op_type, [a, b]), 1e-3, 1e-3, kind)
        check_op(kind, [a, b])


def test_scalar_and_zero_size_operands() -> None:
    x, s = sample("float32"), np.array(1.5, np.float32)
    check_op("add", [x, s])
    check_op("mul", [s, s])
    assert reference("add", [s, s]).shape == ()
    check_op("add", [np.zeros((0, 3), np.float32), np.ones((3,), np.float32)])


@pytest.mark.parametrize("base,exp", [
    ("float32", "float32"), ("float32", "int64"), ("float32", "int32"), ("float64", "float64"),
    ("int32", "int32"), ("int64", "int64"), ("int32", "float32"), ("float16", "float16"),
])
def test_pow(base: str, exp: str) -> None:
    rng = np.random.default_rng(3)
    if base.startswith("int"):
        a = rng.integers(-4, 5, SHAPE).astype(base)
    else:
        a = (rng.uniform(0.1, 3.0, SHAPE)).astype(base)
    e = rng.integers(0, 4, (4,)).astype(exp) if exp.startswith("int") else \
        rng.uniform(-2.0, 2.5, (4,)).astype(exp)
    if base.startswith("int") and exp.startswith("float"):
        a = np.abs(a) + 1  # negative or zero bases give NaN/inf there: int cast is undefined
    tol = 1e-3 if base == "float16" else 1e-5
    assert_close(reference("pow", [a, e]), run_ort("Pow", [a, e], {}, 15), tol, tol)
    check_op("pow", [a, e], rtol=tol, atol=tol)


def test_pow_integer_negative_exponent_truncates() -> None:
    a = np.array([2, 1, -1, 4], np.int32)
    e = np.array([-1, -2, -3, 0], np.int32)
    np.testing.assert_array_equal(reference("pow", [a, e]), run_ort("Pow", [a, e], {}, 15))
    check_op("pow", [a, e])


@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (4,), ()])
def test_prelu(slope_shape: tuple[int, ...]) -> None:
    x = sample("float32", (2, 3, 2, 4))
    slope = sample("float32", slope_shape, seed=5)
    assert_close(reference("prelu", [x, slope]), run_ort("PRelu", [x, slope]), 1e-6, 1e-6)
    check_op("prelu", [x, slope])
    xi, si = sample("int32", (2, 3)), np.array([2, -1, 3], np.int32)
    np.testing.assert_array_equal(reference("prelu", [xi, si]), run_ort("PRelu", [xi, si]))
    check_op("prelu", [xi, si])


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "uint8", "float16"])
def test_where(dtype: str) -> None:
    cond = sample("bool", (3, 1))
    x, y = sample(dtype, (2, 1, 4), seed=1), sample(dtype, (4,), seed=2)
    expected = np.where(cond, x, y) if dtype == "bool" else run_ort("Where", [cond, x, y])
    np.testing.assert_array_equal(reference("where", [cond, x, y]), expected)
    check_op("where", [cond, x, y])


# ---------------------------------------------------------------- cast

CAST_DTYPES = ["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8",
               "uint16", "uint32", "uint64", "bool"]


def _cast_input(src: str, dst: str) -> np.ndarray:
    if src in ("float32", "float64", "float16"):
        # values representable in every target: no negatives for unsigned, 0.5 for bool
        lo = 0.0 if dst.startswith("uint") or dst == "bool" else -100.0
        x = np.array([lo, 0.0, 0.5, 0.99, 1.0, 2.5, 99.7, -0.0], np.float64)
        x[0] = lo if lo == 0.0 else -99.7
        return x.astype(src)
    if src == "bool":
        return np.array([True, False, True], bool)
    x = np.array([0, 1, 5, 100, 127], np.int64)
    if not src.startswith("uint") and not dst.startswith("uint"):
        x = np.concatenate([x, -x])
    return x.astype(src)


@pytest.mark.parametrize("dst", CAST_DTYPES)
@pytest.mark.parametrize("src", CAST_DTYPES)
def test_cast(src: str, dst: str) -> None:
    x = _cast_input(src, dst)
    attrs = {"to": dst}
    check_op("cast", [x], attrs)
    to = helper.np_dtype_to_tensor_dtype(np.dtype(dst))
    expected = run_ort("Cast", [x], {"to": to}, 21)
    np.testing.assert_array_equal(reference("cast", [x], attrs), expected)


# ---------------------------------------------------------------- type rules


def _t(shape: tuple[int, ...], dtype: str = "float32", layout: str | None = None) -> TensorType:
    return TensorType(shape, dtype, layout)


def test_infer_broadcast_and_dtypes() -> None:
    out = get_op("add").infer([_t((2, 1, 4)), _t((3, 1))], Attrs())
    assert out == [TensorType((2, 3, 4), "float32")]
    out = get_op("add").infer([_t((1, 3, 2, 2), layout="NCHW"), _t((3, 1, 1))], Attrs())
    assert out == [TensorType((1, 3, 2, 2), "float32", "NCHW")]
    assert get_op("less").infer([_t((2,), "int8"), _t((2,), "int8")], Attrs())[0].dtype == "bool"
    assert get_op("cast").infer([_t((2,))], Attrs.of(to="uint8"))[0].dtype == "uint8"
    assert get_op("pow").infer([_t((2,)), _t((), "int64")], Attrs())[0].dtype == "float32"
    out = get_op("where").infer([_t((2, 1), "bool"), _t((3,), "int8"), _t((), "int8")], Attrs())
    assert out == [TensorType((2, 3), "int8")]


@pytest.mark.parametrize("kind,types,attrs,message", [
    ("add", [_t((2, 3)), _t((4,))], {}, "do not broadcast"),
    ("add", [_t((2,)), _t((2,), "int32")], {}, "input dtypes differ"),
    ("add", [_t((2,), "bool"), _t((2,), "bool")], {}, "dtype bool is not supported"),
    ("exp", [_t((2,), "int32")], {}, "exp: input dtype int32"),
    ("neg", [_t((2,), "uint8")], {}, "neg: input dtype uint8"),
    ("and", [_t((2,)), _t((2,))], {}, "and: input dtype float32"),
    ("relu", [_t((2,)), _t((2,))], {}, "expects 1 input"),
    ("where", [_t((2,)), _t((2,)), _t((2,))], {}, "condition dtype float32"),
    ("where", [_t((2,), "bool"), _t((2,)), _t((2,), "int32")], {}, "branch dtypes differ"),
    ("prelu", [_t((2, 3)), _t((2,))], {}, "does not broadcast"),
    ("prelu", [_t((3,)), _t((2, 3))], {}, "does not broadcast to input"),
    ("prelu", [_t((3,)), _t((3,), "float64")], {}, "slope dtype"),
    ("cast", [_t((2,))], {"to": "bfloat16"}, "'to' must be one of"),
    ("gelu", [_t((2,))], {"approximate": "fast"}, "approximate must be"),
    ("pow", [_t((2,), "bool"), _t((2,))], {}, "base dtype bool"),
])
def test_infer_errors(kind: str, types: list[TensorType], attrs: dict[str, Any], message: str
                      ) -> None:
    with pytest.raises(OpError, match=message):
        get_op(kind).infer(types, Attrs.of(attrs))


def test_trailing_absent_inputs_are_ignored() -> None:
    out = get_op("clip").infer([_t((2,)), None, None], Attrs.of(max=1.0))
    assert out == [TensorType((2,), "float32")]
    with pytest.raises(OpError, match="expects 1 input"):
        get_op("clip").infer([None], Attrs())
