"""default-schedule: give every kernel without a schedule a simple default one.

Each innermost loop (a loop with no loop inside) whose extent is at least `min_extent` gets a
`Vectorize` step when its iterations are independent: every store in it writes an index
that depends on the loop variable (so reductions into an accumulator stay serial), a buffer it
both loads and stores is read only at the index it writes, and it calls no external kernel.
On Cortex-M an innermost reduction (a dot product: not independent) whose extent is a multiple
of 4 is split by 4 and the inner loop unrolled, since gcc does not unroll there and the loop
overhead would match the multiply-accumulate; one of at most 4 iterations is unrolled whole.
Kernels that already carry a schedule (from the tuner or the user) are left alone.

    for i in 0..4 { for j in 0..16 { y[i, j] = relu(x[i, j]) } }   →   schedule [Vectorize("j")]
"""

from __future__ import annotations

from dataclasses import dataclass

from nnc.ir.loops import (
    CallExtern,
    Expr,
    For,
    If,
    Kernel,
    Load,
    LoopModule,
    ScheduleStep,
    Split,
    Stmt,
    Store,
    Unroll,
    Vectorize,
    uses_var,
    walk_expr,
)
from nnc.passes.manager import PassContext, register_pass


@dataclass(frozen=True)
class DefaultScheduleOptions:
    min_extent: int = 4
    # Cortex-M: unroll reduction loops (dot products) by this factor, which gcc -O3 does not do
    # there; 0 = the target's default (4 on Cortex-M, none on the host, where gcc vectorizes)
    unroll_reductions: int = 0


def _innermost_loops(body: tuple[Stmt, ...]) -> list[For]:
    found: list[For] = []
    for s in body:
        if isinstance(s, For):
            inner = _innermost_loops(s.body)
            found.extend(inner if inner else [s])
        elif isinstance(s, If):
            found.extend(_innermost_loops(s.then + s.orelse))
    return found


def _loads(e: Expr, out: list[Load]) -> None:
    out.extend(x for x in walk_expr(e) if isinstance(x, Load))


def _collect(body: tuple[Stmt, ...], stores: list[Store], loads: list[Load]) -> bool:
    """Gather the stores and loads of a loop-free body; False if it calls an external kernel."""
    for s in body:
        if isinstance(s, Store):
            stores.append(s)
            _loads(s.value, loads)
            for i in s.indices:
                _loads(i, loads)
        elif isinstance(s, If):
            _loads(s.cond, loads)
            if not _collect(s.then + s.orelse, stores, loads):
                return False
        elif isinstance(s, CallExtern):
            return False
    return True


def independent_iterations(loop: For) -> bool:
    """Whether the iterations of an innermost loop may run as vector lanes."""
    stores: list[Store] = []
    loads: list[Load] = []
    if not _collect(loop.body, stores, loads):
        return False
    written: dict[str, set[tuple[Expr, ...]]] = {}
    for s in stores:
        if not any(uses_var(i, loop.var) for i in s.indices):
            return False  # every iteration writes the same element: a reduction
        written.setdefault(s.buffer, set()).add(s.indices)
    for ld in loads:
        idx = written.get(ld.buffer)
        if idx is not None and (len(idx) != 1 or ld.indices not in idx):
            return False
    return True


def default_steps(kernel: Kernel, min_extent: int,
                  unroll_reductions: int = 0) -> tuple[ScheduleStep, ...]:
    steps: list[ScheduleStep] = []
    for loop in _innermost_loops(kernel.body):
        if loop.extent >= min_extent and independent_iterations(loop):
            steps.append(Vectorize(loop.var))
        elif (unroll_reductions > 1 and loop.extent >= 2 * unroll_reductions
              and loop.extent % unroll_reductions == 0):
            steps += [Split(loop.var, unroll_reductions), Unroll(f"{loop.var}_i")]
        elif unroll_reductions > 1 and 1 < loop.extent <= unroll_reductions:
            steps.append(Unroll(loop.var))  # a short reduction (a first layer's channels)
    return tuple(steps)


@register_pass("default-schedule", options=DefaultScheduleOptions)
def default_schedule(module: LoopModule, ctx: PassContext) -> LoopModule:
    """Record a default schedule (vectorize independent innermost loops) on unscheduled kernels."""
    opts = ctx.options if ctx.options is not None else DefaultScheduleOptions()
    unroll = opts.unroll_reductions or (4 if getattr(ctx.target, "kind", "") == "cortex-m" else 0)
    kernels = []
    for k in module.kernels:
        if not k.schedule:
            steps = default_steps(k, opts.min_extent, unroll)
            if steps:
                k = k.replace(schedule=steps)
        kernels.append(k)
    return module.replace(kernels=tuple(kernels))
