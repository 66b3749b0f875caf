"""ONNX converters for shape and data-movement ops.

Reshape, Flatten, Squeeze, Unsqueeze become one alias op (`reshape`); Identity and Dropout return
their input; Shape, Size, Constant and ConstantOfShape become constants. Attribute-vs-input forms
across opsets are normalized here so each graph-IR op has one canonical form (see nnc.ir.ops.shape).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from nnc.compiler.onnx.registry import ConversionError, ConvertContext, converter
from nnc.ir.ops.shape import normalize_slice
from nnc.ir.types import TensorType, is_float

# ConstantOfShape is materialized at import: refuse more elements than this (1 GiB of float32)
# before numpy allocates them
CONSTANT_LIMIT = 1 << 28

# ---------------------------------------------------------------- helpers


def _in_type(ctx: ConvertContext, i: int = 0) -> TensorType:
    t = ctx.type(i)
    if t is None:
        raise ConversionError(f"input {i} is required")
    return t


def _ints(values: object) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _shape_vector(values: np.ndarray, what: str) -> list[int]:
    """A shape given as a tensor: ONNX requires it 1-D (a 0-d scalar is not a shape either)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ConversionError(f"{what} must be a 1-D tensor of dimensions, got shape "
                              f"{list(arr.shape)}; flatten it in the exporter (e.g. "
                              f"{_ints(arr)[:8]})")
    return _ints(arr)


