"""Textual form of the graph IR. `nnc.ir.parser.parse_graph` reads it back exactly.

>>> from nnc.ir.graph import Graph, Op, Value
>>> from nnc.ir.types import TensorType
>>> t = TensorType((1, 4), "float32")
>>> x, y = Value("x", t), Value("y", t)
>>> g = Graph("tiny", inputs=(x,), outputs=(y,), constants=(), ops=(Op("relu", ("x",), (y,)),))
>>> print(print_graph(g), end="")
graph @tiny(%x: f32[1,4]) -> (%y: f32[1,4]) {
  %y: f32[1,4] = relu(%x)
  return %y
}

Names that are not plain words are quoted (`%"conv1/W:0"`), absent inputs print as `none`, tuples
as `[1, 2]`, constant data as base64 of its little-endian bytes, and a fused op's body as a nested
`graph` on the lines after the op.
"""

from __future__ import annotations

import base64
import math
import re
import struct

import numpy as np

from nnc.ir.graph import Attrs, AttrValue, Constant, Graph, Op, Value
from nnc.ir.types import DTYPE_SHORT, QuantParams, TensorType

# Names matching this print bare after % and @; anything else is quoted.
BARE_NAME = re.compile(r"[A-Za-z0-9_.]+")
BARE_LAYOUT = re.compile(r"[A-Za-z0-9_]+")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words the parser gives a meaning to; op kinds and attribute keys spelled like these are quoted.
KEYWORDS = frozenset(
    {"graph", "const", "return", "none", "loc", "dense", "true", "false", "inf", "nan"}
)
CANONICAL_NAN_BITS = 0x7FF8000000000000

_PLAIN_ASCII = re.compile(r'[ !#-\[\]-~]*')  # printable ASCII but quote and backslash
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def format_string(s: str) -> str:
    """A double-quoted literal; non-printable characters become `\\u{hex}`."""
    if _PLAIN_ASCII.fullmatch(s):  # fast path, e.g. for megabytes of base64
        return f'"{s}"'
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{{{ord(ch):x}}}")
    return '"' + "".join(out) + '"'


def format_name(name: str) -> str:
    return name if BARE_NAME.fullmatch(name) else format_string(name)


def format_word(word: str) -> str:
    """Op kinds and attribute keys: bare identifiers unless they would read as a keyword."""
    return word if IDENT.fullmatch(word) and word not in KEYWORDS else format_string(word)


def format_float(x: float) -> str:
    """Exact: repr round-trips finite floats; NaNs other than the default one keep their bits."""
    x = float(x)
    if math.isnan(x):
        bits = struct.unpack("<Q", struct.pack("<d", x))[0]
        return "nan" if bits == CANONICAL_NAN_BITS else f"nan(0x{bits:016x})"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)


def format_attr(value: AttrValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return format_string(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    raise TypeError(f"unsupported attribute value {value!r}")


def format_attrs(attrs: Attrs) -> str:
    return "{" + ", ".join(f"{format_word(k)} = {format_attr(v)}" for k, v in attrs.items()) + "}"


def format_quant(q: QuantParams) -> str:
    scale = ",".join(format_float(s) for s in q.scale)
    zp = ",".join(str(int(z)) for z in q.zero_point)
    axis = "" if q.axis is None else f",axis={q.axis}"
    return f"q<scale=[{scale}],zp=[{zp}]{axis}>"


def format_type(t: TensorType) -> str:
    """Like `str(TensorType)`, with a space before the quantization and odd layouts quoted."""
    s = f"{DTYPE_SHORT[t.dtype]}[{','.join(str(d) for d in t.shape)}]"
    if t.layout is not None:
        s += "@" + (t.layout if BARE_LAYOUT.fullmatch(t.layout) else format_string(t.layout))
    if t.quant is not None:
        s += " " + format_quant(t.quant)
    return s


def format_value(v: Value) -> str:
    return f"%{format_name(v.name)}: {format_type(v.type)}"


def constant_bytes(c: Constant) -> bytes:
    """The raw little-endian bytes of a constant, checked against its declared type."""
    t = c.value.type
    data = np.asarray(c.data)
    # any byte order is fine: the bytes are written little-endian below
    if data.dtype.newbyteorder("=") != np.dtype(t.dtype) or tuple(data.shape) != t.shape:
        raise ValueError(
            f"constant %{c.name}: data is {data.dtype}{list(data.shape)} but its type is "
            f"{format_type(t)}"
        )
    return np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()


def _op_lines(op: Op, indent: str, elide: bool) -> list[str]:
    args = ", ".join("%" + format_name(n) if n else "none" for n in op.inputs)
    text = f"{format_word(op.kind)}({args})"
    if op.attrs:
        text += " " + format_attrs(op.attrs)
    if op.name:
        text += f" loc({format_string(op.name)})"
    if op.outputs:
        text = ", ".join(format_value(v) for v in op.outputs) + " = " + text
    lines = [indent + text]
    if op.body is not None:
        lines += _graph_lines(op.body, indent + "  ", elide)
    return lines


def _graph_lines(graph: Graph, indent: str, elide: bool) -> list[str]:
    ins = ", ".join(format_value(v) for v in graph.inputs)
    outs = ", ".join(format_value(v) for v in graph.outputs)
    lines = [f"{indent}graph @{format_name(graph.name)}({ins}) -> ({outs}) {{"]
    inner = indent + "  "
    for c in graph.constants:
        if elide:
            data = "..."
        else:
            data = format_string(base64.b64encode(constant_bytes(c)).decode("ascii"))
        lines.append(f"{inner}const {format_value(c.value)} = dense<{data}>")
    for op in graph.ops:
        lines += _op_lines(op, inner, elide)
    ret = ", ".join("%" + format_name(v.name) for v in graph.outputs)
    lines.append(f"{inner}return {ret}" if ret else f"{inner}return")
    lines.append(indent + "}")
    return lines


def print_graph(graph: Graph, elide_constants: bool = False) -> str:
    """The graph as text; `elide_constants` prints `dense<...>` (for dumps; not parseable)."""
    return "\n".join(_graph_lines(graph, "", elide_constants)) + "\n"
