"""Which loops of a kernel become OpenCL work-item dimensions: `map_work(kernel)`.

    >>> m = map_work(kernel)                      # doctest: +SKIP
    >>> m.loops, m.global_size                    # doctest: +SKIP
    (('tile0[0]', 'i2', 'i1'), (14, 4, 64))       # id(0): a tile row, (1): row block, (2): i1

The mapping is data (`WorkMapping`), chosen here from the loop IR and consumed by the OpenCL
emitter (loops become `get_global_id(d)`) and the host runtime (global and work-group sizes
per device type), so a schedule can set it instead: loops the schedule marked `parallel` are
taken as independent without analysis, and tuned work-group sizes only need `local_sizes`.

A loop of the kernel's outer perfect nest (each loop the only statement of its parent) is mapped
when its iterations are independent: for every global buffer the kernel writes, every access
(load or store, through any param that overlaps it) is `stride * v + r` at one fixed index
position, one stride throughout and r (inner loops, constants) within [0, stride), so different
iterations touch disjoint elements; and every local is written before it is read in each
iteration (no value carried from one iteration to the next).

Below the nest, a body of several pieces (a register tile: a partitioned row's peeled first
column, the split loop `ow_o` or `oc_o` over whole tiles, its remainder, the peeled last column;
each piece initializes the locals it reads) becomes one more dimension (`WorkMapping.units`,
the loop "unit"): one item per piece, or per iteration of a piece that is one independent loop,
when for every written buffer some index position separates the pieces' ranges. `unite`
rewrites the kernel to that loop (`for unit { if (unit in piece 0) ... }`, the same statements
in the same order when run serially) before emission.

Below that, an imperfect body (a conv's init + reduction + epilogue over a local tile) is
spread too (`Spread`): a position per written buffer (locals included) where every access is
`u + c + rest` for one inner loop u, the same u and c throughout each store and one rest per
buffer; work item g then runs iteration g - c of each such loop u and touches only its own
elements, so its private copy of the tile needs one element there (`shrink_locals`). Spreading
is a per-device-type choice (`SPREAD_DIMS`). A kernel with no mapped loop runs as one work item:
correct, just serial.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from nnc.ir.affine import Affine, affine_form
from nnc.ir.loops import (
    INDEX,
    CallExtern,
    Const,
    Expr,
    For,
    If,
    Kernel,
    Load,
    Stmt,
    Store,
    Var,
    binary,
    logical_and,
    map_expr,
    walk_expr,
    walk_stmts,
)

MAX_DIMS = 3  # OpenCL 1.2 guarantees three work-item dimensions
# Dimensions spread through an imperfect body, per device type. A GPU wants many items: a
# conv's output rows and columns too. A CPU device wants few, long items: on PoCL resnet50 took
# 1.0x host C's time with the outer nest alone, 1.7x with the rows spread and 4.5x with rows
# and columns (one guarded multiply-add per item and input channel); see the README.
# GPU and accelerator share model.cl's `NNC_CL_SPREAD` variant, so they share one value.
SPREAD_DIMS = {"cpu": 0, "gpu": MAX_DIMS, "accelerator": MAX_DIMS}


# Work-group sizes per OpenCL device type, as mapping data (the autotuner may tune them later):
# None lets the driver pick (PoCL on a CPU packs work items into vectorized loops itself); a GPU
# gets `GPU_GROUP` items along dimension 0 and the global size rounded up to a multiple of it
# (the kernels guard every mapped index, so the padding items do nothing).
DEVICE_TYPES = ("cpu", "gpu", "accelerator")
GPU_GROUP = 64


@dataclass(frozen=True, slots=True)
class Spread:
    """A loop inside a kernel's imperfect body run by work items: item g of dimension `dim`
    runs its iteration g - `shift` (none where that is outside the loop)."""

    loop: str
    dim: int
    shift: int


@dataclass(frozen=True, slots=True)
class WorkMapping:
    """Loops run as work-item dimensions: `loops[d]` is `get_global_id(d)`: an outer loop, or
    a spread dimension's label buffer[position] such as "tile0[0]"; `global_size[d]` is its
    extent. `spread` lists the inner loops of spread dimensions; `private` the (local,
    position) pairs an item indexes only at its own id, so its copy of the local needs one
    element there. `local_sizes` holds (device type, work-group size or None: the driver
    picks) pairs. No loops: one item."""

    loops: tuple[str, ...] = ()
    global_size: tuple[int, ...] = ()
    spread: tuple[Spread, ...] = ()
    local_sizes: tuple[tuple[str, tuple[int, ...] | None], ...] = ()
    private: tuple[tuple[str, int], ...] = ()
    # the statements below the outer nest as one loop over units (`unite`): (first statement,
    # statement count, whether the unit is a loop whose iterations are items) per unit
    units: tuple[tuple[int, int, bool], ...] = ()

    @property
    def work_dim(self) -> int:
        return max(len(self.loops), 1)

    @property
    def global_work(self) -> tuple[int, ...]:
        return self.global_size or (1,)

    def dim_of(self, loop: str) -> int | None:
        return self.loops.index(loop) if loop in self.loops else None

    def spread_of(self, loop: str) -> Spread | None:
        return next((s for s in self.spread if s.loop == loop), None)

    def local_size(self, device_type: str) -> tuple[int, ...] | None:
        """The work-group size on a device of `device_type` (None: the driver picks)."""
        return dict(self.local_sizes).get(device_type)

    def launch(self, device_type: str) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """(global size, local size) to enqueue with on `device_type`: the global size rounded
        up to a multiple of the local one."""
        local = self.local_size(device_type)
        if local is None:
            return self.global_work, None
        return tuple(-(-g // n) * n for g, n in zip(self.global_work, local, strict=True)), local


def default_local_sizes(global_size: tuple[int, ...]
                        ) -> tuple[tuple[str, tuple[int, ...] | None], ...]:
    """The per-device-type work-group sizes of a mapping with `global_size`."""
    if not global_size:
        return ()
    gpu = (min(GPU_GROUP, 1 << (global_size[0] - 1).bit_length()),) + (1,) * (
        len(global_size) - 1)
    return (("cpu", None), ("gpu", gpu), ("accelerator", None))


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


def _extents(stmts: Iterable[Stmt]) -> dict[str, int]:
    return {s.var: s.extent for s in walk_stmts(stmts) if isinstance(s, For)}


def _range(form: Affine, extents: Mapping[str, int]) -> tuple[int, int]:
    """(min, max) of an affine form over its loops' ranges."""
    lo = hi = form.get("", 0)
    for v, c in form.items():
        if v:
            span = c * (extents[v] - 1)
            lo, hi = lo + min(span, 0), hi + max(span, 0)
    return lo, hi


