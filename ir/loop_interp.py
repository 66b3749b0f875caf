"""The loop-IR reference interpreter.

Each kernel is translated once into a small Python function (loops become `for` loops over
`range`, loads/stores become numpy indexing on numpy scalars of the buffer's dtype) and executed.
Arena buffers are views into one byte array at their planned offsets, so running a module also
checks the memory plan: an overlap between live buffers corrupts the result.

It is plain Python: use it on small shapes (tests of compute definitions and passes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from nnc.ir.fixed_point import np_requantize
from nnc.ir.float_to_int import float_to_int
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
)
from nnc.ir.types import is_float


def _cdiv(a: Any, b: Any) -> Any:
    if b == 0:
        return type(a)(0)
    q = abs(int(a)) // abs(int(b))
    return type(a)(q if (a >= 0) == (b >= 0) else -q)


def _cmod(a: Any, b: Any) -> Any:
    if b == 0:
        return type(a)(0)
    return type(a)(int(a) - int(_cdiv(a, b)) * int(b))


def _round_even(x: Any) -> Any:
    return type(x)(np.rint(x))


def _erf(x: Any) -> Any:
    return type(x)(math.erf(float(x)))


def _sign(x: Any) -> Any:
    return type(x)(np.sign(x))


_FUNCS: dict[str, Callable[..., Any]] = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh, "erf": _erf,
    "floor": np.floor, "ceil": np.ceil, "round": _round_even, "abs": np.abs,
    "neg": np.negative, "not": np.logical_not, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "sign": _sign,
    "fmod": np.fmod, "isnan": np.isnan, "isinf": np.isinf, "log1p": np.log1p, "expm1": np.expm1,
    "requantize": np_requantize,
}


def _cast_fn(dtype: str) -> Callable[[Any], Any]:
    """The emitted C's conversions: float→int by `nnc.ir.float_to_int` (defined for NaN, inf
    and out-of-range values), int→narrower int wraps (numpy's astype)."""
    if dtype == "bool":
        return lambda x: np.bool_(x != 0)
    target = np.dtype(dtype)
    if target.kind in "iu":
        def to_int(x: Any) -> Any:
            a = np.asarray(x)
            return (float_to_int(a, dtype) if a.dtype.kind == "f" else a.astype(target))[()]
        return to_int
    return lambda x: np.asarray(x).astype(target)[()]


class _Translator:
    def __init__(self, buffers: dict[str, str]) -> None:
        self.buffers = buffers  # loop-IR buffer name -> python identifier
        self.consts: list[Any] = []
        self.lines: list[str] = []

    def const(self, value: Any) -> str:
        self.consts.append(value)
        return f"_k[{len(self.consts) - 1}]"

    def expr(self, e: Expr) -> str:
        if isinstance(e, Const):
            return self.const(np.dtype(e.dtype).type(e.value))
        if isinstance(e, Var):
            return f"v_{e.name}"
        if isinstance(e, Load):
            idx = ", ".join(f"int({self.expr(i)})" for i in e.indices)
            return f"{self.buffers[e.buffer]}[{idx or '()'}]"
        if isinstance(e, Binary):
            a, b = self.expr(e.a), self.expr(e.b)
            fl = is_float(e.a.dtype)
            op = e.op
            if op in ("add", "sub", "mul"):
                return f"({a} {dict(add='+', sub='-', mul='*')[op]} {b})"
            if op == "div":
                return f"({a} / {b})" if fl else f"_cdiv({a}, {b})"
            if op == "mod":
                return f"_F['fmod']({a}, {b})" if fl else f"_cmod({a}, {b})"
            if op in ("min", "max"):
                return f"_{op}({a}, {b})"
            if op == "pow":
                return f"_cast[{e.dtype!r}](np.power({a}, {b}))" if fl else f"_ipow({a}, {b})"
            if op in ("and", "or"):
                sym = "&" if op == "and" else "|"
                return f"({a} {sym} {b})"
            if op in ("xor", "shl", "shr"):
                return f"({a} {dict(xor='^', shl='<<', shr='>>')[op]} {b})"
            sym = dict(lt="<", le="<=", gt=">", ge=">=", eq="==", ne="!=")[op]
            return f"np.bool_({a} {sym} {b})"
        if isinstance(e, Call) and e.fn in DOT_INTRINSICS:
            first, second, acc = e.args
            assert isinstance(first, Load) and isinstance(second, Load)
            ops = []
            for ld in (first, second):
                idx = ", ".join(f"int({self.expr(i)})" for i in ld.indices)
                ops.append(f"{self.buffers[ld.buffer]}, _flat({self.buffers[ld.buffer]}, ({idx},))")
            return f"_DOT[{e.fn!r}].numpy({ops[0]}, {ops[1]}, {self.expr(acc)})"
        if isinstance(e, Call):
            args = ", ".join(self.expr(a) for a in e.args)
            return f"_cast[{e.dtype!r}](_F[{e.fn!r}]({args}))"
        if isinstance(e, Cast):
            return f"_cast[{e.dtype!r}]({self.expr(e.value)})"
        if isinstance(e, Select):
            return f"({self.expr(e.a)} if {self.expr(e.cond)} else {self.expr(e.b)})"
        raise TypeError(f"not an expression: {e!r}")

    def stmt(self, s: Stmt, depth: int) -> None:
        pad = "    " * depth
        if isinstance(s, For):
            self.lines.append(f"{pad}for v_{s.var} in range({s.extent}):")
            for c in s.body or ():
                self.stmt(c, depth + 1)
            if not s.body:
                self.lines.append(f"{pad}    pass")
        elif isinstance(s, Store):
            idx = ", ".join(f"int({self.expr(i)})" for i in s.indices)
            target = f"{self.buffers[s.buffer]}[{idx or '()'}]"
            self.lines.append(f"{pad}{target} = {self.expr(s.value)}")
        elif isinstance(s, If):
            self.lines.append(f"{pad}if {self.expr(s.cond)}:")
            for c in s.then or ():
                self.stmt(c, depth + 1)
            self.lines.append(f"{pad}    pass")
            if s.orelse:
                self.lines.append(f"{pad}else:")
                for c in s.orelse:
                    self.stmt(c, depth + 1)
        elif isinstance(s, CallExtern):
            args = ", ".join(
                self.buffers[a] if isinstance(a, str) else self.expr(a) for a in s.args)
            self.lines.append(f"{pad}_extern[{s.fn!r}]({args})")
        else:
            raise TypeError(f"not a statement: {s!r}")


def _min(a: Any, b: Any) -> Any:  # NaN from either side propagates, as in the C backend
    return np.minimum(a, b)


def _max(a: Any, b: Any) -> Any:
    return np.maximum(a, b)


def _flat(arr: np.ndarray, idx: tuple[int, ...]) -> int:
    """The row-major element offset of arr[idx] (a dot intrinsic's first element)."""
    return int(np.ravel_multi_index(idx, arr.shape)) if idx else 0


def _ipow(a: Any, b: Any) -> Any:
    t = type(a)
    return _cast_fn(np.dtype(t).name)(int(a) ** int(b) if int(b) >= 0 else 0)


def compile_kernel(
    kernel: Kernel, externs: Mapping[str, Callable[..., Any]] | None = None
) -> Callable[[Mapping[str, np.ndarray]], None]:
    """Translate a kernel into a Python function taking {buffer name: array} (modified in place)."""
    names = list(kernel.params) + [b.name for b in kernel.locals]
    ids = {n: f"b{i}" for i, n in enumerate(names)}
    tr = _Translator(ids)
    tr.lines.append("def _kernel(_bufs):")
    for n in kernel.params:
        tr.lines.append(f"    {ids[n]} = _bufs[{n!r}]")
    for b in kernel.locals:
        tr.lines.append(f"    {ids[b.name]} = np.zeros({b.shape!r}, {b.dtype!r})")
    for s in kernel.body:
        tr.stmt(s, 1)
    tr.lines.append("    return None")
    cast_table = {d: _cast_fn(d) for d in np.sctypeDict if isinstance(d, str) and d in _DTYPES}
    ns: dict[str, Any] = {
        "np": np, "_k": tr.consts, "_cdiv": _cdiv, "_cmod": _cmod, "_F": _FUNCS, "_min": _min,
        "_max": _max, "_ipow": _ipow, "_cast": cast_table, "_extern": dict(externs or {}),
        "_DOT": DOT_INTRINSICS, "_flat": _flat,
    }
    exec(compile("\n".join(tr.lines), f"<kernel {kernel.name}>", "exec"), ns)
    fn = ns["_kernel"]

    def run(bufs: Mapping[str, np.ndarray]) -> None:
        with np.errstate(all="ignore"):
            fn(bufs)

    return run


_DTYPES = {
    "float16", "float32", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool",
}


def _arena_view(arena: np.ndarray, buf: Buffer) -> np.ndarray:
    assert buf.offset is not None
    raw = arena[buf.offset : buf.offset + buf.nbytes]
    return raw.view(buf.dtype).reshape(buf.shape)


def run_loop_module(
    module: LoopModule,
    inputs: Mapping[str, np.ndarray],
    externs: Mapping[str, Callable[..., Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Run a whole loop module; `inputs`/result are keyed by the module's buffer names."""
    bmap = module.buffer_map()
    arena = np.zeros(max(module.arena_size, 1), np.uint8)
    env: dict[str, np.ndarray] = {}
    for b in module.buffers:
        if b.alias:
            continue
        if b.scope == "input":
            env[b.name] = np.array(inputs[b.name], dtype=b.dtype).reshape(b.shape)
        elif b.scope == "constant":
            env[b.name] = np.asarray(module.constants[b.name], dtype=b.dtype).reshape(b.shape)
        elif b.scope == "arena" and b.offset is not None:
            env[b.name] = _arena_view(arena, b)
        else:
            env[b.name] = np.zeros(b.shape, b.dtype)
    for b in module.buffers:  # aliases, possibly chained
        if b.alias:
            target = b
            while target.alias:
                target = bmap[target.alias]
            env[b.name] = env[target.name].reshape(b.shape)
    for k in module.kernels:
        compile_kernel(k, externs)(env)
    return {name: env[name].copy() for name in module.outputs}
