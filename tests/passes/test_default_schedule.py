"""default-schedule: which loops get a Vectorize step, on hand-built kernels."""

from __future__ import annotations

import numpy as np

from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loops import (
    Buffer,
    CallExtern,
    Kernel,
    KernelBuilder,
    Load,
    LoopModule,
    Split,
    Vectorize,
)
from nnc.passes.default_schedule import DefaultScheduleOptions, default_schedule
from nnc.passes.manager import PassContext, PassManager


def module(*kernels: Kernel, bufs: tuple[Buffer, ...]) -> LoopModule:
    ins = tuple(b.name for b in bufs if b.scope == "input")
    outs = tuple(b.name for b in bufs if b.scope == "output")
    return LoopModule("m", bufs, kernels, ins, outs)


def elementwise(n: int) -> tuple[Kernel, tuple[Buffer, ...]]:
    x, y = Buffer("x", (2, n), "float32", "input"), Buffer("y", (2, n), "float32", "output")
    b = KernelBuilder("relu")
    with b.loops(x.shape) as (i, j):
        b.store(y, (i, j), x[i, j] * 3.0)
    return b.build(("x", "y")), (x, y)


def matmul() -> tuple[Kernel, tuple[Buffer, ...]]:
    a, w = Buffer("a", (2, 8), "float32", "input"), Buffer("w", (8, 8), "float32", "input")
    c = Buffer("c", (2, 8), "float32", "output")
    b = KernelBuilder("matmul")
    acc = b.local("float32")
    with b.loops(c.shape) as (m, n):
        b.store(acc, (), 0.0)
        with b.loop(8, "k") as k:
            b.store(acc, (), Load(acc.name, (), "float32") + a[m, k] * w[k, n])
        b.store(c, (m, n), Load(acc.name, (), "float32"))
    return b.build(("a", "w", "c")), (a, w, c)


def steps(m: LoopModule, **opts: int) -> list[tuple]:
    out = default_schedule(m, PassContext(DefaultScheduleOptions(**opts)))
    return [k.schedule for k in out.kernels]


def test_vectorizes_innermost_elementwise_loop() -> None:
    k, bufs = elementwise(8)
    assert steps(module(k, bufs=bufs)) == [(Vectorize("i1"),)]


def test_short_loops_stay_scalar() -> None:
    k, bufs = elementwise(3)
    assert steps(module(k, bufs=bufs)) == [()]
    assert steps(module(k, bufs=bufs), min_extent=2) == [(Vectorize("i1"),)]


def test_reduction_loop_is_not_vectorized() -> None:
    k, bufs = matmul()
    assert steps(module(k, bufs=bufs)) == [()]


def test_loop_reading_what_another_iteration_wrote_is_not_vectorized() -> None:
    y = Buffer("y", (8,), "float32", "output")
    b = KernelBuilder("scan")
    with b.loop(7) as i:
        b.store(y, (i + 1,), Load("y", (i,), "float32") + 1.0)
    assert steps(module(b.build(("y",)), bufs=(y,))) == [()]


def test_inplace_update_at_same_index_is_vectorized() -> None:
    y = Buffer("y", (8,), "float32", "output")
    b = KernelBuilder("bump")
    with b.loop(8) as i:
        b.store(y, (i,), Load("y", (i,), "float32") + 1.0)
    assert steps(module(b.build(("y",)), bufs=(y,))) == [(Vectorize("i0"),)]


def test_extern_call_blocks_vectorization() -> None:
    y = Buffer("y", (8,), "float32", "output")
    b = KernelBuilder("ext")
    with b.loop(8):
        b.emit(CallExtern("f", ("y",)))
    assert steps(module(b.build(("y",)), bufs=(y,))) == [()]


def test_existing_schedule_is_kept() -> None:
    k, bufs = elementwise(8)
    k = k.replace(schedule=(Split("i1", 2),))
    assert steps(module(k, bufs=bufs)) == [(Split("i1", 2),)]


def test_each_nest_gets_its_own_step_and_schedule_applies_them() -> None:
    x, y = Buffer("x", (4, 8), "float32", "input"), Buffer("y", (4, 8), "float32", "output")
    b = KernelBuilder("two")
    with b.loops(x.shape) as (i, j):
        b.store(y, (i, j), x[i, j])
    with b.loop(4, "r") as r:
        with b.loop(8, "c") as c:
            b.store(y, (r, c), Load("y", (r, c), "float32") * 2.0)
    m = module(b.build(("x", "y")), bufs=(x, y))
    after = PassManager("default-schedule,schedule").run(m)
    assert after.kernels[0].schedule == (Vectorize("i1"), Vectorize("c0"))
    kinds = [s.body[0].kind for s in after.kernels[0].body]
    assert kinds == ["vectorized", "vectorized"]
    xs = np.arange(32, dtype=np.float32).reshape(4, 8)
    np.testing.assert_array_equal(run_loop_module(after, {"x": xs})["y"], xs * 2)


# ---------------------------------------------------------------- elementwise definitions


def _int8_elementwise(kind: str, target: object, channels: int) -> Kernel:
    """The kernel of one add_s8 / mul_s8 (b broadcast per channel) after default-schedule."""
    from nnc.ir.graph import Attrs, Graph, Op, Value
    from nnc.ir.types import TensorType

    shape = (1, 2, 3, channels)
    ins = (Value("a", TensorType(shape, "int8")),
           Value("b", TensorType((1, 1, 1, channels), "int8")))
    out = Value("y", TensorType(shape, "int8"))
    attrs = dict(a_zero_point=-3, b_zero_point=5, output_zero_point=1, output_multiplier=1 << 30,
                 output_shift=-4)
    if kind == "add_s8":
        attrs |= dict(a_multiplier=1 << 30, a_shift=-1, b_multiplier=1 << 30, b_shift=0)
    graph = Graph("g", ins, (out,), (), (Op(kind, ("a", "b"), (out,), Attrs.of(attrs), kind),))
    m = PassManager("lower-to-loops,default-schedule", target=target).run(graph)
    assert isinstance(m, LoopModule)
    (k,) = [k for k in m.kernels if k.op_kind == kind]
    return k


def test_int8_elementwise_ops_have_definitions_vectorized_along_the_channels() -> None:
    """add_s8 / mul_s8 are definitions with no reduce axis (one store, no accumulator); their
    innermost (contiguous) axis is the vector lanes: from 4 lanes everywhere, from 2 on Helium,
    whose emitter predicates a partial group of 4."""
    from nnc.backends.target import cortex_m7, cortex_m55, host_target
    from nnc.ir.loops import Store, walk_stmts

    for kind, combine in (("add_s8", "add"), ("mul_s8", "mul")):
        k = _int8_elementwise(kind, cortex_m55(), 6)
        assert k.compute is not None and not k.compute.reduced
        assert k.compute.combine == combine and [a.name for a in k.compute.axes] == [
            "i0", "i1", "i2", "i3"]
        assert k.schedule == (Vectorize("i3"),)
        assert not k.locals and sum(isinstance(s, Store) for s in walk_stmts(k.body)) == 1
    assert _int8_elementwise("add_s8", cortex_m7(), 6).schedule == (Vectorize("i3"),)
    assert _int8_elementwise("add_s8", host_target(), 6).schedule == (Vectorize("i3"),)
    assert _int8_elementwise("add_s8", cortex_m55(), 3).schedule == (Vectorize("i3"),)
    assert _int8_elementwise("add_s8", cortex_m7(), 3).schedule == ()
