"""Loop IR -> TVMScript (Apache TVM's `tirx` dialect): one private PrimFunc per kernel and an entry
`main` that calls them over one workspace holding nnc's memory plan.

    >>> prog = emit_tvm(module)                       # doctest: +SKIP
    >>> prog.script                                   # "@I.ir_module\\nclass Module: ..."

The entry function's arguments are the model inputs, the model outputs, the workspace (uint8: the
arena at the planner's offsets, then the kernels' locals) and the weights (uint8, weights.bin:
each constant 64-byte aligned). Every tensor is a typed view (`T.decl_buffer`) at a fixed offset
into one of those; a kernel gets its params as pointers. Emitting needs no TVM; parsing the text
(`backends/tvm/build.py`) does.

Semantics are the C backend's (backends/c/emit.py), rendered in TIR:
- `Select` is `T.if_then_else`: only the chosen side is evaluated (guarded loads stay guarded).
- TVM's LLVM code generator marks signed (and unsigned) 32/64-bit arithmetic no-wrap, so int32
  and uint32 add/sub/mul/neg are done in int64 and truncated back: they wrap like numpy (int8
  accumulation); LLVM narrows the pattern back to one 32-bit operation. 8/16-bit math wraps.
- integer div/mod truncate toward zero; a zero divisor gives 0, x / -1 wraps.
- float min/max propagate NaN (a NaN test on the bits: TIR folds `x != x` to false); `round` is
  round-half-to-even (nearbyint).
- `requantize` is TFLite's MultiplyByQuantizedMultiplier (nnc.ir.fixed_point) in 64-bit TIR.
- bool is stored as uint8 0/1; float16 is stored as half and computed in float32.
Repeated operands (min/max, div, requantize) are bound once with `T.Let`, whose variables are
declared in `Program.lets` (the script's free names, passed to the parser).
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from nnc.backends.c.emit import WEIGHTS_ALIGN, EmitError, ModuleEmitter, flat_index
from nnc.ir.loops import (
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
    Select,
    Stmt,
    Store,
    Var,
    walk_expr,
    walk_stmts,
)
from nnc.ir.types import itemsize

LOCALS_ALIGN = 64
_FLOATS = frozenset({"float16", "float32", "float64"})
_INTS = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})
_UNSIGNED = frozenset({"uint8", "uint16", "uint32", "uint64"})
_WIDEN = frozenset({"int32", "uint32"})  # wrap-around through int64 (see the module docstring)
_LOOP_KINDS = {"serial": "T.serial", "vectorized": "T.vectorized", "unrolled": "T.unroll",
               # a parallel loop runs serially, as in the C backend (one thread)
               "parallel": "T.serial"}
SHARE_LIMIT = 16  # expression nodes repeated rather than bound by a Let
UNROLL_LIMIT = 64  # longer unrolled loops stay loops (the C backend caps NNC_UNROLL at 64 too)
# float intrinsics with a TIR op of the same meaning
_MATH = {"exp": "T.exp", "log": "T.log", "sqrt": "T.sqrt", "tanh": "T.tanh", "erf": "T.erf",
         "floor": "T.floor", "ceil": "T.ceil", "round": "T.nearbyint", "abs": "T.fabs",
         "sin": "T.sin", "cos": "T.cos", "tan": "T.tan", "asin": "T.asin", "acos": "T.acos",
         "atan": "T.atan", "sinh": "T.sinh", "cosh": "T.cosh", "asinh": "T.asinh",
         "acosh": "T.acosh", "atanh": "T.atanh", "log1p": "T.log1p"}
# ... and those TIR lacks: a libm call (float32 takes the f suffix)
_LIBM_ONLY = {"expm1": "expm1"}


def storage(dtype: str) -> str:
    return "uint8" if dtype == "bool" else dtype


def compute(dtype: str) -> str:
    return "float32" if dtype == "float16" else dtype


def literal(value: float | int | bool, dtype: str) -> str:
    """A TVMScript constant of `dtype` (in its compute type)."""
    if dtype == "bool":
        return "T.bool(True)" if value else "T.bool(False)"
    dt = compute(dtype)
    if dt in _FLOATS:
        v = float(np.float32(np.float16(value))) if dtype == "float16" else float(value)
        if dt == "float32":
            v = float(np.float32(v))
        if math.isnan(v):
            return f'T.{dt}(float("nan"))'
        if math.isinf(v):
            return f'T.{dt}(float("{"inf" if v > 0 else "-inf"}"))'
        if abs(v) > float(np.finfo(np.float32).max):
            # T.float64(x) makes x a float32 literal first: the node itself, from tvm.tirx
            return f'tirx.FloatImm("{dt}", {v!r})'
        return f"T.{dt}({v!r})"
    v = int(value)
    if dt == "uint64" and v >= 1 << 63:  # an IntImm holds int64: reinterpret the bits
        return f'T.reinterpret("uint64", T.int64({v - (1 << 64)}))'
    return f"T.{dt}({v})"


@dataclass
class Program:
    """The emitted module: TVMScript text, its Let variables (name -> dtype), the weights blob,
    the entry function's workspace size and the offset of each constant in the blob."""

    script: str
    lets: dict[str, str]
    weights: bytes
    workspace_bytes: int
    arena_bytes: int
    kernels: int
    constant_offsets: dict[str, int] = field(default_factory=dict)


