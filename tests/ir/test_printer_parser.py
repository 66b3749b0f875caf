"""Round trips of the graph-IR text format and the parser's error messages."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import numpy as np
import pytest

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.parser import ParseError, parse_graph
from nnc.ir.printer import print_graph
from nnc.ir.types import DTYPES, QuantParams, TensorType

F32 = "float32"


def t(shape: tuple[int, ...], dtype: str = F32, layout: str | None = None,
      quant: QuantParams | None = None) -> TensorType:
    return TensorType(shape, dtype, layout, quant)


# --- an exact structural comparison (floats by bits, so -0.0 != 0.0 and NaN == same NaN)


def _bits(x: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", x))[0])


def canon_attr(v: Any) -> Any:
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, int):
        return ("i", v)
    if isinstance(v, float):
        return ("f", _bits(v))
    if isinstance(v, str):
        return ("s", v)
    assert isinstance(v, tuple), v
    return ("t", tuple(canon_attr(x) for x in v))


def canon_type(ty: TensorType) -> Any:
    q = ty.quant
    quant = None if q is None else (tuple(_bits(s) for s in q.scale), q.zero_point, q.axis)
    return (ty.shape, ty.dtype, ty.layout, quant)


def canon_graph(g: Graph) -> Any:
    def values(vs: tuple[Value, ...]) -> Any:
        return tuple((v.name, canon_type(v.type)) for v in vs)

    consts = tuple(
        (c.name, canon_type(c.value.type), c.data.dtype.str, c.data.shape, c.data.tobytes())
        for c in g.constants
    )
    ops = tuple(
        (op.kind, op.inputs, values(op.outputs),
         tuple((k, canon_attr(v)) for k, v in op.attrs.items()),
         op.name, None if op.body is None else canon_graph(op.body))
        for op in g.ops
    )
    return (g.name, values(g.inputs), values(g.outputs), consts, ops)


def assert_round_trip(g: Graph) -> str:
    text = print_graph(g)
    parsed = parse_graph(text)
    assert canon_graph(parsed) == canon_graph(g)
    assert print_graph(parsed) == text
    for c in parsed.constants:
        assert not c.data.flags.writeable
    return text


# --- hand-built graphs


TINY = """\
graph @tiny(%x: f32[1,4]) -> (%y: f32[1,4]) {
  const %w: f32[4] = dense<"AACAPwAAAEAAAEBAAACAQA==">
  %t: f32[1,4] = add(%x, %w)
  %y: f32[1,4] = relu(%t) loc("relu_1")
  return %y
}
"""


def test_tiny_text_round_trips() -> None:
    g = parse_graph(TINY)
    assert print_graph(g) == TINY
    np.testing.assert_array_equal(g.constants[0].data, np.array([1, 2, 3, 4], np.float32))
    assert [(op.kind, op.inputs, op.name) for op in g.ops] == [
        ("add", ("x", "w"), ""), ("relu", ("t",), "relu_1")]
    assert g.outputs == (Value("y", t((1, 4))),)


def test_constants_of_every_dtype_are_bit_exact() -> None:
    rng = np.random.default_rng(0)
    consts = []
    for i, dtype in enumerate(sorted(DTYPES)):
        if dtype == "bool":
            data = rng.integers(0, 2, (2, 3)).astype(bool)
        else:
            # random bytes: NaNs with payloads, denormals, extreme ints
            data = np.frombuffer(rng.bytes(6 * np.dtype(dtype).itemsize), dtype).reshape(2, 3)
        consts.append(Constant.of(f"c{i}", data))
    consts.append(Constant.of("scalar", np.array(-0.0, np.float64)))
    consts.append(Constant.of("empty", np.zeros((0, 3), np.int8)))
    outs = tuple(c.value for c in consts)
    g = Graph("consts", (), outs, tuple(consts), ())
    assert_round_trip(g)


def test_every_attribute_kind_round_trips() -> None:
    nan_payload = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000123))[0]
    attrs = Attrs.of(
        i=-7, big=2**70, zero=0, f=0.1, tiny=5e-324, huge=1e300, negzero=-0.0, pinf=math.inf,
        ninf=-math.inf, nan=math.nan, payload=nan_payload, whole=3.0,
        s='quote " backslash \\ newline \n tab \t cr \r bell \x07 é 中 \u2028',
        empty_s="", yes=True, no=False, ints=(1, 2, 3), nested=((1, 2.5), ("a", (True,)), ()),
        empty=(), one=(4,),
        **{"odd key": 1, "graph": 2, "loc": "x"},
    )
    x = Value("x", t((2,)))
    g = Graph("attrs", (x,), (x,), (), (Op("custom", ("x",), (), attrs),))
    text = assert_round_trip(g)
    assert "negzero = -0.0" in text and '"nan" = nan,' in text
    assert "payload = nan(0xfff8000000000123)" in text
    assert '"odd key" = 1' in text and '"graph" = 2' in text


def test_quoted_names_absent_inputs_layouts_and_quant() -> None:
    q = QuantParams((0.5, 0.25), (0, -3), axis=1)
    x = Value("conv1/W:0", t((1, 2, 3, 3), "int8", "NHWC", q))
    s = Value("1", t((), "float64"))
    y = Value('we"ird\\name', t((1, 2, 3, 3), "uint8", "my layout", QuantParams((1e-7,), (128,))))
    z = Value("z", t((2,), "float16", ""))
    ops = (
        Op("quantize", ("conv1/W:0", "", "1"), (y, z), Attrs.of(axis=1), name="q/1:0"),
        Op("sink", ("", ""), (), name=""),
        Op("return", (), (), name='"loc"'),
    )
    g = Graph("model.v2 (test)", (x, s), (y, z), (), ops)
    text = assert_round_trip(g)
    assert '%"conv1/W:0": i8[1,2,3,3]@NHWC q<scale=[0.5,0.25],zp=[0,-3],axis=1>' in text
    assert 'quantize(%"conv1/W:0", none, %1)' in text
    assert "  sink(none, none)\n" in text
    assert '  "return"() loc("\\"loc\\"")\n' in text
    assert '@"my layout"' in text and "f16[2]@\"\"" in text


def test_fused_body_prints_as_nested_graph() -> None:
    x, w = Value("x", t((1, 4))), Value("w", t((4,)))
    tt, y = Value("t", t((1, 4))), Value("y", t((1, 4)))
    inner_c = Constant.of("k", np.array([1.5], np.float32))
    body = Graph("add_1", (x, w), (y,), (inner_c,), (
        Op("add", ("x", "w"), (tt,), name="add_1"),
        Op("relu", ("t",), (y,), name="relu_1"),
    ))
    deeper = Graph("outer", (x,), (y,), (), (Op("fused", ("x",), (y,), body=body.replace(
        inputs=(x,), ops=(Op("relu", ("x",), (y,)),), constants=())),))
    wc = Constant.of("w", np.arange(4, dtype=np.float32))
    g = Graph("main", (x,), (y,), (wc,), (
        Op("fused", ("x", "w"), (y,), Attrs.of(ops="add+relu"), name="add_1", body=body),
        Op("fused", ("x",), (Value("y2", t((1, 4))),), body=deeper),
    ))
    text = assert_round_trip(g.replace(outputs=(y, Value("y2", t((1, 4))))))
    assert """\
  %y: f32[1,4] = fused(%x, %w) {ops = "add+relu"} loc("add_1")
    graph @add_1(%x: f32[1,4], %w: f32[4]) -> (%y: f32[1,4]) {
      const %k: f32[1] = dense<"AADAPw==">
      %t: f32[1,4] = add(%x, %w) loc("add_1")
      %y: f32[1,4] = relu(%t) loc("relu_1")
      return %y
    }
