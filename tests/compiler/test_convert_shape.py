"""ONNX shape/data-movement and reduction converters: nnc (graph interpreter and lowered loop
nests) against onnxruntime on 1-node models, per op, opset and attribute variant."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.compiler.errors import NncError
from nnc.compiler.onnx.importer import import_model
from nnc.compiler.onnx.registry import ConversionError
from nnc.compiler.onnx.shape import resolve_reshape
from nnc.ir.interp import run_graph
from nnc.ir.loop_interp import run_loop_module
from nnc.passes.lower_to_loops import lower_to_loops
from nnc.passes.manager import PassContext
from nnc.testing import assert_close

RNG = np.random.default_rng(0)
INT_MAX = 2**63 - 1


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _model(node: onnx.NodeProto, feeds: dict, inits: dict, opset: int) -> onnx.ModelProto:
    inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in feeds.items()
    ]
    outputs = [onnx.ValueInfoProto(name=o) for o in node.output if o]
    init = [numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()]
    g = helper.make_graph([node], "g", inputs, outputs, init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def check(node: onnx.NodeProto, feeds: dict, inits: dict | None = None, opset: int = 13,
          rtol: float = 1e-5, atol: float = 1e-6, loops: bool = True) -> list[np.ndarray]:
    """Run the 1-node model in onnxruntime and in nnc; every output must agree."""
    m = _model(node, feeds, inits or {}, opset)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, feeds)
    graph = import_model(m)
    got = run_graph(graph, feeds)
    names = [o for o in node.output if o]
    for name, v, exp in zip(names, graph.outputs, expected, strict=True):
        assert_close(got[v.name], exp, rtol, atol, f"{node.op_type} {name} (graph interpreter)")
    if loops:
        module = lower_to_loops(graph, PassContext())
        bound = zip(module.inputs, module.input_names, strict=True)
        res = run_loop_module(module, {b: feeds[n] for b, n in bound})
        for name, b, exp in zip(names, module.outputs, expected, strict=True):
            assert_close(res[b], exp, rtol, atol, f"{node.op_type} {name} (loop nest)")
    return expected


def op_kinds(node: onnx.NodeProto, feeds: dict, inits: dict | None = None,
             opset: int = 13) -> list[str]:
    return [op.kind for op in import_model(_model(node, feeds, inits or {}, opset)).ops]


def i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


# ---------------------------------------------------------------- reshape family


@pytest.mark.parametrize("shape,allowzero,opset", [
    ((0, -1), 0, 13), ((4, 0, 2), 0, 13), ((-1,), 0, 7), ((2, 3, 4), 1, 14), ((4, -1, 2), 0, 19),
])
def test_reshape(shape, allowzero, opset):
    node = helper.make_node("Reshape", ["x", "s"], ["y"], **({"allowzero": allowzero}
                                                             if opset >= 14 else {}))
    feeds = {"x": _f32(2, 3, 4)}
    check(node, feeds, {"s": i64(*shape)}, opset)
    assert op_kinds(node, feeds, {"s": i64(*shape)}, opset) == ["reshape"]


def test_reshape_errors():
    node = helper.make_node("Reshape", ["x", "s"], ["y"])
    with pytest.raises(NncError, match="cannot be viewed|cannot infer|incompatible"):
        import_model(_model(node, {"x": _f32(2, 3)}, {"s": i64(4, -1)}, 13))
    with pytest.raises(ConversionError, match="more than one -1"):
        resolve_reshape((2, 3), (-1, -1), False)
    with pytest.raises(ConversionError, match="cannot infer -1"):
        resolve_reshape((2, 3), (4, -1), False)
    with pytest.raises(ConversionError, match="0 at position 2"):
        resolve_reshape((2, 3), (1, 1, 0), False)
    assert resolve_reshape((2, 0, 3), (0, 3, 0), True) == [0, 3, 0]
    m = _model(node, {"x": _f32(2, 3), "s": i64(3, 2)}, {}, 13)
    with pytest.raises(NncError, match="compile-time constant"):
        import_model(m)


@pytest.mark.parametrize("axis,opset", [(0, 9), (1, 9), (3, 13), (-2, 13), (4, 13)])
def test_flatten(axis, opset):
    check(helper.make_node("Flatten", ["x"], ["y"], axis=axis), {"x": _f32(2, 3, 2, 2)},
          opset=opset)


@pytest.mark.parametrize("axes,opset", [(None, 11), ([1, -1], 11), (None, 13), ([-1, 1], 13)])
def test_squeeze(axes, opset):
    feeds = {"x": _f32(2, 1, 3, 1)}
    if opset < 13:
        node = helper.make_node("Squeeze", ["x"], ["y"], **({"axes": axes} if axes else {}))
        check(node, feeds, opset=opset)
    elif axes is None:
        check(helper.make_node("Squeeze", ["x"], ["y"]), feeds, opset=opset)
    else:
        check(helper.make_node("Squeeze", ["x", "a"], ["y"]), feeds, {"a": i64(*axes)}, opset)


def test_squeeze_non_unit_axis_rejected():
    node = helper.make_node("Squeeze", ["x", "a"], ["y"])
    with pytest.raises(NncError, match="not of size 1|must be 1"):
        import_model(_model(node, {"x": _f32(2, 1)}, {"a": i64(0)}, 13))


@pytest.mark.parametrize("axes,opset", [([0, 3], 11), ([-1, 1], 11), ([0, -1], 13), ([2], 21)])
def test_unsqueeze(axes, opset):
    feeds = {"x": _f32(2, 3)}
    if opset < 13:
        check(helper.make_node("Unsqueeze", ["x"], ["y"], axes=axes), feeds, opset=opset)
    else:
        check(helper.make_node("Unsqueeze", ["x", "a"], ["y"]), feeds, {"a": i64(*axes)}, opset)


def test_identity_and_dropout():
    feeds = {"x": _f32(2, 3)}
    check(helper.make_node("Identity", ["x"], ["y"]), feeds)
    # onnxruntime < opset 12 returns an all-false mask; the ONNX reference and opset >= 12: all-true
    for opset, dtype in ((7, np.float32), (10, np.bool_)):
        node = helper.make_node("Dropout", ["x"], ["y", "m"], ratio=0.3)
        graph = import_model(_model(node, feeds, {}, opset))
        got = run_graph(graph, feeds)
        assert_close(got[graph.outputs[0].name], feeds["x"], 0, 0)
        assert_close(got[graph.outputs[1].name], np.ones((2, 3), dtype), 0, 0)
    check(helper.make_node("Dropout", ["x", "r"], ["y", "m"]), feeds,
          {"r": np.array(0.5, np.float32)}, opset=13)
    check(helper.make_node("Dropout", ["x", "r", "t"], ["y"]), feeds,
          {"r": np.array(0.5, np.float32), "t": np.array(False)}, opset=13)
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y"])
    with pytest.raises(NncError, match="training_mode"):
        import_model(_model(node, feeds, {"r": np.array(0.5, np.float32), "t": np.array(True)},
                            13))
    with pytest.raises(NncError, match="training_mode"):  # the default ratio is 0.5
        import_model(_model(helper.make_node("Dropout", ["x", "", "t"], ["y"]), feeds,
                            {"t": np.array(True)}, 13))


def test_dropout_training_with_zero_ratio_is_identity():
    feeds = {"x": _f32(2, 3)}
    inits = {"r": np.array(0.0, np.float32), "t": np.array(True)}
    y, mask = check(helper.make_node("Dropout", ["x", "r", "t"], ["y", "m"], seed=0), feeds,
                    inits, opset=13)
    assert mask.all()
    check(helper.make_node("Dropout", ["x", "r", "t"], ["y"]), feeds, inits, opset=12)


# ---------------------------------------------------------------- transpose, concat, split


@pytest.mark.parametrize("perm", [None, (0, 2, 1), (2, 0, 1)])
def test_transpose(perm):
    node = helper.make_node("Transpose", ["x"], ["y"], **({"perm": perm} if perm else {}))
    check(node, {"x": _f32(2, 3, 4)})


@pytest.mark.parametrize("axis,opset", [(1, 7), (-1, 13), (0, 13)])
def test_concat(axis, opset):
    feeds = {"a": _f32(2, 3, 2), "b": _f32(2, 3, 2)}
    check(helper.make_node("Concat", ["a", "b", "c"], ["y"], axis=axis), feeds,
          {"c": _f32(2, 3, 2)}, opset)


def test_concat_uneven_int():
    feeds = {"a": np.arange(6, dtype=np.int32).reshape(2, 3), "b": np.ones((2, 1), np.int32)}
    check(helper.make_node("Concat", ["a", "b"], ["y"], axis=1), feeds)


def test_split_forms():
    x = _f32(2, 6)
    check(helper.make_node("Split", ["x"], ["a", "b"], axis=1), {"x": x}, opset=11)
    check(helper.make_node("Split", ["x"], ["a", "b", "c"], axis=-1, split=[1, 2, 3]),
          {"x": x}, opset=11)
    check(helper.make_node("Split", ["x", "s"], ["a", "b"], axis=1), {"x": x},
          {"s": i64(4, 2)}, opset=13)
    check(helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1), {"x": x}, opset=13)
    # opset 18 num_outputs: chunks of ceil(7/3)=3, last one smaller
    check(helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3),
          {"x": _f32(2, 7)}, opset=18)
    check(helper.make_node("Split", ["x"], ["a", "b"], axis=0, num_outputs=2),
          {"x": _f32(5, 2)}, opset=18)


# ---------------------------------------------------------------- slice


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ((1, 0), (3, INT_MAX), None, None),
    ((-1,), (-INT_MAX,), (1,), (-1,)),
    ((10, -2), (-10, 0), (2, 1), (-2, -1)),
    ((0, 1), (INT_MAX, 100), (-1, 0), (3, 1)),
    ((5,), (1,), (0,), (1,)),  # empty
])
def test_slice(starts, ends, axes, steps):
    inits = {"s": i64(*starts), "e": i64(*ends)}
    names = ["x", "s", "e"]
    if axes is not None:
        inits["a"] = i64(*axes)
        names.append("a")
    if steps is not None:
        if axes is None:
            names.append("")
        inits["t"] = i64(*steps)
        names.append("t")
    check(helper.make_node("Slice", names, ["y"]), {"x": _f32(3, 4, 5)}, inits)


def test_slice_attr_form_opset9():
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1, -3], ends=[1000, -1], axes=[0, 2])
    check(node, {"x": _f32(3, 4, 5)}, opset=9)


# ---------------------------------------------------------------- gather


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_runtime_indices(axis):
    x = _f32(3, 4, 5)
    n = x.shape[axis]
    ind = np.array([[0, -1], [n - 1, -n], [1, 1]], np.int64)
    check(helper.make_node("Gather", ["x", "i"], ["y"], axis=axis), {"x": x, "i": ind})


def test_gather_constant_indices_int32_and_scalar():
    x = _f32(4, 3)
    check(helper.make_node("Gather", ["x", "i"], ["y"], axis=0), {"x": x},
          {"i": np.array([3, -2], np.int32)})
    with pytest.raises(NncError, match="out of range"):
        import_model(_model(helper.make_node("Gather", ["x", "i"], ["y"]), {"x": x},
                            {"i": i64(4)}, 13))


def test_gather_folds_shape_subgraph():
    """Shape → Gather on constants folds at import."""
    x = _f32(2, 3)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i"], ["y"], axis=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [2, 3])],
                          [onnx.ValueInfoProto(name="y")], [numpy_helper.from_array(i64(1), "i")])
    graph = import_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    assert not graph.ops or all(op.kind == "reshape" for op in graph.ops)
    assert run_graph(graph, {"x": x})[graph.outputs[0].name].tolist() == [3]


# ---------------------------------------------------------------- pad


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_attr_form(mode):
    node = helper.make_node("Pad", ["x"], ["y"], mode=mode, pads=[0, 1, 2, 0, 2, 1], value=1.5)
    check(node, {"x": _f32(2, 3, 4)}, opset=10)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_input_form(mode):
    inits = {"p": i64(1, 0, 2, 1, 1, 3), "v": np.array(-2.0, np.float32)}
    check(helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode), {"x": _f32(2, 3, 4)},
          inits, opset=19)


def test_pad_axes_negative_and_int():
    inits = {"p": i64(2, -1, 1, 2), "a": i64(-1, 0)}
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    check(helper.make_node("Pad", ["x", "p", "", "a"], ["y"]), {"x": x}, inits, opset=18)
    check(helper.make_node("Pad", ["x", "p", "v", "a"], ["y"], mode="edge"), {"x": x},
          dict(inits, v=np.array(7, np.int32)), opset=18)


def test_pad_wrap_needs_opset19():
    node = helper.make_node("Pad", ["x", "p"], ["y"], mode="wrap")
    with pytest.raises(NncError, match="unsupported mode"):
        import_model(_model(node, {"x": _f32(2, 2)}, {"p": i64(1, 1, 1, 1)}, 18))


# ---------------------------------------------------------------- expand, tile, depth/space


def test_expand_and_tile():
    check(helper.make_node("Expand", ["x", "s"], ["y"]), {"x": _f32(3, 1)},
          {"s": i64(2, 1, 4)})
    check(helper.make_node("Expand", ["x", "s"], ["y"]), {"x": _f32(2, 3)}, {"s": i64(1, 1)})
    check(helper.make_node("Tile", ["x", "r"], ["y"]), {"x": _f32(2, 3)}, {"r": i64(2, 3)})
    check(helper.make_node("Tile", ["x", "r"], ["y"]),
          {"x": np.array([[True, False]])}, {"r": i64(3, 1)})


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    check(helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=mode),
          {"x": _f32(1, 8, 2, 3)})


def test_space_to_depth():
    check(helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2), {"x": _f32(1, 2, 4, 6)})


# ---------------------------------------------------------------- constants


def test_constant_forms():
    forms = {
        "value": numpy_helper.from_array(_f32(2, 3)),
        "value_floats": [1.0, 2.0], "value_ints": [1, -2, 3],
    }
    for key, val in forms.items():
        check(helper.make_node("Constant", [], ["y"], **{key: val}), {}, loops=False)
    # onnxruntime returns sparse outputs as SparseTensor objects: compare with the dense array
    for ind in (i64(1, 4), i64(0, 1, 1, 1).reshape(2, 2)):
        sp = helper.make_sparse_tensor(
            numpy_helper.from_array(np.array([5.0, 6.0], np.float32), "v"),
            numpy_helper.from_array(ind, "i"), [2, 3])
        g = import_model(_model(helper.make_node("Constant", [], ["y"], sparse_value=sp), {}, {},
                                13))
        dense = np.zeros((2, 3), np.float32)
        dense.flat[[1, 4]] = [5.0, 6.0]
        assert_close(run_graph(g, {})[g.outputs[0].name], dense, 0, 0)
    with pytest.raises(NncError, match="string"):
        import_model(_model(helper.make_node("Constant", [], ["y"], value_string="a"), {}, {},
                            13))


def test_constant_of_shape_and_shape_and_size():
    check(helper.make_node("ConstantOfShape", ["s"], ["y"]), {}, {"s": i64(2, 3)}, loops=False)
    val = numpy_helper.from_array(np.array([4], np.int32))
    check(helper.make_node("ConstantOfShape", ["s"], ["y"], value=val), {}, {"s": i64(3)},
          loops=False)
    x = {"x": _f32(2, 3, 4)}
    check(helper.make_node("Shape", ["x"], ["y"]), x, loops=False)
    check(helper.make_node("Shape", ["x"], ["y"], start=-2), x, opset=15, loops=False)
    check(helper.make_node("Shape", ["x"], ["y"], start=1, end=-1), x, opset=15, loops=False)
    check(helper.make_node("Shape", ["x"], ["y"], start=-10, end=10), x, opset=15, loops=False)


def test_scalar_constants():
    x = {"x": _f32(4, 3)}
    check(helper.make_node("Size", ["x"], ["y"]), x, loops=False)
    check(helper.make_node("Constant", [], ["y"], value_float=2.5), {}, loops=False)
    check(helper.make_node("Constant", [], ["y"], value_int=7), {}, loops=False)


def test_gather_scalar_index():
    check(helper.make_node("Gather", ["x", "i"], ["y"], axis=1), {"x": _f32(4, 3)},
          {"i": np.array(-1, np.int64)})


# ---------------------------------------------------------------- resize / upsample

COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def _image() -> np.ndarray:
    return RNG.integers(-9, 9, (1, 2, 4, 5)).astype(np.float32)


@pytest.mark.parametrize("coord", COORDS + ["tf_half_pixel_for_nn"])
@pytest.mark.parametrize("nearest", NEAREST)
def test_resize_nearest_scales(coord, nearest):
    node = helper.make_node("Resize", ["x", "r", "s"], ["y"], mode="nearest",
                            coordinate_transformation_mode=coord, nearest_mode=nearest)
    inits = {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 1.5, 0.6], np.float32)}
    check(node, {"x": _image()}, inits, opset=11)


@pytest.mark.parametrize("coord", COORDS + ["half_pixel_symmetric"])
def test_resize_linear_sizes(coord):
    node = helper.make_node("Resize", ["x", "", "", "z"], ["y"], mode="linear",
                            coordinate_transformation_mode=coord)
    check(node, {"x": _image()}, {"z": i64(1, 2, 7, 3)}, opset=19, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("coord", COORDS)
def test_resize_linear_scales_upsample(coord):
    node = helper.make_node("Resize", ["x", "r", "s"], ["y"], mode="linear",
                            coordinate_transformation_mode=coord)
    inits = {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 3], np.float32)}
    check(node, {"x": _image()}, inits, opset=13, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_tf_crop_and_resize(mode):
    node = helper.make_node("Resize", ["x", "r", "", "z"], ["y"], mode=mode,
                            coordinate_transformation_mode="tf_crop_and_resize",
                            extrapolation_value=-5.0)
    roi = np.array([0, 0, 0.2, -0.3, 1, 1, 0.8, 1.4], np.float32)
    check(node, {"x": _image()}, {"r": roi, "z": i64(1, 2, 3, 6)}, opset=13, atol=1e-5)


def test_resize_opset18_axes_and_aspect_policy():
    for policy in ("not_larger", "not_smaller"):
        node = helper.make_node("Resize", ["x", "", "", "z"], ["y"], mode="nearest", axes=[2, 3],
                                keep_aspect_ratio_policy=policy)
        check(node, {"x": _image()}, {"z": i64(8, 7)}, opset=18)
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear", axes=[-1])
    check(node, {"x": _image()}, {"s": np.array([0.5], np.float32)}, opset=18, atol=1e-5)


def test_resize_opset10_and_upsample():
    s = {"s": np.array([1, 1, 2, 2.5], np.float32)}
    for mode in ("nearest", "linear"):
        check(helper.make_node("Resize", ["x", "s"], ["y"], mode=mode), {"x": _image()}, s,
              opset=10, atol=1e-5)
        check(helper.make_node("Upsample", ["x", "s"], ["y"], mode=mode), {"x": _image()}, s,
              opset=9, atol=1e-5)
        check(helper.make_node("Upsample", ["x"], ["y"], mode=mode, scales=[1.0, 1.0, 2.0, 3.0]),
              {"x": _image()}, opset=7, atol=1e-5)
    down = {"s": np.array([1, 1, 0.5, 0.6], np.float32)}
    check(helper.make_node("Resize", ["x", "s"], ["y"], mode="nearest"), {"x": _image()}, down,
          opset=10)


def test_resize_int_and_float16_nearest():
    x = RNG.integers(0, 200, (1, 1, 3, 3)).astype(np.uint8)
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")
    check(node, {"x": x}, {"s": np.array([1, 1, 2, 2], np.float32)}, opset=13)
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear")
    check(node, {"x": _image().astype(np.float16)}, {"s": np.array([1, 1, 2, 2], np.float32)},
          opset=13, rtol=1e-3, atol=1e-3)


def test_resize_scales_use_unrounded_length():
    """ONNX: with scales, align_corners divides by (in * scale - 1), not (floor(...) - 1);
    onnxruntime uses the rounded length, so compare with the ONNX reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear",
                            coordinate_transformation_mode="align_corners")
    x = np.arange(1, 9, dtype=np.float32).reshape(1, 1, 2, 4)
    m = _model(node, {"x": x}, {"s": np.array([1, 1, 0.6, 0.6], np.float32)}, 13)
    expected = ReferenceEvaluator(m).run(None, {"x": x})[0]
    g = import_model(m)
    assert_close(run_graph(g, {"x": x})[g.outputs[0].name], expected, 1e-5, 1e-6)


