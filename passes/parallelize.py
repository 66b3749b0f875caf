"""parallelize: check every parallel loop, and with threads > 1 make the outermost legal loop of
each big enough kernel parallel (host only; the C emitter turns it into an OpenMP loop).

A loop may run its iterations on different threads when no value flows from one iteration to
another (`parallel_problem` says why not, or None):
- global memory: for each buffer the loop writes, every access to its bytes (through any buffer
  that overlaps them: aliases, in-place outputs, planned arena offsets) is an affine index whose
  loop-variable coefficient is the same in every access, and each iteration's accesses fit in a
  window narrower than that stride: iteration v owns bytes [c*v + lo, c*v + hi] (`ir/affine.py`).
  A store whose index ignores the loop variable (a reduction) or a non-affine index fails it;
- locals (registers and small tiles, private per thread): each one the loop writes is written
  before it is read in every iteration (a tile counts as written once a nest has stored every
  element of it) and is not read outside the loop;
- no external calls (their writes are unknown).

    for i1 in 0..64 { tile = bias; for c .. { tile += x[c, ..] * w[i1, c] }; y[i1, ..] = tile }
        → i1 parallel: y[i1, ..] is a slab of its own, tile is private
    for k in 0..64 { acc = acc + x[k] }   → refused: every iteration writes %acc (a reduction)

A `Parallel` step the user or a tuner recorded on an illegal loop is an error naming the kernel.
With `threads` > 1 (the default 1 changes nothing), each kernel without a parallel loop gets
a `Parallel` step on its outermost legal serial loop of at least 2 iterations whose work (element
stores, guards ignored) is at least `min_work`; extent-1 loops and illegal loops are looked
into as long as the parallel region is entered at most `max_regions` times per kernel call.
Runs after plan-memory, so the overlaps of the planned arena are known.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from nnc.errors import NncError
from nnc.ir.affine import Affine, flat_offset
from nnc.ir.loops import (
    Buffer,
    CallExtern,
    Expr,
    For,
    If,
    Kernel,
    Load,
    LoopModule,
    Parallel,
    Stmt,
    Store,
    walk_expr,
)
from nnc.ir.types import itemsize
from nnc.passes.manager import PassContext, register_pass


class ParallelError(NncError):
    """A Parallel step names a loop whose iterations depend on each other."""


@dataclass(frozen=True)
class ParallelizeOptions:
    threads: int = 1
    min_work: int = 1 << 15  # element stores a parallel loop must do (fork/join costs ~us)
    max_regions: int = 64  # parallel regions entered per kernel call, at most


# ---------------------------------------------------------------- memory regions


@dataclass(frozen=True, slots=True)
class _Region:
    key: tuple[str, str]  # ("arena", "") or (scope, root buffer name)
    start: int  # byte offset of the buffer's first element in that space
    end: int


def _regions(module: LoopModule) -> dict[str, _Region]:
    """Where each global buffer's bytes are (aliases start where their root does)."""
    bufs = module.buffer_map()
    out: dict[str, _Region] = {}
    for b in module.buffers:
        root = b
        for _ in range(len(bufs)):
            if root.alias is None or root.alias not in bufs:
                break
            root = bufs[root.alias]
        if root.scope == "arena" and root.offset is not None:
            key, start = ("arena", ""), root.offset
        else:  # unplanned arena buffers are laid out one after another: disjoint
            key, start = (root.scope, root.name), 0
        out[b.name] = _Region(key, start, start + b.nbytes)
    return out


def _memory_classes(names: set[str], regions: dict[str, _Region]) -> dict[str, int]:
    """Buffer -> class id; buffers whose bytes overlap share a class (transitively)."""
    parent = {n: n for n in names}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    ordered = sorted(names)
    for i, a in enumerate(ordered):
        ra = regions[a]
        for b in ordered[i + 1:]:
            rb = regions[b]
            if ra.key == rb.key and ra.start < rb.end and rb.start < ra.end:
                parent[find(a)] = find(b)
    roots = {r: i for i, r in enumerate(sorted({find(n) for n in names}))}
    return {n: roots[find(n)] for n in names}


# ---------------------------------------------------------------- accesses in a loop


