"""Parser for the textual graph IR written by `nnc.ir.printer`: `print_graph(parse_graph(s)) == s`.

A tokenizer and a small recursive-descent parser. Errors say `line:col: expected ..., got ...`.
`//` starts a comment that runs to the end of the line.

>>> g = parse_graph('''
... graph @tiny(%x: f32[1,4]) -> (%y: f32[1,4]) {
...   %y: f32[1,4] = relu(%x) loc("relu_1")
...   return %y
... }''')
>>> [(op.kind, op.name) for op in g.ops]
[('relu', 'relu_1')]
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnc.ir.graph import Attrs, AttrValue, Constant, Graph, Op, Value
from nnc.ir.types import SHORT_DTYPE, QuantParams, TensorType


class ParseError(Exception):
    """Malformed graph-IR text; the message starts with `line:col:`."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # name (%x), sym (@x), str, num, ident, punct, eof
    text: str  # the decoded name/string for name, sym and str; the source text otherwise
    line: int
    col: int


_STRING = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
_TOKEN = re.compile(
    rf"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
    |(?P<name>%(?:[A-Za-z0-9_.]+|{_STRING}))
    # `@NHWCq<...>` (TensorType.__str__ puts no space before the quantization) splits off `q<`
    |(?P<sym>@(?:[A-Za-z0-9_]+?(?=q<)|[A-Za-z0-9_.]+|{_STRING}))
    |(?P<str>{_STRING})
    |(?P<num>-inf(?![A-Za-z0-9_])|-?0[xX][0-9a-fA-F]+|-?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<punct>->|\.\.\.|[()\[\]{{}}<>,:=])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]{1,6}\}|.)")


def _unescape(literal: str, line: int, col: int) -> str:
    def sub(m: re.Match[str]) -> str:
        e = m.group(1)
        if e.startswith("u{"):
            return chr(int(e[2:-1], 16))
        if e in _ESCAPES:
            return _ESCAPES[e]
        raise ParseError(f"{line}:{col + 1 + m.start()}: unknown escape '\\{e}' in string")

    if "\\" not in literal:
        return literal[1:-1]
    try:
        return _ESCAPE.sub(sub, literal[1:-1])
    except ValueError as err:  # chr() of a code point past U+10FFFF
        raise ParseError(f"{line}:{col}: bad escape in string: {err}") from None


def scan(text: str, pattern: re.Pattern[str], decode_strings: bool = True,
         quotes: str = "\"%@") -> list[Token]:
    """Tokens of `text` by `pattern` (named groups are the kinds; "ws" is dropped), ending with
    an "eof" token. %names and @symbols lose their sigil (and quotes, unescaped); strings are
    unescaped when `decode_strings`. Shared by the graph-IR and loop-IR parsers."""
    tokens = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = pattern.match(text, pos)
        col = pos - line_start + 1
        if m is None:
            ch = text[pos]
            what = "unterminated string" if ch in quotes else f"unexpected character {ch!r}"
            raise ParseError(f"{line}:{col}: {what}")
        kind = m.lastgroup
        assert kind is not None
        raw = m.group()
        if kind != "ws":
            value = raw
            if kind == "str" and decode_strings:
                value = _unescape(raw, line, col)
            elif kind in ("name", "sym"):
                body = raw[1:]
                value = _unescape(body, line, col + 1) if body.startswith('"') else body
            tokens.append(Token(kind, value, line, col))
        newlines = raw.count("\n")
        if newlines:
            line += newlines
            line_start = pos + raw.rindex("\n") + 1
        pos = m.end()
    tokens.append(Token("eof", "", line, len(text) - line_start + 1))
    return tokens


def tokenize(text: str) -> list[Token]:
    return scan(text, _TOKEN)


def _describe(tok: Token) -> str:
    if len(tok.text) > 40:  # e.g. megabytes of base64
        tok = Token(tok.kind, tok.text[:37] + "...", tok.line, tok.col)
    if tok.kind == "eof":
        return "end of input"
    if tok.kind == "name":
        return f"value %{tok.text}"
    if tok.kind == "sym":
        return f"@{tok.text}"
    if tok.kind == "str":
        return f"string {tok.text!r}"
    return repr(tok.text)


