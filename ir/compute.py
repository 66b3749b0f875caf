"""Declarative definitions of the ops that carry the MACs, and their materialization into loop IR
under a schedule of steps on named axes.

A `Reduction` says *what* one output element is, with no loop order in it:

    conv_s8 NHWC:  axes n, oh, ow, oc (spatial) and kh, kw, ic (reduce)
        acc    = init                                    (bias[oc])
        acc    = combine(acc, term)  for every reduce point inside the padding windows
                   (term = x[n, oh*s+kh-p, ow*s+kw-p, ic] * w[oc, kh, kw, ic])
        acc   += outside             for every window tap outside them (the folded zero point)
        out[n, oh, ow, oc] = finish(acc)                 (requantize, clamp; the fused epilogue)

`materialize(defn, steps)` turns it into loop IR; the steps say *how*, on the axis names (loop
names derive from them: `Split("oc", 4)` makes loops `oc_o` and `oc_i`):

- `Split(loop, f)`: `loop = loop_o * f + loop_i`; a remainder is peeled (a second copy of the
  nest below `loop_o` with `loop_i` running over the rest), never guarded.
- `Reorder(loops)`: the named loops take the places they occupy, in the order given (TVM's
  reorder); the loop nest need not be perfect (definitions have no statements between loops).
- Accumulators: every spatial loop after the first reduce loop is part of the register tile
  (compute-at): its accumulators live in locals across the reduction. An `Unroll` of a tile loop
  copies the statements (one scalar accumulator per copy, so they stay in registers); a tile loop
  that is not unrolled indexes an accumulator array (a row of channels, as depthwise convs keep).
- `Unroll(loop)` elsewhere copies the statements too (loop IR, not a compiler hint);
  `Vectorize` and `Parallel` set the loop's kind for the backend.
- `Partition(loop)`: a spatial loop of a padding window splits into border / interior / border;
  the interior, where no tap can fall outside, has no guard. A `Split` of the partitioned loop
  afterwards splits each region on its own (`<axis>_p` is the region's start), each with its
  peeled remainder: a guard-free vector or register tile along a padded row.
- `OverlapTail(loop)`: the remainder of the split whose outer loop is `loop` (a spatial one) is
  one whole tile ending at the axis's end instead of a peeled shorter copy; the outputs it
  shares with the tile before are computed again and stored twice with the same values (so
  the kernel's output must not be in place of an input it reads: plan-memory skips such pairs).
- `GuardTail(loop)`: the remainder of the split whose outer loop is `loop` is one more whole
  tile inside that loop, its outputs past the axis's end not stored (an `If` around the tile's
  stores): no copy of the nest at all. The axis must be the output axis of a padding window
  that checks the upper end (`Window.high`), so the extra tile's reads stay inside the input.
- `Intrinsic(name, loop)`: the reduce loop `loop` (of the intrinsic's width, e.g. 4 for
  `dot4_s8`) becomes one call of the intrinsic (`nnc.ir.intrinsics`); the term must be a product
  of two loads of the intrinsic's operand types (int8, or int8 and int16 for `dot4_s8s16`),
  each contiguous along `loop`. A peeled remainder stays scalar.
- `Layout(operand, perm)` / `Widen(operand, dtype)`: a constant operand read from a copy with
  its dims permuted / stored in a wider integer type (`relayout`; the schedule pass makes it).

An elementwise op is a definition with no reduce axis: its one "reduce point" combines `init`
with `term` once (add_s8: the two rescaled inputs added), materialized as a single store
`out[...] = finish(combine(init, term))` with no accumulator local.

The padding guard goes where all the axes of a window are bound, as far out as it can; its else
branch adds `outside` once per window tap (skipping the reduce axes outside the windows, which
`outside` is already summed over). `schedule` materializes the definition again from scratch, so
running it twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from nnc.ir.affine import flat_offset
from nnc.ir.intrinsics import DOT_INTRINSICS
from nnc.ir.loops import (
    Binary,
    Buffer,
    Call,
    Cast,
    Const,
    Expr,
    For,
    Fuse,
    GuardTail,
    If,
    Intrinsic,
    Layout,
    Load,
    OverlapTail,
    Parallel,
    Partition,
    Reorder,
    ScheduleStep,
    Split,
    Stmt,
    Store,
    Unroll,
    Var,
    Vectorize,
    Widen,
    binary,
    const,
    logical_and,
    map_expr,
    maximum,
    minimum,
    uses_var,
    walk_expr,
)

ACC = "acc"  # the accumulator's placeholder variable in `Reduction.finish`


class ComputeError(ValueError):
    """A schedule step does not apply to a definition."""


@dataclass(frozen=True, slots=True)
class Axis:
    name: str
    extent: int
    reduce: bool = False


@dataclass(frozen=True, slots=True)
class Window:
    """A padding window: a tap is inside when 0 <= out * stride + tap * dilation - pad < size
    (`low` / `high`: whether a tap can fall before / after the input, so the check is needed)."""

    out: str
    tap: str
    stride: int
    dilation: int
    pad: int
    size: int
    low: bool = True
    high: bool = True

    def inside(self, o: Expr, t: Expr) -> Expr:
        pos = o * self.stride if self.stride != 1 else o
        pos = pos + (t * self.dilation if self.dilation != 1 else t)
        if self.pad:
            pos = pos - self.pad
        lo, hi = pos.ge(0), pos.lt(self.size)
        if self.low and self.high:
            return logical_and(lo, hi)
        return lo if self.low else hi

    def interior(self, out_extent: int, taps: int) -> tuple[int, int]:
        """[lo, hi): the outputs every one of whose `taps` taps lands inside."""
        lo = -(-self.pad // self.stride)
        last = self.size - 1 + self.pad - (taps - 1) * self.dilation
        hi = min(out_extent, last // self.stride + 1) if last >= 0 else 0
        lo = min(lo, out_extent)
        return lo, max(hi, lo)


@dataclass(frozen=True, slots=True)
class Reduction:
    """What each output element of a MAC-carrying kernel is (see the module docstring).
    Expressions use `Var(axis name)`; `finish` also uses `Var(ACC)`."""

    kind: str
    axes: tuple[Axis, ...]
    acc_dtype: str
    init: Expr
    term: Expr
    out: str
    out_index: tuple[Expr, ...]
    finish: Expr
    combine: str = "add"  # or "mul", "max", "min" (`COMBINES`; on bool max is or, min and)
    windows: tuple[Window, ...] = ()
    outside: Expr | None = None
    # whether float sums may be regrouped (int32 sums wrap, so they may always be)
    reassociate: bool = False
    # constant operands a `Layout` step may re-lay out: (role, buffer name)
    operands: tuple[tuple[str, str], ...] = ()

    def axis(self, name: str) -> Axis:
        for a in self.axes:
            if a.name == name:
                return a
        raise ComputeError(f"{self.kind}: no axis {name!r}")

    @property
    def spatial(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if not a.reduce)

    @property
    def reduced(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if a.reduce)


_SPATIAL = {1: ("ow",), 2: ("oh", "ow"), 3: ("od", "oh", "ow")}


def spatial_names(nsp: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Axis names of the output positions and of the window taps (oh/ow and kh/kw in 2-D)."""
    outs = _SPATIAL.get(nsp, tuple(f"o{i}" for i in range(nsp)))
    return outs, tuple("k" + o[1:] for o in outs)


