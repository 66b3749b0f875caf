"""Textual form of the loop IR (for dumps, golden tests and error messages).
`nnc.ir.loop_parser.parse_module` reads it back exactly (constant data aside, which is not printed).

Names that are not plain words are quoted (`%"a b"`), as in the graph IR. Types the printer can
infer are left out: a loop variable is `int64` unless it says `%i:i32`, a call or binary op has
the type `nnc.ir.loops.call` / `binary` would give it unless it says `max<i32>(...)`.
A kernel with a declarative definition (`Kernel.compute`) prints it as a `compute` block after
its workload line (`format_compute`).
"""

from __future__ import annotations

import re

import numpy as np

from nnc.ir.loops import (
    COMPARISONS,
    INDEX,
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
)
from nnc.ir.printer import format_float, format_name, format_string
from nnc.ir.types import DTYPE_SHORT

_SYMBOLS = {
    "add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%", "lt": "<", "le": "<=",
    "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "and": "&&", "or": "||", "xor": "^",
    "shl": "<<", "shr": ">>",
}
# op kinds print bare after `//` when they look like `conv+relu`, else as a quoted string
_BARE_KIND = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(\+[A-Za-z_][A-Za-z0-9_]*)*)?")
# a buffer named by an external call prints bare when it reads as one (`_` is "no buffer")
_BARE_ARG = re.compile(r"[A-Za-z][A-Za-z0-9_]*|_[A-Za-z0-9_]+")


def call_dtype(fn: str, args: tuple[Expr, ...]) -> str:
    """The result type `nnc.ir.loops.call` gives `fn(args)` (the printer omits it then)."""
    if fn in ("isnan", "isinf"):
        return "bool"
    return args[0].dtype if args else ""


def binary_dtype(op: str, a: Expr) -> str:
    """The result type `nnc.ir.loops.binary` gives `a op b`."""
    return "bool" if op in COMPARISONS else a.dtype


def format_expr(e: Expr) -> str:
    if isinstance(e, Const):
        v = e.value.item() if isinstance(e.value, np.generic) else e.value
        if isinstance(v, bool):
            text = str(v).lower()
        elif isinstance(v, float):
            text = format_float(v)
        else:
            text = repr(v)
        return f"{text}:{DTYPE_SHORT[e.dtype]}"
    if isinstance(e, Var):
        suffix = "" if e.dtype == INDEX else f":{DTYPE_SHORT[e.dtype]}"
        return f"%{format_name(e.name)}{suffix}"
    if isinstance(e, Load):
        return f"%{format_name(e.buffer)}[{', '.join(format_expr(i) for i in e.indices)}]"
    if isinstance(e, Binary):
        if e.dtype != binary_dtype(e.op, e.a):
            return f"{e.op}<{DTYPE_SHORT[e.dtype]}>({format_expr(e.a)}, {format_expr(e.b)})"
        if e.op in _SYMBOLS:
            return f"({format_expr(e.a)} {_SYMBOLS[e.op]} {format_expr(e.b)})"
        return f"{e.op}({format_expr(e.a)}, {format_expr(e.b)})"
    if isinstance(e, Call):
        ty = "" if e.dtype == call_dtype(e.fn, e.args) else f"<{DTYPE_SHORT[e.dtype]}>"
        return f"{e.fn}{ty}({', '.join(format_expr(a) for a in e.args)})"
    if isinstance(e, Cast):
        return f"cast<{DTYPE_SHORT[e.dtype]}>({format_expr(e.value)})"
    if isinstance(e, Select):
        return f"select({format_expr(e.cond)}, {format_expr(e.a)}, {format_expr(e.b)})"
    raise TypeError(f"not an expression: {e!r}")


def _extern_arg(a: Expr | str) -> str:
    if not isinstance(a, str):
        return format_expr(a)
    if not a:
        return "_"
    return a if _BARE_ARG.fullmatch(a) else format_string(a)


def format_stmt(s: Stmt, indent: int = 1) -> list[str]:
    pad = "  " * indent
    if isinstance(s, For):
        lines = [f"{pad}for %{format_name(s.var)} in 0..{s.extent} {s.kind} {{"]
        for c in s.body:
            lines += format_stmt(c, indent + 1)
        return lines + [f"{pad}}}"]
    if isinstance(s, Store):
        idx = ", ".join(format_expr(i) for i in s.indices)
        return [f"{pad}%{format_name(s.buffer)}[{idx}] = {format_expr(s.value)}"]
    if isinstance(s, If):
        lines = [f"{pad}if {format_expr(s.cond)} {{"]
        for c in s.then:
            lines += format_stmt(c, indent + 1)
        if s.orelse:
            lines.append(f"{pad}}} else {{")
            for c in s.orelse:
                lines += format_stmt(c, indent + 1)
        return lines + [f"{pad}}}"]
    if isinstance(s, CallExtern):
        args = ", ".join(_extern_arg(a) for a in s.args)
        return [f"{pad}call @{format_name(s.fn)}({args})"]
    raise TypeError(f"not a statement: {s!r}")


