"""plan-memory: place the arena buffers (intermediate tensors) in one byte arena.

A buffer lives from the first kernel that names it in `params` to the last one; a buffer that is
an alias (a view of another buffer's bytes) takes no space and extends its target's lifetime
instead. Two buffers whose lifetimes overlap must not overlap in memory, with one exception:
a kernel's in-place pair (`Kernel.inplace`: an elementwise output over an input of the same size)
shares one slot when the input dies at that kernel and the output is born there, so

    %t1 = relu(%t0)   (t0 not used later)   →   t0 and t1 at the same offset

Every strategy below is tried and the smallest plan is kept:

- greedy-by-size:  largest buffer first, into the best-fitting (smallest) free gap;
- first-fit-by-order: in order of first use, at the lowest offset that fits;
- first-fit-by-size:  largest buffer first, at the lowest offset that fits.

`ctx.facts["memory"]` records the arena size, the floor (the most bytes live at once, in-place
pairs counted once; no plan can beat it), the strategy chosen, the in-place pairs applied, the
largest tensors and the kernel where the floor is reached with the tensors live there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from nnc.ir.loops import Buffer, LoopModule, OverlapTail
from nnc.passes.manager import PassContext, register_pass


@dataclass(frozen=True)
class PlanMemoryOptions:
    alignment: int = 16
    inplace: bool = True  # let elementwise kernels write over a dying input of the same size


@dataclass(frozen=True, slots=True)
class Block:
    """One slot to place: its aligned size and lifetime in kernels [first, last]. `members` are
    the buffers that share it (the first one, then in-place outputs written over it)."""

    name: str
    size: int
    first: int
    last: int
    members: tuple[str, ...] = ()

    def conflicts(self, other: Block) -> bool:
        return self.first <= other.last and other.first <= self.last


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _root(buf: Buffer, bmap: dict[str, Buffer]) -> Buffer:
    seen = {buf.name}
    while buf.alias:
        if buf.alias not in bmap:
            raise ValueError(f"buffer %{buf.name} aliases unknown buffer %{buf.alias}")
        buf = bmap[buf.alias]
        if buf.name in seen:
            raise ValueError(f"alias cycle through buffer %{buf.name}")
        seen.add(buf.name)
    return buf


def _spans(module: LoopModule) -> dict[str, tuple[int, int]]:
    """Root buffer name -> (first, last) kernel index that touches it (through any alias)."""
    bmap = module.buffer_map()
    span: dict[str, tuple[int, int]] = {}
    for t, k in enumerate(module.kernels):
        for p in k.params:
            if p not in bmap:
                continue
            root = _root(bmap[p], bmap)
            first, _ = span.get(root.name, (t, t))
            span[root.name] = (first, t)
    return span


def _inplace_groups(
    module: LoopModule, span: dict[str, tuple[int, int]]
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(root buffer -> first buffer of its in-place chain, the kernels' pairs that apply)."""
    bmap = module.buffer_map()
    head: dict[str, str] = {}
    applied: list[tuple[str, str]] = []
    last: dict[str, int] = {}  # group head -> last kernel using any member

    def group(name: str) -> str:
        return head.get(name, name)

    for t, k in enumerate(module.kernels):
        if any(isinstance(step, OverlapTail) for step in k.schedule):
            continue  # an overlapped tile reads again what its outputs may have overwritten
        for x, y in k.inplace:
            if x not in k.params or y not in k.params:
                raise ValueError(f"kernel {k.name}: in-place pair (%{x}, %{y}) names a buffer "
                                 "that is not one of its params")
            rx, by = _root(bmap[x], bmap), bmap[y]
            if rx.scope != "arena" or by.scope != "arena" or by.alias or rx.name == y:
                continue
            g = group(rx.name)
            if (last.get(g, span[rx.name][1]) != t or span[y][0] != t or y in head
                    or rx.nbytes != by.nbytes):
                continue
            # another view of the same bytes would be read at other indices
            if any(p not in (x, y) and p in bmap and group(_root(bmap[p], bmap).name) == g
                   for p in k.params):
                continue
            head[rx.name] = g
            head[y] = g
            last[g] = span[y][1]
            applied.append((x, y))
    return head, applied


def lifetimes(module: LoopModule, alignment: int, inplace: bool = True) -> list[Block]:
    """The slots to place, with lifetimes (aliases folded into their targets, in-place chains
    into one slot)."""
    span = _spans(module)
    head = _inplace_groups(module, span)[0] if inplace else {}
    groups: dict[str, list[Buffer]] = {}
    for b in module.buffers:
        if b.scope == "arena" and not b.alias:
            groups.setdefault(head.get(b.name, b.name), []).append(b)
    blocks = []
    for name, members in groups.items():
        # a buffer no kernel touches still gets a (harmless) place, lifetime empty
        used = [span[m.name] for m in members if m.name in span]
        first = min((s[0] for s in used), default=0)
        last = max((s[1] for s in used), default=-1)
        size = max(_align(max(m.nbytes, 1), alignment) for m in members)
        blocks.append(Block(name, size, first, last, tuple(m.name for m in members)))
    return blocks


