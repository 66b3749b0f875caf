"""The tuner's schedule space (nnc.compiler.tune.space): the default schedule is a point of it
on every target, every point is legal and computes the reference's bits, features have a fixed
length; schedules print and parse back (nnc.ir.loop_parser.parse_schedule)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nnc.backends.target import cortex_m7, cortex_m55
from nnc.compiler.tune.features import feature_names, features
from nnc.compiler.tune.space import Knobs, ScheduleSpace, schedule_text
from nnc.ir.compute import ComputeError
from nnc.ir.graph import Attrs
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loop_parser import parse_schedule
from nnc.ir.loops import Intrinsic, Reorder, Split, Unroll
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
    "depthwise": _conv(8, 8, 3, [1, 1, 1, 1], group=8),
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


def test_schedules_print_and_parse_back():
    steps = (Split("oc", 4), Unroll("oc_i"), Split("ic", 4), Intrinsic("dot4_s8", "ic_i"),
             Reorder(("n", "oh", "ow", "oc_o", "kh", "kw", "ic_o", "oc_i", "ic_i")))
    assert parse_schedule(schedule_text(steps)) == steps
    assert parse_schedule("[]") == ()
    _, k, shapes, _, _ = _lowered(*CASES["dense3x3"])
    for _, s in ScheduleSpace(k.compute, shapes, cortex_m7()).sample(random.Random(2), 10):
        assert parse_schedule(schedule_text(s)) == s