def _strided(loop: For, idxs: list[tuple[Expr, ...]], inner: Mapping[str, int]) -> bool:
    """Some index position is `s * loop + r` in every access with one stride s > 0 and every r
    (inner loops and constants only) in one window [lo, lo + s): each iteration owns its own
    slice there (a partitioned tile's loop starts at an offset)."""
    extents = {**inner, loop.var: max(loop.extent, 2)}
    for p in range(len(idxs[0])):
        strides = set()
        low, high = None, None
        for i in idxs:
            form = affine_form(i[p], extents)
            if form is None or not set(form) - {""} <= set(extents):
                break
            s = form.pop(loop.var, 0)
            lo, hi = _range(form, extents)
            if s <= 0:
                break
            low = lo if low is None else min(low, lo)
            high = hi if high is None else max(high, hi)
            strides.add(s)
        else:
            if len(strides) == 1 and high - low < strides.pop():  # type: ignore[operator]
                return True
    return False


def _partition(idx: Expr, extents: Mapping[str, int], inner: set[str]
               ) -> tuple[str, int, frozenset[tuple[str, int]]] | None:
    """`idx` as `v + c + rest`: one inner loop v with coefficient 1, the constant c and the
    outer-loop rest, or None."""
    form = affine_form(idx, dict(extents))
    if form is None:
        return None
    c = form.pop("", 0)
    vs = [v for v in form if v in inner]
    if len(vs) != 1 or form[vs[0]] != 1:
        return None
    v = vs[0]
    del form[v]
    return v, c, frozenset(form.items())


