"""Features of a scheduled loop nest for the cost model (`nnc.compiler.tune.search`).

They are read off the loop plan that `nnc.ir.compute.plan` makes of a definition under a
schedule — the loops `materialize` emits, outermost first, before the statements are built
(so a few thousand candidates cost well under a second):

- per loop level (up to `LEVELS`): log2 extent, kind (serial / unrolled / vectorized /
  intrinsic), reduce or spatial, part of the register tile;
- the register tile: scalar accumulators (unrolled copies), accumulator array size, lanes;
- the intrinsic used (its width) and how often it is called;
- guard counts: for each padding window, how many times its check runs (the product of the
  extents of the loops down to where it is placed: where all its axes are bound), partitions;
- dynamic counts: innermost body executions, loop-overhead iterations (loops not unrolled),
  peeled remainders, code copies (unrolled extents x partition regions x peeled tails);
- the workload: log2 MACs, the axes' extents, windows, depthwise (no channel reduce).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from nnc.ir.compute import Reduction, plan
from nnc.ir.intrinsics import DOT_INTRINSICS
from nnc.ir.loops import ScheduleStep

LEVELS = 10
KINDS = {"serial": 0.0, "unrolled": 1.0, "vectorized": 2.0, "parallel": 3.0}
AXES = ("n", "oh", "ow", "oc", "kh", "kw", "ic", "k", "m0")


def _log(x: float) -> float:
    return math.log2(x) if x > 0 else -1.0


def features(defn: Reduction, steps: tuple[ScheduleStep, ...],
             shapes: Mapping[str, tuple[int, ...]]) -> list[float]:
    """The feature vector (fixed length, `len(feature_names())`) of `defn` under `steps`."""
    p = plan(defn, steps, shapes)
    loops = p.loops
    first = next((i for i, lp in enumerate(loops) if lp.reduce), len(loops))
    tile = {lp.name for lp in loops[first:] if not lp.reduce}
    per_level: list[float] = []
    for lp in loops[:LEVELS]:
        kind = 4.0 if lp.name in p.intrinsics else KINDS.get(lp.kind, 0.0)
        per_level += [_log(lp.extent), kind, float(lp.reduce), float(lp.name in tile)]
    per_level += [0.0, -1.0, 0.0, 0.0] * (LEVELS - min(len(loops), LEVELS))
    unrolled_tile = math.prod(lp.extent for lp in loops[first:] if lp.name in tile
                              and lp.kind == "unrolled")
    array_tile = math.prod(lp.extent for lp in loops[first:] if lp.name in tile
                           and lp.kind != "unrolled")
    vector_lanes = math.prod(lp.extent for lp in loops if lp.kind == "vectorized")
    width = max((DOT_INTRINSICS[fn].width for fn in p.intrinsics.values()), default=0)
    # a widened operand (`Widen`: int16 weights) spares the intrinsic its unpacking
    widened = float(any(DOT_INTRINSICS[fn].operands != ("int8", "int8")
                        for fn in p.intrinsics.values()))
    # executions of the innermost body and of each loop's increment-and-branch
    trips = 1.0
    overhead = 0.0
    intr_calls = 0.0
    for lp in loops:
        if lp.name in p.intrinsics:
            intr_calls = trips
            continue
        trips *= lp.extent
        if lp.kind not in ("unrolled",):
            overhead += trips
    # where each window's check goes: below the last loop of its out and tap axes
    guard_evals = 0.0
    for w in defn.windows:
        at = max(i for i, lp in enumerate(loops) if lp.axis in (w.out, w.tap))
        evals = float(math.prod(lp.extent for lp in loops[:at + 1]
                                if lp.name not in p.intrinsics))
        if w.out in p.partitions:
            evals *= 0.3  # the interior has no check
        guard_evals += evals
    copies = float(math.prod(lp.extent for lp in loops if lp.kind == "unrolled"))
    copies *= 3.0 ** len(p.partitions) * 2.0 ** len(set(p.tails) - p.guard_tails)
    extents = {a.name: a.extent for a in defn.axes}
    macs = math.prod(a.extent for a in defn.axes)
    workload = [_log(macs), float(len(defn.windows)), float("ic" not in extents and
                                                             "k" not in extents)]
    workload += [_log(extents.get(a, 0)) for a in AXES]
    schedule = [
        float(len(loops)), float(first), _log(unrolled_tile), _log(array_tile),
        _log(vector_lanes), float(width), _log(intr_calls), _log(trips), _log(overhead),
        _log(guard_evals), float(len(p.partitions)), float(len(p.tails)), _log(copies),
        _log(trips / max(unrolled_tile, 1)), widened,
    ]
    return workload + schedule + per_level


def feature_names() -> list[str]:
    names = ["log_macs", "windows", "depthwise", *(f"log_{a}" for a in AXES),
             "loops", "first_reduce", "log_acc_scalars", "log_acc_array", "log_vector_lanes",
             "intrinsic_width", "log_intrinsic_calls", "log_trips", "log_loop_overhead",
             "log_guard_evals", "partitions", "tails", "log_code_copies", "log_trips_per_acc",
             "widened_operand"]
    for i in range(LEVELS):
        names += [f"l{i}_log_extent", f"l{i}_kind", f"l{i}_reduce", f"l{i}_tile"]
    return names
