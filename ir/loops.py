"""The loop IR: kernels made of loop nests over buffers, the level the backends emit from.

Expressions are immutable trees with a dtype; Python operators build them:

>>> i = Var("i")
>>> x = Buffer("x", (8,), "float32", "input")
>>> e = Load("x", (i,), "float32") * 2.0
>>> str(e)
'(%x[%i] * 2.0:f32)'

Statements are `For`, `Store`, `If` and `CallExtern`. A `Kernel` is one function (one fused graph
op); a `LoopModule` is the whole model: global buffers, kernels in execution order, constant data.
Loops carry a kind (serial, parallel, vectorized, unrolled) and a unique name, so schedule steps
(`Split`, `Reorder`, `Vectorize`, ...) can refer to them as data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from nnc.ir.types import DTYPE_SHORT, DTYPES, is_float, itemsize

INDEX = "int64"  # dtype of loop variables and index arithmetic
SCOPES = ("input", "output", "constant", "arena", "local")
LOOP_KINDS = ("serial", "parallel", "vectorized", "unrolled")
BINARY_OPS = (
    "add", "sub", "mul", "div", "mod", "min", "max", "pow",
    "and", "or", "xor", "shl", "shr",
    "lt", "le", "gt", "ge", "eq", "ne",
)
COMPARISONS = frozenset({"lt", "le", "gt", "ge", "eq", "ne"})
INTRINSICS = (
    "exp", "log", "sqrt", "tanh", "erf", "floor", "ceil", "round", "abs", "neg", "not",
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh",
    "sign", "fmod", "isnan", "isinf", "log1p", "expm1",
    # requantize(x, multiplier, shift), all int32: TFLite's MultiplyByQuantizedMultiplier
    # (nnc.ir.fixed_point), one call so backends emit it as one tight 32-bit routine
    "requantize",
    # dot4_s8 / dot16_s8(a, b, acc): acc + the int8 dot product of 4 / 16 consecutive elements
    # starting at the loads a and b (nnc.ir.intrinsics: SMLAD on Cortex-M4/M7, MVE on the M55)
    "dot4_s8", "dot16_s8",
)

Number = int | float | bool


class Expr:
    """Base of all expressions. Subclasses are frozen dataclasses with a `dtype` field."""

    __slots__ = ()
    dtype: str

    # arithmetic builds Binary nodes; Python numbers become constants of the other side's dtype
    def __add__(self, o: Any) -> Expr:
        return binary("add", self, o)

    def __radd__(self, o: Any) -> Expr:
        return binary("add", o, self)

    def __sub__(self, o: Any) -> Expr:
        return binary("sub", self, o)

    def __rsub__(self, o: Any) -> Expr:
        return binary("sub", o, self)

    def __mul__(self, o: Any) -> Expr:
        return binary("mul", self, o)

    def __rmul__(self, o: Any) -> Expr:
        return binary("mul", o, self)

    def __truediv__(self, o: Any) -> Expr:
        return binary("div", self, o)

    def __rtruediv__(self, o: Any) -> Expr:
        return binary("div", o, self)

    def __floordiv__(self, o: Any) -> Expr:  # C division: only for non-negative index math
        return binary("div", self, o)

    def __mod__(self, o: Any) -> Expr:
        return binary("mod", self, o)

    def __neg__(self) -> Expr:
        return call("neg", self)

    def lt(self, o: Any) -> Expr:
        return binary("lt", self, o)

    def le(self, o: Any) -> Expr:
        return binary("le", self, o)

    def gt(self, o: Any) -> Expr:
        return binary("gt", self, o)

    def ge(self, o: Any) -> Expr:
        return binary("ge", self, o)

    def eq(self, o: Any) -> Expr:
        return binary("eq", self, o)

    def ne(self, o: Any) -> Expr:
        return binary("ne", self, o)

    def __str__(self) -> str:
        from nnc.ir.loop_printer import format_expr

        return format_expr(self)


@dataclass(frozen=True, slots=True)
class Const(Expr):
    value: Number
    dtype: str


@dataclass(frozen=True, slots=True)
class Var(Expr):
    """A loop variable (or the index of an unrolled/vectorized lane)."""

    name: str
    dtype: str = INDEX


@dataclass(frozen=True, slots=True)
class Load(Expr):
    buffer: str
    indices: tuple[Expr, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class Binary(Expr):
    op: str
    a: Expr
    b: Expr
    dtype: str


@dataclass(frozen=True, slots=True)
class Call(Expr):
    """A math intrinsic (exp, sqrt, ...) applied elementwise; dtype is the result type."""

    fn: str
    args: tuple[Expr, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class Cast(Expr):
    value: Expr
    dtype: str


@dataclass(frozen=True, slots=True)
class Select(Expr):
    """cond ? a : b; only the chosen side is evaluated (guards out-of-bounds loads)."""

    cond: Expr
    a: Expr
    b: Expr
    dtype: str


def const(value: Number, dtype: str) -> Const:
    if dtype == "bool":
        return Const(bool(value), dtype)
    if is_float(dtype):
        return Const(float(value), dtype)
    return Const(int(value), dtype)


def _as_expr(x: Any, like: Expr | None) -> Expr:
    if isinstance(x, Expr):
        return x
    if isinstance(x, (bool, int, float, np.generic)):
        if like is not None:
            return const(x.item() if isinstance(x, np.generic) else x, like.dtype)
        if isinstance(x, bool):
            return const(x, "bool")
        if isinstance(x, np.generic):
            x = x.item()
        return const(x, INDEX if isinstance(x, int) else "float32")
    raise TypeError(f"cannot make an expression of {x!r}")


def binary(op: str, a: Any, b: Any) -> Expr:
    ea = _as_expr(a, b if isinstance(b, Expr) else None)
    eb = _as_expr(b, ea)
    if ea.dtype != eb.dtype:
        raise TypeError(f"{op}: operand dtypes differ ({ea.dtype} vs {eb.dtype}); cast first")
    if op not in BINARY_OPS:
        raise ValueError(f"unknown binary op {op!r}")
    return Binary(op, ea, eb, "bool" if op in COMPARISONS else ea.dtype)


def call(fn: str, *args: Expr, dtype: str | None = None) -> Expr:
    if fn not in INTRINSICS:
        raise ValueError(f"unknown intrinsic {fn!r}")
    if fn == "requantize" and (len(args) != 3 or any(a.dtype != "int32" for a in args)):
        raise TypeError("requantize takes three int32 operands (x, multiplier, shift)")
    if dtype is None:
        dtype = "bool" if fn in ("isnan", "isinf") else args[0].dtype
    return Call(fn, tuple(args), dtype)


def maximum(a: Any, b: Any) -> Expr:
    return binary("max", a, b)


def minimum(a: Any, b: Any) -> Expr:
    return binary("min", a, b)


def select(cond: Expr, a: Any, b: Any) -> Expr:
    ea = _as_expr(a, b if isinstance(b, Expr) else None)
    eb = _as_expr(b, ea)
    if ea.dtype != eb.dtype:
        raise TypeError(f"select: branch dtypes differ ({ea.dtype} vs {eb.dtype})")
    return Select(cond, ea, eb, ea.dtype)


def cast(value: Expr, dtype: str) -> Expr:
    return value if value.dtype == dtype else Cast(value, dtype)


def logical_and(a: Expr, b: Expr) -> Expr:
    return binary("and", a, b)


def logical_or(a: Expr, b: Expr) -> Expr:
    return binary("or", a, b)


# ---------------------------------------------------------------- statements


class Stmt:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class For(Stmt):
    var: str
    extent: int
    body: tuple[Stmt, ...]
    kind: str = "serial"


@dataclass(frozen=True, slots=True)
class Store(Stmt):
    buffer: str
    indices: tuple[Expr, ...]
    value: Expr


@dataclass(frozen=True, slots=True)
class If(Stmt):
    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...] = ()


@dataclass(frozen=True, slots=True)
class CallExtern(Stmt):
    """A call to an external kernel (e.g. CMSIS-NN); string args name buffers ("" for an absent
    optional one, passed as NULL), the other args are scalars."""

    fn: str
    args: tuple[Expr | str, ...]


# ---------------------------------------------------------------- traversals


def walk_stmts(stmts: Iterable[Stmt]) -> Iterator[Stmt]:
    """Every statement, pre-order, descending into loop and if bodies."""
    for s in stmts:
        yield s
        if isinstance(s, For):
            yield from walk_stmts(s.body)
        elif isinstance(s, If):
            yield from walk_stmts(s.then)
            yield from walk_stmts(s.orelse)


def sub_exprs(e: Expr) -> tuple[Expr, ...]:
    """The direct operands of an expression."""
    if isinstance(e, Load):
        return e.indices
    if isinstance(e, Binary):
        return (e.a, e.b)
    if isinstance(e, Call):
        return e.args
    if isinstance(e, Cast):
        return (e.value,)
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    return ()


def walk_expr(e: Expr) -> Iterator[Expr]:
    """`e` and every expression inside it, pre-order."""
    yield e
    for x in sub_exprs(e):
        yield from walk_expr(x)


def map_expr(e: Expr, fn: Callable[[Expr], Expr | None]) -> Expr:
    """`e` rebuilt bottom-up: where `fn(node)` returns an expression it replaces the node (whose
    operands are already mapped), where it returns None the node stays. The one expression
    rewriter passes share (substitution, renaming, simplification)."""
    if isinstance(e, Load):
        e = replace(e, indices=tuple(map_expr(i, fn) for i in e.indices))
    elif isinstance(e, Binary):
        e = replace(e, a=map_expr(e.a, fn), b=map_expr(e.b, fn))
    elif isinstance(e, Call):
        e = replace(e, args=tuple(map_expr(a, fn) for a in e.args))
    elif isinstance(e, Cast):
        e = replace(e, value=map_expr(e.value, fn))
    elif isinstance(e, Select):
        e = replace(e, cond=map_expr(e.cond, fn), a=map_expr(e.a, fn), b=map_expr(e.b, fn))
    elif not isinstance(e, (Const, Var)):
        raise TypeError(f"not an expression: {e!r}")
    out = fn(e)
    return e if out is None else out


def substitute(e: Expr, env: dict[str, Expr]) -> Expr:
    """`e` with the variables named in `env` replaced."""
    return map_expr(e, lambda x: env.get(x.name) if isinstance(x, Var) else None)


def substitute_stmt(s: Stmt, env: dict[str, Expr]) -> Stmt:
    """`s` with the variables named in `env` replaced in every expression below it."""
    if isinstance(s, For):
        return replace(s, body=tuple(substitute_stmt(c, env) for c in s.body))
    if isinstance(s, Store):
        return replace(
            s, indices=tuple(substitute(i, env) for i in s.indices), value=substitute(s.value, env)
        )
    if isinstance(s, If):
        return If(
            substitute(s.cond, env),
            tuple(substitute_stmt(c, env) for c in s.then),
            tuple(substitute_stmt(c, env) for c in s.orelse),
        )
    if isinstance(s, CallExtern):
        args = tuple(a if isinstance(a, str) else substitute(a, env) for a in s.args)
        return replace(s, args=args)
    raise TypeError(f"not a statement: {s!r}")


def uses_var(e: Expr, name: str) -> bool:
    """Whether loop variable `name` occurs anywhere in `e`."""
    return any(isinstance(x, Var) and x.name == name for x in walk_expr(e))


# ---------------------------------------------------------------- schedule steps (data)


@dataclass(frozen=True, slots=True)
class Split:
    """Split loop `loop` into `outer` x `inner`, `inner` of extent `factor` (guarded if needed)."""

    loop: str
    factor: int


@dataclass(frozen=True, slots=True)
class Reorder:
    """Reorder perfectly nested loops into the given order (outermost first)."""

    loops: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Fuse:
    """Fuse loop `outer` with its directly nested `inner` into one loop."""

    outer: str
    inner: str


@dataclass(frozen=True, slots=True)
class Vectorize:
    loop: str


@dataclass(frozen=True, slots=True)
class Unroll:
    loop: str


@dataclass(frozen=True, slots=True)
class Parallel:
    loop: str


@dataclass(frozen=True, slots=True)
class Partition:
    """Split a spatial loop of a padding window into border, interior (no guard), border."""

    loop: str


@dataclass(frozen=True, slots=True)
class OverlapTail:
    """The remainder of the split whose outer loop is `loop` runs as one whole inner tile that
    ends at the axis's end (declarative definitions only): the outputs it shares with the tile
    before are computed again and stored twice with the same values, so a vector tile needs
    no scalar remainder."""

    loop: str


@dataclass(frozen=True, slots=True)
class GuardTail:
    """The remainder of the split whose outer loop is `loop` runs as one more whole tile in
    that loop (declarative definitions only), its outputs past the axis's end not stored: no
    peeled copy of the nest. The tile's reads past the end stay inside the padding guard of a
    window along the axis, which must check the upper end."""

    loop: str


@dataclass(frozen=True, slots=True)
class Intrinsic:
    """Map reduce loop `loop` onto the tensor intrinsic `name` (nnc.ir.intrinsics)."""

    name: str
    loop: str


@dataclass(frozen=True, slots=True)
class Layout:
    """Store the constant operand `operand` of a declarative definition (its role, e.g. "w")
    with its dims permuted (`perm`, numpy's transpose order): weight packing as a schedule
    choice. The `schedule` pass makes the re-laid-out copy; an original no kernel reads is
    dropped."""

    operand: str
    perm: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Widen:
    """Store the constant operand `operand` of a declarative definition in the wider integer
    type `dtype` (same values, same indices): int8 weights kept as int16 spare the dot
    intrinsic's unpacking of every weight word (`dot4_s8s16`), for twice their flash."""

    operand: str
    dtype: str


ScheduleStep = (Split | Reorder | Fuse | Vectorize | Unroll | Parallel | Partition | Intrinsic
                | Layout | OverlapTail | GuardTail | Widen)


# ---------------------------------------------------------------- buffers, kernels, modules


@dataclass(frozen=True, slots=True)
class Buffer:
    """A named buffer. Arena buffers get an `offset` from the memory planner; a buffer with
    `alias` is a view of another buffer's bytes (reshape & co need no copy)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scope: str
    offset: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"buffer {self.name}: unknown scope {self.scope!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"buffer {self.name}: unknown dtype {self.dtype!r}")

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * itemsize(self.dtype)

    def __getitem__(self, idx: Any) -> Load:
        if not isinstance(idx, tuple):
            idx = (idx,)
        return Load(self.name, tuple(_as_expr(i, None) for i in idx), self.dtype)

    def __str__(self) -> str:
        return f"{DTYPE_SHORT[self.dtype]}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True, slots=True)
class Kernel:
    """One generated function. `params` are the global buffers it touches (in order), `locals`
    its scalar/small local buffers. `op_kind`/`op_name` name the graph op(s) it came from.

    `inplace` lists (input, output) param pairs the output may overwrite: element e of the input
    is read only while computing element e of the output, which is written once. The memory
    planner may then give both the same bytes when the input dies at this kernel.

    `compute`, where set, is the kernel's declarative definition: `body` is it materialized under
    `schedule` (by lower-to-loops with no steps, by the `schedule` pass with them).

    `workload` is the kernel's workload key (set by lower-to-loops: what it computes, on which
    shapes and target, without any names; see docs/architecture.md), `workload_hash` its short
    digest: kernels with equal keys compute the same thing, so a tuning cache can key on it."""

    name: str
    params: tuple[str, ...]
    locals: tuple[Buffer, ...]
    body: tuple[Stmt, ...]
    op_kind: str = ""
    op_name: str = ""
    macs: int = 0
    schedule: tuple[ScheduleStep, ...] = ()
    inplace: tuple[tuple[str, str], ...] = ()
    workload: str = ""
    # the declarative definition (nnc.ir.compute.Reduction) the body is materialized from, for
    # the MAC-carrying ops; the `schedule` pass rebuilds the body from it (see nnc.ir.compute)
    # (not compared: a kernel parsed back from text has the same body and steps, no definition)
    compute: Any = field(default=None, compare=False)

    @property
    def workload_hash(self) -> str:
        """The first 12 hex digits of the key's SHA-256 ("" without a key)."""
        if not self.workload:
            return ""
        return hashlib.sha256(self.workload.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> Kernel:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True, eq=False)
