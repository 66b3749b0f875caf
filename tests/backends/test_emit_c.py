"""The C emitter's text: literals, names, precedence, loop hints, restrict, errors."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.backends.c.emit import (
    CStyleEmitter,
    EmitError,
    NameTable,
    c_string,
    emit_c,
    float_literal,
    format_c_array,
    int_literal,
)
from nnc.ir.loops import (
    Binary,
    Buffer,
    Const,
    For,
    KernelBuilder,
    LoopModule,
    Store,
    Var,
    binary,
    call,
    cast,
    maximum,
)


def _expr_text(e, buffers=()):
    em = CStyleEmitter()
    em.buffers = {b.name: b for b in buffers}
    em.names = NameTable()
    for b in buffers:
        em.names.add(b.name)
    em.vars = {"i": "i", "j": "j"}
    return em.text(e)


def _one_kernel_module(kernel, buffers, inputs, outputs, constants=None, arena_size=0):
    return LoopModule("m", tuple(buffers), (kernel,), tuple(inputs), tuple(outputs),
                      constants or {}, arena_size)


def test_float_literals_are_exact_and_typed():
    assert float_literal(1.0, "float32") == "1.0f"
    assert float_literal(0.1, "float32") == "0.1f"
    assert float_literal(0.1, "float64") == "0.1"
    assert float_literal(1e20, "float32") == "1e+20f"
    assert float_literal(float("nan"), "float64") == "NAN"
    assert float_literal(float("-inf"), "float32") == "-INFINITY"
    assert float_literal(-0.0, "float32") == "-0.0f"
    # float16 is computed in float: the literal is the half value, exactly
    assert np.float32(float_literal(0.1, "float16")[:-1]) == np.float32(np.float16(0.1))


def test_int_literals():
    assert int_literal(-(2**63), "int64") == "INT64_MIN"
    assert int_literal(2**40, "int64") == "INT64_C(1099511627776)"
    assert int_literal(7, "int64") == "7"
    assert int_literal(2**64 - 1, "uint64") == "UINT64_C(18446744073709551615)"
    assert int_literal(3, "uint32") == "3u"
    assert int_literal(True, "bool") == "1"


def test_precedence_only_needed_parentheses():
    x = Buffer("x", (4, 8), "float32", "input")
    i, j = Var("i"), Var("j")
    a, b = x[i, j], x[j, i]
    assert _expr_text(a + b * 2.0, [x]) == "x[i * 8 + j] + x[j * 8 + i] * 2.0f"
    assert _expr_text(a - (b + 1.0), [x]) == "x[i * 8 + j] - (x[j * 8 + i] + 1.0f)"
    assert _expr_text((a + b) * (a - b), [x]).startswith("(x[i * 8 + j] + x[j * 8 + i]) * (")
    assert _expr_text(a / (b / 2.0), [x]) == "x[i * 8 + j] / (x[j * 8 + i] / 2.0f)"
    # integer ops narrower than int wrap through a cast; bitwise operands are parenthesised
    u = Buffer("u", (4,), "uint8", "input")
    assert _expr_text(u[i] + u[j], [u]) == "(uint8_t)(u[i] + u[j])"
    assert _expr_text(binary("and", u[i] + u[j], u[i]), [u]) == "((uint8_t)(u[i] + u[j])) & u[i]" \
        or _expr_text(binary("and", u[i] + u[j], u[i]), [u]) == "(uint8_t)(u[i] + u[j]) & u[i]"


def test_math_uses_f_suffixed_libm_and_helpers():
    x = Buffer("x", (4,), "float32", "input")
    d = Buffer("d", (4,), "float64", "input")
    n = Buffer("n", (4,), "int32", "input")
    i = Var("i")
    assert _expr_text(call("exp", x[i]), [x]) == "expf(x[i])"
    assert _expr_text(call("erf", d[i]), [d]) == "erf(d[i])"
    assert _expr_text(call("round", x[i]), [x]) == "nearbyintf(x[i])"
    assert _expr_text(x[i] % x[i], [x]) == "fmodf(x[i], x[i])"
    assert _expr_text(maximum(n[i], n[i]), [n]) == "nnc_max_i32(n[i], n[i])"
    assert _expr_text(binary("pow", n[i], n[i]), [n]) == "nnc_pow_i32(n[i], n[i])"
    assert _expr_text(n[i] / 4, [n]) == "n[i] / 4"  # constant divisor: no zero guard
    assert _expr_text(call("isnan", x[i]), [x]) == "isnan(x[i]) != 0"
    # comparisons an integer type makes constant are folded (they would warn: -Wtype-limits)
    u = Buffer("u", (4,), "uint16", "input")
    assert _expr_text(u[i].ge(0), [u]) == "1"
    assert _expr_text(Const(0, "uint16").gt(u[i]), [u]) == "0"


def test_float16_loads_compute_in_float_and_round_on_cast():
    h = Buffer("h", (4,), "float16", "input")
    i = Var("i")
    assert _expr_text(h[i] * 2.0, [h]) == "(float)h[i] * 2.0f"
    assert _expr_text(cast(h[i] + h[i], "float32"), [h]) == \
        "(float)NNC_F16((float)h[i] + (float)h[i])"
    assert _expr_text(cast(h[i], "float32"), [h]) == "(float)h[i]"
    assert _expr_text(cast(h[i], "float64"), [h]) == "(double)(float)h[i]"


def test_loop_kinds_and_vectorize_safety():
    x = Buffer("x", (16,), "float32", "input")
    y = Buffer("y", (16,), "float32", "output")
    s = Buffer("s", (1,), "float32", "output")
    b = KernelBuilder("k")
    with b.loop(16, kind="vectorized") as i:
        b.store(y, (i,), x[i] * 2.0)
    with b.loop(4, kind="unrolled") as i:
        b.store(y, (i,), x[i])
    with b.loop(2, kind="parallel") as i:
        b.store(y, (i,), x[i])
    with b.loop(16, kind="vectorized") as i:  # accumulates into memory: no ivdep
        b.store(s, (Const(0, "int64"),), s[Const(0, "int64")] + x[i])
    m = _one_kernel_module(b.build(("x", "y", "s")), [x, y, s], ["x"], ["y", "s"])
    text = emit_c(m)["model.c"]
    assert text.count("NNC_VECTORIZE\n") == 1
    assert "NNC_UNROLL(4)" in text
    assert "parallel loop, run serially" in text


def test_restrict_only_on_non_overlapping_params():
    x = Buffer("x", (8,), "float32", "input")
    a = Buffer("a", (8,), "float32", "arena", offset=0)
    b_ = Buffer("b", (8,), "float32", "arena", offset=16)  # overlaps a's second half
    c = Buffer("c", (4,), "float32", "arena", offset=64)
    y = Buffer("y", (8,), "float32", "output")
    b = KernelBuilder("k")
    with b.loop(8) as i:
        b.store(a, (i,), x[i])
        b.store(b_, (i,), a[i])
    with b.loop(4) as i:
        b.store(c, (i,), b_[i])
    with b.loop(8) as i:
        b.store(y, (i,), b_[i])
    m = _one_kernel_module(b.build(("x", "a", "b", "c", "y")), [x, a, b_, c, y], ["x"], ["y"],
                           arena_size=80)
    text = emit_c(m)["model.c"]
    assert ("static void k0_k(const float *restrict x, float *a, float *b, float *restrict c, "
            "float *restrict y)") in text


def test_names_are_sanitised_and_unique():
    t = NameTable(reserved_prefixes=("nnc_",))
    assert t.add("conv1.weight") == "conv1_weight"
    assert t.add("conv1:weight") == "conv1_weight_1"
    assert t.add("1x") == "v_1x"
    assert t.add("for") == "for_"
    assert t.add("nnc_run") == "v_nnc_run"
    assert t.add("expf") == "expf_"
    assert t.add("conv1.weight") == "conv1_weight"


def test_c_string_escapes():
    assert c_string('a"b\\c') == '"a\\"b\\\\c"'
    assert c_string("é\n") == '"\\303\\251\\012"'
    assert c_string("??=") == '"\\?\\?="'


def test_model_header_api_and_descriptors():
    x = Buffer("x", (1, 4), "float32", "input")
    y = Buffer("y", (1, 4), "uint8", "output")
    b = KernelBuilder("k")
    with b.loops((1, 4)) as (i, j):
        b.store(y, (i, j), cast(x[i, j], "uint8"))
    m = LoopModule("m", (x, y), (b.build(("x", "y"), op_kind="cast", macs=0),), ("x",), ("y",),
                   {}, 0, ("input",), ("output",))
    files = emit_c(m, prefix="net")
    h = files["model.h"]
    assert "int net_init(void);" in h
    assert "int net_run(const void *const *inputs, void *const *outputs);" in h
    assert "#define NET_NUM_INPUTS 1" in h and "#define NET_ARENA_SIZE 0" in h
    assert "extern const nnc_tensor_desc net_inputs[];" in h
    c = files["model.c"]
    assert '{ "input", net_input0_shape, 2, 1, 16 }' in c
    assert '{ "output", net_output0_shape, 2, 2, 4 }' in c
    assert '{ "k", "cast", "", 0 }' in c
    assert "malloc" not in c and "static uint8_t net_arena" not in c  # no arena needed
    with pytest.raises(EmitError, match="not a C identifier"):
        emit_c(m, prefix="my-net")


def test_constants_emission_round_trips():
    # 1 MB of weights (its speed is part of the compile times in benchmarks/, not timed here)
    data = np.random.default_rng(0).standard_normal(1 << 18).astype(np.float32)
    text = format_c_array(data)
    assert text.count("\n") == (1 << 18) // 16 - 1
    back = np.array([float(t.rstrip("f")) for t in text.replace("\n", " ").split(",")
                     if t.strip()], np.float32)
    np.testing.assert_array_equal(back, data)


@pytest.mark.parametrize("case", ["undeclared", "not_param", "writes_input", "bad_const",
                                  "rank", "alias_cycle", "var_scope"])
def test_ill_formed_modules_raise_clear_errors(case):
    x = Buffer("x", (4,), "float32", "input")
    y = Buffer("y", (4,), "float32", "output")
    w = Buffer("w", (4,), "float32", "constant")
    buffers, params, consts = [x, y], ("x", "y"), {}
    b = KernelBuilder("k")
    i = Var("i0")
    body = [For("i0", 4, (Store("y", (i,), x[i]),))]
    expected = ""
    if case == "undeclared":
        body = [For("i0", 4, (Store("y", (i,), Buffer("z", (4,), "float32", "input")[i]),))]
        expected = "'z'"
    elif case == "not_param":
        params, expected = ("x",), "not one of its params"
    elif case == "writes_input":
        body, expected = [For("i0", 4, (Store("x", (i,), x[i]),))], "read-only buffer 'x'"
    elif case == "bad_const":
        buffers, consts, expected = [x, y, w], {"w": np.zeros(3, np.float32)}, "constant 'w'"
    elif case == "rank":
        body, expected = [For("i0", 4, (Store("y", (i, i), x[i]),))], "rank 1"
    elif case == "alias_cycle":
        buffers = [x, y, Buffer("p", (4,), "float32", "arena", alias="q"),
                   Buffer("q", (4,), "float32", "arena", alias="p")]
        expected = "alias cycle"
    elif case == "var_scope":
        body, expected = [Store("y", (i,), x[i])], "outside of its loop"
    del b
    from nnc.ir.loops import Kernel

    m = LoopModule("m", tuple(buffers), (Kernel("k", params, (), tuple(body)),), ("x",), ("y",),
                   consts, 0)
    with pytest.raises(EmitError, match=expected):
        emit_c(m)


def test_both_constant_int64_operands_do_not_overflow_int():
    big = Binary("mul", Const(1 << 20, "int64"), Const(1 << 20, "int64"), "int64")
    assert _expr_text(big) == "(int64_t)1048576 * 1048576"


def test_a_row_of_dot_intrinsic_calls_is_unrolled_not_vectorized():
    """A vectorized lane loop of dot intrinsic calls (Helium's accumulator row of a dense
    conv) gets NNC_UNROLL: no compiler vectorizes across the calls' horizontal sums; other lane
    loops keep NNC_VECTORIZE."""
    from nnc.ir.loops import Call, Kernel, Load

    x = Buffer("x", (16,), "int8", "input")
    w = Buffer("w", (4, 16), "int8", "input")
    y = Buffer("y", (4,), "int32", "output")
    acc = Buffer("acc", (4,), "int32", "local")
    i = Var("i")
    row = Load("acc", (i,), "int32")
    body = (For("i", 4, (Store("acc", (i,), cast(x[i], "int32")),), "vectorized"),
            For("i", 4, (Store("acc", (i,), Call("dot16_s8", (
                x[Const(0, "int64")], w[i, Const(0, "int64")], row), "int32")),), "vectorized"),
            For("i", 4, (Store("y", (i,), row),), "vectorized"))
    k = Kernel("dots", ("x", "w", "y"), (acc,), body)
    text = "".join(v for v in emit_c(LoopModule("m", (x, w, y), (k,), ("x", "w"), ("y",))).values()
                   if isinstance(v, str))
    assert text.count("NNC_UNROLL(4)") == 1 and text.count("NNC_VECTORIZE\n") == 2
