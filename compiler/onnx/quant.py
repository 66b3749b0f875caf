"""ONNX converters for quantized models: QuantizeLinear, DequantizeLinear (per-tensor, per-axis,
blocked; the opset 10/13/19/21/23 forms), QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger.

They produce the canonical graph-IR ops of `nnc.ir.ops.quant`: a per-axis scale or zero point
vector is reshaped to broadcast against the data (an alias, no copy), a blocked one (constants
only) is expanded to the data's shape, and the output dtype is resolved (zero point's dtype, else
`output_dtype`, else uint8). Where the scale and zero point are compile-time constants the
quantized value's type records them (`TensorType.quant`), so later passes see the scheme.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from nnc.compiler.onnx.nn import _data_type, _single_output, conv_attrs
from nnc.compiler.onnx.registry import ConversionError, ConvertContext, converter
from nnc.ir.ops.quant import DEQUANT_DTYPES, QUANT_DTYPES
from nnc.ir.types import DTYPES, QuantParams, TensorType


def _onnx_dtype(code: int, what: str) -> str:
    try:
        dtype = str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(code)))
    except Exception:
        dtype = ""
    if dtype not in DTYPES:
        name = onnx.TensorProto.DataType.Name(code) if code in onnx.TensorProto.DataType.values() \
            else str(code)
        raise ConversionError(f"{what} {name} is not supported")
    return dtype


def _axis(ctx: ConvertContext, rank: int) -> int:
    """The `axis` attribute, normalized when in range (checked only where it is used)."""
    axis = int(ctx.attr("axis", 1))
    return axis % rank if -rank <= axis < rank else axis


def _param(ctx: ConvertContext, i: int, x: TensorType, axis: int, block: int, what: str) -> str:
    """Input i (a scale or zero point) in canonical form: broadcastable against x."""
    name, t = ctx.input(i), ctx.type(i)
    if t is None:
        return ""
    if t.size == 1 and not block:
        return name if t.rank == 0 else ctx.emit("reshape", [name], {"shape": ()})[0]
    if not 0 <= axis < x.rank:
        raise ConversionError(f"axis={axis} is out of range for the input {x}")
    n = x.shape[axis]
    if block:
        # each element repeats over its block: a gather along the axis (folded when constant)
        want = tuple(-(-n // block) if d == axis else x.shape[d] for d in range(x.rank))
        if block < 0 or t.shape != want:
            raise ConversionError(
                f"blocked {what} {t} does not fit input {x} with axis={axis}, block_size={block}"
                f" (expected shape {want})")
        index = ctx.constant(np.arange(n, dtype=np.int64) // block, "block_index")
        return ctx.emit("gather", [name, index], {"axis": axis})[0]
    if t.rank != 1 or t.shape[0] != n:
        raise ConversionError(
            f"{what} {t} must be a scalar or a 1-D tensor of {n} (axis {axis} of {x})")
    dims = [1] * x.rank
    dims[axis] = n
    return ctx.emit("reshape", [name], {"shape": tuple(dims)})[0]


def _quant_params(ctx: ConvertContext, scale: int, zp: int, axis: int | None) -> QuantParams | None:
    """The constant scale/zero point of inputs `scale`, `zp` (zp may be absent), else None."""
    s = ctx.const(scale)
    z = ctx.const(zp) if ctx.has_input(zp) else np.zeros(1, np.int64)
    if s is None or z is None:
        return None
    s, z = s.ravel(), z.ravel()
    if z.size == 1 and s.size > 1:
        z = np.repeat(z, s.size)
    if z.size != s.size:
        return None
    per_axis = axis if s.size > 1 else None
    return QuantParams(tuple(float(v) for v in s), tuple(int(v) for v in z), per_axis)


def _annotate(ctx: ConvertContext, name: str, quant: QuantParams | None) -> None:
    """Record `quant` on value `name`'s type (in the builder and in the op that defines it)."""
    b = ctx.builder
    if quant is None or not name:
        return
    t = b.types[name]
    new = TensorType(t.shape, t.dtype, t.layout, quant)
    b.types[name] = new
    for k in range(len(b.ops) - 1, -1, -1):
        op = b.ops[k]
        if any(v.name == name for v in op.outputs):
            outs = tuple(v if v.name != name else type(v)(name, new) for v in op.outputs)
            b.ops[k] = op.with_(outputs=outs)
            return


# ---------------------------------------------------------------- QuantizeLinear / Dequantize


def _quantize_dtype(ctx: ConvertContext) -> str:
    zp = ctx.type(2)
    given = ctx.attr("output_dtype", 0)
    out = _onnx_dtype(int(given), "QuantizeLinear output_dtype") if given else None
    if zp is not None:
        if out is not None and out != zp.dtype:
            raise ConversionError(
                f"output_dtype {out} differs from the zero point's dtype {zp.dtype}")
        out = zp.dtype
    out = out or "uint8"
    if out not in QUANT_DTYPES:
        raise ConversionError(
            f"quantizing to {out} is not supported (supported: {sorted(QUANT_DTYPES)})")
    return out