def windows_of(outs: Sequence[str], taps: Sequence[str], in_sp: Sequence[int],
               out_sp: Sequence[int], ks: Sequence[int], strides: Sequence[int],
               dil: Sequence[int], pb: Sequence[int]) -> tuple[Window, ...]:
    """The padding windows of a sliding-window op: one per dimension some tap can leave."""
    found = []
    for o, k, size, osz, ksz, st, d, p in zip(outs, taps, in_sp, out_sp, ks, strides, dil, pb,
                                              strict=True):
        high = (osz - 1) * st + (ksz - 1) * d - p >= size
        if p > 0 or high:
            found.append(Window(o, k, st, d, p, size, low=p > 0, high=high))
    return tuple(found)


# ---------------------------------------------------------------- the loop plan


@dataclass(slots=True)
class _Loop:
    name: str
    extent: int
    axis: str
    reduce: bool
    kind: str = "serial"


@dataclass(slots=True)
class _Plan:
    loops: list[_Loop]
    env: dict[str, Expr]  # axis -> its value in loop variables
    tails: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # o -> (i, full, rest)
    partitions: set[str] = field(default_factory=set)
    # a partitioned loop split afterwards: outer -> (axis, inner, factor); each region of the
    # partition is split on its own (its own remainder), from the region's start `<axis>_p`
    part_splits: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    intrinsics: dict[str, str] = field(default_factory=dict)  # loop -> intrinsic name
    overlaps: set[str] = field(default_factory=set)  # split outer loops with an overlapped tail
    guard_tails: set[str] = field(default_factory=set)  # ... with a guarded whole tile

    def find(self, name: str) -> int:
        for i, lp in enumerate(self.loops):
            if lp.name == name:
                return i
        raise ComputeError(f"no loop named {name!r} (loops: {', '.join(self.names())})")

    def names(self) -> list[str]:
        return [lp.name for lp in self.loops]


