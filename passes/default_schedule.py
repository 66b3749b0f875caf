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

import itertools
from dataclasses import dataclass
from typing import Any

from nnc.ir.affine import flat_offset
from nnc.ir.compute import ComputeError, Reduction, plan
from nnc.ir.loops import (
    CallExtern,
    Expr,
    For,
    GuardTail,
    If,
    Intrinsic,
    Kernel,
    Layout,
    Load,
    LoopModule,
    OverlapTail,
    Partition,
    Reorder,
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

HOST_CPU_KINDS = frozenset({"host", "tvm"})  # targets whose kernels run on the compiling CPU
# targets scheduled with the host's register tiles: the host CPU's, and OpenCL at the
# compiling CPU's vector width (`opencl_target`: PoCL's CPU device is that CPU; 16 float lanes
# x up to 12 copies per work item on AVX-512, emitted as OpenCL vector code; the tile's outer
# split loops stay work items, backends/opencl/mapping.py; GPUs spread the lanes)
REGISTER_TILE_KINDS = HOST_CPU_KINDS | {"opencl"}
# OpenCL, integer kernels (their lanes are scalar loops there: the emitter's vector code is
# float32) of at most this many MACs: the lanes alone, no unrolled copies and no partitioned
# borders. PoCL's build costs each kernel about the same whatever its MACs, and the copies x
# regions of the tile cost VWW int8's depthwise convs 0.25-1.0 s each to build for 1-4 us of
# run time: program CPU 10.2 -> 8.4 s, those 11 kernels 27 -> 37 us of the model's 1.2 ms.
# Float kernels keep the tile: on VWW fp32 the same rule cost +48% latency (README "Compile
# time")
OPENCL_SMALL_MACS = 50_000


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


# ---------------------------------------------------------------- declarative definitions


def _intrinsics_for(target: Any) -> list[tuple[str, int]]:
    """The dot intrinsics the target has, widest first: Helium's 16 lanes, the DSP extension's
    4 (the M55 has both)."""
    feats = getattr(target, "features", ())
    if getattr(target, "kind", "") != "cortex-m":
        return []
    return ([("dot16_s8", 16)] if "mve" in feats else []) + \
        ([("dot4_s8", 4)] if "dsp" in feats else [])


def reduction_steps(defn: Reduction, target: Any,
                    shapes: dict[str, tuple[int, ...]]) -> tuple[ScheduleStep, ...]:
    """The default schedule of a declarative definition (`nnc.ir.compute`), by target:

    - register tile, unrolled (scalar accumulators): with the DSP dot intrinsic and no padding
      window along the output row, 2 output channels x 2 output pixels (each unpacked input word
      and weight word serves two SMLADs, as CMSIS-NN's 2x2 matrix kernel does); otherwise 4
      output channels per pass over the reduction, so each input element is loaded once;
    - the contiguous reduce axis (input channels, the FC depth; or a contiguous tap row when
      there is one input channel) mapped onto the target's dot intrinsic (SMLAD on M4/M7, MVE on
      the M55) where its extent allows, else unrolled by 4 on Cortex-M (gcc does not unroll
      reductions there);
    Order: outer spatial axes, the reduce axes, the tile, the intrinsic's lanes."""
    if not defn.reduced and not defn.windows:
        return elementwise_steps(defn, target)
    # the TVM target runs on this CPU too (TVM's LLVM for the host's vector ISA): same tiles
    if getattr(target, "kind", "") in REGISTER_TILE_KINDS and defn.acc_dtype in _LANE_BYTES:
        small = getattr(target, "kind", "") == "opencl" and defn.acc_dtype != "float32" \
            and macs(defn) <= OPENCL_SMALL_MACS
        steps = host_pool_steps(defn, target) or host_flat_steps(defn, target) \
            or host_vector_steps(defn, target, shapes, copies_cap=1 if small else None,
                                 partition=not small)
        try:
            plan(defn, steps, shapes)
            return steps
        except ComputeError:
            pass
    intrs = _intrinsics_for(target)
    lanes = _helium_lanes(defn, target, shapes)
    if lanes:
        return lanes
    row = "ow" if any(a.name == "ow" for a in defn.spatial) else None
    tiles: list[tuple[int, int]] = []
    if intrs and intrs[0][1] == 4 and row is not None \
            and not any(w.out == row for w in defn.windows) and defn.axis(row).extent >= 2:
        tiles.append((2, 2))
    tiles.append((4, 1))
    for oc_tile, px_tile in tiles:
        for steps in _candidates(defn, target, intrs, oc_tile, px_tile, row):
            try:
                plan(defn, steps, shapes)
            except ComputeError:
                continue
            return steps
    return ()


def elementwise_steps(defn: Reduction, target: Any) -> tuple[ScheduleStep, ...]:
    """An elementwise definition (no reduce axis: add_s8, mul_s8): the innermost axis (the
    contiguous one) as vector lanes, as `default_steps` vectorizes any independent innermost
    loop of at least 4 iterations. On Helium the C emitter writes the lanes as MVE code
    (`nnc.backends.c.mve`: 4 int32 lanes per instruction, a predicated group for a remainder),
    so there 2 or 3 iterations are lanes too."""
    if not defn.axes:
        return ()
    inner = defn.axes[-1]
    helium = "mve" in getattr(target, "features", ())
    return (Vectorize(inner.name),) if inner.extent >= (2 if helium else 4) else ()


def _helium_lanes(defn: Reduction, target: Any,
                  shapes: dict[str, tuple[int, ...]]) -> tuple[ScheduleStep, ...]:
    """Helium, a reduction with no contiguous reduce axis (a depthwise conv): the output
    channels as vector lanes (up to 16, an accumulator row; the C emitter turns the
    vectorized lane loop into MVE code), the taps around them."""
    if "mve" not in getattr(target, "features", ()) or "oc" not in {a.name for a in defn.axes}:
        return ()
    if defn.acc_dtype != "int32" or any(a.name == "k" for a in defn.reduced):
        return ()
    layout: list[ScheduleStep] = []
    ic = next((a for a in defn.reduced if a.name == "ic"), None)
    if ic is not None:
        # few input channels (a first layer): no dot product fits; with the weights stored
        # output channel last, the channels become lanes against a broadcast input element
        w = dict(defn.operands).get("w")
        if ic.extent % 4 == 0 or w is None or w not in shapes or defn.axis("oc").extent < 8:
            return ()
        rank = len(shapes[w])
        layout = [Layout("w", (*range(1, rank), 0))]
    oc = defn.axis("oc").extent
    if ic is not None:
        # a first layer: 4 lanes x 4 pixels along the row, the taps in loops, the border
        # partitioned at stride 1. Untuned, with register rows: KWS's 1 -> 64 channel 10x4
        # conv (stride 2) on 25x5: 16 lanes x 1 pixel 419,266 instructions, 4 x 4 along ow
        # 339,126 (partitioned 338,186, +3.5 KB of flash; 8 x 2 349,894); IC's 3 -> 16
        # channel 3x3 on 32x32: 583,812 -> 445,836 (unpartitioned 754,342; 4 x 2 523,533;
        # 8 x 2 555,728); VWW's stride-2 3 -> 8 channel 3x3 on 96x96: 772,368 -> 627,593
        # (partitioned 754,325)
        row = next((a.name for a in reversed(defn.spatial) if a.name not in ("n", "oc")), None)
        stride1 = all(w.stride == 1 for w in defn.windows)
        steps = (*layout, *helium_depthwise_steps(defn, copies=4, axis=row, unroll_taps=0,
                                                  partition=stride1, channels_outer=False,
                                                  partition_copies=True, guard_tail=False))
        if len(steps) > len(layout):
            try:
                plan(defn, steps, shapes)
                return steps
            except ComputeError:
                pass
    if ic is None:
        steps = helium_depthwise_steps(defn)
        if steps:
            try:
                plan(defn, steps, shapes)
                return steps
            except ComputeError:
                pass
    width = next((w for w in (16, 8, 4) if oc % w == 0), 0)
    if not width:
        return ()
    outer = [a.name for a in defn.spatial if a.name != "oc"]
    split: list[ScheduleStep] = [Split("oc", width)] if oc > width else []
    lane = "oc_i" if split else "oc"
    steps = (*layout, *split, Vectorize(lane),
             Reorder((*outer, *(["oc_o"] if split else []), *[a.name for a in defn.reduced],
                      lane)))
    try:
        plan(defn, steps, shapes)
    except ComputeError:
        return ()
    return steps


HELIUM_DW_LANES = 4  # output channels per accumulator vector (one int32x4_t)
HELIUM_DW_COPIES = 2  # output pixels per weight vector
HELIUM_DW_UNROLL_TAPS = 0  # taps unrolled whole up to this many (a knob; not by default)


def helium_depthwise_steps(defn: Reduction, lanes: int = HELIUM_DW_LANES,
                           copies: int = HELIUM_DW_COPIES, axis: str | None = None,
                           unroll_taps: int = HELIUM_DW_UNROLL_TAPS,
                           partition: bool = True, channels_outer: bool = True,
                           partition_copies: bool = False, guard_tail: bool = True
                           ) -> tuple[ScheduleStep, ...]:
    """Helium, a depthwise conv: `lanes` output channels (one int32x4_t accumulator, which the
    C emitter keeps in a register: `_vector_rows`) by `copies` output pixels along `axis` (by
    default the longest output axis), unrolled, so each weight vector loaded serves every
    copy; the padded border of the other axes partitioned away (`partition`; the copies'
    axis too with `partition_copies`: each partition region is a copy of the loop body), the
    taps unrolled whole where there are at most `unroll_taps` (a knob, none by default). A
    remainder along the copies' axis (of at least 4 tiles, whose window checks its upper end)
    runs as one more guarded whole tile (`GuardTail`, with `guard_tail`), that axis's taps
    unrolled (in a loop gcc keeps them rolled under the guards: 191,846 instructions on KWS;
    every tap unrolled 156,732).
    Order: the channel groups (`channels_outer`, else after the pixels), the pixels, the
    taps, the copies, the lanes.
    Flash (issue 9), KWS as below, per conv: every padded axis partitioned 151,263
    instructions and 5,498 B of code; the copies' axis (oh) left guarded 150,137 / 2,994 B,
    with the guarded tail 154,136 / 2,090 B (only oh partitioned 164,210 / 2,482; none
    169,468 / 1,500); VWW's 13 depthwise convs with the copies' axis guarded: 1,833,595 ->
    1,707,869 instructions, 45,264 -> 26,250 B (conv_66 97,160 -> 100,487 the one slower).
    KWS's four 64-channel 3x3 depthwise convs on 25x5 (`nnc bench`, M55, untuned, register
    rows): 16 lanes x 1 pixel, guards, pixels outermost 240,170 instructions each; 4 x 2 along
    oh, partitioned, channel groups outermost 151,263 (pixels outermost 173,006; taps unrolled
    161,998, with pixels outermost 164,557; 4 x 1: 165,740; 4 x 4: 183,311; only oh
    partitioned 158,611 with the taps unrolled); pixels outermost, taps unrolled: 4 x 3
    177,676, 8 x 2 185,879, 4 x 2 along ow 201,259, unpartitioned 191,001. VWW's 13 depthwise
    convs, channel groups outermost against pixels outermost (taps unrolled): 1,750k -> 1,575k
    in all, the stride-2 ones -1.5% to -33%, five 4x4 ones +0.9%, the last but one +15%
    (23,220 -> 26,671)."""
    oc = defn.axis("oc").extent
    if oc % lanes:
        return ()
    rows = [a for a in defn.spatial if a.name not in ("n", "oc")]
    outer = [a.name for a in defn.spatial if a.name != "oc"]
    parts = [w.out for w in defn.windows if w.low or w.high] if partition else []
    if axis is None and rows:
        axis = max(rows, key=lambda a: a.extent).name
    # the steps in the order of the tuner's knobs (`nnc.compiler.tune.space.Knobs.steps`), so
    # the default is a point of its space: a partition of the copies' axis before their split
    steps: list[ScheduleStep] = []
    tile: list[str] = []
    if copies > 1 and axis is not None and defn.axis(axis).extent >= copies:
        partitioned = axis in parts and partition_copies
        if axis in parts:
            parts.remove(axis)
        if partitioned:
            steps.append(Partition(axis))
        steps += [Split(axis, copies), Unroll(f"{axis}_i")]
        extent = defn.axis(axis).extent
        window = next((w for w in defn.windows if w.out == axis and w.high), None)
        if guard_tail and not partitioned and extent % copies and extent >= 4 * copies \
                and window is not None:
            steps.append(GuardTail(f"{axis}_o"))
            if defn.axis(window.tap).extent > 1:
                steps.append(Unroll(window.tap))
        outer[outer.index(axis)] = f"{axis}_o"
        tile.append(f"{axis}_i")
    if oc > lanes:
        steps += [Split("oc", lanes), Vectorize("oc_i")]
        oc_loops, lane = ["oc_o"], "oc_i"
    else:
        steps.append(Vectorize("oc"))
        oc_loops, lane = [], "oc"
    steps += [Partition(p) for p in parts]
    red = [a.name for a in defn.reduced]
    taps = 1
    for a in defn.reduced:
        taps *= a.extent
    if taps <= unroll_taps:
        steps += [Unroll(r) for r in red if defn.axis(r).extent > 1 and Unroll(r) not in steps]
    head = [*oc_loops, *outer] if channels_outer else [*outer, *oc_loops]
    return (*steps, Reorder((*head, *red, *tile, lane)))


_LANE_BYTES = {"float32": 4, "float64": 8, "int32": 4, "int64": 8}


def host_registers(target: Any) -> tuple[int, int]:
    """(vector registers, vector bits) of a host target: 32 zmm with AVX-512, 16 ymm/xmm else."""
    bits = getattr(target, "vector_bits", 0) or 128
    return (32 if getattr(target, "vector_isa", None) == "avx512f" else 16), bits


def _strides(defn: Reduction, shapes: dict[str, tuple[int, ...]], axis: str) -> set[int] | None:
    """The element strides along `axis` of the term's loads (None: one is not affine)."""
    extents = {a.name: a.extent for a in defn.axes}
    found: set[int] = set()
    for ld in walk_expr(defn.term):
        if isinstance(ld, Load):
            shape = shapes.get(ld.buffer)
            form = flat_offset(ld.indices, shape, extents) if shape is not None else None
            if form is None:
                return None
            found.add(form.get(axis, 0))
    return found


def macs(defn: Reduction) -> int:
    """Multiply-accumulates (iterations of the term) of a definition: every axis's extent."""
    n = 1
    for a in defn.axes:
        n *= a.extent
    return n


def host_vector_steps(defn: Reduction, target: Any, shapes: dict[str, tuple[int, ...]],
                      copies_cap: int | None = None,
                      partition: bool = True) -> tuple[ScheduleStep, ...]:
    """The host's register tile for a reduction: one spatial axis as vector lanes, another as
    unrolled copies, both inside the reduction, so each vector loaded serves every copy (the
    other operand a broadcast) and the accumulators (copies x one vector) stay in registers:
    up to 12 copies on AVX2's 16 ymm, up to 24 on AVX-512's 32 zmm (registers less four
    for operands). The lanes go along output channels where every load is contiguous there
    or does not depend on them (dense convs with channels-last weights, `_conv_pack`), the
    copies along the output row; else the lanes go along the row (depthwise, grouped) and
    the copies along the channels. An axis with a padding window is partitioned (a
    guard-free interior) and then split, each region with its own peeled remainder. One
    vector per copy measured best: with 2-3 (a
    48-float array per copy) gcc no longer keeps the tile in registers.
    `copies_cap` bounds the unrolled copies (1: none), `partition=False` keeps every padded
    axis guarded (OPENCL_SMALL_MACS).
    Order: outer spatial axes, the reduce axes (the definition's order), the tile."""
    regs, bits = host_registers(target)
    lanes = max(1, bits // (8 * _LANE_BYTES[defn.acc_dtype]))
    spatial = [a.name for a in defn.spatial]
    row = next((a for a in reversed(spatial) if a not in ("n", "oc")), None)
    strides = _strides(defn, shapes, "oc") if "oc" in spatial else None
    vec: str | None
    copies: str | None
    windowed = {w.out for w in defn.windows}
    # measured on the host's C only: OpenCL and TVM keep the channel-lane tiles
    host = getattr(target, "kind", "") == "host"
    if host and short_row_lanes(defn, shapes, row, lanes):
        vec, copies = row, "oc"
    elif strides is not None and strides <= {0, 1} and defn.axis("oc").extent >= lanes // 2:
        vec, copies = "oc", row
    else:
        vec, copies = row, ("oc" if "oc" in spatial else None)
        # copies share an operand only along an axis it does not depend on: a depthwise conv's
        # input changes with the channel, its weight not with the output row, so the copies go
        # along the rows there (one broadcast weight for all; 48x48 depthwise: -37%)
        rows = [a for a in spatial if a not in ("n", "oc", vec)]
        along_oc = _strides(defn, shapes, "oc") if copies else None
        if along_oc is not None and 0 not in along_oc and rows:
            along_row = _strides(defn, shapes, rows[-1])
            if along_row is not None and 0 in along_row:
                copies = rows[-1]
    steps: list[ScheduleStep] = []
    outer = list(spatial)
    tile: list[str] = []
    # other padded axes (the rows) keep their guard: it sits outside the tap row (kw) loop,
    # and partitioning them too would triple the code for < 2% of the time

    def tiled(axis: str, factor: int, kind: type[Vectorize] | type[Unroll],
              split_borders: bool = True) -> None:
        extent = defn.axis(axis).extent
        if axis in windowed and split_borders and partition:
            steps.append(Partition(axis))
        elif extent <= factor:
            steps.append(kind(axis))
            outer.remove(axis)
            tile.append(axis)
            return
        elif kind is Unroll:  # an even split when one is close: fewer peeled copies
            factor = next((f for f in range(factor, max(1, factor // 2), -1) if extent % f == 0),
                          factor)
        steps.extend([Split(axis, factor), kind(f"{axis}_i")])
        outer[outer.index(axis)] = f"{axis}_o"
        tile.append(f"{axis}_i")

    few = copies is None or defn.axis(copies).extent < 4
    nv = 1  # vectors of lanes per copy
    if vec is not None and few and vec not in windowed and defn.axis(vec).extent >= 2 * lanes \
            and defn.axis(vec).extent % lanes == 0:
        # too few copies (a gemm of one row): several vectors of the lane axis as the copies,
        # independent accumulators to hide the latency of the adds
        extent = defn.axis(vec).extent
        # up to 8 vectors, a number that divides the axis (the inner loop of a split with a
        # remainder cannot be split again)
        width = lanes * min(8, extent // lanes)
        if extent > width:
            width = next(lanes * j for j in range(8, 0, -1) if extent % (lanes * j) == 0)
        name = vec
        if extent > width:
            steps.append(Split(vec, width))
            outer[outer.index(vec)] = f"{vec}_o"
            name = f"{vec}_i"
        else:
            outer.remove(vec)
        steps += [Split(name, lanes), Unroll(f"{name}_o"), Vectorize(f"{name}_i")]
        tile += [f"{name}_i", f"{name}_o"]  # the copies inside the vector loop, as conv tiles
    elif vec is not None:
        nv = _channel_vectors(defn, vec, lanes, regs) if host else 1
        ext = defn.axis(vec).extent
        if nv > 1:
            name = vec
            if ext > lanes * nv:
                steps.append(Split(vec, lanes * nv))
                outer[outer.index(vec)] = f"{vec}_o"
                name = f"{vec}_i"
            else:
                outer.remove(vec)
            steps += [Split(name, lanes), Unroll(f"{name}_o"), Vectorize(f"{name}_i")]
            tile += [f"{name}_i", f"{name}_o"]
        else:
            tiled(vec, lanes, Vectorize)
            ext = defn.axis(vec).extent
            if host and vec == row and vec not in windowed and ext > lanes and ext % lanes:
                # the row's last vector overlaps the one before instead of a scalar remainder
                # (KWS's 1x1 convs on the 125-column flat row: 0.0150 -> 0.0092 ms)
                steps.append(OverlapTail(f"{vec}_o"))
    most = (regs - 8) // nv if nv > 1 else min(regs - 4, 12 if regs > 16 else 8)
    if copies_cap is not None:
        most = min(most, copies_cap)
    if copies is not None and most > 1:
        # rows as the copies keep their guard (outside the tap row loop): partitioned too, the
        # regions x copies x peeled tails doubled KWS's C compile time for no measured gain
        tiled(copies, min(most, defn.axis(copies).extent), Unroll, split_borders=copies == row)
    reduce = [a.name for a in defn.reduced]
    steps.append(Reorder((*outer, *reduce, *tile)))
    return tuple(steps)


def host_flat_vectors(target: Any) -> int:
    """The most vectors of a `depthwise_flat` row the host keeps in registers at once: 12 of
    AVX-512's 32 registers, 6 of AVX2's 16 (the rest: the tap's input, mask and weight)."""
    return 12 if host_registers(target)[0] > 16 else 6


def host_flat_steps(defn: Reduction, target: Any) -> tuple[ScheduleStep, ...]:
    """`depthwise_flat` (a depthwise conv along its plane as one row, `flat-depthwise`): the
    row as vectors of lanes, all of them unrolled copies inside the taps (their accumulators in
    registers; each tap's weight one broadcast for all), the last vector overlapping the one
    before (no scalar remainder). Channels outermost. The pass makes such rows of at most
    `host_flat_vectors` vectors."""
    if defn.kind != "depthwise_flat":
        return ()
    bits = host_registers(target)[1]
    lanes = max(1, bits // (8 * _LANE_BYTES[defn.acc_dtype]))
    extent = defn.axis("ow").extent
    if not lanes <= extent <= lanes * host_flat_vectors(target):
        return ()
    steps: list[ScheduleStep] = [Split("ow", lanes), Vectorize("ow_i")]
    if extent % lanes:
        steps.append(OverlapTail("ow_o"))
    return (*steps, Unroll("ow_o"), Reorder(("n", "oc", "oh", "kh", "kw", "ow_i", "ow_o")))


def _channel_vectors(defn: Reduction, vec: str, lanes: int, regs: int) -> int:
    """Vectors of output channels per copy: 4 for a 1x1 conv (no taps) with channel lanes and
    a multiple of 4 vectors of channels on AVX-512's 32 registers (4 x 6 copies = 24
    accumulators: each broadcast input serves 4 multiply-adds, each weight vector 6), else 1.
    Measured (`bench_layer`, same run): 64 -> 64 channels on a 12x12 plane 0.0093 -> 0.0071
    ms, 128 -> 256 on 6x6 0.0149 -> 0.0115 ms, 128 -> 128 on 6x6 0.0075 -> 0.0063 ms; KWS's
    64 -> 64 on 25x5 and 256 -> 256 on 3x3 the same; 2 vectors per copy, and 3x3 convs, gained
    nothing measurable. A conv of one input channel with taps (KWS's first layer, 10x4 taps on
    one channel, 5 columns: 5 accumulators were 5 chains of dependent adds) takes 4 vectors
    too: 0.0065 -> 0.0051 ms (2 vectors: 0.0055; `bench_host_layers`, same run)."""
    if vec != "oc" or defn.kind != "conv" or regs < 32:
        return 1
    one_channel = not any(a.name == "ic" for a in defn.reduced)
    if not one_channel and any(a.extent != 1 for a in defn.reduced if a.name != "ic"):
        return 1
    oc = defn.axis("oc").extent
    return 4 if oc % (4 * lanes) == 0 else 1


def short_row_lanes(defn: Reduction, shapes: dict[str, tuple[int, ...]], row: str | None,
                    lanes: int) -> bool:
    """Whether a conv's lanes go along its output row although its loads are contiguous along
    the output channels: an unpadded row contiguous in the input, and either a short
    reduction (at most two vectors' worth of MACs per output, a first layer's few input
    channels x taps) on a row of at least one vector, or a window of taps on a row of at least
    two vectors. With channel lanes the NCHW stores are scattered (one per lane, and so are
    the loads of a fused residual add); along the row they are whole vectors, the weight a
    broadcast. Measured (`bench_layer`, same run, explicitly padded inputs): IC's first conv
    (3 -> 16 channels, 3x3, 32x32) 0.036 -> 0.017 ms, its 16 -> 16 channel 3x3 on 32x32
    0.040-0.062 -> 0.025 ms; on 16-wide rows (32 channels) and 1x1 convs (KWS, VWW) the two
    tiles measured the same, so those keep the channel lanes. A 1x1 conv (no taps) takes the
    row lanes on a row of at least 4 vectors (a plane `flatten-pointwise` made one row; the
    tail an `OverlapTail`): 64 -> 64 channels on KWS's 125 columns 0.0124-0.0139 -> 0.0092 ms,
    on VWW's 144 0.0118-0.0123 -> 0.0103 ms, on 576 the same; on 36 columns (2.25 vectors)
    the channel lanes measured faster (0.0111 against 0.0135 ms for 128 -> 128)."""
    if defn.kind != "conv" or row is None or "oc" not in {a.name for a in defn.spatial}:
        return False
    extent = defn.axis(row).extent
    if any(w.out == row for w in defn.windows) or extent < lanes:
        return False
    macs = taps = 1
    for a in defn.reduced:
        macs *= a.extent
        if a.name != "ic":
            taps *= a.extent
    along = _strides(defn, shapes, row)
    if along is None or not along <= {0, 1}:
        return False
    return macs <= 2 * lanes or (taps > 1 and extent >= 2 * lanes) \
        or (taps == 1 and extent >= 4 * lanes)


POOL_KINDS = frozenset({"max_pool", "average_pool", "max_pool_s8", "avg_pool_s8"})
GLOBAL_POOL_KINDS = frozenset({"global_average_pool", "global_max_pool"})


def host_pool_steps(defn: Reduction, target: Any) -> tuple[ScheduleStep, ...]:
    """The host's schedule of an NCHW pool (a short window per output, no weights): the taps
    unrolled (up to 8 along each axis) around a scalar accumulator, so gcc vectorizes the
    output row itself, which it does only where no padding check is left: every padded axis
    partitioned (guard-free interior); with no padding, the row's accumulators as an array
    instead, updated a whole row per tap. Measured against the conv-style tile (16-lane splits
    of the row inside the taps): resnet50's padded 3x3/2 max pool 1.35 -> 0.38 ms, squeezenet's
    unpadded one 1.64 -> 0.29 ms (`benchmarks/bench_layer.py`). A global pool: one vector of
    channels (gathered along the plane) per pass over it; several as copies measured 10%
    slower on 2048 x 7x7. NHWC (int8) pools: () (the channels are contiguous; the conv-style
    tile puts them in the lanes). A pool to one output per channel is scheduled as a global
    one: KWS's 24x5 average pool 0.0033 -> 0.0025 ms (`bench_host_layers`; its 120-add
    chain per channel was latency-bound; 8 channels as scalar copies measured the same)."""
    names = [a.name for a in defn.axes]
    # a pool to one output per channel (KWS's 24x5 average pool on 25x5) is a global one
    # (measured on the host's C only: OpenCL and TVM keep the pool tile)
    single = getattr(target, "kind", "") == "host" and defn.kind in POOL_KINDS \
        and not defn.windows \
        and all(a.extent == 1 for a in defn.spatial if a.name not in ("n", "c"))
    if (defn.kind in GLOBAL_POOL_KINDS or single) and names[:2] == ["n", "c"] \
            and defn.acc_dtype in _LANE_BYTES:
        lanes = max(1, host_registers(target)[1] // (8 * _LANE_BYTES[defn.acc_dtype]))
        if defn.axis("c").extent <= lanes:
            return ()
        plane = tuple(a.name for a in defn.reduced)
        return (Split("c", lanes), Vectorize("c_i"), Reorder(("n", "c_o", *plane, "c_i")))
    if defn.kind not in POOL_KINDS or names[:2] != ["n", "c"]:
        return ()
    taps = [a for a in defn.reduced]
    steps: list[ScheduleStep] = [Unroll(a.name) for a in taps if a.extent <= 8]
    if defn.windows:
        return (*(Partition(w.out) for w in defn.windows), *steps)
    row = defn.spatial[-1].name
    outer = [a.name for a in defn.spatial if a.name != row]
    return (Vectorize(row), *steps, Reorder((*outer, *(a.name for a in taps), row)))


def _candidates(defn: Reduction, target: Any, intrs: list[tuple[str, int]], oc_tile: int,
                px_tile: int, row: str | None) -> list[tuple[ScheduleStep, ...]]:
    names = {a.name for a in defn.axes}
    cortex_m = getattr(target, "kind", "") == "cortex-m"
    base: list[ScheduleStep] = []
    outer = [a.name for a in defn.spatial if a.name != "oc"]
    tile: list[str] = []
    if px_tile > 1 and row is not None:
        base += [Split(row, px_tile), Unroll(f"{row}_i")]
        outer[outer.index(row)] = f"{row}_o"
        tile.append(f"{row}_i")
    if "oc" in names:
        oc = defn.axis("oc").extent
        if oc >= 2 * oc_tile or (oc >= oc_tile and oc % oc_tile == 0):
            base += [Split("oc", oc_tile), Unroll("oc_i")]
            outer.append("oc_o")
            tile.append("oc_i")
        elif oc <= oc_tile:
            base.append(Unroll("oc"))
            tile.append("oc")
        else:
            outer.append("oc")
    # `Partition` only where the MACs are cheap enough for the tap checks to dominate: dense
    # padded convs on Helium (IC on the M55: -15% instructions for +26 KB of flash). On the
    # M4/M7 the guard-free interior saves 3-11% of a padded conv's instructions but copies its
    # nest up to nine times (KWS: +25 KB of flash for -3.5%); the tuner weighs it there.
    helium = "mve" in getattr(target, "features", ())
    dense = any(a.name == "ic" and a.extent % 16 == 0 for a in defn.reduced)
    if helium and dense:
        base += [Partition(w.out) for w in defn.windows if w.out in outer]
    reduce = list(defn.reduced)
    candidates: list[tuple[ScheduleStep, ...]] = []
    for (fn, width), r in itertools.product(intrs, reversed(reduce)):
        if r.extent % width or r.extent < width:
            continue
        lanes = f"{r.name}_i" if r.extent > width else r.name
        split: list[ScheduleStep] = [Split(r.name, width)] if r.extent > width else []
        order = [a.name for a in reduce if a is not r] + ([f"{r.name}_o"] if split else [])
        tiled = base
        if fn == "dot16_s8":  # Helium: the tile's accumulators as a row, requantized in lanes
            tiled = [Vectorize(x.loop) if isinstance(x, Unroll) and x.loop == "oc_i" else x
                     for x in base]
        head = outer
        if fn == "dot16_s8" and "oc_o" in outer:
            # Helium: the channel groups outermost (their weights' addresses fixed across the
            # pixels). Untuned, M55: KWS's 64 -> 64 1x1 convs 218,124 -> 185,855 instructions;
            # VWW's 1x1 convs -0.4% to -45% (7 of 12: -18% to -45%); IC's convs -3% to -8%,
            # two +1.4% and +2.4%; the models: KWS 1,853,661 -> 1,724,585, VWW 8,053,434 ->
            # 7,138,223, IC 6,171,810 -> 6,030,883
            head = ["oc_o", *(x for x in outer if x != "oc_o")]
        taps = any(a is not r and a.extent > 1 for a in reduce)
        if fn == "dot16_s8" and split and r.extent // width <= 4 and taps:
            # Helium, a 3x3 conv of up to 64 input channels: the calls along the channels
            # unrolled too (one pass of straight-line VMLADAVAs per tap; IC on the M55:
            # -127k of 5.59M; on 1x1 convs it measured 0.1-3% worse)
            split = [*split, Unroll(f"{r.name}_o")]
        candidates.append((*tiled, *split, Intrinsic(fn, lanes),
                           Reorder((*head, *order, *tile, lanes))))
    last = reduce[-1] if reduce else None
    fallback = list(base)
    order = [a.name for a in reduce]
    if cortex_m and last is not None and last.extent >= 8 and last.extent % 4 == 0:
        fallback += [Split(last.name, 4), Unroll(f"{last.name}_i")]
        order = order[:-1] + [f"{last.name}_o", f"{last.name}_i"]
    elif cortex_m and last is not None and 1 < last.extent <= 4:
        fallback.append(Unroll(last.name))
    # the tile's copies go inside the reduction's innermost loop: one load of x for all of them
    candidates.append((*fallback, Reorder((*outer, *order, *tile))))
    return candidates


@register_pass("default-schedule", options=DefaultScheduleOptions)
def default_schedule(module: LoopModule, ctx: PassContext) -> LoopModule:
    """Record a default schedule (vectorize independent innermost loops) on unscheduled kernels."""
    opts = ctx.options if ctx.options is not None else DefaultScheduleOptions()
    unroll = opts.unroll_reductions or (4 if getattr(ctx.target, "kind", "") == "cortex-m" else 0)
    kernels = []
    shapes = {b.name: b.shape for b in module.buffers}
    for k in module.kernels:
        if not k.schedule and k.compute is not None:
            steps = reduction_steps(k.compute, ctx.target, shapes)
            if steps:
                k = k.replace(schedule=steps)
        elif not k.schedule:
            steps = default_steps(k, opts.min_extent, unroll)
            if steps:
                k = k.replace(schedule=steps)
        kernels.append(k)
    return module.replace(kernels=tuple(kernels))
