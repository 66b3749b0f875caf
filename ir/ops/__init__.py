"""The op registry: for every graph-IR op kind, its type rule, its numpy reference and its one
compute definition (how it lowers to a loop nest).

An elementwise op gives a `scalar` rule instead of `compute`: the generic broadcast loop nest
(`compute_elementwise`) wraps it, and the fusion pass can apply it as an epilogue of another op's
loop nest, so a conv+bias+relu chain is one loop nest with no intermediate buffer.

Modules `elementwise`, `nn`, `shape`, `reduce` register the ops; importing `nnc.ir.ops` loads all.

>>> from nnc.ir.ops import get_op
>>> get_op("relu").kind
'relu'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnc.ir.graph import Attrs, Op
from nnc.ir.loops import Buffer, Expr, KernelBuilder, Load, const
from nnc.ir.types import TensorType

InferFn = Callable[[Sequence["TensorType | None"], Attrs], Sequence[TensorType]]
ReferenceFn = Callable[[Sequence["np.ndarray | None"], Attrs], Sequence[np.ndarray]]
ScalarFn = Callable[[Sequence[Expr], Attrs, str], Expr]
MacsFn = Callable[[Sequence["TensorType | None"], Sequence[TensorType], Attrs], int]
# (attrs, each input slot's compile-time constant or None, whether each slot has an input) ->
# None, or the attrs and the replaced inputs (by position) the op's loop nest prefers: packed
# weights, folded offsets. Only the generated loop nest sees them; the graph keeps its form.
PackFn = Callable[[Attrs, Sequence["np.ndarray | None"], Sequence[bool]],
                  "tuple[Attrs, dict[int, np.ndarray]] | None"]


class OpError(Exception):
    """An op's inputs or attributes are invalid (raised by type rules)."""


@dataclass(frozen=True)
class ComputeContext:
    """What a compute definition sees: a builder, the op, its input/output buffers.

    Write outputs through `store`, never `b.store`, so a fused epilogue is applied."""

    b: KernelBuilder
    op: Op
    inputs: Sequence[Buffer | None]
    outputs: Sequence[Buffer]
    epilogue: Callable[[Expr, tuple[Expr, ...]], Expr] | None = None
    # where output 0 really goes when an epilogue is fused (its dtype may differ from outputs[0])
    target: Buffer | None = None

    @property
    def attrs(self) -> Attrs:
        return self.op.attrs

    def attr(self, key: str, default: Any = None) -> Any:
        return self.op.attrs.get(key, default)

    def output(self, k: int, indices: Sequence[Expr], value: Expr) -> tuple[Buffer, Expr]:
        """Where `store(k, indices, value)` writes and what: the buffer and the value with the
        fused epilogue applied (for declarative definitions, which store it themselves)."""
        out = self.outputs[k]
        if k == 0 and self.epilogue is not None:
            value = self.epilogue(value, tuple(indices))
        if k == 0 and self.target is not None:
            out = self.target
        return out, value

    def store(self, k: int, indices: Sequence[Expr], value: Expr) -> None:
        out = self.outputs[k]
        if k == 0 and self.epilogue is not None:
            value = self.epilogue(value, tuple(indices))
        if k == 0 and self.target is not None:
            out = self.target
        self.b.store(out, tuple(indices), value)


@dataclass(frozen=True)
class OpDef:
    kind: str
    infer: InferFn
    reference: ReferenceFn
    compute: Callable[[ComputeContext], None] | None = None
    scalar: ScalarFn | None = None
    # output 0 is input 0's bytes reinterpreted (reshape, flatten, squeeze, identity...)
    alias: bool = False
    macs: MacsFn | None = None
    # ops whose scalar rule needs an output dtype unlike their inputs' (cast, comparisons) are fine;
    # `fusable` says whether the op may be applied as an epilogue of another loop nest.
    fusable: bool = True
    # input positions that must be constants at compile time (e.g. shape of reshape)
    static_inputs: tuple[int, ...] = field(default=())
    # constants rewritten for the generated loop nest (see PackFn)
    pack: PackFn | None = None


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.kind in _REGISTRY:
        raise ValueError(f"op {opdef.kind!r} registered twice")
    if opdef.compute is None and opdef.scalar is None and not opdef.alias:
        raise ValueError(f"op {opdef.kind!r} needs a compute or scalar rule")
    _REGISTRY[opdef.kind] = opdef
    return opdef


def get_op(kind: str) -> OpDef:
    _load_all()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise KeyError(f"no op definition for {kind!r}") from None


def registered_ops() -> dict[str, OpDef]:
    _load_all()
    return dict(_REGISTRY)


_LOADED = False


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import nnc.ir.ops.int8_lut  # noqa: F401
    from nnc.ir.ops import elementwise, int8, int8_softmax, nn, quant, reduce, shape  # noqa: F401


# ---------------------------------------------------------------- helpers shared by op modules


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """Numpy (multidirectional) broadcasting; raises OpError on mismatch."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError as e:
        raise OpError(f"shapes {[tuple(s) for s in shapes]} do not broadcast") from e


def broadcast_index(shape: Sequence[int], out_index: Sequence[Expr]) -> tuple[Expr, ...]:
    """Indices into a tensor of `shape` broadcast against an output indexed by `out_index`."""
    rank = len(shape)
    tail = tuple(out_index)[len(out_index) - rank :] if rank else ()
    return tuple(const(0, "int64") if d == 1 else i for d, i in zip(shape, tail, strict=True))


def load_broadcast(buf: Buffer, out_index: Sequence[Expr]) -> Load:
    return Load(buf.name, broadcast_index(buf.shape, out_index), buf.dtype)


def compute_elementwise(ctx: ComputeContext, scalar: ScalarFn) -> None:
    """The generic loop nest of an elementwise op: one loop per output dim, inputs broadcast."""
    out = ctx.outputs[0]
    with ctx.b.loops(out.shape) as idx:
        args = [load_broadcast(buf, idx) if buf is not None else None for buf in ctx.inputs]
        ctx.store(0, idx, scalar(args, ctx.attrs, out.dtype))  # type: ignore[arg-type]


def same_as_input(types: Sequence[TensorType | None], attrs: Attrs) -> Sequence[TensorType]:
    t = types[0]
    assert t is not None
    return [t]
