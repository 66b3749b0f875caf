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


def _int8_depthwise(hw: int, channels: int):
    """An int8 NHWC 3x3 depthwise conv, padded, lowered: (module, kernel, shapes, inputs, ref)."""
    from nnc.ir.graph import Attrs
    from nnc.ir.ops import get_op
    from nnc.ir.ops.int8 import quantize_multiplier
    from nnc.passes.lower_to_loops import lower_to_loops
    from nnc.testing import single_op_graph

    rng = np.random.default_rng(hw * 7 + channels)
    x = rng.integers(-128, 128, (1, hw, hw, channels)).astype(np.int8)
    w = rng.integers(-127, 128, (1, 3, 3, channels)).astype(np.int8)
    pairs = [quantize_multiplier(float(r)) for r in rng.uniform(2e-4, 4e-3, channels)]
    inputs = [x, w, np.array([m for m, _ in pairs], np.int32),
              np.array([s for _, s in pairs], np.int32),
              rng.integers(-3000, 3000, channels).astype(np.int32)]
    attrs = dict(layout="NHWC", pads=[1, 1, 1, 1], strides=[1, 1], group=channels,
                 input_zero_point=-128, output_zero_point=-5, act_min=-128, act_max=127)
    graph = single_op_graph("conv_s8", inputs, attrs, (1, 2, 3, 4))
    module = lower_to_loops(graph, PassContext())
    ref = get_op("conv_s8").reference(list(inputs), Attrs.of(attrs))
    (k,) = [k for k in module.kernels if k.compute is not None]
    return module, k, {b.name: b.shape for b in module.buffers}, {module.inputs[0]: x}, ref[0]


def test_small_integer_kernels_on_opencl_get_the_lanes_alone() -> None:
    """OpenCL: an int8 kernel of at most OPENCL_SMALL_MACS MACs gets no unrolled copies and no
    partitioned borders (PoCL builds each kernel at about the same cost whatever its MACs);
    the host keeps its tile, and so does a bigger kernel; the small schedule computes the
    reference's bits."""
    from nnc.backends.target import host_target, opencl_target
    from nnc.ir.loops import Partition, Unroll
    from nnc.passes.default_schedule import OPENCL_SMALL_MACS, macs, reduction_steps
    from nnc.passes.schedule import schedule

    module, k, shapes, inputs, ref = _int8_depthwise(6, 16)
    assert macs(k.compute) == 6 * 6 * 16 * 9 <= OPENCL_SMALL_MACS

    def tiled(steps) -> bool:
        return any(isinstance(s, (Unroll, Partition)) for s in steps)

    small = reduction_steps(k.compute, opencl_target(), shapes)
    assert small and not tiled(small)
    assert tiled(reduction_steps(k.compute, host_target(), shapes))
    _, big, big_shapes, _, _ = _int8_depthwise(24, 128)
    assert macs(big.compute) > OPENCL_SMALL_MACS
    assert tiled(reduction_steps(big.compute, opencl_target(), big_shapes))
    scheduled = schedule(module.replace(kernels=tuple(
        x.replace(schedule=small) if x is k else x for x in module.kernels)), PassContext())
    out = run_loop_module(scheduled, inputs)
    np.testing.assert_array_equal(out[scheduled.outputs[0]], ref)
