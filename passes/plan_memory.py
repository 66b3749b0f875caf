"""plan-memory: place the arena buffers (intermediate tensors) in one byte arena.

A buffer lives from the first kernel that names it in `params` to the last one; a buffer that is
an alias (a view of another buffer's bytes) takes no space and extends its target's lifetime
instead. Two buffers whose lifetimes overlap must not overlap in memory. Every strategy below is
tried and the smallest plan is kept:

- greedy-by-size:  largest buffer first, into the best-fitting (smallest) free gap;
- first-fit-by-order: in order of first use, at the lowest offset that fits;
- first-fit-by-size:  largest buffer first, at the lowest offset that fits.

`ctx.facts["memory"]` records the arena size, the floor (the most bytes live at once, which no
plan can beat) and the strategy chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from nnc.ir.loops import Buffer, LoopModule
from nnc.passes.manager import PassContext, register_pass


@dataclass(frozen=True)
class PlanMemoryOptions:
    alignment: int = 16


@dataclass(frozen=True, slots=True)
class Block:
    """One buffer to place: its aligned size and lifetime in kernels [first, last]."""

    name: str
    size: int
    first: int
    last: int

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


def lifetimes(module: LoopModule, alignment: int) -> list[Block]:
    """The arena buffers to place, with lifetimes (aliases folded into their targets)."""
    bmap = module.buffer_map()
    span: dict[str, tuple[int, int]] = {}
    for t, k in enumerate(module.kernels):
        for p in k.params:
            if p not in bmap:
                continue
            root = _root(bmap[p], bmap)
            first, _ = span.get(root.name, (t, t))
            span[root.name] = (first, t)
    blocks = []
    for b in module.buffers:
        if b.scope != "arena" or b.alias:
            continue
        # a buffer no kernel touches still gets a (harmless) place, lifetime empty
        first, last = span.get(b.name, (0, -1))
        blocks.append(Block(b.name, _align(max(b.nbytes, 1), alignment), first, last))
    return blocks


def floor_bytes(blocks: list[Block]) -> int:
    """The largest total size of buffers live during one kernel."""
    if not blocks:
        return 0
    horizon = max(b.last for b in blocks) + 1
    return max((sum(b.size for b in blocks if b.first <= t <= b.last) for t in range(horizon)),
               default=0)


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


@register_pass("plan-memory", options=PlanMemoryOptions)
def plan_memory(module: LoopModule, ctx: PassContext) -> LoopModule:
    """Assign arena offsets to intermediate buffers; keep the smallest of several strategies."""
    opts = ctx.options if ctx.options is not None else PlanMemoryOptions()
    if opts.alignment < 1:
        raise ValueError("plan-memory: alignment must be >= 1")
    blocks = lifetimes(module, opts.alignment)
    best: tuple[int, str, dict[str, int]] | None = None
    for name, strategy in STRATEGIES.items():
        offsets = strategy(blocks)
        size = arena_bytes(blocks, offsets)
        if best is None or size < best[0]:
            best = (size, name, offsets)
    assert best is not None
    size, chosen, offsets = best
    buffers = tuple(
        replace(b, offset=offsets[b.name]) if b.name in offsets else b for b in module.buffers
    )
    ctx.facts["memory"] = {
        "arena_bytes": size,
        "floor_bytes": floor_bytes(blocks),
        "strategy": chosen,
    }
    return module.replace(buffers=buffers, arena_size=size)