def _norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ConversionError(f"{what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _norm_axes(axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
    out = [_norm_axis(int(a), rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise ConversionError(f"{what} {list(axes)} contain duplicates")
    return out


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _reshape(ctx: ConvertContext, x: str, shape: Sequence[int], final: bool = True) -> str:
    """Emit the alias op; `final` names its output after the node's output."""
    outputs = ctx.node.output[:1] if final else None
    return ctx.emit("reshape", [x], {"shape": tuple(int(d) for d in shape)}, outputs=outputs)[0]


def resolve_reshape(in_shape: Sequence[int], shape: Sequence[int], allowzero: bool) -> list[int]:
    """ONNX Reshape's target shape: 0 copies the input dim (unless allowzero), -1 is inferred."""
    out = []
    for i, d in enumerate(shape):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise ConversionError(f"reshape: 0 at position {i} but the input has rank "
                                      f"{len(in_shape)}")
            out.append(int(in_shape[i]))
        elif d < -1:
            raise ConversionError(f"reshape: invalid dimension {d} in {list(shape)}")
        else:
            out.append(int(d))
    if out.count(-1) > 1:
        raise ConversionError(f"reshape: more than one -1 in {list(shape)}")
    total = _prod(in_shape)
    if -1 in out:
        known = _prod([d for d in out if d != -1])
        if known == 0 or total % known:
            raise ConversionError(f"reshape: cannot infer -1 of {list(shape)} for input "
                                  f"{tuple(in_shape)}")
        out[out.index(-1)] = total // known
    if _prod(out) != total:
        raise ConversionError(f"reshape: input {tuple(in_shape)} ({total} elements) cannot be "
                              f"viewed as {out}")
    return out


def _axes_arg(ctx: ConvertContext, input_since: int, idx: int = 1) -> list[int] | None:
    """Axes given as an attribute before `input_since`, as an optional constant input after."""
    if ctx.opset < input_since:
        axes = ctx.attr("axes")
        return None if axes is None else _ints(axes)
    if not ctx.has_input(idx):
        return None
    return _ints(ctx.require_const(idx, "axes"))


# ---------------------------------------------------------------- reshape family (alias)


@converter("Reshape", since=5)
def convert_reshape(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    shape = _shape_vector(ctx.require_const(1, "shape"), "reshape: the shape input")
    allowzero = ctx.opset >= 14 and bool(ctx.attr("allowzero", 0))
    return [_reshape(ctx, ctx.input(0), resolve_reshape(t.shape, shape, allowzero))]


@converter("Flatten", since=1)
def convert_flatten(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    axis = int(ctx.attr("axis", 1))
    if not -t.rank <= axis <= t.rank:
        raise ConversionError(f"flatten: axis {axis} out of range for rank {t.rank}")
    axis = axis + t.rank if axis < 0 else axis
    return [_reshape(ctx, ctx.input(0), [_prod(t.shape[:axis]), _prod(t.shape[axis:])])]


@converter("Squeeze", since=1)
def convert_squeeze(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    axes = _axes_arg(ctx, 13)
    if axes is None:
        drop = {d for d, n in enumerate(t.shape) if n == 1}
    else:
        drop = set(_norm_axes(axes, t.rank))
        bad = [d for d in drop if t.shape[d] != 1]
        if bad:
            raise ConversionError(f"squeeze: axes {bad} of {t.shape} are not of size 1")
    return [_reshape(ctx, ctx.input(0), [n for d, n in enumerate(t.shape) if d not in drop])]


@converter("Unsqueeze", since=1)
def convert_unsqueeze(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    axes = _axes_arg(ctx, 13)
    if axes is None:
        raise ConversionError("unsqueeze: axes are required")
    rank = t.rank + len(axes)
    new = set(_norm_axes(axes, rank))
    it = iter(t.shape)
    shape = [1 if d in new else next(it) for d in range(rank)]
    return [_reshape(ctx, ctx.input(0), shape)]


@converter("Identity", since=1)
def convert_identity(ctx: ConvertContext) -> list[str]:
    return [ctx.input(0)]


@converter("Dropout", since=7)
def convert_dropout(ctx: ConvertContext) -> list[str]:
    """Inference: the output is the input, the optional mask is all true (kept). Training mode
    is the same when the ratio is a constant 0 (nothing is dropped, no randomness)."""
    if ctx.opset >= 12 and ctx.has_input(2):
        training = ctx.require_const(2, "training_mode")
        if bool(np.asarray(training).reshape(-1)[0]):
            ratio = ctx.const(1) if ctx.has_input(1) else None  # absent: the default 0.5
            if ratio is None or float(np.asarray(ratio).reshape(-1)[0]) != 0.0:
                raise ConversionError("dropout with training_mode=True is supported only with "
                                      "a constant ratio of 0 (nnc compiles for inference)")
    results = [ctx.input(0)]
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        t = _in_type(ctx)
        mask_dtype = "bool" if ctx.opset >= 10 else t.dtype
        results.append(ctx.constant(np.ones(t.shape, dtype=mask_dtype), ctx.node.output[1]))
    return results


# ---------------------------------------------------------------- transpose, concat, split


@converter("Transpose", since=1)
def convert_transpose(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    perm = ctx.attr("perm")
    perm = list(range(t.rank))[::-1] if perm is None else _ints(perm)
    if sorted(perm) != list(range(t.rank)):
        raise ConversionError(f"transpose: perm {perm} is not a permutation of rank {t.rank}")
    return ctx.emit("transpose", [ctx.input(0)], {"perm": tuple(perm)}, outputs=ctx.node.output)


@converter("Concat", since=4)
def convert_concat(ctx: ConvertContext) -> list[str]:
    names = [ctx.input(i) for i in range(len(ctx.node.input)) if ctx.input(i)]
    if not names:
        raise ConversionError("concat needs at least one input")
    axis = _norm_axis(int(ctx.attr("axis", 0)), ctx.value_type(names[0]).rank)
    if len(names) == 1:
        return [names[0]]
    return ctx.emit("concat", names, {"axis": axis}, outputs=ctx.node.output)


@converter("Split", since=2)
def convert_split(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    axis = _norm_axis(int(ctx.attr("axis", 0)), t.rank)
    dim = t.shape[axis]
    n = len(ctx.node.output)
    if ctx.opset < 13:
        split = ctx.attr("split")
        sizes = None if split is None or len(split) == 0 else _ints(split)
    else:
        sizes = _ints(ctx.require_const(1, "split")) if ctx.has_input(1) else None
    if sizes is None:
        num = ctx.attr("num_outputs") if ctx.opset >= 18 else None
        if num is not None:
            # opset 18: chunks of ceil(dim / n), the last one smaller
            num = int(num)
            if num != n:
                raise ConversionError(f"split: num_outputs={num} but the node has {n} outputs")
            chunk = -(-dim // num)
            sizes = [min(chunk, max(0, dim - k * chunk)) for k in range(num)]
        else:
            if dim % n:
                raise ConversionError(f"split: dim {dim} does not split evenly into {n} outputs; "
                                      "give the split sizes")
            sizes = [dim // n] * n
    if len(sizes) != n or sum(sizes) != dim or any(s < 0 for s in sizes):
        raise ConversionError(f"split: sizes {sizes} do not cover dim {dim} with {n} outputs")
    return ctx.emit("split", [ctx.input(0)], {"axis": axis, "splits": tuple(sizes)},
                    outputs=ctx.node.output)


# ---------------------------------------------------------------- slice, gather


@converter("Slice", since=1)
def convert_slice(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    if ctx.opset < 10:
        starts, ends = _ints(ctx.attr("starts", [])), _ints(ctx.attr("ends", []))
        axes_attr = ctx.attr("axes")
        axes = list(range(len(starts))) if axes_attr is None else _ints(axes_attr)
        steps = [1] * len(starts)
    else:
        starts = _ints(ctx.require_const(1, "starts"))
        ends = _ints(ctx.require_const(2, "ends"))
        axes = _ints(ctx.require_const(3, "axes")) if ctx.has_input(3) else list(
            range(len(starts)))
        steps = _ints(ctx.require_const(4, "steps")) if ctx.has_input(4) else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ConversionError(f"slice: starts {starts}, ends {ends}, axes {axes}, steps {steps} "
                              "differ in length")
    bounds = [(0, d, 1) for d in t.shape]
    for a, s, e, st in zip(_norm_axes(axes, t.rank), starts, ends, steps, strict=True):
        if st == 0:
            raise ConversionError(f"slice: step 0 on axis {a}")
        bounds[a] = normalize_slice(s, e, st, t.shape[a])
    if all(b == (0, d, 1) for b, d in zip(bounds, t.shape, strict=True)):
        return [ctx.input(0)]
    attrs = {
        "starts": tuple(b[0] for b in bounds),
        "ends": tuple(b[1] for b in bounds),
        "steps": tuple(b[2] for b in bounds),
    }
    return ctx.emit("slice", [ctx.input(0)], attrs, outputs=ctx.node.output)


@converter("Gather", since=1)
def convert_gather(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    axis = _norm_axis(int(ctx.attr("axis", 0)), t.rank)
    ind = ctx.const(1)
    if ind is not None and ind.size:
        n = t.shape[axis]
        bad = ind[(ind < -n) | (ind >= n)]
        if bad.size:
            raise ConversionError(f"gather: index {int(bad[0])} out of range for dim {n}")
    return ctx.emit("gather", [ctx.input(0), ctx.input(1)], {"axis": axis},
                    outputs=ctx.node.output)


# ---------------------------------------------------------------- pad, expand, tile


@converter("Pad", since=2)
def convert_pad(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    mode = ctx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap") or (mode == "wrap" and ctx.opset < 19):
        raise ConversionError(f"pad: unsupported mode {mode!r}")
    if ctx.opset < 11:
        pads = _ints(ctx.attr("pads", []))
        value: float = float(ctx.attr("value", 0.0))
        axes = list(range(t.rank))
    else:
        pads = _ints(ctx.require_const(1, "pads"))
        cv = ctx.const(2) if ctx.has_input(2) else None
        if ctx.has_input(2) and cv is None:
            raise ConversionError("pad: constant_value must be a compile-time constant")
        value = 0.0 if cv is None or cv.size == 0 else np.asarray(cv).reshape(-1)[0].item()
        axes = (_norm_axes(_ints(ctx.require_const(3, "axes")), t.rank)
                if ctx.opset >= 18 and ctx.has_input(3) else list(range(t.rank)))
    if len(pads) != 2 * len(axes):
        raise ConversionError(f"pad: {len(pads)} pads for {len(axes)} axes (need 2 per axis)")
    full = [0] * (2 * t.rank)
    for k, a in enumerate(axes):
        full[a], full[t.rank + a] = pads[k], pads[len(axes) + k]
    if not any(full):
        return [ctx.input(0)]
    value = float(value) if is_float(t.dtype) else (bool(value) if t.dtype == "bool"
                                                     else int(value))
    attrs = {"pads": tuple(full), "mode": mode, "value": value}
    return ctx.emit("pad", [ctx.input(0)], attrs, outputs=ctx.node.output)


@converter("Expand", since=8)
def convert_expand(ctx: ConvertContext) -> list[str]:
    _in_type(ctx)
    shape = _ints(ctx.require_const(1, "shape"))
    return ctx.emit("expand", [ctx.input(0)], {"shape": tuple(shape)}, outputs=ctx.node.output)


@converter("Tile", since=6)
def convert_tile(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    reps = _ints(ctx.require_const(1, "repeats"))
    if len(reps) != t.rank:
        raise ConversionError(f"tile: {len(reps)} repeats for rank {t.rank}")
    if all(r == 1 for r in reps):
        return [ctx.input(0)]
    return ctx.emit("tile", [ctx.input(0)], {"repeats": tuple(reps)}, outputs=ctx.node.output)


# ---------------------------------------------------------------- depth/space (reshape+transpose)


def _blocks(ctx: ConvertContext) -> tuple[TensorType, int]:
    t = _in_type(ctx)
    b = int(ctx.attr("blocksize", 0))
    if t.rank != 4 or b < 1:
        raise ConversionError(f"{ctx.node.op_type}: needs a 4-D NCHW input and blocksize >= 1")
    return t, b


@converter("DepthToSpace", since=1)
def convert_depth_to_space(ctx: ConvertContext) -> list[str]:
    t, b = _blocks(ctx)
    n, c, h, w = t.shape
    if c % (b * b):
        raise ConversionError(f"depth_to_space: channels {c} not divisible by blocksize² {b * b}")
    mode = ctx.attr("mode", "DCR") if ctx.opset >= 11 else "DCR"
    if mode == "DCR":
        view, perm = (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        view, perm = (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3)
    else:
        raise ConversionError(f"depth_to_space: unknown mode {mode!r}")
    x = _reshape(ctx, ctx.input(0), view, final=False)
    y = ctx.emit("transpose", [x], {"perm": perm})[0]
    return [_reshape(ctx, y, (n, c // (b * b), h * b, w * b))]


@converter("SpaceToDepth", since=1)
def convert_space_to_depth(ctx: ConvertContext) -> list[str]:
    t, b = _blocks(ctx)
    n, c, h, w = t.shape
    if h % b or w % b:
        raise ConversionError(f"space_to_depth: {h}x{w} not divisible by blocksize {b}")
    mode = ctx.attr("mode", "DCR") if ctx.opset >= 28 else "DCR"
    perms = {"DCR": (0, 3, 5, 1, 2, 4), "CRD": (0, 1, 3, 5, 2, 4)}
    if mode not in perms:
        raise ConversionError(f"space_to_depth: unknown mode {mode!r}")
    x = _reshape(ctx, ctx.input(0), (n, c, h // b, b, w // b, b), final=False)
    y = ctx.emit("transpose", [x], {"perm": perms[mode]})[0]
    return [_reshape(ctx, y, (n, c * b * b, h // b, w // b))]


# ---------------------------------------------------------------- constants


def _sparse_to_dense(sp: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sp.values)
    indices = numpy_helper.to_array(sp.indices).astype(np.int64)
    dims = tuple(int(d) for d in sp.dims)
    dense = np.zeros(_prod(dims), dtype=values.dtype)
    # indices are either linear [NNZ] or coordinates [NNZ, rank]
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(indices.T, dims)
    dense[flat] = values
    return dense.reshape(dims)


@converter("Constant", since=1)
def convert_constant(ctx: ConvertContext) -> list[str]:
    a = ctx.attrs
    if "value" in a:
        arr = np.asarray(a["value"])
    elif "sparse_value" in a:
        arr = _sparse_to_dense(a["sparse_value"])
    elif "value_float" in a:
        arr = np.array(a["value_float"], dtype=np.float32)
    elif "value_floats" in a:
        arr = np.array(a["value_floats"], dtype=np.float32)
    elif "value_int" in a:
        arr = np.array(a["value_int"], dtype=np.int64)
    elif "value_ints" in a:
        arr = np.array(a["value_ints"], dtype=np.int64)
    elif "value_string" in a or "value_strings" in a:
        raise ConversionError("constant: string tensors are not supported")
    else:
        raise ConversionError("constant: no value attribute")
    return [ctx.constant(arr, ctx.node.output[0] or "const")]


@converter("ConstantOfShape", since=9)
def convert_constant_of_shape(ctx: ConvertContext) -> list[str]:
    shape = _shape_vector(ctx.require_const(0, "shape"), "constant_of_shape: the shape input")
    if any(d < 0 for d in shape):
        raise ConversionError(f"constant_of_shape: negative dimension in {shape}")
    count = _prod(shape)
    if count > CONSTANT_LIMIT:
        raise ConversionError(
            f"constant_of_shape: shape {shape} asks for {count:,} elements; nnc makes the "
            f"constant at compile time and refuses more than {CONSTANT_LIMIT:,} (check the "
            f"shape input)")
    value = ctx.attr("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    if fill.size != 1:
        raise ConversionError("constant_of_shape: value must have exactly one element")
    return [ctx.constant(np.full(shape, fill[0], dtype=fill.dtype), ctx.node.output[0] or "const")]


@converter("Shape", since=1)
def convert_shape(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    start = int(ctx.attr("start", 0)) if ctx.opset >= 15 else 0
    end = ctx.attr("end") if ctx.opset >= 15 else None
    dims = list(t.shape)[start : None if end is None else int(end)]
    return [ctx.constant(np.array(dims, dtype=np.int64), ctx.node.output[0] or "shape")]


@converter("Size", since=1)
def convert_size(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    return [ctx.constant(np.array(t.size, dtype=np.int64), ctx.node.output[0] or "size")]


# ---------------------------------------------------------------- resize, upsample


def _float_list(arr: np.ndarray | None) -> list[float] | None:
    if arr is None or arr.size == 0:
        return None
    return [float(v) for v in np.asarray(arr, dtype=np.float32).reshape(-1)]


def _emit_resize(ctx: ConvertContext, t: TensorType, scales: Sequence[float], sizes: Sequence[int],
                 attrs: dict[str, object]) -> list[str]:
    if list(sizes) == list(t.shape) and all(s == 1.0 for s in scales) and \
            attrs["coordinate_transformation_mode"] != "tf_crop_and_resize":
        return [ctx.input(0)]
    attrs = dict(attrs, scales=tuple(float(s) for s in scales), sizes=tuple(int(s) for s in sizes))
    return ctx.emit("resize", [ctx.input(0)], attrs, outputs=ctx.node.output[:1])


def _sizes_from_scales(t: TensorType, scales: Sequence[float]) -> list[int]:
    # onnxruntime: int64(float(scale) * dim) computed in float32
    return [int(np.float32(s) * np.float32(n)) for s, n in zip(scales, t.shape, strict=True)]


@converter("Resize", since=10)
def convert_resize(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    r = t.rank
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic") or mode == "cubic" and ctx.opset < 11:
        raise ConversionError(f"resize: unknown mode {mode!r} at opset {ctx.opset}")
    if ctx.opset < 11:
        scales = _float_list(ctx.require_const(1, "scales"))
        if scales is None or len(scales) != r:
            raise ConversionError(f"resize: need {r} scales")
        attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric",
                 "nearest_mode": "simple", "roi": (), "extrapolation_value": 0.0}
        return _emit_resize(ctx, t, scales, _sizes_from_scales(t, scales), attrs)

    coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
    if coord == "half_pixel_symmetric" and ctx.opset < 19 or \
            coord == "tf_half_pixel_for_nn" and ctx.opset >= 13:
        raise ConversionError(f"resize: coordinate_transformation_mode {coord!r} is not in "
                              f"opset {ctx.opset}")
    axes = list(range(r))
    if ctx.opset >= 18 and ctx.attr("axes") is not None:
        axes = _norm_axes(_ints(ctx.attr("axes")), r)
    scales_in = _float_list(ctx.require_const(2, "scales")) if ctx.has_input(2) else None
    sizes_in = _ints(ctx.require_const(3, "sizes")) if ctx.has_input(3) else []
    if (scales_in is None) == (not sizes_in):
        raise ConversionError("resize: give exactly one of scales and sizes")
    given = scales_in if scales_in is not None else sizes_in
    if len(given) != len(axes):
        raise ConversionError(f"resize: {len(given)} scales/sizes for {len(axes)} axes")

    scales = [1.0] * r
    sizes = list(t.shape)
    if scales_in is not None:
        for a, s in zip(axes, scales_in, strict=True):
            if s <= 0:
                raise ConversionError(f"resize: scale {s} must be > 0")
            scales[a] = s
        sizes = _sizes_from_scales(t, scales)
    else:
        for a, s in zip(axes, sizes_in, strict=True):
            sizes[a] = s
        scales = [float(np.float32(m) / np.float32(n)) if n else 1.0
                  for m, n in zip(sizes, t.shape, strict=True)]
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch") if ctx.opset >= 18 else "stretch"
        if policy in ("not_larger", "not_smaller"):
            pick = min if policy == "not_larger" else max
            common = pick(scales[a] for a in axes)
            for a in axes:
                scales[a] = common
                sizes[a] = int(np.float32(common) * np.float32(t.shape[a]) + np.float32(0.5))
        elif policy != "stretch":
            raise ConversionError(f"resize: unknown keep_aspect_ratio_policy {policy!r}")

    # antialias only changes linear/cubic, and only when downscaling
    antialias = bool(ctx.opset >= 18 and ctx.attr("antialias", 0) and mode != "nearest"
                     and any(s < 1 for s in scales))
    roi: tuple[float, ...] = ()
    if coord == "tf_crop_and_resize":
        roi_in = _float_list(ctx.require_const(1, "roi"))
        if roi_in is None or len(roi_in) != 2 * len(axes):
            raise ConversionError(f"resize: tf_crop_and_resize needs a roi of {2 * len(axes)} "
                                  "values")
        full = [0.0] * r + [1.0] * r
        for k, a in enumerate(axes):
            full[a], full[r + a] = roi_in[k], roi_in[len(axes) + k]
        roi = tuple(full)
    attrs = {
        "mode": mode, "coordinate_transformation_mode": coord,
        "nearest_mode": ctx.attr("nearest_mode", "round_prefer_floor"), "roi": roi,
        "extrapolation_value": float(ctx.attr("extrapolation_value", 0.0)),
        "lengths_from_scales": scales_in is not None,
        "cubic_coeff_a": float(ctx.attr("cubic_coeff_a", -0.75)),
        "exclude_outside": bool(ctx.attr("exclude_outside", 0)), "antialias": antialias,
    }
    return _emit_resize(ctx, t, scales, sizes, attrs)


@converter("Upsample", since=7)
def convert_upsample(ctx: ConvertContext) -> list[str]:
    t = _in_type(ctx)
    mode = ctx.attr("mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode
    if mode not in ("nearest", "linear"):
        raise ConversionError(f"upsample: unsupported mode {mode!r}")
    scales = (_float_list(np.asarray(ctx.attr("scales", []), dtype=np.float32))
              if ctx.opset < 9 else _float_list(ctx.require_const(1, "scales")))
    if scales is None or len(scales) != t.rank or any(s < 1 for s in scales):
        raise ConversionError(f"upsample: need {t.rank} scales >= 1, got {scales}")
    attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric",
             "nearest_mode": "simple", "roi": (), "extrapolation_value": 0.0}
    return _emit_resize(ctx, t, scales, _sizes_from_scales(t, scales), attrs)
