"""fuse-qdq: lower an already-quantized ONNX model (QDQ or QOperator form) to nnc's int8 ops.

    %x = dequantize_linear(%x_q8, ...)             %y_q8 = conv_s8(%x_q8, %w_i8, %mult, %shift,
    %w = dequantize_linear(%w_i8 const, ...)   →                   %b_i32) {input_zero_point, ...}
    %b = dequantize_linear(%b_i32 const, ...)
    %c = conv(%x, %w, %b); %r = relu(%c); %y_q8 = quantize_linear(%r, ...)

Rewritten (int8 activations only; uint8 models keep their float QDQ form):
- DQ(x), DQ(w const), [DQ(b const int32) or float b] → conv / gemm / matmul → [relu / clip] → Q
  → conv_s8 / fully_connected_s8 (weights symmetric int8, per output channel or per tensor);
  matmul's weight is [K, N] (transposed to the op's [N, K]) or transpose(DQ(w [N, K])), and a
  bias may follow it as an add (tf2onnx writes a TFLite FULLY_CONNECTED with an unknown batch
  as DQ → MatMul → Add(DQ(bias int32)) → [Relu] → Q);
- DQ → max_pool / average_pool / global_average_pool → Q with the same scale and zero point in and
  out → max_pool_s8 / avg_pool_s8;
- DQ, DQ → add / mul → Q → add_s8 / mul_s8;  DQ → reshape → Q (same parameters) → int8 reshape;
- DQ → softmax over the trailing axes → Q with scale 1/256, zero point -128 → softmax_s8 (other
  output parameters keep the float softmax and warn);
- qlinear_conv / qlinear_matmul with int8 operands and symmetric constant int8 weights → conv_s8 /
  fully_connected_s8 (onnxruntime's com.microsoft QLinearAdd & co. arrive as QDQ from the importer).

Rounding (`FuseQdqOptions.rounding`, `nnc.compile(int8_rounding=)`): every int8 op computes
TFLite's arithmetic (`nnc.ir.fixed_point`: a doubling high multiply, then a rounding shift); the
(multiplier, shift) pairs of x_scale * w_scale / y_scale decide how often it rounds.
- "tflite" (the default, on every target: host and device agree bit for bit): QuantizeMultiplier's
  pairs computed as
  TFLite does (per-tensor FC: the scale product in float32), so it rounds twice as TFLite's
  reference kernels, TFLite Micro and CMSIS-NN do: bit-exact with them;
- "onnx" (opt-in, closer to onnxruntime): `_single_rounding_multipliers` (shift 0 for M in
  [2^-11, 0.5)), so the same arithmetic rounds once, as onnxruntime's float requantization does.
add_s8 / mul_s8 use QuantizeMultiplier either way (as `quantize` does). The constants are the
only difference, so the graph interpreter, the generated kernels and the CMSIS-NN calls agree in
both modes. The rewritten op takes over the Q's output value (name and type, with its
`TensorType.quant`), so consumers need no rewiring; anything that does not match stays as it is.
Graph inputs and outputs keep their types. Run it right after import, before fold-constants (the
importer keeps dequantize_linear of constant weights unfolded for it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value, fresh_name
from nnc.ir.ops import OpError
from nnc.ir.ops.int8_softmax import MAX_ROW as SOFTMAX_MAX_ROW
from nnc.ir.ops.int8_softmax import OUTPUT_SCALE as SOFTMAX_OUTPUT_SCALE
from nnc.ir.ops.int8_softmax import OUTPUT_ZERO_POINT as SOFTMAX_OUTPUT_ZERO_POINT
from nnc.ir.ops.int8_softmax import rows_of, softmax_s8_params
from nnc.ir.types import QuantParams, TensorType
from nnc.passes.fold_constants import drop_unused_constants
from nnc.passes.manager import PassContext, register_pass
from nnc.passes.quant_scheme import INT8_MAX, INT8_MIN, bias_params, quantize, quantize_multiplier
from nnc.passes.quantize import ADD_LEFT_SHIFT, _clamp_of, _multipliers


class _NoMatch(Exception):
    """The pattern does not apply here: keep the ops as they are."""


def _need(cond: bool) -> None:
    if not cond:
        raise _NoMatch


def _params(scale: np.ndarray, zp: np.ndarray | None) -> QuantParams:
    """QuantParams from a scale / zero point broadcast against the data (scalar or one axis)."""
    s = np.asarray(scale)
    _need(s.dtype == np.float32 and s.size >= 1)
    z = np.zeros(s.shape, np.int64) if zp is None else np.asarray(zp)
    _need(z.dtype.kind in "iu" and z.size in (1, s.size))
    if s.size == 1:
        return QuantParams((float(s.ravel()[0]),), (int(z.ravel()[0]),))
    axes = [d for d, n in enumerate(s.shape) if n > 1]
    _need(len(axes) == 1)
    zs = np.broadcast_to(z.reshape(-1), (s.size,))
    return QuantParams(tuple(float(v) for v in s.ravel()), tuple(int(v) for v in zs), axes[0])


def _same(a: QuantParams, b: QuantParams) -> bool:
    return (np.float32(a.scale[0]) == np.float32(b.scale[0])
            and a.zero_point[0] == b.zero_point[0])


def _f64(scale: float) -> np.float64:
    return np.float64(np.float32(scale))


# Below this M, rounding M * 2^31 to an integer (up to |acc| * 2^-32 LSB off for outputs up to
# 2^7 LSB, |acc| <= 2^7 / M) can cost more than the double rounding does (about M LSB).
SINGLE_ROUNDING_MIN = 2.0**-11


def _single_rounding_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(multiplier, shift) int32 arrays with which TFLite's requantization rounds once.

    QuantizeMultiplier normalizes M < 0.5 to a multiplier in [2^30, 2^31) and a right shift, so
    the arithmetic rounds twice (doubling high multiply, then rounding shift) and puts ~0.1-0.3% of
    codes 1 LSB off onnxruntime's single float rounding (AD: 80% exact, 97.7% within 1 LSB after
    ten layers). Multiplier round(M * 2^31) with shift 0 is the same arithmetic with an exact
    shift. Used for M in [SINGLE_ROUNDING_MIN, 0.5); M >= 0.5 rounds once already.
    >>> [v.tolist() for v in _single_rounding_multipliers(np.array([0.01, 0.75, 2.0**-12]))]
    [[21474836, 1610612736, 1073741824], [0, 0, -11]]
    """
    mult, shift = _multipliers(reals)
    flat = np.ravel(reals).astype(np.float64)
    single = (flat >= SINGLE_ROUNDING_MIN) & (shift < 0)
    mult = np.where(single, np.floor(flat * 2.0**31 + 0.5), mult).astype(np.int32)
    return mult, np.where(single, 0, shift).astype(np.int32)


