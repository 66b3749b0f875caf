"""Loop IR -> an Apache TVM `tirx` IRModule, built node by node: one private PrimFunc per kernel
and an entry `main` that calls them over one workspace holding nnc's memory plan.

    >>> prog = emit_tvm(module)                       # doctest: +SKIP
    >>> prog.module.script()                          # "@I.ir_module\\nclass Module: ..."

The entry function's arguments are the model inputs, the model outputs, the workspace (uint8: the
arena at the planner's offsets, then the kernels' locals) and the weights (uint8, weights.bin:
each constant 64-byte aligned). Every tensor is a typed view (`T.decl_buffer`) at a fixed offset
into one of those; a kernel gets its params as pointers. The nodes are made with the same
constructors TVMScript's parser calls (`tvm.script.tirx` for expressions, TVM's IRBuilder for
the function signatures and buffer views, `tvm.tirx` statements): the IRModule is the one that
parsing the printed program would give, without the parsing (which was most of the compile).

Semantics are the C backend's (backends/c/emit.py), rendered in TIR:
- `Select` is `T.if_then_else`: only the chosen side is evaluated (guarded loads stay guarded).
- TVM's LLVM code generator marks signed (and unsigned) 32/64-bit arithmetic no-wrap, so int32
  and uint32 add/sub/mul/neg are done in int64 and truncated back: they wrap like numpy (int8
  accumulation); LLVM narrows the pattern back to one 32-bit operation. 8/16-bit math wraps.
- integer div/mod truncate toward zero; a zero divisor gives 0, x / -1 wraps.
- float -> int is nnc's conversion (`nnc.ir.float_to_int`, x86's: NaN, +-inf and out-of-range
  values give the lowest value, narrower types wrap), a `Select` on range tests, not a bare
  Cast (LLVM's fptosi is poison out of range).
- float min/max propagate NaN (a NaN test on the bits: TIR folds `x != x` to false); `round` is
  round-half-to-even (nearbyint).
- `requantize` is TFLite's MultiplyByQuantizedMultiplier (nnc.ir.fixed_point) in 64-bit TIR.
- bool is stored as uint8 0/1; float16 is stored as half and computed in float32.
Repeated operands (min/max, div, requantize) are computed once: a statement-level `Bind` before
the statement that always evaluates them, a `Let` around the use inside a Select's branch.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tvm import ir, tirx
from tvm.script import tirx as T
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import ir as I
from tvm.script.ir_builder import tirx as TB

from nnc.backends.c.emit import (
    WEIGHTS_ALIGN,
    EmitError,
    ModuleEmitter,
    _int_range,
    flat_index,
)
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

PrimExpr = Any  # a tvm expression node
LOCALS_ALIGN = 64
_FLOATS = frozenset({"float16", "float32", "float64"})
_INTS = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})
_UNSIGNED = frozenset({"uint8", "uint16", "uint32", "uint64"})
_WIDEN = frozenset({"int32", "uint32"})  # wrap-around through int64 (see the module docstring)
_LOOP_KINDS = {"serial": tirx.ForKind.SERIAL, "vectorized": tirx.ForKind.VECTORIZED,
               "unrolled": tirx.ForKind.UNROLLED,
               # a parallel loop runs serially, as in the C backend (one thread)
               "parallel": tirx.ForKind.SERIAL}
SHARE_LIMIT = 16  # expression nodes repeated rather than bound by a Let
UNROLL_LIMIT = 64  # longer unrolled loops stay loops (the C backend caps NNC_UNROLL at 64 too)
# float intrinsics with a TIR op of the same meaning
_MATH = {"exp": T.exp, "log": T.log, "sqrt": T.sqrt, "tanh": T.tanh, "erf": T.erf,
         "floor": T.floor, "ceil": T.ceil, "round": T.nearbyint, "abs": T.fabs,
         "sin": T.sin, "cos": T.cos, "tan": T.tan, "asin": T.asin, "acos": T.acos,
         "atan": T.atan, "sinh": T.sinh, "cosh": T.cosh, "asinh": T.asinh,
         "acosh": T.acosh, "atanh": T.atanh, "log1p": T.log1p}
# ... and those TIR lacks: a libm call (float32 takes the f suffix)
_LIBM_ONLY = {"expm1": "expm1"}
# comparisons: the nodes TVMScript's parser makes for `<`, `==`, ... (no folding)
_CMP = {"lt": tirx.LT, "le": tirx.LE, "gt": tirx.GT, "ge": tirx.GE, "eq": tirx.EQ,
        "ne": tirx.NE}


def storage(dtype: str) -> str:
    return "uint8" if dtype == "bool" else dtype


def compute(dtype: str) -> str:
    return "float32" if dtype == "float16" else dtype


def literal(value: float | int | bool, dtype: str) -> PrimExpr:
    """A TIR constant of `dtype` (in its compute type)."""
    if dtype == "bool":
        return T.bool(bool(value))
    dt = compute(dtype)
    if dt in _FLOATS:
        v = float(np.float32(np.float16(value))) if dtype == "float16" else float(value)
        if dt == "float32":
            v = float(np.float32(v))
        if math.isnan(v) or math.isinf(v):
            return getattr(T, dt)(v)
        if abs(v) > float(np.finfo(np.float32).max):
            # T.float64(x) makes x a float32 literal first: the node itself
            return tirx.FloatImm(dt, v)
        return getattr(T, dt)(v)
    v = int(value)
    if dt == "uint64" and v >= 1 << 63:  # an IntImm holds int64: reinterpret the bits
        return T.reinterpret("uint64", T.int64(v - (1 << 64)))
    return getattr(T, dt)(v)


@dataclass
class Program:
    """The emitted module: the tirx IRModule, the weights blob, the entry function's workspace
    size and the offset of each constant in the blob."""

    module: Any  # tvm.IRModule
    weights: bytes
    workspace_bytes: int
    arena_bytes: int
    kernels: int
    constant_offsets: dict[str, int] = field(default_factory=dict)


class _Names:
    """IR names -> unique identifiers with a prefix per kind (the printed program's names)."""

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


def _seq(stmts: Sequence[Any]) -> Any:
    return stmts[0] if len(stmts) == 1 else tirx.SeqStmt(list(stmts))


def _nop() -> Any:
    return tirx.Evaluate(T.int32(0))


class KernelEmitter:
    """One kernel's TIR statements; the expression methods return nodes in the compute type."""

    def __init__(self, names: _Names, constants: Mapping[str, np.ndarray]) -> None:
        self.names = names
        self.constants = constants  # constant data by (root) buffer name
        self.lets = 0  # Let variables made so far (their names)
        self.buffers: dict[str, Buffer] = {}
        self.bufvars: dict[str, Any] = {}  # IR buffer name -> the TIR buffer
        self.vars: dict[str, PrimExpr] = {}
        self.hoisted: list[Any] = []  # Bind statements for the statement being emitted
        self.binds = 0  # Bind statements emitted so far (a vectorized body must have none)
        self.in_branch = 0  # > 0 while emitting a Select's branches (evaluated lazily)
        self.extents: dict[str, int] = {}  # loop variable -> trip count, while in its loop
        # exact_range's memo by node (id -> (node, bound)), emptied when a loop is entered or
        # left: a chain of n nested adds asks for the bound of each sub-chain
        self.ranges: dict[int, tuple[Expr, tuple[int, int] | None]] = {}

    # ---- Let bindings

    def let(self, values: Sequence[tuple[Any, PrimExpr]], body: PrimExpr) -> PrimExpr:
        """`body` with each (variable, value) bound; `T.Let` keeps the value evaluated once."""
        for var, value in reversed(values):
            body = T.Let(body, where={var: value})
        return body

    def shared(self, e: Expr) -> tuple[PrimExpr, list[tuple[Any, PrimExpr]]]:
        """`e` to use more than once: small expressions repeated (LLVM shares them), larger ones
        computed once (nested min/max or requantize would grow exponentially): by a
        statement-level `Bind` before the statement where `e` is always evaluated, else (inside
        a Select's branch) by a `T.Let` around the use."""
        value = self.expr(e)
        if sum(1 for _ in walk_expr(e)) <= SHARE_LIMIT:
            return value, []
        return self.share(value, compute(e.dtype))

    def share(self, value: PrimExpr, dtype: str) -> tuple[PrimExpr, list[tuple[Any, PrimExpr]]]:
        """A variable for `value`, computed once (see `shared`), and the Lets to wrap the use
        in."""
        if self.in_branch == 0:
            var = tirx.Var(self.names.fresh("t", str(len(self.hoisted))), dtype)
            self.hoisted.append(tirx.Bind(var, value))
            return var, []
        var = tirx.Var(self.names.fresh("t", str(self.lets)), dtype)
        self.lets += 1
        return var, [(var, value)]

    def with_hoisted(self, stmts: list[Any]) -> list[Any]:
        """`stmts` (one statement) preceded by the bindings its expressions asked for."""
        out = self.hoisted + stmts
        self.binds += len(self.hoisted)
        self.hoisted = []
        return out

    # ---- expressions

    def expr(self, e: Expr) -> PrimExpr:
        method = getattr(self, "expr_" + type(e).__name__.lower(), None)
        if method is None:
            raise EmitError(f"cannot emit expression {e!r} for TVM")
        return method(e)

    def expr_const(self, e: Const) -> PrimExpr:
        return literal(e.value, e.dtype)

    def expr_var(self, e: Var) -> PrimExpr:
        try:
            return self.vars[e.name]
        except KeyError:
            raise EmitError(f"variable %{e.name} used outside of its loop") from None

    def index(self, name: str, indices: Sequence[Expr]) -> PrimExpr:
        buf = self.buffers.get(name)
        if buf is None:
            raise EmitError(f"buffer {name!r} is neither a param nor a local of the kernel")
        if len(indices) != len(buf.shape):
            raise EmitError(f"buffer {name!r} has rank {len(buf.shape)} but is indexed with "
                            f"{len(indices)} indices")
        return self.expr(flat_index(indices, buf.shape))

    def expr_load(self, e: Load) -> PrimExpr:
        value = self.bufvars[e.buffer][self.index(e.buffer, e.indices)]
        dt = self.buffers[e.buffer].dtype
        if dt == "bool":
            return tirx.NE(value, T.uint8(0))
        if dt == "float16":
            return T.Cast("float32", value)
        return value

    def wrapped(self, op: str, a: PrimExpr, b: PrimExpr, dt: str) -> PrimExpr:
        """a op b (add, sub, mul) wrapping like numpy."""
        fn = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}[op]
        if dt in _WIDEN:
            return T.Cast(dt, fn(T.Cast("int64", a), T.Cast("int64", b)))
        if dt in ("int8", "int16", "uint8", "uint16", "int64", "uint64") or dt in _FLOATS:
            return fn(a, b)
        raise EmitError(f"arithmetic on {dt} for TVM")

    def expr_binary(self, e: Binary) -> PrimExpr:
        dt, op = e.a.dtype, e.op
        if op in _CMP:
            return _CMP[op](self.expr(e.a), self.expr(e.b))
        if dt == "bool":
            a, b = self.expr(e.a), self.expr(e.b)
            if op == "and" or op == "min":
                return T.And(a, b)
            if op == "or" or op == "max":
                return T.Or(a, b)
            if op == "xor":
                return tirx.NE(a, b)
            raise EmitError(f"binary {op!r} is not defined on bool")
        sym = {"add": "+", "sub": "-", "mul": "*"}
        if op in sym:
            if compute(dt) in _WIDEN and self.exact_range(e) is not None:
                # no wrap-around possible: the type's own arithmetic, without the int64 round
                # trip (each Cast pair is more for TIR's simplifier to rewrite through)
                fn = {"+": lambda x, y: x + y, "-": lambda x, y: x - y,
                      "*": lambda x, y: x * y}[sym[op]]
                return fn(self.expr(e.a), self.expr(e.b))
            return self.wrapped(sym[op], self.expr(e.a), self.expr(e.b), compute(dt))
        if op == "div" and dt in _FLOATS:
            return self.expr(e.a) / self.expr(e.b)
        if op in ("div", "mod") and dt in _INTS:
            return self.int_divmod(op, e.a, e.b, dt)
        if op in ("min", "max") and dt in _FLOATS and self.finite_range(e.a) is not None \
                and self.finite_range(e.b) is not None:  # no NaN: TIR's own min/max
            return getattr(T, op)(self.expr(e.a), self.expr(e.b))
        if op in ("min", "max") and dt in _FLOATS:
            a, la = self.shared(e.a)
            b, lb = self.shared(e.b)
            rel = tirx.GT if op == "max" else tirx.LT
            return self.let(la + lb, T.Select(T.Or(rel(a, b), nan_test(a, dt)), a, b))
        if op in ("min", "max"):  # integers: each operand is used once
            return getattr(T, op)(self.expr(e.a), self.expr(e.b))
        if op == "pow" and dt in _FLOATS:
            return T.pow(self.expr(e.a), self.expr(e.b))
        if op == "pow" and dt in _INTS:
            return self.int_pow(e.a, e.b, dt)
        if op == "mod" and dt in _FLOATS:
            return T.fmod(self.expr(e.a), self.expr(e.b))
        if op in ("and", "or", "xor") and dt in _INTS:
            fn = {"and": T.bitwise_and, "or": T.bitwise_or, "xor": T.bitwise_xor}[op]
            return fn(self.expr(e.a), self.expr(e.b))
        if op in ("shl", "shr") and dt in _INTS:
            return self.shift(op, e.a, e.b, dt)
        raise EmitError(f"binary {op!r} on {dt} is not supported by the TVM backend")

    def int_range(self, e: Expr) -> tuple[float, float]:
        """Bounds of an integer expression: `exact_range` where it has one (no wrap-around),
        else its type's."""
        r = self.exact_range(e)
        if r is None:
            r = _int_range(e.dtype if e.dtype in _INTS or e.dtype == "bool" else "int64")
        return float(r[0]), float(r[1])

    def exact_range(self, e: Expr) -> tuple[int, int] | None:
        """Bounds (Python ints) of an integer expression by interval arithmetic: constants, loop
        variables in their loop, loads and casts (their type's), + - * min max of bounded
        operands, shifts right and masks by constants, Selects. None where no such bound is
        known or the value may wrap around its type (then the type's bounds are all we know)."""
        hit = self.ranges.get(id(e))
        if hit is not None and hit[0] is e:
            return hit[1]
        r = self._exact_range(e)
        self.ranges[id(e)] = (e, r)  # e kept alive: its id stays its own
        return r

    def _exact_range(self, e: Expr) -> tuple[int, int] | None:
        dt = e.dtype
        if dt not in _INTS and dt != "bool":
            return None
        tlo, thi = _int_range(dt)
        r: tuple[int, int] | None = None
        if isinstance(e, Const):
            r = (int(e.value), int(e.value))
        elif isinstance(e, Var):
            r = (0, max(self.extents[e.name] - 1, 0)) if e.name in self.extents else None
        elif isinstance(e, Load):
            r = (tlo, thi)
        elif isinstance(e, Cast):
            src = e.value.dtype
            if src in _INTS or src == "bool":
                r = self.exact_range(e.value) or _int_range(src)
        elif isinstance(e, Select):
            a, b = self.exact_range(e.a), self.exact_range(e.b)
            r = (min(a[0], b[0]), max(a[1], b[1])) if a and b else None
        elif isinstance(e, Binary) and e.op in ("add", "sub", "mul", "min", "max"):
            a, b = self.exact_range(e.a), self.exact_range(e.b)
            if a and b:
                if e.op == "add":
                    r = (a[0] + b[0], a[1] + b[1])
                elif e.op == "sub":
                    r = (a[0] - b[1], a[1] - b[0])
                elif e.op == "mul":
                    ps = [x * y for x in a for y in b]
                    r = (min(ps), max(ps))
                else:
                    f = min if e.op == "min" else max
                    r = (f(a[0], b[0]), f(a[1], b[1]))
        elif isinstance(e, Binary) and e.op == "shr" and isinstance(e.b, Const) \
                and 0 <= int(e.b.value) < 8 * itemsize(dt):
            a = self.exact_range(e.a)
            r = (a[0] >> int(e.b.value), a[1] >> int(e.b.value)) if a else None
        elif isinstance(e, Binary) and e.op == "shl" and isinstance(e.b, Const) \
                and 0 <= int(e.b.value) < 8 * itemsize(dt):
            a = self.exact_range(e.a)
            r = (a[0] << int(e.b.value), a[1] << int(e.b.value)) if a else None
        elif isinstance(e, Binary) and e.op == "and" and isinstance(e.b, Const) \
                and int(e.b.value) >= 0:
            r = (0, int(e.b.value))
        elif isinstance(e, Call) and e.fn == "requantize" and isinstance(e.args[2], Const):
            # |x * 2^left| * |m| / 2^31, rounded, then >> right rounded: one more each time
            x, m = self.exact_range(e.args[0]), self.exact_range(e.args[1])
            sv = int(e.args[2].value)
            if x and m:
                big = max(abs(x[0]), abs(x[1])) << max(sv, 0)
                if big < 2**31:
                    bound = (((big * max(abs(m[0]), abs(m[1]))) >> 31) + 1 >> max(-sv, 0)) + 1
                    r = (-bound, bound)
        if r is None or r[0] < tlo or r[1] > thi:
            return None
        return r

    def finite_range(self, e: Expr) -> tuple[float, float] | None:
        """Bounds of a float expression proven neither NaN nor infinite (interval arithmetic
        from constants and integer casts: a resize's clamped source coordinate), else None.
        Where both operands of a float min/max have one, NaN propagation cannot matter and TIR's
        min/max is the same function; TIR's simplifier takes exponential time on the nested
        NaN-aware Selects of a clamp of a clamp (tvm.compile of resize_linear: 206 s)."""
        big = 1e37  # well inside float32's range: rounding cannot reach inf
        r: tuple[float, float] | None = None
        if isinstance(e, Const) and e.dtype in _FLOATS:
            v = float(e.value)
            r = (v, v) if math.isfinite(v) else None
        elif isinstance(e, Cast) and e.dtype in _FLOATS:
            src = e.value.dtype
            r = self.int_range(e.value) if src in _INTS or src == "bool" else (
                self.finite_range(e.value) if src in _FLOATS else None)
        elif isinstance(e, Binary) and e.dtype in _FLOATS and e.op in (
                "add", "sub", "mul", "div", "min", "max"):
            a, b = self.finite_range(e.a), self.finite_range(e.b)
            if a is None or b is None:
                return None
            if e.op == "add":
                r = (a[0] + b[0], a[1] + b[1])
            elif e.op == "sub":
                r = (a[0] - b[1], a[1] - b[0])
            elif e.op in ("min", "max"):
                f = min if e.op == "min" else max
                r = (f(a[0], b[0]), f(a[1], b[1]))
            elif e.op == "mul" or b[0] > 0 or b[1] < 0:
                ys = [x * y for x in a for y in b] if e.op == "mul" else \
                    [x / y for x in a for y in b]
                r = (min(ys), max(ys))
        elif isinstance(e, Call) and e.fn in ("floor", "ceil", "round") and e.dtype in _FLOATS:
            x = self.finite_range(e.args[0])
            r = None if x is None else (math.floor(x[0]), math.ceil(x[1]))
        elif isinstance(e, Select) and e.dtype in _FLOATS:
            a, b = self.finite_range(e.a), self.finite_range(e.b)
            r = None if a is None or b is None else (min(a[0], b[0]), max(a[1], b[1]))
        if r is None or not (-big < r[0] <= r[1] < big):
            return None
        return r

    def int_divmod(self, op: str, ea: Expr, eb: Expr, dt: str) -> PrimExpr:
        fn = T.truncdiv if op == "div" else T.truncmod
        if isinstance(eb, Const) and int(eb.value) not in (0, -1):
            return fn(self.expr(ea), self.expr(eb))
        a, la = self.shared(ea)
        b, lb = self.shared(eb)
        zero, one = literal(0, dt), literal(1, dt)
        if dt in _UNSIGNED:
            safe = T.Select(tirx.EQ(b, zero), one, b)
            return self.let(la + lb, T.Select(tirx.EQ(b, zero), zero, fn(a, safe)))
        # x / 0 -> 0, x % 0 -> 0, x % -1 -> 0, x / -1 -> -x (wrapping): the divisor is made safe
        bad = T.Or(tirx.EQ(b, zero), tirx.EQ(b, literal(-1, dt)))
        q = fn(a, T.Select(bad, one, b))
        if op == "mod":
            return self.let(la + lb, T.Select(bad, zero, q))
        neg = self.wrapped("-", zero, a, dt)
        return self.let(la + lb, T.Select(tirx.EQ(b, zero), zero,
                                          T.Select(tirx.EQ(b, literal(-1, dt)), neg, q)))

    def int_pow(self, ea: Expr, eb: Expr, dt: str) -> PrimExpr:
        """nnc_pow of backends/c/emit.py: square-and-multiply over the exponent's bits (all of
        them, or a constant exponent's), wrapping; a negative exponent gives 1/a truncated
        (1 for a == 1, +-1 for a == -1, else 0)."""
        a, lets = self.share(self.expr(ea), dt)
        b, lb = self.share(self.expr(eb), dt)
        lets += lb
        one, zero = literal(1, dt), literal(0, dt)
        nbits = 8 * itemsize(dt) - (0 if dt in _UNSIGNED else 1)
        if isinstance(eb, Const):
            nbits = max(int(eb.value), 0).bit_length()
        r, base = one, a
        for k in range(nbits):
            bit = tirx.EQ(T.bitwise_and(T.shift_right(b, literal(k, dt)), one), one)
            r, lr = self.share(T.Select(bit, self.wrapped("*", r, base, dt), r), dt)
            lets += lr
            if k + 1 < nbits:
                base, lbase = self.share(self.wrapped("*", base, base, dt), dt)
                lets += lbase
        if dt in _UNSIGNED:
            return self.let(lets, r)
        odd = tirx.EQ(T.bitwise_and(b, one), one)
        negative = T.Select(tirx.EQ(a, one), one,
                            T.Select(tirx.EQ(a, literal(-1, dt)),
                                     T.Select(odd, literal(-1, dt), one), zero))
        return self.let(lets, T.Select(tirx.LT(b, zero), negative, r))

    def shift(self, op: str, ea: Expr, eb: Expr, dt: str) -> PrimExpr:
        bits = 8 * itemsize(dt)
        if isinstance(eb, Const) and 0 <= int(eb.value) < bits:
            fn = T.shift_left if op == "shl" else T.shift_right
            return fn(self.expr(ea), self.expr(eb))
        a, la = self.shared(ea)
        b, lb = self.shared(eb)
        udt = "uint" + dt.removeprefix("u").removeprefix("int")
        big = tirx.GE(T.Cast(udt, b), literal(bits, udt))
        if op == "shl":
            return self.let(la + lb, T.Select(big, literal(0, dt), T.shift_left(a, b)))
        over = literal(0, dt) if dt in _UNSIGNED else \
            T.Select(tirx.LT(a, literal(0, dt)), literal(-1, dt), literal(0, dt))
        return self.let(la + lb, T.Select(big, over, T.shift_right(a, b)))

    def expr_call(self, e: Call) -> PrimExpr:
        fn, dt = e.fn, e.args[0].dtype
        cdt = compute(dt)
        if fn in ("isnan", "isinf"):
            if dt not in _FLOATS:
                return T.bool(False)
            x, lx = self.shared(e.args[0])
            return self.let(lx, nan_test(x, dt) if fn == "isnan" else inf_test(x, dt))
        if fn == "requantize":
            return self.requantize(*e.args)
        if fn == "not":
            x = self.expr(e.args[0])
            if dt == "bool":
                return T.Not(x)
            return T.Cast(compute(e.dtype), tirx.EQ(x, literal(0, dt)))
        if fn == "neg":
            x = self.expr(e.args[0])
            if dt in _FLOATS:
                return x * literal(-1.0, dt)
            return self.wrapped("-", literal(0, dt), x, dt)
        if fn == "sign":
            x, lx = self.shared(e.args[0])
            zero = literal(0, dt)
            if dt in _UNSIGNED:
                return self.let(lx, T.Cast(dt, tirx.GT(x, zero)))
            return self.let(lx, T.Select(tirx.GT(x, zero), literal(1, dt),
                                         T.Select(tirx.LT(x, zero), literal(-1, dt), x)))
        if dt in _FLOATS:
            xs = [self.expr(a) for a in e.args]
            if fn in _MATH:
                return _MATH[fn](*xs)
            if fn == "fmod":
                return T.fmod(*xs)
            if fn in _LIBM_ONLY:
                name = _LIBM_ONLY[fn] + ("" if cdt == "float64" else "f")
                return T.call_pure_extern(cdt, name, *xs)
            raise EmitError(f"intrinsic {fn!r} has no TVM equivalent")
        if fn in ("floor", "ceil", "round"):
            return self.expr(e.args[0])
        if fn == "abs":
            if dt in _UNSIGNED or dt == "bool":
                return self.expr(e.args[0])
            x, lx = self.shared(e.args[0])
            return self.let(lx, T.Select(tirx.LT(x, literal(0, dt)),
                                         self.wrapped("-", literal(0, dt), x, dt), x))
        if fn == "fmod":
            return self.int_divmod("mod", e.args[0], e.args[1], dt)
        raise EmitError(f"intrinsic {fn!r} is not defined on {dt}")

    def requantize(self, ex: Expr, em: Expr, es: Expr) -> PrimExpr:
        """nnc_requantize_i32 of backends/c/emit.py in int64 TIR. A constant multiplier or shift
        (per-tensor requantization) is folded here; per-channel shifts are Select-free (TIR's
        simplifier is slow on nested Selects); x and the high product are computed once."""
        x, lx = self.shared(ex)
        m, lm = self.shared(em)
        s, ls = self.shared(es)

        def i64(v: PrimExpr) -> PrimExpr:
            return T.Cast("int64", v)

        if isinstance(es, Const):
            sv = int(es.value)
            left, right = T.int64(max(sv, 0)), max(-sv, 0)
            rs, mask = T.int32(right), T.int32((1 << right) - 1)
            half = T.int32(((1 << right) - 1) >> 1)
        else:
            left = i64(T.max(s, T.int32(0)))
            rs = T.max(T.int32(0) - s, T.int32(0))
            mask = T.Cast("int32", T.shift_left(T.int64(1), i64(rs)) - T.int64(1))
            half = T.shift_right(mask, T.int32(1))
        xr = self.exact_range(ex) if isinstance(es, Const) and ex.dtype == "int32" else None
        if isinstance(es, Const) and sv <= 0:
            a = x  # no left shift
        elif xr is not None and -(2**31) <= xr[0] << sv and xr[1] << sv < 2**31:
            # x * 2^left cannot wrap: int32's own shift (fewer Casts for TIR's simplifier)
            a = T.shift_left(x, T.int32(sv))
        else:
            a = T.Cast("int32", T.shift_left(i64(x), left))  # x * 2^left, wrapping
        high = T.Cast("int32", T.shift_right(i64(a) * i64(m) + T.int64(1073741824), T.int64(31)))
        if self.may_be(em, -(2**31)):  # saturate: a == m == INT32_MIN
            high = T.Select(T.And(tirx.EQ(a, T.int32(-2147483648)),
                                  tirx.EQ(m, T.int32(-2147483648))), T.int32(2147483647), high)
        h, lh = self.share(high, "int32")
        if isinstance(es, Const):
            # a constant right shift r: CMSIS's (h >> r) + ((h & mask) > (mask >> 1) + (h < 0))
            # is (h + 2^(r-1) - (h < 0)) >> r (int32 where h's bound leaves room, else int64),
            # which names h twice, not three times, and r == 0 is h itself. TIR's simplifier
            # substitutes every bound variable back, so each extra use multiplies the tree it
            # rewrites through nested requantizes (lstm_kws' add_s8: ~2 s of StmtSimplify each)
            if right == 0:
                return self.let(lx + lm + ls + lh, h)
            neg = tirx.LT(h, T.int32(0))
            hr = self.exact_range(Call("requantize", (ex, em, Const(sv + right, "int32")),
                                       "int32"))
            if hr is not None and hr[1] + (1 << (right - 1)) < 2**31:
                # h + 2^(r-1) stays in int32: its own lanes (an int64 add and shift would
                # halve the vector width of an elementwise kernel: lstm_kws ran ~5% slower)
                return self.let(lx + lm + ls + lh, T.shift_right(
                    h + T.int32(1 << (right - 1)) - T.Cast("int32", neg), T.int32(right)))
            rounded = T.shift_right(i64(h) + T.int64(1 << (right - 1)) - i64(neg),
                                    T.int64(right))
            return self.let(lx + lm + ls + lh, T.Cast("int32", rounded))
        rounding = T.Cast("int32", tirx.GT(T.bitwise_and(h, mask),
                                           half + T.Cast("int32", tirx.LT(h, T.int32(0)))))
        return self.let(lx + lm + ls + lh, T.shift_right(h, rs) + rounding)

    def may_be(self, e: Expr, value: int) -> bool:
        """Whether `e` can take `value`: a constant, or a load from constant data, is known."""
        if isinstance(e, Const):
            return int(e.value) == value
        if isinstance(e, Load) and e.buffer in self.constants:
            return bool((np.asarray(self.constants[e.buffer]) == value).any())
        return True

    def exact_half(self, e: Expr) -> bool:
        return isinstance(e, (Load, Const)) or (isinstance(e, Cast) and e.dtype == "float16")

    def expr_cast(self, e: Cast) -> PrimExpr:
        src, dst = e.value.dtype, e.dtype
        v = self.expr(e.value)
        if src == dst:
            return v
        if dst == "bool":
            return tirx.NE(v, literal(0, src))
        if dst == "float16":
            return T.Cast("float32", T.Cast("float16", v))
        if src == "float16" and not self.exact_half(e.value):
            v = T.Cast("float32", T.Cast("float16", v))
        if compute(src) == compute(dst):
            return v
        if src in _FLOATS and dst in _INTS:  # defined for every value (ir.float_to_int)
            if sum(1 for _ in walk_expr(e.value)) <= SHARE_LIMIT:
                x, lx = v, []
            else:
                x, lx = self.share(v, compute(src))
            return self.let(lx, float_to_int(x, compute(src), dst))
        return T.Cast(compute(dst), v)

    def expr_select(self, e: Select) -> PrimExpr:
        cond = self.expr(e.cond)
        self.in_branch += 1
        a, b = self.expr(e.a), self.expr(e.b)
        self.in_branch -= 1
        return T.if_then_else(cond, a, b)

    # ---- statements

    def block(self, stmts: Sequence[Stmt]) -> list[Any]:
        out: list[Any] = []
        for s in stmts:
            out += self.stmt(s)
        return out

    def stmt(self, s: Stmt) -> list[Any]:
        if isinstance(s, For) and s.kind == "unrolled" and 0 < s.extent <= UNROLL_LIMIT:
            # unrolled here, not by TIR's unroll pass: its copies would share each Let variable
            outer = self.vars.get(s.var)
            out = []
            for i in range(s.extent):
                self.vars[s.var] = literal(i, "int64")
                out += self.block(s.body)
            if outer is None:
                del self.vars[s.var]
            else:
                self.vars[s.var] = outer
            return out
        if isinstance(s, For):
            var = tirx.Var(self.names.fresh("v_", s.var), "int64")
            outer = self.vars.get(s.var)
            outer_extent = self.extents.get(s.var)
            self.vars[s.var] = var
            self.extents[s.var] = s.extent
            self.ranges.clear()  # bounds with s.var in them change
            kind = _LOOP_KINDS[s.kind]
            if s.kind == "vectorized" and not vectorizable(s):
                kind = tirx.ForKind.SERIAL
            binds = self.binds
            body = self.block(s.body) or [_nop()]
            if self.binds != binds:  # TIR's vectorizer cannot widen a Bind (int8 requantize)
                kind = tirx.ForKind.SERIAL
            if outer is None:
                del self.vars[s.var]
            else:
                self.vars[s.var] = outer
            if outer_extent is None:
                del self.extents[s.var]
            else:
                self.extents[s.var] = outer_extent
            self.ranges.clear()
            if s.extent <= 0:
                return []
            return [tirx.For(var, T.int64(0), T.int64(s.extent), kind, _seq(body))]
        if isinstance(s, Store):
            buf = self.buffers.get(s.buffer)
            if buf is None:
                raise EmitError(f"buffer {s.buffer!r} is neither a param nor a local")
            if s.value.dtype != buf.dtype:
                raise EmitError(f"store of a {s.value.dtype} value into {buf.dtype} buffer "
                                f"{buf.name!r}")
            value = self.expr(s.value)
            if buf.dtype == "bool":
                value = T.Cast("uint8", value)
            elif buf.dtype == "float16":
                value = T.Cast("float16", value)
            index = self.index(s.buffer, s.indices)
            return self.with_hoisted([tirx.BufferStore(self.bufvars[s.buffer], value, [index])])
        if isinstance(s, If):
            cond = self.expr(s.cond)
            head = self.with_hoisted([])
            then = _seq(self.block(s.then) or [_nop()])
            orelse = self.block(s.orelse) if s.orelse else []
            return head + [tirx.IfThenElse(cond, then, _seq(orelse) if orelse else None)]
        if isinstance(s, CallExtern):
            raise EmitError(f"the TVM backend cannot call external kernel {s.fn!r}; compile "
                            "with kernels='generated'")
        raise EmitError(f"cannot emit statement {s!r} for TVM")