class _Names:
    """IR names -> unique Python identifiers with a prefix per kind."""

    def __init__(self) -> None:
        self.used: set[str] = {"T", "I", "Module", "main"}

    def fresh(self, prefix: str, name: str) -> str:
        base = prefix + (re.sub(r"[^0-9A-Za-z_]", "_", name) or "v")
        out, n = base, 0
        while out in self.used or keyword.iskeyword(out):
            n += 1
            out = f"{base}_{n}"
        self.used.add(out)
        return out


class KernelEmitter:
    """One kernel's TVMScript lines; the expression methods return text in the compute type."""

    def __init__(self, names: _Names, lets: dict[str, str],
                 constants: Mapping[str, np.ndarray]) -> None:
        self.names = names
        self.constants = constants  # constant data by (root) buffer name
        self.lets = lets
        self.buffers: dict[str, Buffer] = {}
        self.bufnames: dict[str, str] = {}
        self.vars: dict[str, str] = {}
        self.hoisted: list[str] = []  # T.bind lines for the statement being emitted
        self.binds = 0  # T.bind lines emitted so far (a vectorized body must have none)
        self.in_branch = 0  # > 0 while emitting a Select's branches (evaluated lazily)

    # ---- Let bindings

    def bind(self, text: str, dtype: str) -> str:
        name = self.names.fresh("t", str(len(self.lets)))
        self.lets[name] = dtype
        return name

    def let(self, values: Sequence[tuple[str, str]], body: str) -> str:
        """`body` with each (name, value) bound; `T.Let` keeps the value evaluated once."""
        for name, value in reversed(values):
            body = f"T.Let({body}, where={{{name}: {value}}})"
        return body

    def shared(self, e: Expr) -> tuple[str, list[tuple[str, str]]]:
        """Text of `e` to use more than once: small expressions repeated (LLVM shares them),
        larger ones computed once (nested min/max or requantize would grow exponentially):
        by a statement-level `T.bind` before the statement where `e` is always evaluated,
        else (inside a Select's branch) by a `T.Let` around the use."""
        text = self.expr(e)
        if sum(1 for _ in walk_expr(e)) <= SHARE_LIMIT:
            return text, []
        return self.share_text(text, compute(e.dtype))

    def share_text(self, text: str, dtype: str) -> tuple[str, list[tuple[str, str]]]:
        """A name for `text`, computed once (see `shared`), and the Lets to wrap the use in."""
        if self.in_branch == 0:
            name = self.names.fresh("t", str(len(self.hoisted)))
            self.hoisted.append(f"{name} = T.bind({text})")
            return name, []
        name = self.bind(text, dtype)
        return name, [(name, text)]

    def with_hoisted(self, lines: list[str], pad: str) -> list[str]:
        """`lines` (one statement) preceded by the bindings its expressions asked for."""
        out = [pad + h for h in self.hoisted] + lines
        self.binds += len(self.hoisted)
        self.hoisted = []
        return out

    # ---- expressions

    def expr(self, e: Expr) -> str:
        method = getattr(self, "expr_" + type(e).__name__.lower(), None)
        if method is None:
            raise EmitError(f"cannot emit expression {e!r} for TVM")
        return str(method(e))

    def expr_const(self, e: Const) -> str:
        return literal(e.value, e.dtype)

    def expr_var(self, e: Var) -> str:
        try:
            return self.vars[e.name]
        except KeyError:
            raise EmitError(f"variable %{e.name} used outside of its loop") from None

    def element(self, name: str, indices: Sequence[Expr]) -> str:
        buf = self.buffers.get(name)
        if buf is None:
            raise EmitError(f"buffer {name!r} is neither a param nor a local of the kernel")
        if len(indices) != len(buf.shape):
            raise EmitError(f"buffer {name!r} has rank {len(buf.shape)} but is indexed with "
                            f"{len(indices)} indices")
        return f"{self.bufnames[name]}[{self.expr(flat_index(indices, buf.shape))}]"

    def expr_load(self, e: Load) -> str:
        text = self.element(e.buffer, e.indices)
        dt = self.buffers[e.buffer].dtype
        if dt == "bool":
            return f"({text} != T.uint8(0))"
        if dt == "float16":
            return f'T.Cast("float32", {text})'
        return text

    def wrapped(self, op: str, a: str, b: str, dt: str) -> str:
        """a op b (add, sub, mul) wrapping like numpy."""
        if dt in _WIDEN:
            return f'T.Cast("{dt}", T.Cast("int64", {a}) {op} T.Cast("int64", {b}))'
        if dt in ("int8", "int16", "uint8", "uint16", "int64", "uint64") or dt in _FLOATS:
            return f"({a} {op} {b})"
        raise EmitError(f"arithmetic on {dt} for TVM")

    def expr_binary(self, e: Binary) -> str:
        dt, op = e.a.dtype, e.op
        cmp = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
        if op in cmp:
            return f"({self.expr(e.a)} {cmp[op]} {self.expr(e.b)})"
        if dt == "bool":
            a, b = self.expr(e.a), self.expr(e.b)
            if op == "and" or op == "min":
                return f"T.And({a}, {b})"
            if op == "or" or op == "max":
                return f"T.Or({a}, {b})"
            if op == "xor":
                return f"({a} != {b})"
            raise EmitError(f"binary {op!r} is not defined on bool")
        sym = {"add": "+", "sub": "-", "mul": "*"}
        if op in sym:
            return self.wrapped(sym[op], self.expr(e.a), self.expr(e.b), compute(dt))
        if op == "div" and dt in _FLOATS:
            return f"({self.expr(e.a)} / {self.expr(e.b)})"
        if op in ("div", "mod") and dt in _INTS:
            return self.int_divmod(op, e.a, e.b, dt)
        if op in ("min", "max") and dt in _FLOATS:
            a, la = self.shared(e.a)
            b, lb = self.shared(e.b)
            rel = ">" if op == "max" else "<"
            return self.let(la + lb, f"T.Select(T.Or({a} {rel} {b}, {nan_test(a, dt)}), {a}, {b})")
        if op in ("min", "max"):  # integers: each operand is used once
            return f"T.{op}({self.expr(e.a)}, {self.expr(e.b)})"
        if op == "pow" and dt in _FLOATS:
            return f"T.pow({self.expr(e.a)}, {self.expr(e.b)})"
        if op == "pow" and dt in _INTS:
            return self.int_pow(e.a, e.b, dt)
        if op == "mod" and dt in _FLOATS:
            return f"T.fmod({self.expr(e.a)}, {self.expr(e.b)})"
        if op in ("and", "or", "xor") and dt in _INTS:
            fn = {"and": "T.bitwise_and", "or": "T.bitwise_or", "xor": "T.bitwise_xor"}[op]
            return f"{fn}({self.expr(e.a)}, {self.expr(e.b)})"
        if op in ("shl", "shr") and dt in _INTS:
            return self.shift(op, e.a, e.b, dt)
        raise EmitError(f"binary {op!r} on {dt} is not supported by the TVM backend")

    def int_divmod(self, op: str, ea: Expr, eb: Expr, dt: str) -> str:
        fn = "T.truncdiv" if op == "div" else "T.truncmod"
        if isinstance(eb, Const) and int(eb.value) not in (0, -1):
            return f"{fn}({self.expr(ea)}, {self.expr(eb)})"
        a, la = self.shared(ea)
        b, lb = self.shared(eb)
        zero, one = literal(0, dt), literal(1, dt)
        if dt in _UNSIGNED:
            safe = f"T.Select({b} == {zero}, {one}, {b})"
            return self.let(la + lb, f"T.Select({b} == {zero}, {zero}, {fn}({a}, {safe}))")
        # x / 0 -> 0, x % 0 -> 0, x % -1 -> 0, x / -1 -> -x (wrapping): the divisor is made safe
        bad = f"T.Or({b} == {zero}, {b} == {literal(-1, dt)})"
        q = f"{fn}({a}, T.Select({bad}, {one}, {b}))"
        if op == "mod":
            return self.let(la + lb, f"T.Select({bad}, {zero}, {q})")
        neg = self.wrapped("-", zero, a, dt)
        return self.let(la + lb, f"T.Select({b} == {zero}, {zero}, "
                                 f"T.Select({b} == {literal(-1, dt)}, {neg}, {q}))")

    def int_pow(self, ea: Expr, eb: Expr, dt: str) -> str:
        """nnc_pow of backends/c/emit.py: square-and-multiply over the exponent's bits (all of
        them, or a constant exponent's), wrapping; a negative exponent gives 1/a truncated
        (1 for a == 1, +-1 for a == -1, else 0)."""
        a, lets = self.share_text(self.expr(ea), dt)
        b, lb = self.share_text(self.expr(eb), dt)
        lets += lb
        one, zero = literal(1, dt), literal(0, dt)
        nbits = 8 * itemsize(dt) - (0 if dt in _UNSIGNED else 1)
        if isinstance(eb, Const):
            nbits = max(int(eb.value), 0).bit_length()
        r, base = one, a
        for k in range(nbits):
            bit = f"(T.bitwise_and(T.shift_right({b}, {literal(k, dt)}), {one}) == {one})"
            r, lr = self.share_text(f"T.Select({bit}, {self.wrapped('*', r, base, dt)}, {r})",
                                    dt)
            lets += lr
            if k + 1 < nbits:
                base, lbase = self.share_text(self.wrapped("*", base, base, dt), dt)
                lets += lbase
        if dt in _UNSIGNED:
            return self.let(lets, r)
        odd = f"(T.bitwise_and({b}, {one}) == {one})"
        negative = (f"T.Select({a} == {one}, {one}, T.Select({a} == {literal(-1, dt)}, "
                    f"T.Select({odd}, {literal(-1, dt)}, {one}), {zero}))")
        return self.let(lets, f"T.Select({b} < {zero}, {negative}, {r})")

    def shift(self, op: str, ea: Expr, eb: Expr, dt: str) -> str:
        bits = 8 * itemsize(dt)
        if isinstance(eb, Const) and 0 <= int(eb.value) < bits:
            fn = "T.shift_left" if op == "shl" else "T.shift_right"
            return f"{fn}({self.expr(ea)}, {self.expr(eb)})"
        a, la = self.shared(ea)
        b, lb = self.shared(eb)
        unsigned_b = f'T.Cast("{"uint" + dt.removeprefix("u").removeprefix("int")}", {b})'
        big = f"({unsigned_b} >= {literal(bits, unsigned_b.split(chr(34))[1])})"
        if op == "shl":
            return self.let(la + lb, f"T.Select({big}, {literal(0, dt)}, T.shift_left({a}, {b}))")
        over = literal(0, dt) if dt in _UNSIGNED else \
            f"T.Select({a} < {literal(0, dt)}, {literal(-1, dt)}, {literal(0, dt)})"
        return self.let(la + lb, f"T.Select({big}, {over}, T.shift_right({a}, {b}))")

    def expr_call(self, e: Call) -> str:
        fn, dt = e.fn, e.args[0].dtype
        cdt = compute(dt)
        if fn in ("isnan", "isinf"):
            if dt not in _FLOATS:
                return "T.bool(False)"
            x, lx = self.shared(e.args[0])
            return self.let(lx, nan_test(x, dt) if fn == "isnan" else inf_test(x, dt))
        if fn == "requantize":
            return self.requantize(*e.args)
        if fn == "not":
            x = self.expr(e.args[0])
            if dt == "bool":
                return f"T.Not({x})"
            return f'T.Cast("{compute(e.dtype)}", {x} == {literal(0, dt)})'
        if fn == "neg":
            x = self.expr(e.args[0])
            if dt in _FLOATS:
                return f"({x} * {literal(-1.0, dt)})"
            return self.wrapped("-", literal(0, dt), x, dt)
        if fn == "sign":
            x, lx = self.shared(e.args[0])
            zero = literal(0, dt)
            if dt in _UNSIGNED:
                return self.let(lx, f'T.Cast("{dt}", {x} > {zero})')
            return self.let(lx, f"T.Select({x} > {zero}, {literal(1, dt)}, "
                                f"T.Select({x} < {zero}, {literal(-1, dt)}, {x}))")
        if dt in _FLOATS:
            xs = ", ".join(self.expr(a) for a in e.args)
            if fn in _MATH:
                return f"{_MATH[fn]}({xs})"
            if fn == "fmod":
                return f"T.fmod({xs})"
            if fn in _LIBM_ONLY:
                name = _LIBM_ONLY[fn] + ("" if cdt == "float64" else "f")
                return f'T.call_pure_extern("{cdt}", "{name}", {xs})'
            raise EmitError(f"intrinsic {fn!r} has no TVM equivalent")
        if fn in ("floor", "ceil", "round"):
            return self.expr(e.args[0])
        if fn == "abs":
            if dt in _UNSIGNED or dt == "bool":
                return self.expr(e.args[0])
            x, lx = self.shared(e.args[0])
            return self.let(lx, f"T.Select({x} < {literal(0, dt)}, "
                                f"{self.wrapped('-', literal(0, dt), x, dt)}, {x})")
        if fn == "fmod":
            return self.int_divmod("mod", e.args[0], e.args[1], dt)
        raise EmitError(f"intrinsic {fn!r} is not defined on {dt}")

    def requantize(self, ex: Expr, em: Expr, es: Expr) -> str:
        """nnc_requantize_i32 of backends/c/emit.py in int64 TIR. A constant multiplier or shift
        (per-tensor requantization) is folded here; per-channel shifts are Select-free (TIR's
        simplifier is slow on nested Selects); x and the high product are computed once."""
        x, lx = self.shared(ex)
        m, lm = self.shared(em)
        s, ls = self.shared(es)
        i64 = 'T.Cast("int64", {})'.format
        if isinstance(es, Const):
            sv = int(es.value)
            left, right = f"T.int64({max(sv, 0)})", max(-sv, 0)
            rs, mask = f"T.int32({right})", f"T.int32({(1 << right) - 1})"
            half = f"T.int32({((1 << right) - 1) >> 1})"
        else:
            left = i64(f"T.max({s}, T.int32(0))")
            rs = f"T.max(T.int32(0) - {s}, T.int32(0))"
            mask = f'T.Cast("int32", T.shift_left(T.int64(1), {i64(rs)}) - T.int64(1))'
            half = f"T.shift_right({mask}, T.int32(1))"
        a = f'T.Cast("int32", T.shift_left({i64(x)}, {left}))'  # x * 2^left, wrapping
        high = (f'T.Cast("int32", T.shift_right({i64(a)} * {i64(m)} + T.int64(1073741824), '
                f"T.int64(31)))")
        if self.may_be(em, -(2**31)):  # saturate: a == m == INT32_MIN
            high = (f"T.Select(T.And({a} == T.int32(-2147483648), {m} == "
                    f"T.int32(-2147483648)), T.int32(2147483647), {high})")
        h, lh = self.share_text(high, "int32")
        return self.let(lx + lm + ls + lh, (
            f"(T.shift_right({h}, {rs}) + T.Cast(\"int32\", T.bitwise_and({h}, {mask}) > "
            f"{half} + T.Cast(\"int32\", {h} < T.int32(0))))"))

    def may_be(self, e: Expr, value: int) -> bool:
        """Whether `e` can take `value`: a constant, or a load from constant data, is known."""
        if isinstance(e, Const):
            return int(e.value) == value
        if isinstance(e, Load) and e.buffer in self.constants:
            return bool((np.asarray(self.constants[e.buffer]) == value).any())
        return True

    def exact_half(self, e: Expr) -> bool:
        return isinstance(e, (Load, Const)) or (isinstance(e, Cast) and e.dtype == "float16")

    def expr_cast(self, e: Cast) -> str:
        src, dst = e.value.dtype, e.dtype
        v = self.expr(e.value)
        if src == dst:
            return v
        if dst == "bool":
            return f"({v} != {literal(0, src)})"
        if dst == "float16":
            return f'T.Cast("float32", T.Cast("float16", {v}))'
        if src == "float16" and not self.exact_half(e.value):
            v = f'T.Cast("float32", T.Cast("float16", {v}))'
        if compute(src) == compute(dst):
            return v
        if src in _FLOATS and dst == "uint64":  # negative: wrap through int64, like numpy
            x, lx = self.shared(e.value)
            return self.let(lx, f'T.Select({x} < {literal(0, src)}, '
                                f'T.Cast("uint64", T.Cast("int64", {x})), T.Cast("uint64", {x}))')
        if src in _FLOATS and dst in ("int8", "int16", "uint8", "uint16"):
            v = f'T.Cast("int32", {v})'  # numpy wraps: through a wide signed integer
        elif src in _FLOATS and dst == "uint32":
            v = f'T.Cast("int64", {v})'
        return f'T.Cast("{compute(dst)}", {v})'

    def expr_select(self, e: Select) -> str:
        cond = self.expr(e.cond)
        self.in_branch += 1
        a, b = self.expr(e.a), self.expr(e.b)
        self.in_branch -= 1
        return f"T.if_then_else({cond}, {a}, {b})"

    # ---- statements

    def block(self, stmts: Sequence[Stmt], depth: int) -> list[str]:
        lines: list[str] = []
        for s in stmts:
            lines += self.stmt(s, depth)
        return lines

    def stmt(self, s: Stmt, depth: int) -> list[str]:
        pad = "    " * depth
        if isinstance(s, For) and s.kind == "unrolled" and 0 < s.extent <= UNROLL_LIMIT:
            # unrolled here, not by TIR's unroll pass: its copies would share each Let variable
            outer = self.vars.get(s.var)
            lines = []
            for i in range(s.extent):
                self.vars[s.var] = literal(i, "int64")
                lines += self.block(s.body, depth)
            if outer is None:
                del self.vars[s.var]
            else:
                self.vars[s.var] = outer
            return lines
        if isinstance(s, For):
            var = self.names.fresh("v_", s.var)
            outer = self.vars.get(s.var)
            self.vars[s.var] = var
            kind = _LOOP_KINDS[s.kind]
            if s.kind == "vectorized" and not vectorizable(s):
                kind = "T.serial"
            binds = self.binds
            body = self.block(s.body, depth + 1) or [pad + "    T.evaluate(0)"]
            if self.binds != binds:  # TIR's vectorizer cannot widen a T.bind (int8 requantize)
                kind = "T.serial"
            if outer is None:
                del self.vars[s.var]
            else:
                self.vars[s.var] = outer
            if s.extent <= 0:
                return []
            return [f"{pad}for {var} in {kind}(T.int64({s.extent})):", *body]
        if isinstance(s, Store):
            buf = self.buffers.get(s.buffer)
            if buf is None:
                raise EmitError(f"buffer {s.buffer!r} is neither a param nor a local")
            if s.value.dtype != buf.dtype:
                raise EmitError(f"store of a {s.value.dtype} value into {buf.dtype} buffer "
                                f"{buf.name!r}")
            value = self.expr(s.value)
            if buf.dtype == "bool":
                value = f'T.Cast("uint8", {value})'
            elif buf.dtype == "float16":
                value = f'T.Cast("float16", {value})'
            return self.with_hoisted([f"{pad}{self.element(s.buffer, s.indices)} = {value}"],
                                     pad)
        if isinstance(s, If):
            lines = self.with_hoisted([f"{pad}if {self.expr(s.cond)}:"], pad)
            lines += self.block(s.then, depth + 1) or [pad + "    T.evaluate(0)"]
            if s.orelse:
                lines += [f"{pad}else:", *self.block(s.orelse, depth + 1)]
            return lines
        if isinstance(s, CallExtern):
            raise EmitError(f"the TVM backend cannot call external kernel {s.fn!r}; compile "
                            "with kernels='generated'")
        raise EmitError(f"cannot emit statement {s!r} for TVM")