""" in text
    assert "      %y: f32[1,4] = fused(%x)\n        graph @add_1(%x: f32[1,4]) -> " in text


def test_multiple_results_and_empty_graph() -> None:
    x = Value("x", t((5,)))
    a, b = Value("a", t((2,))), Value("b", t((3,)))
    g = Graph("split", (x,), (a, b, a), (), (Op("split", ("x",), (a, b), Attrs.of(split=(2, 3))),))
    text = assert_round_trip(g)
    assert "%a: f32[2], %b: f32[3] = split(%x) {split = [2, 3]}" in text
    assert "return %a, %b, %a" in text
    empty = Graph("e", (), (), (), ())
    assert assert_round_trip(empty) == "graph @e() -> () {\n  return\n}\n"


def test_tensor_type_str_is_parsed() -> None:
    q = QuantParams((0.5,), (3,))
    for ty in (t((1, 3), "int8", "NHWC", q), t((2,), "uint8", None, q), t((), "bool", "NC")):
        text = f"graph @g(%x: {ty}) -> (%x: {ty}) {{\n  return %x\n}}\n"
        assert parse_graph(text).inputs[0].type == ty


def test_whitespace_and_comments_are_ignored() -> None:
    text = """// a comment
    graph   @tiny ( %x :f32[ 1 , 4 ] )->( %y: f32[1,4] ){ // trailing
      const %w: f32[4] = dense< "AACAPwAAAEAAAEBAAACAQA==" >
      %t: f32[1,4] = add( %x,%w )
      %y: f32[1,4] = relu(%t)   loc( "relu_1" )   return %y }"""
    assert print_graph(parse_graph(text)) == TINY


def test_elided_constants() -> None:
    g = parse_graph(TINY)
    text = print_graph(g, elide_constants=True)
    assert 'const %w: f32[4] = dense<...>' in text
    with pytest.raises(ParseError, match=r"^2:28: the data of constant %w was elided"):
        parse_graph(text)


# --- randomized round trips

_NAME_CHARS = "abcxyz_019./: -\"\\é\n\t"


def _rand_name(r: random.Random) -> str:
    return "".join(r.choice(_NAME_CHARS) for _ in range(r.randint(1, 6)))


def _rand_float(r: random.Random) -> float:
    return r.choice([
        0.0, -0.0, math.inf, -math.inf, math.nan, r.uniform(-1e3, 1e3), r.random() * 1e-310,
        struct.unpack("<d", struct.pack("<Q", r.getrandbits(64)))[0], float(r.randint(-9, 9)),
    ])


def _rand_attr(r: random.Random, depth: int = 0) -> Any:
    kind = r.randrange(6 if depth < 3 else 5)
    if kind == 0:
        return r.randint(-(2**65), 2**65)
    if kind == 1:
        return _rand_float(r)
    if kind == 2:
        return _rand_name(r)
    if kind == 3:
        return r.random() < 0.5
    if kind == 4:
        return r.randint(-3, 3)
    return tuple(_rand_attr(r, depth + 1) for _ in range(r.randint(0, 3)))


def _rand_type(r: random.Random) -> TensorType:
    shape = tuple(r.randint(0, 3) for _ in range(r.randint(0, 3)))
    layout = r.choice([None, None, "NCHW", "NHWC", "", "a b"])
    quant = None
    if r.random() < 0.3:
        n = r.randint(0, 2)
        quant = QuantParams(tuple(_rand_float(r) for _ in range(n)),
                            tuple(r.randint(-128, 255) for _ in range(n)),
                            r.choice([None, 0, -1]))
    return TensorType(shape, r.choice(sorted(DTYPES)), layout, quant)


def _rand_graph(r: random.Random, depth: int = 0) -> Graph:
    np_rng = np.random.default_rng(r.getrandbits(32))
    inputs = tuple(Value(_rand_name(r), _rand_type(r)) for _ in range(r.randint(0, 3)))
    consts = []
    for _ in range(r.randint(0, 2)):
        ty = _rand_type(r)
        if ty.dtype == "bool":
            data = np_rng.integers(0, 2, ty.shape).astype(bool)
        else:
            data = np.frombuffer(np_rng.bytes(ty.nbytes), ty.dtype).reshape(ty.shape)
        consts.append(Constant(Value(_rand_name(r), ty), data))
    names = [v.name for v in inputs] + [c.name for c in consts]
    ops = []
    for _ in range(r.randint(0, 4)):
        args = tuple(r.choice(names + [""]) for _ in range(r.randint(0, 3)) if names)
        outs = tuple(Value(_rand_name(r), _rand_type(r)) for _ in range(r.randint(0, 2)))
        attrs = Attrs.of({_rand_name(r): _rand_attr(r) for _ in range(r.randint(0, 3))})
        kind = r.choice(["relu", "add", "fused", _rand_name(r), "none", "graph", "const"])
        body = _rand_graph(r, depth + 1) if depth < 2 and r.random() < 0.3 else None
        ops.append(Op(kind, args, outs, attrs, r.choice(["", _rand_name(r)]), body))
        names += [v.name for v in outs]
    outputs = tuple(Value(r.choice(names), _rand_type(r)) for _ in range(r.randint(0, 2)) if names)
    return Graph(_rand_name(r), inputs, outputs, tuple(consts), tuple(ops))


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_round_trip(seed: int) -> None:
    assert_round_trip(_rand_graph(random.Random(seed)))


# --- errors


@pytest.mark.parametrize(("text", "message"), [
    ("", r"^1:1: expected 'graph', got end of input$"),
    ("graph tiny() -> () {}", r"^1:7: expected a graph name such as @main, got 'tiny'$"),
    ("graph @g(%x: f33[1]) -> () {}", r"^1:14: expected an element type \(f32, .*\), got 'f33'$"),
    ("graph @g(%x: f32[1,-2]) -> () {}", r"^1:20: expected a dimension, got '-2'$"),
    ("graph @g(%x f32[1]) -> () {}", r"^1:13: expected ':', got 'f32'$"),
    ("graph @g() -> () {\n  %y: f32[1] = relu(%x\n}",
     r"^3:1: expected '\)', got '}'$"),
    ("graph @g() -> () {\n  %y: f32[1] = relu(x)\n}",
     r"^2:21: expected an operand \(%name or none\), got 'x'$"),
    ("graph @g() -> () {\n  %y: f32[1] = relu() {a = }\n}",
     r"^2:28: expected an attribute value .*, got '}'$"),
    ("graph @g() -> () {\n  %y: f32[1] = relu() {a = 1, a = 2}\n}",
     r"^2:31: duplicate attribute 'a'$"),
    ("graph @g() -> () {\n  %y: f32[1] = relu() {a = nan(1.5)}\n}",
     r"^2:32: expected NaN bits such as 0x7ff8000000000001, got '1.5'$"),
    ("graph @g() -> () {\n  %y: f32[1] = relu(%x) loc(name)\n}",
     r"^2:29: expected the op name in quotes, got 'name'$"),
    ("graph @g() -> () {\n  %y: f32[1] = relu(%x)\n", r"^3:1: expected an op, 'const' or 'return', "
     r"got end of input$"),
    ("graph @g() -> (%y: f32[1]) {\n  return %z\n}",
     r"^2:3: return lists \(%z\) but graph @g declares outputs \(%y\)$"),
    ("graph @g() -> () {\n  return\n  const %w: f32[1] = dense<\"\">\n}",
     r"^3:3: expected '}' after return, got 'const'$"),
    ("graph @g() -> () {\n  return\n}\ngraph", r"^4:1: expected end of input after the graph, "
     r"got 'graph'$"),
    ('graph @g() -> () {\n  const %w: f32[2] = dense<"AACAPw==">\n  return\n}',
     r"^2:28: constant %w of type f32\[2\] needs 8 bytes, the data has 4$"),
    ('graph @g() -> () {\n  const %w: f32[1] = dense<"AA*CAPw==">\n  return\n}',
     r"^2:28: bad base64 data"),
    ("graph @g() -> () {\n  const %w: f32[1] = zeros\n  return\n}",
     r"^2:22: expected 'dense', got 'zeros'$"),
    ('graph @g() -> () {\n  %y: f32[1] = relu() loc("abc)\n}', r"^2:27: unterminated string$"),
    ('graph @g() -> () {\n  %y: f32[1] = relu() loc("a\\qb")\n}',
     r"^2:29: unknown escape '\\q' in string$"),
    ("graph @g() -> () {\n  %y: f32[1] = relu() ! \n}", r"^2:23: unexpected character '!'$"),
    ("graph @g(%x: i8[1] q<scale=[1.0],zp=[0.5]>) -> () {}", r"^1:38: expected a zero point, "
     r"got '0.5'$"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_graph(text)


def test_big_endian_constant_prints_little_endian_bytes() -> None:
    c = Constant(Value("b", t((3,))), np.arange(3, dtype=">f4"))
    g = Graph("be", (), (c.value,), (c,), ())
    parsed = parse_graph(print_graph(g))
    np.testing.assert_array_equal(parsed.constants[0].data, np.arange(3, dtype=np.float32))
    assert parsed.constants[0].data.dtype == np.float32