class LoopModule:
    name: str
    buffers: tuple[Buffer, ...]
    kernels: tuple[Kernel, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    constants: Mapping[str, np.ndarray] = field(default_factory=dict)
    arena_size: int = 0
    # user-facing names of inputs/outputs (ONNX names), parallel to inputs/outputs
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    def buffer_map(self) -> dict[str, Buffer]:
        return {b.name: b for b in self.buffers}

    def replace(self, **changes: Any) -> LoopModule:
        return replace(self, **changes)


# ---------------------------------------------------------------- builder


class KernelBuilder:
    """Builds one kernel's statements with nested `with` blocks.

    >>> x = Buffer("x", (4,), "float32", "input"); y = Buffer("y", (4,), "float32", "output")
    >>> b = KernelBuilder("relu")
    >>> with b.loop(4) as i:
    ...     b.store(y, (i,), maximum(x[i], 0.0))
    >>> k = b.build(params=("x", "y"))
    >>> len(k.body)
    1
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._stack: list[list[Stmt]] = [[]]
        self._locals: list[Buffer] = []
        self._counts: dict[str, int] = {}
        self.compute: Any = None  # a Reduction defined through `define`

    def fresh(self, hint: str) -> str:
        n = self._counts.get(hint, 0)
        self._counts[hint] = n + 1
        return f"{hint}{n}"

    def emit(self, stmt: Stmt) -> None:
        self._stack[-1].append(stmt)

    @contextmanager
    def loop(self, extent: int, hint: str = "i", kind: str = "serial") -> Iterator[Var]:
        var = Var(self.fresh(hint))
        self._stack.append([])
        yield var
        body = self._stack.pop()
        self.emit(For(var.name, int(extent), tuple(body), kind))

    @contextmanager
    def loops(self, shape: Sequence[int], hint: str = "i") -> Iterator[tuple[Expr, ...]]:
        """A perfect nest over `shape` (outermost first); yields the index variables."""
        vars_: list[Expr] = []
        opened: list[Any] = []
        try:
            for d in shape:
                cm = self.loop(d, hint)
                vars_.append(cm.__enter__())
                opened.append(cm)
            yield tuple(vars_)
        finally:
            for cm in reversed(opened):
                cm.__exit__(None, None, None)

    @contextmanager
    def if_(self, cond: Expr) -> Iterator[None]:
        self._stack.append([])
        yield
        body = self._stack.pop()
        self.emit(If(cond, tuple(body)))

    def if_else(self, cond: Expr, then: Callable[[], None], orelse: Callable[[], None]) -> None:
        """`if (cond) { then() } else { orelse() }`: each callable emits its branch."""
        branches = []
        for emit in (then, orelse):
            self._stack.append([])
            emit()
            branches.append(tuple(self._stack.pop()))
        self.emit(If(cond, branches[0], branches[1]))

    def store(self, buf: Buffer | str, indices: Sequence[Any], value: Any) -> None:
        name = buf if isinstance(buf, str) else buf.name
        dtype = None if isinstance(buf, str) else buf.dtype
        val = _as_expr(value, None) if dtype is None else _as_expr(value, Const(0, dtype))
        if dtype is not None and val.dtype != dtype:
            raise TypeError(f"store to {name}: value is {val.dtype}, buffer is {dtype}")
        self.emit(Store(name, tuple(_as_expr(i, None) for i in indices), val))

    def local(self, dtype: str, hint: str = "acc", shape: tuple[int, ...] = ()) -> Buffer:
        buf = Buffer(self.fresh(hint), shape, dtype, "local")
        self._locals.append(buf)
        return buf

    def define(self, defn: Any, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Emit the declarative definition `defn` (nnc.ir.compute.Reduction) unscheduled and
        record it, so the kernel carries it for the schedule."""
        from nnc.ir.compute import materialize

        if self.compute is not None:
            raise RuntimeError("a kernel has at most one declarative definition")
        self.compute = defn
        for s in materialize(defn, (), lambda dt, shape: self.local(dt, "acc", shape), shapes):
            self.emit(s)

    def build(self, params: Sequence[str], **meta: Any) -> Kernel:
        if len(self._stack) != 1:
            raise RuntimeError("unbalanced loop nesting in kernel builder")
        if self.compute is not None:
            meta.setdefault("compute", self.compute)
        return Kernel(self.name, tuple(params), tuple(self._locals), tuple(self._stack[0]), **meta)