def _spread_one(body: tuple[Stmt, ...], keys: Mapping[str, str], written: set[str],
                taken: Mapping[str, set[int]], extents: Mapping[str, int]
                ) -> tuple[dict[str, int], dict[str, int], int, int, set[str]] | None:
    """One more work-item dimension through the (imperfect) `body`: a position per written
    buffer at which every access is `v + c + rest` (one rest per buffer), with the same v and c
    throughout each store. Returns (position per buffer, offset c per spread loop v, lo, hi,
    the buffers whose rest is empty): work item g runs iteration g + lo - c of loop v and
    touches only elements g + lo + rest."""
    inner = {s.var for s in walk_stmts(body) if isinstance(s, For)}
    # every store, with the loops around it (inside body) and its written-buffer accesses
    stores: list[tuple[tuple[For, ...], list[tuple[str, tuple[Expr, ...]]]]] = []

    def visit(ss: Iterable[Stmt], loops: tuple[For, ...]) -> bool:
        for s in ss:
            if isinstance(s, For):
                if not visit(s.body, (*loops, s)):
                    return False
            elif isinstance(s, If):
                if any(isinstance(x, Load) and keys.get(x.buffer, x.buffer) in written
                       for x in walk_expr(s.cond)):
                    return False
                if not visit(s.then, loops) or not visit(s.orelse, loops):
                    return False
            elif isinstance(s, Store):
                acc = [(keys.get(s.buffer, s.buffer), s.indices)]
                for e in (*s.indices, s.value):
                    acc += [(keys.get(x.buffer, x.buffer), x.indices) for x in walk_expr(e)
                            if isinstance(x, Load) and keys.get(x.buffer, x.buffer) in written]
                stores.append((loops, acc))
            else:
                return False
        return True

    if not visit(body, ()) or not stores:
        return None
    by_buf: dict[str, list[tuple[Expr, ...]]] = {}
    for _, acc in stores:
        for b, idx in acc:
            by_buf.setdefault(b, []).append(idx)
    options: dict[str, list[int]] = {}
    for b, idxs in by_buf.items():
        rank = {len(i) for i in idxs}
        if len(rank) != 1:
            return None
        options[b] = []
        for p in range(rank.pop()):
            if p in taken.get(b, set()):
                continue
            parts = [_partition(i[p], extents, inner) for i in idxs]
            if all(parts) and len({r for _, _, r in parts}) == 1:  # type: ignore[misc]
                options[b].append(p)
        if not options[b]:
            return None
    names = sorted(options)
    for choice in itertools.product(*(options[b] for b in names)):
        pos = dict(zip(names, choice, strict=True))
        offsets: dict[str, int] = {}
        spread_of_store: list[str] = []
        ok = True
        for _, acc in stores:
            parts = {_partition(idx[pos[b]], extents, inner)[:2] for b, idx in acc}  # type: ignore[index]
            if len(parts) != 1:
                ok = False
                break
            ((v, c),) = parts
            if offsets.setdefault(v, c) != c:
                ok = False
                break
            spread_of_store.append(v)
        if not ok:
            continue
        # a spread loop runs one iteration per item: every store inside it must be spread by it
        for (loops, _), v in zip(stores, spread_of_store, strict=True):
            if any(f.var in offsets and f.var != v for f in loops):
                ok = False
        if not ok:
            continue
        lo = min(c for c in offsets.values())
        hi = max(c + extents[v] for v, c in offsets.items())
        if hi - lo > 1:
            plain = {b for b in names
                     if all(not _partition(i[pos[b]], extents, inner)[2]  # type: ignore[index]
                            for i in by_buf[b])}
            return pos, offsets, lo, hi, plain
    return None

def _cuts(body: tuple[Stmt, ...], local_names: set[str]) -> list[int]:
    """Statement indices j where no local's value flows from body[:j] into body[j:]: every local
    the rest touches is first (unconditionally) stored there."""
    accs = [_accesses((st,)) for st in body]
    cuts = []
    for j in range(1, len(body)):
        seen: set[str] = set()
        ok = True
        for acc in accs[j:]:
            for buf, _, store, cond in acc:
                if buf in local_names and buf not in seen:
                    seen.add(buf)
                    ok = ok and store and not cond
        if ok:
            cuts.append(j)
    return cuts


