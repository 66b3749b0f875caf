"""Schedules of the declarative definitions (nnc.ir.compute): every schedule of a small
enumerated space per op kind gives the reference's outputs bit for bit, through the loop-IR
interpreter and (a sample) through the compiled C; `schedule` is idempotent; steps print and
parse back; a step that does not apply says why."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nnc.backends.target import cortex_m7, cortex_m55
from nnc.ir.graph import Attrs
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loop_parser import parse_module
from nnc.ir.loop_printer import format_module
from nnc.ir.loops import (
    GuardTail,
    Intrinsic,
    Layout,
    OverlapTail,
    Partition,
    Reorder,
    Split,
    Unroll,
    Vectorize,
)
from nnc.ir.ops import get_op
from nnc.ir.ops.int8 import quantize_multiplier
from nnc.passes.default_schedule import default_schedule
from nnc.passes.lower_to_loops import lower_to_loops
from nnc.passes.manager import PassContext
from nnc.passes.schedule import ScheduleError, schedule
from nnc.testing import single_op_graph


def _s8(rng, shape, lo=-128):
    return rng.integers(lo, 128, shape).astype(np.int8)


def _requant(rng, oc):
    pairs = [quantize_multiplier(float(r)) for r in rng.uniform(2e-4, 4e-3, oc)]
    return (np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32))


def _conv_case(depthwise: bool, stride: int, zp: int):
    rng = np.random.default_rng(7 + stride + 3 * depthwise)
    c, oc = (8, 8) if depthwise else (8, 6)
    x = _s8(rng, (1, 6, 5, c))
    w = _s8(rng, (1, 3, 3, oc) if depthwise else (oc, 3, 3, c), lo=-127)
    mult, shift = _requant(rng, oc)
    bias = rng.integers(-3000, 3000, oc).astype(np.int32)
    attrs = dict(layout="NHWC", pads=[1, 1, 1, 1], strides=[stride, stride],
                 group=c if depthwise else 1, input_zero_point=zp, output_zero_point=-5,
                 act_min=-128, act_max=127)
    return "conv_s8", [x, w, mult, shift, bias], attrs


def _fc_case():
    rng = np.random.default_rng(3)
    x = _s8(rng, (2, 32))
    w = _s8(rng, (6, 32), lo=-127)
    mult, shift = _requant(rng, 6)
    attrs = dict(input_zero_point=-3, weight_zero_point=0, output_zero_point=4)
    return "fully_connected_s8", [x, w, mult, shift, rng.integers(-900, 900, 6).astype(np.int32)], \
        attrs


def _lowered(kind, inputs, attrs, target=None):
    graph = single_op_graph(kind, inputs, attrs, (1, 2, 3, 4))
    module = lower_to_loops(graph, PassContext(target=target))
    ref = get_op(kind).reference(list(inputs), Attrs.of(attrs))
    feeds = {module.inputs[0]: inputs[0]}
    return module, feeds, np.asarray(ref[0])


def _with_steps(module, steps):
    (k,) = [k for k in module.kernels if k.compute is not None]
    kernels = tuple(k.replace(schedule=tuple(steps)) if x is k else x for x in module.kernels)
    return schedule(module.replace(kernels=kernels), PassContext())


def _conv_space(depthwise: bool):
    """Register tiles over oc and ow (unrolled or array accumulators), peeled remainders,
    partitions, the tap and channel loop orders, and the dot intrinsic or a 4-way unroll."""
    for oc_split, ow_split, unroll_tile, part, ic_mode in itertools.product(
            (None, 3, 4), (None, 2), (True, False), (False, True),
            ("none",) if depthwise else ("none", "unroll4", "dot4")):
        steps, outer, tile = [], ["n", "oh", "ow"], []
        if ow_split:
            steps.append(Split("ow", ow_split))
            outer[2:3] = ["ow_o"]
            tile.append("ow_i")
        if oc_split:
            steps.append(Split("oc", oc_split))
            outer.append("oc_o")
            tile.append("oc_i")
        else:
            outer.append("oc")
        if unroll_tile:
            steps += [Unroll(t) for t in tile]
        if part:
            steps += [Partition("oh")] + ([] if ow_split else [Partition("ow")])
        reduce = ["kh", "kw"]
        lanes = []
        if ic_mode == "none" and not depthwise:
            reduce.append("ic")
        elif ic_mode == "unroll4":
            steps += [Split("ic", 4), Unroll("ic_i")]
            reduce += ["ic_o", "ic_i"]
        elif ic_mode == "dot4":
            steps += [Split("ic", 4), Intrinsic("dot4_s8", "ic_i")]
            reduce.append("ic_o")
            lanes = ["ic_i"]
        steps.append(Reorder((*outer, *reduce, *tile, *lanes)))
        yield tuple(steps)
    if not depthwise:  # channels outside the taps, and Helium's 16 lanes over 8 + 8 channels
        yield (Split("oc", 2), Unroll("oc_i"), Reorder(("n", "oh", "ow", "oc_o", "ic", "kh", "kw",
                                                       "oc_i")))


@pytest.mark.parametrize("depthwise, stride, zp", [(False, 1, -128), (False, 2, 3),
                                                   (True, 1, -128), (True, 2, 0)])
def test_every_conv_schedule_is_bit_exact(depthwise, stride, zp):
    module, feeds, ref = _lowered(*_conv_case(depthwise, stride, zp))
    count = 0
    for steps in _conv_space(depthwise):
        got = run_loop_module(_with_steps(module, steps), feeds)[module.outputs[0]]
        np.testing.assert_array_equal(got, ref, err_msg=str(steps))
        count += 1
    assert count >= 24


def test_fc_schedules_with_dot4_and_dot16_are_bit_exact():
    module, feeds, ref = _lowered(*_fc_case())
    spaces = [
        (),
        (Split("oc", 4), Unroll("oc_i"), Split("k", 4), Intrinsic("dot4_s8", "k_i"),
         Reorder(("m0", "oc_o", "k_o", "oc_i", "k_i"))),
        (Split("oc", 4), Split("k", 16), Intrinsic("dot16_s8", "k_i"),
         Reorder(("m0", "oc_o", "k_o", "oc_i", "k_i"))),
        (Split("k", 8), Unroll("k_i"), Reorder(("oc", "m0", "k_o", "k_i"))),
        (Vectorize("oc"), Reorder(("m0", "k", "oc"))),  # the accumulator row: an array
    ]
    for steps in spaces:
        got = run_loop_module(_with_steps(module, steps), feeds)[module.outputs[0]]
        np.testing.assert_array_equal(got, ref, err_msg=str(steps))


def test_compiled_schedules_match_the_interpreter(compile_module):
    """The C of a sample of schedules (dot4 / dot16 helpers with their portable fallback on the
    host, peeled tails, partitions, accumulator arrays) equals the reference."""
    for depthwise in (False, True):
        module, feeds, ref = _lowered(*_conv_case(depthwise, 1, -128))
        space = list(_conv_space(depthwise))
        for steps in space[:: max(1, len(space) // 5)]:
            got = compile_module(_with_steps(module, steps)).run(feeds)[module.outputs[0]]
            np.testing.assert_array_equal(got, ref, err_msg=str(steps))
    module, feeds, ref = _lowered(*_fc_case())
    for target in (cortex_m7(), cortex_m55()):
        ctx = PassContext(target=target)
        scheduled = schedule(default_schedule(module, ctx), ctx)
        assert any("dot" in format_module(scheduled) for _ in [0])
        np.testing.assert_array_equal(compile_module(scheduled).run(feeds)[module.outputs[0]],
                                      ref)


def test_default_schedules_use_the_targets_intrinsics():
    module, _, _ = _lowered(*_conv_case(False, 1, -128))
    m7 = default_schedule(module, PassContext(target=cortex_m7()))
    (k,) = m7.kernels
    assert Intrinsic("dot4_s8", "ic_i") in k.schedule
    m55 = default_schedule(_lowered(*_fc_case())[0], PassContext(target=cortex_m55()))
    assert Intrinsic("dot16_s8", "k_i") in m55.kernels[0].schedule


def test_schedule_is_idempotent_and_prints_and_parses_back():
    module, feeds, ref = _lowered(*_conv_case(False, 2, 3))
    ctx = PassContext(target=cortex_m7())
    once = schedule(default_schedule(module, ctx), ctx)
    twice = schedule(once, ctx)
    assert format_module(twice) == format_module(once)
    steps = (Split("oc", 4), Unroll("oc_i"), Partition("oh"), Split("ic", 4),
             Intrinsic("dot4_s8", "ic_i"))
    text = format_module(_with_steps(module, steps))
    assert "Intrinsic(name='dot4_s8', loop='ic_i')" in text and "dot4_s8" in text
    assert format_module(parse_module(text)) == text


@pytest.mark.parametrize("steps, message", [
    ((Intrinsic("dot4_s8", "ic"),), "needs a reduce loop of extent 4"),
    ((Split("oc", 2), Intrinsic("dot4_s8", "oc_i")), "needs a reduce loop"),
    ((Split("kw", 3), Split("kw", 2)), "no loop named 'kw'"),
    ((Partition("kh"),), "only an unsplit spatial loop"),
    ((Split("ic", 4), Intrinsic("dot4_s8", "ic_i"), Reorder(("ic_i", "kw"))),
     "innermost reduce loop"),
    ((Reorder(("nope", "oc")),), "no loop named 'nope'"),
    ((Split("oc", 4), Split("oc_i", 2)), "inner loop of a split with a remainder"),
    ((Split("oc", 2), OverlapTail("oc_o")), "not the outer loop of a split with a remainder"),
    ((Split("kh", 2), OverlapTail("kh_o")), "reduce loop"),
    ((Split("oc", 2), GuardTail("oc_o")), "not the outer loop of a split with a remainder"),
    ((Split("kh", 2), GuardTail("kh_o")), "reduce loop"),
    ((Split("oc", 4), GuardTail("oc_o")), "no padding window along 'oc' checks its upper end"),
])
def test_steps_that_do_not_apply_say_why(steps, message):
    module, _, _ = _lowered(*_conv_case(False, 1, 0))
    with pytest.raises(ScheduleError, match=message):
        _with_steps(module, steps)


def test_dot_intrinsic_on_a_padded_tap_row():
    """One input channel: the tap row kw is contiguous, so dot4 can take it — but only where no
    padding check along kw remains (the interior of a partition); borders stay scalar."""
    rng = np.random.default_rng(1)
    x, w = _s8(rng, (1, 9, 6, 1)), _s8(rng, (4, 3, 4, 1), lo=-127)
    mult, shift = _requant(rng, 4)
    attrs = dict(layout="NHWC", pads=[1, 1, 1, 1], strides=[2, 1], group=1,
                 input_zero_point=0, output_zero_point=3)
    module, feeds, ref = _lowered("conv_s8", [x, w, mult, shift,
                                              rng.integers(-900, 900, 4).astype(np.int32)], attrs)
    order = Reorder(("n", "oh", "ow", "oc", "kh", "ic", "kw"))
    for steps in [(Intrinsic("dot4_s8", "kw"), order),
                  (Partition("ow"), Intrinsic("dot4_s8", "kw"), order)]:
        scheduled = _with_steps(module, steps)
        np.testing.assert_array_equal(run_loop_module(scheduled, feeds)[module.outputs[0]], ref)
    assert "dot4_s8" in format_module(scheduled)


def test_helium_lanes_for_depthwise(compile_module):
    """On the M55 a depthwise conv runs its channels as vector lanes: the emitter writes MVE code
    for the lane loop (board builds: tests/test_int8_differential.py) and the scalar loop as the
    fallback, which the host build runs here."""
    module, feeds, ref = _lowered(*_conv_case(True, 1, -128), target=cortex_m55())
    ctx = PassContext(target=cortex_m55())
    scheduled = schedule(default_schedule(module, ctx), ctx)
    (k,) = scheduled.kernels
    assert Vectorize("oc") in k.schedule or Vectorize("oc_i") in k.schedule
    from nnc.backends.c.emit import emit_c

    text = "".join(v for v in emit_c(scheduled).values() if isinstance(v, str))
    assert "vldrbq_s32" in text and "vmulq_s32" in text
    np.testing.assert_array_equal(run_loop_module(scheduled, feeds)[module.outputs[0]], ref)
    np.testing.assert_array_equal(compile_module(scheduled).run(feeds)[module.outputs[0]], ref)


def test_layout_step_re_lays_out_the_weights_once():
    """`Layout("w", perm)`: the kernel reads a transposed copy of its weights (output channels
    last here, as the M55's lanes want for few-channel first layers); the original goes when no
    kernel reads it; scheduling twice changes nothing."""
    module, feeds, ref = _lowered(*_conv_case(False, 1, 0))
    steps = (Layout("w", (1, 2, 3, 0)), Split("oc", 4), Vectorize("oc_i"),
             Reorder(("n", "oh", "ow", "oc_o", "kh", "kw", "ic", "oc_i")))
    once = _with_steps(module, steps)
    (w,) = [b for b in once.buffers if b.name.endswith("_t1230")]
    assert w.shape == (3, 3, 8, 6) and w.name in once.kernels[0].params
    original = w.name[: -len("_t1230")]
    assert original not in once.constants and original not in once.kernels[0].params
    np.testing.assert_array_equal(run_loop_module(once, feeds)[module.outputs[0]], ref)
    twice = schedule(once, PassContext())
    assert format_module(twice) == format_module(once)
    with pytest.raises(ScheduleError, match="no operand 'x'"):
        _with_steps(module, (Layout("x", (0, 1, 2, 3)),))
    with pytest.raises(ScheduleError, match="perm must order the 4 dims"):
        _with_steps(module, (Layout("w", (0, 1)),))


def test_m55_first_layer_lanes_against_a_broadcast_input(compile_module):
    """Few input channels on the M55: weights re-laid out output channel last, the channels as
    lanes against the broadcast input element (VMLA by scalar); the host runs the fallback."""
    rng = np.random.default_rng(5)
    x, w = _s8(rng, (1, 7, 6, 3)), _s8(rng, (16, 3, 3, 3), lo=-127)
    mult, shift = _requant(rng, 16)
    attrs = dict(layout="NHWC", pads=[1, 1, 1, 1], strides=[2, 2], group=1,
                 input_zero_point=-7, output_zero_point=2)
    module, feeds, ref = _lowered("conv_s8", [x, w, mult, shift,
                                              rng.integers(-900, 900, 16).astype(np.int32)], attrs,
                                  target=cortex_m55())
    ctx = PassContext(target=cortex_m55())
    scheduled = schedule(default_schedule(module, ctx), ctx)
    assert Layout("w", (1, 2, 3, 0)) in scheduled.kernels[0].schedule
    from nnc.backends.c.emit import emit_c

    text = "".join(v for v in emit_c(scheduled).values() if isinstance(v, str))
    assert "vmlaq_n_s32" in text
    np.testing.assert_array_equal(run_loop_module(scheduled, feeds)[module.outputs[0]], ref)
    np.testing.assert_array_equal(compile_module(scheduled).run(feeds)[module.outputs[0]], ref)
# ---------------------------------------------------------------- float32 conv (NCHW)


def _fconv_case(kind: str):
    rng = np.random.default_rng({"dense": 1, "strided": 2, "depthwise": 3, "grouped": 4}[kind])
    c, oc, group, stride = {"dense": (5, 6, 1, 1), "strided": (4, 5, 1, 2),
                            "depthwise": (6, 6, 6, 1), "grouped": (4, 6, 2, 1)}[kind]
    x = rng.standard_normal((1, c, 7, 9)).astype(np.float32)
    w = rng.standard_normal((oc, c // group, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    attrs = dict(pads=[1, 1, 1, 1], strides=[stride, stride], group=group)
    return "conv", [x, w, bias], attrs


def _fconv_space(depthwise: bool):
    """Vector tiles over ow (whole row, or split with its remainder peeled, partitioned first
    or not), unrolled or array accumulators over oc, partitioned rows, channel orders."""
    for ow_mode, oc_split, unroll_oc, part_oh, ic_first in itertools.product(
            ("row", "split4", "part_split4", "part"), (None, 2, 4), (True, False),
            (False, True), (True, False)):
        if depthwise and not ic_first:
            continue
        steps, outer, tile = [], ["n"], []
        if oc_split:
            steps.append(Split("oc", oc_split))
            outer.append("oc_o")
            oc_tile = ["oc_i"]
        else:
            outer.append("oc")
            oc_tile = []
        if unroll_oc and oc_tile:
            steps.append(Unroll("oc_i"))
        outer.append("oh")
        if part_oh:
            steps.append(Partition("oh"))
        if ow_mode == "row":
            steps.append(Vectorize("ow"))
            tile.append("ow")
        elif ow_mode == "part":
            steps.append(Partition("ow"))
            outer.append("ow")
        else:
            if ow_mode == "part_split4":
                steps.append(Partition("ow"))
            steps += [Split("ow", 4), Vectorize("ow_i")]
            outer.append("ow_o")
            tile.append("ow_i")
        reduce = ["kh", "kw"] if depthwise else (["ic", "kh", "kw"] if ic_first
                                                  else ["kh", "kw", "ic"])
        steps.append(Reorder((*outer, *reduce, *tile, *oc_tile)))
        yield tuple(steps)


@pytest.mark.parametrize("kind", ["dense", "strided", "depthwise", "grouped"])
def test_every_float_conv_schedule_is_within_tolerance(kind):
    module, feeds, ref = _lowered(*_fconv_case(kind))
    (k,) = module.kernels
    assert k.compute is not None and k.compute.reassociate
    count = 0
    for steps in _fconv_space(kind == "depthwise"):
        got = run_loop_module(_with_steps(module, steps), feeds)[module.outputs[0]]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=str(steps))
        count += 1
    assert count >= 48


def test_host_float_conv_default_is_a_vector_register_tile():
    """AVX-512: 6 output channels fill too little of a 16-lane vector: the lanes go along ow
    (partitioned, then split), the channels are the unrolled copies."""
    from nnc.backends.target import host_target

    module, feeds, ref = _lowered(*_fconv_case("dense"))
    avx512 = host_target(vector_isa="avx512f", vector_bits=512)
    (k,) = default_schedule(module, PassContext(target=avx512)).kernels
    assert k.schedule == (Partition("ow"), Split("ow", 16), Vectorize("ow_i"),
                          Unroll("oc"), Reorder(("n", "oh", "ow_o", "ic", "kh", "kw", "ow_i",
                                                 "oc")))
    avx2 = host_target(vector_isa="avx2", vector_bits=256)
    (k,) = default_schedule(module, PassContext(target=avx2)).kernels
    # 8 lanes: the 6 channels fill most of one ymm, so they are the lanes, 8 columns the copies
    assert Vectorize("oc") in k.schedule and Split("ow", 8) in k.schedule


def test_compiled_float_conv_schedules_match_the_reference(compile_module):
    for kind in ("dense", "depthwise", "strided"):
        module, feeds, ref = _lowered(*_fconv_case(kind))
        space = list(_fconv_space(kind == "depthwise"))
        for steps in space[:: max(1, len(space) // 4)]:
            got = compile_module(_with_steps(module, steps)).run(feeds)[module.outputs[0]]
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=str(steps))


def test_partitioned_split_peels_each_region_and_is_idempotent():
    module, feeds, ref = _lowered(*_fconv_case("dense"))
    steps = (Partition("ow"), Split("ow", 4), Vectorize("ow_i"),
             Reorder(("n", "oc", "oh", "ow_o", "ic", "kh", "kw", "ow_i")))
    once = _with_steps(module, steps)
    text = format_module(once)
    # ow = 9 with pad 1: border [0, 1), interior [1, 8) = one 4-wide tile + 3, border [8, 9)
    assert "for %ow_i in 0..4 vectorized" in text and "for %ow_i in 0..3 vectorized" in text
    assert format_module(schedule(once, PassContext())) == text
    got = run_loop_module(once, feeds)[module.outputs[0]]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_host_dense_conv_with_packed_weights_puts_channels_in_the_lanes(compile_module):
    """Constant dense weights are stored [IC, KH, KW, OC]: 16 output channels are one contiguous
    load, the row's outputs the unrolled copies (guard-free after the partition)."""
    from nnc.backends.target import host_target

    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 3, 6, 7)).astype(np.float32)
    w = rng.standard_normal((20, 3, 3, 3)).astype(np.float32)
    module, feeds, ref = _lowered("conv", [x, w, rng.standard_normal(20).astype(np.float32)],
                                  dict(pads=[1, 1, 1, 1], strides=[1, 2]))
    ctx = PassContext(target=host_target(vector_isa="avx512f", vector_bits=512))
    scheduled = schedule(default_schedule(module, ctx), ctx)
    (k,) = scheduled.kernels
    from nnc.ir.loops import Load, walk_expr

    (wload,) = [e for e in walk_expr(k.compute.term)
                if isinstance(e, Load) and "packed" in e.buffer]
    assert [getattr(i, "name", None) for i in wload.indices] == ["ic", "kh", "kw", "oc"]
    assert (Split("oc", 16), Vectorize("oc_i")) == k.schedule[:2]
    assert Partition("ow") in k.schedule and Unroll("ow_i") in k.schedule
    np.testing.assert_allclose(run_loop_module(scheduled, feeds)[module.outputs[0]], ref,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(compile_module(scheduled).run(feeds)[module.outputs[0]], ref,
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- float32 gemm


def _gemm_case(trans_b: int, m: int):
    rng = np.random.default_rng(11 + m)
    a = rng.standard_normal((m, 19)).astype(np.float32)
    b = rng.standard_normal((32, 19) if trans_b else (19, 32)).astype(np.float32)
    c = rng.standard_normal(32).astype(np.float32)
    return "gemm", [a, b, c], dict(trans_b=trans_b, alpha=0.5, beta=2.0)


def _gemm_space():
    for oc_split, lanes, unroll_m, k_split in itertools.product(
            (None, 8, 5), (None, 4), (False, True), (None, 3)):
        if oc_split == 5 and lanes:  # a remainder's inner loop is not split again
            continue
        steps, tile, outer = [], [], ["m0"]
        name = "oc"
        if oc_split:
            steps.append(Split("oc", oc_split))
            outer.append("oc_o")
            name = "oc_i"
        if lanes:
            steps += [Split(name, lanes), Unroll(f"{name}_o"), Vectorize(f"{name}_i")]
            # the copies inside the vector loop; a peeled remainder's lanes must stay inside
            tile += [f"{name}_i", f"{name}_o"] if oc_split else [f"{name}_o", f"{name}_i"]
        else:
            steps.append(Vectorize(name))
            tile.append(name)
        if unroll_m:
            steps.append(Unroll("m0"))
            tile.append("m0")
            outer.remove("m0")
        reduce = ["k"]
        if k_split:
            steps.append(Split("k", k_split))
            reduce = ["k_o", "k_i"]
        steps.append(Reorder((*outer, *reduce, *tile)))
        yield tuple(steps)


@pytest.mark.parametrize("trans_b, m", [(1, 1), (0, 3)])
def test_every_gemm_schedule_is_within_tolerance(trans_b, m):
    module, feeds, ref = _lowered(*_gemm_case(trans_b, m))
    (k,) = module.kernels
    assert k.compute is not None and k.compute.reassociate
    count = 0
    for steps in _gemm_space():
        got = run_loop_module(_with_steps(module, steps), feeds)[module.outputs[0]]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=str(steps))
        count += 1
    assert count >= 20


def test_host_gemm_default_and_compiled(compile_module):
    """One row: several 16-lane vectors of output columns are the copies (independent
    accumulators); the transposed constant B is stored [K, N]."""
    from nnc.backends.target import host_target

    module, feeds, ref = _lowered(*_gemm_case(1, 1))
    ctx = PassContext(target=host_target(vector_isa="avx512f", vector_bits=512))
    scheduled = schedule(default_schedule(module, ctx), ctx)
    (k,) = scheduled.kernels
    assert Unroll("oc_o") in k.schedule and Vectorize("oc_i") in k.schedule
    np.testing.assert_allclose(compile_module(scheduled).run(feeds)[module.outputs[0]], ref,
                               rtol=1e-5, atol=1e-5)
    for steps in list(_gemm_space())[::6]:
        got = compile_module(_with_steps(module, steps)).run(feeds)[module.outputs[0]]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=str(steps))


