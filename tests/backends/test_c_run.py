"""Hand-built loop modules, emitted as C, compiled with -Werror and run through HostModel."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.backends.c.emit import WEIGHTS_INLINE_LIMIT
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loops import (
    Buffer,
    Const,
    KernelBuilder,
    LoopModule,
    call,
    cast,
    logical_and,
    maximum,
    minimum,
    select,
)


def _module(buffers, kernels, inputs, outputs, constants=None, arena_size=0, **names):
    return LoopModule("test", tuple(buffers), tuple(kernels), tuple(inputs), tuple(outputs),
                      constants or {}, arena_size, **names)


def _check_against_interp(model, module, feeds, rtol=1e-6, atol=0.0):
    want = run_loop_module(module, feeds)
    got = model.run(feeds)
    for name in module.outputs:
        assert got[name].dtype == want[name].dtype
        if got[name].dtype.kind == "f":
            np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol,
                                       equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    return got


def test_broadcast_elementwise_with_constant(compile_module):
    x = Buffer("x", (2, 3, 4), "float32", "input")
    w = Buffer("w", (3, 1), "float32", "constant")
    y = Buffer("y", (2, 3, 4), "float32", "output")
    b = KernelBuilder("mul_add_relu")
    with b.loops((2, 3)) as (n, c):
        with b.loop(4, kind="vectorized") as i:
            b.store(y, (n, c, i), maximum(x[n, c, i] * w[c, 0] + 0.5, 0.0))
    wdata = np.array([[1.5], [-2.0], [0.25]], np.float32)
    m = _module([x, w, y], [b.build(("x", "w", "y"), op_kind="mul")], ["x"], ["y"], {"w": wdata})
    model = compile_module(m)
    xv = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    got = model.run({"x": xv})["y"]
    np.testing.assert_allclose(got, np.maximum(xv * wdata + np.float32(0.5), 0), rtol=1e-6)


def test_reduction_with_local_accumulator(compile_module):
    x = Buffer("x", (3, 5), "float64", "input")
    y = Buffer("y", (3,), "float64", "output")
    b = KernelBuilder("row_sum")
    acc = b.local("float64")
    with b.loop(3) as i:
        b.store(acc, (), 0.0)
        with b.loop(5, kind="vectorized") as j:
            b.store(acc, (), acc[()] + x[i, j] * x[i, j])
        b.store(y, (i,), call("sqrt", acc[()]))
    m = _module([x, y], [b.build(("x", "y"), op_kind="reduce_l2", macs=15)], ["x"], ["y"])
    model = compile_module(m)
    xv = np.arange(15, dtype=np.float64).reshape(3, 5) - 7
    np.testing.assert_allclose(model.run({"x": xv})["y"], np.sqrt((xv * xv).sum(1)), rtol=1e-12)
    assert model.layers[0].op_kind == "reduce_l2" and model.layers[0].macs == 15


def test_local_array_and_select_guarded_loads(compile_module):
    # 1-D conv, kernel 3, pad 1: out-of-range taps are guarded by select (never loaded)
    n = 6
    x = Buffer("x", (n,), "float32", "input")
    y = Buffer("y", (n,), "float32", "output")
    b = KernelBuilder("conv1d")
    taps = b.local("float32", "taps", (3,))
    with b.loop(3) as k:
        b.store(taps, (k,), cast(k, "float32") + 1.0)
    acc = b.local("float32")
    with b.loop(n) as i:
        b.store(acc, (), 0.0)
        with b.loop(3, kind="unrolled") as k:
            pos = i + k - 1
            inside = logical_and(pos.ge(0), pos.lt(n))
            b.store(acc, (), acc[()] + select(inside, x[pos], 0.0) * taps[k])
        b.store(y, (i,), acc[()])
    m = _module([x, y], [b.build(("x", "y"))], ["x"], ["y"])
    model = compile_module(m)
    xv = np.arange(1, n + 1, dtype=np.float32)
    want = np.convolve(np.pad(xv, 1), [3, 2, 1], mode="valid").astype(np.float32)
    np.testing.assert_allclose(model.run({"x": xv})["y"], want)


DTYPES = ["float32", "float64", "float16", "int8", "int16", "int32", "int64",
          "uint8", "uint16", "uint32", "uint64", "bool"]


def test_casts_across_all_dtypes(compile_module):
    values = np.array([0, 1, -1, 2.5, -2.5, 100.75, -100.25, 3e4], np.float64)
    buffers, kernels, outputs = [], [], []
    inputs = {}
    for src in DTYPES:
        data = values if src != "bool" else values != 0
        if src.startswith("uint"):
            data = np.abs(values)
        with np.errstate(invalid="ignore", over="ignore"):
            inputs[f"in_{src}"] = np.clip(data, *_range(src)).astype(src)
        src_buf = Buffer(f"in_{src}", (8,), src, "input")
        buffers.append(src_buf)
        for dst in DTYPES:
            out = Buffer(f"{src}_to_{dst}", (8,), dst, "output")
            buffers.append(out)
            outputs.append(out.name)
            b = KernelBuilder(f"cast_{src}_{dst}")
            with b.loop(8) as i:
                b.store(out, (i,), cast(src_buf[i], dst))
            kernels.append(b.build((src_buf.name, out.name)))
    m = _module(buffers, kernels, list(inputs), outputs)
    model = compile_module(m)
    _check_against_interp(model, m, inputs)


def _range(dtype):
    if dtype == "bool":
        return 0, 1
    if dtype.startswith("float"):
        return -6e4, 6e4
    info = np.iinfo(dtype)
    # keep float->int casts in range: C leaves out-of-range conversions undefined
    return max(int(info.min), -30000), min(int(info.max), 30000)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64", "uint32", "uint64"])
def test_integer_semantics_match_interpreter(compile_module, dtype):
    a = Buffer("a", (12,), dtype, "input")
    bb = Buffer("b", (12,), dtype, "input")
    ops = {
        "add": lambda p, q: p + q, "sub": lambda p, q: p - q, "mul": lambda p, q: p * q,
        "div": lambda p, q: p / q, "mod": lambda p, q: p % q,
        "min": minimum, "max": maximum,
        "and": lambda p, q: _bin("and", p, q), "or": lambda p, q: _bin("or", p, q),
        "xor": lambda p, q: _bin("xor", p, q),
        "div3": lambda p, q: p / Const(3, dtype), "mod5": lambda p, q: p % Const(5, dtype),
        "abs": lambda p, q: call("abs", p), "neg": lambda p, q: call("neg", p),
        "not": lambda p, q: call("not", p), "sign": lambda p, q: call("sign", p),
        "fmod": lambda p, q: call("fmod", p, q),
        "lt": lambda p, q: cast(p.lt(q), dtype), "ge0": lambda p, q: cast(p.ge(0), dtype),
    }
    buffers, kernels = [a, bb], []
    for name, fn in ops.items():
        out = Buffer(name, (12,), dtype, "output")
        buffers.append(out)
        k = KernelBuilder(name)
        with k.loop(12) as i:
            k.store(out, (i,), fn(a[i], bb[i]))
        kernels.append(k.build(("a", "b", name)))
    m = _module(buffers, kernels, ["a", "b"], list(ops))
    model = compile_module(m)
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max

    def wrap(values):  # two's complement into dtype
        return np.array([v & (2**64 - 1) for v in values], np.uint64).astype(dtype)

    feeds = {"a": wrap([0, 1, 7, -7, 100, -100, lo, hi, 5, -1, 3, lo]),
             "b": wrap([0, 3, 2, 2, -3, 7, -1, 1, 0, -1, 9, 1])}
    if dtype.startswith("int"):
        feeds["b"][6] = 2  # INT_MIN / -1 overflows in the interpreter's Python arithmetic
    _check_against_interp(model, m, feeds)


def _bin(op, p, q):
    from nnc.ir.loops import binary

    return binary(op, p, q)


def test_integer_pow_and_shifts(compile_module):
    a = Buffer("a", (6,), "int32", "input")
    e = Buffer("e", (6,), "int32", "input")
    u = Buffer("u", (6,), "uint32", "input")
    pw = Buffer("pw", (6,), "int32", "output")
    shl = Buffer("shl", (6,), "uint32", "output")
    shr = Buffer("shr", (6,), "uint32", "output")
    b = KernelBuilder("int_ops")
    with b.loop(6) as i:
        b.store(pw, (i,), _bin("pow", a[i], e[i]))
        b.store(shl, (i,), _bin("shl", u[i], cast(e[i], "uint32")))
        b.store(shr, (i,), _bin("shr", u[i], cast(e[i], "uint32")))
    m = _module([a, e, u, pw, shl, shr], [b.build(("a", "e", "u", "pw", "shl", "shr"))],
                ["a", "e", "u"], ["pw", "shl", "shr"])
    model = compile_module(m)
    av = np.array([2, -3, 5, 7, 0, 2], np.int32)
    ev = np.array([10, 3, 0, 1, 4, 31], np.int32)
    uv = np.array([1, 0x80000000, 5, 255, 3, 1], np.uint32)
    got = model.run({"a": av, "e": ev, "u": uv})
    np.testing.assert_array_equal(got["pw"], (av.astype(np.int64) ** ev).astype(np.int32))
    np.testing.assert_array_equal(got["shl"], (uv.astype(np.uint64) << ev.astype(np.uint64))
                                  .astype(np.uint32))
    np.testing.assert_array_equal(got["shr"], uv >> ev.astype(np.uint32))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_intrinsics_match_numpy(compile_module, dtype):
    x = Buffer("x", (10,), dtype, "input")
    z = Buffer("z", (10,), dtype, "input")
    unary = {
        "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh, "floor": np.floor,
        "ceil": np.ceil, "round": np.rint, "abs": np.abs, "neg": np.negative, "sin": np.sin,
        "cos": np.cos, "atan": np.arctan, "sinh": np.sinh, "asinh": np.arcsinh,
        "sign": np.sign, "log1p": np.log1p, "expm1": np.expm1,
    }
    binary_ops = {"fmod": np.fmod, "pow": np.power, "max": np.maximum, "min": np.minimum,
                  "mod": np.fmod, "div": np.divide}
    buffers, kernels, want = [x, z], [], {}
    xv = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 3.0, 0.0, np.nan, np.inf, -7.25], dtype)
    zv = np.array([2.0, 3.0, np.nan, 1.5, -2.0, 0.5, 1.0, 1.0, 2.0, 2.0], dtype)
    for name, ref in {**unary, **binary_ops, "erf": None, "isnan": None, "isinf": None}.items():
        out_dtype = "bool" if name in ("isnan", "isinf") else dtype
        out = Buffer(f"y_{name}", (10,), out_dtype, "output")
        buffers.append(out)
        k = KernelBuilder(name)
        with k.loop(10) as i:
            if name in ("max", "min"):
                value = (maximum if name == "max" else minimum)(x[i], z[i])
            elif name in binary_ops and name != "fmod":
                value = _bin(name, x[i], z[i])
            elif name == "fmod":
                value = call("fmod", x[i], z[i])
            else:
                value = call(name, x[i])
            k.store(out, (i,), value)
        kernels.append(k.build(("x", "z", out.name)))
        with np.errstate(all="ignore"):
            if name == "erf":
                import math
                want[out.name] = np.array([math.erf(v) for v in xv], dtype)
            elif name in ("isnan", "isinf"):
                want[out.name] = getattr(np, name)(xv)
            elif name in binary_ops:
                want[out.name] = ref(xv, zv)
            else:
                want[out.name] = ref(xv)
    m = _module(buffers, kernels, ["x", "z"], list(want))
    got = compile_module(m).run({"x": xv, "z": zv})
    tol = 1e-6 if dtype == "float32" else 1e-14
    for name, w in want.items():
        np.testing.assert_allclose(got[name], w, rtol=tol, atol=tol, equal_nan=True, err_msg=name)


def test_float16_storage_and_compute(compile_module):
    x = Buffer("x", (5,), "float16", "input")
    y = Buffer("y", (5,), "float16", "output")
    f = Buffer("f", (5,), "float32", "output")
    b = KernelBuilder("half")
    with b.loop(5) as i:
        b.store(y, (i,), x[i] * 2.0 + 0.1)
        b.store(f, (i,), cast(x[i] + 0.1, "float32"))  # the f16 sum is rounded before the cast
    m = _module([x, y, f], [b.build(("x", "y", "f"))], ["x"], ["y", "f"])
    xv = np.array([0.5, -1.25, 1000.0, 3.14, 6e4], np.float16)
    got = compile_module(m).run({"x": xv})
    with np.errstate(over="ignore"):  # 6e4 * 2 overflows to inf in half, in C as in numpy
        want_y = (xv.astype(np.float32) * 2 + np.float32(np.float16(0.1))).astype(np.float16)
        np.testing.assert_array_equal(got["y"], want_y)
        np.testing.assert_array_equal(got["f"], (xv + np.float16(0.1)).astype(np.float32))


def test_bool_logic(compile_module):
    x = Buffer("x", (6,), "float32", "input")
    m_ = Buffer("m", (6,), "bool", "input")
    y = Buffer("y", (6,), "bool", "output")
    n = Buffer("n", (6,), "int32", "output")
    b = KernelBuilder("logic")
    with b.loop(6) as i:
        gt = x[i].gt(0.0)
        v = _bin("xor", _bin("or", logical_and(gt, m_[i]), call("isnan", x[i])), call("not", gt))
        b.store(y, (i,), v)
        b.store(n, (i,), select(v, Const(7, "int32"), cast(m_[i], "int32")))
    mod = _module([x, m_, y, n], [b.build(("x", "m", "y", "n"))], ["x", "m"], ["y", "n"])
    xv = np.array([1.0, -1.0, np.nan, 2.0, 0.0, -3.0], np.float32)
    mv = np.array([True, True, False, False, True, False])
    got = compile_module(mod).run({"x": xv, "m": mv})
    gtv = xv > 0
    want = ((gtv & mv) | np.isnan(xv)) ^ ~gtv
    np.testing.assert_array_equal(got["y"], want)
    np.testing.assert_array_equal(got["n"], np.where(want, 7, mv.astype(np.int32)))


def test_arena_offsets_alias_and_in_place(compile_module):
    # t0 and t2 share arena bytes (t0 is dead when t2 is written); t1 is a flat alias of t0;
    # kernel 2 updates t2 in place.
    x = Buffer("x", (2, 4), "float32", "input")
    t0 = Buffer("t0", (2, 4), "float32", "arena", offset=0)
    t1 = Buffer("t1", (8,), "float32", "arena", alias="t0")
    t3 = Buffer("t3", (8,), "float32", "arena", offset=32)
    t2 = Buffer("t2", (8,), "float32", "arena", offset=0)
    y = Buffer("y", (8,), "float32", "output")
    k0 = KernelBuilder("double")
    with k0.loops((2, 4)) as (i, j):
        k0.store(t0, (i, j), x[i, j] * 2.0)
    k1 = KernelBuilder("reverse")
    with k1.loop(8) as i:
        k1.store(t3, (i,), t1[7 - i])
    k2 = KernelBuilder("copy")
    with k2.loop(8) as i:
        k2.store(t2, (i,), t3[i] + 1.0)
    k3 = KernelBuilder("square_in_place")
    with k3.loop(8, kind="vectorized") as i:
        k3.store(t2, (i,), t2[i] * t2[i])
    k4 = KernelBuilder("out")
    with k4.loop(8) as i:
        k4.store(y, (i,), t2[i])
    m = _module([x, t0, t1, t3, t2, y],
                [k0.build(("x", "t0")), k1.build(("t1", "t3")), k2.build(("t3", "t2")),
                 k3.build(("t2",)), k4.build(("t2", "y"))],
                ["x"], ["y"], arena_size=64)
    model = compile_module(m)
    assert model.arena_size == 64
    xv = np.arange(8, dtype=np.float32).reshape(2, 4)
    want = (xv.reshape(-1)[::-1] * 2 + 1) ** 2
    np.testing.assert_allclose(model.run({"x": xv})["y"], want)
    _check_against_interp(model, m, {"x": xv})


def test_outputs_that_are_inputs_aliases_or_repeated(compile_module):
    x = Buffer("x", (2, 3), "int16", "input")
    xf = Buffer("x_flat", (6,), "int16", "input", alias="x")  # a view of the input
    t = Buffer("t", (2, 3), "int16", "arena")  # no offset: the emitter lays it out
    r = Buffer("r", (6,), "int16", "output", alias="t")
    b = KernelBuilder("inc")
    with b.loops((2, 3)) as (i, j):
        b.store(t, (i, j), xf[i * 3 + j] + 1)
    m = _module([x, xf, t, r], [b.build(("x_flat", "t"))], ["x"], ["r", "x", "r"],
                input_names=("in put",), output_names=("flat", "same", "again"))
    model = compile_module(m)
    xv = np.arange(6, dtype=np.int16).reshape(2, 3)
    got = model.run({"in put": xv})
    np.testing.assert_array_equal(got["flat"], xv.reshape(-1) + 1)
    np.testing.assert_array_equal(got["same"], xv)
    np.testing.assert_array_equal(got["again"], xv.reshape(-1) + 1)


def test_special_constants_round_trip_exactly(compile_module):
    consts = {
        "f32": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4028235e38, 0.1, 1 / 3],
                        np.float32),
        "f64": np.array([np.nan, -np.inf, 5e-324, 0.1, 1 / 3, 1e308, -0.0, 2.0], np.float64),
        "f16": np.array([np.nan, np.inf, 6e-8, 0.1, 65504, -0.0, 1 / 3, 2], np.float16),
        "i64": np.array([-2**63, 2**63 - 1, 0, -1, 2**31, -2**31, 7, 8], np.int64),
        "u64": np.array([2**64 - 1, 2**63, 0, 1, 2, 3, 4, 5], np.uint64),
        "i32": np.array([-2**31, 2**31 - 1, 0, -1, 1, 2, 3, 4], np.int32),
        "b": np.array([True, False] * 4),
    }
    buffers, kernels = [], []
    for name, data in consts.items():
        c = Buffer(f"c_{name}", (8,), str(data.dtype), "constant")
        o = Buffer(f"o_{name}", (8,), str(data.dtype), "output")
        buffers += [c, o]
        k = KernelBuilder(f"copy_{name}")
        with k.loop(8) as i:
            k.store(o, (i,), c[i])
        kernels.append(k.build((c.name, o.name)))
    m = _module(buffers, kernels, [], [f"o_{n}" for n in consts],
                {f"c_{n}": v for n, v in consts.items()})
    for limit in (1 << 20, 0):  # C initializers, then weights.bin via .incbin
        got = compile_module(m, weights_inline_limit=limit).run({})
        for name, data in consts.items():
            assert got[f"o_{name}"].tobytes() == data.tobytes(), (name, limit)


def test_large_constants_go_to_weights_bin(compile_module, tmp_path):
    n = WEIGHTS_INLINE_LIMIT // 4 + 16
    w = Buffer("w", (n,), "float32", "constant")
    x = Buffer("x", (1,), "float32", "input")
    y = Buffer("y", (2,), "float32", "output")
    b = KernelBuilder("pick")
    b.store(y, (Const(0, "int64"),), w[Const(n - 1, "int64")] + x[Const(0, "int64")])
    b.store(y, (Const(1, "int64"),), w[Const(1, "int64")])
    data = np.arange(n, dtype=np.float32)
    m = _module([w, x, y], [b.build(("w", "x", "y"))], ["x"], ["y"], {"w": data})
    model = compile_module(m)
    assert ".nnc_weights" in (model.out_dir / "weights.c").read_text()  # .incbin's bytes
    assert not (model.out_dir / "weights.bin").exists()  # ... are in libmodel.so only
    assert (model.out_dir / "libmodel.so").stat().st_size >= data.nbytes
    assert "static const float" not in (model.out_dir / "model.c").read_text()
    np.testing.assert_array_equal(model.run({"x": np.ones(1, np.float32)})["y"],
                                  [n - 1 + 1, 1])


def test_awkward_names_and_scalars(compile_module):
    x = Buffer("input:0", (), "float32", "input")
    c = Buffer("for", (), "float32", "constant")
    y = Buffer("1/out.y", (), "float32", "output")
    u = Buffer("nnc_run", (), "float32", "arena", offset=0)
    b = KernelBuilder("weird-name")
    b.store(u, (), x[()] * c[()])
    b2 = KernelBuilder("expf")
    b2.store(y, (), call("exp", u[()]))
    m = _module([x, c, y, u], [b.build(("input:0", "for", "nnc_run")),
                               b2.build(("nnc_run", "1/out.y"))],
                ["input:0"], ["1/out.y"], {"for": np.array(2.0, np.float32)}, arena_size=4,
                input_names=("input:0",), output_names=('out "y"',))
    model = compile_module(m)
    assert model.inputs[0].shape == () and model.outputs[0].name == 'out "y"'
    got = model.run({"input:0": np.array(0.5, np.float32)})['out "y"']
    np.testing.assert_allclose(got, np.exp(1.0), rtol=1e-6)


def test_module_without_inputs_or_kernels(compile_module):
    c = Buffer("c", (3,), "int8", "constant")
    m = _module([c], [], [], ["c"], {"c": np.array([1, -2, 3], np.int8)})
    model = compile_module(m)
    assert model.inputs == () and model.layers == ()
    np.testing.assert_array_equal(model.run({})["c"], [1, -2, 3])
