"""order-ops: pick the topological order of the ops that needs the fewest live activation bytes.

On a branchy graph the order decides how many intermediate tensors are alive at once:

    %a = conv(%x) [big]; %b = conv(%x) [big]; %a2 = pool(%a) [small]; %b2 = pool(%b); add(%a2, %b2)
    →  conv a, pool a, conv b, pool b, add   (never both big tensors at once)

Cost model (the same as plan-memory's floor): a tensor produced by an op lives from that op to
its last consumer; graph inputs, outputs and constants live outside the arena and cost nothing;
a reshape-like (alias) op's output shares its input's bytes. The cost of an order is its peak:
the largest, over the ops, of the bytes live while the op runs (its inputs and its outputs).

An op that every other op precedes or follows (a "cut", e.g. each op of a chain) is at the same
place in every order, so the graph splits into independent segments between cuts. Each segment
is solved exactly by a search over the sets of ops already run (memoized), or greedily (the
ready op that leaves the fewest live bytes) when it has more than `max_states` such sets. A
segment keeps its original order unless the new one has a strictly lower peak.

Runs after fuse-ops, right before lower-to-loops: the fused graph's ops are exactly the kernels
and its values exactly the buffers plan-memory places (before fusion the model would count
intermediates that fusion removes, and fuse-ops moves fused groups to their last op).
`ctx.facts["order_ops"]` records the peak before and after and the segments reordered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nnc.ir.graph import Graph, Op
from nnc.ir.ops import get_op
from nnc.ir.types import itemsize
from nnc.passes.manager import PassContext, register_pass


@dataclass(frozen=True)
class OrderOpsOptions:
    max_states: int = 20000  # exact search per segment up to this many states, else greedy


_MAX_DEPTH = 400  # the exact search recurses once per op of a segment


class _TooManyStates(Exception):
    pass


class _Costs:
    """Per-op facts of the cost model, with op sets as bitmasks over op positions."""

    def __init__(self, graph: Graph) -> None:
        ops = graph.ops
        self.n = len(ops)
        outputs = set(graph.output_names())
        producer = {v.name: i for i, op in enumerate(ops) for v in op.outputs}
        root: dict[str, str] = {}
        for op in ops:
            alias = op.body is None and get_op(op.kind).alias and bool(op.inputs and op.inputs[0])
            for k, v in enumerate(op.outputs):
                if alias and k == 0 and v.name not in outputs:
                    root[v.name] = root.get(op.inputs[0], op.inputs[0])
                else:
                    root[v.name] = v.name
        types = graph.value_types()
        self.size: dict[str, int] = {
            r: (0 if r in outputs or r not in producer else
                math.prod(types[r].shape) * itemsize(types[r].dtype))
            for r in set(root.values())
        }
        self.preds = [0] * self.n
        self.users: dict[str, int] = {r: 0 for r in self.size}
        self.reads: list[set[str]] = [set() for _ in ops]
        for i, op in enumerate(ops):
            for name in op.inputs:
                if not name or name not in root:
                    continue  # a graph input or a constant
                self.preds[i] |= 1 << producer[name]
                self.users[root[name]] |= 1 << i
                self.reads[i].add(root[name])
        self.new = [sum(self.size[v.name] for v in op.outputs if root[v.name] == v.name)
                    for op in ops]
        self.born = [{v.name for v in op.outputs if root[v.name] == v.name} for op in ops]

    def step(self, done: int, live: int, i: int) -> tuple[int, int]:
        """(bytes live while op i runs, bytes live after it) given the ops `done` before it."""
        during = live + self.new[i]
        after_done = done | (1 << i)
        freed = sum(self.size[r] for r in self.reads[i] | self.born[i]
                    if self.users[r] & ~after_done == 0)
        return during, during - freed

    def peak(self, order: Sequence[int], done: int = 0, live: int = 0) -> int:
        top = 0
        for i in order:
            during, live = self.step(done, live, i)
            done |= 1 << i
            top = max(top, during)
        return top


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def _segments(costs: _Costs) -> list[list[int]]:
    """Ops split at cuts (ops comparable with every other): [seg0, [cut0], seg1, [cut1], ...]."""
    n = costs.n
    anc = [0] * n
    for i in range(n):  # ops are in topological order: predecessors' ancestors are known
        anc[i] = costs.preds[i]
        for j in _bits(costs.preds[i]):
            anc[i] |= anc[j]
    desc = [0] * n
    for i in range(n):
        for j in _bits(anc[i]):
            desc[j] |= 1 << i
    full = (1 << n) - 1
    out: list[list[int]] = [[]]
    for i in range(n):
        if (anc[i] | desc[i] | (1 << i)) == full:
            out += [[i], []]
        else:
            out[-1].append(i)
    return [s for s in out if s]


def _search(costs: _Costs, seg: list[int], done0: int, live0: int, max_states: int) -> list[int]:
    """The order of `seg` with the lowest peak (ties: earlier original positions first)."""
    memo: dict[int, tuple[int, int]] = {}  # done mask -> (peak of the rest, next op)
    seg_mask = sum(1 << i for i in seg)

    def best(done: int, live: int) -> int:
        if done & seg_mask == seg_mask:
            return 0
        hit = memo.get(done)
        if hit is not None:
            return hit[0]
        if len(memo) >= max_states:
            raise _TooManyStates
        choice = (-1, -1)
        for i in seg:
            if done >> i & 1 or costs.preds[i] & ~done:
                continue
            during, after = costs.step(done, live, i)
            if choice[0] >= 0 and during >= choice[0]:
                continue
            peak = max(during, best(done | 1 << i, after))
            if choice[0] < 0 or peak < choice[0]:
                choice = (peak, i)
        memo[done] = choice
        return choice[0]

    best(done0, live0)
    order, done = [], done0
    while done & seg_mask != seg_mask:
        i = memo[done][1]
        order.append(i)
        done |= 1 << i
    return order


def _greedy(costs: _Costs, seg: list[int], done: int, live: int) -> list[int]:
    """Run the ready op that needs the least while running, then leaves the least live."""
    order: list[int] = []
    left = list(seg)
    while left:
        ready = [i for i in left if not costs.preds[i] & ~done]
        scored = [(*costs.step(done, live, i), i) for i in ready]
        during, after, i = min(scored)
        order.append(i)
        left.remove(i)
        done |= 1 << i
        live = after
    return order


def order_for_peak(graph: Graph, max_states: int = 20000) -> tuple[list[int], int, int, int]:
    """(new order as op positions, peak before, peak after, segments changed)."""
    costs = _Costs(graph)
    order: list[int] = []
    done = live = changed = 0
    for seg in _segments(costs):
        if len(seg) > 1:
            try:
                if len(seg) > _MAX_DEPTH:
                    raise _TooManyStates
                cand = _search(costs, seg, done, live, max_states)
            except _TooManyStates:
                cand = _greedy(costs, seg, done, live)
            if costs.peak(cand, done, live) < costs.peak(seg, done, live):
                seg, changed = cand, changed + 1
        for i in seg:
            live = costs.step(done, live, i)[1]
            done |= 1 << i
        order += seg
    return order, costs.peak(range(costs.n)), costs.peak(order), changed


@register_pass("order-ops", options=OrderOpsOptions)
def order_ops(graph: Graph, ctx: PassContext) -> Graph:
    """Reorder ops (topologically) to lower the peak of live intermediate bytes."""
    opts = ctx.options if ctx.options is not None else OrderOpsOptions()
    if opts.max_states < 1:
        raise ValueError("order-ops: max_states must be >= 1")
    order, before, after, changed = order_for_peak(graph, opts.max_states)
    ctx.facts["order_ops"] = {"peak_before": before, "peak_after": after,
                              "segments_reordered": changed}
    if not changed:
        return graph
    ops: list[Op] = [graph.ops[i] for i in order]
    return graph.replace(ops=tuple(ops))
