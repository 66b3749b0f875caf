"""The graph verifier accepts well-formed graphs and names the op and value of every violation."""

from __future__ import annotations

import numpy as np
import pytest

import nnc.ir.verify as verify_mod
from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.ops import OpDef, get_op, same_as_input
from nnc.ir.parser import parse_graph
from nnc.ir.types import QuantParams, TensorType
from nnc.ir.verify import VerifyError, verify_graph

GOOD = """\
graph @tiny(%x: f32[1,4]) -> (%y: f32[1,4]) {
  const %w: f32[4] = dense<"AACAPwAAAEAAAEBAAACAQA==">
  %t: f32[1,4] = add(%x, %w) loc("add_1")
  %y: f32[1,4] = relu(%t) loc("relu_1")
  return %y
}
"""

FUSED = """\
graph @main(%x: f32[1,4]) -> (%y: f32[1,4]) {
  const %w: f32[4] = dense<"AACAPwAAAEAAAEBAAACAQA==">
  %y: f32[1,4] = fused(%x, %w) {ops = "add+relu"} loc("add_1")
    graph @add_1(%x: f32[1,4], %w: f32[4]) -> (%y: f32[1,4]) {
      %t: f32[1,4] = add(%x, %w) loc("add_1")
      %y: f32[1,4] = relu(%t) loc("relu_1")
      return %y
    }
  return %y
}
"""


def test_valid_graphs_pass() -> None:
    verify_graph(parse_graph(GOOD))
    verify_graph(parse_graph(FUSED))
    # layout and quantization annotations are not compared against the type rule
    verify_graph(parse_graph(GOOD.replace("%y: f32[1,4] = relu", "%y: f32[1,4]@NC = relu")))
    # a graph output may be an input or a constant
    verify_graph(parse_graph("graph @g(%x: f32[2]) -> (%x: f32[2]) {\n  return %x\n}"))


@pytest.mark.parametrize(("old", "new", "message"), [
    ("%t: f32[1,4] = add", "%x: f32[1,4] = add",
     r"^graph 'tiny': add 'add_1' \(op #0\): output %x redefines value %x$"),
    ('const %w: f32[4] = dense<"AACAPwAAAEAAAEBAAACAQA==">',
     'const %x: f32[4] = dense<"AACAPwAAAEAAAEBAAACAQA==">',
     r"^graph 'tiny': constant %x redefines value %x$"),
    ("add(%x, %w)", "add(%x, %q)",
     r"^graph 'tiny': add 'add_1' \(op #0\): input %q is not defined$"),
    ("add(%x, %w)", "add(%x, %y)",
     r"^graph 'tiny': add 'add_1' \(op #0\): input %y is used before it is defined$"),
    ("relu(%t)", "gelu_xyz(%t)",
     r"^graph 'tiny': gelu_xyz 'relu_1' \(op #1\): op kind 'gelu_xyz' is not registered$"),
    ("%t: f32[1,4] = add", "%t: f32[4,1] = add",
     r"^graph 'tiny': add 'add_1' \(op #0\): output %t is declared f32\[4,1\] but should be "
     r"f32\[1,4\]$"),
    ("%y: f32[1,4] = relu", "%y: f64[1,4] = relu",
     r"^graph 'tiny': relu 'relu_1' \(op #1\): output %y is declared f64\[1,4\] but should be "
     r"f32\[1,4\]$"),
    ("%y: f32[1,4] = relu", "%y: f32[1,4], %z: f32[1,4] = relu",
     r"^graph 'tiny': relu 'relu_1' \(op #1\): declares 2 outputs, expected 1$"),
    ("(%x: f32[1,4])", "(%x: f32[1,3])",
     r"^graph 'tiny': add 'add_1' \(op #0\): type rule failed: OpError: .*do not broadcast"),
    ("-> (%y: f32[1,4])", "-> (%y: f32[1,5])",
     r"^graph 'tiny': graph output %y is declared f32\[1,5\] but is defined as f32\[1,4\]$"),
])
def test_invalid_graph_messages(old: str, new: str, message: str) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(VerifyError, match=message):
        verify_graph(parse_graph(text))


def _tiny() -> Graph:
    return parse_graph(GOOD)


def test_undefined_graph_output() -> None:
    g = _tiny()
    g = g.replace(outputs=(Value("nope", TensorType((1,), "float32")),))
    with pytest.raises(VerifyError, match=r"^graph 'tiny': graph output %nope is not defined$"):
        verify_graph(g)


