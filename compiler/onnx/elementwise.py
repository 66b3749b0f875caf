"""ONNX → graph IR: elementwise ops (math, activations, arithmetic, comparisons, logic, cast).

Attributes are made explicit with their ONNX defaults, so each graph-IR op has one form across
opsets. Variadic Sum/Mean/Min/Max become chains of binary ops; Clip's optional bounds become
attributes when they are constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from nnc.compiler.onnx.registry import ConversionError, ConvertContext, converter
from nnc.ir.types import DTYPES, is_float

SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875
FLT_MAX = float(np.finfo(np.float32).max)


def _emit(ctx: ConvertContext, kind: str, attrs: dict[str, Any] | None = None) -> Sequence[str]:
    """The node's own inputs and outputs as one graph-IR op."""
    inputs = [ctx.input(i) for i in range(ctx.num_inputs)]
    return ctx.emit(kind, inputs, attrs, outputs=ctx.node.output)


def _plain(op_type: str, kind: str, since: int) -> None:
    converter(op_type, since)(lambda ctx: _emit(ctx, kind))


def _with_attrs(op_type: str, kind: str, since: int, defaults: dict[str, float]) -> None:
    def convert(ctx: ConvertContext) -> Sequence[str]:
        return _emit(ctx, kind, {k: float(ctx.attr(k, v)) for k, v in defaults.items()})

    converter(op_type, since)(convert)


# unary math and activations without attributes; `since` is the first opset without legacy
# attributes (consumed_inputs, broadcast) that nnc would otherwise have to interpret
for _op_type, _kind, _since in [
    ("Sqrt", "sqrt", 6), ("Exp", "exp", 6), ("Log", "log", 6), ("Neg", "neg", 6),
    ("Abs", "abs", 6), ("Reciprocal", "reciprocal", 6), ("Floor", "floor", 6),
    ("Ceil", "ceil", 6), ("Relu", "relu", 6), ("Sigmoid", "sigmoid", 6), ("Tanh", "tanh", 6),
    ("Softplus", "softplus", 1), ("Softsign", "softsign", 1), ("Erf", "erf", 9),
    ("HardSwish", "hard_swish", 14), ("Mish", "mish", 18), ("Sign", "sign", 9),
    ("IsNaN", "is_nan", 9), ("Not", "not", 1),
    ("Sin", "sin", 7), ("Cos", "cos", 7), ("Tan", "tan", 7), ("Asin", "asin", 7),
    ("Acos", "acos", 7), ("Atan", "atan", 7), ("Sinh", "sinh", 9), ("Cosh", "cosh", 9),
    ("Asinh", "asinh", 9), ("Acosh", "acosh", 9), ("Atanh", "atanh", 9),
    # binary ops broadcast like numpy from opset 7 on
    ("Add", "add", 7), ("Sub", "sub", 7), ("Mul", "mul", 7), ("Div", "div", 7),
    ("Pow", "pow", 7), ("PRelu", "prelu", 7), ("Equal", "equal", 7), ("Less", "less", 7),
    ("Greater", "greater", 7), ("LessOrEqual", "less_equal", 12),
    ("GreaterOrEqual", "greater_equal", 12), ("And", "and", 7), ("Or", "or", 7),
    ("Xor", "xor", 7), ("Where", "where", 9),
]:
    _plain(_op_type, _kind, _since)

for _op_type, _kind, _since, _defaults in [
    ("LeakyRelu", "leaky_relu", 6, {"alpha": 0.01}),
    ("Elu", "elu", 6, {"alpha": 1.0}),
    ("Selu", "selu", 6, {"alpha": SELU_ALPHA, "gamma": SELU_GAMMA}),
    ("HardSigmoid", "hard_sigmoid", 6, {"alpha": 0.2, "beta": 0.5}),
    ("Celu", "celu", 12, {"alpha": 1.0}),
    ("ThresholdedRelu", "thresholded_relu", 10, {"alpha": 1.0}),
    ("Swish", "swish", 24, {"alpha": 1.0}),
]:
    _with_attrs(_op_type, _kind, _since, _defaults)


@converter("IsInf", since=10)
def _is_inf(ctx: ConvertContext) -> Sequence[str]:
    return _emit(ctx, "is_inf", {
        "detect_positive": int(ctx.attr("detect_positive", 1)),
        "detect_negative": int(ctx.attr("detect_negative", 1)),
    })


@converter("Gelu", since=20)
def _gelu(ctx: ConvertContext) -> Sequence[str]:
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ConversionError(f"Gelu: approximate={approximate!r} is not supported (none, tanh)")
    return _emit(ctx, "gelu", {"approximate": approximate})