@pytest.mark.parametrize("coord", COORDS + ["half_pixel_symmetric"])
@pytest.mark.parametrize("attrs", [{}, {"cubic_coeff_a": -0.5, "exclude_outside": 1}])
@pytest.mark.parametrize("sizes", [(1, 2, 7, 9), (1, 2, 3, 2)])
def test_resize_cubic_sizes(coord, attrs, sizes):
    node = helper.make_node("Resize", ["x", "", "", "z"], ["y"], mode="cubic",
                            coordinate_transformation_mode=coord, **attrs)
    check(node, {"x": _f32(1, 2, 4, 5)}, {"z": i64(*sizes)}, opset=19, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("coord", COORDS)
def test_resize_cubic_scales_and_float64(coord):
    node = helper.make_node("Resize", ["x", "r", "s"], ["y"], mode="cubic",
                            coordinate_transformation_mode=coord)
    inits = {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 1.5, 0.6], np.float32)}
    check(node, {"x": _f32(1, 2, 4, 5)}, inits, opset=11, rtol=1e-4, atol=1e-4)
    # onnxruntime has no float64 Resize: the ONNX reference evaluator
    from onnx.reference import ReferenceEvaluator

    x64 = {"x": _f32(1, 1, 3, 4).astype(np.float64)}
    m = _model(node, x64, inits, 13)
    g = import_model(m)
    assert_close(run_graph(g, x64)[g.outputs[0].name], ReferenceEvaluator(m).run(None, x64)[0],
                 1e-5, 1e-6)


