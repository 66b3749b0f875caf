"""layout-nhwc: put the int8 convolutions and pools in NHWC (channels last), as CMSIS-NN and the
Cortex-M loop nests want them, with as few transposes left as the graph allows.

    %y = conv_s8(%x, %w OIHW, ...)
    →  %x_nhwc = transpose(%x) {perm=[0,2,3,1]}
       %y_nhwc = conv_s8(%x_nhwc, %w' OHWI, ...) {layout="NHWC"}
       %y = transpose(%y_nhwc) {perm=[0,3,1,2]}

then, to a fixed point:
- a transpose of a transpose is one transpose, or none when they cancel
  (NHWC → NCHW → NHWC between two convs);
- elementwise int8 ops (add_s8, mul_s8, lut_s8, per-tensor quantize/dequantize, relu, clip) whose
  activation inputs are all transposed the same way run before the transpose instead, so it
  can meet the next op's inverse (residual adds between convs);
- a reshape of an NHWC tensor transposed back to NCHW whose users are all fully_connected_s8 with
  constant weights reads the NHWC bytes directly, the weights' columns permuted to match (the
  flatten before a classifier);
- a transpose that only moves dimensions of size 1 is a reshape (no copy):
  [1, 1, 49, 10] → [1, 49, 10, 1], or [1, 1, 1, C] → [1, C, 1, 1] after a global pool.

Weights are permuted at compile time (conv: OHWI; depthwise: [1, *k, OC]); the graph's inputs
and outputs keep their layout. Float ops are left alone. Run after `quantize` (or `fuse-qdq`)
and before fuse-ops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value, fresh_name
from nnc.ir.ops.int8 import (
    conv_weight_perm,
    is_depthwise,
    is_nhwc,
    to_nchw_perm,
    to_nhwc_perm,
)
from nnc.ir.types import QuantParams, TensorType
from nnc.passes.eliminate_dead_code import eliminate_dead_code_graph
from nnc.passes.manager import PassContext, register_pass

CHANNELS_LAST = ("conv_s8", "max_pool_s8", "avg_pool_s8")
ELEMENTWISE = ("add_s8", "mul_s8", "lut_s8", "quantize_linear", "dequantize_linear", "relu",
               "clip")


def _perm(op: Op) -> tuple[int, ...]:
    return op.attrs.get_ints("perm")


def _compose(first: Sequence[int], second: Sequence[int]) -> tuple[int, ...]:
    """The perm of transpose(transpose(x, first), second)."""
    return tuple(first[i] for i in second)


def _moves_only_ones(shape: Sequence[int], perm: Sequence[int]) -> bool:
    """Whether transposing `shape` by `perm` keeps the order of the dimensions larger than 1
    (then the bytes do not move)."""
    big = [p for p in perm if shape[p] != 1]
    return big == sorted(big)


class _Rewriter:
    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.taken = set(graph.value_types()) | {op.name for op in graph.ops}
        self.consts = dict(graph.constant_map())
        self.new_consts: list[Constant] = list(graph.constants)

    def fresh(self, hint: str) -> str:
        return fresh_name(hint, self.taken)

    def const(self, hint: str, data: np.ndarray, quant: QuantParams | None) -> str:
        arr = np.ascontiguousarray(data)
        arr.setflags(write=False)
        name = self.fresh(hint)
        t = TensorType(tuple(int(d) for d in arr.shape), str(arr.dtype), None, quant)
        self.new_consts.append(Constant(Value(name, t), arr))
        self.consts[name] = arr
        return name

    def transpose(self, src: Value, perm: Sequence[int], out_name: str | None = None,
                  layout: str | None = None) -> tuple[Op, Value]:
        t = src.type
        shape = tuple(t.shape[p] for p in perm)
        out = Value(out_name or self.fresh(f"{src.name}_t"), TensorType(shape, t.dtype, layout,
                                                                        t.quant))
        return Op("transpose", (src.name,), (out,), Attrs.of(perm=tuple(perm)),
                  name=self.fresh(f"{out.name}_tr")), out

    # --- step 1: channels-last ops between transposes

    def convert(self, ops: Sequence[Op]) -> list[Op]:
        types = {v.name: v.type for v in self.g.inputs}
        types.update(self.g.value_types())
        out: list[Op] = []
        for op in ops:
            x = types.get(op.inputs[0]) if op.inputs else None
            if (op.kind not in CHANNELS_LAST or op.body is not None or is_nhwc(op.attrs)
                    or x is None or x.rank < 3):
                out.append(op)
                continue
            rank = x.rank
            tr_in, x_nhwc = self.transpose(Value(op.inputs[0], x), to_nhwc_perm(rank),
                                           layout="NHWC")
            inputs = [x_nhwc.name, *op.inputs[1:]]
            if op.kind == "conv_s8":
                w = self.consts[op.inputs[1]]
                perm = conv_weight_perm(rank, is_depthwise(op.attrs.get_int("group", 1),
                                                           x.shape[1]))
                wq = types[op.inputs[1]].quant
                if wq is not None and wq.axis is not None:
                    wq = QuantParams(wq.scale, wq.zero_point, perm.index(wq.axis))
                inputs[1] = self.const(f"{op.inputs[1]}_nhwc", w.transpose(perm), wq)
            y = op.outputs[0]
            y_shape = tuple(y.type.shape[p] for p in to_nhwc_perm(rank))
            y_nhwc = Value(self.fresh(f"{y.name}_nhwc"),
                           TensorType(y_shape, y.type.dtype, "NHWC", y.type.quant))
            out.append(tr_in)
            out.append(op.with_(inputs=tuple(inputs), outputs=(y_nhwc,),
                                attrs=op.attrs.set(layout="NHWC")))
            out.append(self.transpose(y_nhwc, to_nchw_perm(rank), out_name=y.name)[0])
        return out

    # --- step 2: simplify to a fixed point

    def simplify(self, graph: Graph) -> Graph:
        while True:
            changed = self.step(graph)
            if changed is None:
                return graph
            graph = eliminate_dead_code_graph(changed)

    def step(self, g: Graph) -> Graph | None:
        """One rewrite, or None when nothing applies."""
        producer = {v.name: op for op in g.ops for v in op.outputs}
        users = g.consumers()
        outputs = set(g.output_names())
        types = {v.name: v.type for v in g.inputs}
        types.update(g.value_types())
        for i, op in enumerate(g.ops):
            new: dict[int, list[Op]] | None = None
            if op.kind == "transpose":
                new = self.fold_transpose(i, op, producer, types)
            elif op.kind in ELEMENTWISE and op.body is None:
                new = self.sink(i, op, producer, types)
            elif op.kind == "reshape":
                new = self.flatten_into_fc(i, op, producer, users, outputs, types, g.ops)
            if new is not None:
                ops = [o for k, old in enumerate(g.ops) for o in new.get(k, [old])]
                used = {n for o in ops for n in o.inputs}
                consts = tuple(c for c in self.new_consts if c.name in used)
                return g.replace(ops=tuple(ops), constants=consts)
        return None

    def fold_transpose(self, i: int, op: Op, producer: dict[str, Op],
                       types: dict[str, TensorType]) -> dict[int, list[Op]] | None:
        src = types[op.inputs[0]]
        prev = producer.get(op.inputs[0])
        y = op.outputs[0]
        if prev is not None and prev.kind == "transpose":
            perm = _compose(_perm(prev), _perm(op))
            inner = Value(prev.inputs[0], types[prev.inputs[0]])
            if perm == tuple(range(len(perm))):
                return {i: [Op("reshape", (inner.name,), (y,), Attrs.of(shape=y.type.shape),
                               name=op.name)]}
            return {i: [self.transpose(inner, perm, out_name=y.name, layout=y.type.layout)[0]]}
        if _moves_only_ones(src.shape, _perm(op)):
            return {i: [Op("reshape", op.inputs, (y,), Attrs.of(shape=y.type.shape),
                           name=op.name)]}
        return None

    def sink(self, i: int, op: Op, producer: dict[str, Op],
             types: dict[str, TensorType]) -> dict[int, list[Op]] | None:
        """op(transpose(a), transpose(b), consts of one element) → transpose(op(a, b))."""
        y = op.outputs[0]
        perm = None
        inputs: list[str] = []
        for n in op.inputs:
            if not n:
                inputs.append(n)
                continue
            if n in self.consts:
                if self.consts[n].size != 1 and not (op.kind == "lut_s8" and n == op.inputs[1]):
                    return None
                inputs.append(n)
                continue
            prev = producer.get(n)
            if prev is None or prev.kind != "transpose" or types[n].shape != y.type.shape:
                return None
            if perm is not None and _perm(prev) != perm:
                return None
            perm = _perm(prev)
            inputs.append(prev.inputs[0])
        if perm is None or len(op.outputs) != 1 or op.attrs.get("axis", None) not in (None, 1):
            return None
        inv = np.argsort(perm)
        inner_shape = tuple(y.type.shape[int(p)] for p in inv)
        layout = types[inputs[next(k for k, n in enumerate(op.inputs) if n and n not in
                                   self.consts)]].layout
        mid = Value(self.fresh(f"{y.name}_pre"), TensorType(inner_shape, y.type.dtype, layout,
                                                            y.type.quant))
        return {i: [op.with_(inputs=tuple(inputs), outputs=(mid,)),
                    self.transpose(mid, perm, out_name=y.name)[0]]}

    def flatten_into_fc(self, i: int, op: Op, producer: dict[str, Op],
                        users: dict[str, list[Op]], outputs: set[str],
                        types: dict[str, TensorType],
                        ops: Sequence[Op]) -> dict[int, list[Op]] | None:
        """reshape(transpose(u NHWC → NCHW)) → [N, K] used only by fully_connected_s8 with
        constant weights: reshape u itself and permute the weights' columns to match."""
        prev = producer.get(op.inputs[0])
        y = op.outputs[0]
        if prev is None or prev.kind != "transpose" or y.name in outputs or y.type.rank != 2:
            return None
        u = types[prev.inputs[0]]
        if u.rank < 3 or _perm(prev) != to_nchw_perm(u.rank) or y.type.shape[0] != u.shape[0]:
            return None
        fcs = users.get(y.name, [])
        if not fcs or any(f.kind != "fully_connected_s8" or f.inputs[0] != y.name
                          or f.inputs[1] not in self.consts for f in fcs):
            return None
        nchw = types[op.inputs[0]].shape
        new = {i: [Op("reshape", (prev.inputs[0],), (y,), Attrs.of(shape=y.type.shape),
                      name=op.name)]}
        for k, f in enumerate(ops):
            if any(f is c for c in fcs):
                w = self.consts[f.inputs[1]]
                oc = w.shape[0]
                cols = w.reshape(oc, *nchw[1:]).transpose(0, *range(2, len(nchw)), 1)
                wname = self.const(f"{f.inputs[1]}_nhwc", cols.reshape(oc, -1),
                                   types[f.inputs[1]].quant)
                new[k] = [f.with_(inputs=(f.inputs[0], wname, *f.inputs[2:]))]
        return new

    def run(self) -> Graph:
        g = self.g.replace(ops=tuple(self.convert(self.g.ops)))
        g = g.replace(constants=tuple(c for c in self.new_consts
                                      if c.name in {n for o in g.ops for n in o.inputs}))
        return self.simplify(g)


def layout_nhwc_graph(graph: Graph) -> Graph:
    """`graph` with its int8 convs and pools channels-last (see the module docstring)."""
    return _Rewriter(graph).run()


@register_pass("layout-nhwc")
def layout_nhwc(graph: Graph, ctx: PassContext) -> Graph:
    """int8 conv/pool ops to NHWC, transposes folded into constants or cancelled."""
    return layout_nhwc_graph(graph)