def _plan_units(body: tuple[Stmt, ...], keys: Mapping[str, str], written: set[str],
                local_names: set[str]) -> tuple[tuple[int, int, bool], ...]:
    """The statements `body` (below the outer nest) cut into units that may run as separate
    work items: the pieces between the cuts (`_cuts`), a piece that is one loop with
    independent iterations (a register tile's split loop, `ow_o`, `oc_o`) one item per
    iteration. Legal when, for every written global buffer, some index position separates the
    units (their ranges there, over their own loops only, do not overlap). () when not."""
    bounds = [0, *_cuts(body, local_names), len(body)]
    pieces = [(a, b - a) for a, b in itertools.pairwise(bounds)]
    if len(pieces) < 2:
        return ()
    units: list[tuple[int, int, bool]] = []
    by_buf: dict[str, list[list[tuple[Expr, ...]]]] = {}
    ranges: dict[str, list[dict[str, int]]] = {}
    for first, count in pieces:
        stmts = body[first:first + count]
        extents = _extents(stmts)
        acc: dict[str, list[tuple[Expr, ...]]] = {}
        for buf, idx, _, _ in _accesses(stmts):
            key = keys.get(buf, buf)
            if key in written:
                acc.setdefault(key, []).append(idx)
        loop = stmts[0] if count == 1 and isinstance(stmts[0], For) else None
        iterates = loop is not None and loop.extent > 1 and all(
            len({len(i) for i in idxs}) == 1
            and _strided(loop, idxs, {**_extents(loop.body), loop.var: loop.extent})
            for idxs in acc.values())
        units.append((first, count, iterates))
        for key, idxs in acc.items():
            by_buf.setdefault(key, []).append(idxs)
            ranges.setdefault(key, []).append(extents)
    if sum(loop_extent(body, u) for u in units) < 2:
        return ()
    for key, groups in by_buf.items():
        if len(groups) < 2:
            continue
        rank = {len(i) for g in groups for i in g}
        if len(rank) != 1:
            return ()
        for p in range(rank.pop()):
            spans = []
            for idxs, extents in zip(groups, ranges[key], strict=True):
                lo = hi = None
                for i in idxs:
                    form = affine_form(i[p], dict(extents))
                    if form is None or not set(form) - {""} <= set(extents):
                        break
                    a, b = _range(form, extents)
                    lo = a if lo is None else min(lo, a)
                    hi = b if hi is None else max(hi, b)
                else:
                    spans.append((lo, hi))
                    continue
                break
            else:
                spans.sort()
                if all(h < lo2 for (_, h), (lo2, _) in itertools.pairwise(spans)):
                    break
        else:
            return ()
    return tuple(units)


def loop_extent(body: tuple[Stmt, ...], unit: tuple[int, int, bool]) -> int:
    """How many work items a unit of `body` takes."""
    first, _, iterates = unit
    loop = body[first]
    return loop.extent if iterates and isinstance(loop, For) else 1


def unit_var(kernel: Kernel) -> str:
    """The name of the loop over units in `kernel` (one no loop of it has)."""
    used = {s.var for s in walk_stmts(kernel.body) if isinstance(s, For)}
    return next(n for n in itertools.chain(["unit"], (f"unit{i}" for i in itertools.count()))
                if n not in used)


def _unit_loop(body: tuple[Stmt, ...], units: tuple[tuple[int, int, bool], ...], var: str
               ) -> For:
    """`body` as `for var in 0..N parallel { if (var in unit 0's items) {...} ... }`: the same
    statements in the same order when run serially; unit u's loop (if it iterates) runs
    iteration var - start."""
    from nnc.ir.loops import substitute_stmt

    v = Var(var)
    branches: list[Stmt] = []
    start = 0
    for first, count, iterates in units:
        stmts = body[first:first + count]
        n = loop_extent(body, (first, count, iterates))
        if iterates:
            loop = stmts[0]
            assert isinstance(loop, For)
            at = binary("sub", v, start) if start else v
            stmts = tuple(substitute_stmt(st, {loop.var: at}) for st in loop.body)
            cond = logical_and(binary("ge", v, start), binary("lt", v, start + n)) if start \
                else binary("lt", v, n)
        else:
            cond = binary("eq", v, start)
        branches.append(If(cond, stmts))
        start += n
    return For(var, start, tuple(branches), "parallel")


def unite(kernel: Kernel, work: WorkMapping) -> Kernel:
    """`kernel` with the statements below its outer nest as the loop over units that `work`
    maps (`WorkMapping.units`); `kernel` itself when it maps none."""
    if not work.units:
        return kernel
    var = unit_var(kernel)
    levels = len(outer_nest(kernel.body))  # the units are the body of the nest's last loop

    def rebuild(stmts: tuple[Stmt, ...], level: int) -> tuple[Stmt, ...]:
        if level == levels:
            return (_unit_loop(stmts, work.units, var),)
        (loop,) = stmts
        assert isinstance(loop, For)
        return (replace(loop, body=rebuild(loop.body, level + 1)),)

    return kernel.replace(body=rebuild(kernel.body, 0))


