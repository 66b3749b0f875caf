"""ONNX converters for quantized models: QuantizeLinear, DequantizeLinear (per-tensor, per-axis,
blocked; the opset 10/13/19/21/23 forms), QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger,
and onnxruntime's com.microsoft QOperator ops (QLinearAdd, QLinearMul, QGemm, QLinearAveragePool,
QLinearGlobalAveragePool, QLinearSoftmax) as their QDQ form: dequantize_linear → float op →
quantize_linear, which is how onnxruntime defines them and what the `fuse-qdq` pass turns into
int8 ops.

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

from nnc.compiler.onnx.nn import _data_type, _pool_attrs, _single_output, conv_attrs
from nnc.compiler.onnx.registry import ConversionError, ConvertContext, converter
from nnc.ir.ops.quant import DEQUANT_DTYPES, QUANT_DTYPES
from nnc.ir.types import DTYPES, QuantParams, TensorType

# onnxruntime contrib ops (domain com.microsoft) the importer accepts
MS_DOMAIN_OPS = frozenset({"QLinearAdd", "QLinearMul", "QGemm", "QLinearAveragePool",
                           "QLinearGlobalAveragePool", "QLinearSoftmax"})


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
    if not block:
        return _broadcast_param(ctx, name, x, axis, what)
    if not 0 <= axis < x.rank:
        raise ConversionError(f"axis={axis} is out of range for the input {x}")
    n = x.shape[axis]
    # each element repeats over its block: a gather along the axis (folded when constant)
    want = tuple(-(-n // block) if d == axis else x.shape[d] for d in range(x.rank))
    if block < 0 or t.shape != want:
        raise ConversionError(
            f"blocked {what} {t} does not fit input {x} with axis={axis}, block_size={block}"
            f" (expected shape {want})")
    index = ctx.constant(np.arange(n, dtype=np.int64) // block, "block_index")
    return ctx.emit("gather", [name, index], {"axis": axis})[0]


def _broadcast_param(ctx: ConvertContext, name: str, x: TensorType, axis: int, what: str) -> str:
    """Scale or zero point `name` (a scalar or one per element of x's `axis`) broadcastable
    against x."""
    t = ctx.value_type(name)
    if t.size == 1:
        return name if t.rank == 0 else ctx.emit("reshape", [name], {"shape": ()})[0]
    if not 0 <= axis < x.rank:
        raise ConversionError(f"axis={axis} is out of range for the input {x}")
    n = x.shape[axis]
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


# ---------------------------------------------------------------- com.microsoft QOperator ops


def _dequantized(ctx: ConvertContext, x: int, scale: str, zp: str, axis: int = 1) -> str:
    """dequantize_linear of input `x` with scale/zero point values `scale`, `zp` ("" = 0)."""
    xt = _data_type(ctx, x, 0)
    if xt.dtype not in ("int8", "uint8", "int32"):
        raise ConversionError(f"input {x} must be int8, uint8 or int32, got {xt}")
    if not scale:
        raise ConversionError(f"input {x} has no scale")
    inputs = [ctx.input(x), _broadcast_param(ctx, scale, xt, axis, "scale")]
    if zp:
        inputs.append(_broadcast_param(ctx, zp, xt, axis, "zero point"))
    consts = ctx.builder.constants
    s = consts.get(scale)
    z = consts.get(zp) if zp else np.zeros(1, np.int64)
    if s is not None and z is not None and z.size in (1, s.size):
        z = np.broadcast_to(np.ravel(z), np.ravel(s).shape)
        _annotate(ctx, ctx.input(x), QuantParams(tuple(float(v) for v in np.ravel(s)),
                                                 tuple(int(v) for v in z),
                                                 axis if s.size > 1 else None))
    dtype = ctx.value_type(scale).dtype
    return ctx.emit("dequantize_linear", inputs, {"dtype": dtype})[0]


def _requantized(ctx: ConvertContext, y: str, scale: int, zp: int) -> list[str]:
    """quantize_linear of float value `y` with inputs `scale`, `zp` into the node's output."""
    yt = ctx.value_type(y)
    zpt = ctx.type(zp)
    dtype = zpt.dtype if zpt is not None else "uint8"
    if dtype not in ("int8", "uint8"):
        raise ConversionError(f"output zero point must be int8 or uint8, got {zpt}")
    inputs = [y, _broadcast_param(ctx, ctx.input(scale), yt, 1, "scale")]
    if zpt is not None:
        inputs.append(_broadcast_param(ctx, ctx.input(zp), yt, 1, "zero point"))
    out = ctx.emit("quantize_linear", inputs, {"dtype": dtype}, outputs=_single_output(ctx))
    _annotate(ctx, out[0], _quant_params(ctx, scale, zp, None))
    return out


def _binary_qlinear(ctx: ConvertContext, kind: str) -> list[str]:
    _require(ctx, (0, 1, 3, 4, 6), ctx.node.op_type)
    a = _dequantized(ctx, 0, ctx.input(1), ctx.input(2))
    b = _dequantized(ctx, 3, ctx.input(4), ctx.input(5))
    return _requantized(ctx, ctx.emit(kind, [a, b])[0], 6, 7)


@converter("QLinearAdd", since=1)
def convert_qlinear_add(ctx: ConvertContext) -> list[str]:
    return _binary_qlinear(ctx, "add")


@converter("QLinearMul", since=1)
def convert_qlinear_mul(ctx: ConvertContext) -> list[str]:
    return _binary_qlinear(ctx, "mul")


def _unary_qlinear(ctx: ConvertContext, kind: str, attrs: dict[str, object]) -> list[str]:
    _require(ctx, (0, 1, 3), ctx.node.op_type)
    if int(ctx.attr("channels_last", 0)):
        raise ConversionError("channels_last=1 is not supported")
    x = _dequantized(ctx, 0, ctx.input(1), ctx.input(2))
    return _requantized(ctx, ctx.emit(kind, [x], attrs)[0], 3, 4)


@converter("QLinearAveragePool", since=1)
def convert_qlinear_average_pool(ctx: ConvertContext) -> list[str]:
    attrs = _pool_attrs(ctx)
    attrs["count_include_pad"] = int(ctx.attr("count_include_pad", 0))
    return _unary_qlinear(ctx, "average_pool", attrs)


@converter("QLinearGlobalAveragePool", since=1)
def convert_qlinear_global_average_pool(ctx: ConvertContext) -> list[str]:
    _data_type(ctx, 0, 3)
    return _unary_qlinear(ctx, "global_average_pool", {})


@converter("QLinearSoftmax", since=1)
def convert_qlinear_softmax(ctx: ConvertContext) -> list[str]:
    rank = _data_type(ctx, 0, 1).rank
    legacy = int(ctx.attr("opset", 13)) < 13
    axis = int(ctx.attr("axis", 1 if legacy else -1))
    if not -rank <= axis < rank:
        raise ConversionError(f"axis {axis} out of range for rank {rank}")
    axis %= rank
    axes = tuple(range(axis, rank)) if legacy else (axis,)
    return _unary_qlinear(ctx, "softmax", {"axes": axes})


@converter("QGemm", since=1)
def convert_qgemm(ctx: ConvertContext) -> list[str]:
    """Y = quantize(alpha * A' B' + C) with C int32 at scale a_scale * b_scale; float Y when
    y_scale is absent."""
    _require(ctx, (0, 1, 3, 4), "QGemm")
    trans_a, trans_b = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    a = _dequantized(ctx, 0, ctx.input(1), ctx.input(2))
    b = _dequantized(ctx, 3, ctx.input(4), ctx.input(5), axis=0 if trans_b else 1)
    inputs = [a, b]
    if ctx.has_input(6):
        c, sa, sb = ctx.type(6), ctx.const(1), ctx.const(4)
        if sa is None or sb is None:
            raise ConversionError("QGemm with a bias needs constant a_scale and b_scale")
        assert c is not None
        scale = (np.float32(sa.ravel()[0]) * sb.ravel().astype(np.float32)).astype(np.float32)
        if c.rank != 1 and scale.size > 1:
            raise ConversionError(f"bias C {c} must be 1-D with per-column b_scale")
        cscale = ctx.constant(scale if scale.size > 1 else scale.reshape(()), "qgemm_c_scale")
        inputs.append(_dequantized(ctx, 6, cscale, "", axis=0))
    attrs = dict(alpha=float(ctx.attr("alpha", 1.0)), beta=1.0, trans_a=trans_a, trans_b=trans_b)
    if not ctx.has_input(7):
        return ctx.emit("gemm", inputs, attrs, outputs=_single_output(ctx))
    return _requantized(ctx, ctx.emit("gemm", inputs, attrs)[0], 7, 8)
