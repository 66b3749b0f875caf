"""Verifier of the loop IR: buffers declared, index ranks, variables in scope, dtypes consistent."""

from __future__ import annotations

from nnc.ir.loops import (
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
)


class LoopVerifyError(Exception):
    pass


def _check_expr(e: Expr, bufs: dict[str, Buffer], scope: set[str], where: str) -> None:
    if isinstance(e, Const):
        return
    if isinstance(e, Var):
        if e.name not in scope:
            raise LoopVerifyError(f"{where}: variable %{e.name} used outside its loop")
        return
    if isinstance(e, Load):
        b = bufs.get(e.buffer)
        if b is None:
            raise LoopVerifyError(f"{where}: load from undeclared buffer %{e.buffer}")
        if len(e.indices) != len(b.shape):
            raise LoopVerifyError(
                f"{where}: load %{e.buffer} with {len(e.indices)} indices, "
                f"buffer has rank {len(b.shape)}")
        if e.dtype != b.dtype:
            raise LoopVerifyError(f"{where}: load %{e.buffer} typed {e.dtype}, buffer is {b.dtype}")
        for i in e.indices:
            _check_expr(i, bufs, scope, where)
        return
    if isinstance(e, Binary):
        if e.a.dtype != e.b.dtype:
            raise LoopVerifyError(f"{where}: {e.op} of {e.a.dtype} and {e.b.dtype}")
        _check_expr(e.a, bufs, scope, where)
        _check_expr(e.b, bufs, scope, where)
        return
    if isinstance(e, Call):
        for a in e.args:
            _check_expr(a, bufs, scope, where)
        return
    if isinstance(e, Cast):
        _check_expr(e.value, bufs, scope, where)
        return
    if isinstance(e, Select):
        if e.cond.dtype != "bool":
            raise LoopVerifyError(f"{where}: select condition is {e.cond.dtype}, not bool")
        if e.a.dtype != e.b.dtype:
            raise LoopVerifyError(f"{where}: select branches {e.a.dtype} vs {e.b.dtype}")
        for x in (e.cond, e.a, e.b):
            _check_expr(x, bufs, scope, where)
        return
    raise LoopVerifyError(f"{where}: not an expression: {e!r}")


def _check_stmt(s: Stmt, bufs: dict[str, Buffer], scope: set[str], where: str) -> None:
    if isinstance(s, For):
        if s.var in scope:
            raise LoopVerifyError(f"{where}: loop variable %{s.var} shadows an outer loop")
        if s.extent < 0:
            raise LoopVerifyError(f"{where}: loop %{s.var} has negative extent")
        for c in s.body:
            _check_stmt(c, bufs, scope | {s.var}, where)
    elif isinstance(s, Store):
        b = bufs.get(s.buffer)
        if b is None:
            raise LoopVerifyError(f"{where}: store to undeclared buffer %{s.buffer}")
        if b.scope in ("input", "constant"):
            raise LoopVerifyError(f"{where}: store to read-only {b.scope} buffer %{s.buffer}")
        if len(s.indices) != len(b.shape):
            raise LoopVerifyError(
                f"{where}: store %{s.buffer} with {len(s.indices)} indices, "
                f"buffer has rank {len(b.shape)}")
        if s.value.dtype != b.dtype:
            raise LoopVerifyError(
                f"{where}: store of {s.value.dtype} into {b.dtype} buffer %{s.buffer}")
        for i in s.indices:
            if i.dtype != INDEX:
                raise LoopVerifyError(f"{where}: index of %{s.buffer} is {i.dtype}, not {INDEX}")
            _check_expr(i, bufs, scope, where)
        _check_expr(s.value, bufs, scope, where)
    elif isinstance(s, If):
        _check_expr(s.cond, bufs, scope, where)
        for c in s.then + s.orelse:
            _check_stmt(c, bufs, scope, where)
    elif isinstance(s, CallExtern):
        for a in s.args:
            if isinstance(a, str):
                if a and a not in bufs:  # "" is an absent optional buffer (a NULL pointer)
                    raise LoopVerifyError(f"{where}: call @{s.fn} names undeclared buffer %{a}")
            else:
                _check_expr(a, bufs, scope, where)
    else:
        raise LoopVerifyError(f"{where}: not a statement: {s!r}")


def verify_kernel(k: Kernel, globals_: dict[str, Buffer]) -> None:
    where = f"kernel @{k.name} ({k.op_kind} '{k.op_name}')"
    bufs: dict[str, Buffer] = {}
    for p in k.params:
        if p not in globals_:
            raise LoopVerifyError(f"{where}: parameter %{p} is not a module buffer")
        bufs[p] = globals_[p]
    for b in k.locals:
        if b.scope != "local":
            raise LoopVerifyError(f"{where}: local %{b.name} has scope {b.scope}")
        bufs[b.name] = b
    for s in k.body:
        _check_stmt(s, bufs, set(), where)


def verify_loop_module(m: LoopModule) -> None:
    bufs: dict[str, Buffer] = {}
    for b in m.buffers:
        if b.name in bufs:
            raise LoopVerifyError(f"buffer %{b.name} declared twice")
        bufs[b.name] = b
    for b in m.buffers:
        if b.alias and b.alias not in bufs:
            raise LoopVerifyError(f"buffer %{b.name} aliases unknown %{b.alias}")
        if b.alias and bufs[b.alias].nbytes != b.nbytes:
            raise LoopVerifyError(f"buffer %{b.name} aliases %{b.alias} of a different size")
        if b.scope == "constant" and not b.alias and b.name not in m.constants:
            raise LoopVerifyError(f"constant buffer %{b.name} has no data")
    for name in m.inputs + m.outputs:
        if name not in bufs:
            raise LoopVerifyError(f"module input/output %{name} is not a buffer")
    for k in m.kernels:
        verify_kernel(k, bufs)
