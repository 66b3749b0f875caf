"""The tuner's schedule space (nnc.compiler.tune.space): the default schedule is a point of it
on every target, every point is legal and computes the reference's bits, features have a fixed
length; schedules print and parse back (nnc.ir.loop_parser.parse_schedule)."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from nnc.backends.target import cortex_m7, cortex_m55
from nnc.compiler.tune.features import feature_names, features
from nnc.compiler.tune.space import Knobs, ScheduleSpace, schedule_text
from nnc.ir.compute import ComputeError, plan
from nnc.ir.graph import Attrs
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loop_parser import parse_schedule
from nnc.ir.loops import GuardTail, Intrinsic, Reorder, Split, Unroll, Widen
from nnc.ir.ops import get_op
from nnc.ir.ops.int8 import quantize_multiplier
from nnc.passes.default_schedule import reduction_steps
from nnc.passes.lower_to_loops import lower_to_loops
from nnc.passes.manager import PassContext
from nnc.passes.schedule import schedule
from nnc.testing import single_op_graph


def _s8(rng, shape, lo=-128):
    return rng.integers(lo, 128, shape).astype(np.int8)


def _conv(c, oc, k, pads, group=1, hw=(6, 5), stride=1, zp=-128):
    rng = np.random.default_rng(c * 31 + oc + k)
    x = _s8(rng, (1, *hw, c))
    w = _s8(rng, (1, k, k, oc) if group > 1 else (oc, k, k, c), lo=-127)
    pairs = [quantize_multiplier(float(r)) for r in rng.uniform(2e-4, 4e-3, oc)]
    mult = np.array([m for m, _ in pairs], np.int32)
    shift = np.array([s for _, s in pairs], np.int32)
    bias = rng.integers(-3000, 3000, oc).astype(np.int32)
    attrs = dict(layout="NHWC", pads=pads, strides=[stride, stride], group=group,
                 input_zero_point=zp, output_zero_point=-5, act_min=-128, act_max=127)
    return "conv_s8", [x, w, mult, shift, bias], attrs


def _fc(depth=32, oc=6):
    rng = np.random.default_rng(3)
    pairs = [quantize_multiplier(float(r)) for r in rng.uniform(2e-4, 4e-3, oc)]
    return "fully_connected_s8", [
        _s8(rng, (1, depth)), _s8(rng, (oc, depth), lo=-127),
        np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32),
        rng.integers(-900, 900, oc).astype(np.int32)], dict(
        input_zero_point=-3, weight_zero_point=0, output_zero_point=4)


CASES = {
    "dense3x3": _conv(8, 8, 3, [1, 1, 1, 1]),
    # Helium: 2 dot16 calls along the channels, unrolled outside the channel tile (the default)
    "dense3x3-32": _conv(32, 8, 3, [1, 1, 1, 1]),
    "depthwise": _conv(8, 8, 3, [1, 1, 1, 1], group=8),
    # Helium: 9 rows of 2 pixel copies, the last row a guarded whole tile, the row taps unrolled
    "depthwise-odd": _conv(8, 8, 3, [1, 1, 1, 1], group=8, hw=(9, 5)),
    "pointwise": _conv(16, 8, 1, [0, 0, 0, 0]),
    "first-layer": _conv(1, 8, 3, [1, 1, 1, 1], hw=(7, 6), stride=2, zp=1),
    "fc": _fc(),
}


def _lowered(kind, inputs, attrs):
    graph = single_op_graph(kind, inputs, attrs, (1, 2, 3, 4))
    module = lower_to_loops(graph, PassContext())
    ref = get_op(kind).reference(list(inputs), Attrs.of(attrs))
    (k,) = [k for k in module.kernels if k.compute is not None]
    shapes = {b.name: b.shape for b in module.buffers}
    return module, k, shapes, {module.inputs[0]: inputs[0]}, np.asarray(ref[0])


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("target", [cortex_m7(), cortex_m55()],
                         ids=["m7", "m55"])
def test_the_default_schedule_is_in_the_space(case, target):
    _, k, shapes, _, _ = _lowered(*CASES[case])
    space = ScheduleSpace(k.compute, shapes, target)
    default = reduction_steps(k.compute, target, shapes)
    points = {steps for _, steps in space.enumerate()}
    assert default in points
    assert len(points) >= 20


@pytest.mark.parametrize("case", ["dense3x3", "depthwise", "first-layer", "fc"])
def test_sampled_schedules_compute_the_reference(case):
    """A random sample of each space through the loop-IR interpreter, bit for bit."""
    module, k, shapes, feeds, ref = _lowered(*CASES[case])
    space = ScheduleSpace(k.compute, shapes, cortex_m7())
    sample = space.sample(random.Random(1), 6)
    assert len(sample) == 6
    for _, steps in sample:
        kernels = tuple(x.replace(schedule=steps) if x is k else x for x in module.kernels)
        got = run_loop_module(schedule(module.replace(kernels=kernels), PassContext()), feeds)
        np.testing.assert_array_equal(got[module.outputs[0]], ref, err_msg=str(steps))
        assert len(features(k.compute, steps, shapes)) == len(feature_names())


def test_illegal_knobs_are_not_points():
    _, k, shapes, _, _ = _lowered(*CASES["depthwise"])
    space = ScheduleSpace(k.compute, shapes, cortex_m7())
    # a depthwise conv has no channel reduce axis for the dot intrinsic
    assert space.steps_of(Knobs(lanes=("ic", "dot4_s8", 4))) is None
    with pytest.raises(ComputeError):
        Knobs(order=("kh",)).steps(k.compute)  # not a permutation of kh, kw
    assert all(space.legal(s) for _, s in space.sample(random.Random(0), 20))
    # host: no dot intrinsics in the space
    _, k2, shapes2, _, _ = _lowered(*CASES["pointwise"])
    host = ScheduleSpace(k2.compute, shapes2, None)
    assert not any(isinstance(st, Intrinsic) for _, s in host.enumerate() for st in s)


def test_helium_depthwise_knobs_compute_the_reference():
    """On the M55 a depthwise conv's space has pixel copies along any output axis (with that
    axis partitioned before its split) and the taps unrolled whole: the default's point, and a
    sample of the points that turn those knobs, give the reference's bits."""
    module, k, shapes, feeds, ref = _lowered(*CASES["depthwise"])
    space = ScheduleSpace(k.compute, shapes, cortex_m55())
    knobs = Knobs(oc_tile=4, tile="vectorized", row_tile=2, row_axis="oh",
                  partition=("ow",), oc_outer=True)
    steps = space.steps_of(knobs)
    assert steps == reduction_steps(k.compute, cortex_m55(), shapes)
    assert space.steps_of(Knobs(unroll_taps=True, lanes=("kw", "unroll", 0))) is None
    turned = [(kn, s) for kn, s in space.sample(random.Random(4), 60)
              if kn.unroll_taps or kn.row_axis][:6]
    assert len(turned) >= 4
    for _, s in [(knobs, steps), *turned]:
        kernels = tuple(x.replace(schedule=s) if x is k else x for x in module.kernels)
        got = run_loop_module(schedule(module.replace(kernels=kernels), PassContext()), feeds)
        np.testing.assert_array_equal(got[module.outputs[0]], ref, err_msg=str(s))


