"""The schedule space of a declarative definition (`nnc.ir.compute.Reduction`): the step tuples
the tuner may try on a kernel, each one checked legal with `nnc.ir.compute.plan`.

A point of the space is a `Knobs` (what a person tuning by hand would turn); `Knobs.steps`
writes it as steps on the definition's axis names, in the order the default schedules use
(`nnc.passes.default_schedule.reduction_steps`), so the default is a point of the space too:

    oc_tile=4, tile="unrolled", row_tile=1, lanes=("ic", "dot4_s8", 4) ->
        Split('oc', 4), Unroll('oc_i'), Split('ic', 4), Intrinsic('dot4_s8', 'ic_i'),
        Reorder(n, oh, ow, oc_o, kh, kw, ic_o, oc_i, ic_i)

Knobs: the output-channel tile (1, 2, 4, 8 or all of them; its loop unrolled into scalar
accumulators, an accumulator array, or Helium lanes on MVE targets), a tile of the output row
(1, 2, 4, unrolled), one reduce axis mapped onto a dot intrinsic, split and unrolled, or
unrolled whole, 1-8 copies of the intrinsic unrolled along its axis (fewer loop branches:
an FC's or a 16-channel conv's depth in one iteration; their loop inside or outside the
tile), padding windows partitioned, the tile
inside or outside the reduction, the order of the other reduce loops, and the channel loop
outside the pixels (weights stay put). On the M4/M7 the intrinsic may be `dot4_s8s16`: its
steps store the weights as int16 (`Widen`), which spares the unpacking of every weight word
for PKHBT/PKHTB once per input word, at twice the weights' flash.

An elementwise definition (no reduce axis: add_s8, mul_s8) has a space of its own
(`ElementwiseKnobs`): its innermost axis as vector lanes or not, in one vector loop or split
into loops of 4-16 lanes, and 1, 2 or 4 iterations of the next axis out unrolled around them.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from nnc.ir.compute import ComputeError, Reduction, plan
from nnc.ir.intrinsics import DOT_INTRINSICS
from nnc.ir.loops import (
    Binary,
    GuardTail,
    Intrinsic,
    Layout,
    OverlapTail,
    Partition,
    Reorder,
    ScheduleStep,
    Split,
    Unroll,
    Vectorize,
    Widen,
)

TILE_KINDS = ("unrolled", "array", "vectorized")
OC_TILES = (1, 2, 4, 8)
ROW_TILES = (1, 2, 4)
UNROLL_FACTORS = (2, 4, 8)
LANE_COPIES = (1, 2, 4, 8)  # intrinsic calls per iteration of the lanes' reduce loop
FULL_UNROLL_MAX = 8  # a reduce axis this short may be unrolled whole
ENUMERATE_LIMIT = 2048  # knob settings a sample walks once random draws stop finding new points
# draws a sample makes before it gives up, however few points it asks for: where few knob
# settings are legal (a 3x3 conv), 50 draws for the one trial a resumed tune had left missed
# every legal point and the tune stopped at 39 of 40 ("space exhausted")
MIN_DRAWS = 1000


@dataclass(frozen=True, slots=True)
class Knobs:
    """One point of the space. `lanes` = (reduce axis, mode, factor): mode "none", "unroll"
    (factor 0: the whole axis) or an intrinsic name from `nnc.ir.intrinsics` (factor = its
    width). `order`: the reduce loops other than the lanes, outermost first (empty: the
    definition's order)."""

    oc_tile: int = 1
    tile: str = "unrolled"
    row_tile: int = 1
    lanes: tuple[str, str, int] = ("", "none", 0)
    partition: tuple[str, ...] = ()
    tile_inside: bool = True
    lanes_inner: bool = True
    order: tuple[str, ...] = ()
    oc_outer: bool = False
    # the weights stored output channel last (`Layout`; Helium's lanes over the channels)
    layout: bool = False
    # copies of the lanes' intrinsic along their reduce axis, unrolled (fewer loop branches)
    lane_copies: int = 1
    # the output axis `row_tile` tiles ("": the innermost one, `_row_axis`); Helium's
    # depthwise lanes take their pixel copies along any (one weight vector for all of them)
    row_axis: str = ""
    # every reduce loop unrolled whole (a depthwise conv's taps: straight-line MACs), with no
    # lanes on a reduce axis
    unroll_taps: bool = False
    # those copies' loop outside the tile (each copy's calls over the tile's channels in a
    # row: Helium's default for 3x3 convs), not between the tile and the lanes
    copies_outer: bool = False
    # the row split's remainder as one more whole tile whose stores past the row's end are
    # guarded (`GuardTail`: no peeled copy of the nest; Helium's depthwise default), the
    # row's taps unrolled
    guard_tail: bool = False

    def steps(self, defn: Reduction, shapes: Mapping[str, tuple[int, ...]] | None = None
              ) -> tuple[ScheduleStep, ...]:
        """The schedule steps of this point (raises ComputeError where the knobs do not fit
        the definition's axes; `plan` checks the rest)."""
        names = [a.name for a in defn.axes]
        spatial = [a.name for a in defn.spatial]
        steps: list[ScheduleStep] = []
        if self.layout:
            w = dict(defn.operands).get("w")
            if w is None or shapes is None or w not in shapes:
                raise ComputeError("no weight operand to lay out")
            rank = len(shapes[w])
            steps.append(Layout("w", (*range(1, rank), 0)))
        intr = DOT_INTRINSICS.get(self.lanes[1])
        if intr is not None and intr.operands[1] != "int8":
            if "w" not in dict(defn.operands):
                raise ComputeError("no weight operand to widen")
            steps.append(Widen("w", intr.operands[1]))  # e.g. int16 weights for dot4_s8s16
        outer = [n for n in spatial if n != "oc"]
        tile: list[str] = []
        row = self.row_axis or _row_axis(defn)
        if self.row_axis and (self.row_axis not in outer or defn.axis(row).extent < 2):
            raise ComputeError(f"no output axis {self.row_axis!r} to tile")
        partition = list(self.partition)
        if self.row_tile > 1:
            if row is None:
                raise ComputeError("no output row to tile")
            if row in partition:  # partitioned before the split: each region tiled on its own
                steps.append(Partition(row))
                partition.remove(row)
            steps += [Split(row, self.row_tile), Unroll(f"{row}_i")]
            if self.guard_tail:
                if defn.axis(row).extent % self.row_tile == 0:
                    raise ComputeError(f"no remainder along {row!r} to guard")
                steps.append(GuardTail(f"{row}_o"))
                # the row's taps unrolled: in a loop gcc keeps them rolled under the guards
                taps = [w.tap for w in defn.windows if w.out == row and w.high]
                steps += [Unroll(t) for t in taps[:1] if defn.axis(t).extent > 1]
            outer[outer.index(row)] = f"{row}_o"
            tile.append(f"{row}_i")
        elif self.guard_tail:
            raise ComputeError("no row split to guard")
        oc_loops: list[str] = []
        if "oc" in names:
            oc = defn.axis("oc").extent
            kind: type[Unroll] | type[Vectorize] | None = (
                Unroll if self.tile == "unrolled" else
                Vectorize if self.tile == "vectorized" else None)
            if self.oc_tile >= oc and oc > 1:
                steps += [kind("oc")] if kind is not None else []
                tile.append("oc")
            elif self.oc_tile > 1:
                steps.append(Split("oc", self.oc_tile))
                steps += [kind("oc_i")] if kind is not None else []
                oc_loops.append("oc_o")
                tile.append("oc_i")
            else:
                oc_loops.append("oc")
        steps += [Partition(p) for p in partition]
        lane_steps, other, lanes = self._lane_steps(defn)
        steps += lane_steps
        if self.unroll_taps:
            if lanes:
                raise ComputeError("taps unrolled whole with lanes on a reduce axis")
            steps += [Unroll(r) for r in other
                      if defn.axis(r).extent > 1 and Unroll(r) not in steps]
        if self.order:
            if sorted(self.order) != sorted(other):
                raise ComputeError(f"order {self.order} is not a permutation of {other}")
            other = list(self.order)
        if self.copies_outer:
            if len(lanes) != 2:
                raise ComputeError("no copies of the lanes to move outside the tile")
            other, lanes = [*other, lanes[0]], lanes[1:]
        head = (oc_loops + outer) if self.oc_outer else (outer + oc_loops)
        if self.tile_inside:
            inner = [*tile, *lanes] if self.lanes_inner else [*lanes, *tile]
            order = [*head, *other, *inner]
        else:
            order = [*head, *tile, *other, *lanes]
        steps.append(Reorder(tuple(order)))
        return tuple(steps)


    def _lane_steps(self, defn: Reduction
                    ) -> tuple[list[ScheduleStep], list[str], list[str]]:
        """The steps of `lanes`, the other reduce loops (in the definition's order) and the
        lanes' loop."""
        reduce = [a.name for a in defn.reduced]
        axis, mode, factor = self.lanes
        if mode == "none":
            return [], reduce, []
        if axis not in reduce:
            raise ComputeError(f"{axis!r} is not a reduce axis")
        extent = defn.axis(axis).extent
        at = reduce.index(axis)
        other = list(reduce)
        if self.lane_copies > 1:
            return self._copied_lanes(axis, mode, factor, extent, at, other)
        whole = factor == 0 or factor >= extent
        if whole:
            other[at:at + 1] = []
            lane = axis
        else:
            other[at] = f"{axis}_o"
            lane = f"{axis}_i"
        if mode == "unroll":
            steps: list[ScheduleStep] = [Unroll(axis)] if whole else [Split(axis, factor),
                                                                      Unroll(lane)]
        else:
            steps = [Intrinsic(mode, axis)] if whole else [Split(axis, factor),
                                                           Intrinsic(mode, lane)]
        return steps, other, [lane]

    def _copied_lanes(self, axis: str, mode: str, factor: int, extent: int, at: int,
                      other: list[str]) -> tuple[list[ScheduleStep], list[str], list[str]]:
        """`lane_copies` intrinsic calls unrolled along the lanes' axis: Split by
        copies x width (none where that is the whole axis), the copies unrolled, the calls on
        the innermost loop."""
        span = self.lane_copies * factor
        if mode not in DOT_INTRINSICS or extent % span or extent < span:
            raise ComputeError(f"{self.lane_copies} copies of {mode} x {factor} do not tile "
                               f"{axis!r} ({extent})")
        if extent == span:
            other[at:at + 1] = []
            return ([Split(axis, factor), Unroll(f"{axis}_o"), Intrinsic(mode, f"{axis}_i")],
                    other, [f"{axis}_o", f"{axis}_i"])
        other[at] = f"{axis}_o"
        copies, lane = f"{axis}_i_o", f"{axis}_i_i"
        return ([Split(axis, span), Split(f"{axis}_i", factor), Unroll(copies),
                 Intrinsic(mode, lane)], other, [copies, lane])

    def other_reduce(self, defn: Reduction) -> list[str]:
        """The reduce loops outside the lanes, in the definition's order."""
        try:
            return self._lane_steps(defn)[1]
        except ComputeError:
            return []


def _row_axis(defn: Reduction) -> str | None:
    """The innermost output spatial axis other than the channels (`ow`), if the definition has
    one of extent >= 2."""
    cands = [a for a in defn.spatial if a.name not in ("n", "oc") and not a.name.startswith("m")]
    return cands[-1].name if cands and cands[-1].extent >= 2 else None


def schedule_text(steps: tuple[ScheduleStep, ...]) -> str:
    """The steps as a kernel prints them (`nnc.ir.loop_parser.parse_schedule` reads it back)."""
    return str(list(steps))


class ScheduleSpace:
    """The legal schedules of one definition on one target (its intrinsics, its lanes).

    >>> space = ScheduleSpace(kernel.compute, shapes, target)        # doctest: +SKIP
    >>> space.sample(random.Random(0), 10)                            # doctest: +SKIP
    """

    def __init__(self, defn: Reduction, shapes: Mapping[str, tuple[int, ...]],
                 target: Any) -> None:
        self.defn = defn
        self.shapes = dict(shapes)
        feats = set(getattr(target, "features", ()))
        cortex_m = getattr(target, "kind", "") == "cortex-m"
        # dot4_s8s16 (int16 weights) only where Helium's dot16_s8 does not cover the reduction
        self.intrinsics = [n for n, need in (("dot4_s8", "dsp"), ("dot16_s8", "mve"))
                           if cortex_m and need in feats]
        if cortex_m and "dsp" in feats and "mve" not in feats and "w" in dict(defn.operands):
            self.intrinsics.insert(1, "dot4_s8s16")
        self.vector_lanes = cortex_m and "mve" in feats
        self._legal: dict[tuple[ScheduleStep, ...], bool] = {}

    # -- the knobs' ranges

    def _oc_tiles(self) -> list[int]:
        if "oc" not in {a.name for a in self.defn.axes}:
            return [1]
        oc = self.defn.axis("oc").extent
        return sorted({min(t, oc) for t in OC_TILES} | ({16} if self.vector_lanes else set()))

    def _tiles(self) -> list[str]:
        return [t for t in TILE_KINDS if t != "vectorized" or self.vector_lanes]

    def _depthwise_lanes(self) -> bool:
        """Helium lanes over the channels of a depthwise conv (no input-channel axis): the
        knobs of `helium_depthwise_steps` (pixel copies along any output axis, taps unrolled)."""
        names = {a.name for a in self.defn.axes}
        return self.vector_lanes and "oc" in names and "ic" not in names \
            and bool(self.defn.reduced)

    def _row_axes(self) -> list[str]:
        if not self._depthwise_lanes():
            return [""]
        rows = [a.name for a in self.defn.spatial if a.name not in ("n", "oc") and a.extent >= 2]
        return [""] + [r for r in rows if r != _row_axis(self.defn)]

    def _row_tiles(self) -> list[int]:
        rows = [self.defn.axis(r).extent for r in self._row_axes() if r] + \
            ([self.defn.axis(r).extent] if (r := _row_axis(self.defn)) else [])
        if not rows:
            return [1]
        return [t for t in ROW_TILES if t <= max(rows)]

    def _lanes(self) -> list[tuple[str, str, int]]:
        out: list[tuple[str, str, int]] = [("", "none", 0)]
        for a in self.defn.reduced:
            for f in UNROLL_FACTORS:
                if a.extent >= 2 * f and a.extent % f == 0:
                    out.append((a.name, "unroll", f))
            if 1 < a.extent <= FULL_UNROLL_MAX:
                out.append((a.name, "unroll", 0))
            for fn in self.intrinsics:
                w = DOT_INTRINSICS[fn].width
                if a.extent >= w and a.extent % w == 0:
                    out.append((a.name, fn, w))
        return out

    def _partitions(self) -> list[tuple[str, ...]]:
        outs = [w.out for w in self.defn.windows if w.low or w.high]
        return [tuple(c) for n in range(len(outs) + 1) for c in itertools.combinations(outs, n)]

    def _orders(self, knobs: Knobs) -> list[tuple[str, ...]]:
        """() (the definition's order) and every other order of the reduce loops outside the
        lanes."""
        other = knobs.other_reduce(self.defn)
        return [()] + [p for p in itertools.permutations(other) if list(p) != other]

    def _oc_outer(self) -> list[bool]:
        """The channel loop outside the pixels, where there are pixels (an FC's rows of one
        would only give the same code twice)."""
        rows = [a for a in self.defn.spatial if a.name != "oc" and a.extent > 1]
        return [False, True] if rows else [False]

    def knobs_ranges(self) -> dict[str, list[Any]]:
        lanes = self._lanes()
        # copies' loop outside the tile only where a dot intrinsic can take the lanes (a
        # product term; the knob doubles the space: kept out of spaces small enough to be
        # walked, e.g. pools)
        dot = isinstance(self.defn.term, Binary) and self.defn.term.op == "mul"
        copies_outer = [False, True] if dot and any(m in DOT_INTRINSICS for _, m, _ in lanes) \
            else [False]
        return {"oc_tile": self._oc_tiles(), "tile": self._tiles(),
                "row_tile": self._row_tiles(), "lanes": lanes,
                "partition": self._partitions(), "tile_inside": [True, False],
                "lanes_inner": [True, False], "oc_outer": self._oc_outer(),
                "layout": [False, True] if self.vector_lanes and "w" in dict(
                    self.defn.operands) else [False],
                "lane_copies": list(LANE_COPIES) if self.intrinsics else [1],
                "row_axis": self._row_axes(),
                "unroll_taps": [False, True] if self._depthwise_lanes() else [False],
                "guard_tail": [False, True] if self._depthwise_lanes() and any(
                    w.high for w in self.defn.windows) else [False],
                "copies_outer": copies_outer}

    # -- legality

    def legal(self, steps: tuple[ScheduleStep, ...]) -> bool:
        ok = self._legal.get(steps)
        if ok is None:
            try:
                plan(self.defn, steps, self.shapes)
                ok = True
            except ComputeError:
                ok = False
            self._legal[steps] = ok
        return ok

    def steps_of(self, knobs: Any) -> tuple[ScheduleStep, ...] | None:
        """The steps of `knobs`, or None where they are not legal here."""
        try:
            steps = self.knob_steps(knobs)
        except ComputeError:
            return None
        return steps if self.legal(steps) else None

    def knob_steps(self, knobs: Any) -> tuple[ScheduleStep, ...]:
        """`knobs` as schedule steps (raises ComputeError where they do not fit)."""
        return knobs.steps(self.defn, self.shapes)

    # -- walking the space

    def enumerate(self) -> Iterator[tuple[Knobs, tuple[ScheduleStep, ...]]]:
        """Every legal point once (distinct steps), in a fixed order."""
        seen: set[tuple[ScheduleStep, ...]] = set()
        r = self.knobs_ranges()
        keys = list(r)
        for values in itertools.product(*(r[k] for k in keys)):
            base = Knobs(**dict(zip(keys, values, strict=True)))
            for order in self._orders(base):
                k = Knobs(**{**_fields(base), "order": order})
                steps = self.steps_of(k)
                if steps is not None and steps not in seen:
                    seen.add(steps)
                    yield k, steps

    def random_knobs(self, rng: random.Random) -> Knobs:
        r = self.knobs_ranges()
        base = Knobs(**{k: rng.choice(v) for k, v in r.items()})
        orders = self._orders(base)
        return Knobs(**{**_fields(base), "order": rng.choice(orders) if orders else ()})

    def sample(self, rng: random.Random, n: int, exclude: set[str] | None = None,
               tries: int = 50) -> list[tuple[Knobs, tuple[ScheduleStep, ...]]]:
        """Up to `n` distinct legal points drawn at random (none whose schedule text is in
        `exclude`). After `tries` misses per point (at least MIN_DRAWS in all) a space of at
        most ENUMERATE_LIMIT knob settings is walked for the points left (a space nearly used
        up: a resumed tune), so there fewer than `n` means the space holds no more."""
        out: list[tuple[Knobs, tuple[ScheduleStep, ...]]] = []
        seen = set(exclude or ())
        misses = 0
        while len(out) < n and misses < max(tries * n, MIN_DRAWS):
            k = self.random_knobs(rng)
            steps = self.steps_of(k)
            text = schedule_text(steps) if steps is not None else None
            if steps is None or text in seen:
                misses += 1
                continue
            assert text is not None
            seen.add(text)
            out.append((k, steps))
        if len(out) < n and math.prod(len(v) for v in self.knobs_ranges().values()) \
                <= ENUMERATE_LIMIT:
            left = [(k, st) for k, st in self.enumerate() if schedule_text(st) not in seen]
            out += rng.sample(left, min(n - len(out), len(left)))
        return out


def _fields(k: Knobs) -> dict[str, Any]:
    return {f: getattr(k, f) for f in Knobs.__slots__}


class TableSpace(ScheduleSpace):
    """A space restricted to given points (schedule texts), e.g. the ones a benchmark measured
    once (`benchmarks/tune_efficiency.py` replays searches against them). Its points carry no
    knobs (`Knobs()`): searches use the steps."""

    def __init__(self, defn: Reduction, shapes: Mapping[str, tuple[int, ...]], target: Any,
                 points: list[str]) -> None:
        from nnc.ir.loop_parser import parse_schedule

        super().__init__(defn, shapes, target)
        self.points = [(text, parse_schedule(text)) for text in points]

    def enumerate(self) -> Iterator[tuple[Knobs, tuple[ScheduleStep, ...]]]:
        for _, steps in self.points:
            yield Knobs(), steps

    def sample(self, rng: random.Random, n: int, exclude: set[str] | None = None,
               tries: int = 50) -> list[tuple[Knobs, tuple[ScheduleStep, ...]]]:
        seen = exclude or set()
        left = [steps for text, steps in self.points if text not in seen]
        return [(Knobs(), steps) for steps in rng.sample(left, min(n, len(left)))]


# ---------------------------------------------------------------- the host's fp32 space

HOST_LANES = (4, 8, 16, 32)  # floats per vector loop (a split of the lane axis)
HOST_VECTORS = (1, 2, 4, 8)  # vectors of the lane axis as the copies (a gemm of one row)


@dataclass(frozen=True, slots=True)
class HostKnobs:
    """One point of the host's space for an fp32 conv / gemm, in the terms of the host's
    default register tile (`nnc.passes.default_schedule.host_vector_steps`): the axis whose
    loop becomes vector lanes (`vec`, "" = none) and how many floats a vector loop takes
    (`lanes`; the whole axis where it is that short), `vectors` > 1: that many vectors of the
    lane axis unrolled as the copies (one accumulator each: a gemm of one row), the axis of the
    unrolled copies (`copies`, "" = none) and how many (`copy_factor`; the whole axis where it
    is that short), the padded axes partitioned (a guard-free interior), and the order of the
    loops outside the reduction (`outer`, () = the definition's) and of the reduce loops
    (`reduce`, () = the definition's); `overlap`: a lane axis that is not a multiple of the
    lanes ends in one whole vector overlapping the one before (`OverlapTail`), and with
    `vectors` > 1 the whole axis is that many vectors (`depthwise_flat`'s row: the default).
    The tile (lanes, then copies) is innermost."""

    vec: str = ""
    lanes: int = 16
    vectors: int = 1
    copies: str = ""
    copy_factor: int = 1
    partition: tuple[str, ...] = ()
    outer: tuple[str, ...] = ()
    reduce: tuple[str, ...] = ()
    overlap: bool = False

    def steps(self, defn: Reduction) -> tuple[ScheduleStep, ...]:
        names = {a.name for a in defn.axes}
        spatial = [a.name for a in defn.spatial]
        for axis in (self.vec, self.copies, *self.partition):
            if axis and (axis not in names or axis not in spatial):
                raise ComputeError(f"{axis!r} is not a spatial axis")
        if self.vec and self.vec == self.copies:
            raise ComputeError("lanes and copies on one axis: use vectors")
        steps: list[ScheduleStep] = []
        outer = list(spatial)
        tile: list[str] = []
        part = set(self.partition)

        def tiled(axis: str, factor: int, kind: type[Unroll] | type[Vectorize]) -> None:
            extent = defn.axis(axis).extent
            if axis in part:
                steps.append(Partition(axis))
            elif extent <= factor:
                steps.append(kind(axis))
                outer.remove(axis)
                tile.append(axis)
                return
            elif factor <= 1:
                return
            steps.extend([Split(axis, factor), kind(f"{axis}_i")])
            outer[outer.index(axis)] = f"{axis}_o"
            tile.append(f"{axis}_i")

        steps += [Partition(a) for a in self.partition if a not in (self.vec, self.copies)]
        vec_extent = defn.axis(self.vec).extent if self.vec else 0
        if self.overlap and (not self.vec or self.vec in part or vec_extent <= self.lanes
                             or not vec_extent % self.lanes):
            raise ComputeError("an overlapped tail needs a lane axis with a remainder")
        if self.overlap and self.vectors > 1:
            if -(-vec_extent // self.lanes) != self.vectors:
                raise ComputeError("overlapped vectors cover the whole lane axis")
            steps += [Split(self.vec, self.lanes), Vectorize(f"{self.vec}_i"),
                      OverlapTail(f"{self.vec}_o"), Unroll(f"{self.vec}_o")]
            outer.remove(self.vec)
            tile += [f"{self.vec}_i", f"{self.vec}_o"]
        elif self.vec and self.vectors > 1:
            extent = defn.axis(self.vec).extent
            width = self.lanes * self.vectors
            if self.vec in part or extent % self.lanes or extent < width:
                raise ComputeError("vectors need an unpartitioned lane axis of whole vectors")
            name = self.vec
            if extent > width:
                steps.append(Split(self.vec, width))
                outer[outer.index(self.vec)] = f"{self.vec}_o"
                name = f"{self.vec}_i"
            else:
                outer.remove(self.vec)
            steps += [Split(name, self.lanes), Unroll(f"{name}_o"), Vectorize(f"{name}_i")]
            tile += [f"{name}_i", f"{name}_o"]
        elif self.vec:
            tiled(self.vec, self.lanes, Vectorize)
            if self.overlap:
                steps.append(OverlapTail(f"{self.vec}_o"))
        if self.copies:
            tiled(self.copies, self.copy_factor, Unroll)
        if self.outer:
            if sorted(self.outer) != sorted(outer):
                raise ComputeError(f"outer order {self.outer} is not a permutation of {outer}")
            outer = list(self.outer)
        reduce = [a.name for a in defn.reduced]
        if self.reduce:
            if sorted(self.reduce) != sorted(reduce):
                raise ComputeError(f"reduce order {self.reduce} is not a permutation of "
                                   f"{reduce}")
            reduce = list(self.reduce)
        steps.append(Reorder((*outer, *reduce, *tile)))
        return tuple(steps)


class HostScheduleSpace(ScheduleSpace):
    """The legal schedules of an fp32 conv / gemm on the host (`HostKnobs`); the host's
    default register tile is one of its points. Vector lanes go on the output channels or the
    output row (the axes the default uses), copies on any other output axis."""

    def __init__(self, defn: Reduction, shapes: Mapping[str, tuple[int, ...]],
                 target: Any) -> None:
        super().__init__(defn, shapes, target)
        from nnc.passes.default_schedule import host_registers

        regs, bits = host_registers(target)
        self.native = max(1, bits // 32)
        self.max_copies = min(regs - 4, 16)

    def _vec_axes(self) -> list[str]:
        spatial = [a.name for a in self.defn.spatial]
        row = next((a for a in reversed(spatial) if a not in ("n", "oc")), None)
        return [a for a in ("oc", row) if a is not None and a in spatial]

    def _outer_orders(self, knobs: HostKnobs) -> list[tuple[str, ...]]:
        try:
            steps = knobs.steps(self.defn)
        except ComputeError:
            return [()]
        order = list(steps[-1].loops)  # type: ignore[attr-defined]
        n_reduce = len(self.defn.reduced)
        tile = sum(1 for s in steps if isinstance(s, (Unroll, Vectorize)))
        outer = order[:len(order) - n_reduce - tile]
        head = [o for o in outer if o == "n"]
        rest = [o for o in outer if o != "n"]
        return [()] + [tuple(head + list(p)) for p in itertools.permutations(rest)
                       if list(p) != rest]

    def knobs_ranges(self) -> dict[str, list[Any]]:
        spatial = [a.name for a in self.defn.spatial]
        vec = self._vec_axes()
        lanes = sorted({x for x in HOST_LANES if x <= 2 * self.native} | {self.native})
        copy_axes = [""] + [a for a in spatial if a != "n"]
        factors = list(range(1, self.max_copies + 1))
        outs = [w.out for w in self.defn.windows if w.low or w.high]
        parts = [tuple(c) for n in range(len(outs) + 1) for c in itertools.combinations(outs, n)]
        reduce = [a.name for a in self.defn.reduced]
        reduce_orders = [()] + [p for p in itertools.permutations(reduce) if list(p) != reduce]
        return {"vec": [""] + vec, "lanes": lanes, "vectors": list(HOST_VECTORS),
                "copies": copy_axes, "copy_factor": factors, "partition": parts,
                "reduce": reduce_orders, "overlap": [False, True]}

    def knob_steps(self, knobs: Any) -> tuple[ScheduleStep, ...]:
        return knobs.steps(self.defn)  # these knobs need no shapes

    def enumerate(self) -> Iterator[tuple[Any, tuple[ScheduleStep, ...]]]:
        seen: set[tuple[ScheduleStep, ...]] = set()
        r = self.knobs_ranges()
        keys = list(r)
        for values in itertools.product(*(r[k] for k in keys)):
            base = HostKnobs(**dict(zip(keys, values, strict=True)))
            for outer in self._outer_orders(base):
                k = HostKnobs(**{**_host_fields(base), "outer": outer})
                steps = self.steps_of(k)
                if steps is not None and steps not in seen:
                    seen.add(steps)
                    yield k, steps

    def random_knobs(self, rng: random.Random) -> Any:
        r = self.knobs_ranges()
        base = HostKnobs(**{k: rng.choice(v) for k, v in r.items()})
        return HostKnobs(**{**_host_fields(base),
                            "outer": rng.choice(self._outer_orders(base))})


def _host_fields(k: HostKnobs) -> dict[str, Any]:
    return {f: getattr(k, f) for f in HostKnobs.__slots__}


# ---------------------------------------------------------------- elementwise definitions

ELEMENTWISE_LANES = (4, 8, 16)  # lanes per vector loop of a split innermost axis
ELEMENTWISE_COPIES = (2, 4)  # iterations of the next axis out unrolled around the vector loop


@dataclass(frozen=True, slots=True)
class ElementwiseKnobs:
    """One point of the space of an elementwise definition (no reduce axis: add_s8, mul_s8):
    the innermost (contiguous) axis as vector lanes or not (`vector`), in one vector loop
    (`lanes` 0) or split into loops of `lanes`, and `copies` iterations of the next axis out
    unrolled around it. The default schedule (`elementwise_steps`) is `ElementwiseKnobs()`."""

    vector: bool = True
    lanes: int = 0
    copies: int = 1

    def steps(self, defn: Reduction) -> tuple[ScheduleStep, ...]:
        if defn.reduced or not defn.axes:
            raise ComputeError(f"{defn.kind} is not an elementwise definition")
        inner = defn.axes[-1]
        steps: list[ScheduleStep] = []
        if self.copies > 1:
            if len(defn.axes) < 2 or defn.axes[-2].extent < 2 * self.copies:
                raise ComputeError(f"no axis of {2 * self.copies} or more outside the lanes")
            outer = defn.axes[-2].name
            steps += [Split(outer, self.copies), Unroll(f"{outer}_i")]
        if self.lanes:
            if not self.vector or inner.extent <= self.lanes:
                raise ComputeError(f"no split of {inner.name!r} into vector loops of "
                                   f"{self.lanes}")
            steps += [Split(inner.name, self.lanes), Vectorize(f"{inner.name}_i")]
        elif self.vector:
            steps.append(Vectorize(inner.name))
        return tuple(steps)


class ElementwiseSpace(ScheduleSpace):
    """The legal schedules of an elementwise definition (`ElementwiseKnobs`)."""

    def knobs_ranges(self) -> dict[str, list[Any]]:
        axes = self.defn.axes
        inner = axes[-1].extent if axes else 0
        outer = axes[-2].extent if len(axes) > 1 else 0
        return {"vector": [True, False],
                "lanes": [0] + [n for n in ELEMENTWISE_LANES if n < inner],
                "copies": [1] + [c for c in ELEMENTWISE_COPIES if outer >= 2 * c]}

    def knob_steps(self, knobs: Any) -> tuple[ScheduleStep, ...]:
        return knobs.steps(self.defn)  # these knobs need no shapes

    def enumerate(self) -> Iterator[tuple[Any, tuple[ScheduleStep, ...]]]:
        seen: set[tuple[ScheduleStep, ...]] = set()
        r = self.knobs_ranges()
        keys = list(r)
        for values in itertools.product(*(r[k] for k in keys)):
            k = ElementwiseKnobs(**dict(zip(keys, values, strict=True)))
            steps = self.steps_of(k)
            if steps is not None and steps not in seen:
                seen.add(steps)
                yield k, steps

    def random_knobs(self, rng: random.Random) -> Any:
        return ElementwiseKnobs(**{k: rng.choice(v) for k, v in self.knobs_ranges().items()})


def space_for(defn: Reduction, shapes: Mapping[str, tuple[int, ...]],
              target: Any) -> ScheduleSpace:
    """The schedule space of a definition on a target: the host's for fp32 on the host, the
    elementwise one for a definition with no reduce axis."""
    if not defn.reduced and not defn.windows:
        return ElementwiseSpace(defn, shapes, target)
    if getattr(target, "kind", "") == "host" and defn.acc_dtype == "float32":
        return HostScheduleSpace(defn, shapes, target)
    return ScheduleSpace(defn, shapes, target)
