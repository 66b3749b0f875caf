"""ONNX converters for neural-network ops: Conv, ConvTranspose, Gemm, MatMul, pools,
normalizations, LRN, Softmax, LogSoftmax.

They resolve auto_pad, output_shape and per-opset defaults into the canonical graph-IR attributes
documented in `nnc.ir.ops.nn` (explicit pads, strides, dilations, one softmax axis set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nnc.compiler.onnx.registry import ConversionError, ConvertContext, converter
from nnc.ir.types import TensorType

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


# ---------------------------------------------------------------- helpers


def _data_type(ctx: ConvertContext, i: int, min_rank: int) -> TensorType:
    t = ctx.type(i)
    if t is None:
        raise ConversionError(f"input {i} is required")
    if t.rank < min_rank:
        raise ConversionError(f"input {i} must have rank >= {min_rank}, got {t}")
    return t


def _ints(ctx: ConvertContext, key: str, n: int, default: int) -> tuple[int, ...]:
    v = ctx.attr(key)
    if v is None:
        return (default,) * n
    v = tuple(int(x) for x in v)
    if len(v) != n:
        raise ConversionError(f"attribute {key}={list(v)} must have {n} values")
    return v


def _auto_pad(ctx: ConvertContext) -> str:
    mode = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    if mode not in AUTO_PADS:
        raise ConversionError(f"auto_pad={mode!r} is not one of {AUTO_PADS}")
    return str(mode)


def _split_total(total: int, upper: bool) -> tuple[int, int]:
    """(begin, end) padding; SAME_UPPER puts the odd element at the end."""
    return (total // 2, total - total // 2) if upper else (total - total // 2, total // 2)


def _window_pads(
    ctx: ConvertContext,
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[int, ...]:
    """Explicit pads (begins then ends) for Conv and pools, auto_pad resolved."""
    nsp = len(in_sizes)
    mode = _auto_pad(ctx)
    if mode == "NOTSET":
        return _ints(ctx, "pads", 2 * nsp, 0)
    if mode == "VALID":
        return (0,) * (2 * nsp)
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        b, e = _split_total(total, mode == "SAME_UPPER")
        begins.append(b)
        ends.append(e)
    return (*begins, *ends)


def _single_output(ctx: ConvertContext, what: str = "") -> list[str]:
    """The node's first output; optional extra outputs that are requested are rejected."""
    extra = [o for o in list(ctx.node.output)[1:] if o]
    if extra:
        raise ConversionError(
            f"optional output(s) {extra} {what or 'are'} not supported; only the first output is"
        )
    return [ctx.node.output[0]]


def _inputs(ctx: ConvertContext, n: int) -> list[str]:
    """The first n inputs, trailing absent optional ones dropped."""
    names = [ctx.input(i) for i in range(min(n, len(ctx.node.input)))]
    while names and not names[-1]:
        names.pop()
    return names


# ---------------------------------------------------------------- conv