def test_helium_guarded_tail_is_a_knob():
    """A depthwise conv with an odd number of rows: the M55 default runs the rows' remainder
    as a guarded whole tile (`GuardTail`), a point of the space; points with and without it
    give the reference's bits; where the rows divide, the knob is no point."""
    module, k, shapes, feeds, ref = _lowered(*CASES["depthwise-odd"])
    space = ScheduleSpace(k.compute, shapes, cortex_m55())
    knobs = Knobs(oc_tile=4, tile="vectorized", row_tile=2, row_axis="oh",
                  partition=("ow",), oc_outer=True, guard_tail=True)
    steps = space.steps_of(knobs)
    assert steps == reduction_steps(k.compute, cortex_m55(), shapes)
    assert GuardTail("oh_o") in steps
    assert space.steps_of(Knobs(row_tile=3, row_axis="oh", guard_tail=True)) is None
    assert space.steps_of(Knobs(guard_tail=True)) is None
    peeled = space.steps_of(replace(knobs, guard_tail=False))
    assert peeled is not None and GuardTail("oh_o") not in peeled
    for s in (steps, peeled):
        kernels = tuple(x.replace(schedule=s) if x is k else x for x in module.kernels)
        got = run_loop_module(schedule(module.replace(kernels=kernels), PassContext()), feeds)
        np.testing.assert_array_equal(got[module.outputs[0]], ref, err_msg=str(s))