_BITS = {"float16": ("float32", "int32", 0x7FFFFFFF, 0x7F800000),  # computed in float32
         "float32": ("float32", "int32", 0x7FFFFFFF, 0x7F800000),
         "float64": ("float64", "int64", 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000)}


def nan_test(x: str, dtype: str) -> str:
    """isnan on the bits: TIR folds `x != x` to false, and `T.isnan` miscompiled AD's relu."""
    _, it, mag, inf = _BITS[dtype]
    return f'(T.bitwise_and(T.reinterpret("{it}", {x}), T.{it}({mag})) > T.{it}({inf}))'


def inf_test(x: str, dtype: str) -> str:
    _, it, mag, inf = _BITS[dtype]
    return f'(T.bitwise_and(T.reinterpret("{it}", {x}), T.{it}({mag})) == T.{it}({inf}))'


def vectorizable(loop: For) -> bool:
    """TIR's vectorizer takes a body of stores and guarded expressions; a loop holding other
    loops, ifs or Lets (min/max, requantize) stays serial for LLVM's own vectorizer."""
    for s in walk_stmts(loop.body):
        if not isinstance(s, Store):
            return False
    return True


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


class _TVMModule:
    def __init__(self, module: LoopModule) -> None:
        self.m = module
        self.layout = ModuleEmitter(module, "nnc", 0, _NoC())  # validation, offsets, regions
        self.layout.validate()
        self.names = _Names()
        self.lets: dict[str, str] = {}

    def weights(self, used: Sequence[str]) -> tuple[bytes, dict[str, int]]:
        blob = bytearray()
        where: dict[str, int] = {}
        for name in used:
            b = self.layout.buf(name)
            if b.scope != "constant" or b.alias is not None:
                continue
            blob += bytes(-len(blob) % WEIGHTS_ALIGN)
            where[name] = len(blob)
            data = np.ascontiguousarray(np.asarray(self.m.constants[name]).astype(b.dtype))
            if b.dtype == "bool":
                data = data.astype(np.uint8)
            blob += data.astype(data.dtype.newbyteorder("<")).tobytes()
        return bytes(blob), where

    def emit(self) -> Program:
        m, lay = self.m, self.layout
        used = lay.used_globals()
        blob, woff = self.weights(used)
        self.views(used, woff)
        arena = _align(lay.arena_size, LOCALS_ALIGN)
        locals_bytes = 0
        funcs: list[str] = []
        calls: list[str] = []
        for i, k in enumerate(m.kernels):
            params, _written, restrict = lay.kernel_signature(k)
            fname = self.names.fresh("k", f"{i}_{k.name}")
            text, nbytes = self.kernel(k, fname, params, len(restrict) == len(params))
            funcs.append(text)
            locals_bytes = max(locals_bytes, nbytes)
            args = [f"T.address_of({self.view(p)}[0])" for p in k.params]
            if k.locals:
                args.append(f"T.address_of(ws[{arena}])")
            calls.append(f"Module.{fname}({', '.join(args)})")
        workspace = max(arena + locals_bytes, 1)
        main = self.main(len(blob), workspace, calls)
        script = "@I.ir_module\nclass Module:\n" + "\n\n".join(funcs + [main]) + "\n"
        return Program(script, dict(self.lets), blob, workspace, lay.arena_size, len(funcs), woff)

    def view(self, name: str) -> str:
        return self._views[name]

    def kernel(self, k: Kernel, fname: str, params: Sequence[Buffer],
               noalias: bool) -> tuple[str, int]:
        consts = {b.name: self.m.constants[self.layout.root(b.name).name] for b in params
                  if self.layout.root(b.name).scope == "constant"}
        ke = KernelEmitter(self.names, self.lets, consts)
        args, decls = [], []
        for j, b in enumerate(params):
            h = f"p{j}"
            args.append(f'{h}: T.handle("{storage(b.dtype)}")')
            bn = self.names.fresh("b_", b.name)
            ke.buffers[b.name], ke.bufnames[b.name] = b, bn
            decls.append(f'{bn} = T.decl_buffer(({max(b.size, 1)},), "{storage(b.dtype)}", '
                         f"data={h})")
        offset = 0
        inits: list[str] = []
        if k.locals:
            args.append('loc: T.handle("uint8")')
        for b in k.locals:
            if b.name in ke.buffers:
                raise EmitError(f"kernel {k.name}: local {b.name!r} shadows a param")
            size = itemsize(storage(b.dtype))
            offset = _align(offset, max(size, 1))
            bn = self.names.fresh("l_", b.name)
            ke.buffers[b.name], ke.bufnames[b.name] = b, bn
            decls.append(f'{bn} = T.decl_buffer(({max(b.size, 1)},), "{storage(b.dtype)}", '
                         f"data=loc, elem_offset={offset // size})")
            zero = literal(0, storage(b.dtype))
            if b.size <= 1:
                inits.append(f"{bn}[0] = {zero}")
            else:
                inits += [f"for z in T.serial(T.int64({b.size})):", f"    {bn}[z] = {zero}"]
            offset += max(b.size, 1) * size
        body = ke.block(k.body, 2)
        pad = "        "
        head = ["    @T.prim_func(private=True)",
                f"    def {fname}({', '.join(args)}):",
                f'{pad}T.func_attr({{"tirx.noalias": {noalias}}})']
        about = f"{k.op_kind} {k.op_name!r}".strip() if k.op_kind else k.name
        head.insert(0, f"    # {k.name}: {about}".replace("\n", " "))
        lines = head + [pad + d for d in decls] + [pad + i for i in inits] + body
        if not body and not inits:
            lines.append(pad + "T.evaluate(0)")
        return "\n".join(lines), _align(offset, LOCALS_ALIGN)

    def views(self, used: Sequence[str], woff: dict[str, int]) -> None:
        """The entry function's arguments and a typed view of every global buffer in them."""
        m, lay = self.m, self.layout
        self.args: list[str] = []
        self.decls: list[str] = []
        self.copies: list[str] = []
        self._views: dict[str, str] = {}
        roots: dict[str, str] = {}
        for i, name in enumerate(m.inputs):
            b = lay.buf(name)
            roots[name] = f"in{i}"
            self.args.append(f'in{i}: T.Buffer(({max(b.size, 1)},), "{b.dtype}")')
        out_index = {name: i for i, name in reversed(list(enumerate(m.outputs)))}
        for i, name in enumerate(m.outputs):
            b = lay.buf(name)
            self.args.append(f'out{i}: T.Buffer(({max(b.size, 1)},), "{b.dtype}")')
            if b.scope == "output" and b.alias is None and out_index[name] == i:
                roots[name] = f"out{i}"
        for name in used:
            b = lay.buf(name)
            root = lay.root(name)
            region = lay.regions[name]
            if region.space == "arena":
                data, byte = "ws.data", region.start
            elif region.space == "constant":
                data, byte = "weights.data", woff[root.name]
            else:
                data, byte = f"{roots[root.name]}.data", region.start
            size = itemsize(storage(b.dtype))
            if byte % size:
                raise EmitError(f"buffer {name!r}: offset {byte} is not aligned to its dtype")
            vn = self.names.fresh("g_", name)
            self._views[name] = vn
            self.decls.append(f'{vn} = T.decl_buffer(({max(b.size, 1)},), '
                              f'"{storage(b.dtype)}", data={data}, elem_offset={byte // size})')
        for i, name in enumerate(m.outputs):
            if roots.get(name) == f"out{i}":
                continue
            # an output that is an input, a constant, an alias or listed twice: copy it out
            b = lay.buf(name)
            ov = self.names.fresh("o_", str(i))
            self.decls.append(f'{ov} = T.decl_buffer(({max(b.size, 1)},), "{storage(b.dtype)}", '
                              f"data=out{i}.data)")
            self.copies += [f"for c in T.serial(T.int64({max(b.size, 1)})):",
                            f"    {ov}[c] = {self.view(name)}[c]"]

    def main(self, wbytes: int, workspace: int, calls: Sequence[str]) -> str:
        pad = "        "
        args = self.args + [f'ws: T.Buffer(({workspace},), "uint8")',
                            f'weights: T.Buffer(({max(wbytes, 1)},), "uint8")']
        # the caller's inputs, outputs, workspace and weights are distinct arrays (TVMModel,
        # run_model.py); aliasing inside the workspace is each kernel's `tirx.noalias`
        lines = ["    @T.prim_func", f"    def main({', '.join(args)}):",
                 f'{pad}T.func_attr({{"global_symbol": "main", "tirx.noalias": True}})']
        lines += [pad + v for v in self.decls] + [pad + c for c in (*calls, *self.copies)]
        if not calls and not self.copies:
            lines.append(pad + "T.evaluate(0)")
        return "\n".join(lines)


class _NoC:
    """The C module assembler wants an emitter only to name storage types; none is used."""

    def storage_type(self, dtype: str) -> str:
        return dtype


def emit_tvm(module: LoopModule) -> Program:
    """The TVMScript program of `module` (see the module docstring)."""
    return _TVMModule(module).emit()
