"""Elementwise ops: unary math, activations, binary arithmetic, comparisons, logic, cast, where.

Each op gives a type rule, a numpy reference and a scalar rule (see nnc.ir.ops). Inputs broadcast
like numpy. float16 is computed in float32 in both the scalar rule and the reference (C has no
half-precision math), then rounded back, as onnxruntime does.

>>> from nnc.ir.ops import get_op
>>> import numpy as np
>>> get_op("div").reference([np.array([-7], "int32"), np.array([2], "int32")], Attrs())[0]
array([-3], dtype=int32)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from nnc.ir.float_to_int import float_to_int
from nnc.ir.graph import Attrs
from nnc.ir.loops import Expr, binary, call, cast, const, logical_and, maximum, minimum, select
from nnc.ir.ops import InferFn, OpDef, OpError, ReferenceFn, ScalarFn, broadcast_shapes, register
from nnc.ir.types import DTYPES, FLOAT_DTYPES, INT_DTYPES, TensorType, is_float

FLOATS = FLOAT_DTYPES
SIGNED = FLOAT_DTYPES | {"int8", "int16", "int32", "int64"}
NUMERIC = FLOAT_DTYPES | INT_DTYPES
BOOL = frozenset({"bool"})
ANY = DTYPES

Rule = Callable[..., Expr]  # rule(*input_exprs, attrs) -> Expr
NpRule = Callable[..., np.ndarray]  # ref(*input_arrays, attrs) -> array

SQRT1_2 = math.sqrt(0.5)
SQRT2_PI = math.sqrt(2.0 / math.pi)
SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875


# ---------------------------------------------------------------- helpers


def _widen(e: Expr) -> Expr:
    """float16 math is done in float32."""
    return cast(e, "float32") if e.dtype == "float16" else e


def _widen_np(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _present(kind: str, types: Sequence[TensorType | None], n: int) -> list[TensorType]:
    types = list(types)
    while len(types) > n and types[-1] is None:  # trailing absent optional inputs
        types.pop()
    if len(types) != n or any(t is None for t in types):
        raise OpError(f"{kind}: expects {n} input(s), got {len(types)}")
    return list(types)  # type: ignore[arg-type]


def _require(kind: str, dtype: str, allowed: frozenset[str], what: str = "input") -> None:
    if dtype not in allowed:
        raise OpError(
            f"{kind}: {what} dtype {dtype} is not supported (allowed: {', '.join(sorted(allowed))})"
        )


def _broadcast_type(types: Sequence[TensorType], dtype: str) -> TensorType:
    shape = broadcast_shapes(*[t.shape for t in types])
    layout = next((t.layout for t in types if t.rank == len(shape) and t.layout), None)
    return TensorType(shape, dtype, layout)


def _infer(kind: str, arity: int, allowed: frozenset[str], out_dtype: str | None = None) -> InferFn:
    """Type rule: `arity` inputs of one dtype from `allowed`, broadcast together."""

    def infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
        ts = _present(kind, types, arity)
        dtypes = {t.dtype for t in ts}
        if len(dtypes) > 1:
            raise OpError(f"{kind}: input dtypes differ ({', '.join(t.dtype for t in ts)})")
        _require(kind, ts[0].dtype, allowed)
        return [_broadcast_type(ts, out_dtype or ts[0].dtype)]

    return infer


def _scalar(rule: Rule) -> ScalarFn:
    """Scalar rule from `rule(*exprs, attrs)`; float16 inputs widened, result cast to the output."""

    def scalar(args: Sequence[Expr], attrs: Attrs, dt: str) -> Expr:
        return cast(rule(*[_widen(a) for a in args], attrs), dt)

    return scalar


def _reference(ref: NpRule, out_dtype: str | None = None) -> ReferenceFn:
    """Reference from `ref(*arrays, attrs)`; float16 widened, result cast to the output dtype."""

    def reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        arrays = [np.asarray(x) for x in xs if x is not None]
        dt = out_dtype or str(arrays[0].dtype)
        with np.errstate(all="ignore"):
            y = np.asarray(ref(*[_widen_np(x) for x in arrays], attrs)).astype(dt, copy=False)
        return [y]

    return reference


def _elementwise(
    kind: str, arity: int, ref: NpRule, rule: Rule, allowed: frozenset[str] = FLOATS,
    out_dtype: str | None = None,
) -> None:
    register(OpDef(
        kind,
        infer=_infer(kind, arity, allowed, out_dtype),
        reference=_reference(ref, out_dtype),
        scalar=_scalar(rule),
    ))


def _erf_np(x: np.ndarray) -> np.ndarray:
    # numpy has no erf; math.erf is exact to double precision
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


def _softplus(x: Expr) -> Expr:
    # log(1 + exp(x)) without overflow for large x
    return maximum(x, 0.0) + call("log1p", call("exp", -call("abs", x)))


def _sigmoid(x: Expr) -> Expr:
    return 1.0 / (1.0 + call("exp", -x))


def _sigmoid_np(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------- unary math (float only)

for _kind, _np_fn in [
    ("sqrt", np.sqrt), ("exp", np.exp), ("log", np.log), ("tanh", np.tanh), ("floor", np.floor),
    ("ceil", np.ceil), ("sin", np.sin), ("cos", np.cos), ("tan", np.tan), ("asin", np.arcsin),
    ("acos", np.arccos), ("atan", np.arctan), ("sinh", np.sinh), ("cosh", np.cosh),
    ("asinh", np.arcsinh), ("acosh", np.arccosh), ("atanh", np.arctanh),
]:
    _elementwise(
        _kind, 1,
        ref=lambda x, a, f=_np_fn: f(x),
        rule=lambda x, a, fn=_kind: call(fn, x),
    )

_elementwise("erf", 1, lambda x, a: _erf_np(x), lambda x, a: call("erf", x))
_elementwise("reciprocal", 1, lambda x, a: 1.0 / x, lambda x, a: 1.0 / x)
_elementwise("sigmoid", 1, lambda x, a: _sigmoid_np(x), lambda x, a: _sigmoid(x))
_elementwise("softplus", 1, lambda x, a: np.logaddexp(0, x), lambda x, a: _softplus(x))
_elementwise(
    "softsign", 1, lambda x, a: x / (1 + np.abs(x)), lambda x, a: x / (1.0 + call("abs", x))
)
_elementwise(
    "mish", 1,
    lambda x, a: x * np.tanh(np.logaddexp(0, x)),
    lambda x, a: x * call("tanh", _softplus(x)),
)
_elementwise(
    "is_nan", 1, lambda x, a: np.isnan(x), lambda x, a: call("isnan", x), out_dtype="bool"
)


def _is_inf_np(x: np.ndarray, a: Attrs) -> np.ndarray:
    pos, neg = bool(a.get("detect_positive", 1)), bool(a.get("detect_negative", 1))
    return (np.isposinf(x) & pos) | (np.isneginf(x) & neg)


def _is_inf(x: Expr, a: Attrs) -> Expr:
    pos, neg = a.get("detect_positive", 1), a.get("detect_negative", 1)
    inf = call("isinf", x)
    if pos and neg:
        return inf
    if pos:
        return logical_and(inf, x.gt(0.0))
    if neg:
        return logical_and(inf, x.lt(0.0))
    return logical_and(inf, x.ne(x))  # detects nothing: always false


_elementwise("is_inf", 1, _is_inf_np, _is_inf, out_dtype="bool")


# ---------------------------------------------------------------- activations (float only)


def _attr(a: Attrs, key: str, default: float) -> float:
    return a.get_float(key, default)


_elementwise(
    "leaky_relu", 1,
    lambda x, a: np.where(x >= 0, x, x * _attr(a, "alpha", 0.01)),
    lambda x, a: select(x.ge(0.0), x, x * _attr(a, "alpha", 0.01)),
)
_elementwise(
    "elu", 1,
    lambda x, a: np.where(x > 0, x, _attr(a, "alpha", 1.0) * np.expm1(x)),
    lambda x, a: select(x.gt(0.0), x, _attr(a, "alpha", 1.0) * call("expm1", x)),
)
_elementwise(
    "selu", 1,
    lambda x, a: _attr(a, "gamma", SELU_GAMMA)
    * np.where(x > 0, x, _attr(a, "alpha", SELU_ALPHA) * np.expm1(x)),
    lambda x, a: _attr(a, "gamma", SELU_GAMMA)
    * select(x.gt(0.0), x, _attr(a, "alpha", SELU_ALPHA) * call("expm1", x)),
)
_elementwise(
    "celu", 1,
    lambda x, a: np.maximum(x, 0)
    + np.minimum(0, _attr(a, "alpha", 1.0) * np.expm1(x / _attr(a, "alpha", 1.0))),
    lambda x, a: maximum(x, 0.0)
    + minimum(_attr(a, "alpha", 1.0) * call("expm1", x / _attr(a, "alpha", 1.0)), 0.0),
)
_elementwise(
    "thresholded_relu", 1,
    lambda x, a: np.where(x > _attr(a, "alpha", 1.0), x, 0),
    lambda x, a: select(x.gt(_attr(a, "alpha", 1.0)), x, 0.0),
)
_elementwise(
    "hard_sigmoid", 1,
    lambda x, a: np.clip(x * _attr(a, "alpha", 0.2) + _attr(a, "beta", 0.5), 0, 1),
    lambda x, a: minimum(maximum(x * _attr(a, "alpha", 0.2) + _attr(a, "beta", 0.5), 0.0), 1.0),
)
_elementwise(
    "hard_swish", 1,
    lambda x, a: x * np.clip(x * (1.0 / 6.0) + 0.5, 0, 1),
    lambda x, a: x * minimum(maximum(x * (1.0 / 6.0) + 0.5, 0.0), 1.0),
)
_elementwise(
    "swish", 1,
    lambda x, a: x * _sigmoid_np(_attr(a, "alpha", 1.0) * x),
    lambda x, a: x * _sigmoid(x * _attr(a, "alpha", 1.0)),
)


def _gelu_np(x: np.ndarray, a: Attrs) -> np.ndarray:
    if a.get("approximate", "none") == "tanh":
        return 0.5 * x * (1 + np.tanh(SQRT2_PI * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1 + _erf_np(x * SQRT1_2))


def _gelu(x: Expr, a: Attrs) -> Expr:
    if a.get("approximate", "none") == "tanh":
        return 0.5 * x * (1.0 + call("tanh", SQRT2_PI * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1.0 + call("erf", x * SQRT1_2))


def _gelu_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    if attrs.get("approximate", "none") not in ("none", "tanh"):
        raise OpError(f"gelu: approximate must be 'none' or 'tanh', got {attrs['approximate']!r}")
    return list(_infer("gelu", 1, FLOATS)(types, attrs))


register(OpDef("gelu", infer=_gelu_infer, reference=_reference(_gelu_np), scalar=_scalar(_gelu)))


# ---------------------------------------------------------------- unary ops on ints too


def _abs(x: Expr, a: Attrs) -> Expr:
    if is_float(x.dtype):
        return call("abs", x)
    if x.dtype.startswith("uint"):
        return x
    return select(x.lt(0), -x, x)


def _sign(x: Expr, a: Attrs) -> Expr:
    one, zero = const(1, x.dtype), const(0, x.dtype)
    if x.dtype.startswith("uint"):
        return select(x.gt(zero), one, zero)
    # the last branch returns x itself so 0 (and NaN) stay as they are
    return select(x.gt(zero), one, select(x.lt(zero), const(-1, x.dtype), x))


_elementwise("relu", 1, lambda x, a: np.maximum(x, 0), lambda x, a: maximum(x, 0), SIGNED)
_elementwise("neg", 1, lambda x, a: np.negative(x), lambda x, a: -x, SIGNED)
_elementwise("abs", 1, lambda x, a: np.abs(x), _abs, NUMERIC)
_elementwise("sign", 1, lambda x, a: np.sign(x), _sign, NUMERIC)
_elementwise("not", 1, lambda x, a: np.logical_not(x), lambda x, a: call("not", x), BOOL)


def _clip_np(x: np.ndarray, a: Attrs) -> np.ndarray:
    # ONNX: when min > max every value becomes max, which max-then-min order gives
    if "min" in a:
        x = np.maximum(x, np.asarray(a["min"], x.dtype))
    if "max" in a:
        x = np.minimum(x, np.asarray(a["max"], x.dtype))
    return x


def _clip(x: Expr, a: Attrs) -> Expr:
    if "min" in a:
        x = maximum(x, a["min"])
    if "max" in a:
        x = minimum(x, a["max"])
    return x


_elementwise("clip", 1, _clip_np, _clip, NUMERIC)


# ---------------------------------------------------------------- binary arithmetic


def _div_np(x: np.ndarray, y: np.ndarray, a: Attrs) -> np.ndarray:
    if is_float(str(x.dtype)):
        return np.divide(x, y)
    # integer division truncates toward zero (C semantics), as in onnx.reference
    q = np.floor_divide(x, y)
    fix = (np.remainder(x, y) != 0) & ((x < 0) ^ (y < 0))
    return q + fix.astype(q.dtype)


_elementwise("add", 2, lambda x, y, a: x + y, lambda x, y, a: x + y, NUMERIC)
_elementwise("sub", 2, lambda x, y, a: x - y, lambda x, y, a: x - y, NUMERIC)
_elementwise("mul", 2, lambda x, y, a: x * y, lambda x, y, a: x * y, NUMERIC)
_elementwise("div", 2, _div_np, lambda x, y, a: x / y, NUMERIC)
_elementwise("min", 2, lambda x, y, a: np.minimum(x, y), lambda x, y, a: minimum(x, y), NUMERIC)
_elementwise("max", 2, lambda x, y, a: np.maximum(x, y), lambda x, y, a: maximum(x, y), NUMERIC)


def _pow_dtype(base: str, exponent: str) -> str:
    # onnxruntime computes integer powers with std::pow in double precision
    if not is_float(base) or exponent == "float64":
        return "float64"
    return base


def _pow_np(x: np.ndarray, y: np.ndarray, a: Attrs) -> np.ndarray:
    wide = _pow_dtype(str(x.dtype), str(y.dtype))
    return np.power(x.astype(wide), y.astype(wide))


def _pow(x: Expr, y: Expr, a: Attrs) -> Expr:
    wide = _pow_dtype(x.dtype, y.dtype)
    return binary("pow", cast(x, wide), cast(y, wide))


def _pow_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, y = _present("pow", types, 2)
    _require("pow", x.dtype, NUMERIC, "base")
    _require("pow", y.dtype, NUMERIC, "exponent")
    return [_broadcast_type([x, y], x.dtype)]


register(OpDef("pow", infer=_pow_infer, reference=_reference(_pow_np), scalar=_scalar(_pow)))


def _prelu_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    x, slope = _present("prelu", types, 2)
    if x.dtype != slope.dtype:
        raise OpError(f"prelu: slope dtype {slope.dtype} differs from input dtype {x.dtype}")
    _require("prelu", x.dtype, NUMERIC)
    try:
        fits = np.broadcast_shapes(x.shape, slope.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise OpError(f"prelu: slope shape {slope.shape} does not broadcast to input {x.shape}")
    return [TensorType(x.shape, x.dtype, x.layout)]


register(OpDef(
    "prelu",
    infer=_prelu_infer,
    reference=_reference(lambda x, s, a: np.where(x < 0, x * s, x)),
    scalar=_scalar(lambda x, s, a: select(x.lt(0), x * s, x)),
))


# ---------------------------------------------------------------- comparisons and logic

for _kind, _cmp_fn, _op in [
    ("equal", np.equal, "eq"), ("less", np.less, "lt"), ("greater", np.greater, "gt"),
    ("less_equal", np.less_equal, "le"), ("greater_equal", np.greater_equal, "ge"),
]:
    _elementwise(
        _kind, 2,
        ref=lambda x, y, a, f=_cmp_fn: f(x, y),
        rule=lambda x, y, a, op=_op: binary(op, x, y),
        allowed=ANY if _kind == "equal" else NUMERIC,
        out_dtype="bool",
    )

for _kind, _logic_fn in [("and", np.logical_and), ("or", np.logical_or), ("xor", np.logical_xor)]:
    _elementwise(
        _kind, 2,
        ref=lambda x, y, a, f=_logic_fn: f(x, y),
        rule=lambda x, y, a, op=_kind: binary(op, x, y),
        allowed=BOOL,
    )


def _where_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    c, x, y = _present("where", types, 3)
    _require("where", c.dtype, BOOL, "condition")
    if x.dtype != y.dtype:
        raise OpError(f"where: branch dtypes differ ({x.dtype} vs {y.dtype})")
    return [_broadcast_type([c, x, y], x.dtype)]


def _where_reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    c, x, y = xs[0], xs[1], xs[2]
    assert c is not None and x is not None and y is not None
    return [np.asarray(np.where(c, x, y)).astype(x.dtype)]


register(OpDef(
    "where",
    infer=_where_infer,
    reference=_where_reference,
    scalar=lambda args, a, dt: select(args[0], args[1], args[2]),
))


# ---------------------------------------------------------------- cast


def _cast_infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    (x,) = _present("cast", types, 1)
    to = attrs.get("to")
    if to not in DTYPES:
        raise OpError(f"cast: 'to' must be one of {', '.join(sorted(DTYPES))}, got {to!r}")
    return [TensorType(x.shape, str(to), x.layout)]


def _cast_reference(x: np.ndarray, to: str) -> np.ndarray:
    if x.dtype.kind == "f" and np.dtype(to).kind in "iu":
        return float_to_int(x, to)
    return x.astype(to)


def _cast(args: Sequence[Expr], attrs: Attrs, dt: str) -> Expr:
    x = args[0]
    if dt == "bool" and x.dtype != "bool":
        return _widen(x).ne(0)  # a C cast to uint8 would truncate 0.5 to 0
    return cast(x, dt)


register(OpDef(
    "cast",
    infer=_cast_infer,
    # float -> int truncates toward zero; NaN, inf and out-of-range values as nnc.ir.float_to_int
    reference=lambda xs, a: [_cast_reference(np.asarray(xs[0]), str(a["to"]))],
    scalar=_cast,
))