def _kernel_strides_dilations(ctx: ConvertContext, x: TensorType, w: TensorType
                              ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The kernel (from the weight, checked against kernel_shape), strides and dilations."""
    nsp = x.rank - 2
    kernel = w.shape[2:]
    given = ctx.attr("kernel_shape")
    if given is not None and tuple(given) != kernel:
        raise ConversionError(f"kernel_shape {list(given)} disagrees with weight shape {w.shape}")
    return kernel, _ints(ctx, "strides", nsp, 1), _ints(ctx, "dilations", nsp, 1)


def conv_attrs(ctx: ConvertContext, x: TensorType, w: TensorType) -> dict[str, object]:
    """Conv's canonical attributes (auto_pad resolved into pads); shared with the integer and
    QLinear convs."""
    kernel, strides, dilations = _kernel_strides_dilations(ctx, x, w)
    pads = _window_pads(ctx, x.shape[2:], kernel, strides, dilations)
    return dict(strides=strides, pads=pads, dilations=dilations, group=int(ctx.attr("group", 1)))


@converter("Conv")
def convert_conv(ctx: ConvertContext) -> list[str]:
    x = _data_type(ctx, 0, 3)
    w = _data_type(ctx, 1, 3)
    return ctx.emit("conv", _inputs(ctx, 3), conv_attrs(ctx, x, w), outputs=_single_output(ctx))


@converter("ConvTranspose")
def convert_conv_transpose(ctx: ConvertContext) -> list[str]:
    """Pads follow onnxruntime: with output_shape (explicit pads ignored) or SAME_* the total
    padding is split with the odd element at the begin, except SAME_UPPER puts it at the end;
    an output_shape larger than the natural size becomes extra output_padding."""
    x = _data_type(ctx, 0, 3)
    w = _data_type(ctx, 1, 3)
    nsp = x.rank - 2
    kernel, strides, dilations = _kernel_strides_dilations(ctx, x, w)
    out_pad = list(_ints(ctx, "output_padding", nsp, 0))
    mode = _auto_pad(ctx)
    natural = [
        s * (i - 1) + (k - 1) * d + 1
        for i, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True)
    ]
    output_shape = ctx.attr("output_shape")
    if output_shape is not None:
        output_shape = [int(v) for v in output_shape][-nsp:]
        if len(output_shape) != nsp:
            raise ConversionError(f"output_shape {output_shape} needs {nsp} spatial sizes")
        targets: list[int] | None = output_shape
    elif mode in ("SAME_UPPER", "SAME_LOWER"):
        targets = [i * s for i, s in zip(x.shape[2:], strides, strict=True)]
    else:
        targets = None
    if targets is None:
        pads = _ints(ctx, "pads", 2 * nsp, 0) if mode == "NOTSET" else (0,) * (2 * nsp)
    else:
        begins, ends = [], []
        for k, (full, adj, target) in enumerate(zip(natural, out_pad, targets, strict=True)):
            total = max(0, full + adj - target)
            b, e = _split_total(total, mode == "SAME_UPPER")
            begins.append(b)
            ends.append(e)
            if output_shape is not None:
                out_pad[k] = target - full + total
        pads = (*begins, *ends)
    attrs = dict(
        strides=strides, pads=pads, dilations=dilations, group=int(ctx.attr("group", 1)),
        output_padding=tuple(out_pad),
    )
    return ctx.emit("conv_transpose", _inputs(ctx, 3), attrs, outputs=_single_output(ctx))


# ---------------------------------------------------------------- gemm / matmul


@converter("Gemm")
def convert_gemm(ctx: ConvertContext) -> list[str]:
    if ctx.attr("broadcast") is not None:
        raise ConversionError("the pre-opset-7 'broadcast' attribute is not supported")
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    inputs = _inputs(ctx, 3)
    if beta == 0.0:
        inputs = inputs[:2]  # beta * C contributes nothing; drop the dependency
    attrs = dict(
        alpha=alpha, beta=beta, trans_a=int(ctx.attr("transA", 0)),
        trans_b=int(ctx.attr("transB", 0)),
    )
    return ctx.emit("gemm", inputs, attrs, outputs=_single_output(ctx))


@converter("MatMul")
def convert_matmul(ctx: ConvertContext) -> list[str]:
    return ctx.emit("matmul", _inputs(ctx, 2), outputs=_single_output(ctx))


# ---------------------------------------------------------------- pools


def _pool_attrs(ctx: ConvertContext) -> dict[str, Any]:
    x = _data_type(ctx, 0, 3)
    nsp = x.rank - 2
    if ctx.attr("kernel_shape") is None:
        raise ConversionError("kernel_shape attribute is required")
    kernel = _ints(ctx, "kernel_shape", nsp, 1)
    strides = _ints(ctx, "strides", nsp, 1)
    dilations = _ints(ctx, "dilations", nsp, 1)
    pads = _window_pads(ctx, x.shape[2:], kernel, strides, dilations)
    ceil = int(ctx.attr("ceil_mode", 0)) if _auto_pad(ctx) in ("NOTSET", "VALID") else 0
    return dict(kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations,
                ceil_mode=ceil)


@converter("MaxPool")
def convert_max_pool(ctx: ConvertContext) -> list[str]:
    """The optional Indices output (opset >= 8) turns on the op's second output."""
    attrs = _pool_attrs(ctx)
    outs = list(ctx.node.output[:2])
    if len(outs) == 2 and outs[1]:
        attrs.update(with_indices=True, storage_order=int(ctx.attr("storage_order", 0)))
        if attrs["storage_order"] not in (0, 1):
            raise ConversionError(f"storage_order={attrs['storage_order']} is not 0 or 1")
    else:
        outs = outs[:1]
    return ctx.emit("max_pool", [ctx.input(0)], attrs, outputs=outs)


@converter("AveragePool")
def convert_average_pool(ctx: ConvertContext) -> list[str]:
    attrs = _pool_attrs(ctx)
    attrs["count_include_pad"] = int(ctx.attr("count_include_pad", 0))
    return ctx.emit("average_pool", [ctx.input(0)], attrs, outputs=_single_output(ctx))


@converter("GlobalAveragePool")
def convert_global_average_pool(ctx: ConvertContext) -> list[str]:
    _data_type(ctx, 0, 3)
    return ctx.emit("global_average_pool", [ctx.input(0)], outputs=_single_output(ctx))


@converter("GlobalMaxPool")
def convert_global_max_pool(ctx: ConvertContext) -> list[str]:
    _data_type(ctx, 0, 3)
    return ctx.emit("global_max_pool", [ctx.input(0)], outputs=_single_output(ctx))


# ---------------------------------------------------------------- normalizations


@converter("BatchNormalization")
def convert_batch_normalization(ctx: ConvertContext) -> list[str]:
    if int(ctx.attr("training_mode", 0)) != 0:
        raise ConversionError("training_mode=1 is not supported; export the model for inference")
    if int(ctx.attr("spatial", 1)) != 1:
        raise ConversionError("spatial=0 (per-activation statistics) is not supported")
    outs = _single_output(ctx, "(training statistics) are")
    if len(_inputs(ctx, 5)) != 5:
        raise ConversionError("BatchNormalization needs X, scale, B, input_mean and input_var")
    attrs = dict(epsilon=float(ctx.attr("epsilon", 1e-5)))
    return ctx.emit("batch_normalization", _inputs(ctx, 5), attrs, outputs=outs)


@converter("InstanceNormalization")
def convert_instance_normalization(ctx: ConvertContext) -> list[str]:
    attrs = dict(epsilon=float(ctx.attr("epsilon", 1e-5)))
    return ctx.emit("instance_normalization", _inputs(ctx, 3), attrs, outputs=_single_output(ctx))


@converter("LayerNormalization", since=17)
def convert_layer_normalization(ctx: ConvertContext) -> list[str]:
    """Y comes from the fused op; the optional Mean and InvStdDev outputs (training statistics)
    are composed from graph ops, in float32 as stash_type=1 asks."""
    t = _data_type(ctx, 0, 1)
    rank = t.rank
    axis = int(ctx.attr("axis", -1))
    if not -rank <= axis < rank:
        raise ConversionError(f"axis {axis} out of range for rank {rank}")
    stash = int(ctx.attr("stash_type", 1))
    if stash != 1:
        raise ConversionError(f"stash_type={stash} is not supported (only 1, float32)")
    epsilon = float(ctx.attr("epsilon", 1e-5))
    attrs = dict(axis=axis % rank, epsilon=epsilon)
    outputs = list(ctx.node.output) + ["", ""]
    y = ctx.emit("layer_normalization", _inputs(ctx, 3), attrs, outputs=outputs[:1])
    mean_name, inv_name = outputs[1], outputs[2]
    if not mean_name and not inv_name:
        return y
    x = ctx.input(0)
    if t.dtype != "float32":
        x = ctx.emit("cast", [x], dict(to="float32"))[0]
    reduce = dict(axes=tuple(range(axis % rank, rank)), keepdims=True)
    mean = ctx.emit("reduce_mean", [x], reduce, outputs=[mean_name] if mean_name else None)[0]
    results = [y[0], mean]
    if inv_name:
        d = ctx.emit("sub", [x, mean])[0]
        var = ctx.emit("reduce_mean", ctx.emit("mul", [d, d]), reduce)[0]
        eps = ctx.constant(np.array(epsilon, np.float32), "epsilon")
        std = ctx.emit("sqrt", ctx.emit("add", [var, eps]))[0]
        results.append(ctx.emit("reciprocal", [std], outputs=[inv_name])[0])
    return results


@converter("LRN")
def convert_lrn(ctx: ConvertContext) -> list[str]:
    if ctx.attr("size") is None:
        raise ConversionError("size attribute is required")
    attrs = dict(
        size=int(ctx.attr("size")), alpha=float(ctx.attr("alpha", 1e-4)),
        beta=float(ctx.attr("beta", 0.75)), bias=float(ctx.attr("bias", 1.0)),
    )
    return ctx.emit("lrn", [ctx.input(0)], attrs, outputs=_single_output(ctx))


# ---------------------------------------------------------------- softmax


def _softmax_axes(ctx: ConvertContext) -> tuple[int, ...]:
    """Opset < 13 flattens to 2-D at `axis` (default 1): normalize over axis..rank-1 jointly;
    opset >= 13 normalizes over the single `axis` (default -1)."""
    rank = _data_type(ctx, 0, 1).rank
    legacy = ctx.opset < 13
    axis = int(ctx.attr("axis", 1 if legacy else -1))
    if not -rank <= axis < rank:
        raise ConversionError(f"axis {axis} out of range for rank {rank}")
    axis %= rank
    return tuple(range(axis, rank)) if legacy else (axis,)


@converter("Softmax")
def convert_softmax(ctx: ConvertContext) -> list[str]:
    return ctx.emit("softmax", [ctx.input(0)], dict(axes=_softmax_axes(ctx)),
                    outputs=_single_output(ctx))


@converter("LogSoftmax")
def convert_log_softmax(ctx: ConvertContext) -> list[str]:
    return ctx.emit("log_softmax", [ctx.input(0)], dict(axes=_softmax_axes(ctx)),
                    outputs=_single_output(ctx))