def test_schedules_print_and_parse_back():
    steps = (Split("oc", 4), Unroll("oc_i"), Split("ic", 4), Intrinsic("dot4_s8", "ic_i"),
             Reorder(("n", "oh", "ow", "oc_o", "kh", "kw", "ic_o", "oc_i", "ic_i")))
    assert parse_schedule(schedule_text(steps)) == steps
    guarded = (Split("oh", 2), Unroll("oh_i"), GuardTail("oh_o"), Unroll("kh"))
    assert parse_schedule(schedule_text(guarded)) == guarded
    assert parse_schedule("[]") == ()
    _, k, shapes, _, _ = _lowered(*CASES["dense3x3"])
    for _, s in ScheduleSpace(k.compute, shapes, cortex_m7()).sample(random.Random(2), 10):
        assert parse_schedule(schedule_text(s)) == s


def _widened(case, oc_tile=4, copies=1):
    _, k, shapes, _, _ = _lowered(*CASES[case])
    axis = "k" if case == "fc" else "ic"
    return k, shapes, Knobs(oc_tile=oc_tile, lanes=(axis, "dot4_s8s16", 4), lane_copies=copies)


@pytest.mark.parametrize("case,copies", [("fc", 1), ("fc", 2), ("fc", 4), ("pointwise", 2),
                                         ("dense3x3", 1)])
def test_widened_weights_and_lane_copies_compute_the_reference(case, copies):
    """int16 weights (`Widen` + dot4_s8s16) and unrolled copies of the intrinsic along its
    reduce axis: the interpreter's bits equal the reference's, and the schedule pass stores
    the weights as int16 with the same values."""
    module, k, shapes, feeds, ref = _lowered(*CASES[case])
    space = ScheduleSpace(k.compute, shapes, cortex_m7())
    knobs = _widened(case, copies=copies)[2]
    steps = space.steps_of(knobs)
    assert steps is not None and steps[0] == Widen("w", "int16")
    (intr,) = [s for s in steps if isinstance(s, Intrinsic)]
    assert intr.name == "dot4_s8s16"
    if copies > 1:  # the copies' loop is unrolled around the intrinsic's
        assert Unroll(intr.loop[:-1] + "o") in steps
    kernels = tuple(x.replace(schedule=steps) if x is k else x for x in module.kernels)
    scheduled = schedule(module.replace(kernels=kernels), PassContext())
    got = run_loop_module(scheduled, feeds)
    np.testing.assert_array_equal(got[module.outputs[0]], ref, err_msg=str(steps))
    w = dict(k.compute.operands)["w"]
    wide = {b.name: b for b in scheduled.buffers}[f"{w}_int16"]
    assert wide.dtype == "int16" and wide.scope == "constant"
    np.testing.assert_array_equal(scheduled.constants[wide.name], module.constants[w])
    assert w not in scheduled.constants  # no kernel reads the int8 copy any more
    assert features(k.compute, steps, shapes)[feature_names().index("widened_operand")] == 1.0
    assert parse_schedule(schedule_text(steps)) == steps


def test_widening_and_lane_copies_are_checked():
    k, shapes, knobs = _widened("fc")
    space = ScheduleSpace(k.compute, shapes, cortex_m7())
    # the int16 intrinsic on the int8 weights (no Widen step) is not legal
    steps = space.steps_of(knobs)
    assert steps is not None
    with pytest.raises(ComputeError, match=r"int32\(int8\) \* int32\(int16\)"):
        plan(k.compute, steps[1:], shapes)
    with pytest.raises(ComputeError, match="cannot be widened"):
        plan(k.compute, (Widen("w", "float32"),), shapes)
    with pytest.raises(ComputeError, match="no operand 'x'"):
        plan(k.compute, (Widen("x", "int16"),), shapes)
    # copies must tile the axis (depth 32: 8 x 4 does, 16 x 4 does not)
    assert space.steps_of(Knobs(lanes=("k", "dot4_s8", 4), lane_copies=8)) is not None
    with pytest.raises(ComputeError, match="do not tile"):
        Knobs(lanes=("k", "dot4_s8", 4), lane_copies=16).steps(k.compute, shapes)
    # an FC's single row: the channel loop has no pixels to go outside of
    assert space.knobs_ranges()["oc_outer"] == [False]
    # Helium's dot16_s8 covers the dense reductions on the M55: no int16 weights there
    assert "dot4_s8s16" not in ScheduleSpace(k.compute, shapes, cortex_m55()).intrinsics
    assert "dot4_s8s16" in space.intrinsics