@converter("QuantizeLinear", since=10)
def convert_quantize_linear(ctx: ConvertContext) -> list[str]:
    x = _data_type(ctx, 0, 0)
    dtype = _quantize_dtype(ctx)
    block = int(ctx.attr("block_size", 0))
    axis = _axis(ctx, x.rank) if x.rank else 1
    inputs = [ctx.input(0), _param(ctx, 1, x, axis, block, "scale"),
              _param(ctx, 2, x, axis, block, "zero point")]
    precision = int(ctx.attr("precision", 0))
    if precision:  # the division runs in this float type (opset 23)
        to = _onnx_dtype(precision, "QuantizeLinear precision")
        inputs[:2] = [n if ctx.value_type(n).dtype == to else ctx.emit("cast", [n], {"to": to})[0]
                      for n in inputs[:2]]
    while not inputs[-1]:
        inputs.pop()
    out = ctx.emit("quantize_linear", inputs, {"dtype": dtype}, outputs=_single_output(ctx))
    if not block:
        _annotate(ctx, out[0], _quant_params(ctx, 1, 2, axis))
    return out


@converter("DequantizeLinear", since=10)
def convert_dequantize_linear(ctx: ConvertContext) -> list[str]:
    x = _data_type(ctx, 0, 0)
    if x.dtype not in DEQUANT_DTYPES:
        raise ConversionError(
            f"dequantizing {x.dtype} is not supported (supported: {sorted(DEQUANT_DTYPES)})")
    scale = ctx.type(1)
    assert scale is not None
    given = ctx.attr("output_dtype", 0)
    dtype = _onnx_dtype(int(given), "DequantizeLinear output_dtype") if given else scale.dtype
    block = int(ctx.attr("block_size", 0))
    axis = _axis(ctx, x.rank) if x.rank else 1
    inputs = [ctx.input(0), _param(ctx, 1, x, axis, block, "scale"),
              _param(ctx, 2, x, axis, block, "zero point")]
    while not inputs[-1]:
        inputs.pop()
    if not block:
        _annotate(ctx, ctx.input(0), _quant_params(ctx, 1, 2, axis))
    return ctx.emit("dequantize_linear", inputs, {"dtype": dtype}, outputs=_single_output(ctx))


# ---------------------------------------------------------------- integer and QLinear ops


def _present(ctx: ConvertContext, n: int) -> list[str]:
    names = [ctx.input(i) for i in range(n)]
    while names and not names[-1]:
        names.pop()
    return names


def _require(ctx: ConvertContext, indices: Sequence[int], what: str) -> None:
    missing = [i for i in indices if not ctx.has_input(i)]
    if missing:
        raise ConversionError(f"{what}: input(s) {missing} are required")


@converter("ConvInteger", since=10)
def convert_conv_integer(ctx: ConvertContext) -> list[str]:
    x, w = _data_type(ctx, 0, 3), _data_type(ctx, 1, 3)
    return ctx.emit("conv_integer", _present(ctx, 4), conv_attrs(ctx, x, w),
                    outputs=_single_output(ctx))


@converter("MatMulInteger", since=10)
def convert_matmul_integer(ctx: ConvertContext) -> list[str]:
    _data_type(ctx, 0, 2)
    _data_type(ctx, 1, 2)
    return ctx.emit("matmul_integer", _present(ctx, 4), outputs=_single_output(ctx))


@converter("QLinearConv", since=10)
def convert_qlinear_conv(ctx: ConvertContext) -> list[str]:
    _require(ctx, range(8), "QLinearConv")
    x, w = _data_type(ctx, 0, 3), _data_type(ctx, 3, 3)
    out = ctx.emit("qlinear_conv", _present(ctx, 9), conv_attrs(ctx, x, w),
                   outputs=_single_output(ctx))
    _annotate(ctx, ctx.input(0), _quant_params(ctx, 1, 2, None))
    _annotate(ctx, ctx.input(3), _quant_params(ctx, 4, 5, 0))
    _annotate(ctx, out[0], _quant_params(ctx, 6, 7, None))
    return out


@converter("QLinearMatMul", since=10)
def convert_qlinear_matmul(ctx: ConvertContext) -> list[str]:
    _require(ctx, range(8), "QLinearMatMul")
    _data_type(ctx, 0, 2)
    b = _data_type(ctx, 3, 2)
    out = ctx.emit("qlinear_matmul", _present(ctx, 8), outputs=_single_output(ctx))
    _annotate(ctx, ctx.input(0), _quant_params(ctx, 1, 2, None))
    _annotate(ctx, ctx.input(3), _quant_params(ctx, 4, 5, b.rank - 1))
    _annotate(ctx, out[0], _quant_params(ctx, 6, 7, None))
    return out
