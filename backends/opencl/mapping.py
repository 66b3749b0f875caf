"""Which loops of a kernel become OpenCL work-item dimensions: `map_work(kernel)`.

    >>> m = map_work(kernel)                      # doctest: +SKIP
    >>> m.loops, m.global_size                    # doctest: +SKIP
    (('i3', 'i1'), (49, 64))                      # get_global_id(0) runs i3, (1) runs i1

The mapping is data (`WorkMapping`), chosen here from the loop IR and consumed by the OpenCL
emitter (the loops become `get_global_id(d)`) and the host runtime (the global sizes), so a
schedule can set it instead: loops the schedule marked `parallel` are taken as independent
without analysis, and a tuned local size only needs `local_size` filled.

A loop of the kernel's outer perfect nest (each loop the only statement of its parent) is mapped
when its iterations are independent: for every global buffer the kernel writes, every access
(load or store, through any param that overlaps it) has the loop variable itself at one fixed
index position, so different iterations touch disjoint elements, and every local is written
before it is read in each iteration (no value carried from one iteration to the next). A kernel
with no such loop runs as one work item: correct, just serial.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nnc.ir.loops import (
    CallExtern,
    Expr,
    For,
    If,
    Kernel,
    Load,
    Stmt,
    Store,
    Var,
    walk_expr,
    walk_stmts,
)

MAX_DIMS = 3  # OpenCL 1.2 guarantees three work-item dimensions


@dataclass(frozen=True, slots=True)
class WorkMapping:
    """Loops run as work-item dimensions: `loops[d]` is `get_global_id(d)`, `global_size[d]` its
    extent. `local_size` None lets the driver pick the work-group size. No loops: one item."""

    loops: tuple[str, ...] = ()
    global_size: tuple[int, ...] = ()
    local_size: tuple[int, ...] | None = None

    @property
    def work_dim(self) -> int:
        return max(len(self.loops), 1)

    @property
    def global_work(self) -> tuple[int, ...]:
        return self.global_size or (1,)

    def dim_of(self, loop: str) -> int | None:
        return self.loops.index(loop) if loop in self.loops else None


def outer_nest(body: Iterable[Stmt]) -> list[For]:
    """The kernel's outer perfect loop nest, outermost first."""
    nest: list[For] = []
    stmts = tuple(body)
    while len(stmts) == 1 and isinstance(stmts[0], For):
        nest.append(stmts[0])
        stmts = stmts[0].body
    return nest


def _accesses(stmts: Iterable[Stmt]) -> list[tuple[str, tuple[Expr, ...], bool, bool]]:
    """(buffer, indices, is_store, conditional) of every access, in execution order (a store's
    operands before the store, an if's condition before its branches)."""
    out: list[tuple[str, tuple[Expr, ...], bool, bool]] = []

    def loads(e: Expr, cond: bool) -> None:
        for x in walk_expr(e):
            if isinstance(x, Load):
                out.append((x.buffer, x.indices, False, cond))

    def visit(ss: Iterable[Stmt], cond: bool) -> None:
        for s in ss:
            if isinstance(s, Store):
                for i in s.indices:
                    loads(i, cond)
                loads(s.value, cond)
                out.append((s.buffer, s.indices, True, cond))
            elif isinstance(s, For):
                visit(s.body, cond)
            elif isinstance(s, If):
                loads(s.cond, cond)
                visit(s.then, True)
                visit(s.orelse, True)

    visit(stmts, False)
    return out


def map_work(kernel: Kernel, same_memory: Mapping[str, str] | None = None,
             max_dims: int = MAX_DIMS) -> WorkMapping:
    """The work-item mapping of `kernel`. `same_memory` maps a param to the written param whose
    memory it shares exactly (same bytes, same shape: an in-place kernel's input and output);
    a param overlapping a written one in any other way must not be passed (the caller maps such
    a kernel to one work item)."""
    if any(isinstance(s, CallExtern) for s in walk_stmts(kernel.body)):
        return WorkMapping()
    nest = outer_nest(kernel.body)
    if not nest:
        return WorkMapping()
    same = dict(same_memory or {})
    local_names = {b.name for b in kernel.locals}
    accesses = _accesses(kernel.body)
    written = {same.get(b, b) for b, _, store, _ in accesses if store and b not in local_names}
    # a local must be (unconditionally) stored before its first load
    first: dict[str, tuple[bool, bool]] = {}
    for buf, _, store, cond in accesses:
        if buf in local_names and buf not in first:
            first[buf] = (store, cond)
    if any(not store or cond for store, cond in first.values()):
        return WorkMapping()
    by_buffer: dict[str, list[tuple[Expr, ...]]] = {}
    for buf, idx, _, _ in accesses:
        key = same.get(buf, buf)
        if key in written:
            by_buffer.setdefault(key, []).append(idx)

    def independent(loop: For) -> bool:
        if loop.kind == "parallel":
            return True  # the schedule's promise
        for idxs in by_buffer.values():
            rank = {len(i) for i in idxs}
            if len(rank) != 1:
                return False
            if not any(all(isinstance(i[p], Var) and i[p].name == loop.var for i in idxs)
                       for p in range(rank.pop())):
                return False
        return True

    chosen = [f for f in nest if f.extent > 1 and independent(f)][:max_dims]
    chosen.reverse()  # dimension 0 varies fastest: the innermost mapped loop
    return WorkMapping(tuple(f.var for f in chosen), tuple(f.extent for f in chosen))
