"""Loop IR -> C99 source: `emit_c(module)` returns the files of a self-contained C model.

    >>> files = emit_c(module, prefix="nnc")           # doctest: +SKIP
    >>> sorted(files)                                   # doctest: +SKIP
    ['model.c', 'model.h']                              # + weights.c/.bin for big models

`CStyleEmitter` turns loop-IR nodes into C text with one method per node kind; an OpenCL (or
other C-family) emitter subclasses it and overrides types, qualifiers and loop headers.
`emit_c` assembles the files around it from the Jinja2 skeletons in `templates/`.

Semantics of the loop IR in C (the contract with the loop interpreter):
- float16 is stored as `nnc_f16` (_Float16 or __fp16, see nnc_runtime.h) and computed in float;
  it is rounded to half on stores and casts.
- bool is stored as uint8_t 0/1; comparisons and `not` yield 0/1; `and`/`or`/`xor` are logical
  on bool and bitwise on integers.
- integer math wraps like numpy (two's complement, build with -fwrapv); integer div/mod
  truncate toward zero like C, and a zero divisor gives 0 instead of trapping.
- float min/max propagate NaN like numpy; `round` is round-half-to-even.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from nnc.backends.c.mve import elementwise_lanes
from nnc.ir.affine import flat_offset
from nnc.ir.graph import fresh_name
from nnc.ir.intrinsics import DOT_INTRINSICS
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
    map_expr,
    uses_var,
    walk_expr,
    walk_stmts,
)
from nnc.ir.types import itemsize

TEMPLATES = Path(__file__).parent / "templates"
# Constants above this many bytes in total go to weights.bin (.incbin) instead of C initializers:
# gcc spends ~5 us per initializer element (measured: 8 MB of float32 takes 10-15 s, 1 MB ~1.5 s)
# while .incbin is instant at any size. 1 MB keeps every MLPerf-Tiny model in portable C.
WEIGHTS_INLINE_LIMIT = 1 << 20
WEIGHTS_ALIGN = 64  # each constant in weights.bin starts on a cache line
# The host's weights section: a name of its own (not .rodata*, which the linker merges) so that
# objcopy can take weights.bin back out of libmodel.so; "a" = allocated, read-only.
HOST_WEIGHTS_SECTION_NAME = ".nnc_weights"
HOST_WEIGHTS_SECTION = f'{HOST_WEIGHTS_SECTION_NAME},"a"'
ARENA_ALIGN = 16

# dtype code in nnc_runtime.h (= ONNX TensorProto.DataType)
DTYPE_CODES: dict[str, int] = {
    "float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7,
    "bool": 9, "float16": 10, "float64": 11, "uint32": 12, "uint64": 13,
}
STORAGE_TYPES: dict[str, str] = {
    "float32": "float", "float64": "double", "float16": "nnc_f16", "bool": "uint8_t",
    "int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t",
    "uint8": "uint8_t", "uint16": "uint16_t", "uint32": "uint32_t", "uint64": "uint64_t",
}
# short tags for helper names: nnc_max_f32, nnc_div_i64, ...
_TAGS: dict[str, str] = {
    "float32": "f32", "float64": "f64", "float16": "f32", "bool": "u8", "int8": "i8",
    "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8", "uint16": "u16",
    "uint32": "u32", "uint64": "u64",
}
# integer types narrower than int: C promotes them, so arithmetic results are cast back to wrap
_NARROW = frozenset({"int8", "int16", "uint8", "uint16"})
_UNSIGNED = frozenset({"uint8", "uint16", "uint32", "uint64", "bool"})
_INTS = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})
_FLOATS = frozenset({"float16", "float32", "float64"})

# C operator precedence (lower binds tighter); PRIMARY needs no parentheses anywhere
PRIMARY, UNARY, MUL, ADD, SHIFT, REL, EQ, BAND, BXOR, BOR, LAND, LOR, COND = (
    0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
_ARITH = {"add": ("+", ADD), "sub": ("-", ADD), "mul": ("*", MUL)}
_COMPARE = {"lt": ("<", REL), "le": ("<=", REL), "gt": (">", REL), "ge": (">=", REL),
            "eq": ("==", EQ), "ne": ("!=", EQ)}
_BITWISE = {"and": ("&", BAND), "or": ("|", BOR), "xor": ("^", BXOR)}
# float intrinsics -> C99 libm name (float32 takes the f suffix)
_LIBM = {
    "exp": "exp", "log": "log", "sqrt": "sqrt", "tanh": "tanh", "erf": "erf", "floor": "floor",
    "ceil": "ceil", "round": "nearbyint", "abs": "fabs", "sin": "sin", "cos": "cos", "tan": "tan",
    "asin": "asin", "acos": "acos", "atan": "atan", "sinh": "sinh", "cosh": "cosh",
    "asinh": "asinh", "acosh": "acosh", "atanh": "atanh", "log1p": "log1p", "expm1": "expm1",
    "fmod": "fmod", "pow": "pow", "mod": "fmod",
}
_C_RESERVED = frozenset("""
auto break case char const continue default do double else enum extern float for goto if inline
int long register restrict return short signed sizeof static struct switch typedef union unsigned
void volatile while _Bool _Complex _Imaginary _Float16 __fp16 nnc_f16 bool true false NULL NAN
INFINITY isnan isinf main memcpy memset size_t ptrdiff_t int8_t int16_t int32_t int64_t uint8_t
uint16_t uint32_t uint64_t INT64_C UINT64_C INT64_MIN INT32_MIN INT32_MAX UINT32_C arena inputs
outputs asm fortran and or xor not and_eq or_eq xor_eq not_eq bitand bitor compl abs labs div
min max errno
""".split()) | frozenset(_LIBM.values()) | frozenset(v + "f" for v in _LIBM.values())


class EmitError(Exception):
    """The loop module cannot be emitted as C (ill-formed IR or an unsupported construct)."""


# ---------------------------------------------------------------- names and literals


class NameTable:
    """Maps IR names to unique, valid, non-reserved C identifiers."""

    def __init__(self, reserved_prefixes: Sequence[str] = ("nnc_", "NNC_"),
                 parent: NameTable | None = None) -> None:
        self.prefixes = tuple(reserved_prefixes)
        self.names: dict[str, str] = {}
        self.used: set[str] = set(parent.used) if parent else set()

    def add(self, name: str) -> str:
        """The C name of IR name `name` (created on first use)."""
        if name not in self.names:
            self.names[name] = self.unique(name)
        return self.names[name]

    def unique(self, name: str) -> str:
        """A fresh C identifier derived from `name`, not recorded as its mapping."""
        base = re.sub(r"[^0-9A-Za-z_]", "_", name) or "v"
        if base[0].isdigit() or base.startswith("_") or base.startswith(self.prefixes):
            base = "v_" + base
        if base in _C_RESERVED:
            base += "_"
        return fresh_name(base, self.used)

    def __getitem__(self, name: str) -> str:
        return self.names[name]

    def __contains__(self, name: object) -> bool:
        return name in self.names


def c_string(s: str) -> str:
    """A C string literal; non-printable and non-ASCII bytes as 3-digit octal escapes."""
    out = []
    for byte in s.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\?':  # '?' too: no trigraphs
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def float_literal(value: float, dtype: str) -> str:
    """Exact C literal of a float of `dtype` (float16 is computed in float, so float syntax)."""
    if dtype == "float64":
        v, text, suffix = float(value), repr(float(value)), ""
    else:
        with np.errstate(over="ignore"):
            f = np.float32(np.float16(value)) if dtype == "float16" else np.float32(value)
        v, text, suffix = float(f), str(f), "f"
    if math.isnan(v):
        return "NAN"
    if math.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    if not any(c in text for c in ".eE"):
        text += ".0"
    return text + suffix


def int_literal(value: int, dtype: str) -> str:
    v = int(value)
    if dtype == "bool":
        return "1" if v else "0"
    if dtype == "uint64":
        return f"UINT64_C({v})"
    if dtype == "uint32":
        return f"{v}u"
    if dtype == "int64":
        if v == -(2**63):
            return "INT64_MIN"
        return str(v) if -(2**31) < v < 2**31 else f"INT64_C({v})"
    if dtype == "int32" and v == -(2**31):
        return "INT32_MIN"
    return str(v)


def _int_range(dtype: str) -> tuple[int, int]:
    if dtype == "bool":
        return 0, 1
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


# ---------------------------------------------------------------- expression helpers (C text)

# Runtime helpers by "op/variant" (f: float, i: any int, s: signed, u: unsigned); `T` is the C
# type, `U` its unsigned twin, `B` its width in bits.
_HELPERS: dict[str, str] = {
    "max/f": "static inline T nnc_max_X(T a, T b) { return (a > b || a != a) ? a : b; }",
    "min/f": "static inline T nnc_min_X(T a, T b) { return (a < b || a != a) ? a : b; }",
    "max/i": "static inline T nnc_max_X(T a, T b) { return a > b ? a : b; }",
    "min/i": "static inline T nnc_min_X(T a, T b) { return a < b ? a : b; }",
    # signed: x / -1 would trap on INT_MIN, so negate through the unsigned type
    "div/s": "static inline T nnc_div_X(T a, T b) {\n"
            "    return b == 0 ? 0 : (b == -1 ? (T)(0u - (U)a) : (T)(a / b));\n}",
    "div/u": "static inline T nnc_div_X(T a, T b) { return b == 0 ? 0 : (T)(a / b); }",
    "mod/s": "static inline T nnc_mod_X(T a, T b) { return (b == 0 || b == -1) ? 0 : (T)(a % b); }",
    "mod/u": "static inline T nnc_mod_X(T a, T b) { return b == 0 ? 0 : (T)(a % b); }",
    "pow/s": "static inline T nnc_pow_X(T a, T b) {\n"
            "    U r = 1, base = (U)a;\n"
            "    if (b < 0) return a == 1 ? 1 : (a == -1 ? ((b & 1) ? -1 : 1) : 0);\n"
            "    for (; b > 0; b >>= 1) {\n"
            "        if (b & 1) r *= base;\n"
            "        base *= base;\n"
            "    }\n"
            "    return (T)r;\n}",
    "pow/u": "static inline T nnc_pow_X(T a, T b) {\n"
            "    U r = 1, base = (U)a;\n"
            "    for (; b > 0; b >>= 1) {\n"
            "        if (b & 1) r *= base;\n"
            "        base *= base;\n"
            "    }\n"
            "    return (T)r;\n}",
    "shl": "static inline T nnc_shl_X(T a, T b) { return (U)b >= B ? 0 : (T)((U)a << b); }",
    "shr/s": "static inline T nnc_shr_X(T a, T b) {\n"
             "    return (U)b >= B ? (a < 0 ? -1 : 0) : (T)(a >> b);\n}",
    "shr/u": "static inline T nnc_shr_X(T a, T b) { return (U)b >= B ? 0 : (T)(a >> b); }",
    "abs/s": "static inline T nnc_abs_X(T a) { return a < 0 ? (T)(0u - (U)a) : a; }",
    "sign/f": "static inline T nnc_sign_X(T a) { return a > 0 ? 1 : (a < 0 ? -1 : a); }",
    "sign/i": "static inline T nnc_sign_X(T a) { return (T)((a > 0) - (a < 0)); }",
    "sign/u": "static inline T nnc_sign_X(T a) { return (T)(a > 0); }",
    # TFLite MultiplyByQuantizedMultiplier (nnc.ir.fixed_point) in 32-bit arithmetic around one
    # 32x32->64 multiply-accumulate: x * 2^left, the saturating rounding doubling high multiply,
    # then a rounding divide by 2^right (ties away from zero). Inlined, a constant shift folds.
    "requantize": "static inline int32_t nnc_requantize_X(int32_t x, int32_t m, int32_t s) {\n"
                  "    int32_t left = s > 0 ? s : 0, right = s > 0 ? 0 : -s;\n"
                  "    int32_t a = (int32_t)((uint32_t)x << left);\n"
                  "    int32_t h = (a == INT32_MIN && m == INT32_MIN) ? INT32_MAX\n"
                  "        : (int32_t)(((int64_t)a * m + (INT64_C(1) << 30)) >> 31);\n"
                  "    int32_t mask = (int32_t)((UINT32_C(1) << right) - 1u);\n"
                  "    return (h >> right) + ((h & mask) > (mask >> 1) + (h < 0));\n}",
    # the same for a multiplier >= 0 (never INT32_MIN) and a shift <= 0 (a right shift only)
    "requantize_right": "static inline int32_t nnc_requantize_right_X(int32_t x, int32_t m, "
                        "int32_t s) {\n"
                        "    int32_t right = -s;\n"
                        "    int32_t h = (int32_t)(((int64_t)x * m + (INT64_C(1) << 30)) >> 31);\n"
                        "    int32_t mask = (int32_t)((UINT32_C(1) << right) - 1u);\n"
                        "    return (h >> right) + ((h & mask) > (mask >> 1) + (h < 0));\n}",
}


@dataclass(frozen=True, slots=True)
class CExpr:
    """C text of an expression and the precedence of its outermost operator."""

    text: str
    prec: int

    def at(self, max_prec: int) -> str:
        """The text, parenthesised unless it binds at least as tight as `max_prec`."""
        return self.text if self.prec <= max_prec else f"({self.text})"


def written_buffers(stmts: Iterable[Stmt], extern_writable: Callable[[str], bool]) -> set[str]:
    """Buffers stored to in `stmts`; a CallExtern may write the buffers `extern_writable` allows."""
    out: set[str] = set()
    for s in walk_stmts(stmts):
        if isinstance(s, Store):
            out.add(s.buffer)
        elif isinstance(s, CallExtern):
            out.update(a for a in s.args if isinstance(a, str) and extern_writable(a))
    return out


def _stmt_exprs(s: Stmt) -> tuple[Expr, ...]:
    """The expressions a statement itself holds (not those of nested statements)."""
    if isinstance(s, Store):
        return (*s.indices, s.value)
    if isinstance(s, If):
        return (s.cond,)
    if isinstance(s, CallExtern):
        return tuple(a for a in s.args if not isinstance(a, str))
    return ()


def flat_index(indices: Sequence[Expr], shape: Sequence[int]) -> Expr:
    """Row-major flattening in Horner form, with constant parts folded."""
    if not indices:
        return Const(0, "int64")
    flat = indices[0]
    for extent, idx in zip(shape[1:], indices[1:], strict=True):
        scaled: Expr
        if isinstance(flat, Const):
            scaled = Const(int(flat.value) * int(extent), "int64")
        elif extent == 1:
            scaled = flat
        else:
            scaled = Binary("mul", flat, Const(int(extent), "int64"), "int64")
        if isinstance(scaled, Const) and scaled.value == 0:
            flat = idx
        elif isinstance(idx, Const) and idx.value == 0:
            flat = scaled
        elif isinstance(scaled, Const) and isinstance(idx, Const):
            flat = Const(int(scaled.value) + int(idx.value), "int64")
        else:
            flat = Binary("add", scaled, idx, "int64")
    return flat


# ---------------------------------------------------------------- the C-style emitter


def _has_feature(workload: str, feature: str) -> bool:
    """Whether a workload key's `features=a,b,...` field lists `feature`."""
    for tok in workload.split():
        if tok.startswith("features="):
            return feature in tok[len("features="):].split(",")
    return False