def test_host_grouped_conv_packs_per_group(compile_module):
    """Constant grouped weights are stored [G, IC/G, KH, KW, OC/G]: the group is an axis (g) of
    its own, the channels within it the lanes."""
    from nnc.backends.target import host_target
    from nnc.ir.loops import Load, walk_expr

    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 6, 5, 6)).astype(np.float32)
    w = rng.standard_normal((24, 3, 3, 3)).astype(np.float32)
    module, feeds, ref = _lowered("conv", [x, w, rng.standard_normal(24).astype(np.float32)],
                                  dict(pads=[1, 0, 1, 2], group=2))
    ctx = PassContext(target=host_target(vector_isa="avx512f", vector_bits=512))
    scheduled = schedule(default_schedule(module, ctx), ctx)
    (k,) = scheduled.kernels
    assert [a.name for a in k.compute.axes][:3] == ["n", "g", "oc"]
    (wload,) = [e for e in walk_expr(k.compute.term)
                if isinstance(e, Load) and "packed" in e.buffer]
    assert [getattr(i, "name", None) for i in wload.indices] == ["g", "ic", "kh", "kw", "oc"]
    assert Vectorize("oc") in k.schedule  # 12 channels per group: one vector
    for m in (scheduled, _with_steps(module, ())):
        np.testing.assert_allclose(run_loop_module(m, feeds)[module.outputs[0]], ref,
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(compile_module(scheduled).run(feeds)[module.outputs[0]], ref,
                               rtol=1e-5, atol=1e-5)


def test_host_depthwise_copies_go_along_the_rows(compile_module):
    """A depthwise conv's input changes with the channel, its weight not with the row: the
    lanes go along the row, the unrolled copies along the output rows (one broadcast weight
    for all), the row partitioned, the rows guarded (fewer regions: half the C compile
    time); loop interpreter and compiled C match the reference."""
    from nnc.backends.target import host_target

    module, feeds, ref = _lowered(*_fconv_case("depthwise"))
    ctx = PassContext(target=host_target(vector_isa="avx512f", vector_bits=512))
    scheduled = schedule(default_schedule(module, ctx), ctx)
    (k,) = scheduled.kernels
    # 7 rows: all of them the copies (a longer plane splits them by up to 12)
    assert Vectorize("ow_i") in k.schedule and Unroll("oh") in k.schedule
    assert Partition("ow") in k.schedule and Partition("oh") not in k.schedule and not any(
        getattr(s, "loop", None) == "oc_i" for s in k.schedule)
    np.testing.assert_allclose(run_loop_module(scheduled, feeds)[module.outputs[0]], ref,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(compile_module(scheduled).run(feeds)[module.outputs[0]], ref,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c, h, w", [(5, 4, 34), (1, 3, 18)])
def test_host_dense_lanes_go_along_unpadded_rows(c, h, w, compile_module):
    """A dense conv on an unpadded row of >= 2 vectors (a 3x3 window), or of >= 1 vector with
    a short reduction (one input channel: 9 MACs per output), takes its lanes along the row
    and its copies along the output channels (contiguous stores); a padded row keeps the
    channel lanes. Loop interpreter and compiled C match the reference."""
    from nnc.backends.target import host_target

    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((16, c, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    ctx = PassContext(target=host_target(vector_isa="avx512f", vector_bits=512))
    for pads, along_row in (([0, 0, 0, 0], True), ([1, 1, 1, 1], False)):
        module, feeds, ref = _lowered("conv", [x, wt, bias], dict(pads=pads))
        scheduled = schedule(default_schedule(module, ctx), ctx)
        (k,) = scheduled.kernels
        lanes = [st.loop for st in k.schedule if isinstance(st, Vectorize)]
        assert lanes == ((["ow_i"] if w - 2 > 16 else ["ow"]) if along_row else ["oc"]), lanes
        np.testing.assert_allclose(run_loop_module(scheduled, feeds)[module.outputs[0]], ref,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(compile_module(scheduled).run(feeds)[module.outputs[0]],
                                   ref, rtol=1e-5, atol=1e-5)


def test_host_pointwise_copies_take_four_channel_vectors(compile_module):
    """A 1x1 conv with 4 vectors of output channels on AVX-512: each copy (an output column)
    is 4 vectors of channels (4 x 5 accumulators: 15 columns split evenly by 5), so each
    broadcast input serves 4 multiply-adds; loop interpreter and compiled C match."""
    from nnc.backends.target import host_target

    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 8, 2, 15)).astype(np.float32)
    wt = rng.standard_normal((64, 8, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)
    ctx = PassContext(target=host_target(vector_isa="avx512f", vector_bits=512))
    module, feeds, ref = _lowered("conv", [x, wt, bias], {})
    scheduled = schedule(default_schedule(module, ctx), ctx)
    (k,) = scheduled.kernels
    assert k.schedule[:3] == (Split("oc", 16), Unroll("oc_o"), Vectorize("oc_i"))
    assert Split("ow", 5) in k.schedule and Unroll("ow_i") in k.schedule
    np.testing.assert_allclose(run_loop_module(scheduled, feeds)[module.outputs[0]], ref,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(compile_module(scheduled).run(feeds)[module.outputs[0]], ref,
                               rtol=1e-5, atol=1e-5)


def test_overlapped_tail_is_one_whole_tile_ending_at_the_row_end(compile_module):
    """`OverlapTail`: a 13-wide row split by 4 runs 3 tiles and a 4th over columns 9..12 (no
    3-wide remainder); columns 9..11 are computed twice, the result is the reference's."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 3, 4, 13)).astype(np.float32)
    wt = rng.standard_normal((5, 3, 1, 1)).astype(np.float32)
    module, feeds, ref = _lowered("conv", [x, wt, rng.standard_normal(5).astype(np.float32)], {})
    steps = (Split("ow", 4), Vectorize("ow_i"), OverlapTail("ow_o"),
             Reorder(("n", "oc", "oh", "ow_o", "ic", "kh", "kw", "ow_i")))
    once = _with_steps(module, steps)
    text = format_module(once)
    assert "for %ow_i in 0..4 vectorized" in text and "0..1 vectorized" not in text
    assert "for %ow_o in 0..3" in text
    assert format_module(schedule(once, PassContext())) == text
    got = run_loop_module(once, feeds)[module.outputs[0]]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    got = compile_module(once).run(feeds)[module.outputs[0]]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("depthwise", [True, False])
@pytest.mark.parametrize("axis, factor", [("ow", 2), ("oh", 4)])
def test_guarded_tail_is_one_more_tile_with_its_stores_guarded(depthwise, axis, factor):
    """`GuardTail`: a padded row of 5 split by 2 (or 6 rows by 4) runs 3 (2) whole tiles in
    one loop and no peeled copy; the last tile's outputs past the end are not stored and its
    reads stay inside the padding guard, so the result is the reference's."""
    module, feeds, ref = _lowered(*_conv_case(depthwise, 1, -128))
    (other,) = [a for a in ("oh", "ow") if a != axis]
    steps = [Split(axis, factor), Unroll(f"{axis}_i"), GuardTail(f"{axis}_o")]
    if depthwise:  # Helium's form: 4 channel lanes, the copies inside the taps
        steps += [Split("oc", 4), Vectorize("oc_i"),
                  Reorder(("n", "oc_o", other, f"{axis}_o", "kh", "kw", f"{axis}_i", "oc_i"))]
    else:
        steps.append(Reorder(("n", "oc", other, f"{axis}_o", "kh", "kw", "ic", f"{axis}_i")))
    guarded = _with_steps(module, steps)
    text = format_module(guarded)
    extent = 5 if axis == "ow" else 6
    assert f"for %{axis}_o in 0..{-(-extent // factor)}" in text
    assert text.count(f"for %{axis}_o") == 1  # no peeled copy of the nest
    np.testing.assert_array_equal(run_loop_module(guarded, feeds)[module.outputs[0]], ref)


@pytest.mark.parametrize("w", [40, 64, 125])
def test_host_pointwise_lanes_along_a_long_row(w, compile_module):
    """A 1x1 conv whose row is at least 4 vectors (a plane `flatten-pointwise` made one row)
    puts the lanes along the row (contiguous stores) and the copies along the channels; a
    row that is no multiple of the lanes ends in an overlapped tile. Shorter rows keep the
    channel lanes."""
    from nnc.backends.target import host_target

    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 40, 1, w)).astype(np.float32)  # 40 MACs: no short reduction
    wt = rng.standard_normal((64, 40, 1, 1)).astype(np.float32)
    ctx = PassContext(target=host_target(vector_isa="avx512f", vector_bits=512))
    module, feeds, ref = _lowered("conv", [x, wt, rng.standard_normal(64).astype(np.float32)],
                                  {})
    scheduled = schedule(default_schedule(module, ctx), ctx)
    (k,) = scheduled.kernels
    if w < 64:
        assert k.schedule[:3] == (Split("oc", 16), Unroll("oc_o"), Vectorize("oc_i"))
    else:
        assert k.schedule[:2] == (Split("ow", 16), Vectorize("ow_i"))
        assert (OverlapTail("ow_o") in k.schedule) == (w % 16 != 0)
    np.testing.assert_allclose(run_loop_module(scheduled, feeds)[module.outputs[0]], ref,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(compile_module(scheduled).run(feeds)[module.outputs[0]], ref,
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- matmul (batched)


def _matmul_case(dtype: str):
    rng = np.random.default_rng(21)
    if dtype == "float32":  # batch dims broadcast: [2, 1, 3, 7] @ [3, 7, 24]
        a = rng.standard_normal((2, 1, 3, 7)).astype(np.float32)
        b = rng.standard_normal((3, 7, 24)).astype(np.float32)
        return "matmul", [a, b], {}
    a = rng.integers(0, 256, (2, 3, 9)).astype(np.uint8)
    b = rng.integers(-128, 128, (9, 16)).astype(np.int8)
    return "matmul_integer", [a, b, np.array(131, np.uint8),
                              rng.integers(-5, 5, 16).astype(np.int8)], {}


def _matmul_space(batch: tuple[str, ...]):
    """gemm's space with the batch axes outside, or one batch axis inside the tile."""
    for steps in _gemm_space():
        *rest, order = steps
        yield (*rest, Reorder((*batch, *order.loops)))
    yield (Unroll(batch[-1]), Vectorize("oc"), Reorder((*batch[:-1], "m0", "k", batch[-1], "oc")))


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_every_matmul_schedule_matches(dtype, compile_module):
    kind, inputs, attrs = _matmul_case(dtype)
    graph = single_op_graph(kind, inputs, attrs, (1, 2, 3) if dtype == "int32" else ())
    module = lower_to_loops(graph, PassContext())
    feeds = {n: inputs[i] for i, n in enumerate(module.inputs)}
    ref = np.asarray(get_op(kind).reference(list(inputs), Attrs.of(attrs))[0])
    (k,) = module.kernels
    batch = tuple(a.name for a in k.compute.spatial if a.name.startswith("b"))
    assert k.compute is not None and [a.name for a in k.compute.axes][-3:] == ["m0", "oc", "k"]
    space = list(_matmul_space(batch))
    for steps in space:
        got = run_loop_module(_with_steps(module, steps), feeds)[module.outputs[0]]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=str(steps))
    for steps in space[::8]:
        got = compile_module(_with_steps(module, steps)).run(feeds)[module.outputs[0]]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=str(steps))


# ---------------------------------------------------------------- pools and reductions


def _pool_cases():
    rng = np.random.default_rng(31)
    x = rng.standard_normal((1, 3, 9, 11)).astype(np.float32)
    x8 = _s8(rng, (1, 9, 11, 4))
    geometry = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1])
    return [
        ("max_pool", [x], dict(geometry, dilations=[1, 2], ceil_mode=1)),
        ("average_pool", [x], dict(geometry, ceil_mode=1, count_include_pad=0)),
        ("average_pool", [x], dict(geometry, ceil_mode=1, count_include_pad=1)),
        ("max_pool_s8", [x8], dict(geometry, layout="NHWC", ceil_mode=1, act_min=-100,
                                   act_max=127)),
        ("avg_pool_s8", [x8], dict(geometry, layout="NHWC", ceil_mode=1)),
        ("avg_pool_s8", [x8.transpose(0, 3, 1, 2).copy()], dict(geometry)),
    ]


def _window_space(axes):
    """Partitioned or vector rows, channels as copies or as lanes (NHWC), taps unrolled."""
    names = [a.name for a in axes]
    spatial = [n for n in names if n in ("n", "c", "oh", "ow")]
    yield ()
    yield (Partition("oh"), Partition("ow"))
    yield (Partition("ow"), Split("ow", 2), Vectorize("ow_i"),
           Reorder((*[n for n in spatial if n != "ow"], "ow_o", "kh", "kw", "ow_i")))
    yield (Split("c", 2), Unroll("c_i"), Unroll("kw"),
           Reorder((*[n if n != "c" else "c_o" for n in spatial], "kh", "kw", "c_i")))
    yield (Vectorize("c"), Reorder((*[n for n in spatial if n != "c"], "kh", "kw", "c")))
    yield (Split("oh", 2), Unroll("oh_i"), Split("kw", 2),
           Reorder((*[n if n != "oh" else "oh_o" for n in spatial], "kh", "kw_o", "oh_i",
                    "kw_i")))


@pytest.mark.parametrize("case", range(6))
def test_every_pool_schedule_matches(case, compile_module):
    kind, inputs, attrs = _pool_cases()[case]
    module, feeds, ref = _lowered(kind, inputs, attrs)
    (k,) = module.kernels
    assert k.compute is not None and k.compute.combine == ("max" if "max" in kind else "add")
    space = list(_window_space(k.compute.axes))
    for steps in space:
        got = run_loop_module(_with_steps(module, steps), feeds)[module.outputs[0]]
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6, err_msg=str(steps))
    for steps in space[1::2]:
        got = compile_module(_with_steps(module, steps)).run(feeds)[module.outputs[0]]
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6, err_msg=str(steps))