ROUNDINGS = ("tflite", "onnx")


def requant_multipliers(reals: np.ndarray, rounding: str) -> tuple[np.ndarray, np.ndarray]:
    """(multiplier, shift) int32 arrays for real multipliers M, as `rounding` asks:
    "tflite": QuantizeMultiplier's normalized pairs, so TFLite's arithmetic rounds twice as TFLite
    (Micro) and CMSIS-NN do; "onnx": `_single_rounding_multipliers`, one rounding as onnxruntime.
    >>> [v.tolist() for v in requant_multipliers(np.array([0.01]), "tflite")]
    [[1374389535], [-6]]
    """
    if rounding == "tflite":
        return _multipliers(reals)
    if rounding == "onnx":
        return _single_rounding_multipliers(reals)
    raise ValueError(f"int8 rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")


def _fc_reals(x_scale: float, w_scales: np.ndarray, y_scale: float,
              rounding: str) -> np.ndarray:
    """Real requantization multipliers of a fully connected layer. TFLite computes a per-tensor
    one as double(float(x_scale * w_scale)) / y_scale (GetQuantizedConvolutionMultipler: the
    product in float32), per-channel ones (and convs) all in double."""
    if rounding == "tflite" and w_scales.size == 1:
        prod = np.float32(x_scale) * np.float32(w_scales.reshape(-1)[0])
        return np.array([np.float64(prod) / _f64(y_scale)])
    return _f64(x_scale) * w_scales / _f64(y_scale)