def test_sample_finds_the_last_points_of_a_nearly_used_up_space():
    """A resumed tune asks for the few points left: random draws miss them, the walk does not
    (test_kill_9_loses_only_trials_in_flight once stopped at 39 of 40 trials)."""
    import warnings

    from nnc.compiler.tune.measure import prepare
    from nnc.compiler.tune.space import space_for
    from tests.test_tune_cache import tiny_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare(tiny_model(), "cortex-m7", quantize="int8", calibration="random")
    w = next(w for w in prep.workloads if w.kind == "avg_pool_s8")
    space = space_for(w.defn, w.shapes, prep.target)
    texts = [schedule_text(s) for _, s in space.enumerate()]
    left = set(texts[-2:])
    got = space.sample(random.Random(0), 5, exclude=set(texts) - left, tries=1)
    assert {schedule_text(s) for _, s in got} == left
    assert space.sample(random.Random(0), 3, exclude=set(texts)) == []


def _add_s8(shape=(1, 4, 8, 24)):
    rng = np.random.default_rng(8)
    attrs = dict(a_zero_point=-128, b_zero_point=17, output_zero_point=-9,
                 a_multiplier=1412189663, a_shift=-1, b_multiplier=1073741824, b_shift=0,
                 output_multiplier=1306468280, output_shift=-18, act_min=-100, act_max=120)
    return "add_s8", [_s8(rng, shape), _s8(rng, shape)], attrs


@pytest.mark.parametrize("target", [cortex_m7(), cortex_m55()], ids=["m7", "m55"])
def test_elementwise_space_holds_the_default_and_computes_the_reference(target):
    """add_s8's space (`ElementwiseSpace`): the default schedule is a point, every point is
    legal, distinct, and computes the reference's bits in the loop-IR interpreter."""
    from nnc.compiler.tune.space import ElementwiseKnobs, ElementwiseSpace, space_for

    kind, inputs, attrs = _add_s8()
    graph = single_op_graph(kind, inputs, attrs, (1, 2, 3, 4))
    module = lower_to_loops(graph, PassContext())
    ref = get_op(kind).reference(list(inputs), Attrs.of(attrs))[0]
    (k,) = [k for k in module.kernels if k.compute is not None]
    shapes = {b.name: b.shape for b in module.buffers}
    space = space_for(k.compute, shapes, target)
    assert isinstance(space, ElementwiseSpace)
    points = [steps for _, steps in space.enumerate()]
    default = reduction_steps(k.compute, target, shapes)
    assert default == ElementwiseKnobs().steps(k.compute) and default in points
    # lanes whole or split by 4, 8, 16, or no lanes; 1, 2 or 4 copies of the next axis
    assert len(points) == len(set(points)) == (4 + 1) * 3
    feeds = {module.inputs[0]: inputs[0]}  # b is a constant of the graph
    for _, steps in space.sample(random.Random(2), 6):
        kernels = tuple(x.replace(schedule=steps) if x is k else x for x in module.kernels)
        got = run_loop_module(schedule(module.replace(kernels=kernels), PassContext()), feeds)
        np.testing.assert_array_equal(got[module.outputs[0]], ref, err_msg=str(steps))
        assert len(features(k.compute, steps, shapes)) == len(feature_names())


def test_helium_3x3_convs_unroll_their_dot_calls_along_the_channels():
    """Helium's default for a 3x3 conv of 32 input channels: the two dot16 calls per tap
    unrolled (straight-line VMLADAVAs), their loop outside the channel tile; a 1x1 conv keeps
    the loop (unrolled it measured worse)."""
    from nnc.ir.loops import Unroll

    _, k, shapes, _, _ = _lowered(*CASES["dense3x3-32"])
    steps = reduction_steps(k.compute, cortex_m55(), shapes)
    assert Unroll("ic_o") in steps and Intrinsic("dot16_s8", "ic_i") in steps
    # the channel groups outermost (m55kws: dot16 convs' default)
    assert steps[-1] == Reorder(("oc_o", "n", "oh", "ow", "kh", "kw", "ic_o", "oc_i", "ic_i"))
    assert Knobs(oc_tile=4, tile="vectorized", lanes=("ic", "dot16_s8", 16),
                 partition=("oh", "ow"), lane_copies=2, copies_outer=True,
                 oc_outer=True).steps(
        k.compute, shapes) == steps
    _, k1, shapes1, _, _ = _lowered(*_conv(32, 8, 1, [0, 0, 0, 0]))
    assert Unroll("ic_o") not in reduction_steps(k1.compute, cortex_m55(), shapes1)