# ---------------------------------------------------------------- clip


def _bound(value: np.ndarray | float, dtype: str) -> float | int:
    """A clip bound as an attribute: a Python scalar of the input's kind."""
    arr = np.asarray(value)
    if arr.size != 1:
        raise ConversionError(f"Clip: min/max must be scalars, got shape {arr.shape}")
    scalar = arr.reshape(()).astype(dtype).item()
    return float(scalar) if is_float(dtype) else int(scalar)


@converter("Clip", since=6)
def _clip_attrs(ctx: ConvertContext) -> Sequence[str]:
    # before opset 11 absent bounds default to the float32 limits (onnx schema)
    dtype = ctx.type(0).dtype  # type: ignore[union-attr]
    lo = _bound(ctx.attr("min", -FLT_MAX), dtype)
    hi = _bound(ctx.attr("max", FLT_MAX), dtype)
    return ctx.emit("clip", [ctx.input(0)], {"min": lo, "max": hi}, outputs=ctx.node.output)


@converter("Clip", since=11)
def _clip_inputs(ctx: ConvertContext) -> Sequence[str]:
    x = ctx.input(0)
    dtype = ctx.type(0).dtype  # type: ignore[union-attr]
    bounds = [(i, key) for i, key in [(1, "min"), (2, "max")] if ctx.has_input(i)]
    if not bounds:
        return [x]
    values = {key: ctx.const(i) for i, key in bounds}
    if all(v is not None for v in values.values()):
        attrs = {key: _bound(v, dtype) for key, v in values.items()}
        return ctx.emit("clip", [x], attrs, outputs=ctx.node.output)
    # a runtime bound: lower bound first, then upper (so min > max gives max, as ONNX says)
    for k, (i, key) in enumerate(bounds):
        out = ctx.node.output if k == len(bounds) - 1 else None
        value = values[key]
        if value is None:
            x = ctx.emit("max" if key == "min" else "min", [x, ctx.input(i)], outputs=out)[0]
        else:
            x = ctx.emit("clip", [x], {key: _bound(value, dtype)}, outputs=out)[0]
    return [x]


# ---------------------------------------------------------------- variadic ops


def _chain(ctx: ConvertContext, kind: str, outputs: Sequence[str] | None) -> str:
    names = [ctx.input(i) for i in range(ctx.num_inputs)]
    if not names or not all(names):
        raise ConversionError(f"{ctx.node.op_type}: needs at least one input, none may be absent")
    acc = names[0]
    for k, name in enumerate(names[1:]):
        last = k == len(names) - 2
        acc = ctx.emit(kind, [acc, name], outputs=outputs if last else None)[0]
    return acc


def _variadic(op_type: str, kind: str) -> None:
    converter(op_type, 6)(lambda ctx: [_chain(ctx, kind, ctx.node.output)])


_variadic("Sum", "add")
_variadic("Min", "min")
_variadic("Max", "max")


@converter("Mean", since=6)
def _mean(ctx: ConvertContext) -> Sequence[str]:
    if ctx.num_inputs == 1:
        return [ctx.input(0)]
    total = _chain(ctx, "add", None)
    count = ctx.constant(np.array(ctx.num_inputs, ctx.value_type(total).dtype), "mean_count")
    return ctx.emit("div", [total, count], outputs=ctx.node.output)


# ---------------------------------------------------------------- cast


def _dtype_of(to: int) -> str:
    try:
        dtype = str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to)))
    except Exception:
        dtype = ""
    if dtype not in DTYPES:
        name = onnx.TensorProto.DataType.Name(to) if to in onnx.TensorProto.DataType.values() \
            else str(to)
        raise ConversionError(f"Cast to {name} is not supported (supported: {sorted(DTYPES)})")
    return dtype


def _cast_to(ctx: ConvertContext, dtype: str) -> Sequence[str]:
    if ctx.type(0).dtype == dtype:  # type: ignore[union-attr]
        return [ctx.input(0)]
    return ctx.emit("cast", [ctx.input(0)], {"to": dtype}, outputs=ctx.node.output)


@converter("Cast", since=6)
def _cast(ctx: ConvertContext) -> Sequence[str]:
    # `saturate` and `round_mode` only concern float8 targets, which nnc rejects
    return _cast_to(ctx, _dtype_of(int(ctx.attr("to"))))


@converter("CastLike", since=15)
def _cast_like(ctx: ConvertContext) -> Sequence[str]:
    return _cast_to(ctx, ctx.type(1).dtype)  # type: ignore[union-attr]
