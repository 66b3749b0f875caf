"""layout-nhwc: int8 convs and pools become channels-last, the graph computes the same int8
values (graph interpreter, bit for bit), and the transposes it adds cancel or fold away."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks.models import MODELS
from nnc.compiler.onnx.importer import import_model
from nnc.ir.interp import run_graph
from nnc.ir.verify import verify_graph
from nnc.passes.calibrate import calibrate
from nnc.passes.layout_nhwc import layout_nhwc_graph
from nnc.passes.manager import PassManager
from nnc.passes.quantize import quantize_graph

FLOAT_PASSES = "fold-constants,eliminate-dead-code,fold-batchnorm,fold-constants"
RNG = np.random.default_rng(11)


def _quantized(model, samples):
    g = PassManager(FLOAT_PASSES).run(import_model(model))
    return quantize_graph(g, calibrate(g, samples))


def _samples(name: str, shape, n=4):
    return [{name: RNG.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def _kinds(g):
    return [op.kind for op in g.ops]


def _same_outputs(a, b, samples):
    for s in samples:
        ra, rb = run_graph(a, s), run_graph(b, s)
        for k in ra:
            np.testing.assert_array_equal(ra[k], rb[k])


def _w(*shape):
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def test_conv_flatten_fc_permutes_the_classifier_weights():
    """conv → pool → flatten → gemm: the flatten reads the NHWC bytes and the gemm's weight
    columns are permuted to match; no transpose is left (the input has one channel)."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = {"w": _w(4, 1, 3, 3), "b": _w(4), "fw": _w(5, 4 * 3 * 3), "fb": _w(5)}
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    samples = _samples("x", (1, 1, 6, 6))
    q = _quantized(model, samples)
    n = layout_nhwc_graph(q)
    verify_graph(n)
    assert "transpose" not in _kinds(n)
    assert all(op.attrs.get("layout") == "NHWC" for op in n.ops
               if op.kind in ("conv_s8", "max_pool_s8"))
    fc = next(op for op in n.ops if op.kind == "fully_connected_s8")
    assert fc.inputs[1].endswith("_nhwc")  # the permuted weight constant
    _same_outputs(q, n, samples)


def test_depthwise_and_residual_add_keep_values():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "dw"], ["d"], pads=[1, 1, 1, 1], group=4),
             helper.make_node("Add", ["d", "ar"], ["s"]),
             helper.make_node("AveragePool", ["s"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    inits = {"w1": _w(4, 3, 3, 3), "dw": _w(4, 1, 3, 3)}
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    samples = _samples("x", (1, 3, 6, 6))
    q = _quantized(model, samples)
    n = layout_nhwc_graph(q)
    verify_graph(n)
    # one transpose into NHWC for the 3-channel input, one back for the float output
    assert _kinds(n).count("transpose") == 2
    add = next(op for op in n.ops if op.kind == "add_s8")
    types = n.value_types()
    assert all(types[i].layout == "NHWC" for i in add.inputs)  # the add runs channels-last
    _same_outputs(q, n, samples)


@pytest.mark.parametrize("name", ["kws", "ic"])
def test_mlperf_models_keep_values_and_lose_their_transposes(name):
    model = MODELS[name]()
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    samples = _samples(inp.name, shape, n=2)
    q = _quantized(model, samples)
    n = layout_nhwc_graph(q)
    verify_graph(n)
    # kws: the 1-channel input's transpose is a reshape; ic: only its 3-channel input moves
    assert _kinds(n).count("transpose") == (0 if name == "kws" else 1)
    _same_outputs(q, n, samples[:1])


def test_float_graph_is_untouched():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        [numpy_helper.from_array(_w(3, 2, 1, 1), "w")])
    graph = import_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    assert layout_nhwc_graph(graph).ops == graph.ops
