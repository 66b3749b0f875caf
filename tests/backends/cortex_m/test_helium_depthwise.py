"""Helium depthwise convs (Cortex-M55): accumulator rows the C emitter keeps as `int32x4_t`
values (`CStyleEmitter._vector_rows`), and the default tile of 4 channel lanes x 2 output
pixels with the padded border of the other axis partitioned, a remainder of the pixels as a
guarded whole tile, and the channel groups outermost
(`passes/default_schedule.py: helium_depthwise_steps`), and the first layers' 4 lanes x 4
pixels, give on the emulated board exactly what the loop-IR interpreter and the op's
reference give."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nnc.backends.c.emit import emit_c
from nnc.backends.target import cortex_m55
from nnc.ir.graph import Attrs
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loops import (
    Buffer,
    For,
    GuardTail,
    Kernel,
    Load,
    LoopModule,
    Partition,
    Reorder,
    Split,
    Store,
    Unroll,
    Var,
    call,
    cast,
    const,
    maximum,
    minimum,
)
from nnc.ir.ops import get_op
from nnc.ir.ops.int8 import quantize_multiplier
from nnc.passes.default_schedule import default_schedule
from nnc.passes.lower_to_loops import lower_to_loops
from nnc.passes.manager import PassContext
from nnc.passes.schedule import schedule
from nnc.testing import single_op_graph

M55_WORKLOAD = "lanes target=cortex-m55 isa=mve/128 features=dsp,fpu-dp,mve,mve-fp"
REGISTER_ROW = re.compile(r"int32x4_t \w+_v\[\d+\];")


def _c_text(module: LoopModule) -> str:
    return "".join(v for v in emit_c(module).values() if isinstance(v, str))


def _rows_module(rows: int, lanes: int, serial_init: bool = False) -> LoopModule:
    """`rows` accumulator rows of `lanes` int32: each started from acc_in (a vectorized lane
    loop, or a serial one with `serial_init`), one multiply-accumulate of two int8 streams,
    requantized into y."""
    n = rows * lanes
    acc_in = Buffer("acc_in", (n,), "int32", "input")
    a = Buffer("a", (n,), "int8", "input")
    b = Buffer("b", (n,), "int8", "input")
    m = Buffer("mult", (n,), "int32", "constant")
    s = Buffer("shift", (n,), "int32", "constant")
    y = Buffer("y", (n,), "int8", "output")
    acc = Buffer("acc", (lanes,), "int32", "local")
    i, r = Var("i"), Var("r")
    at = r * lanes + i
    row = Load("acc", (i,), "int32")
    mac = row + (cast(a[at], "int32") + 128) * (cast(b[at], "int32") - 3)
    out = cast(minimum(maximum(call("requantize", row, m[at], s[at]), const(-123, "int32")),
                       const(132, "int32")) + const(-5, "int32"), "int8")
    body = (For("r", rows, (
        For("i", lanes, (Store("acc", (i,), acc_in[at]),),
            "serial" if serial_init else "vectorized"),
        For("i", lanes, (Store("acc", (i,), mac),), "vectorized"),
        For("i", lanes, (Store("y", (at,), out),), "vectorized"),
    )),)
    k = Kernel("rows", ("acc_in", "a", "b", "mult", "shift", "y"), (acc,), body,
               workload=M55_WORKLOAD)
    rng = np.random.default_rng(rows + lanes)
    mult = rng.integers(1 << 30, (1 << 31) - 1, n).astype(np.int32)
    shift = -(np.arange(n, dtype=np.int32) % 12)
    return LoopModule("rows", (acc_in, a, b, m, s, y), (k,), ("acc_in", "a", "b"), ("y",),
                      {"mult": mult, "shift": shift})


def test_register_rows_only_where_every_access_is_a_lane_form():
    """A row every statement reads and writes whole in Helium lane forms is `int32x4_t`
    values (no vector load / store of it per MAC); one a serial loop also writes stays an
    array in memory; rows of more than 16 lanes too (8 registers in all)."""
    text = _c_text(_rows_module(3, 16))
    assert REGISTER_ROW.search(text) and "vldrwq_s32(&acc[" not in text
    assert "acc_v[3] = vaddq_s32(acc_v[3], vmulq_s32(" in text
    assert not REGISTER_ROW.search(_c_text(_rows_module(3, 16, serial_init=True)))
    assert not REGISTER_ROW.search(_c_text(_rows_module(1, 32)))


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.parametrize("rows, lanes", [(3, 16), (2, 8), (5, 4)])
def test_register_rows_equal_the_interpreter_on_the_board(firmware, rows, lanes):
    module = _rows_module(rows, lanes)
    assert REGISTER_ROW.search(_c_text(module))
    dev = firmware(module, "cortex-m55")
    rng = np.random.default_rng(5)
    n = rows * lanes
    for trial in range(2):
        acc = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
        if trial:
            acc[:4] = [-2**31, 2**31 - 1, 0, -1]
        feeds = {"acc_in": acc, "a": rng.integers(-128, 128, n).astype(np.int8),
                 "b": rng.integers(-128, 128, n).astype(np.int8)}
        want = run_loop_module(module, feeds)["y"]
        np.testing.assert_array_equal(dev.run(feeds)["y"], want, err_msg=f"trial {trial}")


def _depthwise(c: int, hw: tuple[int, int], stride: int, pads: list[int], zp: int):
    rng = np.random.default_rng(c + 10 * stride + sum(pads))
    x = rng.integers(-128, 128, (1, *hw, c)).astype(np.int8)
    w = rng.integers(-127, 128, (1, 3, 3, c)).astype(np.int8)
    pairs = [quantize_multiplier(float(r)) for r in rng.uniform(2e-4, 4e-3, c)]
    mult = np.array([m for m, _ in pairs], np.int32)
    shift = np.array([s for _, s in pairs], np.int32)
    bias = rng.integers(-3000, 3000, c).astype(np.int32)
    attrs = dict(layout="NHWC", pads=pads, strides=[stride, stride], group=c,
                 input_zero_point=zp, output_zero_point=-5, act_min=-128, act_max=127)
    inputs = [x, w, mult, shift, bias]
    graph = single_op_graph("conv_s8", inputs, attrs, (1, 2, 3, 4))
    ctx = PassContext(target=cortex_m55())
    module = schedule(default_schedule(lower_to_loops(graph, ctx), ctx), ctx)
    ref = np.asarray(get_op("conv_s8").reference(inputs, Attrs.of(attrs))[0])
    return module, {module.inputs[0]: x}, ref


DEPTHWISE = {  # channels, input plane, stride, pads, input zero point
    "kws-like": (8, (9, 5), 1, [1, 1, 1, 1], -128),  # 9 rows of 2 copies: a guarded tail
    "no-bottom-pad": (8, (10, 5), 1, [1, 1, 0, 1], -128),  # 9 rows, the tail peeled
    "stride2": (12, (9, 8), 2, [1, 1, 1, 1], 3),
    "one-group": (4, (7, 6), 1, [1, 1, 1, 1], -128),
    "asymmetric-pads": (16, (6, 7), 1, [0, 1, 1, 0], 0),
}


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.parametrize("case", sorted(DEPTHWISE))
def test_depthwise_default_tile_on_the_board(firmware, case):
    module, feeds, ref = _depthwise(*DEPTHWISE[case])
    (k,) = [k for k in module.kernels if k.compute is not None]
    # 2 pixel copies along the longer output axis
    assert any(Split(a, 2) in k.schedule and Unroll(f"{a}_i") in k.schedule for a in ("oh", "ow"))
    (order,) = [s for s in k.schedule if isinstance(s, Reorder)]
    if DEPTHWISE[case][0] > 4:  # 4 channel lanes, the channel groups outermost
        assert Split("oc", 4) in k.schedule and order.loops[0] == "oc_o"
    assert any(isinstance(s, Partition) for s in k.schedule)
    text = _c_text(module)
    assert REGISTER_ROW.search(text) and "vmulq_s32" in text
    out = module.outputs[0]
    np.testing.assert_array_equal(run_loop_module(module, feeds)[out], ref)
    np.testing.assert_array_equal(firmware(module, "cortex-m55").run(feeds)[out], ref)


@pytest.mark.parametrize("rows, requantizes", [(25, 6), (9, 6), (8, 6), (5, 9)])
def test_depthwise_default_code_copies(rows, requantizes):
    """Flash (issue 9): KWS's depthwise shape (64 channels, 3x3, pad 1, rows x 5) makes one
    copy of the loop body per region of the partitioned columns (left border, interior, right
    border) with 2 pixel copies each: 6 requantized rows in the C, not the 15 of every padded
    axis partitioned (5,498 -> 2,172 B of code per KWS conv); an odd row count runs its last
    row in a guarded whole tile, except in a short axis (5 rows: the row peeled)."""
    module, _, _ = _depthwise(64, (rows, 5), 1, [1, 1, 1, 1], -128)
    (k,) = [k for k in module.kernels if k.compute is not None]
    assert [s.loop for s in k.schedule if isinstance(s, Partition)] == ["ow"]
    assert (GuardTail("oh_o") in k.schedule) == (rows in (9, 25))
    assert _c_text(module).count("vqrdmulhq_s32(") == requantizes


def _first_layer(c: int, oc: int, hw: tuple[int, int], stride: int):
    rng = np.random.default_rng(c + oc + stride)
    x = rng.integers(-128, 128, (1, *hw, c)).astype(np.int8)
    w = rng.integers(-127, 128, (oc, 3, 3, c)).astype(np.int8)
    pairs = [quantize_multiplier(float(r)) for r in rng.uniform(2e-4, 4e-3, oc)]
    mult = np.array([m for m, _ in pairs], np.int32)
    shift = np.array([s for _, s in pairs], np.int32)
    bias = rng.integers(-3000, 3000, oc).astype(np.int32)
    attrs = dict(layout="NHWC", pads=[1, 1, 1, 1], strides=[stride, stride], group=1,
                 input_zero_point=5, output_zero_point=-5, act_min=-128, act_max=127)
    inputs = [x, w, mult, shift, bias]
    graph = single_op_graph("conv_s8", inputs, attrs, (1, 2, 3, 4))
    ctx = PassContext(target=cortex_m55())
    module = schedule(default_schedule(lower_to_loops(graph, ctx), ctx), ctx)
    ref = np.asarray(get_op("conv_s8").reference(inputs, Attrs.of(attrs))[0])
    return module, {module.inputs[0]: x}, ref


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.parametrize("c, oc, hw, stride", [(1, 8, (7, 9), 1), (3, 12, (9, 10), 2)])
def test_first_layer_default_tile_on_the_board(firmware, c, oc, hw, stride):
    """A first layer (few input channels): 4 channel lanes x 4 pixels along the row against
    a broadcast input element, the border partitioned at stride 1 only."""
    module, feeds, ref = _first_layer(c, oc, hw, stride)
    (k,) = [k for k in module.kernels if k.compute is not None]
    assert Split("ow", 4) in k.schedule and Unroll("ow_i") in k.schedule
    assert Split("oc", 4) in k.schedule
    assert any(isinstance(s, Partition) for s in k.schedule) == (stride == 1)
    text = _c_text(module)
    assert REGISTER_ROW.search(text) and "vmlaq_n_s32" in text
    out = module.outputs[0]
    np.testing.assert_array_equal(run_loop_module(module, feeds)[out], ref)
    np.testing.assert_array_equal(firmware(module, "cortex-m55").run(feeds)[out], ref)


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.parametrize("k, pads", [(1, [0, 0, 0, 0]), (3, [1, 1, 1, 1])])
def test_dense_helium_default_runs_channel_groups_outermost(firmware, k, pads):
    """A dense conv on the dot16 intrinsic (16 input channels per VMLADAVA): the default's
    channel-group loop is the outermost (the weights' addresses stay put across the pixels);
    same bits as the reference on the board."""
    rng = np.random.default_rng(k)
    c, oc = 32, 8
    x = rng.integers(-128, 128, (1, 5, 6, c)).astype(np.int8)
    w = rng.integers(-127, 128, (oc, k, k, c)).astype(np.int8)
    pairs = [quantize_multiplier(float(r)) for r in rng.uniform(2e-4, 4e-3, oc)]
    mult = np.array([m for m, _ in pairs], np.int32)
    shift = np.array([s for _, s in pairs], np.int32)
    bias = rng.integers(-3000, 3000, oc).astype(np.int32)
    attrs = dict(layout="NHWC", pads=pads, strides=[1, 1], group=1, input_zero_point=-128,
                 output_zero_point=-5, act_min=-128, act_max=127)
    inputs = [x, w, mult, shift, bias]
    graph = single_op_graph("conv_s8", inputs, attrs, (1, 2, 3, 4))
    ctx = PassContext(target=cortex_m55())
    module = schedule(default_schedule(lower_to_loops(graph, ctx), ctx), ctx)
    ref = np.asarray(get_op("conv_s8").reference(inputs, Attrs.of(attrs))[0])
    (kern,) = [x for x in module.kernels if x.compute is not None]
    (order,) = [s for s in kern.schedule if isinstance(s, Reorder)]
    assert any(getattr(s, "name", "") == "dot16_s8" for s in kern.schedule)
    assert order.loops[0] == "oc_o"
    out = module.outputs[0]
    feeds = {module.inputs[0]: x}
    np.testing.assert_array_equal(run_loop_module(module, feeds)[out], ref)
    np.testing.assert_array_equal(firmware(module, "cortex-m55").run(feeds)[out], ref)
