"""fold-batchnorm: remove inference-mode batch normalization.

    y = scale * (x - mean) / sqrt(var + eps) + bias  =  x * a + shift,
    a = scale / sqrt(var + eps),  shift = bias - mean * a           (per channel, axis 1)

- After a `conv` (weights [OC, IC/g, k...], constant, optional constant bias) or a `gemm` (constant
  b and optional constant c) whose output only feeds the batch norm: `a` is folded into the weights'
  output-channel axis and `shift` into the bias. A rank-2 `matmul` with constant [K, N] weights,
  or such a matmul plus a constant bias (`add`, the matmul's only user), becomes such a `gemm`:

      %m = matmul(%x, %w); %s = add(%m, %c); %y = batch_normalization(%s, ...)
      →  %y = gemm(%x, %w * a, %c * a + shift)        (a, shift over the feature axis N)

  (rank 2 only: there the batch norm's channel axis 1 is the matmul's feature axis).
- Any other batch norm with constant parameters becomes `mul(x, a)` then `add(., shift)` with
  constants shaped [C, 1, ...] that broadcast over the spatial axes, so fuse-ops can make them an
  epilogue of the op producing x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value, fresh_name
from nnc.ir.types import is_float
from nnc.passes.manager import PassContext, register_pass


class _Names:
    """Fresh value names that collide with nothing in the graph."""

    def __init__(self, graph: Graph) -> None:
        self.used = set(graph.value_types())

    def fresh(self, base: str) -> str:
        return fresh_name(base, self.used)


@dataclass(frozen=True)
class _Affine:
    """The batch norm as a per-channel affine map, in float64."""

    a: np.ndarray
    shift: np.ndarray


def _affine(bn: Op, consts: dict[str, np.ndarray]) -> _Affine | None:
    names = bn.inputs[1:5]
    if len(names) != 4 or not all(n in consts for n in names):
        return None
    scale, bias, mean, var = (consts[n].astype(np.float64).reshape(-1) for n in names)
    a = scale / np.sqrt(var + float(bn.attr("epsilon", 1e-5)))
    return _Affine(a, bias - mean * a)


class _Folder:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.consts = graph.constant_map()
        self.types = graph.value_types()
        self.users = graph.consumers()
        self.producers = graph.producers()
        self.outputs = set(graph.output_names())
        self.names = _Names(graph)
        self.new_consts: list[Constant] = []
        self.replaced: dict[int, list[Op]] = {}  # id(op) -> ops that take its place

    def const(self, base: str, data: np.ndarray, dtype: str) -> str:
        name = self.names.fresh(base)
        self.new_consts.append(Constant.of(name, np.asarray(data, dtype=dtype)))
        return name

    def sole_producer(self, bn: Op) -> Op | None:
        """The op producing the batch norm's input, if the batch norm is its only use."""
        x = bn.inputs[0]
        prod = self.producers.get(x)
        if prod is None or len(prod.outputs) != 1 or x in self.outputs:
            return None
        if self.users.get(x, []) != [bn] or bn.inputs.count(x) != 1:
            return None
        return prod

    def fold_conv(self, conv: Op, bn: Op, f: _Affine) -> Op | None:
        w_name = conv.inputs[1]
        b_name = conv.inputs[2] if len(conv.inputs) > 2 else ""
        w = self.consts.get(w_name)
        if w is None or (b_name and b_name not in self.consts) or w.shape[0] != f.a.size:
            return None
        dtype = str(w.dtype)
        bias = self.consts[b_name].astype(np.float64).reshape(-1) if b_name else 0.0
        new_w = self.const(f"{w_name}_bn", w * f.a.reshape((-1,) + (1,) * (w.ndim - 1)), dtype)
        new_b = self.const(f"{b_name or w_name}_bn_bias", bias * f.a + f.shift, dtype)
        return conv.with_(inputs=(conv.inputs[0], new_w, new_b), outputs=bn.outputs)

    def fold_gemm(self, gemm: Op, bn: Op, f: _Affine) -> Op | None:
        b_name = gemm.inputs[1]
        c_name = gemm.inputs[2] if len(gemm.inputs) > 2 else ""
        w = self.consts.get(b_name)
        if w is None or w.ndim != 2 or (c_name and c_name not in self.consts):
            return None
        trans_b = bool(gemm.attr("trans_b", 0))
        if (w.shape[0] if trans_b else w.shape[1]) != f.a.size:
            return None
        dtype = str(w.dtype)
        # the output channel is b's column (row when transposed); c picks up beta and the shift
        new_w = w * (f.a[:, None] if trans_b else f.a[None, :])
        c = f.shift
        if c_name:
            c = float(gemm.attr("beta", 1.0)) * self.consts[c_name].astype(np.float64) * f.a + c
        inputs = (gemm.inputs[0], self.const(f"{b_name}_bn", new_w, dtype),
                  self.const(f"{c_name or b_name}_bn_bias", c, dtype))
        return gemm.with_(inputs=inputs, outputs=bn.outputs, attrs=gemm.attrs.set(beta=1.0))

    def fold_matmul(self, mm: Op, bn: Op, f: _Affine, c_name: str = "") -> Op | None:
        """A rank-2 matmul with constant weights is a gemm (with c = `c_name`, if given)."""
        w = self.consts.get(mm.inputs[1])
        if w is None or w.ndim != 2 or self.types[mm.inputs[0]].rank != 2:
            return None
        attrs = Attrs.of(alpha=1.0, beta=1.0, trans_a=0, trans_b=0)
        inputs = (*mm.inputs[:2], c_name) if c_name else mm.inputs[:2]
        return self.fold_gemm(Op("gemm", inputs, mm.outputs, attrs, mm.name), bn, f)

    def fold_matmul_add(self, add: Op, bn: Op, f: _Affine) -> Op | None:
        """add(matmul(x, w), c) with constant w and c (either operand order) is a gemm with c;
        the gemm takes the add's place and the matmul goes."""
        if len(add.inputs) != 2 or add.inputs[0] == add.inputs[1]:
            return None
        for m_name, c_name in (add.inputs, add.inputs[::-1]):
            mm = self.producers.get(m_name)
            c = self.consts.get(c_name)
            if mm is None or mm.kind != "matmul" or c is None or id(mm) in self.replaced:
                continue
            out = self.types[add.outputs[0].name]
            if (m_name in self.outputs or self.users.get(m_name, []) != [add] or c.ndim > 2
                    or self.types[m_name].shape != out.shape
                    or np.broadcast_shapes(c.shape, out.shape) != out.shape):
                return None
            folded = self.fold_matmul(mm, bn, f, c_name)
            if folded is not None:
                self.replaced[id(mm)] = []
            return folded
        return None

    def to_mul_add(self, bn: Op, f: _Affine) -> list[Op] | None:
        x_type = self.types[bn.inputs[0]]
        if x_type.rank < 2 or x_type.shape[1] != f.a.size:
            return None
        shape = (f.a.size,) + (1,) * (x_type.rank - 2)
        dtype = x_type.dtype
        base = bn.name or bn.outputs[0].name
        a = self.const(f"{base}_scale", f.a.reshape(shape), dtype)
        shift = self.const(f"{base}_shift", f.shift.reshape(shape), dtype)
        mid = Value(self.names.fresh(f"{base}_scaled"), x_type)
        return [
            Op("mul", (bn.inputs[0], a), (mid,), name=f"{base}_mul"),
            Op("add", (mid.name, shift), bn.outputs, name=f"{base}_add"),
        ]

    def run(self) -> Graph:
        folders = {"conv": self.fold_conv, "gemm": self.fold_gemm, "matmul": self.fold_matmul,
                   "add": self.fold_matmul_add}
        for op in self.graph.ops:
            if op.kind != "batch_normalization" or len(op.outputs) != 1:
                continue
            x_type = self.types[op.inputs[0]]
            f = _affine(op, self.consts)
            if f is None or not is_float(x_type.dtype) or x_type.quant is not None:
                continue
            prod = self.sole_producer(op)
            if prod is not None and prod.kind in folders and id(prod) not in self.replaced:
                folded = folders[prod.kind](prod, op, f)
                if folded is not None:
                    self.replaced[id(prod)] = [folded]
                    self.replaced[id(op)] = []
                    continue
            rewritten = self.to_mul_add(op, f)
            if rewritten is not None:
                self.replaced[id(op)] = rewritten
        return self.rebuild()

    def rebuild(self) -> Graph:
        if not self.replaced:
            return self.graph
        ops: list[Op] = []
        for op in self.graph.ops:
            ops.extend(self.replaced.get(id(op), [op]))
        used = {n for op in ops for n in op.inputs} | self.outputs
        # the old weights and batch-norm parameters go when nothing else uses them
        old = {n for op in self.graph.ops if id(op) in self.replaced for n in op.inputs}
        constants = tuple(
            c for c in self.graph.constants if c.name in used or c.name not in old
        )
        return self.graph.replace(ops=tuple(ops), constants=constants + tuple(self.new_consts))


@register_pass("fold-batchnorm")
def fold_batchnorm(graph: Graph, ctx: PassContext) -> Graph:
    """Fold batch norms into the preceding conv/gemm/matmul(+add) weights, or rewrite them as
    mul+add."""
    return _Folder(graph).run()
