"""quantize: rewrite a float graph into TFLite-style int8 ops from calibrated ranges.

    %c = conv(%x, %w, %b); %y = relu(%c); %p = softmax(%y)
    →  %x_q8 = quantize_linear(%x, ...)
       %y_q8 = conv_s8(%x_q8, %w_s8, %mult, %shift, %b_s32) {act_min = output zero point, ...}
       %p_q8 = softmax_s8(%y_q8) {input_multiplier, input_left_shift, diff_min, axis}
       %p = dequantize_linear(%p_q8, 1/256, -128)

Run on the float graph after fold-constants / eliminate-dead-code / fold-batchnorm and before
fuse-ops. Rewritten: conv (incl. depthwise), gemm and matmul with a constant weight (and a following
constant bias add) → fully_connected_s8, max_pool / average_pool / global_average_pool → *_pool_s8,
add / mul → add_s8 / mul_s8, softmax over the trailing axes → softmax_s8 (output scale 1/256,
zero point -128, as TFLite), reshape on an int8 value stays int8. A relu or clip right after a
rewritten op folds into its output clamp. Weights are per-channel symmetric int8, biases int32,
requantization multipliers/shifts int32 constants; every int8 value's `TensorType.quant` holds its
(asymmetric, per-tensor) parameters from the calibrated range. quantize_linear is inserted where an
int8 op needs a float value, dequantize_linear where a float op or a graph output needs an int8
value, so any graph still runs: ops without an int8 form (a softmax over a middle axis, ...) stay
float.

The pass takes the ranges from `ctx.facts["quant_ranges"]` (`{float value name: (min, max)}`, as
`nnc.passes.calibrate.calibrate` returns them) and leaves the quantized graph there too, under
`ctx.facts["quantized_graph"]`, with `ctx.facts["quant_map"]` = {int8 value name: the float value
it stands for} (what the accuracy report compares layer by layer).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nnc.errors import NncError
from nnc.ir.graph import Attrs, Constant, Graph, Op, Value, fresh_name
from nnc.ir.ops import OpError, get_op
from nnc.ir.ops.int8_softmax import MAX_ROW as SOFTMAX_MAX_ROW
from nnc.ir.ops.int8_softmax import OUTPUT_SCALE as SOFTMAX_OUTPUT_SCALE
from nnc.ir.ops.int8_softmax import OUTPUT_ZERO_POINT as SOFTMAX_OUTPUT_ZERO_POINT
from nnc.ir.ops.int8_softmax import rows_of, softmax_s8_params
from nnc.ir.types import QuantParams, TensorType
from nnc.passes.manager import PassContext, register_pass
from nnc.passes.quant_scheme import (
    INT8_MAX,
    INT8_MIN,
    activation_params,
    bias_params,
    quantize,
    quantize_multiplier,
    weight_params,
)

Range = tuple[float, float]
ADD_LEFT_SHIFT = 20  # TFLite's int8 Add
LUT_LOOKAHEAD = 16  # ops after a lut_s8 region's first one that may still belong to it


def _const(name: str, data: np.ndarray, quant: QuantParams | None = None) -> Constant:
    arr = np.array(data, copy=True)
    arr.setflags(write=False)
    t = TensorType(tuple(int(d) for d in arr.shape), str(arr.dtype), None, quant)
    return Constant(Value(name, t), arr)


def _multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(reals)]
    return (np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32))


def _clamp_of(op: Op, q: QuantParams) -> tuple[int, int] | None:
    """The int8 clamp a relu / clip applies to a value quantized with `q`, or None."""
    scale, zp = q.scale[0], q.zero_point[0]

    def code(v: float) -> int:
        return int(np.clip(zp + np.round(v / scale), INT8_MIN, INT8_MAX))

    if op.kind == "relu":
        return code(0.0), INT8_MAX
    if op.kind == "clip":
        lo = code(op.attrs.get_float("min")) if "min" in op.attrs else INT8_MIN
        hi = code(op.attrs.get_float("max")) if "max" in op.attrs else INT8_MAX
        return lo, hi
    return None


class _Rewriter:
    """Walks the float graph in order and emits the mixed int8 / float graph."""

    def __init__(self, graph: Graph, ranges: Mapping[str, Range]) -> None:
        self.g = graph
        self.ranges = ranges
        self.types = graph.value_types()
        self.consts = graph.constant_map()
        self.users = graph.consumers()
        self.outputs = set(graph.output_names())
        self.taken = set(self.types) | {op.name for op in graph.ops}
        self.new_consts: list[Constant] = list(graph.constants)
        self.ops: list[Op] = []
        self.q8: dict[str, str] = {}  # float value name -> its int8 twin
        self.floats: set[str] = {v.name for v in graph.inputs} | set(self.consts)
        self.folded: set[int] = set()  # ids of relu/clip ops folded into the op before them
        self.qtypes: dict[str, TensorType] = {}  # types of the int8 values made so far
        self.index = {id(op): i for i, op in enumerate(graph.ops)}

    # --- naming and constants

    def fresh(self, hint: str) -> str:
        return fresh_name(hint, self.taken)

    def add_const(self, hint: str, data: np.ndarray, quant: QuantParams | None = None) -> str:
        c = _const(self.fresh(hint), data, quant)
        self.new_consts.append(c)
        return c.name

    # --- value conversions

    def params(self, name: str) -> QuantParams | None:
        """Activation parameters of float value `name` from its calibrated range."""
        r = self.ranges.get(name)
        if r is None or self.types[name].dtype != "float32":
            return None
        return activation_params(float(r[0]), float(r[1]))

    def int8_of(self, name: str) -> str | None:
        """The int8 twin of `name`, quantizing it (constant or float activation) if needed."""
        if name in self.q8:
            return self.q8[name]
        t = self.types[name]
        if t.dtype != "float32":
            return None
        if name in self.consts:
            data = self.consts[name]
            cq = activation_params(float(data.min(initial=0.0)), float(data.max(initial=0.0)))
            qname = self.add_const(f"{name}_q8", quantize(data, cq), cq)
            self.q8[name] = qname
            self.qtypes[qname] = TensorType(data.shape, "int8", None, cq)
            return qname
        q = self.params(name)
        if q is None:
            return None
        out = Value(self.fresh(f"{name}_q8"), TensorType(t.shape, "int8", t.layout, q))
        scale = self.add_const(f"{name}_scale", np.array([q.scale[0]], np.float32))
        zp = self.add_const(f"{name}_zp", np.array([q.zero_point[0]], np.int8))
        self.ops.append(Op("quantize_linear", (self.float_of(name), scale, zp), (out,),
                           Attrs.of(dtype="int8"), name=out.name))
        self.q8[name] = out.name
        self.qtypes[out.name] = out.type
        return out.name

    def float_of(self, name: str) -> str:
        """`name` as a float value, dequantizing its int8 twin on first use."""
        if not name or name in self.floats:
            return name
        qname = self.q8[name]
        q = self.qtypes[qname].quant
        assert q is not None
        scale = self.add_const(f"{name}_scale", np.array([q.scale[0]], np.float32))
        zp = self.add_const(f"{name}_zp", np.array([q.zero_point[0]], np.int8))
        out = Value(name, self.types[name])
        self.ops.append(Op("dequantize_linear", (qname, scale, zp), (out,),
                           Attrs.of(dtype="float32"), name=self.fresh(f"{name}_dq")))
        self.floats.add(name)
        return name

    # --- output of a rewritten op, with a following relu / clip folded into its clamp

    def output(self, op: Op, q: QuantParams | None = None) -> tuple[str, QuantParams, int, int]:
        """(float name the int8 result stands for, its params, act_min, act_max)."""
        name = op.outputs[0].name
        users = self.users.get(name, [])
        if name not in self.outputs and len(users) == 1 and users[0].kind in ("relu", "clip"):
            nxt = users[0]
            nq = q if q is not None else self.params(nxt.outputs[0].name)
            if nq is not None and nxt.outputs[0].type.dtype == "float32":
                clamp = _clamp_of(nxt, nq)
                assert clamp is not None
                self.folded.add(id(nxt))
                return nxt.outputs[0].name, nq, clamp[0], clamp[1]
        oq = q if q is not None else self.params(name)
        if oq is None:
            raise _Skip
        return name, oq, INT8_MIN, INT8_MAX

    def emit(self, kind: str, inputs: tuple[str, ...], stands_for: str, q: QuantParams,
             attrs: Mapping[str, object], op_name: str) -> None:
        t = self.types[stands_for]
        out = Value(self.fresh(f"{stands_for}_q8"), TensorType(t.shape, "int8", t.layout, q))
        self.ops.append(Op(kind, inputs, (out,), Attrs.of(dict(attrs)),
                           name=self.fresh(f"{op_name or stands_for}_s8")))
        self.q8[stands_for] = out.name
        self.qtypes[out.name] = out.type

    # --- the rewrite rules

    def run(self) -> Graph:
        for op in self.g.ops:
            if id(op) in self.folded:
                continue
            mark = (len(self.ops), len(self.new_consts), dict(self.q8), set(self.folded),
                    set(self.floats), set(self.taken))
            done = False
            # a multi-op unary region as one table first (one rounding instead of one per op),
            # then the op's own int8 rule, then a one-op table
            for rule in (lambda o: self._rw_lut(o, min_ops=2), self.rewrite, self._rw_lut):
                try:
                    if rule(op):
                        done = True
                        break
                except _Skip:
                    pass
                # undo a partial rewrite before the next rule, or before keeping the op float
                self.ops = self.ops[:mark[0]]
                self.new_consts = self.new_consts[:mark[1]]
                self.q8, self.folded = dict(mark[2]), set(mark[3])
                self.floats, self.taken = set(mark[4]), set(mark[5])
            if done:
                continue
            self.ops.append(op.with_(inputs=tuple(self.float_of(n) for n in op.inputs)))
            self.floats.update(v.name for v in op.outputs)
        for v in self.g.outputs:
            self.float_of(v.name)
        used = {n for op in self.ops for n in op.inputs}
        consts = tuple(c for c in self.new_consts if c.name in used)
        return self.g.replace(constants=consts, ops=tuple(self.ops))

    def rewrite(self, op: Op) -> bool:
        if op.kind == "split" and op.body is None:
            return self._rw_split(op)
        if op.body is not None or len(op.outputs) != 1:
            return False
        if op.outputs[0].type.dtype != "float32":
            return False
        rule = getattr(self, f"_rw_{op.kind}", None)
        return bool(rule(op)) if rule is not None else False

    def _act_in(self, name: str) -> tuple[str, QuantParams]:
        """A non-constant float32 activation input as int8 (raises _Skip if impossible)."""
        if name in self.consts:
            raise _Skip
        q8 = self.int8_of(name)
        if q8 is None:
            raise _Skip
        q = self.qtypes[q8].quant
        assert q is not None
        return q8, q

    def _weighted(self, op: Op, kind: str, x: str, w: np.ndarray, bias: np.ndarray | None,
                  attrs: dict[str, object], out_op: Op | None = None) -> bool:
        """conv_s8 / fully_connected_s8 from float weight [OC, ...] and bias [OC]."""
        xq, xp = self._act_in(x)
        stands, oq, lo, hi = self.output(out_op or op)
        wq = weight_params(w, 0)
        ws = np.asarray(wq.scale, np.float64)
        reals = np.float64(np.float32(xp.scale[0])) * ws / np.float64(np.float32(oq.scale[0]))
        mult, shift = _multipliers(reals)
        base = op.name or stands
        inputs = [xq, self.add_const(f"{base}_w_s8", quantize(w, wq, narrow_range=True), wq),
                  self.add_const(f"{base}_mult", mult), self.add_const(f"{base}_shift", shift)]
        if bias is not None:
            bq = bias_params(xp.scale[0], wq.scale)
            inputs.append(self.add_const(f"{base}_b_s32", quantize(bias, bq, "int32", True), bq))
        attrs.update(input_zero_point=xp.zero_point[0], output_zero_point=oq.zero_point[0],
                     act_min=lo, act_max=hi)
        self.emit(kind, tuple(inputs), stands, oq, attrs, op.name)
        return True

    def _rw_conv(self, op: Op) -> bool:
        if op.inputs[1] not in self.consts or len(self.types[op.inputs[0]].shape) < 3:
            return False
        b = op.inputs[2] if len(op.inputs) > 2 and op.inputs[2] else None
        if b is not None and b not in self.consts:
            return False
        bias = self.consts[b] if b else None
        attrs: dict[str, object] = {k: op.attrs[k] for k in ("strides", "pads", "dilations",
                                                              "group") if k in op.attrs}
        return self._weighted(op, "conv_s8", op.inputs[0], self.consts[op.inputs[1]], bias, attrs)

    def _rw_gemm(self, op: Op) -> bool:
        a = op.attrs
        if a.get_int("trans_a", 0) or op.inputs[1] not in self.consts:
            return False
        w = self.consts[op.inputs[1]].astype(np.float32)
        w = (w if a.get_int("trans_b", 0) else w.T) * np.float32(a.get_float("alpha", 1.0))
        n = w.shape[0]
        bias = None
        if len(op.inputs) > 2 and op.inputs[2]:
            c = self.consts.get(op.inputs[2])
            if c is None or c.size not in (1, n) or (c.size == n and c.shape[-1] != n):
                return False
            bias = np.broadcast_to(c.reshape(-1), (n,)) * np.float32(a.get_float("beta", 1.0))
        return self._weighted(op, "fully_connected_s8", op.inputs[0], w, bias, {})

    def _rw_matmul(self, op: Op) -> bool:
        w = self.consts.get(op.inputs[1])
        if w is None or w.ndim != 2 or op.inputs[0] in self.consts:
            return False
        n = w.shape[1]
        name = op.outputs[0].name
        users = self.users.get(name, [])
        bias, out_op = None, None
        if name not in self.outputs and len(users) == 1 and users[0].kind == "add":
            add = users[0]
            other = next((i for i in add.inputs if i != name), None)
            c = self.consts.get(other) if other else None
            if (c is not None and add.inputs.count(name) == 1 and c.size == n
                    and c.shape[-1] == n and add.outputs[0].type.shape == op.outputs[0].type.shape):
                bias, out_op = c.reshape(-1), add
                self.folded.add(id(add))
        return self._weighted(op, "fully_connected_s8", op.inputs[0], w.T.copy(), bias, {},
                              out_op)

    def _pool(self, op: Op, kind: str, attrs: dict[str, object]) -> bool:
        xq, xp = self._act_in(op.inputs[0])
        stands, oq, lo, hi = self.output(op, xp)  # pools keep the input's parameters
        attrs.update(act_min=lo, act_max=hi)
        self.emit(kind, (xq,), stands, oq, attrs, op.name)
        return True

    def _pool_attrs(self, op: Op) -> dict[str, object] | None:
        if any(d != 1 for d in op.attrs.get_ints("dilations", (1,))):
            return None
        ks = op.attrs.get_ints("kernel_shape")
        pads = op.attrs.get_ints("pads", (0,) * (2 * len(ks)))
        if any(p >= k for p, k in zip(pads, ks + ks, strict=True)):
            return None
        return {k: op.attrs[k] for k in ("kernel_shape", "strides", "pads", "ceil_mode")
                if k in op.attrs}

    def _rw_max_pool(self, op: Op) -> bool:
        attrs = self._pool_attrs(op)
        return attrs is not None and self._pool(op, "max_pool_s8", attrs)

    def _rw_average_pool(self, op: Op) -> bool:
        attrs = self._pool_attrs(op)
        if attrs is None:
            return False
        if op.attrs.get_int("count_include_pad", 0) and any(op.attrs.get_ints("pads", ())):
            return False  # avg_pool_s8 never counts padding
        return self._pool(op, "avg_pool_s8", attrs)

    def _rw_global_average_pool(self, op: Op) -> bool:
        spatial = self.types[op.inputs[0]].shape[2:]
        return bool(spatial) and self._pool(op, "avg_pool_s8", {"kernel_shape": spatial})

    def _moves_codes(self, op: Op, int8_already: bool = False) -> bool:
        """An op that only moves elements (reshape, slice, nearest resize) on int8 codes: the
        output keeps the input's parameters. `int8_already`: only for an input that is int8."""
        if any(op.inputs[1:]) or (int8_already and op.inputs[0] not in self.q8):
            return False
        xq, xp = self._act_in(op.inputs[0])
        self.emit(op.kind, (xq,), op.outputs[0].name, xp, dict(op.attrs.items()), op.name)
        return True

    def _rw_reshape(self, op: Op) -> bool:
        return self._moves_codes(op, int8_already=True)

    def _binary_in(self, op: Op) -> tuple[str, QuantParams, str, QuantParams]:
        if len(op.inputs) != 2 or all(n in self.consts for n in op.inputs):
            raise _Skip
        ins = []
        for n in op.inputs:
            q8 = self.int8_of(n)
            if q8 is None:
                raise _Skip
            q = self.qtypes[q8].quant
            assert q is not None
            ins += [q8, q]
        return ins[0], ins[1], ins[2], ins[3]  # type: ignore[return-value]

    def _rw_add(self, op: Op) -> bool:
        a, ap, b, bp = self._binary_in(op)
        stands, oq, lo, hi = self.output(op)
        sa, sb, so = (np.float64(np.float32(p.scale[0])) for p in (ap, bp, oq))
        twice_max = 2.0 * max(sa, sb)
        ma, sha = quantize_multiplier(sa / twice_max)
        mb, shb = quantize_multiplier(sb / twice_max)
        mo, sho = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * so))
        attrs = dict(a_zero_point=ap.zero_point[0], a_multiplier=ma, a_shift=sha,
                     b_zero_point=bp.zero_point[0], b_multiplier=mb, b_shift=shb,
                     left_shift=ADD_LEFT_SHIFT, output_zero_point=oq.zero_point[0],
                     output_multiplier=mo, output_shift=sho, act_min=lo, act_max=hi)
        self.emit("add_s8", (a, b), stands, oq, attrs, op.name)
        return True

    def _rw_mul(self, op: Op) -> bool:
        a, ap, b, bp = self._binary_in(op)
        stands, oq, lo, hi = self.output(op)
        real = (np.float64(np.float32(ap.scale[0])) * np.float64(np.float32(bp.scale[0]))
                / np.float64(np.float32(oq.scale[0])))
        mo, sho = quantize_multiplier(real)
        attrs = dict(a_zero_point=ap.zero_point[0], b_zero_point=bp.zero_point[0],
                     output_zero_point=oq.zero_point[0], output_multiplier=mo,
                     output_shift=sho, act_min=lo, act_max=hi)
        self.emit("mul_s8", (a, b), stands, oq, attrs, op.name)
        return True

    def _lut_step(self, op: Op, values: set[str], shape: tuple[int, ...]) -> bool:
        """Whether `op` is an elementwise float op of `values` and scalar constants only."""
        if op.body is not None or len(op.outputs) != 1 or op.outputs[0].type.dtype != "float32":
            return False
        if op.outputs[0].type.shape != shape or id(op) in self.folded:
            return False
        try:
            opdef = get_op(op.kind)
        except KeyError:
            return False
        if opdef.scalar is None or not opdef.fusable:
            return False
        return all(not n or n in values or (n in self.consts and self.consts[n].size == 1)
                   for n in op.inputs) and any(n in values for n in op.inputs)

    def _lut_region(self, op: Op, x: str) -> list[Op]:
        """The longest run of elementwise ops from `op` computing one value from int8 `x` and
        scalar constants alone, whose only value used elsewhere is its last op's output (Paddle's
        hard-swish x * clip(x + 3, 0, 6) / 6 is one such region of four ops)."""
        shape = self.types[x].shape
        region, values = [op], {x, op.outputs[0].name}
        start = self.index[id(op)]
        for other in self.g.ops[start + 1:start + 1 + LUT_LOOKAHEAD]:
            if self._lut_step(other, values, shape):
                region.append(other)
                values.add(other.outputs[0].name)
        for k in range(len(region), 0, -1):
            inside = {id(o) for o in region[:k]}
            made = {o.outputs[0].name for o in region[:k]}
            exits = {n for n in made if n in self.outputs
                     or any(id(u) not in inside for u in self.users.get(n, []))}
            if exits <= {region[k - 1].outputs[0].name}:
                return region[:k]
        return [op]

    def _rw_lut(self, op: Op, min_ops: int = 1) -> bool:
        """Elementwise float ops of one int8 activation (other inputs scalar constants) →
        lut_s8: their numpy references run on the 256 dequantized int8 values, quantized with
        the last output's parameters. Exact on every target, and one load per element."""
        acts = [n for n in op.inputs if n and n not in self.consts]
        if len(acts) != 1 or acts[0] not in self.q8:
            return False
        x = acts[0]
        if not self._lut_step(op, {x}, self.types[x].shape):
            return False
        region = self._lut_region(op, x) if min_ops > 1 else [op]
        if len(region) < min_ops:
            return False
        xp = self.qtypes[self.q8[x]].quant
        assert xp is not None
        levels = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int32)
        env = {x: ((levels - xp.zero_point[0]) * np.float32(xp.scale[0])).astype(np.float32)}
        with np.errstate(all="ignore"):
            for o in region:
                args = [env[n] if n in env else (np.asarray(self.consts[n]).reshape(())
                                                 if n else None) for n in o.inputs]
                env[o.outputs[0].name] = np.asarray(
                    get_op(o.kind).reference(args, o.attrs)[0], np.float32)
        last = region[-1]
        ys = env[last.outputs[0].name]
        if ys.shape != levels.shape or not np.all(np.isfinite(ys)):
            return False
        for o in region[1:]:
            self.folded.add(id(o))
        stands, oq, lo, hi = self.output(last)
        table = np.clip(quantize(ys, oq), lo, hi).astype(np.int8)
        tname = self.add_const(f"{stands}_lut", table)
        self.emit("lut_s8", (self.q8[x], tname), stands, oq, {}, last.name or op.name)
        return True

    def _requantized(self, q8: str, to: QuantParams) -> str:
        """int8 value `q8` in parameters `to`: itself when they match, else an identity lut_s8
        (exact requantization, one load per element)."""
        q = self.qtypes[q8].quant
        assert q is not None
        if (q.scale[0], q.zero_point[0]) == (to.scale[0], to.zero_point[0]):
            return q8
        levels = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int32)
        real = ((levels - q.zero_point[0]) * np.float32(q.scale[0])).astype(np.float32)
        table = self.add_const(f"{q8}_requant_lut", quantize(real, to))
        t = self.qtypes[q8]
        out = Value(self.fresh(f"{q8}_rq"), TensorType(t.shape, "int8", t.layout, to))
        self.ops.append(Op("lut_s8", (q8, table), (out,), Attrs.of({}), name=out.name))
        self.qtypes[out.name] = out.type
        return out.name

    def _rw_resize(self, op: Op) -> bool:
        return op.attrs.get("mode", "nearest") == "nearest" and self._moves_codes(op)

    def _rw_slice(self, op: Op) -> bool:
        return self._moves_codes(op)  # start / end / step are attributes

    def _rw_split(self, op: Op) -> bool:
        """Split moves int8 codes: every piece keeps the input's parameters."""
        if any(op.inputs[1:]) or any(v.type.dtype != "float32" for v in op.outputs):
            return False
        xq, xp = self._act_in(op.inputs[0])
        outs = []
        for v in op.outputs:
            out = Value(self.fresh(f"{v.name}_q8"), TensorType(v.type.shape, "int8",
                                                               v.type.layout, xp))
            self.q8[v.name] = out.name
            self.qtypes[out.name] = out.type
            outs.append(out)
        self.ops.append(Op("split", (xq,), tuple(outs), op.attrs,
                           name=self.fresh(f"{op.name or outs[0].name}_s8")))
        return True

    def _rw_concat(self, op: Op) -> bool:
        """int8 concat in the output's calibrated parameters; an input in other parameters is
        requantized first (TFLite's converter forces one scale instead)."""
        stands = op.outputs[0].name
        oq = self.params(stands)
        if oq is None or not op.inputs or any(not n for n in op.inputs):
            raise _Skip
        ins = []
        for n in op.inputs:
            q8 = self.int8_of(n)
            if q8 is None:
                raise _Skip
            ins.append(self._requantized(q8, oq))
        self.emit("concat", tuple(ins), stands, oq, dict(op.attrs.items()), op.name)
        return True

    def _rw_softmax(self, op: Op) -> bool:
        """Softmax over the trailing axes (the last one, as TFLite) → softmax_s8, whose output
        parameters are fixed: scale 1/256, zero point -128 (TFLite, QLinearSoftmax)."""
        x = op.inputs[0]
        shape = self.types[x].shape
        axes = sorted(a % len(shape) for a in op.attrs.get_ints("axes", (-1,))) if shape else []
        if not axes or axes != list(range(axes[0], len(shape))):
            return False  # a softmax over a middle axis stays float
        xq, xp = self._act_in(x)
        try:
            mult, shift, diff_min = softmax_s8_params(xp.scale[0])
        except OpError:
            return False  # an input scale below 2^-26: no int8 softmax
        attrs = dict(axis=axes[0], input_multiplier=mult, input_left_shift=shift,
                     diff_min=diff_min)
        if rows_of(shape, Attrs.of(attrs))[1] > SOFTMAX_MAX_ROW:
            return False
        oq = QuantParams((SOFTMAX_OUTPUT_SCALE,), (SOFTMAX_OUTPUT_ZERO_POINT,))
        self.emit("softmax_s8", (xq,), op.outputs[0].name, oq, attrs, op.name)
        return True


class _Skip(Exception):
    """This op cannot be rewritten (no range, a float-only input, ...): keep it float."""


def quantize_graph(graph: Graph, ranges: Mapping[str, Range]) -> Graph:
    """`graph` with every op that has an int8 form rewritten to it (see the module docstring).

    `ranges` maps float value names to calibrated (min, max); ops whose values have no range stay
    float. Graph inputs and outputs keep their float types.
    """
    return _Rewriter(graph, ranges).run()


@register_pass("quantize")
def quantize_int8(graph: Graph, ctx: PassContext) -> Graph:
    """Rewrite into int8 ops from the calibrated ranges in ctx.facts["quant_ranges"]."""
    ranges = ctx.facts.get("quant_ranges")
    if ranges is None:
        raise NncError("quantize needs calibrated ranges (ctx.facts['quant_ranges']); "
                       "use nnc.compile(..., quantize='int8', calibration=...)")
    rewriter = _Rewriter(graph, ranges)
    out = rewriter.run()
    ctx.facts["quantized_graph"] = out
    values = set(out.value_types())
    ctx.facts["quant_map"] = {q: f for f, q in rewriter.q8.items() if q in values}
    return out