def test_empty_names_and_bad_attributes() -> None:
    g = _tiny()
    ops = (g.ops[0].with_(outputs=(Value("", TensorType((1, 4), "float32")),)),) + g.ops[1:]
    with pytest.raises(VerifyError, match=r"add 'add_1' \(op #0\): output % has an empty name"):
        verify_graph(g.replace(ops=ops))
    bad = Attrs((("alpha", [1, 2]),))  # type: ignore[arg-type]  # a list slipped past Attrs.of
    ops = (g.ops[0], g.ops[1].with_(attrs=bad))
    with pytest.raises(VerifyError, match=r"relu 'relu_1' \(op #1\): attribute 'alpha' has "
                                          r"unsupported value \[1, 2\]"):
        verify_graph(g.replace(ops=ops))


def test_constant_data_must_match_its_type() -> None:
    g = _tiny()
    c = g.constants[0]
    wrong = Constant(c.value, np.zeros(4, np.float64))
    with pytest.raises(VerifyError, match=r"constant %w: data is float64\[4\] but its type is "
                                          r"f32\[4\]"):
        verify_graph(g.replace(constants=(wrong,)))


def test_quantized_types_compare_shape_and_dtype() -> None:
    q = QuantParams((0.5,), (0,))
    t = TensorType((2,), "int8", "C", q)
    x = Value("x", t)
    y = Value("y", TensorType((2,), "int8"))
    verify_graph(Graph("q", (x,), (y,), (), (Op("relu", ("x",), (y,)),)))


# --- fused bodies


def test_fused_body_errors_name_the_inner_op() -> None:
    text = FUSED.replace("%t: f32[1,4] = add", "%t: f32[2,4] = add")
    with pytest.raises(VerifyError, match=r"^graph 'main': fused 'add_1' \(op #0\) body: add "
                                          r"'add_1' \(op #0\): output %t is declared f32\[2,4\]"):
        verify_graph(parse_graph(text))


def test_fused_body_inputs_must_match_outer_types() -> None:
    text = FUSED.replace("graph @add_1(%x: f32[1,4], %w: f32[4])", "graph @add_1(%x: f32[1,4], "
                         "%w: f32[1,4])")
    with pytest.raises(VerifyError, match=r"^graph 'main': fused 'add_1' \(op #0\): body input %w "
                                          r"is f32\[1,4\] but the op passes %w of type f32\[4\]$"):
        verify_graph(parse_graph(text))
    text = FUSED.replace("graph @add_1(%x: f32[1,4], %w: f32[4])", "graph @add_1(%x: f32[1,4])")
    with pytest.raises(VerifyError, match=r"fused 'add_1' \(op #0\): body has 1 inputs for the "
                                          r"op's 2$"):
        verify_graph(parse_graph(text))


def test_fused_outputs_must_match_body_outputs() -> None:
    text = FUSED.replace("%y: f32[1,4] = fused", "%y: i32[1,4] = fused")
    text = text.replace("-> (%y: f32[1,4]) {\n  const", "-> (%y: i32[1,4]) {\n  const")
    with pytest.raises(VerifyError, match=r"^graph 'main': fused 'add_1' \(op #0\): output %y is "
                                          r"declared i32\[1,4\] but should be f32\[1,4\]$"):
        verify_graph(parse_graph(text))


# --- static inputs must be constants (checked with a stand-in op definition)


def test_static_inputs_must_be_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    relu = get_op("relu")
    static = OpDef("take_static", infer=same_as_input, reference=relu.reference,
                   scalar=relu.scalar, static_inputs=(1,))
    monkeypatch.setattr(verify_mod, "get_op",
                        lambda kind: static if kind == "take_static" else get_op(kind))
    ok = GOOD.replace("add(%x, %w)", "take_static(%x, %w)")
    verify_graph(parse_graph(ok))
    bad = GOOD.replace("add(%x, %w)", "take_static(%w, %x)").replace(
        "%t: f32[1,4] = take", "%t: f32[4] = take").replace(
        "%y: f32[1,4] = relu", "%y: f32[4] = relu").replace("-> (%y: f32[1,4])", "-> (%y: f32[4])")
    with pytest.raises(VerifyError, match=r"take_static 'add_1' \(op #0\): input 1 \(%x\) must be "
                                          r"a constant$"):
        verify_graph(parse_graph(bad))
    # inside a fused body, an input bound to an outer constant counts as a constant
    fused = FUSED.replace("add(%x, %w)", "take_static(%x, %w)")
    verify_graph(parse_graph(fused))
    fused_bad = fused.replace("fused(%x, %w)", "fused(%x, %x)").replace(
        "graph @add_1(%x: f32[1,4], %w: f32[4])", "graph @add_1(%x: f32[1,4], %w: f32[1,4])")
    with pytest.raises(VerifyError, match=r"\(op #0\) body: take_static 'add_1' \(op #0\): "
                                          r"input 1 \(%w\) must be a constant$"):
        verify_graph(parse_graph(fused_bad))