@pytest.mark.parametrize("kind, dtype", [("reduce_prod", "float32"), ("reduce_min", "int32"),
                                         ("reduce_max", "float32"), ("reduce_mean", "int32"),
                                         ("global_max_pool", "float32")])
def test_reduction_schedules_and_combines(kind, dtype, compile_module):
    """mul / min / max combines: every schedule of a small space matches, through the
    interpreter and the C, and the definition prints and parses back."""
    rng = np.random.default_rng(41)
    x = (rng.uniform(0.5, 1.5, (2, 8, 5)) if dtype == "float32"
         else rng.integers(-50, 50, (2, 8, 5))).astype(dtype)
    if kind == "global_max_pool":
        x, attrs = x.reshape(2, 8, 5, 1), {}
    else:
        attrs = dict(axes=(0, 2), keepdims=True)
    module, feeds, ref = _lowered(kind, [x], attrs)
    (k,) = module.kernels
    kept = [a.name for a in k.compute.spatial]
    red = [a.name for a in k.compute.reduced]
    space = [(), (Vectorize(kept[-1]), Reorder((*red, kept[-1]))),
             (Split(kept[-1], 4), Unroll(f"{kept[-1]}_i"), Split(red[-1], 2),
              Reorder((f"{kept[-1]}_o", *red[:-1], f"{red[-1]}_o", f"{red[-1]}_i",
                       f"{kept[-1]}_i")))]
    for steps in space:
        scheduled = _with_steps(module, steps)
        np.testing.assert_allclose(run_loop_module(scheduled, feeds)[module.outputs[0]], ref,
                                   rtol=1e-6, err_msg=str(steps))
        np.testing.assert_allclose(compile_module(scheduled).run(feeds)[module.outputs[0]], ref,
                                   rtol=1e-6, err_msg=str(steps))
        text = format_module(scheduled)
        assert format_module(parse_module(text)) == text
    combine = {"reduce_prod": "mul", "reduce_min": "min"}.get(kind, "max" if "max" in kind
                                                              else "add")
    assert f"combine={combine}" in format_module(module)


