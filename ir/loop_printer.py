"""Textual form of the loop IR (for dumps, golden tests and error messages)."""

from __future__ import annotations

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
from nnc.ir.types import DTYPE_SHORT

_SYMBOLS = {
    "add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%", "lt": "<", "le": "<=",
    "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "and": "&&", "or": "||", "xor": "^",
    "shl": "<<", "shr": ">>",
}


def format_expr(e: Expr) -> str:
    if isinstance(e, Const):
        v = e.value
        return f"{str(v).lower() if isinstance(v, bool) else repr(v)}:{DTYPE_SHORT[e.dtype]}"
    if isinstance(e, Var):
        return f"%{e.name}"
    if isinstance(e, Load):
        return f"%{e.buffer}[{', '.join(format_expr(i) for i in e.indices)}]"
    if isinstance(e, Binary):
        if e.op in _SYMBOLS:
            return f"({format_expr(e.a)} {_SYMBOLS[e.op]} {format_expr(e.b)})"
        return f"{e.op}({format_expr(e.a)}, {format_expr(e.b)})"
    if isinstance(e, Call):
        return f"{e.fn}({', '.join(format_expr(a) for a in e.args)})"
    if isinstance(e, Cast):
        return f"cast<{DTYPE_SHORT[e.dtype]}>({format_expr(e.value)})"
    if isinstance(e, Select):
        return f"select({format_expr(e.cond)}, {format_expr(e.a)}, {format_expr(e.b)})"
    raise TypeError(f"not an expression: {e!r}")


def format_stmt(s: Stmt, indent: int = 1) -> list[str]:
    pad = "  " * indent
    if isinstance(s, For):
        lines = [f"{pad}for %{s.var} in 0..{s.extent} {s.kind} {{"]
        for c in s.body:
            lines += format_stmt(c, indent + 1)
        return lines + [f"{pad}}}"]
    if isinstance(s, Store):
        idx = ", ".join(format_expr(i) for i in s.indices)
        return [f"{pad}%{s.buffer}[{idx}] = {format_expr(s.value)}"]
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
        args = ", ".join((a or "_") if isinstance(a, str) else format_expr(a) for a in s.args)
        return [f"{pad}call @{s.fn}({args})"]
    raise TypeError(f"not a statement: {s!r}")


def format_buffer(b: Buffer) -> str:
    extra = f" offset={b.offset}" if b.offset is not None else ""
    extra += f" alias=%{b.alias}" if b.alias else ""
    return f"%{b.name}: {b} {b.scope}{extra}"


def format_kernel(k: Kernel) -> str:
    head = f"kernel @{k.name}({', '.join('%' + p for p in k.params)})"
    if k.op_kind:
        head += f" // {k.op_kind} {k.op_name!r} macs={k.macs}"
    lines = [head + " {"]
    lines += [f"  local {format_buffer(b)}" for b in k.locals]
    if k.schedule:
        lines.append(f"  schedule {list(k.schedule)}")
    if k.inplace:
        lines.append("  inplace " + ", ".join(f"%{a}->%{b}" for a, b in k.inplace))
    for s in k.body:
        lines += format_stmt(s)
    return "\n".join(lines + ["}"])


def format_module(m: LoopModule) -> str:
    lines = [f"loop_module @{m.name} arena={m.arena_size} {{"]
    lines += [f"  buffer {format_buffer(b)}" for b in m.buffers]
    text = "\n".join(lines)
    body = "\n".join(format_kernel(k) for k in m.kernels)
    return f"{text}\n{body}\n}}\n"
