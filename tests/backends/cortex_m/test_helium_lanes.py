"""The Helium code the C emitter writes for vectorized lane loops (`CStyleEmitter.mve_lanes`)
gives, on the emulated Cortex-M55, exactly what the scalar loop gives (the loop-IR interpreter):
the widening multiply-accumulate of a depthwise row and the requantization of a row (VQRDMULH,
the rounding divide by a power of two with ties away from zero, clamp, narrowing store), on
values chosen to hit the edges: ties at every shift, INT32_MIN/MAX accumulators, zero and
near-2^31 multipliers, shifts 0 and -31."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loops import (
    Buffer,
    For,
    Kernel,
    Load,
    LoopModule,
    Store,
    Var,
    call,
    cast,
    const,
    maximum,
    minimum,
)

pytestmark = [pytest.mark.needs_arm, pytest.mark.needs_qemu]

N = 64


def _module(mult: np.ndarray, shift: np.ndarray) -> LoopModule:
    acc_in = Buffer("acc_in", (N,), "int32", "input")
    a = Buffer("a", (N,), "int8", "input")
    b = Buffer("b", (N,), "int8", "input")
    m = Buffer("mult", (N,), "int32", "constant")
    s = Buffer("shift", (N,), "int32", "constant")
    y = Buffer("y", (N,), "int8", "output")
    acc = Buffer("acc", (N,), "int32", "local")
    i = Var("i")
    row = Load("acc", (i,), "int32")
    mac = row + (cast(a[i], "int32") + 128) * (cast(b[i], "int32") - 3)
    rq = call("requantize", row, m[i], s[i])
    out = cast(minimum(maximum(rq, const(-128 + 5, "int32")), const(127 + 5, "int32"))
               + const(-5, "int32"), "int8")
    body = (
        For("i", N, (Store("acc", (i,), acc_in[i]),)),
        For("i", N, (Store("acc", (i,), mac),), "vectorized"),
        For("i", N, (Store("y", (i,), out),), "vectorized"),
    )
    # scheduled for the M55: its workload key names the target's features (mve)
    k = Kernel("lanes", ("acc_in", "a", "b", "mult", "shift", "y"), (acc,), body,
               workload="lanes target=cortex-m55 isa=mve/128 features=dsp,fpu-dp,mve,mve-fp")
    return LoopModule("lanes", (acc_in, a, b, m, s, y), (k,), ("acc_in", "a", "b"), ("y",),
                      {"mult": mult, "shift": shift})


def test_helium_lanes_equal_the_scalar_loop(firmware):
    from nnc.backends.c.emit import emit_c

    rng = np.random.default_rng(11)
    shift = -(np.arange(N, dtype=np.int32) % 32)  # 0, -1, ... -31, 0, ...
    mult = rng.integers(1 << 30, (1 << 31) - 1, N).astype(np.int32)
    mult[:3] = [0, (1 << 31) - 1, 1 << 30]
    module = _module(mult, shift)
    text = "".join(v for v in emit_c(module).values() if isinstance(v, str))
    assert "vqrdmulhq_s32" in text and "vldrbq_s32" in text
    dev = firmware(module, "cortex-m55")
    for trial in range(3):
        acc = rng.integers(-2**31, 2**31, N, dtype=np.int64).astype(np.int32)
        if trial == 1:  # ties: after the high multiply by 2^30 (x/2), h = acc/2 exactly
            mult[:] = 1 << 30
            module = _module(mult, shift)
            dev = firmware(module, "cortex-m55")
            right = -shift
            acc = ((rng.integers(-2000, 2000, N) * 2 + 1) << np.maximum(right, 1)).astype(np.int32)
        if trial == 2:
            acc[:4] = [-2**31, 2**31 - 1, 0, -1]
        feeds = {"acc_in": acc, "a": rng.integers(-128, 128, N).astype(np.int8),
                 "b": rng.integers(-128, 128, N).astype(np.int8)}
        want = run_loop_module(module, feeds)["y"]
        np.testing.assert_array_equal(dev.run(feeds)["y"], want, err_msg=f"trial {trial}")