_BITS = {"float16": ("float32", "int32", 0x7FFFFFFF, 0x7F800000),  # computed in float32
         "float32": ("float32", "int32", 0x7FFFFFFF, 0x7F800000),
         "float64": ("float64", "int64", 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000)}


def _to_signed(x: PrimExpr, src: str, bits: int) -> PrimExpr:
    """x86's truncating conversion of float `x` (float32/float64) to int`bits`: in
    [-2^(bits-1), 2^(bits-1)) truncated, else (NaN: the ordered comparisons are false, +-inf,
    too large) the lowest value. The Cast on the side not taken is LLVM poison, which `select`
    drops (the C backend's `nnc_to_i32_f32`)."""
    it, bound = f"int{bits}", 2.0 ** (bits - 1)
    ok = T.And(tirx.GE(x, literal(-bound, src)), tirx.LT(x, literal(bound, src)))
    return T.Select(ok, T.Cast(it, x), literal(-(2 ** (bits - 1)), it))


def float_to_int(x: PrimExpr, src: str, dst: str) -> PrimExpr:
    """float `x` (computed in `src`: float32/float64) converted to integer `dst` by nnc's rule
    (`nnc.ir.float_to_int`): to int32/int64 directly, narrower types through int32 (then modulo
    2^bits), uint32/uint64 through the signed conversion of `x - 2^(N-1)` (flipping the top bit
    back) where `x >= 2^(N-1)`."""
    if dst in ("uint32", "uint64"):
        bits = 32 if dst == "uint32" else 64
        half = literal(2.0 ** (bits - 1), src)
        big = tirx.GE(x, half)
        low = _to_signed(T.Select(big, x - half, x), src, bits)
        flip = literal(-(2 ** (bits - 1)), f"int{bits}")
        return T.Cast(dst, T.Select(big, T.bitwise_xor(low, flip), low))
    wide = _to_signed(x, src, 64 if dst == "int64" else 32)
    return wide if dst in ("int32", "int64") else T.Cast(dst, wide)


