"""Loop IR: builder, printer, verifier and interpreter."""

import numpy as np
import pytest

from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loop_printer import format_kernel
from nnc.ir.loop_verify import LoopVerifyError, verify_loop_module
from nnc.ir.loops import (
    Buffer,
    KernelBuilder,
    Load,
    LoopModule,
    Var,
    call,
    cast,
    logical_and,
    maximum,
    select,
)


def _module(kernels, buffers, inputs, outputs, arena=0, constants=None):
    return LoopModule("m", tuple(buffers), tuple(kernels), tuple(inputs), tuple(outputs),
                      constants or {}, arena)


def test_expression_operators_build_typed_trees():
    x = Buffer("x", (4,), "float32", "input")
    e = x[Var("i")] * 2.0 + 1.0
    assert e.dtype == "float32"
    assert str(e) == "((%x[%i] * 2.0:f32) + 1.0:f32)"
    with pytest.raises(TypeError, match="operand dtypes differ"):
        _ = x[Var("i")] + Var("j")


def test_reduction_with_local_accumulator_matches_numpy():
    x = Buffer("x", (3, 5), "float32", "input")
    y = Buffer("y", (3,), "float32", "output")
    b = KernelBuilder("rowsum")
    acc = b.local("float32")
    with b.loop(3) as i:
        b.store(acc, (), 0.0)
        with b.loop(5, "r") as r:
            b.store(acc, (), acc[()] + x[i, r])
        b.store(y, (i,), acc[()])
    k = b.build(("x", "y"))
    m = _module([k], [x, y], ["x"], ["y"])
    verify_loop_module(m)
    data = np.arange(15, dtype=np.float32).reshape(3, 5)
    np.testing.assert_allclose(run_loop_module(m, {"x": data})["y"], data.sum(1))
    text = format_kernel(k)
    assert "for %i0 in 0..3 serial" in text and "local %acc0" in text


def test_select_guards_out_of_bounds_loads():
    x = Buffer("x", (4,), "float32", "input")
    y = Buffer("y", (6,), "float32", "output")
    b = KernelBuilder("pad")
    with b.loop(6) as i:
        j = i - 1
        cond = logical_and(j.ge(0), j.lt(4))
        b.store(y, (i,), select(cond, Load("x", (j,), "float32"), 0.0))
    m = _module([b.build(("x", "y"))], [x, y], ["x"], ["y"])
    out = run_loop_module(m, {"x": np.array([1, 2, 3, 4], np.float32)})["y"]
    np.testing.assert_array_equal(out, [0, 1, 2, 3, 4, 0])


def test_casts_follow_c_semantics():
    x = Buffer("x", (4,), "float32", "input")
    y = Buffer("y", (4,), "int8", "output")
    b = KernelBuilder("cast")
    with b.loop(4) as i:
        b.store(y, (i,), cast(cast(x[i], "int32"), "int8"))
    m = _module([b.build(("x", "y"))], [x, y], ["x"], ["y"])
    out = run_loop_module(m, {"x": np.array([1.7, -1.7, 300.0, -2.5], np.float32)})["y"]
    np.testing.assert_array_equal(out, np.array([1, -1, 44, -2], np.int8))


def test_arena_buffers_share_memory_at_their_offsets():
    x = Buffer("x", (4,), "float32", "input")
    t = Buffer("t", (4,), "float32", "arena", offset=0)
    y = Buffer("y", (4,), "float32", "output")
    b1 = KernelBuilder("exp")
    with b1.loop(4) as i:
        b1.store(t, (i,), call("exp", x[i]))
    b2 = KernelBuilder("relu")
    with b2.loop(4) as i:
        b2.store(y, (i,), maximum(t[i], 1.5))
    m = _module([b1.build(("x", "t")), b2.build(("t", "y"))], [x, t, y], ["x"], ["y"], arena=16)
    data = np.array([0, 1, 2, -1], np.float32)
    np.testing.assert_allclose(run_loop_module(m, {"x": data})["y"],
                               np.maximum(np.exp(data), 1.5), rtol=1e-6)


@pytest.mark.parametrize("mutate, message", [
    (lambda b, y: b.store(y, (Var("zz"),), 1.0), "variable %zz used outside its loop"),
    (lambda b, y: b.store("nope", (0,), 1.0), "undeclared buffer %nope"),
])
def test_verifier_names_the_problem(mutate, message):
    y = Buffer("y", (4,), "float32", "output")
    b = KernelBuilder("bad")
    mutate(b, y)
    m = _module([b.build(("y",), op_kind="relu", op_name="r1")], [y], [], ["y"])
    with pytest.raises(LoopVerifyError, match=message) as e:
        verify_loop_module(m)
    assert "relu 'r1'" in str(e.value)


def test_verifier_rejects_store_to_input():
    x = Buffer("x", (4,), "float32", "input")
    b = KernelBuilder("bad")
    with b.loop(4) as i:
        b.store(x, (i,), 0.0)
    with pytest.raises(LoopVerifyError, match="read-only input"):
        verify_loop_module(_module([b.build(("x",))], [x], ["x"], []))