@dataclass(frozen=True)
class FuseQdqOptions:
    """`rounding`: how the requantization multipliers of conv / fully connected layers are
    encoded, "tflite" (TFLite's double rounding: bit-exact with TFLite Micro and CMSIS-NN) or
    "onnx" (one rounding, as onnxruntime); "" is the default, "tflite" on every target."""

    rounding: str = ""

    def __post_init__(self) -> None:
        if self.rounding not in ("", *ROUNDINGS):
            raise TypeError(f"rounding must be one of {', '.join(ROUNDINGS)}, "
                            f"got {self.rounding!r}")


def default_rounding(target: object) -> str:
    """The int8 rounding every target gets by default: "tflite" (what TFLite Micro and CMSIS-NN
    compute), on the host too, so a host build gives the device's bits; "onnx" is opt-in."""
    return "tflite"


class _Fuser:
    def __init__(self, graph: Graph, rounding: str) -> None:
        self.rounding = rounding
        self.rewritten = 0  # ops rewritten into int8 ones
        self.g = graph
        self.consts = graph.constant_map()
        self.const_types = {c.name: c.value.type for c in graph.constants}
        self.producers = graph.producers()
        self.users = graph.consumers()
        self.outputs = set(graph.output_names())
        self.taken = set(graph.value_types()) | {op.name for op in graph.ops}
        self.new_consts: list[Constant] = []
        self.retyped: dict[str, TensorType] = {}  # int8 weight constants given their QuantParams
        self.removed: set[int] = set()  # ids of ops a rewrite swallowed

    # --- helpers

    def add_const(self, hint: str, data: np.ndarray, quant: QuantParams | None = None) -> str:
        arr = np.array(data, copy=True)
        arr.setflags(write=False)
        name = fresh_name(hint, self.taken)
        t = TensorType(tuple(int(d) for d in arr.shape), str(arr.dtype), None, quant)
        self.new_consts.append(Constant(Value(name, t), arr))
        self.const_types[name] = t
        return name

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def dq(self, name: str, dtype: str = "int8") -> tuple[str, QuantParams]:
        """(integer source, its parameters) of a value made by dequantize_linear of `dtype`."""
        op = self.producers.get(name)
        _need(op is not None and op.kind == "dequantize_linear" and op.body is None)
        assert op is not None
        src = op.inputs[0]
        _need(self.type_of(src).dtype == dtype and op.outputs[0].type.dtype == "float32")
        scale = self.const(op.inputs[1])
        zp = self.const(op.inputs[2]) if len(op.inputs) > 2 else None
        _need(scale is not None and (len(op.inputs) < 3 or zp is not None))
        assert scale is not None
        return src, _params(scale, zp)

    def type_of(self, name: str) -> TensorType:
        if name in self.const_types:
            return self.const_types[name]
        if name in self.producers:
            op = self.producers[name]
            return next(v.type for v in op.outputs if v.name == name)
        return next(v.type for v in self.g.inputs if v.name == name)

    def activation(self, name: str) -> tuple[str, QuantParams]:
        """A per-tensor int8 activation behind a dequantize_linear."""
        src, q = self.dq(name)
        _need(q.axis is None)
        return src, q

    def single_user(self, name: str) -> Op:
        users = self.users.get(name, [])
        _need(name not in self.outputs and len(users) == 1 and id(users[0]) not in self.removed)
        return users[0]

    def quantized_output(self, op: Op, clamp: bool = True
                         ) -> tuple[list[Op], Value, QuantParams, int, int]:
        """(ops swallowed after `op`, the int8 value, its params, act_min, act_max) for
        op → [relu / clip] → quantize_linear(int8, per tensor)."""
        _need(len(op.outputs) == 1 and op.outputs[0].type.dtype == "float32")
        nxt = self.single_user(op.outputs[0].name)
        swallowed: list[Op] = []
        act: Op | None = None
        if clamp and nxt.kind in ("relu", "clip") and nxt.outputs[0].type.dtype == "float32":
            act = nxt
            swallowed.append(nxt)
            nxt = self.single_user(nxt.outputs[0].name)
        _need(nxt.kind == "quantize_linear" and nxt.inputs[0] == (act or op).outputs[0].name)
        out = nxt.outputs[0]
        _need(out.type.dtype == "int8")
        scale = self.const(nxt.inputs[1])
        zp = self.const(nxt.inputs[2]) if len(nxt.inputs) > 2 else None
        _need(scale is not None and (len(nxt.inputs) < 3 or zp is not None))
        assert scale is not None
        q = _params(scale, zp)
        _need(q.axis is None)
        lo, hi = INT8_MIN, INT8_MAX
        if act is not None:
            c = _clamp_of(act, q)
            _need(c is not None)
            assert c is not None
            lo, hi = c
        swallowed.append(nxt)
        value = Value(out.name, TensorType(out.type.shape, "int8", out.type.layout, q))
        return swallowed, value, q, lo, hi

    def weight(self, src: str, q: QuantParams, axis: int, transpose: bool = False
               ) -> tuple[str, np.ndarray]:
        """A symmetric int8 constant weight quantized per tensor or along `axis` (of the stored
        tensor); returns its name in [OC, ...] order and its scales per output channel or one."""
        data = self.const(src)
        _need(data is not None and all(z == 0 for z in q.zero_point))
        assert data is not None
        _need(q.axis is None or q.axis == axis)
        scales = np.asarray(q.scale, np.float64)
        wq = QuantParams(q.scale, q.zero_point, 0 if q.axis is not None else None)
        if transpose:
            return self.add_const(f"{src}_t", np.ascontiguousarray(data.T), wq), scales
        t = self.const_types[src]
        if t.quant != wq:
            self.retyped[src] = TensorType(t.shape, t.dtype, t.layout, wq)
        return src, scales

    def bias(self, name: str, x_scale: float, w_scales: np.ndarray, n: int, hint: str) -> str:
        """int32 bias [n] at scale x_scale * w_scale: the DQ'd int32 constant when its scale is
        that already, else the real bias requantized (a float constant bias too)."""
        ws = np.broadcast_to(w_scales.astype(np.float32), (n,))
        bq = bias_params(x_scale, tuple(float(v) for v in ws))
        want = np.asarray(bq.scale, np.float32)
        op = self.producers.get(name)
        if op is not None:
            src, q = self.dq(name, "int32")
            data = self.const(src)
            _need(data is not None and data.size in (1, n))
            assert data is not None
            s = np.broadcast_to(np.asarray(q.scale, np.float32), (n,))
            zp = np.broadcast_to(np.asarray(q.zero_point, np.int64), (n,))
            ints = np.broadcast_to(data.reshape(-1).astype(np.int64), (n,))
            if np.all(zp == 0) and np.allclose(s, want, rtol=1e-6, atol=0):
                return self.add_const(f"{hint}_b_s32", ints.astype(np.int32), bq)
            real = ((ints - zp) * s.astype(np.float64)).astype(np.float32)
        else:
            data = self.const(name)
            _need(data is not None and data.dtype == np.float32 and data.size in (1, n))
            assert data is not None
            real = np.broadcast_to(data.reshape(-1), (n,))
        return self.add_const(f"{hint}_b_s32", quantize(real, bq, "int32", True), bq)

    # --- rules: each returns the replacement op and the ops it swallows, or raises _NoMatch

    def weighted(self, op: Op, kind: str, x: str, w: str, w_scales: np.ndarray, bias: str,
                 attrs: dict[str, object], extra: Sequence[Op] = (), last: Op | None = None
                 ) -> tuple[Op, list[Op]]:
        """`op` [→ `last`, e.g. a bias add] → [relu / clip] → Q as `kind`, swallowing the ops in
        `extra` too (`last` among them)."""
        xq, xp = self.activation(x)
        swallowed, out, yq, lo, hi = self.quantized_output(last or op)
        if kind == "fully_connected_s8":
            reals = _fc_reals(xp.scale[0], w_scales, yq.scale[0], self.rounding)
        else:
            reals = _f64(xp.scale[0]) * w_scales / _f64(yq.scale[0])
        mult, shift = requant_multipliers(reals, self.rounding)
        swallowed = [*extra, *swallowed]
        base = op.name or out.name
        n = self.type_of(w).shape[0]
        inputs = [xq, w, self.add_const(f"{base}_mult", mult),
                  self.add_const(f"{base}_shift", shift)]
        if bias:
            inputs.append(self.bias(bias, xp.scale[0], w_scales, n, base))
        attrs.update(input_zero_point=xp.zero_point[0], output_zero_point=yq.zero_point[0],
                     act_min=lo, act_max=hi)
        return self.make(kind, inputs, out, attrs, op), swallowed

    def make(self, kind: str, inputs: Sequence[str], out: Value, attrs: dict[str, object],
             op: Op) -> Op:
        name = fresh_name(f"{op.name or out.name}_s8", self.taken)
        return Op(kind, tuple(inputs), (out,), Attrs.of(attrs), name=name)

    def rule_conv(self, op: Op) -> tuple[Op, list[Op]]:
        _need(self.type_of(op.inputs[0]).rank >= 3)
        wsrc, wq = self.dq(op.inputs[1])
        w, scales = self.weight(wsrc, wq, 0)
        attrs: dict[str, object] = {k: op.attrs[k] for k in ("strides", "pads", "dilations",
                                                             "group") if k in op.attrs}
        bias = op.inputs[2] if len(op.inputs) > 2 else ""
        return self.weighted(op, "conv_s8", op.inputs[0], w, scales, bias, attrs)

    def rule_gemm(self, op: Op) -> tuple[Op, list[Op]]:
        a = op.attrs
        _need(not a.get_int("trans_a", 0) and a.get_float("alpha", 1.0) == 1.0)
        bias = op.inputs[2] if len(op.inputs) > 2 else ""
        _need(not bias or a.get_float("beta", 1.0) == 1.0)
        trans_b = bool(a.get_int("trans_b", 0))
        wsrc, wq = self.dq(op.inputs[1])
        w, scales = self.weight(wsrc, wq, 0 if trans_b else 1, transpose=not trans_b)
        add = None
        if not bias:  # a bias added after the gemm
            bias, add = self.bias_add(op, self.type_of(w).shape[0])
        return self.weighted(op, "fully_connected_s8", op.inputs[0], w, scales, bias, {},
                             [add] if add else [], add)

    def rule_matmul(self, op: Op) -> tuple[Op, list[Op]]:
        """DQ(x) → MatMul(DQ(W [K, N])) [→ Add(bias [N])] [→ relu / clip] → Q, the weight also
        as Transpose(DQ(W [N, K])) (tf2onnx's fully connected with an unknown batch; TFLite
        stores FC weights [N, K]); x of any rank, the FC over its last axis."""
        extra: list[Op] = []
        t = self.producers.get(op.inputs[1])
        if t is not None and t.kind == "transpose" and t.attrs.get_ints("perm", ()) == (1, 0):
            wsrc, wq = self.dq(t.inputs[0])
            _need(self.type_of(wsrc).rank == 2)
            w, scales = self.weight(wsrc, wq, 0)
            if self.users.get(t.outputs[0].name, []) == [op] and t.outputs[0].name \
                    not in self.outputs:
                extra.append(t)  # the transpose of the DQ'd weight goes too
        else:
            wsrc, wq = self.dq(op.inputs[1])
            _need(self.type_of(wsrc).rank == 2)
            w, scales = self.weight(wsrc, wq, 1, transpose=True)
        n = self.type_of(w).shape[0]
        bias, add = self.bias_add(op, n)
        if add is not None:
            extra.append(add)
        return self.weighted(op, "fully_connected_s8", op.inputs[0], w, scales, bias, {},
                             extra, add)

    def bias_add(self, op: Op, n: int) -> tuple[str, Op | None]:
        """(bias value, the add) when `op`'s only user adds a bias along the last axis: a DQ'd
        int32 constant or a float constant of n (or 1) values; ("", None) otherwise."""
        out = op.outputs[0]
        users = self.users.get(out.name, [])
        if out.name in self.outputs or len(users) != 1 or users[0].kind != "add":
            return "", None
        add = users[0]
        if len(add.inputs) != 2 or add.outputs[0].type.shape != out.type.shape:
            return "", None
        other = add.inputs[1] if add.inputs[0] == out.name else add.inputs[0]
        if other == out.name:
            return "", None
        shape = self.type_of(other).shape
        if len(shape) > len(out.type.shape) or any(d != 1 for d in shape[:-1]) \
                or (shape and shape[-1] not in (1, n)):
            return "", None
        producer = self.producers.get(other)
        if producer is not None and producer.kind == "dequantize_linear":
            src = producer.inputs[0]
            if self.const(src) is None or self.type_of(src).dtype != "int32":
                return "", None
        elif self.const(other) is None or self.type_of(other).dtype != "float32":
            return "", None
        return other, add

    def pool(self, op: Op, kind: str, attrs: dict[str, object]) -> tuple[Op, list[Op]]:
        xq, xp = self.activation(op.inputs[0])
        swallowed, out, yq, lo, hi = self.quantized_output(op)
        _need(_same(xp, yq))  # the int8 pools do not requantize
        attrs.update(act_min=lo, act_max=hi)
        return self.make(kind, [xq], out, attrs, op), swallowed

    def pool_attrs(self, op: Op) -> dict[str, object]:
        _need(all(d == 1 for d in op.attrs.get_ints("dilations", (1,))))
        ks = op.attrs.get_ints("kernel_shape")
        pads = op.attrs.get_ints("pads", (0,) * (2 * len(ks)))
        _need(all(p < k for p, k in zip(pads, ks + ks, strict=True)))
        return {k: op.attrs[k] for k in ("kernel_shape", "strides", "pads", "ceil_mode")
                if k in op.attrs}

    def rule_max_pool(self, op: Op) -> tuple[Op, list[Op]]:
        return self.pool(op, "max_pool_s8", self.pool_attrs(op))

    def rule_average_pool(self, op: Op) -> tuple[Op, list[Op]]:
        attrs = self.pool_attrs(op)
        # avg_pool_s8 never counts padding
        _need(not (op.attrs.get_int("count_include_pad", 0) and any(op.attrs.get_ints("pads"))))
        return self.pool(op, "avg_pool_s8", attrs)

    def rule_global_average_pool(self, op: Op) -> tuple[Op, list[Op]]:
        spatial = self.type_of(op.inputs[0]).shape[2:]
        _need(bool(spatial))
        return self.pool(op, "avg_pool_s8", {"kernel_shape": spatial})

    def rule_reshape(self, op: Op) -> tuple[Op, list[Op]]:
        xq, xp = self.activation(op.inputs[0])
        swallowed, out, yq, lo, hi = self.quantized_output(op, clamp=False)
        _need(_same(xp, yq))
        return self.make("reshape", [xq], out, dict(op.attrs), op), swallowed

    def rule_softmax(self, op: Op) -> tuple[Op, list[Op]]:
        """DQ → softmax over the trailing axes → Q → softmax_s8, when Q has softmax_s8's fixed
        output parameters (scale 1/256, zero point -128; onnxruntime's int8 QDQ and
        QLinearSoftmax use them); other parameters keep the float softmax, with a warning."""
        shape = self.type_of(op.inputs[0]).shape
        axes = sorted(a % len(shape) for a in op.attrs.get_ints("axes", (-1,))) if shape else []
        _need(bool(axes) and axes == list(range(axes[0], len(shape))))
        xq, xp = self.activation(op.inputs[0])
        swallowed, out, yq, _, _ = self.quantized_output(op, clamp=False)
        if (np.float32(yq.scale[0]) != np.float32(SOFTMAX_OUTPUT_SCALE)
                or yq.zero_point[0] != SOFTMAX_OUTPUT_ZERO_POINT):
            warnings.warn(
                f"fuse-qdq: softmax {op.name or out.name!r} stays float: its output is quantized "
                f"with scale {yq.scale[0]:g}, zero point {yq.zero_point[0]}, and int8 softmax "
                f"(TFLite, CMSIS-NN) outputs scale 1/256, zero point {SOFTMAX_OUTPUT_ZERO_POINT}",
                stacklevel=2)
            raise _NoMatch
        try:
            mult, shift, diff_min = softmax_s8_params(xp.scale[0])
        except OpError:
            raise _NoMatch from None  # an input scale below 2^-26
        attrs: dict[str, object] = dict(axis=axes[0], input_multiplier=mult,
                                        input_left_shift=shift, diff_min=diff_min)
        _need(rows_of(shape, Attrs.of(attrs))[1] <= SOFTMAX_MAX_ROW)
        return self.make("softmax_s8", [xq], out, attrs, op), swallowed

    def binary(self, op: Op) -> tuple[str, QuantParams, str, QuantParams]:
        _need(len(op.inputs) == 2)
        a, ap = self.activation(op.inputs[0])
        b, bp = self.activation(op.inputs[1])
        return a, ap, b, bp

    def rule_add(self, op: Op) -> tuple[Op, list[Op]]:
        a, ap, b, bp = self.binary(op)
        swallowed, out, oq, lo, hi = self.quantized_output(op)
        sa, sb, so = _f64(ap.scale[0]), _f64(bp.scale[0]), _f64(oq.scale[0])
        twice_max = 2.0 * max(sa, sb)
        ma, sha = quantize_multiplier(sa / twice_max)
        mb, shb = quantize_multiplier(sb / twice_max)
        mo, sho = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * so))
        attrs: dict[str, object] = dict(
            a_zero_point=ap.zero_point[0], a_multiplier=ma, a_shift=sha,
            b_zero_point=bp.zero_point[0], b_multiplier=mb, b_shift=shb,
            left_shift=ADD_LEFT_SHIFT, output_zero_point=oq.zero_point[0],
            output_multiplier=mo, output_shift=sho, act_min=lo, act_max=hi)
        return self.make("add_s8", [a, b], out, attrs, op), swallowed

    def rule_mul(self, op: Op) -> tuple[Op, list[Op]]:
        a, ap, b, bp = self.binary(op)
        swallowed, out, oq, lo, hi = self.quantized_output(op)
        mo, sho = quantize_multiplier(_f64(ap.scale[0]) * _f64(bp.scale[0]) / _f64(oq.scale[0]))
        attrs: dict[str, object] = dict(
            a_zero_point=ap.zero_point[0], b_zero_point=bp.zero_point[0],
            output_zero_point=oq.zero_point[0], output_multiplier=mo, output_shift=sho,
            act_min=lo, act_max=hi)
        return self.make("mul_s8", [a, b], out, attrs, op), swallowed

    def qlinear(self, op: Op, x: int, w: int, y: int, axis: int
                ) -> tuple[str, QuantParams, str, np.ndarray, Value, QuantParams]:
        """The int8 operands of qlinear_conv / qlinear_matmul (inputs x, x_scale, x_zp at
        index x; w, w_scale, w_zp at w; y_scale, y_zp at y)."""
        consts = [self.const(n) for n in op.inputs]
        _need(all(c is not None for c in consts[x + 1:x + 3] + consts[w:w + 3]
                  + consts[y:y + 2]))
        xs, xz, wd, ws, wz, ys, yz = (np.asarray(c) for c in consts[x + 1:x + 3] + consts[w:w + 3]
                                      + consts[y:y + 2])
        _need(self.type_of(op.inputs[x]).dtype == "int8" and wd.dtype == np.int8
              and op.outputs[0].type.dtype == "int8" and xs.size == 1 and ys.size == 1)
        xp, yq = _params(xs, xz), _params(ys, yz)
        _need(bool(np.all(wz == 0)) and ws.dtype == np.float32 and ws.ndim <= 1)
        scales = ws.reshape(-1).astype(np.float64)
        _need(scales.size in (1, wd.shape[axis]))
        out = op.outputs[0]
        value = Value(out.name, TensorType(out.type.shape, "int8", out.type.layout, yq))
        return op.inputs[x], xp, op.inputs[w], scales, value, yq

    def requant_consts(self, base: str, reals: np.ndarray) -> list[str]:
        mult, shift = requant_multipliers(reals, self.rounding)
        return [self.add_const(f"{base}_mult", mult), self.add_const(f"{base}_shift", shift)]

    def rule_qlinear_conv(self, op: Op) -> tuple[Op, list[Op]]:
        xq, xp, w, scales, out, yq = self.qlinear(op, 0, 3, 6, 0)
        n = self.type_of(w).shape[0]
        wq = QuantParams(tuple(float(s) for s in scales), (0,) * scales.size,
                         0 if scales.size > 1 else None)
        wname, _ = self.weight(w, wq, 0)
        base = op.name or out.name
        inputs = [xq, wname, *self.requant_consts(
            base, _f64(xp.scale[0]) * scales / _f64(yq.scale[0]))]
        if len(op.inputs) > 8 and op.inputs[8]:
            b = self.const(op.inputs[8])
            _need(b is not None and b.dtype == np.int32 and b.shape == (n,))
            assert b is not None
            inputs.append(self.add_const(f"{base}_b_s32", b,
                                         bias_params(xp.scale[0], tuple(scales.tolist()))))
        attrs: dict[str, object] = {k: op.attrs[k] for k in ("strides", "pads", "dilations",
                                                             "group") if k in op.attrs}
        attrs.update(input_zero_point=xp.zero_point[0], output_zero_point=yq.zero_point[0],
                     act_min=INT8_MIN, act_max=INT8_MAX)
        return self.make("conv_s8", inputs, out, attrs, op), []

    def rule_qlinear_matmul(self, op: Op) -> tuple[Op, list[Op]]:
        xq, xp, w, scales, out, yq = self.qlinear(op, 0, 3, 6, 1)
        _need(self.type_of(w).rank == 2)
        wq = QuantParams(tuple(float(s) for s in scales), (0,) * scales.size,
                         1 if scales.size > 1 else None)
        wname, _ = self.weight(w, wq, 1, transpose=True)
        base = op.name or out.name
        inputs = [xq, wname, *self.requant_consts(
            base, _fc_reals(xp.scale[0], scales, yq.scale[0], self.rounding))]
        attrs: dict[str, object] = dict(input_zero_point=xp.zero_point[0],
                                        output_zero_point=yq.zero_point[0],
                                        act_min=INT8_MIN, act_max=INT8_MAX)
        return self.make("fully_connected_s8", inputs, out, attrs, op), []

    # --- driver

    def run(self) -> Graph:
        ops: list[Op] = []
        for op in self.g.ops:
            if id(op) in self.removed:
                continue
            rule: Callable[[Op], tuple[Op, list[Op]]] | None = getattr(
                self, f"rule_{op.kind}", None)
            if rule is None or op.body is not None:
                ops.append(op)
                continue
            mark = (len(self.new_consts), dict(self.retyped), set(self.taken))
            try:
                new, swallowed = rule(op)
            except _NoMatch:
                del self.new_consts[mark[0]:]
                self.retyped, self.taken = mark[1], mark[2]
                ops.append(op)
                continue
            self.removed.update(id(s) for s in swallowed)
            self.rewritten += 1
            ops.append(new)
        # a rewrite may swallow an op met earlier (the transpose of a DQ'd weight)
        ops = [o for o in ops if id(o) not in self.removed]
        ops = _drop_dead_dequantize(ops, set(self.g.output_names()))
        consts = tuple(Constant(Value(c.name, self.retyped[c.name]), c.data)
                       if c.name in self.retyped else c for c in self.g.constants)
        out = self.g.replace(constants=consts + tuple(self.new_consts), ops=tuple(ops))
        return drop_unused_constants(out)