def _substitute(e: Expr, env: Mapping[str, Expr]) -> Expr:
    return map_expr(e, lambda x: env.get(x.name) if isinstance(x, Var) else None)


def plan(defn: Reduction, steps: Sequence[ScheduleStep],
         shapes: Mapping[str, tuple[int, ...]]) -> _Plan:
    """The loops (outermost first) that `steps` make of `defn`'s axes; `shapes` gives the
    buffers' shapes (for the contiguity check of intrinsics)."""
    defn, shapes = _relaid(defn, steps, shapes)
    p = _Plan([_Loop(a.name, a.extent, a.name, a.reduce) for a in defn.axes],
              {a.name: Var(a.name) for a in defn.axes})
    for step in steps:
        try:
            _apply(p, step)
        except ComputeError as e:
            raise ComputeError(f"step {step} does not apply to {defn.kind}: {e}") from None
    first = next((i for i, lp in enumerate(p.loops) if lp.reduce), len(p.loops))
    for lp in p.loops[:first]:
        if lp.name in p.intrinsics:
            raise ComputeError(f"intrinsic loop {lp.name!r} is not a reduce loop")
    for name in (*p.partitions, *p.part_splits):
        if p.find(name) >= first:
            raise ComputeError(f"partitioned loop {name!r} must be outside the reduction")
    for name, fn in p.intrinsics.items():
        _check_intrinsic(defn, p, name, fn, shapes)
    for name in p.guard_tails:
        axis = p.loops[p.find(name)].axis
        if not any(w.out == axis and w.high for w in defn.windows):
            raise ComputeError(f"guarded tail of {name!r}: no padding window along {axis!r} "
                               f"checks its upper end")
        if any(uses_var(e, axis) for e in (defn.init, defn.finish, defn.outside)
               if e is not None):
            raise ComputeError(f"guarded tail of {name!r}: {axis!r} indexes more than the "
                               f"window's input")
    return p


def _relaid(defn: Reduction, steps: Sequence[ScheduleStep],
            shapes: Mapping[str, tuple[int, ...]]
            ) -> tuple[Reduction, Mapping[str, tuple[int, ...]]]:
    """`defn` as its `Layout` / `Widen` steps make it read (the intrinsics check the copies'
    contiguity and types), and the shapes with the copies'; steps already applied (the
    schedule pass materializes the re-laid-out definition) and operands of unknown shape
    stay."""
    for step in steps:
        if not isinstance(step, (Layout, Widen)):
            continue
        buf = dict(defn.operands).get(step.operand)
        if buf is None:
            relayout(defn, step, ())  # raises: the error names the step and the operands
            continue
        shape = shapes.get(buf)
        if isinstance(step, Widen):
            if all(ld.dtype == step.dtype for ld in _loads_of(defn, buf)):
                continue
            new_shape = shape
        elif shape is None:
            continue
        else:
            new_shape = tuple(shape[p] for p in step.perm) \
                if sorted(step.perm) == list(range(len(shape))) else shape
        defn, _, new = relayout(defn, step, shape or ())
        if new_shape is not None:
            shapes = {**shapes, new: new_shape}
    return defn, shapes


