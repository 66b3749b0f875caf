"""Parser for the textual loop IR written by `nnc.ir.loop_printer`:
`format_module(parse_module(s)) == s`.

A tokenizer and a small recursive-descent parser in the style of `nnc.ir.parser` (the graph IR's):
errors say `line:col: expected ..., got ...` and raise the same `ParseError`. The loop IR has no
comments: `//` in a kernel header introduces the graph op it came from (kind, name, MACs).

The printer does not print constant data (megabytes of weights in a dump). `parse_module` takes it
from `constants=` (buffer name -> array, e.g. the original module's `constants`), checked against
each constant buffer's shape and dtype; without it the module has no constant data: fine to print,
compare or tune from, but `verify_loop_module` then names the first constant buffer without data.

>>> m = parse_module('''
... loop_module @tiny arena=0 {
...   inputs %x "x"
...   outputs %y "y"
...   buffer %x: f32[4] input
...   buffer %y: f32[4] output
... kernel @k0_relu(%x, %y) // relu 'relu_1' macs=0 {
...   for %i0 in 0..4 vectorized {
...     %y[%i0] = max(%x[%i0], 0.0:f32)
...   }
... }
... }''')
>>> [(k.op_kind, k.op_name, k.body[0].kind) for k in m.kernels]
[('relu', 'relu_1', 'vectorized')]
"""

from __future__ import annotations

import ast
import dataclasses
import re
import struct
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from nnc.ir.loop_printer import binary_dtype, call_dtype
from nnc.ir.loops import (
    BINARY_OPS,
    INDEX,
    INTRINSICS,
    LOOP_KINDS,
    SCOPES,
    Binary,
    Buffer,
    Call,
    CallExtern,
    Cast,
    Const,
    Expr,
    For,
    If,
    Kernel,
    Load,
    LoopModule,
    ScheduleStep,
    Select,
    Stmt,
    Store,
    Var,
)
from nnc.ir.parser import ParseError, Token, TokenCursor, _unescape, scan
from nnc.ir.types import SHORT_DTYPE

__all__ = ["ParseError", "parse_kernel", "parse_module"]

_DQ_STRING = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
_SQ_STRING = r"'[^'\\\n]*(?:\\.[^'\\\n]*)*'"  # Python repr() of op names and schedule steps
_TOKEN = re.compile(
    rf"""
    (?P<ws>[ \t\r\n]+)
    |(?P<name>%(?:[A-Za-z0-9_.]+|{_DQ_STRING}))
    |(?P<sym>@(?:[A-Za-z0-9_.]+|{_DQ_STRING}))
    |(?P<hash>\#[0-9a-f]+)
    |(?P<str>{_DQ_STRING}|{_SQ_STRING})
    |(?P<num>-inf(?![A-Za-z0-9_])|0x[0-9a-f]+|-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<punct>->|\.\.|//|<<|>>|<=|>=|==|!=|&&|\|\||[()\[\]{{}}<>,:=+\-*/%^])
    """,
    re.VERBOSE,
)
_SYMBOL_OPS = {
    "+": "add", "-": "sub", "*": "mul", "/": "div", "%": "mod", "<": "lt", "<=": "le",
    ">": "gt", ">=": "ge", "==": "eq", "!=": "ne", "&&": "and", "||": "or", "^": "xor",
    "<<": "shl", ">>": "shr",
}
_STEPS: dict[str, type] = {t.__name__: t for t in typing.get_args(ScheduleStep)}


_Token = Token  # kind: name (%x), sym (@x), hash (#ab12), str, num, ident, punct, eof


def tokenize(text: str) -> list[_Token]:
    # strings stay as written: double-quoted ones are unescaped where they are read, single-
    # quoted ones (Python repr of op names and schedule steps) are read back with ast
    return scan(text, _TOKEN, decode_strings=False, quotes="\"'%@")


def _describe(tok: _Token) -> str:
    text = tok.text if len(tok.text) <= 40 else tok.text[:37] + "..."
    if tok.kind == "eof":
        return "end of input"
    if tok.kind == "name":
        return f"%{text}"
    if tok.kind == "sym":
        return f"@{text}"
    if tok.kind == "str":
        return f"string {text}"
    return repr(text)


