"""lut_s8: an int8 elementwise function as a 256-entry table, the way TFLite runs int8 LOGISTIC,
TANH and HARD_SWISH.

    %y = lut_s8(%x: i8[...], %table: i8[256])      y[i] = table[x[i] + 128]

The quantize pass builds `table` at compile time by running a unary float op's numpy reference on
the 256 values an int8 input can take (dequantized) and quantizing the results with the output's
parameters. Every target then computes exactly the same bits (no libm in the loop: expf and tanhf
differ between glibc, newlib and numpy) and a sigmoid costs one load per element instead of a
dequantize, an expf and a requantize.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnc.ir.graph import Attrs
from nnc.ir.loops import cast
from nnc.ir.ops import ComputeContext, OpDef, OpError, register
from nnc.ir.types import TensorType

TABLE_SIZE = 256
OFFSET = 128  # table index of int8 value 0


def _infer(types: Sequence[TensorType | None], attrs: Attrs) -> list[TensorType]:
    if len(types) != 2:
        raise OpError("lut_s8 takes (x, table)")
    x, table = types
    if x is None or table is None:
        raise OpError("lut_s8 takes (x, table)")
    if x.dtype != "int8":
        raise OpError(f"lut_s8: input must be int8, got {x.dtype}")
    if table.dtype != "int8" or table.shape != (TABLE_SIZE,):
        raise OpError(f"lut_s8: table must be i8[{TABLE_SIZE}], got {table.dtype}"
                      f"{list(table.shape)}")
    return [TensorType(x.shape, "int8", x.layout)]


def _reference(xs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, table = xs
    assert x is not None and table is not None
    return [np.asarray(table, np.int8)[x.astype(np.int32) + OFFSET]]


def _compute(ctx: ComputeContext) -> None:
    x, table = ctx.inputs
    assert x is not None and table is not None
    with ctx.b.loops(ctx.outputs[0].shape) as idx:
        ctx.store(0, idx, table[(cast(x[idx], "int32") + OFFSET,)])


register(OpDef("lut_s8", infer=_infer, reference=_reference, compute=_compute,
               static_inputs=(1,)))
