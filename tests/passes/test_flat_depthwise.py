"""flat-depthwise: the `depthwise_flat` op (its numpy reference against the conv's), which convs
the pass rewrites and the graph it makes (verified, same values in the graph interpreter), the
schedule the host gives it, and compiled host models against onnxruntime over kernel sizes,
pads, planes and both vector widths."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.backends.target import host_target, parse_target
from nnc.compiler.pipeline import PIPELINES
from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.interp import run_graph
from nnc.ir.ops import get_op
from nnc.ir.ops.nn import flat_plane_masks
from nnc.ir.types import TensorType
from nnc.ir.verify import verify_graph
from nnc.passes.flat_depthwise import flat_depthwise
from nnc.passes.manager import PassContext

RNG = np.random.default_rng(0)


def _conv_attrs(c: int, k: tuple[int, int], pads: tuple[int, int, int, int],
                stride: int = 1) -> Attrs:
    return Attrs.of(strides=(stride, stride), pads=pads, dilations=(1, 1), group=c,
                    kernel_shape=k)


def dw_graph(c: int = 8, h: int = 25, w: int = 5, k: tuple[int, int] = (3, 3),
             pads: tuple[int, int, int, int] = (1, 1, 1, 1), stride: int = 1,
             weight_scale: float = 1.0, bias: bool = True,
             tail: tuple[str, ...] = ("relu",)) -> Graph:
    """x -> depthwise conv -> the `tail` ops ("relu", "mul_c": a multiply by a per-channel
    [C, 1, 1] constant, "add_x": an add of the graph input, which stays after the reshape)."""
    x = TensorType((1, c, h, w), "float32")
    consts = [Constant.of("w", (RNG.standard_normal((c, 1, *k)) * weight_scale)
                          .astype(np.float32)),
              Constant.of("s", RNG.standard_normal((c, 1, 1)).astype(np.float32))]
    if bias:
        consts.append(Constant.of("b", RNG.standard_normal(c).astype(np.float32)))
    types = {"x": x, **{k.name: k.value.type for k in consts}}
    specs = [("conv", ("x", "w", "b") if bias else ("x", "w"), _conv_attrs(c, k, pads, stride),
              "y0")]
    for i, t in enumerate(tail):
        src = specs[-1][3]
        ins = {"relu": (src,), "mul_c": (src, "s"), "add_x": (src, "x")}[t]
        specs.append(({"add_x": "add", "mul_c": "mul"}.get(t, t), ins, Attrs(), f"y{i + 1}"))
    ops = []
    for kind, ins, a, out in specs:
        t = get_op(kind).infer([types[n] for n in ins], a)[0]
        types[out] = t
        ops.append(Op(kind, ins, (Value(out, t),), a, name=out))
    last = specs[-1][3]
    # the graph's output is a view: the pass leaves a conv whose value is an output alone
    ident = Op("reshape", (last,), (Value("out", types[last]),),
               Attrs.of(shape=types[last].shape), name="out")
    return Graph("g", (Value("x", x),), (Value("out", types[last]),), tuple(consts),
                 (*ops, ident))


# the vector width decides the schedule, not the C (plain C, no intrinsics): both run anywhere
_AVX512 = replace(host_target(), vector_isa="avx512f", vector_bits=512)
_AVX2 = replace(host_target(), vector_isa="avx2", vector_bits=256)


def run_pass(g: Graph, target: object = _AVX512) -> Graph:
    tgt = parse_target(target) if isinstance(target, str) else target
    out = flat_depthwise(g, PassContext(None, tgt, {}))
    verify_graph(out)
    return out


@pytest.mark.parametrize("h, w, k, pads", [
    (25, 5, (3, 3), (1, 1, 1, 1)),
    (7, 6, (5, 5), (2, 2, 2, 2)),
    (9, 4, (3, 3), (0, 0, 2, 2)),      # rows lost at the top, columns kept by the right pad
    (6, 7, (3, 5), (1, 3, 1, 1)),      # asymmetric columns
    (5, 3, (1, 3), (0, 1, 0, 1)),
])
def test_reference_equals_the_conv(h: int, w: int, k: tuple[int, int],
                                   pads: tuple[int, int, int, int]) -> None:
    c = 3
    x = RNG.standard_normal((2, c, h, w)).astype(np.float32)
    wt = RNG.standard_normal((c, 1, *k)).astype(np.float32)
    b = RNG.standard_normal(c).astype(np.float32)
    conv = get_op("conv").reference([x, wt, b], _conv_attrs(c, k, pads))[0]
    oh = conv.shape[2]
    before, after = pads[0] * w + pads[1], pads[2] * w + pads[3]
    xp = np.pad(x.reshape(2, c, 1, h * w), [(0, 0)] * 3 + [(before, after)])
    m = flat_plane_masks(oh, w, k[1], pads[1])
    attrs = Attrs.of(width=w, plane=oh * w)
    types = [TensorType(a.shape, "float32") for a in (xp, wt, m, b)]
    assert get_op("depthwise_flat").infer(types, attrs)[0].shape == (2, c, 1, oh * w)
    got = get_op("depthwise_flat").reference([xp, wt, m, b], attrs)[0]
    np.testing.assert_allclose(got.reshape(conv.shape), conv, rtol=1e-5, atol=1e-5)


def test_masks_drop_the_neighbouring_rows_columns() -> None:
    m = flat_plane_masks(2, 3, 3, 1)
    assert m.tolist() == [[0, 1, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 0]]


def test_narrow_plane_runs_flat_with_its_epilogue() -> None:
    g = dw_graph(tail=("relu", "mul_c"))
    out = run_pass(g)
    kinds = [op.kind for op in out.ops]
    assert kinds == ["reshape", "pad", "depthwise_flat", "relu", "mul", "reshape", "reshape"]
    pad, conv = out.ops[1], out.ops[2]
    assert pad.attr("pads") == (0, 0, 0, 6, 0, 0, 0, 6)  # one row and one column each side
    assert pad.outputs[0].type.shape == (1, 8, 1, 137)
    assert conv.attr("width") == 5 and conv.attr("plane") == 125
    assert out.ops[4].outputs[0].type.shape == (1, 8, 1, 125)
    assert out.ops[5].outputs[0].name == "y2"
    x = RNG.standard_normal((1, 8, 25, 5)).astype(np.float32)
    np.testing.assert_allclose(run_graph(out, {"x": x})["out"], run_graph(g, {"x": x})["out"],
                               rtol=1e-5, atol=1e-5)


def test_an_add_of_another_tensor_stays_after_the_reshape() -> None:
    out = run_pass(dw_graph(tail=("relu", "add_x")))
    assert [op.kind for op in out.ops] == ["reshape", "pad", "depthwise_flat", "relu",
                                           "reshape", "add", "reshape"]


@pytest.mark.parametrize("why, graph", [
    ("stride 2", dw_graph(stride=2)),
    ("rows of 16: whole vectors already", dw_graph(h=6, w=16)),
    ("6x6: 3 vectors, measured slower flat", dw_graph(h=6, w=6)),
    ("25x12: 19 vectors, more than the registers", dw_graph(h=25, w=12)),
    ("the columns' padding narrows the row", dw_graph(pads=(1, 0, 1, 0))),
    ("0 * inf is not the skipped tap", dw_graph(weight_scale=np.inf)),
])
def test_left_alone(why: str, graph: Graph) -> None:
    assert run_pass(graph) is graph, why


def test_only_on_the_host_and_before_the_row_padding() -> None:
    g = dw_graph()
    assert run_pass(g, "cortex-m7") is g
    host = PIPELINES["host"]
    assert host.index("flat-depthwise") < host.index("pad-depthwise-rows")
    assert all("flat-depthwise" not in p for k, p in PIPELINES.items() if k != "host")


def _onnx_dw(c: int, h: int, w: int, k: tuple[int, int], pads: tuple[int, ...],
             bias: bool = True, clip: bool = False) -> tuple[object, np.ndarray]:
    wt = RNG.standard_normal((c, 1, *k)).astype(np.float32)
    inits = [numpy_helper.from_array(wt, "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(RNG.standard_normal(c).astype(np.float32), "b"))
        ins.append("b")
    nodes = [helper.make_node("Conv", ins, ["y0"], pads=list(pads), group=c,
                              kernel_shape=list(k))]
    if clip:
        inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(6, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", ["y0", "lo", "hi"], ["y1"]))
    else:
        nodes.append(helper.make_node("Relu", ["y0"], ["y1"]))
    # a 1x1 conv after it, as in KWS: the reshape back and the flattened pointwise conv's view
    inits.append(numpy_helper.from_array(RNG.standard_normal((4, c, 1, 1)).astype(np.float32),
                                         "pw"))
    nodes.append(helper.make_node("Conv", ["y1", "pw"], ["y"]))
    g = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, c, h, w])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    return model, RNG.standard_normal((1, c, h, w)).astype(np.float32)



@pytest.mark.parametrize("shape, k, pads, bias, clip, target", [
    ((16, 25, 5), (3, 3), (1, 1, 1, 1), True, False, _AVX512),      # KWS's layer
    ((8, 12, 12), (3, 3), (1, 1, 1, 1), True, True, _AVX512),       # VWW's 12x12, 9 vectors
    ((4, 16, 12), (3, 3), (1, 1, 1, 1), False, False, _AVX512),     # 12 vectors, no bias
    ((6, 10, 7), (5, 5), (2, 2, 2, 2), True, False, _AVX512),
    ((5, 11, 6), (3, 3), (0, 1, 2, 1), True, True, _AVX512),        # rows lost, asymmetric
    ((16, 8, 5), (3, 3), (1, 1, 1, 1), True, False, _AVX2),        # 8 lanes: 5 vectors
])
def test_compiled_matches_onnxruntime(shape, k, pads, bias, clip, target, tmp_path: Path
                                      ) -> None:
    import onnxruntime as ort

    import nnc

    model, x = _onnx_dw(*shape, k, pads, bias, clip)
    flat = nnc.compile(model, target=target, output_dir=tmp_path / "a", bench=False)
    ops = [layer["op"] for layer in flat.info["layers"]]
    assert any(op.startswith("depthwise_flat") for op in ops), ops
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    np.testing.assert_allclose(flat.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits, h, steps", [
    # KWS's plane: 8 vectors of 16 as unrolled copies inside the taps, the last overlapping
    (512, 25, ["Split(loop='ow', factor=16)", "Vectorize(loop='ow_i')",
               "OverlapTail(loop='ow_o')", "Unroll(loop='ow_o')",
               "Reorder(loops=('n', 'oc', 'oh', 'kh', 'kw', 'ow_i', 'ow_o'))"]),
    # 5 vectors of 8 on AVX2 (40 outputs: no remainder)
    (256, 8, ["Split(loop='ow', factor=8)", "Vectorize(loop='ow_i')", "Unroll(loop='ow_o')",
              "Reorder(loops=('n', 'oc', 'oh', 'kh', 'kw', 'ow_i', 'ow_o'))"]),
])
def test_the_schedule_keeps_the_row_in_registers(bits: int, h: int, steps: list[str]) -> None:
    """The default schedule of the flat conv, and the loop-IR interpreter's values under it."""
    from nnc.ir.loop_interp import run_loop_module
    from nnc.ir.loops import LoopModule
    from nnc.passes.manager import PassManager

    isa = {512: "avx512f", 256: "avx2"}[bits]
    target = replace(host_target(), vector_isa=isa, vector_bits=bits)
    g = run_pass(dw_graph(c=4, h=h), target)
    m = PassManager("fuse-ops,lower-to-loops,default-schedule,schedule", target=target).run(g)
    assert isinstance(m, LoopModule)
    (k,) = [k for k in m.kernels if k.op_kind.startswith("depthwise_flat")]
    assert [repr(s) for s in k.schedule] == steps
    x = RNG.standard_normal((1, 4, h, 5)).astype(np.float32)
    np.testing.assert_allclose(run_loop_module(m, {"x": x})["out"], run_graph(g, {"x": x})["out"],
                               rtol=1e-5, atol=1e-5)