def _live_at(blocks: list[Block], t: int) -> list[Block]:
    return [b for b in blocks if b.first <= t <= b.last]


def floor_bytes(blocks: list[Block]) -> int:
    """The largest total size of slots live during one kernel."""
    horizon = max((b.last for b in blocks), default=-1) + 1
    return max((sum(b.size for b in _live_at(blocks, t)) for t in range(horizon)), default=0)


def _gaps(placed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Free (start, end) gaps between occupied [start, end) ranges; the last gap is unbounded."""
    gaps, cursor = [], 0
    for start, end in sorted(placed):
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    gaps.append((cursor, -1))
    return gaps


def _place(blocks: list[Block], best_fit: bool) -> dict[str, int]:
    offsets: dict[str, int] = {}
    done: list[Block] = []
    for blk in blocks:
        busy = [(offsets[o.name], offsets[o.name] + o.size) for o in done if o.conflicts(blk)]
        fits = [(s, e) for s, e in _gaps(busy) if e < 0 or e - s >= blk.size]
        if best_fit:
            bounded = [g for g in fits if g[1] >= 0]
            start = min(bounded, key=lambda g: (g[1] - g[0], g[0]))[0] if bounded else fits[-1][0]
        else:
            start = fits[0][0]
        offsets[blk.name] = start
        done.append(blk)
    return offsets


STRATEGIES: dict[str, Callable[[list[Block]], dict[str, int]]] = {
    "greedy-by-size": lambda bs: _place(sorted(bs, key=lambda b: (-b.size, b.first)), True),
    "first-fit-by-order": lambda bs: _place(sorted(bs, key=lambda b: (b.first, -b.size)), False),
    "first-fit-by-size": lambda bs: _place(sorted(bs, key=lambda b: (-b.size, b.first)), False),
}


def arena_bytes(blocks: list[Block], offsets: dict[str, int]) -> int:
    return max((offsets[b.name] + b.size for b in blocks), default=0)


def _report(module: LoopModule, blocks: list[Block], top: int = 5) -> dict[str, Any]:
    """The largest arena tensors, and where the floor is reached with what is live there."""
    arena = sorted((b for b in module.buffers if b.scope == "arena" and not b.alias),
                   key=lambda b: (-b.nbytes, b.name))
    peak: dict[str, Any] = {"kernel": None, "tensors": []}
    horizon = max((b.last for b in blocks), default=-1) + 1
    if horizon > 0:
        t = max(range(horizon), key=lambda t: (sum(b.size for b in _live_at(blocks, t)), -t))
        live = sorted(_live_at(blocks, t), key=lambda b: (-b.size, b.name))
        peak = {"kernel": module.kernels[t].name,
                "tensors": [("=".join(b.members), b.size) for b in live[:top]]}
    return {"largest_tensors": [(b.name, b.nbytes) for b in arena[:top]], "peak": peak}


@register_pass("plan-memory", options=PlanMemoryOptions)
def plan_memory(module: LoopModule, ctx: PassContext) -> LoopModule:
    """Assign arena offsets to intermediate buffers; keep the smallest of several strategies."""
    opts = ctx.options if ctx.options is not None else PlanMemoryOptions()
    if opts.alignment < 1:
        raise ValueError("plan-memory: alignment must be >= 1")
    blocks = lifetimes(module, opts.alignment, opts.inplace)
    best: tuple[int, str, dict[str, int]] | None = None
    for name, strategy in STRATEGIES.items():
        offsets = strategy(blocks)
        size = arena_bytes(blocks, offsets)
        if best is None or size < best[0]:
            best = (size, name, offsets)
    assert best is not None
    size, chosen, offsets = best
    member_offsets = {m: offsets[b.name] for b in blocks for m in b.members}
    buffers = tuple(
        replace(b, offset=member_offsets[b.name]) if b.name in member_offsets else b
        for b in module.buffers
    )
    ctx.facts["memory"] = {
        "arena_bytes": size,
        "floor_bytes": floor_bytes(blocks),
        "strategy": chosen,
        "inplace": _inplace_groups(module, _spans(module))[1] if opts.inplace else [],
        **_report(module, blocks),
    }
    return module.replace(buffers=buffers, arena_size=size)