def map_work(kernel: Kernel, same_memory: Mapping[str, str] | None = None,
             max_dims: int = MAX_DIMS, max_spread: int = MAX_DIMS) -> WorkMapping:
    """The work-item mapping of `kernel`. `same_memory` maps a param to the written param whose
    memory it shares exactly (same bytes, same shape: an in-place kernel's input and output);
    a param overlapping a written one in any other way must not be passed (the caller maps such
    a kernel to one work item). At most `max_spread` dimensions are spread through an imperfect
    body (`SPREAD_DIMS` holds the choice per device type)."""
    if any(isinstance(s, CallExtern) for s in walk_stmts(kernel.body)):
        return WorkMapping()
    nest = outer_nest(kernel.body)
    if not nest and len(kernel.body) < 2:
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
    body = nest[-1].body if nest else kernel.body
    inner = _extents(body)
    inner.update({f.var: 1 for f in nest if f.extent == 1})  # extent-1 loops drop out

    def independent(loop: For) -> bool:
        if loop.kind == "parallel":
            return True  # the schedule's promise
        for idxs in by_buffer.values():
            if len({len(i) for i in idxs}) != 1 or not _strided(loop, idxs, inner):
                return False
        return True

    chosen = [f for f in nest if f.extent > 1 and independent(f)][:max_dims]
    dims = [(f.var, f.extent) for f in chosen]
    extents = {**inner, **{f.var: f.extent for f in nest}}
    # below the nest, a register tile's pieces (a partitioned row's peeled columns, the tile's
    # split loop, its remainder) as one more dimension: one item per piece or tile
    units: tuple[tuple[int, int, bool], ...] = ()
    if len(dims) < max_dims and len(body) > 1:
        units = _plan_units(body, same, written, local_names)
        if units:
            loop = _unit_loop(body, units, unit_var(kernel))
            dims.append((loop.var, loop.extent))
            extents[loop.var] = loop.extent
            body = loop.body
    # through an imperfect body (a conv's init + reduction + epilogue): spread its pixels too
    spread: list[Spread] = []
    private: list[tuple[str, int]] = []
    spread_dims: list[str] = []
    keys = {**same, **{b: b for b in local_names}}
    all_written = written | local_names
    taken: dict[str, set[int]] = {}
    while len(dims) < max_dims and len(spread_dims) < max_spread and len(body) > 1:
        found = _spread_one(body, keys, all_written, taken, extents)
        if found is None:
            break
        pos, offsets, lo, hi, plain = found
        for b, p in pos.items():
            taken.setdefault(b, set()).add(p)
            if b in local_names and b in plain:
                private.append((b, p))
        label = min(f"{b}[{p}]" for b, p in pos.items())  # e.g. the tile's row: "tile0[0]"
        spread += [Spread(v, len(dims), c - lo) for v, c in sorted(offsets.items())]
        dims.append((label, hi - lo))
        spread_dims.append(label)
    # dimension 0 varies fastest: the innermost mapped loop
    n = len(dims)
    spread = [Spread(sp.loop, n - 1 - sp.dim, sp.shift) for sp in spread]
    dims.reverse()
    sizes = tuple(e for _, e in dims)
    return WorkMapping(tuple(d for d, _ in dims), sizes, tuple(spread),
                       default_local_sizes(sizes), tuple(sorted(private)), units)


def device_mappings(kernel: Kernel, same_memory: Mapping[str, str] | None = None
                    ) -> dict[str, WorkMapping]:
    """The mapping of `kernel` per device type (DEVICE_TYPES), as the runtime launches it."""
    return {t: map_work(kernel, same_memory, max_spread=SPREAD_DIMS[t]) for t in DEVICE_TYPES}


def shrink_locals(kernel: Kernel, work: WorkMapping) -> Kernel:
    """`kernel` with each local position in `work.private` cut to one element: a work item of
    a spread dimension touches only its own index there (its private copy needs no more)."""
    if not work.private:
        return kernel
    cut: dict[str, set[int]] = {}
    for b, p in work.private:
        cut.setdefault(b, set()).add(p)
    zero = Const(0, INDEX)

    def index(buf: str, idx: tuple[Expr, ...]) -> tuple[Expr, ...]:
        ps = cut.get(buf, set())
        return tuple(zero if p in ps else e for p, e in enumerate(idx))

    def expr(e: Expr) -> Expr:
        def fn(x: Expr) -> Expr | None:
            return replace(x, indices=index(x.buffer, x.indices)) if isinstance(x, Load) \
                else None
        return map_expr(e, fn)

    def stmts(ss: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        for s in ss:
            if isinstance(s, For):
                out.append(replace(s, body=stmts(s.body)))
            elif isinstance(s, If):
                out.append(replace(s, cond=expr(s.cond), then=stmts(s.then),
                                   orelse=stmts(s.orelse)))
            elif isinstance(s, Store):
                out.append(Store(s.buffer, index(s.buffer, tuple(expr(i) for i in s.indices)),
                                 expr(s.value)))
            else:
                out.append(s)
        return tuple(out)

    local = tuple(replace(b, shape=tuple(1 if p in cut.get(b.name, set()) else d
                                         for p, d in enumerate(b.shape)))
                  for b in kernel.locals)
    return kernel.replace(locals=local, body=stmts(kernel.body))