@dataclass(frozen=True, slots=True)
class _Access:
    buffer: str
    indices: tuple[Expr, ...]
    store: bool
    inner: tuple[tuple[str, int], ...]  # loops inside the parallel loop around it


def _expr_loads(e: Expr) -> Iterator[Load]:
    return (x for x in walk_expr(e) if isinstance(x, Load))


def _accesses(stmts: tuple[Stmt, ...], inner: tuple[tuple[str, int], ...]) -> Iterator[_Access]:
    for s in stmts:
        if isinstance(s, For):
            yield from _accesses(s.body, inner + ((s.var, s.extent),))
        elif isinstance(s, If):
            for ld in _expr_loads(s.cond):
                yield _Access(ld.buffer, ld.indices, False, inner)
            yield from _accesses(s.then + s.orelse, inner)
        elif isinstance(s, Store):
            for e in (*s.indices, s.value):
                for ld in _expr_loads(e):
                    yield _Access(ld.buffer, ld.indices, False, inner)
            yield _Access(s.buffer, s.indices, True, inner)


def _has_extern(stmts: tuple[Stmt, ...]) -> bool:
    for s in stmts:
        if isinstance(s, CallExtern):
            return True
        if isinstance(s, For) and _has_extern(s.body):
            return True
        if isinstance(s, If) and _has_extern(s.then + s.orelse):
            return True
    return False


# ---------------------------------------------------------------- locals: written before read