def _at(e: Expr, var: str, value: int) -> Expr:
    """`e` with loop variable `var` replaced by the constant `value`."""
    return map_expr(e, lambda x: Const(value, "int64")
                    if isinstance(x, Var) and x.name == var else None)


class CStyleEmitter:
    """Emits loop-IR expressions, statements and kernels as C text, one method per node kind.

    `buffers` are all buffers a kernel may touch (its params and locals) and `names` their C
    identifiers. Helpers (nnc_max_f32, ...) are collected in `self.helpers` as they are used."""

    indent_unit = "    "
    storage_types = STORAGE_TYPES
    # lines before each kernel's signature: NNC_KERNEL (nnc_runtime.h) hides kernels from GCC's
    # interprocedural analysis, which miscompiles them (docs/gcc-pure-const-bug.md)
    kernel_attributes: tuple[str, ...] = ("NNC_KERNEL",)
    # threads of a parallel loop (host: runtime_c/include/nnc_threads.h); 1 emits them serially
    threads = 1
    _in_parallel = False
    vector_rows: frozenset[str] | set[str] = frozenset()  # Helium register rows (_vector_rows)

    def __init__(self) -> None:
        self.helpers: dict[str, str] = {}
        self.const_ranges: dict[str, tuple[int, int]] = {}  # (min, max) of integer constants
        self.buffers: dict[str, Buffer] = {}
        self.names: NameTable = NameTable()
        self.vars: dict[str, str] = {}  # loop variable -> C name, for the loops open now
        self.touched: set[str] = set()  # buffers the emitted text of this kernel mentions
        self.loaded: set[str] = set()  # ... and those it reads
        self.externs: list[Any] = []  # cmsis_nn.ExternCode of every external call emitted
        self.kernel_fname = ""

    # ---- types

    def storage_type(self, dtype: str) -> str:
        return self.storage_types[dtype]

    def compute_type(self, dtype: str) -> str:
        """The C type an expression of `dtype` is evaluated in."""
        return "float" if dtype == "float16" else self.storage_type(dtype)

    def math_fn(self, fn: str, dtype: str) -> str:
        base = _LIBM[fn]
        return base if dtype == "float64" else base + "f"

    def float_to_int(self, src: str, dst: str) -> str:
        """The helper converting `src` (a float type) to integer `dst` by nnc's rule
        (`nnc.ir.float_to_int`): to int32/int64/uint32/uint64 itself, narrower types through
        int32 (the caller narrows, modularly)."""
        wide = "float64" if src == "float64" else "float32"
        ctype, suffix = ("double", "") if wide == "float64" else ("float", "f")
        kind = {"int64": "i64", "uint32": "u32", "uint64": "u64"}.get(dst, "i32")
        tag = _TAGS[wide]
        name = f"nnc_to_{kind}_{tag}"
        if name in self.helpers:
            return name
        if kind in ("i32", "i64"):
            bits = kind[1:]
            self.helpers[name] = (
                f"static inline int{bits}_t {name}({ctype} x) {{\n"
                f"    return (x >= -{2.0 ** (int(bits) - 1):.1f}{suffix} && "
                f"x < {2.0 ** (int(bits) - 1):.1f}{suffix}) ? (int{bits}_t)x : INT{bits}_MIN;\n}}")
        else:
            bits = kind[1:]
            signed = self.float_to_int(src, "int" + bits)
            half = f"{2.0 ** (int(bits) - 1):.1f}{suffix}"
            flip = "0x80000000u" if bits == "32" else "UINT64_C(0x8000000000000000)"
            self.helpers[name] = (
                f"static inline uint{bits}_t {name}({ctype} x) {{\n"
                f"    return x >= {half} ? ((uint{bits}_t){signed}(x - {half}) ^ {flip})\n"
                f"        : (uint{bits}_t){signed}(x);\n}}")
        return name

    def helper(self, kind: str, dtype: str) -> str:
        """Name of runtime helper `kind` for `dtype`, adding its definition on first use."""
        tag = _TAGS[dtype]
        name = f"nnc_{kind.split('/')[0]}_{tag}"
        if name not in self.helpers:
            ctype = self.compute_type(dtype)
            unsigned = "float" if dtype in _FLOATS else (
                "uint" + ctype[3:] if ctype.startswith("int") else ctype)
            bits = str(8 * itemsize("float32" if dtype == "float16" else
                                    ("uint8" if dtype == "bool" else dtype)))
            text = _HELPERS[kind]
            text = re.sub(r"\bU\b", unsigned, re.sub(r"\bT\b", ctype, text))
            self.helpers[name] = text.replace("_X(", f"_{tag}(").replace(" B ", f" {bits} ")
        return name

    # ---- expressions

    def expr(self, e: Expr) -> CExpr:
        method = getattr(self, "expr_" + type(e).__name__.lower(), None)
        if method is None:
            raise EmitError(f"cannot emit expression {e!r}")
        return method(e)

    def text(self, e: Expr) -> str:
        return self.expr(e).text

    def expr_const(self, e: Const) -> CExpr:
        if e.dtype in _FLOATS:
            text = float_literal(float(e.value), e.dtype)
        else:
            text = int_literal(int(e.value), e.dtype)
        return CExpr(text, UNARY if text.startswith("-") else PRIMARY)

    def expr_var(self, e: Var) -> CExpr:
        try:
            return CExpr(self.vars[e.name], PRIMARY)
        except KeyError:
            raise EmitError(f"variable %{e.name} used outside of its loop") from None

    def buffer(self, name: str) -> Buffer:
        try:
            return self.buffers[name]
        except KeyError:
            raise EmitError(f"buffer {name!r} is neither a param nor a local of the kernel") \
                from None

    def element(self, name: str, indices: Sequence[Expr]) -> str:
        """C lvalue of one element of a buffer (a local scalar is a plain variable)."""
        buf = self.buffer(name)
        if len(indices) != len(buf.shape):
            raise EmitError(f"buffer {name!r} has rank {len(buf.shape)} but is indexed with "
                            f"{len(indices)} indices")
        cname = self.names[name]
        self.touched.add(name)
        if buf.scope == "local" and not buf.shape:
            return cname
        return f"{cname}[{self.text(flat_index(indices, buf.shape))}]"

    def expr_load(self, e: Load) -> CExpr:
        self.loaded.add(e.buffer)
        text = self.element(e.buffer, e.indices)
        if self.buffer(e.buffer).dtype == "float16":
            return CExpr(f"(float){text}", UNARY)
        return CExpr(text, PRIMARY)

    def wrap_narrow(self, text: str, prec: int, dtype: str) -> CExpr:
        """Cast the result of integer arithmetic back to a narrow type so it wraps like numpy
        (C computes char/short math in int)."""
        if dtype in _NARROW:
            return CExpr(f"({self.storage_type(dtype)})({text})", UNARY)
        return CExpr(text, prec)

    def expr_binary(self, e: Binary) -> CExpr:
        dt = e.a.dtype
        op = e.op
        if op in _COMPARE:
            folded = self._fold_trivial_compare(e)
            if folded is not None:
                return folded
            sym, prec = _COMPARE[op]
            return CExpr(f"{self.expr(e.a).at(ADD)} {sym} {self.expr(e.b).at(ADD)}", prec)
        if dt == "bool" and op in ("and", "or", "xor"):
            sym, prec = {"and": ("&&", LAND), "or": ("||", LOR), "xor": ("^", BXOR)}[op]
            return CExpr(f"{self.expr(e.a).at(UNARY)} {sym} {self.expr(e.b).at(UNARY)}", prec)
        if dt == "bool" and op not in ("min", "max"):
            raise EmitError(f"binary {op!r} is not defined on bool")
        a, b = self.expr(e.a), self.expr(e.b)
        if op in _ARITH:
            sym, prec = _ARITH[op]
            if dt in ("int64", "uint64") and isinstance(e.a, Const) and isinstance(e.b, Const):
                a = CExpr(f"({self.storage_type(dt)}){a.at(UNARY)}", UNARY)  # not int * int
            return self.wrap_narrow(f"{a.at(prec)} {sym} {b.at(prec - 1)}", prec, dt)
        if op == "div" and dt in _FLOATS:
            return CExpr(f"{a.at(MUL)} / {b.at(UNARY)}", MUL)
        if op in ("div", "mod") and dt in _INTS:
            if isinstance(e.b, Const) and int(e.b.value) not in (0, -1):
                sym = "/" if op == "div" else "%"
                return self.wrap_narrow(f"{a.at(MUL)} {sym} {b.at(UNARY)}", MUL, dt)
            kind = op + ("/u" if dt in _UNSIGNED else "/s")
            return CExpr(f"{self.helper(kind, dt)}({a.text}, {b.text})", PRIMARY)
        if op in ("min", "max"):
            kind = op + ("/f" if dt in _FLOATS else "/i")
            return CExpr(f"{self.helper(kind, dt)}({a.text}, {b.text})", PRIMARY)
        if op in ("pow", "mod") and dt in _FLOATS:
            return CExpr(f"{self.math_fn(op, dt)}({a.text}, {b.text})", PRIMARY)
        if op == "pow":
            kind = "pow/u" if dt in _UNSIGNED else "pow/s"
            return CExpr(f"{self.helper(kind, dt)}({a.text}, {b.text})", PRIMARY)
        if op in _BITWISE and dt in _INTS:
            sym, prec = _BITWISE[op]
            return CExpr(f"{a.at(UNARY)} {sym} {b.at(UNARY)}", prec)
        if op in ("shl", "shr") and dt in _INTS:
            kind = "shl" if op == "shl" else ("shr/u" if dt in _UNSIGNED else "shr/s")
            return CExpr(f"{self.helper(kind, dt)}({a.text}, {b.text})", PRIMARY)
        raise EmitError(f"binary {op!r} is not defined on {dt}")

    def _fold_trivial_compare(self, e: Binary) -> CExpr | None:
        """Comparisons of an integer against its type's min/max are constant; C compilers warn
        about them (-Wtype-limits), so emit the constant."""
        dt = e.a.dtype
        if dt in _FLOATS or isinstance(e.a, Const) == isinstance(e.b, Const):
            return None
        op, c = e.op, e.b
        if isinstance(e.a, Const):  # constant on the left: mirror the comparison
            c = e.a
            op = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}.get(op, op)
        assert isinstance(c, Const)
        lo, hi = _int_range(dt)
        always = {("ge", lo): True, ("lt", lo): False, ("le", hi): True, ("gt", hi): False}
        result = always.get((op, int(c.value)))
        if result is None:
            return None
        return CExpr("1" if result else "0", PRIMARY)

    def expr_call(self, e: Call) -> CExpr:
        fn, args, dt = e.fn, e.args, e.args[0].dtype
        if fn in ("isnan", "isinf") and dt not in _FLOATS:
            return CExpr("0", PRIMARY)
        if fn in DOT_INTRINSICS:
            return self.expr_dot(e)
        xs = [self.expr(a) for a in args]
        if fn in ("isnan", "isinf"):
            return CExpr(f"{fn}({xs[0].text}) != 0", EQ)  # the macros return any nonzero int
        if fn == "not":  # logical on every dtype (0/1 in the result dtype), like the interpreter
            text = f"!{xs[0].at(UNARY)}"
            return CExpr(text, UNARY) if dt in ("bool", *_INTS) else \
                CExpr(f"({self.compute_type(e.dtype)}){text}", UNARY)
        if fn == "neg":
            if dt in _UNSIGNED and dt not in _NARROW:
                return CExpr(f"0u - {xs[0].at(UNARY)}", ADD) if dt == "uint32" \
                    else CExpr(f"UINT64_C(0) - {xs[0].at(UNARY)}", ADD)
            operand = xs[0].at(UNARY)  # `- -x`, not `--x` (a decrement; found by fuzzing)
            return self.wrap_narrow(f"-{' ' if operand.startswith('-') else ''}{operand}",
                                    UNARY, dt)
        if fn == "requantize":
            return CExpr(f"{self.helper(self._requantize_kind(e), 'int32')}"
                         f"({', '.join(x.text for x in xs)})", PRIMARY)
        if fn == "sign":
            kind = "sign/f" if dt in _FLOATS else ("sign/u" if dt in _UNSIGNED else "sign/i")
            return CExpr(f"{self.helper(kind, dt)}({xs[0].text})", PRIMARY)
        if dt in _FLOATS:
            if fn not in _LIBM:
                raise EmitError(f"intrinsic {fn!r} has no C equivalent")
            return CExpr(f"{self.math_fn(fn, dt)}({', '.join(x.text for x in xs)})", PRIMARY)
        # integer (and bool) operands
        if fn in ("floor", "ceil", "round"):
            return xs[0]
        if fn == "abs":
            if dt in _UNSIGNED:
                return xs[0]
            return CExpr(f"{self.helper('abs/s', dt)}({xs[0].text})", PRIMARY)
        if fn == "fmod":
            kind = "mod/u" if dt in _UNSIGNED else "mod/s"
            return CExpr(f"{self.helper(kind, dt)}({xs[0].text}, {xs[1].text})", PRIMARY)
        raise EmitError(f"intrinsic {fn!r} is not defined on {dt}")

    def _range(self, e: Expr) -> tuple[int, int] | None:
        if isinstance(e, Const):
            return int(e.value), int(e.value)
        if isinstance(e, Load):
            return self.const_ranges.get(e.buffer)
        return None

    def _requantize_kind(self, e: Call) -> str:
        """The requantize helper for what its multiplier and shift can be: with a multiplier
        known non-negative the saturating case (both INT32_MIN) cannot occur, and with a shift
        known <= 0 there is no left shift; the result is the same, the code shorter."""
        m, s = self._range(e.args[1]), self._range(e.args[2])
        if m is not None and m[0] >= 0 and s is not None and s[1] <= 0:
            return "requantize_right"
        return "requantize"

    def expr_dot(self, e: Call) -> CExpr:
        """A dot intrinsic (nnc.ir.intrinsics): its loads are the addresses of the first
        elements; the definition comes with the target's instructions and a portable fallback."""
        a, b, acc = e.args
        if not (isinstance(a, Load) and isinstance(b, Load)):
            raise EmitError(f"{e.fn}: operands must be loads (the first elements)")
        name = f"nnc_{e.fn}"
        self.helpers.setdefault(name, DOT_INTRINSICS[e.fn].c_text)
        return CExpr(f"{name}(&{self.element(a.buffer, a.indices)}, "
                     f"&{self.element(b.buffer, b.indices)}, {self.text(acc)})", PRIMARY)

    def _exact_half(self, e: Expr) -> bool:
        """Is a float16 expression's float value already a representable half?"""
        return isinstance(e, (Load, Const)) or (isinstance(e, Cast) and e.dtype == "float16")

    def expr_cast(self, e: Cast) -> CExpr:
        src, dst = e.value.dtype, e.dtype
        v = self.expr(e.value)
        if src == dst:
            return v
        if dst == "bool":
            return CExpr(f"{v.at(ADD)} != 0", EQ)
        if dst == "float16":  # round to half now; later math sees the rounded value
            return CExpr(f"(float)NNC_F16({v.text})", UNARY)
        if src == "float16" and not self._exact_half(e.value):
            v = CExpr(f"NNC_F16({v.text})", PRIMARY)
        elif self.compute_type(src) == self.compute_type(dst):
            return v  # e.g. a loaded half is a float already; bool 0/1 is a valid uint8
        if src in _FLOATS and dst not in _FLOATS:  # defined for every value (ir.float_to_int)
            v = CExpr(f"{self.float_to_int(src, dst)}({v.text})", PRIMARY)
            if dst in ("int32", "int64", "uint32", "uint64"):
                return v
        return CExpr(f"({self.compute_type(dst)}){v.at(UNARY)}", UNARY)

    def expr_select(self, e: Select) -> CExpr:
        c, a, b = self.expr(e.cond), self.expr(e.a), self.expr(e.b)
        return CExpr(f"{c.at(LOR)} ? {a.at(LOR)} : {b.at(LOR)}", COND)

    # ---- statements

    def stmt(self, s: Stmt, depth: int) -> list[str]:
        method = getattr(self, "stmt_" + type(s).__name__.lower(), None)
        if method is None:
            raise EmitError(f"cannot emit statement {s!r}")
        return method(s, depth)

    def block(self, stmts: Sequence[Stmt], depth: int) -> list[str]:
        lines: list[str] = []
        for s in stmts:
            lines += self.stmt(s, depth)
        return lines

    def loop_pragma(self, s: For) -> str | None:
        """The hint line before a loop of kind `s.kind` (None: no hint)."""
        if s.kind == "vectorized":
            if self._dot_row(s):
                return f"NNC_UNROLL({s.extent})"
            return "NNC_VECTORIZE" if self._vector_safe(s) else None
        if s.kind == "unrolled":
            return f"NNC_UNROLL({min(max(s.extent, 1), 64)})"
        if s.kind == "parallel":
            return "/* parallel loop, run serially for now */"
        return None

    def _dot_row(self, s: For) -> bool:
        """A short lane loop of dot intrinsic calls (Helium's row of accumulators, one VMLADAVA
        per output channel against one input vector): no compiler vectorizes across the calls'
        horizontal sums, and unrolled, gcc keeps the row in registers between the calls (IC's
        3x3 convs on the M55: -111k of 5.70M instructions)."""
        if s.extent > 16 or not s.body:
            return False
        return all(isinstance(st, Store) and any(
            isinstance(x, Call) and x.fn in DOT_INTRINSICS for x in walk_expr(st.value))
            for st in s.body)

    def parallel_for(self, s: For, depth: int) -> list[str]:
        """A parallel loop on `threads` threads: its body is outlined into a function over an
        iteration range [lo, hi) that `nnc_parallel_for` (nnc_threads.h) runs in chunks. The
        function gets the params, read-only locals and outer loop variables it uses through a
        context struct; the locals the loop writes are its own (passes/parallelize.py checked
        each is written before it is read in every iteration and not read after the loop)."""
        fname = f"{self.kernel_fname}_par{len(self._outlined)}"
        self.helpers.setdefault("nnc_threads", f'#define NNC_THREADS {self.threads}\n'
                                               '#include "nnc_threads.h"')
        stmts = [st for st in walk_stmts(s.body)]
        used = {st.buffer for st in stmts if isinstance(st, Store)}
        exprs = [e for st in stmts for e in _stmt_exprs(st)]
        used |= {x.buffer for e in exprs for x in walk_expr(e) if isinstance(x, Load)}
        var_names = {x.name for e in exprs for x in walk_expr(e) if isinstance(x, Var)}
        written_locals = {st.buffer for st in stmts if isinstance(st, Store)
                          and self.buffer(st.buffer).scope == "local"}
        fields, params, members = [], [], []
        for name in sorted(used - written_locals, key=lambda n: self.names[n]):
            buf, cname = self.buffer(name), self.names[name]
            ctype = self.storage_type(buf.dtype)
            if buf.scope == "local" and not buf.shape:
                fields.append(f"{ctype} {cname};")
                params.append(f"const {ctype} {cname}")
            else:
                const = "" if name in self._written and buf.scope != "local" else "const "
                qual = "*restrict " if name in self._restrict else "*"
                fields.append(f"{const}{ctype} *{cname};")
                params.append(f"{const}{ctype} {qual}{cname}")
            members.append(cname)
        for ir_name in sorted(var_names & set(self.vars) - {s.var}):
            cname = self.vars[ir_name]
            fields.append(f"ptrdiff_t {cname};")
            params.append(f"const ptrdiff_t {cname}")
            members.append(cname)
        init = [f".{n} = {n}" for n in members]
        privates = sorted(written_locals, key=lambda n: self.names[n])
        unpack = [self.local_decl(self.buffer(n), self.names[n]) for n in privates]
        unpack += [f"(void){self.names[n]};" for n in privates]
        var = self.names.unique(s.var)
        saved_vars, saved_touched, saved_loaded = dict(self.vars), set(self.touched), \
            set(self.loaded)
        self.vars[s.var] = var
        self._in_parallel = True
        try:
            body = self.block(s.body, 2)
        finally:
            self._in_parallel = False
            self.vars = saved_vars
            mentioned = used - written_locals
            self.touched, self.loaded = saved_touched | mentioned, saved_loaded | mentioned
            self._private |= written_locals
        pad, unit = self.indent_unit * depth, self.indent_unit
        struct = f"struct {fname}_ctx"
        # The body takes the context's pointers as `restrict` parameters: compilers (LLVM in
        # particular) ignore `restrict` on local pointer variables, and without it clang-15
        # compiled resnet50's outlined convs 2x slower than the same loops inline.
        args = ", ".join(["lo", "hi", *(f"c->{n}" for n in members)])
        self._outlined.append("\n".join(
            [f"{struct} {{", *(unit + f for f in fields or ["char unused;"]), "};",
             *self.kernel_attributes,
             f"static void {fname}_body({', '.join(['ptrdiff_t lo', 'ptrdiff_t hi', *params])})",
             "{", *(unit + u for u in unpack),
             f"{unit}for (ptrdiff_t {var} = lo; {var} < hi; ++{var}) {{",
             *body, f"{unit}}}", "}",
             f"static void {fname}(void *ctx, ptrdiff_t lo, ptrdiff_t hi)", "{",
             f"{unit}const {struct} *c = (const {struct} *)ctx;",
             f"{unit}{fname}_body({args});", "}"]))
        # ~8 chunks per thread: a thread the OS preempts holds one chunk, not a share
        chunk = max(1, -(-s.extent // (8 * self.threads)))
        return [f"{pad}{{",
                f"{pad}{unit}{struct} nnc_ctx = {{{', '.join(init) or '0'}}};",
                f"{pad}{unit}nnc_parallel_for({fname}, &nnc_ctx, {s.extent}, {chunk});",
                f"{pad}}}"]

    def _vector_safe(self, s: For) -> bool:
        """ivdep promises no loop-carried memory dependence; refuse it when a store to memory
        lands on the same element in every iteration (an accumulation into a buffer)."""
        for st in walk_stmts(s.body):
            if isinstance(st, Store):
                buf = self.buffer(st.buffer)
                if buf.scope == "local" and not buf.shape:
                    continue  # a scalar local is a register: compilers handle reductions
                if not any(uses_var(i, s.var) for i in st.indices):
                    return False
            elif isinstance(st, CallExtern):
                return False
        return True

    def stmt_for(self, s: For, depth: int) -> list[str]:
        if s.kind == "parallel" and self.threads > 1 and not self._in_parallel:
            return self.parallel_for(s, depth)
        lanes = self.mve_lanes(s, depth)
        if lanes:
            return lanes
        pad = self.indent_unit * depth
        var = self.names.unique(s.var)
        outer = self.vars.get(s.var)
        self.vars[s.var] = var
        lines = []
        pragma = self.loop_pragma(s)
        if pragma:
            lines.append(pad + pragma)
        lines.append(f"{pad}for (ptrdiff_t {var} = 0; {var} < {s.extent}; ++{var}) {{")
        lines += self.block(s.body, depth + 1)
        if outer is None:
            del self.vars[s.var]
        else:
            self.vars[s.var] = outer
        return lines + [pad + "}"]

    def mve_lanes(self, s: For, depth: int) -> list[str]:
        """A vectorized loop of one of three forms as Helium code, 4 lanes per instruction, with
        the scalar loop as the portable fallback ([] when the loop is of neither form; gcc 12
        does not vectorize the int8 <-> int32 widening and narrowing for MVE itself):
        - `acc[i] += (x[.. + i] + zx) * (w[.. + i] + zw)` over a local int32 accumulator row and
          two contiguous int8 streams (a depthwise conv's channels): widening byte loads, VMUL,
          VADD, wrapping like the scalar loop;
        - `y[.. + i] = int8(clamp(requantize(acc[i], m[.. + i], s[.. + i]), lo, hi) + zp)` with
          constant multipliers >= 0 and shifts <= 0 (the finish of such a row): VQRDMULH (the
          saturating rounding doubling high multiply, exactly), the rounding divide by 2^-s
          with ties away from zero, VMAX/VMIN, a narrowing byte store;
        - a store into memory of int32 lane arithmetic over contiguous loads (an elementwise
          op: add_s8's rescaled inputs, sum and requantization), any extent
          (`nnc.backends.c.mve`)."""
        if not getattr(self, "helium", False) or s.kind != "vectorized" or len(s.body) != 1:
            return []
        st = s.body[0]
        if not isinstance(st, Store):
            return []
        groups: list[str] = []
        # a row into memory: an elementwise op (add_s8, mul_s8) or the finish (requantize,
        # clamp, offset) of a dense conv's 4-channel accumulator tile (backends/c/mve.py:
        # IC on the M55 -238k); wider accumulator rows (depthwise and first-layer channel
        # lanes, kept in Q registers across the taps) keep `_mve_requantize`: there gcc
        # hoisted the per-channel multipliers and shifts of this form and spilled the rows
        # (IC's first conv +104k)
        row = any(isinstance(x, Load) and self.buffer(x.buffer).scope == "local"
                  for x in walk_expr(st.value))
        # a register row (`_vector_rows`: int32x4_t values) is read by the lane forms below
        in_regs = st.buffer in self.vector_rows or any(
            isinstance(x, Load) and x.buffer in self.vector_rows for x in walk_expr(st.value))
        if not in_regs and self.buffer(st.buffer).scope != "local" \
                and (not row or s.extent <= 4):
            groups = elementwise_lanes(self, s) or []
        if not groups and s.extent % 4 == 0:
            groups = self._mve_mac(st, s) or self._mve_requantize(st, s) or self._mve_init(st, s)
        if not groups:
            return []
        self.helpers.setdefault("nnc_mve_include", "#if defined(__ARM_FEATURE_MVE) && "
                                "(__ARM_FEATURE_MVE & 1)\n#include <arm_mve.h>\n#endif")
        pad, inner = self.indent_unit * depth, self.indent_unit * (depth + 1)
        lines = ["#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)", f"{pad}{{"]
        lines += [inner + line for line in groups]
        lines += [f"{pad}}}", "#else"]
        var_name = self.names.unique(s.var)
        outer = self.vars.get(s.var)
        self.vars[s.var] = var_name
        lines.append(f"{pad}for (ptrdiff_t {var_name} = 0; {var_name} < {s.extent}; "
                     f"++{var_name}) {{")
        lines += self.block(s.body, depth + 1)
        if outer is None:
            del self.vars[s.var]
        else:
            self.vars[s.var] = outer
        return lines + [pad + "}", "#endif"]

    def _acc_row(self, e: Expr, var: str) -> Buffer | None:
        """The local int32 row `e` loads at [var], else None."""
        if not (isinstance(e, Load) and e.indices == (Var(var),)):
            return None
        buf = self.buffer(e.buffer)
        return buf if buf.scope == "local" and buf.dtype == "int32" else None

    def _acc_vec(self, acc: Buffer, g: int) -> str:
        """The C value of lanes g..g+3 of an accumulator row: a register (`int32x4_t`) of a
        register row, else a vector load."""
        if acc.name in self.vector_rows:
            self.touched.add(acc.name)
            self.loaded.add(acc.name)
            return f"{self.names[acc.name]}_v[{g // 4}]"
        return f"vldrwq_s32(&{self.element(acc.name, (Const(g, 'int64'),))})"

    def _set_acc_vec(self, acc: Buffer, g: int, value: str) -> str:
        """The C statement storing `value` into lanes g..g+3 of an accumulator row."""
        if acc.name in self.vector_rows:
            self.touched.add(acc.name)
            return f"{self.names[acc.name]}_v[{g // 4}] = {value};"
        return f"vstrwq_s32(&{self.element(acc.name, (Const(g, 'int64'),))}, {value});"

    def _match_mac(self, st: Store, s: For) -> tuple[Buffer, list[Any], Expr | None] | None:
        """`acc[i] += A * B` over a local int32 row: (row, the int8 streams (load, offset),
        the broadcast int32 scalar or None when both sides are streams), else None."""
        acc = self._acc_row(Load(st.buffer, st.indices, "int32"), s.var) \
            if self.buffer(st.buffer).dtype == "int32" else None
        v = st.value
        if acc is None or not (isinstance(v, Binary) and v.op == "add"
                               and v.a == Load(acc.name, (Var(s.var),), "int32")
                               and isinstance(v.b, Binary) and v.b.op == "mul"):
            return None
        streams = [self._int8_stream(side, s.var) for side in (v.b.a, v.b.b)]
        if streams[0] is None and streams[1] is not None:
            streams.reverse()
            scalar = v.b.a
        else:
            scalar = v.b.b
        if streams[0] is not None and streams[1] is None \
                and not uses_var(scalar, s.var) and scalar.dtype == "int32":
            return acc, streams[:1], scalar
        if any(x is None for x in streams):
            return None
        return acc, streams, None

    def _mve_mac(self, st: Store, s: For) -> list[str]:
        found = self._match_mac(st, s)
        if found is None:
            return []
        acc, streams, scalar = found
        lines = []
        for g in range(0, s.extent, 4):
            ops = []
            for ld, offset in streams:
                vec = f"vldrbq_s32({self._addr(ld.buffer, ld.indices, s.var, g)})"
                ops.append(f"vaddq_n_s32({vec}, {offset})" if offset else vec)
            if scalar is not None:
                # one stream against a broadcast element (a first layer's input): VMLA by scalar
                mac = f"vmlaq_n_s32({self._acc_vec(acc, g)}, {ops[0]}, {self.text(scalar)})"
            else:  # (MVE's VMLA takes a scalar only: VMUL + VADD, wrapping as the loop)
                mac = f"vaddq_s32({self._acc_vec(acc, g)}, vmulq_s32({ops[0]}, {ops[1]}))"
            lines.append(self._set_acc_vec(acc, g, mac))
        return lines

    def _match_init(self, st: Store, s: For) -> tuple[Buffer, Expr] | None:
        """`acc[i] = c` (an int32 constant) or `= b[.. + i]` (a contiguous int32 param, the
        bias) into a register row (memory rows keep the plain loop, which gcc vectorizes)."""
        acc = self._acc_row(Load(st.buffer, st.indices, "int32"), s.var) \
            if self.buffer(st.buffer).dtype == "int32" else None
        v = st.value
        if isinstance(v, Cast) and v.dtype == "int32" and v.value.dtype == "int32":
            v = v.value
        if acc is None or v.dtype != "int32":
            return None
        if isinstance(v, Const):
            return acc, v
        if isinstance(v, Load) and self.buffer(v.buffer).scope != "local" \
                and self._contiguous(v.indices, self.buffer(v.buffer), s.var) is not None:
            return acc, v
        return None

    def _mve_init(self, st: Store, s: For) -> list[str]:
        found = self._match_init(st, s)
        if found is None or found[0].name not in self.vector_rows:
            return []
        acc, v = found
        lines = []
        for g in range(0, s.extent, 4):
            value = f"vdupq_n_s32({self.text(v)})" if isinstance(v, Const) else \
                f"vldrwq_s32({self._addr(v.buffer, v.indices, s.var, g)})"  # type: ignore[union-attr]
            lines.append(self._set_acc_vec(acc, g, value))
        return lines

    def _match_requantize(self, st: Store, s: For
                          ) -> tuple[Buffer, Load, Load, int, int, int] | None:
        """`y[.. + i] = int8(clamp(requantize(acc[i], m, s), lo, hi) + zp)`: (row, m, s, lo, hi,
        zp), else None."""
        out = self.buffer(st.buffer)
        v = st.value
        if out.dtype != "int8" or not isinstance(v, Cast) or v.dtype != "int8":
            return None
        if self._contiguous(st.indices, out, s.var) is None:
            return None
        e, zp = v.value, 0
        if isinstance(e, Binary) and e.op == "add" and isinstance(e.b, Const):
            e, zp = e.a, int(e.b.value)
        if not (isinstance(e, Binary) and e.op == "min" and isinstance(e.b, Const)
                and isinstance(e.a, Binary) and e.a.op == "max" and isinstance(e.a.b, Const)):
            return None
        hi, lo, rq = int(e.b.value), int(e.a.b.value), e.a.a
        if not (isinstance(rq, Call) and rq.fn == "requantize"
                and self._requantize_kind(rq) == "requantize_right"):
            return None
        acc = self._acc_row(rq.args[0], s.var)
        m, sh = rq.args[1], rq.args[2]
        if acc is None or not all(isinstance(x, Load) and self._contiguous(
                x.indices, self.buffer(x.buffer), s.var) is not None for x in (m, sh)):
            return None
        assert isinstance(m, Load) and isinstance(sh, Load)
        return acc, m, sh, lo, hi, zp

    def _mve_requantize(self, st: Store, s: For) -> list[str]:
        found = self._match_requantize(st, s)
        if found is None:
            return []
        acc, m, sh, lo, hi, zp = found
        lines = []
        for g in range(0, s.extent, 4):
            y = self._addr(st.buffer, st.indices, s.var, g)
            # nnc_ names: a temporary must not shadow a loop variable the addresses use
            lines += [
                "{",
                f"    int32x4_t nnc_h = vqrdmulhq_s32({self._acc_vec(acc, g)}, "
                f"vldrwq_s32({self._addr(m.buffer, m.indices, s.var, g)}));",
                f"    int32x4_t nnc_sh = "
                f"vldrwq_s32({self._addr(sh.buffer, sh.indices, s.var, g)});",
                "    int32x4_t nnc_mask = "
                "vsubq_n_s32(vshlq_s32(vdupq_n_s32(1), vnegq_s32(nnc_sh)), 1);",
                "    int32x4_t nnc_thr = vaddq_s32(vshrq_n_s32(nnc_mask, 1), "
                "vreinterpretq_s32_u32(vshrq_n_u32(vreinterpretq_u32_s32(nnc_h), 31)));",
                "    int32x4_t nnc_r = vshlq_s32(nnc_h, nnc_sh);",
                "    nnc_r = vaddq_m_n_s32(nnc_r, nnc_r, 1, "
                "vcmpgtq_s32(vandq_s32(nnc_h, nnc_mask), nnc_thr));",
                f"    nnc_r = vminq_s32(vmaxq_s32(nnc_r, vdupq_n_s32({lo})), vdupq_n_s32({hi}));",
                f"    vstrbq_s32({y}, {'vaddq_n_s32(nnc_r, ' + str(zp) + ')' if zp else 'nnc_r'});",
                "}",
            ]
        return lines

    def lane_contiguous(self, access: Load | Store, var: str) -> bool:
        """Whether `access` steps by one element with loop variable `var`."""
        return self._contiguous(access.indices, self.buffer(access.buffer), var) is not None

    def value_range(self, e: Expr) -> tuple[int, int] | None:
        """(min, max) of a constant or of a load of an integer constant, else None."""
        return self._range(e)

    def _addr(self, buffer: str, indices: Sequence[Expr], var: str, value: int) -> str:
        """C address of buffer[indices] with loop variable `var` at `value`."""
        return "&" + self.element(buffer, tuple(_at(i, var, value) for i in indices))

    def _contiguous(self, indices: Sequence[Expr], buf: Buffer, var: str) -> Any:
        names = {x.name for i in indices for x in walk_expr(i) if isinstance(x, Var)}
        form = flat_offset(indices, buf.shape, {n: 2 for n in names})
        return form if form is not None and form.get(var) == 1 else None

    def _int8_stream(self, e: Expr, var: str) -> tuple[Load, int] | None:
        """(load, offset) of `int32(x[...]) + offset` whose element steps by one with `var`."""
        offset = 0
        if isinstance(e, Binary) and e.op in ("add", "sub") and isinstance(e.b, Const):
            offset = int(e.b.value) * (1 if e.op == "add" else -1)
            e = e.a
        if not (isinstance(e, Cast) and e.dtype == "int32" and isinstance(e.value, Load)
                and e.value.dtype == "int8"):
            return None
        ld = e.value
        buf = self.buffer(ld.buffer)
        names = {x.name for i in ld.indices for x in walk_expr(i) if isinstance(x, Var)}
        form = flat_offset(ld.indices, buf.shape, {n: 2 for n in names})
        if form is None or form.get(var) != 1 or not -2**31 <= offset < 2**31:
            return None
        return ld, offset

    def stmt_store(self, s: Store, depth: int) -> list[str]:
        buf = self.buffer(s.buffer)
        if s.value.dtype != buf.dtype:
            raise EmitError(f"store of a {s.value.dtype} value into {buf.dtype} buffer "
                            f"{buf.name!r}")
        value = self.expr(s.value)
        text = value.text
        if buf.dtype == "float16":
            text = f"NNC_F16({value.text})"
        return [f"{self.indent_unit * depth}{self.element(s.buffer, s.indices)} = {text};"]

    def stmt_if(self, s: If, depth: int) -> list[str]:
        pad = self.indent_unit * depth
        lines = [f"{pad}if ({self.text(s.cond)}) {{"] + self.block(s.then, depth + 1)
        if s.orelse:
            lines += [f"{pad}}} else {{"] + self.block(s.orelse, depth + 1)
        return lines + [pad + "}"]

    def stmt_callextern(self, s: CallExtern, depth: int) -> list[str]:
        names = [a for a in s.args if isinstance(a, str) and a]
        self.touched.update(names)
        self.loaded.update(names)
        pad = self.indent_unit * depth
        from nnc.backends import cmsis_nn

        if cmsis_nn.is_cmsis_call(s.fn):
            tag = f"{self.kernel_fname}_c{len(self.externs)}"
            code = cmsis_nn.render_call(s, {a: self.names[self.buffer(a).name] for a in names},
                                        tag)
            self.externs.append(code)
            inner = [ln if ln.startswith("#") else pad + self.indent_unit + ln for ln in code.body]
            return [pad + "{", *inner, pad + "}"]
        args = [(self.names[self.buffer(a).name] if a else "NULL") if isinstance(a, str)
                else self.text(a) for a in s.args]
        return [f"{pad}{s.fn}({', '.join(args)});"]

    # ---- kernels

    def param_decl(self, buf: Buffer, cname: str, written: bool, restrict: bool) -> str:
        const = "" if written else "const "
        qual = "*restrict " if restrict else "*"
        return f"{const}{self.storage_type(buf.dtype)} {qual}{cname}"

    def local_decl(self, buf: Buffer, cname: str) -> str:
        ctype = self.storage_type(buf.dtype)
        if not buf.shape:
            return f"{ctype} {cname} = 0;"
        return f"{ctype} {cname}[{max(buf.size, 1)}] = {{0}};"

    def kernel(self, k: Kernel, fname: str, params: Sequence[Buffer], written: set[str],
               restrict: set[str], names: NameTable) -> str:
        """C function for kernel `k`; `names` already holds the params' C names."""
        self.names = NameTable(parent=names)
        self.kernel_fname = fname
        self.names.names.update({b.name: names[b.name] for b in params})
        self.vars, self.touched, self.loaded = {}, set(), set()
        self._written, self._restrict, self._outlined = written, restrict, []
        self._private: set[str] = set()  # locals of outlined parallel loops (parallel_for)
        # Helium code for lane loops only where the kernel was scheduled for an MVE core (its
        # workload key names the target's features)
        self.helium = _has_feature(k.workload, "mve")
        self.buffers = {b.name: b for b in params}
        for b in k.locals:
            if b.name in self.buffers:
                raise EmitError(f"kernel {k.name}: local {b.name!r} shadows a param")
            self.buffers[b.name] = b
            self.names.add(b.name)
        self.vector_rows = self._vector_rows(k)
        decls = [self.param_decl(b, self.names[b.name], b.name in written, b.name in restrict)
                 for b in params]
        body = self.block(k.body, 1)
        pad = self.indent_unit
        head = [pad + line for line in self.kernel_prologue(params, decls)]
        local_bufs = [b for b in k.locals
                      if b.name not in self._private or b.name in self.touched]
        for b in local_bufs:
            head += [line if line.startswith("#") else pad + line for line in self.row_decl(b)] \
                if b.name in self.vector_rows else [pad + self.local_decl(b, self.names[b.name])]
        # what the C text does not mention (e.g. folded away) would warn as unused
        head += [f"{pad}(void){self.names[b.name]};" for b in params
                 if b.name not in self.touched]
        head += [f"{pad}(void){self.names[b.name]};" for b in local_bufs
                 if b.name not in self.loaded and b.name not in self.vector_rows]
        signature = self.kernel_header(fname, params, decls)
        return "\n".join([*self._outlined, *self.kernel_attributes, signature, "{"]
                         + head + body + ["}"])

    def row_decl(self, buf: Buffer) -> list[str]:
        """A register row: `int32x4_t` values with Helium (`_vector_rows`), the array in the
        portable fallback."""
        cname = self.names[buf.name]
        return ["#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)",
                f"int32x4_t {cname}_v[{buf.size // 4}];", "#else",
                self.local_decl(buf, cname), "#endif"]

    def _vector_rows(self, k: Kernel) -> set[str]:
        """The local int32 accumulator rows (at most 16 lanes) that every statement touching
        them reads and writes whole, in a vectorized lane loop of a Helium form (init, MAC,
        requantize): in the MVE code they are `int32x4_t` values, which gcc keeps in
        registers across the reduction (a row in memory costs a vector load and store per
        MAC)."""
        if not self.helium or self.threads > 1:
            return set()
        rows = {b.name for b in k.locals if b.dtype == "int32" and len(b.shape) == 1
                and b.shape[0] % 4 == 0 and 4 <= b.shape[0] <= 16}
        if not rows:
            return set()

        def visit(body: Sequence[Stmt]) -> None:
            nonlocal rows
            for st in body:
                if isinstance(st, For) and st.kind == "vectorized" and len(st.body) == 1 \
                        and isinstance(st.body[0], Store) and st.extent % 4 == 0:
                    store = st.body[0]
                    found: Any = self._match_mac(store, st) \
                        or self._match_requantize(store, st) or self._match_init(store, st)
                    if found and found[0].shape == (st.extent,):
                        # a lane form: its row is whole; another row it reads stays in memory
                        rows -= {x.buffer for e in _stmt_exprs(store) for x in walk_expr(e)
                                 if isinstance(x, Load) and x.buffer != found[0].name}
                        continue
                if isinstance(st, Store):
                    rows.discard(st.buffer)
                if isinstance(st, CallExtern):
                    rows -= {a for a in st.args if isinstance(a, str)}
                rows -= {x.buffer for e in _stmt_exprs(st) for x in walk_expr(e)
                         if isinstance(x, Load)}
                if isinstance(st, For):
                    visit(st.body)
                elif isinstance(st, If):
                    visit(st.then)
                    visit(st.orelse)

        visit(k.body)
        return rows

    def kernel_header(self, fname: str, params: Sequence[Buffer], decls: Sequence[str]) -> str:
        """The kernel's function header; `decls` are the params' declarations (param_decl)."""
        return f"static void {fname}({', '.join(decls) or 'void'})"

    def kernel_prologue(self, params: Sequence[Buffer], decls: Sequence[str]) -> list[str]:
        """Lines before the locals' declarations (none in C: the params are the arguments)."""
        return []


# ---------------------------------------------------------------- module assembly


@dataclass(frozen=True, slots=True)
class _Region:
    """Where a global buffer's bytes live: (space, key) plus a byte range inside it."""

    space: str  # "input" | "output" | "constant" | "arena"
    key: str
    start: int
    end: int

    def overlaps(self, o: _Region) -> bool:
        same = (self.space, self.key) == (o.space, o.key)
        return same and self.start < o.end and o.start < self.end


def _format_values(arr: np.ndarray) -> list[str]:
    """C initializer tokens for a constant, vectorised where numpy allows it."""
    flat = np.ascontiguousarray(arr).reshape(-1)
    if flat.dtype == np.bool_:
        flat = flat.astype(np.uint8)
    if flat.dtype.kind == "f":
        # %.9g round-trips float32 (and float16); %.17g float64. float32 literals carry `f`
        # (a double literal in a float array warns under -Wconversion)
        if flat.dtype == np.float64:
            tokens = list(map("%.17g".__mod__, flat.tolist()))
        else:
            tokens = [t + "f" if "." in t or "e" in t else t + ".0f"
                      for t in map("%.9g".__mod__, flat.astype(np.float64).tolist())]
        for i in np.flatnonzero(~np.isfinite(flat)).tolist():
            v = float(flat[i])
            tokens[i] = "NAN" if math.isnan(v) else ("INFINITY" if v > 0 else "-INFINITY")
        for i in np.flatnonzero((flat == 0) & np.signbit(flat)).tolist():
            tokens[i] = "-0.0" if flat.dtype == np.float64 else "-0.0f"  # "-0": the integer 0
        return tokens
    tokens = list(map(str, flat.tolist()))
    if flat.dtype == np.int64:
        for i in np.flatnonzero(flat == np.iinfo(np.int64).min).tolist():
            tokens[i] = "INT64_MIN"  # -9223372036854775808 is not a valid C literal
    elif flat.dtype == np.uint64:
        tokens = [t + "u" for t in tokens]
    return tokens


def format_c_array(arr: np.ndarray, per_line: int = 16) -> str:
    tokens = _format_values(arr) or ["0"]
    rows = (", ".join(tokens[i : i + per_line]) for i in range(0, len(tokens), per_line))
    return "    " + ",\n    ".join(rows)


def kernel_comment(k: Kernel) -> str:
    """The C comment line above a kernel: its name, op kind and name, MACs."""
    about = " ".join(filter(None, [k.op_kind, repr(k.op_name) if k.op_name else ""]))
    about += f", {k.macs} MACs" if k.macs else ""
    comment = f"/* {k.name}: {about} */" if about else f"/* {k.name} */"
    return comment[:2] + comment[2:-2].replace("*/", "* /") + comment[-2:]


def _template_env() -> Environment:
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                       keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


class _ModuleEmitter:
    """Assembles model.h / model.c (/ weights.c + weights.bin) for one LoopModule."""

    weights_section = ".rodata"

    def __init__(self, module: LoopModule, prefix: str, weights_inline_limit: int,
                 emitter: CStyleEmitter) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
            raise EmitError(f"prefix {prefix!r} is not a C identifier")
        self.m = module
        self.p = prefix
        self.limit = weights_inline_limit
        self.em = emitter
        # ranges of the integer constants, so helpers can drop cases that cannot occur
        emitter.const_ranges = {
            name: (int(np.min(v)), int(np.max(v))) for name, v in module.constants.items()
            if np.asarray(v).dtype.kind in "iu" and np.asarray(v).size}
        self.bufs: dict[str, Buffer] = {}
        for b in module.buffers:
            if b.name in self.bufs:
                raise EmitError(f"buffer {b.name!r} declared twice")
            self.bufs[b.name] = b
        reserved = ("nnc_", "NNC_", prefix + "_", prefix.upper() + "_")
        self.names = NameTable(reserved_prefixes=reserved)
        for b in module.buffers:
            self.names.add(b.name)
        self.offsets = self._arena_offsets()
        self.regions = {name: self._region(name) for name in self.bufs}

    # ---- validation and layout

    def buf(self, name: str) -> Buffer:
        try:
            return self.bufs[name]
        except KeyError:
            raise EmitError(f"buffer {name!r} is not declared in module {self.m.name!r}") from None

    def root(self, name: str) -> Buffer:
        seen = [name]
        b = self.buf(name)
        while b.alias is not None:
            b = self.buf(b.alias)
            if b.name in seen:
                raise EmitError(f"alias cycle through {' -> '.join(seen + [b.name])}")
            seen.append(b.name)
        return b

    def _arena_offsets(self) -> dict[str, int]:
        """Planned offsets; arena buffers the memory planner did not place go one after another
        past the planned ones (correct, just not compact)."""
        offsets: dict[str, int] = {}
        end = 0
        for b in self.m.buffers:
            if b.scope == "arena" and b.alias is None and b.offset is not None:
                if b.offset < 0 or b.offset % itemsize(b.dtype):
                    raise EmitError(f"arena buffer {b.name!r}: bad offset {b.offset}")
                offsets[b.name] = b.offset
                end = max(end, b.offset + b.nbytes)
        end = max(end, self.m.arena_size)
        for b in self.m.buffers:
            if b.scope == "arena" and b.alias is None and b.offset is None:
                end = -(-end // ARENA_ALIGN) * ARENA_ALIGN
                offsets[b.name] = end
                end += b.nbytes
        self.arena_size = end
        return offsets

    def _region(self, name: str) -> _Region:
        r = self.root(name)
        size = self.buf(name).nbytes
        if r.scope == "arena":
            start = self.offsets[r.name]
            return _Region("arena", "", start, start + size)
        if r.scope == "local":
            raise EmitError(f"global buffer {name!r} has scope 'local'")
        return _Region(r.scope, r.name, 0, size)

    def is_const(self, name: str) -> bool:
        return self.root(name).scope in ("input", "constant")

    def validate(self) -> None:
        m = self.m
        if len(m.input_names or m.inputs) != len(m.inputs) or \
                len(m.output_names or m.outputs) != len(m.outputs):
            raise EmitError("input_names/output_names must parallel inputs/outputs")
        for name in m.inputs:
            b = self.buf(name)
            if b.scope != "input" or b.alias is not None:
                raise EmitError(f"model input {name!r} must be an 'input' buffer without alias")
        for b in m.buffers:
            if b.scope == "input" and b.alias is None and b.name not in m.inputs:
                raise EmitError(f"input buffer {b.name!r} is not a model input")
            if b.scope == "output" and b.alias is None and b.name not in m.outputs:
                raise EmitError(f"output buffer {b.name!r} is not a model output")
            if b.alias is not None:
                target = self.root(b.name)
                if b.nbytes > target.nbytes:
                    raise EmitError(f"alias {b.name!r} ({b.nbytes} B) is larger than "
                                    f"{target.name!r} ({target.nbytes} B)")
            elif b.scope == "constant":
                if b.name not in m.constants:
                    raise EmitError(f"constant buffer {b.name!r} has no data")
                data = np.asarray(m.constants[b.name])
                if data.size != b.size or str(data.dtype) != b.dtype:
                    raise EmitError(f"constant {b.name!r}: data is {data.dtype}{list(data.shape)}, "
                                    f"buffer is {b.dtype}{list(b.shape)}")

    # ---- pieces

    def used_globals(self) -> list[str]:
        """Global buffers the generated code touches, in declaration order (with alias targets)."""
        used: set[str] = set(self.m.outputs)
        for k in self.m.kernels:
            used.update(k.params)
        for name in list(used):
            b = self.buf(name)
            while b.alias is not None:
                used.add(b.alias)
                b = self.buf(b.alias)
        # alias targets first, so each pointer is declared before the aliases built from it
        return sorted((b.name for b in self.m.buffers if b.name in used), key=self._alias_depth)

    def _alias_depth(self, name: str) -> int:
        depth, b = 0, self.buf(name)
        while b.alias is not None:
            depth, b = depth + 1, self.buf(b.alias)
        return depth

    def constants(self, used: list[str]) -> tuple[list[str], dict[str, str], dict[str, bytes]]:
        """(C definitions, buffer -> pointer expression for weights.bin, extra files)."""
        consts = [self.buf(n) for n in used if self.buf(n).scope == "constant"
                  and self.buf(n).alias is None]
        total = sum(b.nbytes for b in consts)
        if total <= self.limit:
            # file-scope arrays take the prefix: a kernel parameter of the constant's own name
            # would shadow them (-Wshadow); the run function points a local of that name at them
            defs, where = [], {}
            for b in consts:
                data = np.asarray(self.m.constants[b.name]).astype(b.dtype, copy=False)
                where[b.name] = f"{self.p}_const_{self.names[b.name]}"
                defs.append(f"static const {self.em.storage_type(b.dtype)} {where[b.name]}"
                            f"[{max(b.size, 1)}] NNC_ALIGN({ARENA_ALIGN}) = {{\n"
                            f"{format_c_array(data)}\n}};")
            return defs, where, {}
        blob = bytearray()
        where: dict[str, str] = {}
        sym = f"{self.p}_weights"
        for b in consts:
            blob += bytes(-len(blob) % WEIGHTS_ALIGN)
            ctype = self.em.storage_type(b.dtype)
            where[b.name] = f"(const {ctype} *)({sym} + {len(blob)})"
            data = np.ascontiguousarray(np.asarray(self.m.constants[b.name]).astype(b.dtype))
            blob += data.astype(data.dtype.newbyteorder("<")).tobytes()  # targets are little-endian
        weights_c = _template_env().get_template("weights.c.j2").render(
            sym=sym, size=len(blob), align=WEIGHTS_ALIGN, model=self.m.name,
            section=self.weights_section)
        decl = f"extern const uint8_t {sym}[];  /* weights.bin, see weights.c */"
        return [decl], where, {"weights.c": weights_c, "weights.bin": bytes(blob)}

    def kernel_signature(self, k: Kernel) -> tuple[list[Buffer], set[str], set[str]]:
        params = [self.buf(p) for p in k.params]
        if len(set(k.params)) != len(k.params):
            raise EmitError(f"kernel {k.name}: duplicate params {list(k.params)}")
        for b in params:
            if b.scope == "local":
                raise EmitError(f"kernel {k.name}: param {b.name!r} is a local buffer")
        writable = {b.name for b in params if not self.is_const(b.name)}
        written = written_buffers(k.body, lambda n: n in writable or n not in self.bufs)
        for name in written:
            if name in self.bufs and name not in k.params:
                raise EmitError(f"kernel {k.name} writes {name!r}, which is not one of its params")
            if name in self.bufs and self.is_const(name):
                raise EmitError(f"kernel {k.name} writes read-only buffer {name!r}")
        restrict = {
            b.name for b in params
            if not any(self.regions[b.name].overlaps(self.regions[o.name])
                       for o in params if o.name != b.name)
        }
        return params, written & set(k.params), restrict

    def pointer_decls(self, used: list[str], in_bin: dict[str, str]) -> tuple[list[str], list[str]]:
        """(pointer declarations, trailing copies into outputs) of the run function."""
        decls: list[str] = []
        copies: list[str] = []
        out_index = {name: i for i, name in reversed(list(enumerate(self.m.outputs)))}
        referenced: set[str] = set()
        for k in self.m.kernels:
            referenced.update(k.params)
        for name in used:
            b = self.buf(name)
            cname = self.names[name]
            ctype = self.em.storage_type(b.dtype)
            const = "const " if self.is_const(name) else ""
            if b.alias is not None:
                init = f"({const}{ctype} *){self.names[b.alias]}"
            elif b.scope == "input":
                init = f"(const {ctype} *)inputs[{self.m.inputs.index(name)}]"
            elif b.scope == "output":
                init = f"({ctype} *)outputs[{out_index[name]}]"
            elif b.scope == "constant":
                init = in_bin[name]
            else:
                init = f"({ctype} *)({self.p}_arena + {self.offsets[name]})"
            decls.append(f"{const}{ctype} *const {cname} = {init};")
            if name not in referenced and not any(self.buf(o).alias == name for o in used):
                decls.append(f"(void){cname};")
        for i, name in enumerate(self.m.outputs):
            b = self.buf(name)
            if b.scope == "output" and b.alias is None and out_index[name] == i:
                continue
            # an output that is an input, a constant, an alias or listed twice: copy it out
            copies.append(f"memcpy(outputs[{i}], {self.names[name]}, {b.nbytes});")
        return decls, copies

    def tensor_descs(self, names: Sequence[str], user: Sequence[str], kind: str) -> list[dict]:
        out = []
        for i, name in enumerate(names):
            b = self.buf(name)
            shape_sym = f"{self.p}_{kind}{i}_shape" if b.shape else None
            out.append(dict(name=c_string(user[i] if user else name), shape=b.shape,
                            shape_sym=shape_sym, rank=len(b.shape), dtype=DTYPE_CODES[b.dtype],
                            nbytes=b.nbytes, ctype=self.em.storage_type(b.dtype)))
        return out

    def layer_desc(self, k: Kernel) -> dict[str, Any]:
        return dict(name=c_string(k.name), op_kind=c_string(k.op_kind),
                    op_name=c_string(k.op_name), macs=int(k.macs))

    def emit(self) -> dict[str, str | bytes]:
        self.validate()
        m, p = self.m, self.p
        used = self.used_globals()
        const_defs, in_bin, extra = self.constants(used)
        kernels, layers, calls = [], [], []
        fnames = NameTable(reserved_prefixes=self.names.prefixes, parent=self.names)
        for i, k in enumerate(m.kernels):
            params, written, restrict = self.kernel_signature(k)
            fname = fnames.add(f"k{i}_{k.name}")
            kernels.append(kernel_comment(k) + "\n" + self.em.kernel(k, fname, params, written,
                                                                     restrict, self.names))
            layers.append(self.layer_desc(k))
            args = ", ".join(self.names[n] for n in k.params)
            calls.append((i, f"{fname}({args});"))
        decls, copies = self.pointer_decls(used, in_bin)
        ctx = dict(
            p=p, P=p.upper(), model=m.name, helpers=list(self.em.helpers.values()),
            constants=const_defs, arena_size=self.arena_size, arena_align=ARENA_ALIGN,
            kernels=kernels, decls=decls, calls=calls, copies=copies,
            inputs=self.tensor_descs(m.inputs, m.input_names, "input"),
            outputs=self.tensor_descs(m.outputs, m.output_names, "output"),
            layers=layers, weights_size=len(extra.get("weights.bin", b"")),
            uses_memcpy=bool(copies),
            extern_includes=sorted({i for c in self.em.externs for i in c.includes}),
            extern_globals=[g for c in self.em.externs for g in c.globals],
            extern_init=[i for c in self.em.externs for i in c.init],
            extern_status=bool(self.em.externs),
        )
        env = _template_env()
        files: dict[str, str | bytes] = {
            "model.h": env.get_template("model.h.j2").render(**ctx),
            "model.c": env.get_template("model.c.j2").render(**ctx),
        }
        files.update(extra)
        return files


def emit_c(module: LoopModule, prefix: str = "nnc", *,
           weights_inline_limit: int = WEIGHTS_INLINE_LIMIT,
           emitter: CStyleEmitter | None = None, threads: int = 1,
           weights_section: str = ".rodata") -> dict[str, str | bytes]:
    """The C files of `module`: model.h, model.c, and weights.c + weights.bin when the constants
    exceed `weights_inline_limit` bytes, placed in the assembler section `weights_section`
    (the host's HOST_WEIGHTS_SECTION, so its build can keep them in libmodel.so only). Public
    symbols start with `prefix`. With `threads` > 1 parallel loops run on that many threads
    (nnc_threads.h; build with -pthread)."""
    em = emitter or CStyleEmitter()
    if threads != 1:
        em.threads = threads
    emitter_ = _ModuleEmitter(module, prefix, weights_inline_limit, em)
    emitter_.weights_section = weights_section
    return emitter_.emit()


# The module assembler's layout, validation and constant logic, for other C-family backends
# (backends/opencl) that assemble their own files around it.
ModuleEmitter = _ModuleEmitter
