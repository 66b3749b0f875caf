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