def _apply(p: _Plan, step: ScheduleStep) -> None:
    if isinstance(step, Split):
        i = p.find(step.loop)
        lp = p.loops[i]
        if step.factor < 1:
            raise ComputeError("split factor must be >= 1")
        if lp.name in p.intrinsics or lp.name in p.tails or lp.name in p.part_splits:
            raise ComputeError(f"loop {lp.name!r} is tensorized or already split")
        if any(t[0] == lp.name for t in p.tails.values()) \
                or any(t[1] == lp.name for t in p.part_splits.values()):
            raise ComputeError(f"loop {lp.name!r} is the inner loop of a split with a "
                               f"remainder (split it before, or split evenly)")
        outer, inner = f"{lp.name}_o", f"{lp.name}_i"
        if {outer, inner} & set(p.names()):
            raise ComputeError(f"loop names {outer!r}/{inner!r} already exist")
        full, rest = divmod(lp.extent, step.factor)
        n_outer = full + (1 if rest else 0)
        p.loops[i:i + 1] = [_Loop(outer, n_outer, lp.axis, lp.reduce,
                                  "parallel" if lp.kind == "parallel" else "serial"),
                            _Loop(inner, step.factor, lp.axis, lp.reduce,
                                  lp.kind if lp.kind in ("vectorized", "unrolled") else "serial")]
        value = Var(outer) * step.factor + Var(inner)
        if lp.name in p.partitions:
            p.partitions.discard(lp.name)
            p.part_splits[outer] = (lp.axis, inner, step.factor)
            value = Var(f"{lp.axis}_p") + value
        p.env = {a: _substitute(e, {lp.name: value}) for a, e in p.env.items()}
        if rest and outer not in p.part_splits:
            p.tails[outer] = (inner, full, rest)
    elif isinstance(step, Reorder):
        if len(set(step.loops)) != len(step.loops) or not step.loops:
            raise ComputeError("reorder needs distinct loop names")
        slots = sorted(p.find(n) for n in step.loops)
        picked = [p.loops[p.find(n)] for n in step.loops]
        for slot, lp in zip(slots, picked, strict=True):
            p.loops[slot] = lp
        # an overlapped tail is a whole tile (its inner loop keeps its extent), so the inner
        # loop may go outside it; a guarded or peeled remainder shortens the inner loop
        pairs = [(o, t[0]) for o, t in p.tails.items() if o not in p.overlaps]
        pairs += [(o, t[1]) for o, t in p.part_splits.items()]
        for o, inner in pairs:
            if p.find(inner) < p.find(o):
                raise ComputeError(f"loop {inner!r} is a split remainder's inner loop and must "
                                   f"stay inside {o!r}")
    elif isinstance(step, (Unroll, Vectorize, Parallel)):
        kind = {Unroll: "unrolled", Vectorize: "vectorized", Parallel: "parallel"}[type(step)]
        lp = p.loops[p.find(step.loop)]
        if kind == "parallel" and lp.reduce:
            raise ComputeError(f"reduce loop {lp.name!r} cannot run in parallel")
        lp.kind = kind
    elif isinstance(step, Partition):
        lp = p.loops[p.find(step.loop)]
        if lp.reduce or lp.name != lp.axis:
            raise ComputeError(f"only an unsplit spatial loop can be partitioned ({lp.name!r})")
        p.partitions.add(lp.name)
    elif isinstance(step, Intrinsic):
        if step.name not in DOT_INTRINSICS:
            raise ComputeError(f"unknown intrinsic {step.name!r} (known: "
                               f"{', '.join(DOT_INTRINSICS)})")
        lp = p.loops[p.find(step.loop)]
        width = DOT_INTRINSICS[step.name].width
        if not lp.reduce or lp.extent != width:
            raise ComputeError(f"{step.name} needs a reduce loop of extent {width} "
                               f"({lp.name!r} has {lp.extent})")
        p.intrinsics[lp.name] = step.name
    elif isinstance(step, (OverlapTail, GuardTail)):
        # one whole tile for the remainder: overlapping the one before, or with its stores
        # past the end guarded (one of the two per split)
        if step.loop not in p.tails or step.loop in p.overlaps | p.guard_tails:
            raise ComputeError(f"loop {step.loop!r} is not the outer loop of a split with a "
                               f"remainder")
        lp = p.loops[p.find(step.loop)]
        if lp.reduce or p.tails[step.loop][1] < 1:
            raise ComputeError(f"loop {step.loop!r} is a reduce loop or has no whole tile")
        (p.overlaps if isinstance(step, OverlapTail) else p.guard_tails).add(step.loop)
    elif isinstance(step, (Layout, Widen)):
        pass  # applied to the definition by `relayout` (the schedule pass owns the constants)
    elif isinstance(step, Fuse):
        raise ComputeError("fuse is not supported on reductions")
    else:
        raise ComputeError(f"unknown schedule step {step!r}")


def _dot_operands(term: Expr) -> tuple[Load, Load] | None:
    """The two int8 / int16 loads of a term `int32(a) * int32(b)`, else None."""
    if not (isinstance(term, Binary) and term.op == "mul"):
        return None
    ops = []
    for side in (term.a, term.b):
        if not (isinstance(side, Cast) and isinstance(side.value, Load)
                and side.value.dtype in ("int8", "int16") and side.dtype == "int32"):
            return None
        ops.append(side.value)
    return ops[0], ops[1]


def _check_intrinsic(defn: Reduction, p: _Plan, loop: str, fn: str,
                     shapes: Mapping[str, tuple[int, ...]]) -> None:
    ops = _dot_operands(defn.term)
    want = DOT_INTRINSICS[fn].operands
    if ops is None or defn.combine != "add" or defn.acc_dtype != "int32" \
            or tuple(ld.dtype for ld in ops) != want:
        raise ComputeError(f"{fn} needs a sum of int32({want[0]}) * int32({want[1]}) terms")
    i = p.find(loop)
    for lp in p.loops[i + 1:]:
        if lp.reduce:
            raise ComputeError(f"{fn} loop {loop!r} must be the innermost reduce loop")
    extents = {lp.name: max(lp.extent, 2) for lp in p.loops}
    for ld in ops:
        idx = tuple(_substitute(x, p.env) for x in ld.indices)
        shape = shapes.get(ld.buffer)
        form = flat_offset(idx, shape, extents) if shape is not None else None
        if form is None or form.get(loop) != 1:
            raise ComputeError(f"{fn}: %{ld.buffer} is not contiguous along {loop!r}")