def test_the_host_tuner_searches_it_and_its_default_is_a_point() -> None:
    """`nnc tune --target host` tunes depthwise_flat kernels: the host space (HostKnobs with an
    overlapped tail) holds the default; a sample of it computes the reference (interpreter)."""
    import random

    from nnc.compiler.tune.measure import HOST_KINDS
    from nnc.compiler.tune.space import HostScheduleSpace, space_for
    from nnc.ir.loop_interp import run_loop_module
    from nnc.ir.loops import LoopModule
    from nnc.passes.default_schedule import reduction_steps
    from nnc.passes.manager import PassManager
    from nnc.passes.schedule import schedule

    assert "depthwise_flat" in HOST_KINDS
    g = run_pass(dw_graph(c=4), _AVX512)
    m = PassManager("fuse-ops,lower-to-loops", target=_AVX512).run(g)
    assert isinstance(m, LoopModule)
    (k,) = [k for k in m.kernels if k.op_kind.startswith("depthwise_flat")]
    shapes = {b.name: b.shape for b in m.buffers}
    space = space_for(k.compute, shapes, _AVX512)
    assert isinstance(space, HostScheduleSpace)
    points = [steps for _, steps in space.enumerate()]
    assert reduction_steps(k.compute, _AVX512, shapes) in points and len(points) >= 100
    x = RNG.standard_normal((1, 4, 25, 5)).astype(np.float32)
    want = run_graph(g, {"x": x})["out"]
    for steps in random.Random(0).sample(points, 6):
        kernels = tuple(q.replace(schedule=steps) if q is k else q for q in m.kernels)
        scheduled = schedule(m.replace(kernels=kernels), PassContext())
        np.testing.assert_allclose(run_loop_module(scheduled, {"x": x})["out"], want,
                                   rtol=1e-5, atol=1e-5, err_msg=str(steps))
