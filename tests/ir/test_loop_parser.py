"""Loop-IR text: `format_module(parse_module(s)) == s`, the parser's errors, and workload keys."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import pytest

import nnc
from nnc.compiler.pipeline import default_pipeline
from nnc.ir.loop_parser import ParseError, parse_kernel, parse_module
from nnc.ir.loop_printer import format_kernel, format_module
from nnc.ir.loop_verify import verify_loop_module
from nnc.ir.loops import (
    Binary,
    Buffer,
    Call,
    CallExtern,
    Const,
    For,
    Fuse,
    If,
    Kernel,
    Load,
    LoopModule,
    Parallel,
    Reorder,
    Split,
    Store,
    Unroll,
    Var,
    Vectorize,
    binary,
    call,
    cast,
    logical_and,
    maximum,
    minimum,
    select,
)
from nnc.passes.manager import register_pass


def assert_same_module(a: LoopModule, b: LoopModule) -> None:
    """Field by field (LoopModule has no __eq__: its constants are arrays)."""
    assert (a.name, a.arena_size, a.inputs, a.outputs, a.input_names, a.output_names) == (
        b.name, b.arena_size, b.inputs, b.outputs, b.input_names, b.output_names)
    assert a.buffers == b.buffers
    assert list(a.kernels) == list(b.kernels)
    # the declarative definition (Kernel.compute: compare=False) prints as a `compute` block
    assert [k.compute for k in a.kernels] == [k.compute for k in b.kernels]
    assert sorted(a.constants) == sorted(b.constants)
    for k, v in a.constants.items():
        np.testing.assert_array_equal(v, b.constants[k])


def round_trip(m: LoopModule) -> LoopModule:
    text = format_module(m)
    parsed = parse_module(text, constants=m.constants)
    assert format_module(parsed) == text
    assert_same_module(parsed, m)
    return parsed


# ---------------------------------------------------------------- a module with every node type


def every_node_module() -> LoopModule:
    x = Buffer("x", (2, 8), "float32", "input")
    q = Buffer("q", (8,), "int8", "input")
    w = Buffer("w", (8,), "int32", "constant")
    w_flat = Buffer("w.view", (2, 4), "int32", "constant", alias="w")
    odd = Buffer("odd name/1", (8,), "float32", "arena", offset=64)
    y = Buffer("y", (2, 8), "float32", "output")
    z = Buffer("z", (8,), "int8", "output")
    scratch = Buffer("scratch", (16,), "int8", "arena", offset=0)
    acc = Buffer("acc0", (), "int32", "local")
    tile = Buffer("tile0", (2, 2), "float32", "local")
    i, j, k = Var("i0"), Var("j0"), Var("k0")
    n = Var("n0", "int32")  # a non-index variable prints its type

    fx = x[i, j]
    math_ = (call("exp", fx) + call("sqrt", call("abs", fx))) * 0.5 - 1.25e-7
    math_ = maximum(minimum(math_, float("inf")), float("-inf")) / 3.0
    math_ = Binary("pow", math_, Const(-0.0, "float32"), "float32")
    flags = logical_and(call("isnan", fx).eq(False), fx.ne(2.0).ne(fx.lt(0.0)))
    ints = cast(q[j], "int32")
    ints = binary("xor", binary("shr", binary("shl", ints, 1), 1) % 7, 3)
    ints = Binary("and", ints, Const(255, "int32"), "int32")
    j1 = Var("j1")
    requant = call("requantize", acc[()], w[j1], Const(-3, "int32"))
    # a result type unlike the one call()/binary() would give prints as `fn<type>(...)`
    widened = Call("abs", (cast(q[j1], "int16"),), "int32")
    odd_cmp = Binary("max", Const(1, "int32"), Const(2, "int32"), "int64")
    guard = logical_and(j1.ge(0), (j1 + 1).le(8)).eq(Const(True, "bool"))
    body = (
        For("i0", 2, (
            For("j0", 8, (
                Store("y", (i, j), select(flags, math_, fx)),
                For("n0", 1, (Store("acc0", (), ints + cast(n, "int32") * 0),)),
            ), "vectorized"),
        ), "parallel"),
        For("j1", 8, (
            Store("acc0", (), Const(0, "int32")),
            For("k0", 4, (
                Store("acc0", (), acc[()] + Load("w.view", (k // 2, k % 2), "int32")),
            ), "unrolled"),
            If(guard, (
                Store("z", (Var("j1"),), cast(maximum(requant, -128), "int8")),
            ), (
                Store("odd name/1", (Var("j1"),),
                      cast(widened + cast(odd_cmp, "int32"), "float32")),
            )),
            If(Var("j1").eq(0), (Store("tile0", (Const(0, "int64"), Const(1, "int64")),
                                            Const(1.0, "float32")),)),
        ), "serial"),
        CallExtern("arm_convolve_s8", ("q", "", "scratch", "odd name/1", Const(16, "int32"),
                                       cast(Const(3, "int64"), "int32"))),
    )
    kern = Kernel(
        "k0_fused", ("x", "q", "w", "w.view", "odd name/1", "y", "z", "scratch"), (acc, tile),
        body, op_kind="conv_s8+relu", op_name="it's \"odd\"", macs=1234,
        schedule=(Split("j0", 4), Reorder(("j0_i", "j0_o")), Fuse("a", "b"), Vectorize("j0_i"),
                  Unroll("k0"), Parallel("i0"), Reorder(("only",))),
        inplace=(("x", "y"),), workload="conv_s8+relu(i8[8]) -> (i8[8]) target=-")
    copy = Kernel("k1_copy", ("x", "y"), (), (
        For("c0", 16, (Store("y", (Var("c0") // 8, Var("c0") % 8),
                             x[Var("c0") // 8, Var("c0") % 8]),)),), op_kind="",
        op_name="only a name")
    bare = Kernel("k2", ("z",), (), ())  # no origin, no body
    return LoopModule(
        "every node", (x, q, w, w_flat, odd, y, z, scratch), (kern, copy, bare), ("x", "q"),
        ("y", "z"), {"w": np.arange(8, dtype=np.int32)}, 128, ("x in", "q"), ("y", "z out"))


def test_every_node_type_round_trips_and_verifies() -> None:
    m = every_node_module()
    verify_loop_module(m)
    parsed = round_trip(m)
    verify_loop_module(parsed)
    text = format_module(m)
    # what the printer adds only where it cannot be inferred
    assert "%n0:i32" in text and "abs<i32>(" in text and "max<i64>(" in text
    assert '%"odd name/1"' in text and 'call @arm_convolve_s8(q, _, scratch, "odd name/1"' in text
    assert "inputs %x \"x in\", %q \"q\"" in text
    assert "// conv_s8+relu 'it\\'s \"odd\"' macs=1234 {" in text
    assert "kernel @k1_copy(%x, %y) //  'only a name' macs=0 {" in text
    assert "kernel @k2(%z) {" in text


def test_parse_kernel_alone_takes_the_module_buffers() -> None:
    m = every_node_module()
    for k in m.kernels:
        assert parse_kernel(format_kernel(k), m.buffers) == k


def test_without_constants_the_module_has_no_data() -> None:
    m = every_node_module()
    parsed = parse_module(format_module(m))
    assert parsed.constants == {} and parsed.kernels == m.kernels
    with pytest.raises(Exception, match="constant buffer %w has no data"):
        verify_loop_module(parsed)


def test_floats_and_integers_keep_their_literal() -> None:
    m = every_node_module()
    for value, dtype, text in [(0, "float32", "0:f32"), (0.0, "float32", "0.0:f32"),
                               (float("nan"), "float32", "nan:f32"), (-5, "int64", "-5:i64"),
                               (1e-300, "float64", "1e-300:f64"), (True, "bool", "true:bool")]:
        k = Kernel("k", ("y",), (), (Store("y", (Const(0, "int64"), Const(0, "int64")),
                                           Const(value, dtype)),))
        printed = format_kernel(k)
        assert text in printed
        back = parse_kernel(printed, m.buffers)
        assert format_kernel(back) == printed
        got = back.body[0]
        assert isinstance(got, Store) and isinstance(got.value, Const)
        assert type(got.value.value) is type(value)


# ---------------------------------------------------------------- errors

MODULE = """loop_module @m arena=0 {
  buffer %x: f32[4] input
  buffer %y: f32[4] output
kernel @k0(%x, %y) // relu 'r' macs=0 {
  for %i0 in 0..4 serial {
    %y[%i0] = max(%x[%i0], 0.0:f32)
  }
}
}
"""


def test_the_error_fixture_parses() -> None:
    verify_loop_module(parse_module(MODULE))


@pytest.mark.parametrize("old, new, message", [
    ("0..4 serial", "0..4 fast", "5:19: expected a loop kind (serial, parallel, vectorized, "
                                 "unrolled), got 'fast'"),
    ("0..4", "0 4", "5:16: expected '..', got '4'"),
    ("in 0..4", "in 1..4", "5:14: loops start at 0"),
    ("%x[%i0]", "%v[%i0]", "6:19: unknown buffer %v (not a parameter or local of the kernel)"),
    ("%y[%i0] =", "%v[%i0] =", "6:5: unknown buffer %v"),
    ("0.0:f32)", "0.0)", "6:31: expected ':' and the type of constant 0.0, got ')'"),
    ("0.0:f32)", "0.0:f31)", "6:32: expected an element type (f32, f64, f16, i8, i16, i32, "
                             "i64, u8, u16, u32, u64, bool), got 'f31'"),
    ("0.0:f32)", "0:i32)", "6:15: operands of max differ in type (float32 vs int32)"),
    ("max(", "maxi(", "6:15: unknown function 'maxi'"),
    ("max(%x[%i0], 0.0:f32)", "(%x[%i0] ? 0.0:f32)", "6:24: unexpected character '?'"),
    ("max(%x[%i0], 0.0:f32)", "(%x[%i0] 0.0:f32)", "6:24: expected a binary operator (+, -, *, "
                                                   "<, &&, ...), got '0.0'"),
    ("@k0(%x, %y)", "@k0(%x, %w)", "4:16: parameter %w is not a module buffer"),
    ("f32[4] input", "f32[4] global", "2:21: expected a buffer scope (input, output, "
                                      "constant, arena, local), got 'global'"),
    ("'r' macs", "'r macs", "4:28: unterminated string"),
    ("  }\n}\n}\n", "  }\n}\n", "9:1: expected 'kernel' or '}' closing the module, got end of "
                                "input"),
    ("  }\n}\n}\n", "  }\n}\n}\n}", "10:1: expected end of input after the module, got '}'"),
    ("    %y", "    y", "6:5: expected a statement (for, if, call or a store %buf[...] = ...), "
                        "got 'y'"),
    ("// relu 'r' macs=0 {", "// relu 'r' macs=0 {\n  workload #000000000000 \"key\"",
     "5:12: workload hash #000000000000 does not match its key (#"),
    ("// relu 'r' macs=0 {", "// relu 'r' macs=0 {\n  schedule [Tile(loop='i0')]",
     "5:13: unknown schedule step 'Tile' (known: Split, Reorder, Fuse, Vectorize, Unroll, "
     "Parallel, Partition, Intrinsic, Layout, OverlapTail, GuardTail, Widen)"),
    ("// relu 'r' macs=0 {", "// relu 'r' macs=0 {\n  schedule [Split(loop='i0', size=2)]",
     "5:30: Split has no field 'size' (fields: factor, loop)"),
    ("// relu 'r' macs=0 {", "// relu 'r' macs=0 {\n  schedule [Split(loop='i0')]",
     "5:13: Split lacks factor"),
    ("buffer %y: f32[4] output", "buffer %y: f32[4] output alias=%q",
     "3:10: buffer %y aliases %q, which is not declared before it"),
    ("buffer %y: f32[4] output", "buffer %x: f32[4] output", "3:10: buffer %x declared twice"),
    ("arena=0 {\n", 'arena=0 {\n  inputs %x "x", %y\n',
     "2:18: input %y has no user-facing name (give every input one, or none)"),
])
def test_errors_name_line_column_and_what_was_expected(old: str, new: str, message: str) -> None:
    assert old in MODULE
    with pytest.raises(ParseError) as info:
        parse_module(MODULE.replace(old, new, 1))
    assert str(info.value).startswith(message), str(info.value)


def test_constant_data_is_checked_against_its_buffer() -> None:
    text = "loop_module @m arena=0 {\n  buffer %w: i8[4] constant\n\n}\n"
    assert parse_module(text).constants == {}
    with pytest.raises(ParseError, match="2:10: constant buffer %w has no data in constants="):
        parse_module(text, constants={})
    with pytest.raises(ParseError, match=r"2:10: constant buffer %w is i8\[4\], its data is "
                                         r"float32\[4\]"):
        parse_module(text, constants={"w": np.zeros(4, np.float32)})
    data = np.arange(4, dtype=np.int8)
    assert parse_module(text, constants={"w": data, "unused": data}).constants == {"w": data}


# ---------------------------------------------------------------- whole models

_captured: list[LoopModule] = []


class _Stop(Exception):
    """Ends a compile once the loop IR is captured (no C is emitted or built)."""

    user_error = True  # the pass manager lets it through unwrapped


@register_pass("capture-loops-test")
def _capture_loops(module: LoopModule, ctx: Any) -> LoopModule:
    _captured.append(module)
    raise _Stop


def loop_module_of(model: onnx.ModelProto, target: str, int8: bool, kernels: str) -> LoopModule:
    """The LoopModule nnc.compile builds (after plan-memory and check-fit)."""
    kind = "host" if target == "host" else "cortex-m"
    extra: dict[str, Any] = {}
    if int8:
        rng = np.random.default_rng(0)
        extra = {"quantize": "int8", "calibration": {
            i.name: rng.standard_normal([8] + [d.dim_value for d in
                                               i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}}
    _captured.clear()
    with pytest.raises(_Stop):
        nnc.compile(model, target=target, kernels=kernels, bench=False,
                    pipeline=default_pipeline(kind) + ",capture-loops-test", **extra)
    return _captured[-1]


def _models() -> Mapping[str, Any]:
    from benchmarks.models.mlperf_tiny import MODELS

    return MODELS


@pytest.mark.parametrize("name", ["kws", "vww", "ic", "ad"])
def test_mlperf_tiny_kernels_round_trip(name: str) -> None:
    model = _models()[name]()
    for target in ("host", "cortex-m7"):
        for int8 in (False, True):
            for kernels in ("generated", "cmsis-nn"):
                m = loop_module_of(model, target, int8, kernels)
                parsed = round_trip(m)
                verify_loop_module(parsed)
                for k in m.kernels:
                    assert k.workload, k.name
                    parsed_k = parse_kernel(format_kernel(k), m.buffers)
                    assert parsed_k == k and parsed_k.compute == k.compute, k.name
                if kernels == "cmsis-nn" and int8:
                    assert any(isinstance(s, CallExtern) for k in m.kernels for s in k.body)
                if target == "cortex-m7" and int8 and kernels == "generated":
                    assert any(k.schedule for k in m.kernels)


def test_a_printed_definition_reschedules_to_the_same_kernels() -> None:
    """The `compute` block carries the definition: a module read back from text is scheduled
    again (other steps, then the original ones) into the same kernels, Layout copies included."""
    from nnc.ir.loops import Layout
    from nnc.passes.manager import PassContext
    from nnc.passes.schedule import schedule

    m = loop_module_of(_models()["kws"](), "cortex-m55", True, "generated")
    assert any(isinstance(s, Layout) for k in m.kernels for s in k.schedule)
    text = format_module(m)
    assert "  compute \"conv_s8\" acc=i32 combine=add" in text
    parsed = parse_module(text, constants=m.constants)
    ctx = PassContext(target=None)
    # the kernels with a definition (the others' steps apply to the body once only); the
    # definition, not the printed body, is what the schedule pass builds them from
    defined = [k for k in m.kernels if k.compute is not None]
    assert len(defined) >= 5
    bare = parsed.replace(kernels=tuple(k.replace(body=()) for k in parsed.kernels
                                        if k.compute is not None))
    again = schedule(bare, ctx)
    assert [(k.body, k.locals, k.params) for k in again.kernels] == [
        (k.body, k.locals, k.params) for k in defined]


# ---------------------------------------------------------------- workload keys


def _kws() -> onnx.ModelProto:
    model: onnx.ModelProto = _models()["kws"]()
    return model


def _depthwise(m: LoopModule) -> list[Kernel]:
    return [k for k in m.kernels if (k.op_kind.startswith("conv") and "group=64" in k.workload)
            or k.op_kind.startswith("depthwise_flat")]


def test_kws_depthwise_layers_share_one_key_in_fp32() -> None:
    m = loop_module_of(_kws(), "host", False, "generated")
    dw = _depthwise(m)
    assert len(dw) == 4 and len({k.workload for k in dw}) == 1
    assert len({k.workload_hash for k in dw}) == 1 and re.fullmatch(r"[0-9a-f]{12}",
                                                                     dw[0].workload_hash)
    key = dw[0].workload
    if dw[0].op_kind.startswith("depthwise_flat"):
        # flat-depthwise (AVX-512: 8 vectors of the 25x5 plane): one zero-padded row each
        assert key.startswith("depthwise_flat+relu(f32[1,64,1,137], f32[64,1,3,3] const, "
                              "f32[3,125] const=#01be950d, f32[64] const) -> (f32[1,64,1,125]) "
                              "depthwise_flat{plane=125,width=5} relu{} target=host ")
        # the first conv's explicit padding and the conv, 4 x (pad, flat depthwise: one key
        # each), 4 pointwise (one key), pool, gemm, softmax
        assert len(m.kernels) == 17 and len({k.workload for k in m.kernels}) == 8
    else:
        # pad-depthwise-rows: the host's depthwise convs run unpadded on 8-column rows
        assert key.startswith("conv+relu(f32[1,64,27,10], f32[64,1,3,3] const, f32[64] const) "
                              "-> (f32[1,64,25,8]) conv{dilations=[1,1],group=64,"
                              "pads=[0,0,0,0],strides=[1,1]} relu{} target=host ")
        # the first conv's explicit padding (pad-depthwise-rows on a dense conv) and the conv,
        # 4 x (pad, depthwise, slice), 4 pointwise (one key), pool, gemm, softmax
        assert len(m.kernels) == 21 and len({k.workload for k in m.kernels}) == 9
    # no loop, buffer or op names
    names = {b.name for b in m.buffers} | {k.op_name for k in m.kernels}
    for k in m.kernels:
        assert "%" not in k.workload
        assert not any(re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", k.workload)
                       for n in names if "_" in n), k.workload


def test_int8_keys_differ_by_requantization_only() -> None:
    m = loop_module_of(_kws(), "cortex-m7", True, "generated")
    dw = _depthwise(m)
    assert len(dw) == 4
    # calibrated multipliers and shifts differ per layer, so the workloads do ...
    assert len({k.workload for k in dw}) == 4
    assert all("target=cortex-m7 isa=dsp/32 features=dsp,fpu-dp" in k.workload for k in dw)
    # ... and nothing else does: weights and bias enter by type only
    assert len({re.sub(r"const=#[0-9a-f]{8}", "const=#", k.workload) for k in dw}) == 1
    assert "i8[1,3,3,64] const, i32[64] const=#" in dw[0].workload
    assert "input_zero_point=-128" in dw[0].workload
    assert len({k.workload for k in m.kernels}) == len(m.kernels)


def test_keys_do_not_depend_on_names_but_on_the_target() -> None:
    model = _kws()
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    kept = {v.name for v in list(model.graph.input) + list(model.graph.output)}
    mapping = {}
    for node in renamed.graph.node:
        node.name = "renamed_" + node.name[::-1]
        for n in list(node.output):
            if n not in kept:
                mapping[n] = f"t{len(mapping)}_x"
    for init in renamed.graph.initializer:
        mapping[init.name] = f"w{len(mapping)}_x"
        init.name = mapping[init.name]
    for node in renamed.graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for int8 in (False, True):
        a = loop_module_of(model, "host", int8, "generated")
        b = loop_module_of(renamed, "host", int8, "generated")
        assert [k.op_name for k in a.kernels] != [k.op_name for k in b.kernels]
        assert [k.workload for k in a.kernels] == [k.workload for k in b.kernels]
    m7 = loop_module_of(model, "cortex-m7", False, "generated")
    host = loop_module_of(model, "host", False, "generated")
    assert not {x.workload for x in m7.kernels} & {y.workload for y in host.kernels}


def test_cmsis_nn_calls_keep_the_workload_of_the_op() -> None:
    gen = loop_module_of(_kws(), "cortex-m7", True, "generated")
    lib = loop_module_of(_kws(), "cortex-m7", True, "cmsis-nn")
    conv = {k.op_name: k.workload for k in gen.kernels if k.op_kind == "conv_s8"}
    calls = {k.op_name: k.workload for k in lib.kernels if k.op_kind == "conv_s8"}
    assert conv and conv == calls
