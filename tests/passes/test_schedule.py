"""schedule: each step on hand-built kernels; numerics checked with the loop-IR interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loop_printer import format_kernel
from nnc.ir.loop_verify import verify_loop_module
from nnc.ir.loops import (
    Buffer,
    For,
    Fuse,
    KernelBuilder,
    Load,
    LoopModule,
    Parallel,
    Reorder,
    ScheduleStep,
    Split,
    Unroll,
    Vectorize,
)
from nnc.passes.manager import PassContext, PassError, PassManager
from nnc.passes.schedule import ScheduleError, schedule

X = Buffer("x", (3, 10), "float32", "input")
Y = Buffer("y", (3, 10), "float32", "output")


def affine_module(steps: tuple[ScheduleStep, ...] = ()) -> LoopModule:
    """y[i0, i1] = x[i0, i1] * 2 + 1"""
    b = KernelBuilder("affine")
    with b.loops(X.shape) as (i, j):
        b.store(Y, (i, j), X[i, j] * 2.0 + 1.0)
    k = b.build(("x", "y"), schedule=steps)
    return LoopModule("m", (X, Y), (k,), ("x",), ("y",))


A = Buffer("a", (2, 3), "float32", "input")
B = Buffer("b", (3, 4), "float32", "input")
C = Buffer("c", (2, 4), "float32", "output")


def matmul_module(steps: tuple[ScheduleStep, ...] = ()) -> LoopModule:
    """c = a @ b with loops i0, i1 (output) and k0 (reduction)."""
    b = KernelBuilder("matmul")
    acc = b.local("float32")
    with b.loops(C.shape) as (m, n):
        b.store(acc, (), 0.0)
        with b.loop(3, "k") as k:
            b.store(acc, (), Load(acc.name, (), "float32") + A[m, k] * B[k, n])
        b.store(C, (m, n), Load(acc.name, (), "float32"))
    k = b.build(("a", "b", "c"), schedule=steps)
    return LoopModule("m", (A, B, C), (k,), ("a", "b"), ("c",))


def apply(module: LoopModule) -> LoopModule:
    out = schedule(module, PassContext())
    verify_loop_module(out)
    return out


def check_affine(steps: tuple[ScheduleStep, ...]) -> LoopModule:
    after = apply(affine_module(steps))
    x = np.arange(30, dtype=np.float32).reshape(3, 10)
    np.testing.assert_array_equal(run_loop_module(after, {"x": x})["y"], x * 2 + 1)
    assert after.kernels[0].schedule == steps  # the steps stay recorded
    return after


def check_matmul(steps: tuple[ScheduleStep, ...]) -> LoopModule:
    after = apply(matmul_module(steps))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((3, 4)).astype(
        np.float32)
    np.testing.assert_allclose(run_loop_module(after, {"a": a, "b": b})["c"], a @ b, rtol=1e-6)
    return after


def test_split_with_guard() -> None:
    after = check_affine((Split("i1", 4),))
    assert format_kernel(after.kernels[0]).splitlines()[2:9] == [
        "  for %i0 in 0..3 serial {",
        "    for %i1_o in 0..3 serial {",
        "      for %i1_i in 0..4 serial {",
        "        if (((%i1_o * 4:i64) + %i1_i) < 10:i64) {",
        "          %y[%i0, ((%i1_o * 4:i64) + %i1_i)] = ((%x[%i0, ((%i1_o * 4:i64) + %i1_i)]"
        " * 2.0:f32) + 1.0:f32)",
        "        }",
        "      }",
    ]


def test_split_exact_has_no_guard() -> None:
    after = check_affine((Split("i1", 5),))
    assert "if " not in format_kernel(after.kernels[0])


def test_split_guard_sinks_so_loops_can_be_reordered() -> None:
    after = check_affine((Split("i0", 2), Reorder(("i1", "i0_i")), Vectorize("i0_i")))
    outer = after.kernels[0].body[0]
    assert isinstance(outer, For) and outer.var == "i0_o"
    (mid,) = outer.body
    assert isinstance(mid, For) and mid.var == "i1"
    (inner,) = mid.body
    assert isinstance(inner, For) and (inner.var, inner.kind) == ("i0_i", "vectorized")


def test_reorder_and_fuse() -> None:
    after = check_matmul((Reorder(("i1", "i0")), Fuse("i1", "i0"), Parallel("i1_i0")))
    (loop,) = after.kernels[0].body
    assert isinstance(loop, For) and (loop.var, loop.extent, loop.kind) == ("i1_i0", 8, "parallel")


def test_kinds_and_split_of_reduction() -> None:
    after = check_matmul((Split("k0", 2), Unroll("k0_i"), Vectorize("i1")))
    text = format_kernel(after.kernels[0])
    assert "for %k0_i in 0..2 unrolled" in text and "for %i1 in 0..4 vectorized" in text


def test_split_keeps_vectorized_kind_inside() -> None:
    after = check_affine((Vectorize("i1"), Split("i1", 4)))
    text = format_kernel(after.kernels[0])
    assert "for %i1_o in 0..3 serial" in text and "for %i1_i in 0..4 vectorized" in text


@pytest.mark.parametrize("step, why", [
    (Split("nope", 2), "no loop named 'nope'"),
    (Split("i0", 0), "factor must be >= 1"),
    (Reorder(("i0", "k0")), "not perfectly nested"),
    (Reorder(("i0", "i0")), "distinct"),
    (Fuse("i1", "k0"), "not the only statement"),
    (Vectorize("zz"), "no loop named"),
])
def test_bad_step_names_kernel_and_step(step: ScheduleStep, why: str) -> None:
    with pytest.raises(ScheduleError, match=f"kernel @matmul: step .* does not apply: .*{why}"):
        schedule(matmul_module((step,)), PassContext())


def test_split_name_clash() -> None:
    with pytest.raises(ScheduleError, match="already exist"):
        schedule(affine_module((Split("i1", 2), Split("i1_o", 1), Split("i1_o", 1))),
                 PassContext())


def test_unscheduled_kernels_are_untouched() -> None:
    m = affine_module()
    assert apply(m).kernels[0] is m.kernels[0]


def test_pass_manager_names_failing_pass() -> None:
    with pytest.raises(PassError, match="schedule"):
        PassManager("schedule").run(affine_module((Fuse("i0", "i9"),)))