def nan_test(x: PrimExpr, dtype: str) -> PrimExpr:
    """isnan on the bits: TIR folds `x != x` to false, and `T.isnan` miscompiled AD's relu."""
    _, it, mag, inf = _BITS[dtype]
    return tirx.GT(T.bitwise_and(T.reinterpret(it, x), literal(mag, it)), literal(inf, it))


def inf_test(x: PrimExpr, dtype: str) -> PrimExpr:
    _, it, mag, inf = _BITS[dtype]
    return tirx.EQ(T.bitwise_and(T.reinterpret(it, x), literal(mag, it)), literal(inf, it))


def vectorizable(loop: For) -> bool:
    """TIR's vectorizer takes a body of stores and guarded expressions; a loop holding other
    loops, ifs or Lets (min/max, requantize) stays serial for LLVM's own vectorizer."""
    for s in walk_stmts(loop.body):
        if not isinstance(s, Store):
            return False
    return True


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def _signature(build: Any) -> tuple[Any, list[Any]]:
    """Run `build()` (TVMScript's IRBuilder calls: arguments, attributes, buffer views) in a
    PrimFunc frame of its own; the function and its DeclBuffer statements."""
    with IRBuilder() as ib:
        build()
    func = ib.get()
    body = func.body
    stmts = list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]
    return func, [s for s in stmts if isinstance(s, tirx.DeclBuffer)]


