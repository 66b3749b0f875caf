"""schedule: apply each kernel's recorded schedule steps to its loop nests.

Steps are data (`nnc.ir.loops.Split`, `Reorder`, ...) naming loops by their `For.var`; they are
applied in order and stay recorded in `Kernel.schedule`, so the IR prints with its schedule.

    Split("i", 4):   for i in 0..10 { S(i) }
                  →  for i_o in 0..3 { for i_i in 0..4 { if i_o*4+i_i < 10 { S(i_o*4+i_i) } } }
    Reorder(("j", "i")) swaps a perfect nest; Fuse("i", "j") → for i_j in 0..I*J (i = i_j / J,
    j = i_j % J); Vectorize / Unroll / Parallel set the loop's kind.

A step that does not apply raises `ScheduleError` naming the kernel and the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from nnc.ir.compute import (
    ComputeError,
    Reduction,
    layout_name,
    materialize,
    relayout,
    widen_name,
)
from nnc.ir.loops import (
    Buffer,
    Expr,
    For,
    Fuse,
    GuardTail,
    If,
    Kernel,
    Layout,
    LoopModule,
    OverlapTail,
    Parallel,
    Reorder,
    ScheduleStep,
    Split,
    Stmt,
    Unroll,
    Var,
    Vectorize,
    Widen,
    substitute_stmt,
)
from nnc.passes.manager import PassContext, register_pass


class ScheduleError(Exception):
    """A schedule step does not apply to its kernel."""


# substitute / substitute_stmt (loop variables replaced) live in nnc.ir.loops


# ---------------------------------------------------------------- tree helpers


def loop_names(body: tuple[Stmt, ...]) -> set[str]:
    names: set[str] = set()
    for s in body:
        if isinstance(s, For):
            names.add(s.var)
            names |= loop_names(s.body)
        elif isinstance(s, If):
            names |= loop_names(s.then) | loop_names(s.orelse)
    return names


def _rewrite_loop(
    body: tuple[Stmt, ...], var: str, fn: Callable[[For], Stmt]
) -> tuple[tuple[Stmt, ...], bool]:
    """Replace the loop named `var` (anywhere in `body`) by `fn(loop)`; report if it was found."""
    out: list[Stmt] = []
    found = False
    for s in body:
        if isinstance(s, For):
            if s.var == var:
                s, found = fn(s), True
            else:
                inner, hit = _rewrite_loop(s.body, var, fn)
                if hit:
                    s, found = replace(s, body=inner), True
        elif isinstance(s, If):
            then, hit_t = _rewrite_loop(s.then, var, fn)
            orelse, hit_e = _rewrite_loop(s.orelse, var, fn)
            if hit_t or hit_e:
                s, found = If(s.cond, then, orelse), True
        out.append(s)
    return tuple(out), found


def _guard(cond: Expr, body: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
    """`if cond { body }`, sunk through a perfect nest below so the loops can still be reordered
    (the condition only names outer loops, so checking it per inner iteration is equivalent)."""
    if len(body) == 1 and isinstance(body[0], For):
        inner = body[0]
        return (replace(inner, body=_guard(cond, inner.body)),)
    return (If(cond, body),)


def _perfect_chain(loop: For) -> list[For]:
    """`loop` and the loops perfectly nested below it (each the only statement of its parent)."""
    chain = [loop]
    while len(chain[-1].body) == 1 and isinstance(inner := chain[-1].body[0], For):
        chain.append(inner)
    return chain


# ---------------------------------------------------------------- the steps


def _split(loop: For, factor: int) -> Stmt:
    outer, inner = Var(f"{loop.var}_o"), Var(f"{loop.var}_i")
    index = outer * factor + inner
    body = tuple(substitute_stmt(s, {loop.var: index}) for s in loop.body)
    if loop.extent % factor:
        body = _guard(index.lt(loop.extent), body)
    n_outer = -(-loop.extent // factor)
    # a parallel loop stays parallel outside; a vectorized/unrolled one keeps its kind inside
    outer_kind = "parallel" if loop.kind == "parallel" else "serial"
    inner_kind = loop.kind if loop.kind in ("vectorized", "unrolled") else "serial"
    return For(outer.name, n_outer, (For(inner.name, factor, body, inner_kind),), outer_kind)


def _reorder(loop: For, order: tuple[str, ...]) -> Stmt:
    chain = _perfect_chain(loop)[: len(order)]
    names = [f.var for f in chain]
    if sorted(names) != sorted(order):
        raise ValueError(f"loops {list(order)} are not perfectly nested (nest is {names})")
    by_name = {f.var: f for f in chain}
    body = chain[-1].body
    for name in reversed(order):
        body = (replace(by_name[name], body=body),)
    return body[0]


def _fuse(loop: For, inner_name: str) -> Stmt:
    if len(loop.body) != 1 or not isinstance(loop.body[0], For) or loop.body[0].var != inner_name:
        raise ValueError(f"loop {inner_name!r} is not the only statement of loop {loop.var!r}")
    inner = loop.body[0]
    fused = Var(f"{loop.var}_{inner.var}")
    env: dict[str, Expr] = {loop.var: fused // inner.extent, inner.var: fused % inner.extent}
    body = tuple(substitute_stmt(s, env) for s in inner.body)
    return For(fused.name, loop.extent * inner.extent, body, loop.kind)


_KINDS = {Vectorize: "vectorized", Unroll: "unrolled", Parallel: "parallel"}


def apply_step(body: tuple[Stmt, ...], step: ScheduleStep) -> tuple[Stmt, ...]:
    """Apply one step to a kernel body; raises ValueError saying why it does not apply."""
    names = loop_names(body)
    if isinstance(step, Split):
        if step.factor < 1:
            raise ValueError("split factor must be >= 1")
        new = {f"{step.loop}_o", f"{step.loop}_i"} & names
        if new:
            raise ValueError(f"loop names {sorted(new)} already exist")
        target, fn = step.loop, lambda f: _split(f, step.factor)
    elif isinstance(step, Reorder):
        if len(set(step.loops)) != len(step.loops) or not step.loops:
            raise ValueError("reorder needs distinct loop names")
        missing = set(step.loops) - names
        if missing:
            raise ValueError(f"no loops named {sorted(missing)}")
        target = _outermost(body, set(step.loops))
        fn = lambda f: _reorder(f, step.loops)  # noqa: E731
    elif isinstance(step, Fuse):
        fused_name = f"{step.outer}_{step.inner}"
        if fused_name in names:
            raise ValueError(f"loop name {fused_name!r} already exists")
        target, fn = step.outer, lambda f: _fuse(f, step.inner)
    elif isinstance(step, (Vectorize, Unroll, Parallel)):
        kind = _KINDS[type(step)]
        target, fn = step.loop, lambda f: replace(f, kind=kind)
    elif isinstance(step, (OverlapTail, GuardTail)):
        raise ValueError(f"{type(step).__name__} applies to declarative definitions only")
    else:
        raise ValueError(f"unknown schedule step {step!r}")
    new_body, found = _rewrite_loop(body, target, fn)
    if not found:
        raise ValueError(f"no loop named {target!r}")
    return new_body


def _outermost(body: tuple[Stmt, ...], names: set[str]) -> str:
    """The name of the first (outermost, in program order) loop whose name is in `names`."""
    for s in body:
        if isinstance(s, For):
            if s.var in names:
                return s.var
            inner = _outermost(s.body, names) if loop_names(s.body) & names else None
            if inner:
                return inner
        elif isinstance(s, If) and loop_names(s.then + s.orelse) & names:
            return _outermost(s.then + s.orelse, names)
    return ""


def schedule_kernel(kernel: Kernel, shapes: dict[str, tuple[int, ...]] | None = None) -> Kernel:
    if kernel.compute is not None:
        return _materialize(kernel, shapes or {})
    body = kernel.body
    for step in kernel.schedule:
        try:
            body = apply_step(body, step)
        except ValueError as e:
            raise ScheduleError(f"kernel @{kernel.name}: step {step} does not apply: {e}") from None
    return kernel if body is kernel.body else kernel.replace(body=body)


def _materialize(kernel: Kernel, shapes: dict[str, tuple[int, ...]],
                 defn: Reduction | None = None) -> Kernel:
    """A kernel with a declarative definition: its body is the definition materialized under
    the steps, from scratch (so scheduling twice gives the same kernel)."""
    locals_: list[Buffer] = []

    def new_local(dtype: str, shape: tuple[int, ...]) -> Buffer:
        buf = Buffer(f"acc{len(locals_)}", shape, dtype, "local")
        locals_.append(buf)
        return buf

    steps = tuple(s for s in kernel.schedule if not isinstance(s, (Layout, Widen)))
    try:
        body = materialize(defn or kernel.compute, steps, new_local, shapes)
    except ComputeError as e:
        raise ScheduleError(f"kernel @{kernel.name}: {e}") from None
    return kernel.replace(body=body, locals=tuple(locals_))


def _relayout(kernel: Kernel, buffers: dict[str, Buffer], constants: dict[str, np.ndarray],
              sources: set[str]) -> tuple[Kernel, Reduction]:
    """Apply a kernel's `Layout` / `Widen` steps: the re-laid-out constants (made once per
    step), the kernel reading them, and its definition as it then reads."""
    defn: Reduction = kernel.compute
    params = list(kernel.params)
    for step in kernel.schedule:
        if not isinstance(step, (Layout, Widen)):
            continue
        roles = dict(defn.operands)
        old_name = roles.get(step.operand, "")
        old = buffers.get(old_name)
        shape: tuple[int, ...] = old.shape if old else ()
        if isinstance(step, Widen):
            made = buffers.get(widen_name(old_name, step.dtype))
            if old is None and made is not None:
                shape = made.shape
        else:
            made = buffers.get(layout_name(old_name, step.perm))
            if old is None and made is not None and len(made.shape) == len(step.perm):
                # scheduled before: the copy exists, the original may be gone
                shape = tuple(made.shape[list(step.perm).index(d)]
                              for d in range(len(step.perm)))
        try:
            defn, old_name, new_name = relayout(defn, step, shape)
        except ComputeError as e:
            raise ScheduleError(f"kernel @{kernel.name}: {e}") from None
        if new_name not in buffers:
            if old is None or old.scope != "constant" or old_name not in constants:
                raise ScheduleError(f"kernel @{kernel.name}: step {step}: operand "
                                    f"{step.operand!r} is not a constant")
            data = np.asarray(constants[old_name]).reshape(old.shape)
            if isinstance(step, Widen):  # the same values: int8 -> int16 is exact
                data, dtype = data.astype(step.dtype), step.dtype
            else:
                data, dtype = np.ascontiguousarray(np.transpose(data, step.perm)), old.dtype
            buffers[new_name] = Buffer(new_name, data.shape, dtype, "constant")
            constants[new_name] = data
            sources.add(old_name)
        params = [new_name if p == old_name else p for p in params]
    return kernel.replace(params=tuple(dict.fromkeys(params))), defn


@register_pass("schedule")
def schedule(module: LoopModule, ctx: PassContext) -> LoopModule:
    """Apply every kernel's schedule steps to its body (the steps stay recorded)."""
    buffers = {b.name: b for b in module.buffers}
    constants = dict(module.constants)
    sources: set[str] = set()
    staged: list[tuple[Kernel, Reduction | None]] = []
    for k in module.kernels:
        defn = None
        if k.compute is not None and any(isinstance(s, (Layout, Widen)) for s in k.schedule):
            k, defn = _relayout(k, buffers, constants, sources)
        staged.append((k, defn))
    shapes = {b.name: b.shape for b in buffers.values()}
    kernels = [_materialize(k, shapes, d) if k.compute is not None else schedule_kernel(k, shapes)
               for k, d in staged]
    used = {p for k in kernels for p in k.params} | set(module.outputs) | set(module.inputs)
    dropped = {n for n in sources if n not in used}
    return module.replace(
        kernels=tuple(kernels),
        buffers=tuple(b for b in buffers.values() if b.name not in dropped),
        constants={n: v for n, v in constants.items() if n not in dropped})