def format_buffer(b: Buffer) -> str:
    extra = f" offset={b.offset}" if b.offset is not None else ""
    extra += f" alias=%{format_name(b.alias)}" if b.alias else ""
    return f"%{format_name(b.name)}: {b} {b.scope}{extra}"


def _loaded(e: Expr | None, out: dict[str, str]) -> None:
    for x in walk_expr(e) if e is not None else ():
        if isinstance(x, Load):
            out.setdefault(x.buffer, x.dtype)


def format_compute(k: Kernel) -> list[str]:
    """The kernel's declarative definition (`nnc.ir.compute.Reduction`) as a `compute` block:
    axes, accumulator, padding windows, re-layoutable operands, the buffers it reads that are
    not the kernel's parameters (with their types: a `Layout` step may have replaced them),
    init, term, outside and the output store with its finish."""
    d = k.compute
    head = f"  compute {format_string(d.kind)} acc={DTYPE_SHORT[d.acc_dtype]} combine={d.combine}"
    lines = [head + (" reassociate {" if d.reassociate else " {")]
    for a in d.axes:
        reduce = " reduce" if a.reduce else ""
        lines.append(f"    axis %{format_name(a.name)} {a.extent}{reduce}")
    for w in d.windows:
        lines.append(f"    window %{format_name(w.out)} %{format_name(w.tap)} stride={w.stride} "
                     f"dilation={w.dilation} pad={w.pad} size={w.size}"
                     + (" low" if w.low else "") + (" high" if w.high else ""))
    for role, buf in d.operands:
        lines.append(f"    operand {format_string(role)} %{format_name(buf)}")
    loaded: dict[str, str] = {}
    for e in (d.init, d.term, d.outside, d.finish, *d.out_index):
        _loaded(e, loaded)
    known = set(k.params) | {b.name for b in k.locals}
    reads = [f"%{format_name(n)}:{DTYPE_SHORT[t]}" for n, t in loaded.items() if n not in known]
    if reads:
        lines.append("    reads " + ", ".join(reads))
    lines.append(f"    init {format_expr(d.init)}")
    lines.append(f"    term {format_expr(d.term)}")
    if d.outside is not None:
        lines.append(f"    outside {format_expr(d.outside)}")
    idx = ", ".join(format_expr(i) for i in d.out_index)
    lines.append(f"    %{format_name(d.out)}[{idx}] = {format_expr(d.finish)}")
    return lines + ["  }"]


def format_kernel(k: Kernel) -> str:
    params = ", ".join("%" + format_name(p) for p in k.params)
    head = f"kernel @{format_name(k.name)}({params})"
    if k.op_kind or k.op_name or k.macs:
        kind = k.op_kind if _BARE_KIND.fullmatch(k.op_kind) else repr(k.op_kind)
        head += f" // {kind} {k.op_name!r} macs={k.macs}"
    lines = [head + " {"]
    if k.workload:
        lines.append(f"  workload #{k.workload_hash} {format_string(k.workload)}")
    if k.compute is not None:
        lines += format_compute(k)
    lines += [f"  local {format_buffer(b)}" for b in k.locals]
    if k.schedule:
        lines.append(f"  schedule {list(k.schedule)}")
    if k.inplace:
        lines.append("  inplace " + ", ".join(
            f"%{format_name(a)}->%{format_name(b)}" for a, b in k.inplace))
    for s in k.body:
        lines += format_stmt(s)
    return "\n".join(lines + ["}"])


def _io_line(word: str, bufs: tuple[str, ...], names: tuple[str, ...]) -> list[str]:
    if not bufs:
        return []
    if len(names) != len(bufs):  # no user-facing names (a module built by hand)
        return [f"  {word} " + ", ".join("%" + format_name(b) for b in bufs)]
    return [f"  {word} " + ", ".join(
        f"%{format_name(b)} {format_string(n)}" for b, n in zip(bufs, names, strict=True))]


def format_module(m: LoopModule) -> str:
    lines = [f"loop_module @{format_name(m.name)} arena={m.arena_size} {{"]
    lines += _io_line("inputs", m.inputs, m.input_names)
    lines += _io_line("outputs", m.outputs, m.output_names)
    lines += [f"  buffer {format_buffer(b)}" for b in m.buffers]
    text = "\n".join(lines)
    body = "\n".join(format_kernel(k) for k in m.kernels)
    return f"{text}\n{body}\n}}\n"