class _TVMModule:
    def __init__(self, module: LoopModule) -> None:
        self.m = module
        self.layout = ModuleEmitter(module, "nnc", 0, _NoC())  # validation, offsets, regions
        self.layout.validate()
        self.names = _Names()

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
        arena = _align(lay.arena_size, LOCALS_ALIGN)
        locals_bytes = 0
        funcs: list[tuple[str, Any]] = []
        for i, k in enumerate(m.kernels):
            params, _written, restrict = lay.kernel_signature(k)
            fname = self.names.fresh("k", f"{i}_{k.name}")
            func, nbytes = self.kernel(k, fname, params, len(restrict) == len(params))
            funcs.append((fname, func))
            locals_bytes = max(locals_bytes, nbytes)
        workspace = max(arena + locals_bytes, 1)
        with IRBuilder() as ib:
            with I.ir_module():
                gvs = [I.decl_function(fname, func) for fname, func in funcs]
                main = self.main(used, woff, len(blob), workspace, arena, gvs)
                for (fname, func) in funcs:
                    I.def_function(fname, func)
                I.decl_function("main", main)
                I.def_function("main", main)
        return Program(ib.get(), blob, workspace, lay.arena_size, len(funcs), woff)

    def kernel(self, k: Kernel, fname: str, params: Sequence[Buffer],
               noalias: bool) -> tuple[Any, int]:
        consts = {b.name: self.m.constants[self.layout.root(b.name).name] for b in params
                  if self.layout.root(b.name).scope == "constant"}
        ke = KernelEmitter(self.names, consts)
        offsets: list[int] = []
        offset = 0
        for b in k.locals:
            if b.name in {p.name for p in params}:
                raise EmitError(f"kernel {k.name}: local {b.name!r} shadows a param")
            size = itemsize(storage(b.dtype))
            offset = _align(offset, max(size, 1))
            offsets.append(offset)
            offset += max(b.size, 1) * size

        def signature() -> None:
            with TB.prim_func(is_private=True):
                TB.func_name(fname)
                handles = [TB.arg(f"p{j}", T.handle(storage(b.dtype)))
                           for j, b in enumerate(params)]
                loc = TB.arg("loc", T.handle("uint8")) if k.locals else None
                TB.func_attr({"tirx.noalias": noalias})
                for b, h in zip(params, handles, strict=True):
                    view = TB.decl_buffer((max(b.size, 1),), storage(b.dtype), data=h)
                    IRBuilder.name(self.names.fresh("b_", b.name), view)
                    ke.buffers[b.name], ke.bufvars[b.name] = b, view
                for b, off in zip(k.locals, offsets, strict=True):
                    size = itemsize(storage(b.dtype))
                    view = TB.decl_buffer((max(b.size, 1),), storage(b.dtype), data=loc,
                                          elem_offset=off // size)
                    IRBuilder.name(self.names.fresh("l_", b.name), view)
                    ke.buffers[b.name], ke.bufvars[b.name] = b, view

        func, decls = _signature(signature)
        inits: list[Any] = []
        for b in k.locals:
            view, zero = ke.bufvars[b.name], literal(0, storage(b.dtype))
            if b.size <= 1:
                inits.append(tirx.BufferStore(view, zero, [0]))
            else:
                z = tirx.Var("z", "int64")
                inits.append(tirx.For(z, T.int64(0), T.int64(b.size), tirx.ForKind.SERIAL,
                                      tirx.BufferStore(view, zero, [z])))
        body = ke.block(k.body)
        stmts = decls + inits + body
        return func.with_body(_seq(stmts) if stmts else _nop()), _align(offset, LOCALS_ALIGN)

    def main(self, used: Sequence[str], woff: dict[str, int], wbytes: int, workspace: int,
             arena: int, gvs: Sequence[Any]) -> Any:
        """The entry function: a typed view of every global buffer, the kernel calls, and the
        copies of outputs that are not their own buffer."""
        m, lay = self.m, self.layout

        def build() -> None:
            with TB.prim_func():
                TB.func_name("main")
                roots: dict[str, Any] = {}
                ins, outs = [], []
                for i, name in enumerate(m.inputs):
                    b = lay.buf(name)
                    ins.append(TB.arg(f"in{i}", T.Buffer((max(b.size, 1),), b.dtype)))
                    roots[name] = ins[-1]
                out_index = {name: i for i, name in reversed(list(enumerate(m.outputs)))}
                own: set[int] = set()
                for i, name in enumerate(m.outputs):
                    b = lay.buf(name)
                    outs.append(TB.arg(f"out{i}", T.Buffer((max(b.size, 1),), b.dtype)))
                    if b.scope == "output" and b.alias is None and out_index[name] == i:
                        roots[name] = outs[-1]
                        own.add(i)
                ws = TB.arg("ws", T.Buffer((workspace,), "uint8"))
                weights = TB.arg("weights", T.Buffer((max(wbytes, 1),), "uint8"))
                # the caller's inputs, outputs, workspace and weights are distinct arrays
                # (TVMModel, run_model.py); aliasing inside the workspace is each kernel's
                TB.func_attr({"global_symbol": "main", "tirx.noalias": True})
                views: dict[str, Any] = {}
                for name in used:
                    b = lay.buf(name)
                    root = lay.root(name)
                    region = lay.regions[name]
                    if region.space == "arena":
                        data, byte = ws.data, region.start
                    elif region.space == "constant":
                        data, byte = weights.data, woff[root.name]
                    else:
                        data, byte = roots[root.name].data, region.start
                    size = itemsize(storage(b.dtype))
                    if byte % size:
                        raise EmitError(f"buffer {name!r}: offset {byte} is not aligned to its "
                                        "dtype")
                    views[name] = TB.decl_buffer((max(b.size, 1),), storage(b.dtype), data=data,
                                                 elem_offset=byte // size)
                    IRBuilder.name(self.names.fresh("g_", name), views[name])
                copies = []
                for i, name in enumerate(m.outputs):
                    if i in own:
                        continue
                    # an output that is an input, a constant, an alias or listed twice: copy it
                    b = lay.buf(name)
                    ov = TB.decl_buffer((max(b.size, 1),), storage(b.dtype), data=outs[i].data)
                    IRBuilder.name(self.names.fresh("o_", str(i)), ov)
                    copies.append((ov, views[name], max(b.size, 1)))
                for k, gv in zip(m.kernels, gvs, strict=True):
                    args = [T.address_of(views[p][0]) for p in k.params]
                    if k.locals:
                        args.append(T.address_of(ws[arena]))
                    # void, as the parser types `Module.kernel(...)`
                    TB.evaluate(ir.Call(gv, args, ret_ty=ir.TupleType([])))
                for ov, view, n in copies:
                    with TB.serial(T.int64(n)) as c:
                        TB.buffer_store(ov, view[c], [c])
                if not m.kernels and not copies:
                    TB.evaluate(T.int32(0))

        with IRBuilder() as ib:
            build()
        return ib.get()


class _NoC:
    """The C module assembler wants an emitter only to name storage types; none is used."""

    def storage_type(self, dtype: str) -> str:
        return dtype


def emit_weights(module: LoopModule) -> bytes:
    """weights.bin of `module`: the constants the kernels use, each 64-byte aligned."""
    tm = _TVMModule(module)
    return tm.weights(tm.layout.used_globals())[0]


def emit_tvm(module: LoopModule) -> Program:
    """The tirx IRModule of `module` (see the module docstring)."""
    return _TVMModule(module).emit()


def script_header(program: Program, model: str) -> str:
    """The lines model_tir.py starts with, before the printed IRModule."""
    return "\n".join([
        f'"""{model}: nnc\'s loop IR as an Apache TVM tirx IRModule (printed by nnc from the',
        "module it built into model.so).",
        "",
        "main(inputs..., outputs..., ws, weights): ws is WORKSPACE_BYTES of scratch (nnc's",
        'memory plan), weights the bytes of weights.bin."""',
        "",
        f"WORKSPACE_BYTES = {program.workspace_bytes}",
        f"WEIGHTS_BYTES = {len(program.weights)}",
        "",
        "",
    ])