# ---------------------------------------------------------------- materialization


class _Gen:
    def __init__(self, defn: Reduction, p: _Plan,
                 new_local: Callable[[str, tuple[int, ...]], Buffer]) -> None:
        self.d = defn
        self.p = p
        self.new_local = new_local
        self.first = next((i for i, lp in enumerate(p.loops) if lp.reduce), len(p.loops))
        self.tile = [lp for lp in p.loops[self.first:] if not lp.reduce]
        self.array_tile = [lp for lp in self.tile if lp.kind != "unrolled"]
        self.accs: dict[tuple[int, ...], Buffer] = {}
        self.derived: dict[str, set[str]] = {}
        for lp in p.loops:
            self.derived.setdefault(lp.axis, set()).add(lp.name)
        window_taps = {w.tap for w in defn.windows}
        self.outside_loops = {lp.name for lp in p.loops
                              if not lp.reduce or lp.axis in window_taps}

    # -- values of the definition's expressions at a point of the loop nest

    def axes_at(self, sub: Mapping[str, Expr]) -> dict[str, Expr]:
        return {a: _simplify(_substitute(e, sub)) for a, e in self.p.env.items()}

    def at(self, e: Expr, sub: Mapping[str, Expr]) -> Expr:
        return _simplify(_substitute(e, self.axes_at(sub)))

    def acc(self, sub: Mapping[str, Expr]) -> tuple[Buffer, tuple[Expr, ...]]:
        key = tuple(int(_const_value(sub[lp.name]))
                    for lp in self.tile if lp.kind == "unrolled")
        buf = self.accs.get(key)
        if buf is None:
            shape = tuple(lp.extent for lp in self.array_tile)
            buf = self.accs[key] = self.new_local(self.d.acc_dtype, shape)
        return buf, tuple(sub[lp.name] for lp in self.array_tile)

    # -- loops

    def regions(self, axis: str, extent: int, windows: tuple[Window, ...]
                ) -> list[tuple[int, int, tuple[Window, ...]]]:
        """A partitioned axis's border / interior / border: (start, count, live windows)."""
        for w in windows:
            if w.out == axis:
                lo, hi = w.interior(extent, self.d.axis(w.tap).extent)
                rest = tuple(x for x in windows if x is not w)
                return [(0, lo, windows), (lo, hi - lo, rest), (hi, extent - hi, windows)]
        return [(0, extent, windows)]

    def split_regions(self, lp: _Loop, sub: dict[str, Expr], ov: dict[str, int],
                      windows: tuple[Window, ...], inner: Callable[..., list[Stmt]]
                      ) -> list[Stmt]:
        """The outer loop of a partitioned axis split afterwards: each region split on its own,
        its remainder peeled."""
        axis, inner_name, factor = self.p.part_splits[lp.name]
        out: list[Stmt] = []
        for start, count, wins in self.regions(axis, self.d.axis(axis).extent, windows):
            if count <= 0:
                continue
            at = {**sub, f"{axis}_p": const(start, "int64")}
            full, rest = divmod(count, factor)
            if full == 1 or (full and lp.kind == "unrolled"):
                for v in range(full):
                    out += inner({**at, lp.name: const(v, "int64")}, ov, wins)
            elif full:
                body = inner({**at, lp.name: Var(lp.name)}, ov, wins)
                if body:
                    out.append(For(lp.name, full, tuple(body), lp.kind))
            if rest:
                out += inner({**at, lp.name: const(full, "int64")}, {**ov, inner_name: rest},
                             wins)
        return out

    def loop(self, lp: _Loop, sub: dict[str, Expr], ov: dict[str, int],
             windows: tuple[Window, ...], inner: Callable[..., list[Stmt]]) -> list[Stmt]:
        if lp.name in self.p.part_splits:
            return self.split_regions(lp, sub, ov, windows, inner)
        extent = ov.get(lp.name, lp.extent)
        regions: list[tuple[int, int, tuple[Window, ...]]] = [(0, extent, windows)]
        tail = self.p.tails.get(lp.name)
        if tail is not None and lp.name not in ov:
            regions = [(0, tail[1], windows)]
            if lp.name in self.p.guard_tails:  # one more whole tile, its stores guarded
                regions, tail = [(0, tail[1] + 1, windows)], None
        if lp.name in self.p.partitions:
            regions = self.regions(lp.axis, extent, windows)
        out: list[Stmt] = []
        for start, count, wins in regions:
            if count <= 0:
                continue
            if lp.kind == "unrolled" or count == 1:
                for v in range(start, start + count):
                    out += inner({**sub, lp.name: const(v, "int64")}, ov, wins)
                continue
            var = Var(lp.name)
            body = inner({**sub, lp.name: var + start if start else var}, ov, wins)
            if body:
                out.append(For(lp.name, count, tuple(body), lp.kind))
        if tail is not None and lp.name not in ov:
            inner_name, full, n_rest = tail
            factor = self.p.loops[self.p.find(inner_name)].extent
            if lp.name in self.p.overlaps and full:
                # one whole tile ending at the axis's end: the outputs it shares with the tile
                # before are computed again (the same values, stored twice)
                env = self.p.env
                shift = const(factor - n_rest, "int64")
                self.p.env = {a: _substitute(e, {inner_name: Var(inner_name) - shift})
                              for a, e in env.items()}
                try:
                    out += inner({**sub, lp.name: const(full, "int64")}, ov, windows)
                finally:
                    self.p.env = env
                return out
            out += inner({**sub, lp.name: const(full, "int64")}, {**ov, inner_name: n_rest},
                         windows)
        return out

    def outer(self, i: int, sub: dict[str, Expr], ov: dict[str, int],
              windows: tuple[Window, ...]) -> list[Stmt]:
        if i == self.first:
            return self.block(sub, ov, windows)
        return self.loop(self.p.loops[i], sub, ov, windows,
                         lambda s, o, w: self.outer(i + 1, s, o, w))

    def tile_nest(self, j: int, sub: dict[str, Expr], ov: dict[str, int],
                  leaf: Callable[[dict[str, Expr]], list[Stmt]],
                  guard: frozenset[str] = frozenset()) -> list[Stmt]:
        """The tile's loops around `leaf`; `guard`: split outer loops with a guarded tail,
        whose outputs past the axis's end are skipped once the axis is bound."""
        for name in sorted(guard):
            axis = self.p.loops[self.p.find(name)].axis
            if not self.bound(axis, sub):
                continue
            rest = self.tile_nest(j, sub, ov, leaf, guard - {name})
            extent = self.d.axis(axis).extent
            cond = _simplify(self.at(Var(axis), sub).lt(extent))
            last = {**sub, name: const(self.p.tails[name][1], "int64")}
            if isinstance(cond, Const):
                return rest if cond.value else []
            at_last = _simplify(self.at(Var(axis), last).lt(extent))
            if not rest or (isinstance(at_last, Const) and at_last.value):
                return rest  # a copy that stays inside the axis in the extra tile too
            return [If(cond, tuple(rest))]
        if j == len(self.tile):
            return leaf(sub)
        return self.loop(self.tile[j], sub, ov, (),
                         lambda s, o, w: self.tile_nest(j + 1, s, o, leaf, guard))

    def block(self, sub: dict[str, Expr], ov: dict[str, int],
              windows: tuple[Window, ...]) -> list[Stmt]:
        d = self.d

        def init(s: dict[str, Expr]) -> list[Stmt]:
            buf, idx = self.acc(s)
            return [Store(buf.name, idx, self.at(d.init, s))]

        def fin(s: dict[str, Expr]) -> list[Stmt]:
            buf, idx = self.acc(s)
            value = _substitute(d.finish, {ACC: Load(buf.name, idx, buf.dtype)})
            out_index = tuple(self.at(x, s) for x in d.out_index)
            return [Store(d.out, out_index, self.at(value, s))]

        if not d.reduced and not d.windows:
            # elementwise (no reduce axis: exactly one term): one store, no accumulator
            value = _substitute(d.finish, {ACC: _combine(d.combine, d.init, d.term)})
            return [Store(d.out, tuple(self.at(x, sub) for x in d.out_index),
                          self.at(value, sub))]
        return (self.tile_nest(0, sub, ov, init)
                + self.reduce(self.first, sub, ov, windows, None)
                + self.tile_nest(0, sub, ov, fin, frozenset(self.p.guard_tails)))

    def bound(self, axis: str, sub: Mapping[str, Expr]) -> bool:
        return all(n in sub for n in self.derived.get(axis, ()))

    def reduce(self, i: int, sub: dict[str, Expr], ov: dict[str, int],
               pending: tuple[Window, ...], intr: str | None) -> list[Stmt]:
        ready = tuple(w for w in pending if self.bound(w.out, sub) and self.bound(w.tap, sub))
        if ready:
            axes = self.axes_at(sub)
            cond = None
            for w in ready:
                c = _simplify(w.inside(axes[w.out], axes[w.tap]))
                cond = c if cond is None else logical_and(cond, c)
            rest = tuple(w for w in pending if w not in ready)
            then = self.reduce(i, sub, ov, rest, intr)
            orelse = self.outside(i, sub, ov) if self.d.outside is not None else []
            # placed inside reduce loops that are no window's taps (a tile of outputs moved in
            # below the channels), the correction must still count once per tap: on their
            # first iteration only
            skipped = [lp.name for lp in self.p.loops[:i]
                       if lp.reduce and lp.name not in self.outside_loops
                       and lp.name not in self.p.intrinsics]
            first = [_simplify(sub[n].eq(0)) for n in skipped]
            if any(isinstance(c, Const) and not c.value for c in first):
                orelse = []  # an unrolled copy past the first
            first = [c for c in first if not isinstance(c, Const)]
            if orelse and first:
                once = first[0]
                for c in first[1:]:
                    once = logical_and(once, c)
                orelse = [If(once, tuple(orelse))]
            assert cond is not None
            if isinstance(cond, Const):
                return then if cond.value else orelse
            return [If(cond, tuple(then), tuple(orelse))] if then or orelse else []
        if i == len(self.p.loops):
            return [self.update(sub, intr)]
        lp = self.p.loops[i]
        fn = self.p.intrinsics.get(lp.name)
        # a window still to be checked along this axis (a border region) or a peeled
        # remainder keeps the scalar loop: the lanes would read past the guard
        guarded = any(w.tap == lp.axis for w in pending)
        if fn is not None and not guarded and ov.get(lp.name, lp.extent) == lp.extent:
            return self.reduce(i + 1, {**sub, lp.name: const(0, "int64")}, ov, pending, fn)
        return self.loop(lp, sub, ov, (), lambda s, o, w: self.reduce(i + 1, s, o, pending, intr))

    def outside(self, i: int, sub: dict[str, Expr], ov: dict[str, int]) -> list[Stmt]:
        """Add `outside` once per window tap below loop i (the other reduce loops skipped)."""
        if i == len(self.p.loops):
            buf, idx = self.acc(sub)
            acc = Load(buf.name, idx, buf.dtype)
            assert self.d.outside is not None
            return [Store(buf.name, idx, _combine(self.d.combine, acc,
                                                  self.at(self.d.outside, sub)))]
        lp = self.p.loops[i]
        if lp.name not in self.outside_loops:
            return self.outside(i + 1, {**sub, lp.name: const(0, "int64")}, ov)
        return self.loop(lp, sub, ov, (), lambda s, o, w: self.outside(i + 1, s, o))

    def update(self, sub: dict[str, Expr], intr: str | None) -> Stmt:
        buf, idx = self.acc(sub)
        acc = Load(buf.name, idx, buf.dtype)
        if intr is not None:
            ops = _dot_operands(self.d.term)
            assert ops is not None
            a, b = (self.at(x, sub) for x in ops)
            return Store(buf.name, idx, Call(intr, (a, b, acc), "int32"))
        return Store(buf.name, idx, _combine(self.d.combine, acc, self.at(self.d.term, sub)))


