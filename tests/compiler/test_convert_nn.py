"""NN converters against onnxruntime: one-node models through import_model, then both the graph
interpreter (op references) and the lowered loop nest (loop interpreter) are compared with ORT."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from nnc.compiler.errors import NncError
from nnc.compiler.onnx.importer import import_model
from nnc.ir.interp import run_graph
from nnc.ir.loop_interp import run_loop_module
from nnc.passes.lower_to_loops import lower_to_loops
from nnc.passes.manager import PassContext

RNG = np.random.default_rng(7)


def _r(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _model(op_type, inputs, attrs, opset, const_inputs, n_outputs=1):
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    outs = ["y"] + [f"y{k}" for k in range(1, n_outputs)]
    node = helper.make_node(op_type, names, outs, name="n0", **attrs)
    elem = helper.np_dtype_to_tensor_dtype(inputs[0].dtype)
    g_in = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
        for i, (n, x) in enumerate(zip(names, inputs, strict=True))
        if n and i not in const_inputs
    ]
    inits = [numpy_helper.from_array(inputs[i], names[i]) for i in const_inputs]
    g_out = [helper.make_tensor_value_info("y", elem, None)]
    g_out += [helper.make_empty_tensor_value_info(o) for o in outs[1:]]
    g = helper.make_graph([node], "g", g_in, g_out, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 10)  # what onnxruntime accepts
    return m


def _ort(model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def check(op_type, inputs, attrs=None, opset=17, const_inputs=(), rtol=1e-3, atol=1e-5,
          loops=True, ort_float32=False):
    """Compare import+reference (and import+lower+loop interpreter) with onnxruntime.
    `ort_float32`: ORT has no CPU kernel for this dtype; compare with its float32 result."""
    model = _model(op_type, inputs, attrs or {}, opset, tuple(const_inputs))
    feeds = {f"in{i}": x for i, x in enumerate(inputs) if x is not None and i not in const_inputs}
    if ort_float32:
        f32 = [x.astype(np.float32) if x is not None else None for x in inputs]
        m32 = _model(op_type, f32, attrs or {}, opset, tuple(const_inputs))
        expected = _ort(m32, {k: v.astype(np.float32) for k, v in feeds.items()})
        expected = expected.astype(inputs[0].dtype)
    else:
        expected = _ort(model, feeds)
    graph = import_model(model)
    got = run_graph(graph, feeds)["y"]
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg="reference vs ORT")
    if loops:
        module = lower_to_loops(graph, PassContext())
        by_name = dict(zip(module.input_names or module.inputs, module.inputs, strict=True))
        res = run_loop_module(module, {by_name[k]: v for k, v in feeds.items()})
        out = res[module.outputs[0]]
        np.testing.assert_allclose(out, expected, rtol=rtol, atol=atol, err_msg="loops vs ORT")
    return graph


# ---------------------------------------------------------------- conv


@pytest.mark.parametrize("opset", [7, 11, 22])
@pytest.mark.parametrize("attrs,wshape,xshape", [
    ({}, (4, 3, 3, 3), (1, 3, 5, 5)),
    ({"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]}, (4, 3, 3, 2), (2, 3, 6, 7)),
    ({"group": 2, "pads": [1, 1, 1, 1]}, (4, 2, 3, 3), (1, 4, 4, 5)),
    ({"group": 4, "strides": [2, 2], "auto_pad": "SAME_UPPER"}, (4, 1, 3, 3), (1, 4, 6, 5)),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, (2, 3, 2, 2), (1, 3, 5, 5)),
    ({"auto_pad": "VALID", "kernel_shape": [3, 3]}, (2, 3, 3, 3), (1, 3, 5, 4)),
])
def test_conv_2d(opset, attrs, wshape, xshape):
    inputs = [_r(*xshape), _r(*wshape), _r(wshape[0])]
    check("Conv", inputs, attrs, opset=opset, const_inputs=(1, 2))


def test_conv_1d_3d_no_bias_and_runtime_weights():
    check("Conv", [_r(2, 2, 9), _r(3, 2, 3)], {"pads": [2, 1], "strides": [2]}, const_inputs=(1,))
    check("Conv", [_r(1, 2, 3, 4, 3), _r(2, 2, 2, 2, 2)], {"auto_pad": "SAME_UPPER"})


def test_conv_float16_and_float64():
    x, w = _r(1, 2, 4, 4), _r(3, 2, 3, 3)
    check("Conv", [x.astype(np.float16), w.astype(np.float16)], {"pads": [1, 1, 1, 1]},
          rtol=5e-3, atol=5e-3, ort_float32=True)
    check("Conv", [x.astype(np.float64), w.astype(np.float64)], {"strides": [2, 2]},
          ort_float32=True)


def test_conv_kernel_shape_mismatch_is_rejected():
    m = _model("Conv", [_r(1, 2, 4, 4), _r(3, 2, 3, 3)], {"kernel_shape": [2, 2]}, 13, (1,))
    with pytest.raises(NncError, match="kernel_shape"):
        import_model(m)


# ---------------------------------------------------------------- conv transpose


@pytest.mark.parametrize("attrs,cm", [
    ({}, (2, 3)),
    ({"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 0]}, (2, 3)),
    ({"strides": [2, 3], "dilations": [2, 1], "group": 2}, (4, 2)),
    ({"strides": [2, 2], "auto_pad": "SAME_UPPER"}, (2, 3)),
    ({"strides": [2, 2], "auto_pad": "SAME_LOWER"}, (2, 3)),
    ({"strides": [2, 2], "output_shape": [6, 9]}, (2, 3)),
    ({"strides": [2, 2], "output_shape": [6, 9], "auto_pad": "SAME_UPPER"}, (2, 3)),
    ({"strides": [2, 2], "output_shape": [8, 10], "pads": [1, 1, 1, 1]}, (2, 3)),
    ({"strides": [3, 2], "output_shape": [10, 10], "output_padding": [1, 1]}, (2, 3)),
    ({"group": 2, "strides": [1, 2], "auto_pad": "VALID"}, (2, 3)),
])
def test_conv_transpose(attrs, cm):
    c, m = cm  # input channels, output channels per group
    x, w, b = _r(1, c, 3, 4), _r(c, m, 3, 3), _r(m * attrs.get("group", 1))
    check("ConvTranspose", [x, w, b], attrs, opset=11, const_inputs=(1, 2))


def test_conv_transpose_1d_no_bias():
    check("ConvTranspose", [_r(1, 2, 5), _r(2, 3, 4)], {"strides": [3], "pads": [1, 2]},
          opset=22, const_inputs=(1,))


# ---------------------------------------------------------------- gemm / matmul


@pytest.mark.parametrize("opset", [7, 11, 13])
@pytest.mark.parametrize("attrs,cshape", [
    ({}, (3, 5)),
    ({"transA": 1, "alpha": 0.5}, (5,)),
    ({"transB": 1, "beta": 2.0}, (3, 1)),
    ({"transA": 1, "transB": 1, "alpha": 2.0, "beta": 0.0}, (1,)),
    ({}, None),
])
def test_gemm(opset, attrs, cshape):
    if cshape is None and opset < 11:
        pytest.skip("C is required before opset 11")
    a = _r(4, 3) if attrs.get("transA") else _r(3, 4)
    b = _r(5, 4) if attrs.get("transB") else _r(4, 5)
    inputs = [a, b] + ([_r(*cshape)] if cshape else [])
    check("Gemm", inputs, attrs, opset=opset, const_inputs=(1,))


def test_gemm_int32():
    a = RNG.integers(-5, 5, (2, 3)).astype(np.int32)
    b = RNG.integers(-5, 5, (3, 4)).astype(np.int32)
    c = RNG.integers(-5, 5, (4,)).astype(np.int32)
    check("Gemm", [a, b, c], {"alpha": 2.0}, opset=13, ort_float32=True)  # exact in float32


@pytest.mark.parametrize("ashape,bshape", [
    ((3, 4), (4, 2)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((4,), (2, 4, 3)),
    ((2, 3, 4), (4,)), ((4,), (4,)), ((1, 3, 4), (2, 4, 2)),
])
def test_matmul(ashape, bshape):
    check("MatMul", [_r(*ashape), _r(*bshape)], opset=13)


def test_matmul_int64_and_float64():
    a = RNG.integers(-9, 9, (2, 3)).astype(np.int64)
    b = RNG.integers(-9, 9, (3, 2)).astype(np.int64)
    check("MatMul", [a, b], opset=9)
    check("MatMul", [_r(2, 3, dtype=np.float64), _r(3, 2, dtype=np.float64)], opset=13)


# ---------------------------------------------------------------- pools


POOL_CASES = [
    ({"kernel_shape": [2, 2]}, 8),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 8),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 2], "ceil_mode": 1}, 10),
    ({"kernel_shape": [2, 3], "strides": [3, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}, 10),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, 11),
    ({"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}, 11),
    ({"kernel_shape": [2, 2], "strides": [1, 2], "auto_pad": "VALID"}, 11),
]


@pytest.mark.parametrize("attrs,opset", POOL_CASES)
@pytest.mark.parametrize("shape", [(1, 2, 5, 5), (2, 1, 6, 7)])
def test_max_pool(attrs, opset, shape):
    check("MaxPool", [_r(*shape)], attrs, opset=opset)


@pytest.mark.parametrize("attrs,opset", POOL_CASES)
@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("shape", [(1, 2, 5, 5), (2, 1, 6, 7)])
def test_average_pool(attrs, opset, include, shape):
    check("AveragePool", [_r(*shape)], {**attrs, "count_include_pad": include}, opset=opset)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "dilations": [2, 2]},
    {"kernel_shape": [3, 2], "dilations": [2, 1], "pads": [1, 1, 1, 0], "strides": [2, 1]},
    {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1,
     "strides": [2, 2]},
])
@pytest.mark.parametrize("op_type,extra", [
    ("MaxPool", {}), ("AveragePool", {"count_include_pad": 0}),
    ("AveragePool", {"count_include_pad": 1}),
])
def test_pool_dilations(attrs, op_type, extra):
    check(op_type, [_r(1, 2, 6, 7)], {**attrs, **extra}, opset=19)


def test_pool_1d_3d_and_int8_max_pool():
    check("MaxPool", [_r(1, 2, 7)], {"kernel_shape": [3], "strides": [2], "pads": [1, 1]})
    check("AveragePool", [_r(1, 1, 4, 3, 5)], {"kernel_shape": [2, 2, 2]}, opset=11)
    x = RNG.integers(-128, 127, (1, 2, 5, 5)).astype(np.int8)
    check("MaxPool", [x], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, opset=12)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("shape,attrs", [
    ((2, 2, 5, 6), {"kernel_shape": [2, 2]}),
    ((1, 2, 6, 5), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]}),
    ((1, 1, 7, 6), {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                    "dilations": [2, 1], "ceil_mode": 1}),
    ((1, 2, 3, 4, 5), {"kernel_shape": [2, 2, 3], "auto_pad": "SAME_UPPER"}),
    ((1, 3, 7), {"kernel_shape": [3], "strides": [2]}),
])
def test_max_pool_indices(shape, attrs, storage_order):
    check_outputs("MaxPool", [_r(*shape)], {**attrs, "storage_order": storage_order}, 12, (),
                  ("y", "idx"))


def test_max_pool_indices_ties_and_ints():
    # ties: the first max in window order wins, as in onnxruntime
    x = RNG.integers(0, 3, (1, 2, 4, 5)).astype(np.float32)
    check_outputs("MaxPool", [x], {"kernel_shape": [2, 3], "pads": [1, 1, 0, 1]}, 12, (),
                  ("y", "idx"))
    x8 = RNG.integers(-128, 127, (1, 2, 4, 4)).astype(np.int8)
    check_outputs("MaxPool", [x8], {"kernel_shape": [2, 2], "storage_order": 1}, 12, (),
                  ("y", "idx"))


@pytest.mark.parametrize("op_type", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 6), (1, 2, 2, 3, 2)])
def test_global_pools(op_type, shape):
    check(op_type, [_r(*shape)], opset=13)


# ---------------------------------------------------------------- normalizations


@pytest.mark.parametrize("opset", [7, 9, 15])
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (3, 4)])
def test_batch_normalization(opset, shape):
    c = shape[1]
    inputs = [_r(*shape), _r(c), _r(c), _r(c), np.abs(_r(c)) + 0.1]
    check("BatchNormalization", inputs, {"epsilon": 1e-3}, opset=opset, const_inputs=(1, 2, 3, 4))


def test_batch_normalization_training_is_rejected():
    c = 3
    inputs = [_r(2, c, 2, 2), _r(c), _r(c), _r(c), np.abs(_r(c))]
    m = _model("BatchNormalization", inputs, {"training_mode": 1}, 15, (1, 2, 3, 4), n_outputs=3)
    with pytest.raises(NncError, match="training_mode"):
        import_model(m)
    m = _model("BatchNormalization", inputs, {}, 9, (1, 2, 3, 4), n_outputs=5)
    with pytest.raises(NncError, match="not supported"):
        import_model(m)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 7)])
def test_instance_normalization(shape):
    c = shape[1]
    check("InstanceNormalization", [_r(*shape), _r(c), _r(c)], {"epsilon": 1e-4}, opset=7,
          const_inputs=(1, 2))


@pytest.mark.parametrize("axis,sshape,bias", [
    (-1, (5,), True), (1, (3, 5), True), (1, (3, 5), False), (0, (2, 3, 5), True),
    (1, (1, 5), True),
])
def test_layer_normalization(axis, sshape, bias):
    inputs = [_r(2, 3, 5), _r(*sshape)] + ([_r(*sshape)] if bias else [])
    check("LayerNormalization", inputs, {"axis": axis, "epsilon": 1e-3}, opset=17,
          const_inputs=tuple(range(1, len(inputs))))


def check_outputs(op_type, inputs, attrs, opset, const_inputs, outputs, rtol=1e-4, atol=1e-5):
    """Like `check` for every output of a node whose outputs are named `outputs` ("" absent)."""
    model = _model(op_type, inputs, attrs, opset, tuple(const_inputs), n_outputs=len(outputs))
    node = model.graph.node[0]
    del node.output[:]
    node.output.extend(outputs)
    del model.graph.output[:]
    model.graph.output.extend(helper.make_empty_tensor_value_info(o) for o in outputs if o)
    feeds = {f"in{i}": x for i, x in enumerate(inputs) if x is not None and i not in const_inputs}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    expected = dict(zip([o for o in outputs if o], sess.run(None, feeds), strict=True))
    graph = import_model(model)
    got = run_graph(graph, feeds)
    module = lower_to_loops(graph, PassContext())
    by_name = dict(zip(module.input_names or module.inputs, module.inputs, strict=True))
    res = run_loop_module(module, {by_name[k]: v for k, v in feeds.items()})
    loops = dict(zip(module.output_names or module.outputs, module.outputs, strict=True))
    for name, want in expected.items():
        for what, arr in (("reference", got[name]), ("loops", res[loops[name]])):
            assert arr.dtype == want.dtype and arr.shape == want.shape, (name, what, arr.shape)
            np.testing.assert_allclose(arr, want, rtol=rtol, atol=atol, err_msg=f"{name} {what}")
    return expected


@pytest.mark.parametrize("axis,outputs", [
    (-1, ("y", "mean", "inv")), (1, ("y", "mean", "inv")), (0, ("y", "", "inv")),
    (2, ("y", "mean")),
])
def test_layer_normalization_mean_and_inv_std_dev(axis, outputs):
    x = _r(2, 3, 5)
    scale = _r(*x.shape[axis:])
    res = check_outputs("LayerNormalization", [x, scale, _r(*x.shape[axis:])],
                        {"axis": axis, "epsilon": 1e-2}, 17, (1, 2), outputs)
    if "mean" in res:
        assert res["mean"].shape == x.shape[:axis % 3] + (1,) * (3 - axis % 3)


def test_layer_normalization_float16_stats_are_float32():
    # onnxruntime has no float16 CPU kernel; compare with numpy in float32 (stash_type=1)
    x = _r(2, 4).astype(np.float16)
    m = _model("LayerNormalization", [x, _r(4).astype(np.float16)], {}, 17, (1,), n_outputs=3)
    graph = import_model(m)
    got = run_graph(graph, {"in0": x})
    x32 = x.astype(np.float32)
    mean = x32.mean(axis=1, keepdims=True)
    inv = 1 / np.sqrt(((x32 - mean) ** 2).mean(axis=1, keepdims=True) + np.float32(1e-5))
    assert got["y1"].dtype == np.float32 and got["y2"].dtype == np.float32
    np.testing.assert_allclose(got["y1"], mean, rtol=1e-6)
    np.testing.assert_allclose(got["y2"], inv, rtol=1e-5)
    assert graph.outputs[0].type.dtype == "float16"


def test_layer_normalization_rejects_other_stash_types():
    m = _model("LayerNormalization", [_r(2, 4), _r(4)], {"stash_type": 16}, 17, (1,),
               n_outputs=2)
    with pytest.raises(NncError, match="stash_type"):
        import_model(m)


@pytest.mark.parametrize("attrs", [
    {"size": 3}, {"size": 5, "alpha": 0.01, "beta": 0.5, "bias": 2.0}, {"size": 1},
])
def test_lrn(attrs):
    check("LRN", [_r(1, 5, 3, 2)], attrs, opset=13)


# ---------------------------------------------------------------- softmax


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,attrs", [
    (7, {}), (11, {"axis": 1}), (11, {"axis": -1}), (11, {"axis": 0}),
    (13, {}), (13, {"axis": 1}), (13, {"axis": 0}),
])
def test_softmax(op_type, opset, attrs):
    check(op_type, [_r(2, 3, 4)], attrs, opset=opset, rtol=1e-4, atol=1e-6)


def test_softmax_float16_and_2d():
    check("Softmax", [_r(3, 6).astype(np.float16)], {}, opset=13, rtol=5e-3, atol=1e-3)
    check("LogSoftmax", [_r(3, 6, dtype=np.float64)], {}, opset=13)


def test_softmax_axis_out_of_range():
    m = _model("Softmax", [_r(2, 3)], {"axis": 2}, 13, ())
    with pytest.raises(NncError, match="axis"):
        import_model(m)


def test_converted_attributes_are_canonical():
    g = check("Conv", [_r(1, 2, 5, 5), _r(2, 2, 3, 3)], {"auto_pad": "SAME_UPPER",
                                                            "strides": [2, 2]},
              const_inputs=(1,), loops=False)
    op = g.ops[0]
    assert op.kind == "conv"
    assert dict(op.attrs) == {"dilations": (1, 1), "group": 1, "pads": (1, 1, 1, 1),
                              "strides": (2, 2)}
    g = check("Softmax", [_r(2, 3, 4)], {"axis": 1}, opset=11, loops=False)
    assert g.ops[0].attrs["axes"] == (1, 2)