def test_resize_cubic_tf_crop_and_resize():
    node = helper.make_node("Resize", ["x", "r", "", "z"], ["y"], mode="cubic",
                            coordinate_transformation_mode="tf_crop_and_resize",
                            extrapolation_value=-5.0)
    roi = np.array([0, 0, 0.2, -0.3, 1, 1, 0.8, 1.4], np.float32)
    check(node, {"x": _f32(1, 2, 4, 5)}, {"r": roi, "z": i64(1, 2, 3, 6)}, opset=13, rtol=1e-4,
          atol=1e-4)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("given", ["scales", "sizes"])
def test_resize_antialias_downscale(mode, given):
    """ONNX's antialias (a kernel widened by 1/scale, as the ONNX reference evaluator and
    onnxruntime implement it); axes 3 upscales, where antialias changes nothing."""
    node = helper.make_node("Resize", ["x", "", "s"] if given == "scales" else ["x", "", "", "z"],
                            ["y"], mode=mode, antialias=1)
    inits = ({"s": np.array([1, 1, 0.4, 1.5], np.float32)} if given == "scales"
             else {"z": i64(1, 2, 3, 7)})
    check(node, {"x": _f32(1, 2, 8, 5)}, inits, opset=18, rtol=1e-4, atol=1e-4)