class TokenCursor:
    """A position in a token list and the helpers every hand-written parser here needs (the
    graph-IR parser below, `nnc.ir.loop_parser`). Tokens have `kind`, `text`, `line`, `col`;
    the last one has kind "eof". `describe(tok)` words a token for "expected X, got Y"."""

    def __init__(self, tokens: Sequence[Any]) -> None:
        self.tokens = tokens
        self.pos = 0

    def describe(self, tok: Any) -> str:
        return _describe(tok)

    def peek(self, ahead: int = 0) -> Any:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def next(self) -> Any:
        tok = self.tokens[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def error(self, expected: str, tok: Any = None) -> ParseError:
        tok = tok or self.peek()
        return ParseError(f"{tok.line}:{tok.col}: expected {expected}, got {self.describe(tok)}")

    def at(self, kind: str, text: str | None = None) -> bool:
        tok = self.peek()
        return bool(tok.kind == kind and (text is None or tok.text == text))

    def accept(self, kind: str, text: str) -> bool:
        if self.at(kind, text):
            self.pos += 1
            return True
        return False

    def expect(self, kind: str, text: str | None = None, what: str | None = None) -> Any:
        if not self.at(kind, text):
            raise self.error(what or (f"'{text}'" if text else kind))
        return self.next()

    def punct(self, p: str) -> Any:
        return self.expect("punct", p)

    def comma_list(self, close: str, item: Any) -> list[Any]:
        """`item (',' item)* close` or just `close`."""
        items = []
        if not self.accept("punct", close):
            items.append(item())
            while self.accept("punct", ","):
                items.append(item())
            self.punct(close)
        return items

    def int_lit(self, what: str, signed: bool = False) -> int:
        tok = self.expect("num", what=what)
        if not re.fullmatch(r"-?[0-9]+" if signed else r"[0-9]+", tok.text):
            raise self.error(what, tok)
        return int(tok.text)


class _Parser(TokenCursor):
    def __init__(self, text: str) -> None:
        super().__init__(tokenize(text))

    def comma_list_bare(self, item: Any) -> list[Any]:
        """`item (',' item)*`."""
        items = [item()]
        while self.accept("punct", ","):
            items.append(item())
        return items

    # --- types
    def float_lit(self) -> float:
        tok = self.peek()
        if tok.kind == "ident" and tok.text == "inf":
            self.next()
            return float("inf")
        if tok.kind == "ident" and tok.text == "nan":
            self.next()
            if not self.accept("punct", "("):
                return float("nan")
            bits = self.expect("num", what="NaN bits such as 0x7ff8000000000001")
            if not bits.text.lower().startswith("0x") or len(bits.text) > 18:
                raise self.error("NaN bits such as 0x7ff8000000000001", bits)
            self.punct(")")
            return float(struct.unpack("<d", struct.pack("<Q", int(bits.text, 16)))[0])
        if tok.kind == "num" and not tok.text.lower().startswith(("0x", "-0x")):
            self.next()
            return float(tok.text)
        raise self.error("a float")

    def quant(self) -> QuantParams:
        self.punct("<")
        self.expect("ident", "scale")
        self.punct("=")
        self.punct("[")
        scale = self.comma_list("]", self.float_lit)
        self.punct(",")
        self.expect("ident", "zp")
        self.punct("=")
        self.punct("[")
        zp = self.comma_list("]", lambda: self.int_lit("a zero point", signed=True))
        axis = None
        if self.accept("punct", ","):
            self.expect("ident", "axis")
            self.punct("=")
            axis = self.int_lit("an axis", signed=True)
        self.punct(">")
        return QuantParams(tuple(scale), tuple(zp), axis)

    def type_(self) -> TensorType:
        tok = self.expect("ident", what="a type such as f32[1,4]")
        if tok.text not in SHORT_DTYPE:
            raise self.error(f"an element type ({', '.join(SHORT_DTYPE)})", tok)
        self.punct("[")
        shape = self.comma_list("]", lambda: self.int_lit("a dimension"))
        layout = self.next().text if self.at("sym") else None
        quant = None
        if self.accept("ident", "q"):
            quant = self.quant()
        return TensorType(tuple(shape), SHORT_DTYPE[tok.text], layout, quant)

    def value(self) -> Value:
        name = self.expect("name", what="a value name such as %x").text
        self.punct(":")
        return Value(name, self.type_())

    # --- attributes
    def attr(self) -> AttrValue:
        tok = self.peek()
        if tok.kind == "str":
            return self.next().text
        if tok.kind == "ident" and tok.text in ("true", "false"):
            return self.next().text == "true"
        if self.accept("punct", "["):
            return tuple(self.comma_list("]", self.attr))
        if tok.kind == "num" and re.fullmatch(r"-?[0-9]+", tok.text):
            return int(self.next().text)
        if tok.kind == "num" and re.fullmatch(r"-?0[xX][0-9a-fA-F]+", tok.text):
            return int(self.next().text, 16)
        if tok.kind == "num" or (tok.kind == "ident" and tok.text in ("inf", "nan")):
            return self.float_lit()
        raise self.error("an attribute value (number, string, true/false or [...])")

    def attrs(self) -> Attrs:
        items: dict[str, AttrValue] = {}

        def item() -> None:
            tok = self.peek()
            if tok.kind not in ("ident", "str"):
                raise self.error("an attribute name")
            self.next()
            if tok.text in items:
                raise ParseError(f"{tok.line}:{tok.col}: duplicate attribute {tok.text!r}")
            self.punct("=")
            items[tok.text] = self.attr()

        self.comma_list("}", item)
        return Attrs.of(items)

    # --- statements and graphs
    def constant(self) -> Constant:
        value = self.value()
        self.punct("=")
        self.expect("ident", "dense", what="'dense'")
        self.punct("<")
        if self.at("punct", "..."):
            tok = self.peek()
            raise ParseError(
                f"{tok.line}:{tok.col}: the data of constant %{value.name} was elided "
                "(printed with elide_constants=True); such text cannot be parsed"
            )
        tok = self.expect("str", what="base64 constant data in quotes")
        self.punct(">")
        try:
            raw = base64.b64decode(tok.text, validate=True)
        except binascii.Error as e:
            raise ParseError(f"{tok.line}:{tok.col}: bad base64 data: {e}") from None
        t = value.type
        if len(raw) != t.nbytes:
            raise ParseError(
                f"{tok.line}:{tok.col}: constant %{value.name} of type {t} needs {t.nbytes} "
                f"bytes, the data has {len(raw)}"
            )
        little = np.dtype(t.dtype).newbyteorder("<")
        data = np.frombuffer(raw, dtype=little, count=t.size).reshape(t.shape).astype(t.dtype)
        data.setflags(write=False)
        return Constant(value, data)

    def operand_name(self) -> str:
        return self.expect("name", what="a value name such as %y").text

    def operand(self) -> str:
        if self.accept("ident", "none"):
            return ""
        return self.expect("name", what="an operand (%name or none)").text

    def op(self, outputs: list[Value]) -> Op:
        tok = self.peek()
        if tok.kind not in ("ident", "str"):
            raise self.error("an op kind")
        kind = self.next().text
        self.punct("(")
        inputs = self.comma_list(")", self.operand)
        attrs = self.attrs() if self.accept("punct", "{") else Attrs()
        name = ""
        if self.accept("ident", "loc"):
            self.punct("(")
            name = self.expect("str", what="the op name in quotes").text
            self.punct(")")
        body = self.graph() if self.at("ident", "graph") else None
        return Op(kind, tuple(inputs), tuple(outputs), attrs, name, body)

    def graph(self) -> Graph:
        self.expect("ident", "graph", what="'graph'")
        name = self.expect("sym", what="a graph name such as @main").text
        self.punct("(")
        inputs = self.comma_list(")", self.value)
        self.punct("->")
        self.punct("(")
        outputs = self.comma_list(")", self.value)
        self.punct("{")
        constants: list[Constant] = []
        ops: list[Op] = []
        while True:
            tok = self.peek()
            if tok.kind == "ident" and tok.text == "const":
                self.next()
                constants.append(self.constant())
            elif tok.kind == "ident" and tok.text == "return":
                self.next()
                returned = self.comma_list_bare(self.operand_name) if self.at("name") else []
                declared = [v.name for v in outputs]
                if returned != declared:
                    raise ParseError(
                        f"{tok.line}:{tok.col}: return lists {_names(returned)} but graph "
                        f"@{name} declares outputs {_names(declared)}"
                    )
                self.expect("punct", "}", what="'}' after return")
                return Graph(name, tuple(inputs), tuple(outputs), tuple(constants), tuple(ops))
            elif tok.kind == "name":
                results = self.comma_list_bare(self.value)
                self.punct("=")
                ops.append(self.op(results))
            elif tok.kind in ("ident", "str"):
                ops.append(self.op([]))  # an op without results
            else:
                raise self.error("an op, 'const' or 'return'")


def _names(names: list[str]) -> str:
    return "(" + ", ".join("%" + n for n in names) + ")"


def parse_graph(text: str) -> Graph:
    """Parse one graph; raises ParseError with line:column on malformed text."""
    p = _Parser(text)
    graph = p.graph()
    p.expect("eof", what="end of input after the graph")
    return graph
