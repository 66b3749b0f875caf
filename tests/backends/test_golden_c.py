"""Golden emitted C: a codegen change shows up as a diff. Update with NNC_UPDATE_GOLDEN=1."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from nnc.backends.c.emit import emit_c
from nnc.ir.loops import (
    Buffer,
    KernelBuilder,
    LoopModule,
    call,
    cast,
    logical_and,
    maximum,
    select,
)

GOLDEN = Path(__file__).parent / "golden"


def _conv_relu_pool() -> LoopModule:
    """1-D conv (pad 1, select-guarded) + bias + relu, a flat alias, then a max over pairs."""
    x = Buffer("input", (1, 2, 6), "float32", "input")
    w = Buffer("conv.weight", (3, 2, 3), "float32", "constant")
    bias = Buffer("conv.bias", (3,), "float32", "constant")
    t = Buffer("t0", (1, 3, 6), "float32", "arena", offset=0)
    flat = Buffer("t0_flat", (18,), "float32", "arena", alias="t0")
    y = Buffer("output", (9,), "float32", "output")
    b = KernelBuilder("conv1d_relu")
    acc = b.local("float32")
    with b.loops((1, 3)) as (n, oc):
        with b.loop(6, kind="vectorized") as ox:
            b.store(acc, (), bias[oc])
            with b.loop(2) as ic:
                with b.loop(3, kind="unrolled") as k:
                    pos = ox + k - 1
                    inside = logical_and(pos.ge(0), pos.lt(6))
                    b.store(acc, (), acc[()] + select(inside, x[n, ic, pos], 0.0) * w[oc, ic, k])
            b.store(t, (n, oc, ox), maximum(acc[()], 0.0))
    k0 = b.build(("input", "conv.weight", "conv.bias", "t0"), op_kind="conv+relu",
                 op_name="Conv_0", macs=108)
    b = KernelBuilder("pair_max")
    with b.loop(9) as i:
        b.store(y, (i,), maximum(flat[i * 2], flat[i * 2 + 1]))
    k1 = b.build(("t0_flat", "output"), op_kind="max_pool", op_name="Pool_1", macs=9)
    consts = {"conv.weight": np.linspace(-1, 1, 18, dtype=np.float32).reshape(3, 2, 3),
              "conv.bias": np.array([0.5, -0.25, 0.0], np.float32)}
    return LoopModule("conv_relu_pool", (x, w, bias, t, flat, y), (k0, k1), ("input",),
                      ("output",), consts, 72, ("input",), ("output",))


def _int_ops() -> LoopModule:
    a = Buffer("a", (4,), "int8", "input")
    h = Buffer("h", (4,), "float16", "input")
    y = Buffer("y", (4,), "int8", "output")
    z = Buffer("z", (4,), "float16", "output")
    b = KernelBuilder("mixed")
    with b.loop(4) as i:
        b.store(y, (i,), call("abs", a[i] * 3) / a[i])
        with b.if_(h[i].gt(0.0)):
            b.store(z, (i,), cast(cast(a[i], "float32") * 0.5, "float16") + h[i])
    return LoopModule("int_ops", (a, h, y, z), (b.build(("a", "h", "y", "z")),), ("a", "h"),
                      ("y", "z"), {}, 0)


@pytest.mark.parametrize("name, make", [("conv_relu_pool", _conv_relu_pool),
                                        ("int_ops", _int_ops)])
def test_emitted_c_matches_golden(name, make):
    files = emit_c(make(), prefix="net")
    for fname in ("model.c", "model.h"):
        path = GOLDEN / f"{name}.{fname}"
        text = files[fname]
        if os.environ.get("NNC_UPDATE_GOLDEN"):
            path.write_text(text)
        assert path.exists(), f"{path} missing: run with NNC_UPDATE_GOLDEN=1"
        assert text == path.read_text(), f"{fname} of {name} changed; NNC_UPDATE_GOLDEN=1 to accept"


def test_golden_models_compile_and_run(tmp_path):
    from nnc.backends.c.build import build
    from nnc.backends.c.run import HostModel
    from nnc.ir.loop_interp import run_loop_module

    for make in (_conv_relu_pool, _int_ops):
        m = make()
        out = tmp_path / m.name
        build(m, out, opt_level=1, werror=True, bench=False)
        rng = np.random.default_rng(1)
        feeds = {}
        for bname in m.inputs:
            buf = m.buffer_map()[bname]
            feeds[bname] = (rng.integers(-20, 20, buf.shape) * 0.5).astype(buf.dtype)
        if "a" in feeds:
            feeds["a"][feeds["a"] == 0] = 1
        got = HostModel(out).run(feeds)
        want = run_loop_module(m, feeds)
        for oname in m.outputs:
            if oname == "z":  # written only where h > 0
                mask = feeds["h"] > 0
                np.testing.assert_allclose(got[oname][mask], want[oname][mask], rtol=1e-3)
            else:
                np.testing.assert_allclose(got[oname], want[oname], rtol=1e-6)