def test_resize_antialias_matches_onnx_reference():
    from onnx.reference import ReferenceEvaluator

    x = _f32(1, 1, 9, 6)
    for mode in ("linear", "cubic"):
        node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode=mode, antialias=1,
                                exclude_outside=1)
        m = _model(node, {"x": x}, {"s": np.array([1, 1, 0.3, 0.5], np.float32)}, 18)
        expected = ReferenceEvaluator(m).run(None, {"x": x})[0]
        g = import_model(m)
        assert_close(run_graph(g, {"x": x})[g.outputs[0].name], expected, 1e-4, 1e-5)


def test_resize_rejections():
    x = {"x": _image()}
    s = {"s": np.array([1, 1, 2, 2], np.float32)}
    with pytest.raises(NncError, match="cubic"):  # Resize-10 has nearest and linear only
        import_model(_model(helper.make_node("Resize", ["x", "s"], ["y"], mode="cubic"), x,
                            s, 10))
    with pytest.raises(NncError, match="needs a float"):
        import_model(_model(helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic"),
                            {"x": _image().astype(np.int32)}, s, 13))
    node = helper.make_node("Resize", ["x", "", "s", "z"], ["y"])
    with pytest.raises(NncError, match="sizes"):
        import_model(_model(node, x, dict(s, z=i64(1, 2, 8, 10)), 13))


