"""Helium code for elementwise lane loops (`nnc.backends.c.mve`) on the emulated Cortex-M55:
the lanes (elementwise ops, a dense conv tile's finish) give exactly what the scalar loop gives
(the loop-IR interpreter), and add_s8 / mul_s8 compiled for the M55 (their elementwise
definitions, vectorized by the default schedule) give exactly what the graph interpreter gives,
broadcasts and a channel count that is not a multiple of 4 (a predicated tail) included."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.backends.c.emit import emit_c
from nnc.backends.target import cortex_m55
from nnc.compiler.pipeline import default_pipeline
from nnc.ir.fixed_point import INT32_MAX, INT32_MIN
from nnc.ir.graph import Attrs, Graph, Op, Value
from nnc.ir.interp import run_graph
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loops import (
    Buffer,
    Expr,
    For,
    Kernel,
    LoopModule,
    Store,
    Var,
    binary,
    call,
    cast,
    const,
    maximum,
    minimum,
)
from nnc.ir.types import TensorType
from nnc.passes.manager import PassManager

pytestmark = [pytest.mark.needs_arm, pytest.mark.needs_qemu]

N = 70  # 17 whole groups of 4 lanes (a loop of groups) and a predicated tail of 2
SHORT = 7  # one group straight-line and a predicated tail of 3
WORKLOAD = "lanes target=cortex-m55 isa=mve/128 features=dsp,fpu-dp,mve,mve-fp"
# (multiplier, shift) pairs of the constant requantizations: saturation, shifts 0, > 0, -31
CONST_RQ = ((INT32_MIN, 0), (INT32_MAX, -31), (1 << 30, -1), (1 << 30, -5), (1234567890, 3),
            (0, -4), (INT32_MIN, -31), (1 << 30, 7))


def _i32(v: int) -> Expr:
    return const(v, "int32")


def _lanes_module(mult: np.ndarray, shift: np.ndarray) -> LoopModule:
    a = Buffer("a", (N,), "int8", "input")
    u = Buffer("u", (N,), "uint8", "input")
    h = Buffer("h", (N,), "int16", "input")
    x = Buffer("x", (N,), "int32", "input")
    m = Buffer("mult", (N,), "int32", "constant")
    s = Buffer("shift", (N,), "int32", "constant")
    outs = [Buffer(f"rq{k}", (N,), "int32", "output") for k in range(len(CONST_RQ))]
    outs += [Buffer("rqv", (N,), "int32", "output"), Buffer("mix", (N,), "int16", "output"),
             Buffer("add", (N,), "int8", "output"), Buffer("short", (SHORT,), "int8", "output"),
             Buffer("tile", (4,), "int8", "output")]
    acc = Buffer("acc", (4,), "int32", "local")
    i = Var("i")
    body = [For("i", N, (Store(f"rq{k}", (i,), call("requantize", x[i], _i32(mm), _i32(ss))),),
                "vectorized") for k, (mm, ss) in enumerate(CONST_RQ)]
    body.append(For("i", N, (Store("rqv", (i,), call("requantize", x[i], m[i], s[i])),),
                    "vectorized"))
    # wrapping int32 arithmetic on every operand kind: vector op vector, vector op scalar,
    # scalar op vector (the scalar loaded once: x[0]), constant shifts, and/xor, min/max
    wide = cast(u[i], "int32") * cast(h[i], "int32") - binary("shr", x[i], _i32(3))
    mixed = (x[0] - wide) * _i32(-7) + binary("shl", cast(a[i], "int32"), _i32(9))
    mixed = binary("xor", binary("and", mixed, _i32(0x7FFF0FFF)), x[i]) + maximum(x[i], x[1])
    body.append(For("i", N, (Store("mix", (i,), cast(
        minimum(maximum(mixed, _i32(-32768)), _i32(32767)), "int16")),), "vectorized"))
    # add_s8's arithmetic: rescaled inputs (left shift 20), their sum, the output requantized
    def rescaled(v: Expr, zp: int, mm: int, ss: int) -> Expr:
        return call("requantize", binary("shl", v - _i32(zp), _i32(20)), _i32(mm), _i32(ss))

    total = rescaled(cast(a[i], "int32"), -128, 1412189663, -1) \
        + rescaled(cast(u[i], "int32"), 17, 1073741824, 0)
    out = cast(minimum(maximum(call("requantize", total, _i32(1306468280), _i32(-18)),
                               _i32(-128 + 5)), _i32(127 + 5)) - _i32(5), "int8")
    body.append(For("i", N, (Store("add", (i,), out),), "vectorized"))
    body.append(For("i", SHORT, (Store("short", (i,), out),), "vectorized"))
    # a dense conv's finish: its 4-channel accumulator tile (a local row) requantized per
    # channel, clamped, offset
    body.append(For("i", 4, (Store("acc", (i,), x[i] - x[i + 4]),)))
    tile = call("requantize", acc[i], m[i], s[i])
    body.append(For("i", 4, (Store("tile", (i,), cast(
        minimum(maximum(tile, _i32(-120)), _i32(125)) + _i32(3), "int8")),), "vectorized"))
    params = ("a", "u", "h", "x", "mult", "shift", *(b.name for b in outs))
    k = Kernel("lanes", params, (acc,), tuple(body), workload=WORKLOAD)
    return LoopModule("lanes", (a, u, h, x, m, s, *outs), (k,), ("a", "u", "h", "x"),
                      tuple(b.name for b in outs), {"mult": mult, "shift": shift})


def test_elementwise_lanes_equal_the_scalar_loop(firmware):
    rng = np.random.default_rng(5)
    mult = rng.integers(INT32_MIN, INT32_MAX, N, dtype=np.int64).astype(np.int32)
    mult[:4] = [INT32_MIN, INT32_MAX, 0, 1 << 30]
    shift = rng.integers(-31, 9, N).astype(np.int32)  # left shifts too (the general path)
    shift[:4] = [0, -31, 8, -1]
    module = _lanes_module(mult, shift)
    text = "".join(v for v in emit_c(module).values() if isinstance(v, str))
    # every loop took the lanes (none fell back to the scalar loop alone)
    assert text.count("#if defined(__ARM_FEATURE_MVE)") >= len(CONST_RQ) + 5
    assert "vldrwq_s32(&acc[0])" in text  # the tile's finish took the lanes too
    for fn in ("vqrdmulhq_n_s32", "vqrdmulhq_s32", "vrshlq_s32", "vrshrq_n_s32", "vctp32q",
               "vldrbq_u32", "vldrhq_s32", "vstrhq_s32", "vstrbq_p_s32", "veorq_s32"):
        assert fn in text, fn
    dev = firmware(module, "cortex-m55")
    for trial in range(3):
        x = rng.integers(INT32_MIN, INT32_MAX, N, dtype=np.int64, endpoint=True)
        if trial == 1:  # ties at every shift after the doubling high multiply by 2^30
            x = (rng.integers(-2000, 2000, N) * 2 + 1) << rng.integers(1, 20, N)
        if trial == 2:
            x[:6] = [INT32_MIN, INT32_MAX, 0, -1, 1, INT32_MIN + 1]
        feeds = {"a": rng.integers(-128, 128, N).astype(np.int8),
                 "u": rng.integers(0, 256, N).astype(np.uint8),
                 "h": rng.integers(-32768, 32768, N).astype(np.int16),
                 "x": x.astype(np.int32)}
        want = run_loop_module(module, feeds)
        got = dev.run(feeds)
        for name in module.outputs:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name} trial {trial}")


def _t(shape: tuple[int, ...]) -> TensorType:
    return TensorType(shape, "int8")


ADD = dict(a_zero_point=-128, b_zero_point=17, output_zero_point=-9, a_multiplier=1412189663,
           a_shift=-1, b_multiplier=1073741824, b_shift=0, left_shift=20,
           output_multiplier=1306468280, output_shift=-18, act_min=-100, act_max=120)
MUL = dict(a_zero_point=3, b_zero_point=-11, output_zero_point=4,
           output_multiplier=1500000000, output_shift=-7, act_min=-128, act_max=127)


def _graph() -> Graph:
    """add_s8 / mul_s8 on 6 channels (a predicated tail of 2 lanes), with b broadcast per
    channel, per pixel and not at all."""
    shape = (1, 5, 3, 6)
    ins = (Value("x", _t(shape)), Value("c", _t((1, 1, 1, 6))), Value("p", _t((1, 5, 3, 1))))
    outs = tuple(Value(n, _t(shape)) for n in ("y0", "y1", "y2", "y3"))
    ops = (Op("add_s8", ("x", "c"), (outs[0],), Attrs.of(ADD), "add_c"),
           Op("add_s8", ("x", "p"), (outs[1],), Attrs.of(ADD), "add_p"),
           Op("add_s8", ("x", "x"), (outs[2],), Attrs.of(ADD), "add_x"),
           Op("mul_s8", ("x", "c"), (outs[3],), Attrs.of(MUL), "mul_c"))
    return Graph("elementwise", ins, outs, (), ops)


def test_add_and_mul_s8_on_the_m55_match_the_interpreter(firmware):
    graph = _graph()
    module = PassManager(default_pipeline("cortex-m"), target=cortex_m55()).run(graph)
    assert isinstance(module, LoopModule)
    kernels = [k for k in module.kernels if k.op_kind in ("add_s8", "mul_s8")]
    assert len(kernels) == 4 and all(k.compute is not None for k in kernels)
    text = "".join(v for v in emit_c(module).values() if isinstance(v, str))
    assert text.count("vctp32q") >= 4 and "vmulq_s32" in text
    dev = firmware(module, "cortex-m55")
    rng = np.random.default_rng(9)
    for _ in range(2):
        feeds = {"x": rng.integers(-128, 128, (1, 5, 3, 6)).astype(np.int8),
                 "c": rng.integers(-128, 128, (1, 1, 1, 6)).astype(np.int8),
                 "p": rng.integers(-128, 128, (1, 5, 3, 1)).astype(np.int8)}
        want = run_graph(graph, feeds)
        got = dev.run(feeds)
        for name in ("y0", "y1", "y2", "y3"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