class _Undefined(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _covers(form: Affine, loops: tuple[tuple[str, int], ...], size: int) -> bool:
    """Whether `form` over `loops` reaches every offset 0..size-1 exactly once."""
    count, lo, hi = 1, form.get("", 0), form.get("", 0)
    for v, ext in loops:
        if ext > 1:
            count *= ext
            c = form.get(v, 0)
            if c == 0:
                return False
            lo, hi = lo + min(0, c * (ext - 1)), hi + max(0, c * (ext - 1))
    return count == size and lo == 0 and hi == size - 1 and \
        set(form) - {""} <= {v for v, ext in loops if ext > 1}


class _LocalFlow:
    """Must-write-before-read over one iteration of a loop body, for the locals in `watched`."""

    def __init__(self, watched: dict[str, Buffer]) -> None:
        self.watched = watched
        self.pending: dict[int, set[str]] = {}  # loop depth -> tiles complete when it exits

    def reads(self, e: Expr, defined: set[str]) -> None:
        for ld in _expr_loads(e):
            if ld.buffer in self.watched and ld.buffer not in defined:
                raise _Undefined(ld.buffer)

    def run(self, stmts: tuple[Stmt, ...], defined: set[str],
            path: tuple[tuple[str, int], ...], guard_depth: int) -> set[str]:
        defined = set(defined)
        for s in stmts:
            if isinstance(s, Store):
                for e in (*s.indices, s.value):
                    self.reads(e, defined)
                buf = self.watched.get(s.buffer)
                if buf is not None:
                    self.store(buf, s.indices, defined, path, guard_depth)
            elif isinstance(s, If):
                self.reads(s.cond, defined)
                depth = len(path)
                then = self.run(s.then, defined, path, depth)
                orelse = self.run(s.orelse, defined, path, depth)
                defined = then & orelse
            elif isinstance(s, For):
                depth = len(path)
                body = self.run(s.body, defined, path + ((s.var, s.extent),), guard_depth)
                done = self.pending.pop(depth, set())
                if s.extent >= 1:
                    defined = body | done
        return defined

    def store(self, buf: Buffer, indices: tuple[Expr, ...], defined: set[str],
              path: tuple[tuple[str, int], ...], guard_depth: int) -> None:
        if buf.size <= 1:
            defined.add(buf.name)
            return
        form = flat_offset(indices, buf.shape, dict(path))
        if form is None:
            return
        used = [i for i, (v, ext) in enumerate(path) if ext > 1 and form.get(v, 0)]
        depth = min(used) if used else len(path)
        if depth < guard_depth or not _covers(form, path[depth:], buf.size):
            return
        if depth == len(path):
            defined.add(buf.name)
        else:
            self.pending.setdefault(depth, set()).add(buf.name)


def _loaded_outside(stmts: tuple[Stmt, ...], loop: For, names: set[str]) -> str | None:
    """A local of `names` that the kernel body loads outside `loop`, or None."""
    for s in stmts:
        if s is loop:
            continue
        exprs: list[Expr] = []
        if isinstance(s, Store):
            exprs = [*s.indices, s.value]
        elif isinstance(s, If):
            exprs = [s.cond]
            hit = _loaded_outside(s.then + s.orelse, loop, names)
            if hit:
                return hit
        elif isinstance(s, For):
            hit = _loaded_outside(s.body, loop, names)
            if hit:
                return hit
        for e in exprs:
            for ld in _expr_loads(e):
                if ld.buffer in names:
                    return ld.buffer
    return None


# ---------------------------------------------------------------- the legality check


def parallel_problem(kernel: Kernel, loop: For, outer: tuple[tuple[str, int], ...],
                     module: LoopModule, regions: dict[str, _Region] | None = None) -> str | None:
    """Why the iterations of `loop` (inside the loops `outer` of `kernel`) may not run in
    parallel, or None when they may."""
    if loop.extent <= 1:
        return None
    if _has_extern(loop.body):
        return "it calls an external kernel"
    regions = regions if regions is not None else _regions(module)
    bufs = module.buffer_map()
    locals_ = {b.name: b for b in kernel.locals}
    accesses = list(_accesses(loop.body, ()))

    # locals the loop writes become private: written before read, unused after the loop
    written_locals = {a.buffer for a in accesses if a.store and a.buffer in locals_}
    try:
        _LocalFlow({n: locals_[n] for n in written_locals}).run(loop.body, set(), (), 0)
    except _Undefined as e:
        return (f"%{e.name} is read before it is written in an iteration (a value carried from "
                "one iteration to the next, e.g. a reduction)")
    after = _loaded_outside(kernel.body, loop, written_locals)
    if after:
        return f"%{after} is written in the loop and read after it"

    # global buffers: each iteration owns a window of the bytes the loop writes
    globals_ = {a.buffer for a in accesses if a.buffer not in locals_}
    classes = _memory_classes(globals_, regions)
    written = {classes[a.buffer] for a in accesses if a.store and a.buffer not in locals_}
    extents_out = dict(outer)
    windows: dict[int, tuple[int, dict[str, int], int, int, str]] = {}
    for a in sorted(accesses, key=lambda a: not a.store):  # stores first: name a reduction
        if a.buffer in locals_ or classes[a.buffer] not in written:
            continue
        buf = bufs[a.buffer]
        what = f"%{a.buffer}[{', '.join(map(str, a.indices))}]"
        extents = {**extents_out, loop.var: loop.extent, **dict(a.inner)}
        form = flat_offset(a.indices, buf.shape, extents)
        if form is None:
            return f"the index of {what} is not affine in the loop variables"
        size = itemsize(buf.dtype)
        stride = form.get(loop.var, 0) * size
        if stride == 0:
            return (f"every iteration {'writes' if a.store else 'reads'} the same element of "
                    f"%{a.buffer} ({what}: a reduction or a broadcast of what the loop writes)")
        base = regions[a.buffer].start + form.get("", 0) * size
        outer_terms = {v: c * size for v, c in form.items() if v in extents_out}
        lo = hi = base
        for v, ext in a.inner:
            c = form.get(v, 0) * size
            lo, hi = lo + min(0, c * (ext - 1)), hi + max(0, c * (ext - 1))
        hi += size - 1
        cls = classes[a.buffer]
        if cls not in windows:
            windows[cls] = (stride, outer_terms, lo, hi, what)
            continue
        s0, o0, lo0, hi0, first = windows[cls]
        if stride != s0 or outer_terms != o0:
            return (f"{what} and {first} step through the same memory differently per "
                    "iteration")
        windows[cls] = (s0, o0, min(lo, lo0), max(hi, hi0), first)
    for stride, _, lo, hi, what in windows.values():
        if hi - lo >= abs(stride):
            return (f"iterations overlap in the memory {what} writes (each touches "
                    f"{hi - lo + 1} bytes, {abs(stride)} apart)")
    return None


# ---------------------------------------------------------------- the pass


def _work(stmts: tuple[Stmt, ...]) -> int:
    """Element stores one execution of `stmts` does (guards taken as true)."""
    n = 0
    for s in stmts:
        if isinstance(s, Store):
            n += 1
        elif isinstance(s, For):
            n += s.extent * _work(s.body)
        elif isinstance(s, If):
            n += max(_work(s.then), _work(s.orelse))
    return n


def _loops(stmts: tuple[Stmt, ...], outer: tuple[tuple[str, int], ...] = ()
           ) -> Iterator[tuple[For, tuple[tuple[str, int], ...]]]:
    """Every loop with the loops around it, pre-order."""
    for s in stmts:
        if isinstance(s, For):
            yield s, outer
            yield from _loops(s.body, outer + ((s.var, s.extent),))
        elif isinstance(s, If):
            yield from _loops(s.then + s.orelse, outer)


def check_kernel(kernel: Kernel, module: LoopModule, regions: dict[str, _Region]) -> None:
    """Raise ParallelError for the first parallel loop of `kernel` that may not be one."""
    for loop, outer in _loops(kernel.body):
        if loop.kind != "parallel":
            continue
        why = parallel_problem(kernel, loop, outer, module, regions)
        if why:
            about = f" ({kernel.op_kind} {kernel.op_name!r})" if kernel.op_kind else ""
            raise ParallelError(
                f"kernel @{kernel.name}{about}: loop %{loop.var} cannot run in parallel: "
                f"{why}; remove its Parallel step or choose an outer loop whose iterations are "
                "independent")


def choose_loops(kernel: Kernel, module: LoopModule, regions: dict[str, _Region],
                 opts: ParallelizeOptions) -> list[str]:
    """The loops of `kernel` to make parallel: the outermost legal ones with enough work."""
    chosen: list[str] = []

    def visit(stmts: tuple[Stmt, ...], outer: tuple[tuple[str, int], ...], entries: int) -> None:
        for s in stmts:
            if isinstance(s, If):
                visit(s.then + s.orelse, outer, entries)
            if not isinstance(s, For) or _work((s,)) < opts.min_work:
                continue
            if s.kind == "serial" and s.extent >= 2 and \
                    parallel_problem(kernel, s, outer, module, regions) is None:
                chosen.append(s.var)
            elif entries * s.extent <= opts.max_regions:
                visit(s.body, outer + ((s.var, s.extent),), entries * s.extent)

    visit(kernel.body, (), 1)
    return chosen


def _mark(stmts: tuple[Stmt, ...], names: set[str]) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, For):
            s = replace(s, body=_mark(s.body, names),
                        kind="parallel" if s.var in names else s.kind)
        elif isinstance(s, If):
            s = If(s.cond, _mark(s.then, names), _mark(s.orelse, names))
        out.append(s)
    return tuple(out)