class _Parser(TokenCursor):
    def __init__(self, text: str, buffers: Mapping[str, Buffer]) -> None:
        super().__init__(tokenize(text))
        self.globals = dict(buffers)  # module buffers, by name
        self.scope: dict[str, Buffer] = {}  # what the kernel being parsed may name

    def describe(self, tok: Any) -> str:
        return _describe(tok)

    def fail(self, tok: _Token, message: str) -> ParseError:
        return ParseError(f"{tok.line}:{tok.col}: {message}")

    def word(self, w: str) -> _Token:
        return self.expect("ident", w, what=f"'{w}'")

    def name(self, what: str) -> str:
        return self.expect("name", what=what).text

    def dq_string(self, what: str) -> str:
        tok = self.expect("str", what=what)
        if not tok.text.startswith('"'):
            raise self.error(what, tok)
        return _unescape(tok.text, tok.line, tok.col)

    def py_string(self, what: str) -> str:
        """A string as Python's repr() writes it (op names, schedule steps)."""
        tok = self.expect("str", what=what)
        try:
            value = ast.literal_eval(tok.text)
        except (SyntaxError, ValueError) as e:
            raise self.fail(tok, f"bad string literal: {e}") from None
        assert isinstance(value, str)
        return value

    def dtype(self) -> str:
        tok = self.expect("ident", what="an element type such as f32")
        if tok.text not in SHORT_DTYPE:
            raise self.error(f"an element type ({', '.join(SHORT_DTYPE)})", tok)
        return SHORT_DTYPE[tok.text]

    # --- expressions
    def number(self, tok: _Token) -> int | float | bool:
        """The value of a constant's literal; its Python type follows the text (`0` is an int,
        `0.0` a float), so constants round-trip whatever their dtype."""
        if tok.kind == "ident":
            if tok.text in ("true", "false"):
                return tok.text == "true"
            if tok.text == "inf":
                return float("inf")
            if tok.text == "nan":
                if not self.accept("punct", "("):
                    return float("nan")
                bits = self.expect("num", what="NaN bits such as 0x7ff8000000000001")
                if not re.fullmatch(r"0x[0-9a-f]{16}", bits.text):
                    raise self.error("NaN bits such as 0x7ff8000000000001", bits)
                self.punct(")")
                return float(struct.unpack("<d", struct.pack("<Q", int(bits.text, 16)))[0])
        if re.fullmatch(r"-?[0-9]+", tok.text):
            return int(tok.text)
        return float(tok.text)

    def const(self) -> Const:
        tok = self.next()
        value = self.number(tok)
        self.expect("punct", ":", what=f"':' and the type of constant {tok.text}")
        return Const(value, self.dtype())

    def typed_suffix(self) -> str | None:
        """An explicit result type `<i32>` after a call's or binary op's name."""
        if not self.accept("punct", "<"):
            return None
        dtype = self.dtype()
        self.punct(">")
        return dtype

    def args(self, fn: str, n: int | None = None) -> list[Expr]:
        start = self.punct("(")
        args = self.comma_list(")", self.expr)
        if n is not None and len(args) != n:
            raise self.fail(start, f"{fn} takes {n} operands, got {len(args)}")
        return args

    def load_dtype(self, tok: _Token) -> str:
        b = self.scope.get(tok.text)
        if b is None:
            raise self.fail(tok, f"unknown buffer %{tok.text} (not a parameter or local of the "
                            "kernel)")
        return b.dtype

    def expr(self) -> Expr:
        tok = self.peek()
        if tok.kind == "num" or (tok.kind == "ident" and tok.text in ("true", "false", "inf",
                                                                         "nan")):
            return self.const()
        if tok.kind == "name":
            self.next()
            if self.accept("punct", "["):
                indices = self.comma_list("]", self.expr)
                return Load(tok.text, tuple(indices), self.load_dtype(tok))
            if self.accept("punct", ":"):
                return Var(tok.text, self.dtype())
            return Var(tok.text, INDEX)
        if self.accept("punct", "("):
            a = self.expr()
            op_tok = self.peek()
            if op_tok.kind != "punct" or op_tok.text not in _SYMBOL_OPS:
                raise self.error("a binary operator (+, -, *, <, &&, ...)")
            self.next()
            b = self.expr()
            self.punct(")")
            op = _SYMBOL_OPS[op_tok.text]
            return self.binary(op, a, b, binary_dtype(op, a), op_tok)
        if tok.kind == "ident":
            self.next()
            fn = tok.text
            if fn == "cast":
                self.punct("<")
                dtype = self.dtype()
                self.punct(">")
                (value,) = self.args("cast", 1)
                return Cast(value, dtype)
            if fn == "select":
                cond, a, b = self.args("select", 3)
                if a.dtype != b.dtype:
                    raise self.fail(tok, f"select branches differ in type ({a.dtype} vs "
                                    f"{b.dtype})")
                return Select(cond, a, b, a.dtype)
            if fn in BINARY_OPS:
                result = self.typed_suffix()
                a, b = self.args(fn, 2)
                return self.binary(fn, a, b, result or binary_dtype(fn, a), tok)
            if fn in INTRINSICS:
                result = self.typed_suffix()
                args = tuple(self.args(fn))
                if not args and result is None:
                    raise self.fail(tok, f"{fn}() without operands needs its type: {fn}<f32>()")
                return Call(fn, args, result or call_dtype(fn, args))
            raise self.fail(tok, f"unknown function {fn!r} (expected an intrinsic such as exp, "
                            "a binary op such as max, cast<..> or select)")
        raise self.error("an expression")

    def binary(self, op: str, a: Expr, b: Expr, dtype: str, tok: _Token) -> Binary:
        if a.dtype != b.dtype:
            raise self.fail(tok, f"operands of {op} differ in type ({a.dtype} vs {b.dtype})")
        return Binary(op, a, b, dtype)

    # --- statements
    def block(self) -> tuple[Stmt, ...]:
        self.punct("{")
        body = []
        while not self.accept("punct", "}"):
            body.append(self.stmt())
        return tuple(body)

    def stmt(self) -> Stmt:
        tok = self.peek()
        if tok.kind == "ident" and tok.text == "for":
            self.next()
            var = self.name("a loop variable such as %i0")
            self.word("in")
            start = self.peek()
            if self.int_lit("the loop start 0") != 0:
                raise self.fail(start, "loops start at 0")
            self.punct("..")
            extent = self.int_lit("the loop extent")
            kind = self.expect("ident", what=f"a loop kind ({', '.join(LOOP_KINDS)})")
            if kind.text not in LOOP_KINDS:
                raise self.error(f"a loop kind ({', '.join(LOOP_KINDS)})", kind)
            return For(var, extent, self.block(), kind.text)
        if tok.kind == "ident" and tok.text == "if":
            self.next()
            cond = self.expr()
            then = self.block()
            orelse = self.block() if self.accept("ident", "else") else ()
            return If(cond, then, orelse)
        if tok.kind == "ident" and tok.text == "call":
            self.next()
            fn = self.expect("sym", what="an external function such as @arm_convolve_s8").text
            self.punct("(")
            return CallExtern(fn, tuple(self.comma_list(")", self.extern_arg)))
        if tok.kind == "name":
            self.next()
            if tok.text not in self.scope:
                self.load_dtype(tok)  # raises: unknown buffer
            self.punct("[")
            indices = self.comma_list("]", self.expr)
            self.punct("=")
            return Store(tok.text, tuple(indices), self.expr())
        raise self.error("a statement (for, if, call or a store %buf[...] = ...)")

    def extern_arg(self) -> Expr | str:
        """A buffer (bare name, `_` for none, or a quoted name) or a scalar expression."""
        tok, after = self.peek(), self.peek(1)
        if tok.kind == "ident" and not (after.kind == "punct" and after.text in ("(", "<", ":")):
            self.next()
            name = "" if tok.text == "_" else tok.text
        elif tok.kind == "str":
            name = self.dq_string("a buffer name")
        else:
            return self.expr()
        if name and name not in self.scope:
            raise self.fail(tok, f"call names unknown buffer {name!r}")
        return name

    # --- buffers, schedules, kernels, modules
    def buffer(self) -> Buffer:
        name = self.name("a buffer name such as %x")
        self.punct(":")
        dtype = self.dtype()
        self.punct("[")
        shape = self.comma_list("]", lambda: self.int_lit("a dimension"))
        scope = self.expect("ident", what=f"a buffer scope ({', '.join(SCOPES)})")
        if scope.text not in SCOPES:
            raise self.error(f"a buffer scope ({', '.join(SCOPES)})", scope)
        offset: int | None = None
        alias: str | None = None
        if self.accept("ident", "offset"):
            self.punct("=")
            offset = self.int_lit("a byte offset")
        if self.accept("ident", "alias"):
            self.punct("=")
            alias = self.name("the aliased buffer such as %x")
        return Buffer(name, tuple(shape), dtype, scope.text, offset, alias)

    def step_value(self) -> Any:
        tok = self.peek()
        if tok.kind == "str":
            return self.py_string("a string")
        if tok.kind == "num":
            return self.int_lit("an integer", signed=True)
        if tok.kind == "ident" and tok.text in ("True", "False", "None"):
            self.next()
            return {"True": True, "False": False, "None": None}[tok.text]
        if self.accept("punct", "("):
            items = []
            while not self.accept("punct", ")"):
                items.append(self.step_value())
                if not self.accept("punct", ","):
                    self.punct(")")
                    break
            return tuple(items)
        raise self.error("a step argument ('name', integer or tuple)")

    def step(self) -> ScheduleStep:
        tok = self.expect("ident", what="a schedule step such as Split(loop='i0', factor=4)")
        cls = _STEPS.get(tok.text)
        if cls is None:
            raise self.fail(tok, f"unknown schedule step {tok.text!r} (known: "
                            f"{', '.join(_STEPS)})")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}

        def item() -> None:
            key = self.expect("ident", what=f"a field of {tok.text}")
            if key.text not in fields or key.text in kwargs:
                raise self.fail(key, f"{tok.text} has no field {key.text!r} (fields: "
                                f"{', '.join(sorted(fields))})")
            self.punct("=")
            kwargs[key.text] = self.step_value()

        self.punct("(")
        self.comma_list(")", item)
        missing = fields - set(kwargs)
        if missing:
            raise self.fail(tok, f"{tok.text} lacks {', '.join(sorted(missing))}")
        step: ScheduleStep = cls(**kwargs)
        return step

    def kernel(self) -> Kernel:
        self.word("kernel")
        name = self.expect("sym", what="a kernel name such as @k0_relu").text
        self.punct("(")
        params = self.comma_list(")", lambda: self.param())
        op_kind, op_name, macs = "", "", 0
        if self.accept("punct", "//"):
            op_kind = self.op_kind()
            op_name = self.py_string("the op name in quotes")
            self.word("macs")
            self.punct("=")
            macs = self.int_lit("a MAC count")
        self.punct("{")
        self.scope = {p: self.globals[p] for p in params}
        workload = ""
        if self.accept("ident", "workload"):
            digest = self.expect("hash", what="the workload hash such as #1a2b3c4d5e6f")
            workload = self.dq_string("the workload key in quotes")
            k = Kernel("", (), (), (), workload=workload)
            if digest.text[1:] != k.workload_hash:
                raise self.fail(digest, f"workload hash {digest.text} does not match its key "
                                f"(#{k.workload_hash})")
        compute = self.compute() if self.at("ident", "compute") else None
        locals_: list[Buffer] = []
        while self.at("ident", "local"):
            self.next()
            tok = self.peek()
            b = self.buffer()
            if b.name in self.scope:
                raise self.fail(tok, f"local %{b.name} shadows a parameter or another local")
            self.scope[b.name] = b
            locals_.append(b)
        schedule: tuple[ScheduleStep, ...] = ()
        if self.accept("ident", "schedule"):
            self.punct("[")
            schedule = tuple(self.comma_list("]", self.step))
        inplace: list[tuple[str, str]] = []
        if self.accept("ident", "inplace"):
            def pair() -> tuple[str, str]:
                a = self.name("an input buffer such as %x")
                self.punct("->")
                return a, self.name("an output buffer such as %y")

            inplace.append(pair())
            while self.accept("punct", ","):
                inplace.append(pair())
        body = []
        while not self.accept("punct", "}"):
            body.append(self.stmt())
        return Kernel(name, tuple(params), tuple(locals_), tuple(body), op_kind, op_name, macs,
                      schedule, tuple(inplace), workload, compute)

    def compute(self) -> Any:
        """A `compute` block (`format_compute`): the kernel's `nnc.ir.compute.Reduction`."""
        from nnc.ir.compute import COMBINES, Axis, Reduction, Window

        start = self.word("compute")
        kind = self.dq_string("the definition's kind in quotes")
        self.word("acc")
        self.punct("=")
        acc = self.dtype()
        self.word("combine")
        self.punct("=")
        combine = self.expect("ident", what="a combine (add, mul, max or min)")
        if combine.text not in COMBINES:
            raise self.error("a combine (add, mul, max or min)", combine)
        reassociate = bool(self.accept("ident", "reassociate"))
        self.punct("{")
        axes: list[Axis] = []
        while self.accept("ident", "axis"):
            ax = self.name("an axis name such as %oc")
            extent = self.int_lit("the axis extent")
            axes.append(Axis(ax, extent, bool(self.accept("ident", "reduce"))))
        windows: list[Window] = []
        while self.accept("ident", "window"):
            out, tap = self.name("an output axis"), self.name("a tap axis")
            vals = {}
            for key in ("stride", "dilation", "pad", "size"):
                self.word(key)
                self.punct("=")
                vals[key] = self.int_lit(f"the window's {key}", signed=True)
            low = bool(self.accept("ident", "low"))
            high = bool(self.accept("ident", "high"))
            windows.append(Window(out, tap, vals["stride"], vals["dilation"], vals["pad"],
                                  vals["size"], low, high))
        operands: list[tuple[str, str]] = []
        while self.accept("ident", "operand"):
            role = self.dq_string("the operand's role in quotes")
            operands.append((role, self.name("the operand's buffer")))
        outer = self.scope
        self.scope = dict(outer)
        if self.accept("ident", "reads"):
            def read() -> None:
                n = self.name("a buffer the definition reads, such as %w")
                self.punct(":")
                self.scope[n] = Buffer(n, (), self.dtype(), "constant")

            read()
            while self.accept("punct", ","):
                read()
        self.word("init")
        init = self.expr()
        self.word("term")
        term = self.expr()
        outside = self.expr() if self.accept("ident", "outside") else None
        out_tok = self.peek()
        out = self.name("the output store such as %y[...] = ...")
        if out not in self.scope:
            raise self.fail(out_tok, f"the definition stores to unknown buffer %{out}")
        self.punct("[")
        index = self.comma_list("]", self.expr)
        self.punct("=")
        finish = self.expr()
        self.punct("}")
        self.scope = outer
        if not axes:
            raise self.fail(start, "a compute block needs at least one axis")
        return Reduction(kind, tuple(axes), acc, init, term, out, tuple(index), finish,
                         combine.text, tuple(windows), outside, reassociate, tuple(operands))

    def param(self) -> str:
        tok = self.peek()
        name = self.name("a parameter such as %x")
        if name not in self.globals:
            raise self.fail(tok, f"parameter %{name} is not a module buffer")
        return name

    def op_kind(self) -> str:
        """`conv+relu` (bare words joined by `+`), a quoted string, or nothing before the name."""
        if self.at("str") and self.peek(1).kind == "str":
            return self.py_string("the op kind in quotes")
        parts: list[str] = []
        if self.at("ident"):
            parts.append(self.next().text)
            while self.accept("punct", "+"):
                parts.append(self.expect("ident", what="an op kind after '+'").text)
        return "+".join(parts)

    def io(self, word: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if not self.accept("ident", word):
            return (), ()
        items: list[tuple[_Token, str | None]] = []
        first = True
        while first or self.accept("punct", ","):
            first = False
            tok = self.peek()
            self.name(f"a module {word[:-1]} such as %x")
            items.append((tok, self.dq_string("a name in quotes") if self.at("str") else None))
        names = [n for _, n in items if n is not None]
        if names and len(names) != len(items):
            tok = next(t for t, n in items if n is None)
            raise self.fail(tok, f"{word[:-1]} %{tok.text} has no user-facing name (give every "
                            f"{word[:-1]} one, or none)")
        return tuple(t.text for t, _ in items), tuple(names)

    def module(self, constants: Mapping[str, np.ndarray] | None) -> LoopModule:
        self.word("loop_module")
        name = self.expect("sym", what="a module name such as @model").text
        self.word("arena")
        self.punct("=")
        arena = self.int_lit("the arena size in bytes")
        self.punct("{")
        io_tok = self.peek()
        inputs, input_names = self.io("inputs")
        outputs, output_names = self.io("outputs")
        buffers: list[Buffer] = []
        data: dict[str, np.ndarray] = {}
        while self.accept("ident", "buffer"):
            tok = self.peek()
            b = self.buffer()
            if b.name in self.globals:
                raise self.fail(tok, f"buffer %{b.name} declared twice")
            if b.alias is not None and b.alias not in self.globals:
                raise self.fail(tok, f"buffer %{b.name} aliases %{b.alias}, which is not "
                                "declared before it")
            if constants is not None and b.scope == "constant" and b.alias is None:
                data[b.name] = self.constant_data(b, constants, tok)
            self.globals[b.name] = b
            buffers.append(b)
        for n in inputs + outputs:
            if n not in self.globals:
                raise self.fail(io_tok, f"module input/output %{n} is not a declared buffer")
        kernels = []
        while self.at("ident", "kernel"):
            kernels.append(self.kernel())
        self.expect("punct", "}", what="'kernel' or '}' closing the module")
        return LoopModule(name, tuple(buffers), tuple(kernels), inputs, outputs, data, arena,
                          input_names, output_names)

    def constant_data(self, b: Buffer, constants: Mapping[str, np.ndarray],
                      tok: _Token) -> np.ndarray:
        if b.name not in constants:
            raise self.fail(tok, f"constant buffer %{b.name} has no data in constants=")
        array = np.asarray(constants[b.name])
        if tuple(array.shape) != b.shape or array.dtype != np.dtype(b.dtype):
            raise self.fail(tok, f"constant buffer %{b.name} is {b}, its data is "
                            f"{array.dtype}{list(array.shape)}")
        return constants[b.name]


def parse_module(text: str, constants: Mapping[str, np.ndarray] | None = None) -> LoopModule:
    """Parse one loop module; raises ParseError with line:column on malformed text.

    `constants` supplies the data of the constant buffers (the printer leaves it out); without it
    the module has none (see the module docstring)."""
    p = _Parser(text, {})
    module = p.module(constants)
    p.expect("eof", what="end of input after the module")
    return module


def parse_kernel(text: str, buffers: Mapping[str, Buffer] | Iterable[Buffer]) -> Kernel:
    """Parse one kernel (`format_kernel`'s text); `buffers` are the module buffers it may name
    (by name, or an iterable such as `LoopModule.buffers`)."""
    if not isinstance(buffers, Mapping):
        buffers = {b.name: b for b in buffers}
    p = _Parser(text, buffers)
    kernel = p.kernel()
    p.expect("eof", what="end of input after the kernel")
    return kernel



def parse_schedule(text: str) -> tuple[ScheduleStep, ...]:
    """Parse a schedule as a kernel prints it, `[Split(loop='oc', factor=4), ...]` (the text
    `str(list(steps))` gives); the tuning cache stores schedules this way."""
    p = _Parser(text, {})
    p.punct("[")
    steps = tuple(p.comma_list("]", p.step))
    p.expect("eof", what="end of input after the schedule")
    return steps