def _const_value(e: Expr) -> int:
    assert isinstance(e, Const), f"an unrolled loop's value is a constant, not {e}"
    return int(e.value)


def layout_name(buffer: str, perm: Sequence[int]) -> str:
    """The name of `buffer`'s copy with its dims in `perm` order."""
    return f"{buffer}_t{''.join(str(p) for p in perm)}"


def widen_name(buffer: str, dtype: str) -> str:
    """The name of `buffer`'s copy stored as `dtype`."""
    return f"{buffer}_{dtype}"


WIDENINGS = {"int8": ("int16", "int32")}  # the integer types a constant may be widened to


def relayout(defn: Reduction, step: Layout | Widen,
             shape: tuple[int, ...]) -> tuple[Reduction, str, str]:
    """`defn` reading its operand `step.operand` from a copy with the dims permuted (`Layout`)
    or stored in a wider type (`Widen`): the new definition, the original buffer's name and the
    copy's (the same for equal steps on one constant, so kernels sharing weights share it)."""
    roles = dict(defn.operands)
    if step.operand not in roles:
        raise ComputeError(f"step {step} does not apply to {defn.kind}: no operand "
                           f"{step.operand!r} (operands: {', '.join(roles) or 'none'})")
    old = roles[step.operand]
    if isinstance(step, Widen):
        dtypes = {x.dtype for x in _loads_of(defn, old)}
        if len(dtypes) != 1 or step.dtype not in WIDENINGS.get(dtypes.pop(), ()):
            raise ComputeError(f"step {step} does not apply to {defn.kind}: "
                               f"{step.operand!r} cannot be widened to {step.dtype}")
        new = widen_name(old, step.dtype)
        perm: tuple[int, ...] = tuple(range(len(shape)))
        dtype: str | None = step.dtype
    else:
        if sorted(step.perm) != list(range(len(shape))):
            raise ComputeError(f"step {step}: perm must order the {len(shape)} dims of "
                               f"{step.operand!r}")
        new, perm, dtype = layout_name(old, step.perm), step.perm, None

    def swap(e: Expr) -> Expr | None:
        if isinstance(e, Load) and e.buffer == old:
            return Load(new, tuple(e.indices[p] for p in perm), dtype or e.dtype)
        return None

    ops = tuple((r, new if b == old else b) for r, b in defn.operands)
    out = replace(defn, init=map_expr(defn.init, swap), term=map_expr(defn.term, swap),
                  finish=map_expr(defn.finish, swap), operands=ops,
                  outside=None if defn.outside is None else map_expr(defn.outside, swap))
    return out, old, new