def test_host_pool_default_unrolls_the_taps(compile_module):
    """NCHW pools on the host: taps unrolled; padded axes partitioned (gcc vectorizes the
    guard-free row), else the row an accumulator array; both match the reference in C."""
    from nnc.backends.target import host_target

    ctx = PassContext(target=host_target(vector_isa="avx512f", vector_bits=512))
    for case, expected in ((0, (Partition("oh"), Partition("ow"), Unroll("kh"), Unroll("kw"))),
                           (1, (Vectorize("ow"), Unroll("kh"), Unroll("kw"),
                                Reorder(("n", "c", "oh", "kh", "kw", "ow"))))):
        kind, inputs, attrs = _pool_cases()[1]
        if case:
            attrs = dict(kernel_shape=[3, 3], strides=[2, 2])
        module, feeds, ref = _lowered(kind, inputs, attrs)
        scheduled = schedule(default_schedule(module, ctx), ctx)
        assert scheduled.kernels[0].schedule[:len(expected)] == expected
        np.testing.assert_allclose(compile_module(scheduled).run(feeds)[module.outputs[0]], ref,
                                   rtol=1e-6, atol=1e-6)


def test_host_pool_to_one_output_per_channel_is_a_global_pool(compile_module):
    """KWS's 24x5 average pool on 25x5: one output per channel, scheduled as a global pool
    (a vector of channels per pass over the window), the same sums as the reference."""
    from nnc.backends.target import host_target

    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 40, 25, 5)).astype(np.float32)
    ctx = PassContext(target=host_target(vector_isa="avx512f", vector_bits=512))
    module, feeds, ref = _lowered("average_pool", [x],
                                  dict(kernel_shape=[24, 5], strides=[24, 5]))
    scheduled = schedule(default_schedule(module, ctx), ctx)
    assert scheduled.kernels[0].schedule == (
        Split("c", 16), Vectorize("c_i"), Reorder(("n", "c_o", "kh", "kw", "c_i")))
    np.testing.assert_allclose(run_loop_module(scheduled, feeds)[module.outputs[0]], ref,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(compile_module(scheduled).run(feeds)[module.outputs[0]], ref,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["dense", "strided", "depthwise", "grouped"])
def test_every_integer_conv_schedule_is_bit_exact(kind, compile_module):
    """conv_integer (the NCHW integer conv shared with qlinear_conv and NCHW conv_s8) has the
    float conv's axes: a quarter of the float conv's schedule space, bit for bit."""
    _, (x, w, _), attrs = _fconv_case(kind)
    rng = np.random.default_rng(len(kind))
    xq = rng.integers(0, 256, x.shape).astype(np.uint8)
    wq = rng.integers(-128, 128, w.shape).astype(np.int8)
    inputs = [xq, wq, np.array(117, np.uint8), rng.integers(-4, 4, w.shape[0]).astype(np.int8)]
    graph = single_op_graph("conv_integer", inputs, attrs, (1, 2, 3))
    module = lower_to_loops(graph, PassContext())
    feeds = {module.inputs[0]: xq}
    ref = np.asarray(get_op("conv_integer").reference(inputs, Attrs.of(attrs))[0])
    space = list(_fconv_space(kind == "depthwise"))
    for steps in space[::4]:
        got = run_loop_module(_with_steps(module, steps), feeds)[module.outputs[0]]
        np.testing.assert_array_equal(got, ref, err_msg=str(steps))
    for steps in space[1::16]:
        got = compile_module(_with_steps(module, steps)).run(feeds)[module.outputs[0]]
        np.testing.assert_array_equal(got, ref, err_msg=str(steps))


def _flat_case():
    """A depthwise_flat op (flat-depthwise's form of a 3x3 depthwise conv on a 7x5 plane, pads
    1): the input row zero-padded by one row and one column at each end."""
    from nnc.ir.ops.nn import flat_plane_masks

    rng = np.random.default_rng(5)
    c, h, w = 3, 7, 5
    x = np.pad(rng.standard_normal((1, c, 1, h * w)).astype(np.float32),
               [(0, 0), (0, 0), (0, 0), (w + 1, w + 1)])
    wt = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    return "depthwise_flat", [x, wt, flat_plane_masks(h, w, 3, 1), bias], dict(width=w,
                                                                                 plane=h * w)


def _flat_space():
    """Lanes of 4 / 8 / 16 along the flat row (peeled, guarded or overlapped remainder), the
    row's vectors as unrolled copies inside or outside the taps, channel copies."""
    for lanes, tail, copies, taps_in, oc_split in itertools.product(
            (4, 8, 16), ("peel", "overlap"), (True, False), (True, False), (None, 3)):
        steps = [Split("ow", lanes), Vectorize("ow_i")]
        if tail == "overlap":
            steps.append(OverlapTail("ow_o"))
        if copies:
            steps.append(Unroll("ow_o"))
        outer, tile = ["n"], []
        if oc_split:
            steps += [Split("oc", oc_split), Unroll("oc_i")]
            outer.append("oc_o")
            tile.append("oc_i")
        else:
            outer.append("oc")
        outer.append("oh")
        if taps_in and tail == "overlap":  # a peeled remainder keeps its inner loop inside
            order = (*outer, "kh", "kw", "ow_i", "ow_o", *tile)
        else:
            order = (*outer, "ow_o", "kh", "kw", "ow_i", *tile)
        if taps_in and tail != "overlap":
            continue
        yield (*steps, Reorder(order))


def test_every_flat_depthwise_schedule_matches_the_reference(compile_module):
    """float: within 1e-5 of the numpy reference, through the interpreter for every schedule
    of the space and the compiled C for a sample."""
    module, feeds, ref = _lowered(*_flat_case())
    space = list(_flat_space())
    assert len(space) == 36
    for i, steps in enumerate(space):
        scheduled = _with_steps(module, steps)
        got = run_loop_module(scheduled, feeds)[module.outputs[0]]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=str(steps))
        if i % 6 == 0:
            got = compile_module(scheduled).run(feeds)[module.outputs[0]]
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=str(steps))