# ---------------------------------------------------------------- reductions


REDUCES = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"]


@pytest.mark.parametrize("op", REDUCES)
@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([-1, 0], 0), (None, 1), (None, 0)])
def test_reduce(op, opset, axes, keepdims):
    x = {"x": _f32(2, 3, 4)}
    input_axes = opset >= 18 or (op == "ReduceSum" and opset >= 13)
    if input_axes and axes is not None:
        node = helper.make_node(op, ["x", "a"], ["y"], keepdims=keepdims)
        check(node, x, {"a": i64(*axes)}, opset=opset, rtol=1e-5, atol=1e-5)
    else:
        kw = {"axes": axes} if axes is not None else {}
        check(helper.make_node(op, ["x"], ["y"], keepdims=keepdims, **kw), x, opset=opset,
              rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", REDUCES)
def test_reduce_noop_with_empty_axes(op):
    node = helper.make_node(op, ["x"], ["y"], noop_with_empty_axes=1)
    assert op_kinds(node, {"x": _f32(2, 3)}, opset=18) in ([], ["reshape"])  # output copy
    check(node, {"x": _f32(2, 3)}, opset=18)


@pytest.mark.parametrize("op", REDUCES)
def test_reduce_int32(op):
    x = RNG.integers(-4, 5, (2, 3, 2)).astype(np.int32)
    check(helper.make_node(op, ["x"], ["y"], axes=[1], keepdims=0), {"x": x}, opset=11)


SUM_OF_TERMS = ["ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp"]


@pytest.mark.parametrize("op", SUM_OF_TERMS)
@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([-1, 0], 0), (None, 0)])
def test_reduce_sums_of_terms(op, opset, axes, keepdims):
    """Against onnxruntime; log-sum-exp on values whose exp overflows float32 (ORT subtracts
    the max first, so does nnc)."""
    x = RNG.uniform(0.5, 2.0, (2, 3, 4)).astype(np.float32)
    if op == "ReduceLogSumExp":
        x = x * 60.0
    if opset >= 18 and axes is not None:
        node = helper.make_node(op, ["x", "a"], ["y"], keepdims=keepdims)
        out = check(node, {"x": x}, {"a": i64(*axes)}, opset=opset, rtol=1e-5, atol=1e-5)
    else:
        kw = {"axes": axes} if axes is not None else {}
        out = check(helper.make_node(op, ["x"], ["y"], keepdims=keepdims, **kw), {"x": x},
                    opset=opset, rtol=1e-5, atol=1e-5)
    assert np.isfinite(out[0]).all()


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims,last", [(0, 1, 0), (-1, 0, 0), (1, 1, 1), (-1, 0, 1)])
def test_arg(op, axis, keepdims, last):
    x = RNG.integers(0, 3, (2, 3, 4)).astype(np.float32)  # ties exercise select_last_index
    node = helper.make_node(op, ["x"], ["y"], axis=axis, keepdims=keepdims, select_last_index=last)
    check(node, {"x": x}, opset=13)


def test_arg_opset11_int():
    x = RNG.integers(-5, 5, (3, 4)).astype(np.int32)
    check(helper.make_node("ArgMax", ["x"], ["y"], axis=1), {"x": x}, opset=11)
