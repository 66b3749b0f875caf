"""Elementwise ops: unary math, activations, binary arithmetic, comparisons, logic, cast, where.

Each op gives a type rule, a numpy reference and a scalar rule (see nnc.ir.ops)."""

from __future__ import annotations

import numpy as np

from nnc.ir.loops import maximum
from nnc.ir.ops import OpDef, broadcast_shapes, register, same_as_input
from nnc.ir.types import TensorType


def _broadcast_infer(types, attrs):  # type: ignore[no-untyped-def]
    shape = broadcast_shapes(*[t.shape for t in types if t is not None])
    return [TensorType(shape, types[0].dtype)]


register(OpDef(
    "relu",
    infer=same_as_input,
    reference=lambda xs, a: [np.maximum(xs[0], np.zeros((), xs[0].dtype))],
    scalar=lambda args, a, dt: maximum(args[0], 0),
))

register(OpDef(
    "add",
    infer=_broadcast_infer,
    reference=lambda xs, a: [np.add(xs[0], xs[1])],
    scalar=lambda args, a, dt: args[0] + args[1],
))