def _drop_dead_dequantize(ops: list[Op], outputs: set[str]) -> list[Op]:
    """Without the dequantize_linear ops that only fed rewritten ops."""
    used = set(outputs)
    kept: list[Op] = []
    for op in reversed(ops):
        if op.kind == "dequantize_linear" and not any(v.name in used for v in op.outputs):
            continue
        used.update(n for n in op.inputs if n)
        kept.append(op)
    return kept[::-1]


def _fuse(graph: Graph, rounding: str) -> tuple[Graph, int]:
    """(the rewritten graph, how many ops were rewritten into int8 ones)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"int8 rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if not any(op.kind in ("dequantize_linear", "qlinear_conv", "qlinear_matmul")
               for op in graph.ops):
        return graph, 0
    fuser = _Fuser(graph, rounding)
    out = fuser.run()
    return out, fuser.rewritten


def fuse_qdq_graph(graph: Graph, rounding: str = "onnx") -> Graph:
    """`graph` with its quantize/dequantize patterns rewritten to int8 ops (module docstring),
    requantization multipliers encoded for `rounding` ("tflite" or "onnx")."""
    return _fuse(graph, rounding)[0]


@register_pass("fuse-qdq", options=FuseQdqOptions)
def fuse_qdq(graph: Graph, ctx: PassContext) -> Graph:
    """Rewrite QDQ / QLinear patterns of an already-quantized model into int8 ops; records the
    rounding used in `ctx.facts["int8_rounding"]` when it rewrote any."""
    opts = ctx.options if isinstance(ctx.options, FuseQdqOptions) else FuseQdqOptions()
    rounding = opts.rounding or default_rounding(ctx.target)
    out, count = _fuse(graph, rounding)
    if count:
        ctx.facts["int8_rounding"] = rounding
    return out