def parallelize_kernel(kernel: Kernel, module: LoopModule, regions: dict[str, _Region],
                       opts: ParallelizeOptions) -> Kernel:
    check_kernel(kernel, module, regions)
    if opts.threads <= 1 or any(loop.kind == "parallel" for loop, _ in _loops(kernel.body)):
        return kernel
    names = choose_loops(kernel, module, regions, opts)
    if not names:
        return kernel
    return kernel.replace(body=_mark(kernel.body, set(names)),
                          schedule=kernel.schedule + tuple(Parallel(n) for n in names))


@register_pass("parallelize", options=ParallelizeOptions)
def parallelize(module: LoopModule, ctx: PassContext) -> LoopModule:
    """Check every parallel loop; with threads > 1 make the outermost legal loop of each big
    enough kernel parallel (recorded as a Parallel step)."""
    opts = ctx.options if ctx.options is not None else ParallelizeOptions()
    if opts.threads < 1:
        raise NncError(f"threads={opts.threads}: the thread count must be at least 1")
    if opts.threads > 1 and getattr(ctx.target, "kind", "host") != "host":
        raise NncError(f"threads={opts.threads}: parallel loops run on the host target only "
                       f"(the target is {ctx.target.name}); use threads=1 there")
    regions = _regions(module)
    kernels = tuple(parallelize_kernel(k, module, regions, opts) for k in module.kernels)
    return module.replace(kernels=kernels)