def _loads_of(defn: Reduction, buffer: str) -> list[Load]:
    exprs = [defn.init, defn.term, defn.finish] + ([defn.outside] if defn.outside else [])
    return [x for e in exprs for x in walk_expr(e) if isinstance(x, Load) and x.buffer == buffer]


COMBINES = ("add", "mul", "max", "min")  # the kinds `Reduction.combine` takes


def _combine(kind: str, acc: Expr, value: Expr) -> Expr:
    if kind == "add":
        return acc + value
    if kind == "mul":
        return acc * value
    return maximum(acc, value) if kind == "max" else minimum(acc, value)


def materialize(defn: Reduction, steps: Sequence[ScheduleStep],
                new_local: Callable[[str, tuple[int, ...]], Buffer],
                shapes: Mapping[str, tuple[int, ...]]) -> tuple[Stmt, ...]:
    """The loop nest of `defn` under `steps`; accumulators come from `new_local(dtype, shape)`,
    `shapes` gives the buffers' shapes (for the contiguity check of intrinsics)."""
    p = plan(defn, steps, shapes)
    g = _Gen(defn, p, new_local)
    return tuple(g.outer(0, {}, {}, defn.windows))


# ---------------------------------------------------------------- index simplification


def _simplify(e: Expr) -> Expr:
    """Fold constant integer arithmetic and the identities x + 0, x * 1, x * 0, so index
    expressions of unrolled copies read `oc_o * 4 + 2` rather than `(oc_o * 4 + 2) * 1 + 0`."""

    def fold(x: Expr) -> Expr | None:
        if not isinstance(x, Binary) or x.dtype in ("float16", "float32", "float64"):
            return None
        a, b = x.a, x.b
        ca = a.value if isinstance(a, Const) else None
        cb = b.value if isinstance(b, Const) else None
        if x.op in ("add", "sub", "mul") and ca is not None and cb is not None:
            v = {"add": ca + cb, "sub": ca - cb, "mul": ca * cb}[x.op]
            if x.dtype == "int64" or _fits(int(v), x.dtype):
                return const(v, x.dtype)
            return None
        if x.op == "add":
            if cb == 0:
                return a
            if ca == 0:
                return b
            # (y + c1) + c2 -> y + (c1 + c2)
            if cb is not None and isinstance(a, Binary) and a.op == "add" \
                    and isinstance(a.b, Const) and x.dtype == "int64":
                return _simplify(binary("add", a.a, const(a.b.value + cb, x.dtype)))
        if x.op == "sub" and cb == 0:
            return a
        if x.op == "mul":
            if cb == 1:
                return a
            if ca == 1:
                return b
            if (ca == 0 or cb == 0) and x.dtype == "int64":
                return const(0, x.dtype)
        if x.op in ("lt", "le", "gt", "ge") and ca is not None and cb is not None:
            r = {"lt": ca < cb, "le": ca <= cb, "gt": ca > cb, "ge": ca >= cb}[x.op]
            return const(r, "bool")
        if x.op == "and" and x.dtype == "bool":
            if ca is not None:
                return b if ca else const(False, "bool")
            if cb is not None:
                return a if cb else const(False, "bool")
        return None

    return map_expr(e, fold)


def _fits(v: int, dtype: str) -> bool:
    bits = {"int8": 8, "int16": 16, "int32": 32}.get(dtype)
    return bits is None or -(2 ** (bits - 1)) <= v < 2 ** (bits - 1)
