"""quantize: the rewrite's structure, its numerics against the float graph, and bit-exactness
of the int8 graph between the graph interpreter and compiled host C."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.compiler.onnx.importer import import_model
from nnc.errors import NncError
from nnc.ir.interp import run_graph
from nnc.ir.ops import get_op
from nnc.ir.verify import verify_graph
from nnc.passes.calibrate import calibrate
from nnc.passes.manager import PassManager
from nnc.passes.quant_scheme import sqnr_db
from nnc.passes.quantize import quantize_graph

FLOAT_PASSES = "fold-constants,eliminate-dead-code,fold-batchnorm,fold-constants"
RNG = np.random.default_rng(7)


def _model(nodes, inits, x_shape, y_shape, extra_outputs=()):
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)]
    outs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in extra_outputs]
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)], outs,
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _samples(shape, n=8):
    return [{"x": RNG.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def _quantized(model, samples):
    g = PassManager(FLOAT_PASSES).run(import_model(model))
    q = quantize_graph(g, calibrate(g, samples))
    verify_graph(q)
    return g, q


def _sqnr(g, q, samples):
    ref = np.concatenate([run_graph(g, s)["y"].ravel() for s in samples])
    got = np.concatenate([run_graph(q, s)["y"].ravel() for s in samples])
    return sqnr_db(ref, got)


def _w(*shape):
    return RNG.standard_normal(shape) * 0.3


CONV_RELU = ([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["y"])],
             {"w": _w(4, 3, 3, 3), "b": _w(4)})


def test_conv_relu_becomes_conv_s8_with_folded_clamp():
    samples = _samples((1, 3, 6, 6))
    g, q = _quantized(_model(*CONV_RELU, [1, 3, 6, 6], [1, 4, 6, 6]), samples)
    assert [op.kind for op in q.ops] == ["quantize_linear", "conv_s8", "dequantize_linear"]
    conv = q.ops[1]
    out_t = conv.outputs[0].type
    assert out_t.dtype == "int8" and out_t.quant is not None
    assert conv.attrs["act_min"] == out_t.quant.zero_point[0]  # relu: real 0.0
    consts = {c.name: c for c in q.constants}
    w = consts[conv.inputs[1]]
    assert w.data.dtype == np.int8 and w.value.type.quant.axis == 0
    assert len(w.value.type.quant.scale) == 4 and np.abs(w.data).max() == 127
    assert consts[conv.inputs[4]].data.dtype == np.int32
    assert consts[conv.inputs[2]].data.dtype == np.int32  # multipliers
    assert q.outputs == g.outputs
    assert _sqnr(g, q, samples) > 30


def test_depthwise_conv_and_clip():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], group=3, pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    inits = {"w": _w(3, 1, 3, 3), "lo": np.float32(0.0), "hi": np.float32(0.5)}
    samples = _samples((1, 3, 5, 5))
    g, q = _quantized(_model(nodes, inits, [1, 3, 5, 5], [1, 3, 5, 5]), samples)
    conv = next(op for op in q.ops if op.kind == "conv_s8")
    assert conv.attrs["group"] == 3 and "clip" not in [op.kind for op in q.ops]
    assert _sqnr(g, q, samples) > 30


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_becomes_fully_connected(trans_b):
    w = _w(8, 5) if trans_b else _w(5, 8)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=trans_b, alpha=0.5,
                              beta=2.0)]
    samples = _samples((2, 5))
    g, q = _quantized(_model(nodes, {"w": w, "b": _w(8)}, [2, 5], [2, 8]), samples)
    assert [op.kind for op in q.ops] == ["quantize_linear", "fully_connected_s8",
                                         "dequantize_linear"]
    assert _sqnr(g, q, samples) > 30


def test_matmul_folds_the_bias_add():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    samples = _samples((1, 6))
    g, q = _quantized(_model(nodes, {"w": _w(6, 4), "b": _w(4)}, [1, 6], [1, 4]), samples)
    assert [op.kind for op in q.ops] == ["quantize_linear", "fully_connected_s8",
                                         "dequantize_linear"]
    assert len(q.ops[1].inputs) == 5
    assert _sqnr(g, q, samples) > 30


def test_pools_keep_the_input_parameters():
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["p"], ["a"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["a"], ["y"])]
    samples = _samples((1, 2, 6, 6))
    g, q = _quantized(_model(nodes, {}, [1, 2, 6, 6], [1, 2, 1, 1]), samples)
    kinds = [op.kind for op in q.ops]
    assert kinds == ["quantize_linear", "max_pool_s8", "avg_pool_s8", "avg_pool_s8",
                     "dequantize_linear"]
    qs = {op.outputs[0].type.quant for op in q.ops[:4]}
    assert len(qs) == 1
    assert _sqnr(g, q, samples) > 25


def test_add_mul_with_relu_and_constant_operand():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Add", ["x", "c"], ["s"]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Mul", ["r", "k"], ["y"])]
    inits = {"w": _w(2, 2, 1, 1), "k": np.abs(_w(1, 2, 1, 1)) + 0.5}
    samples = _samples((1, 2, 4, 4))
    g, q = _quantized(_model(nodes, inits, [1, 2, 4, 4], [1, 2, 4, 4]), samples)
    kinds = [op.kind for op in q.ops]
    assert kinds == ["quantize_linear", "conv_s8", "add_s8", "mul_s8", "dequantize_linear"]
    add = q.ops[2]
    assert add.attrs["act_min"] == add.outputs[0].type.quant.zero_point[0]
    assert _sqnr(g, q, samples) > 25


def test_softmax_becomes_softmax_s8_with_fixed_output_params():
    from nnc.ir.ops.int8_softmax import softmax_s8_params
    from nnc.ir.types import QuantParams

    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"], axis=-1)]
    samples = _samples((2, 16))
    g, q = _quantized(_model(nodes, {"w": _w(10, 16) * 3, "b": _w(10)}, [2, 16], [2, 10]),
                      samples)
    assert [op.kind for op in q.ops] == ["quantize_linear", "fully_connected_s8", "softmax_s8",
                                         "dequantize_linear"]
    fc, sm, dq = q.ops[1:]
    assert sm.inputs == (fc.outputs[0].name,)
    x_scale = fc.outputs[0].type.quant.scale[0]
    mult, shift, diff_min = softmax_s8_params(x_scale)
    assert dict(sm.attrs) == dict(axis=1, input_multiplier=mult, input_left_shift=shift,
                                  diff_min=diff_min)
    assert sm.outputs[0].type.quant == QuantParams((1 / 256,), (-128,))
    consts = q.constant_map()
    assert consts[dq.inputs[1]].tolist() == [1 / 256] and consts[dq.inputs[2]].tolist() == [-128]
    for s in samples:
        got = run_graph(q, s)["y"]
        np.testing.assert_array_equal(np.round(got * 256), got * 256)  # 1/256 steps
        np.testing.assert_allclose(got, run_graph(g, s)["y"], atol=0.05)
    assert _sqnr(g, q, samples) > 25


def test_softmax_over_a_middle_axis_stays_float():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Softmax", ["c"], ["y"], axis=1)]
    samples = _samples((1, 2, 3, 3))
    g, q = _quantized(_model(nodes, {"w": _w(4, 2, 1, 1)}, [1, 2, 3, 3], [1, 4, 3, 3]),
                      samples)
    assert [op.kind for op in q.ops] == ["quantize_linear", "conv_s8", "dequantize_linear",
                                         "softmax"]


def test_float_op_in_the_middle_gets_dequantize_and_quantize():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"]),
             helper.make_node("Softmax", ["c"], ["s"], axis=1),  # a middle axis: no int8 form
             helper.make_node("Conv", ["s", "w2"], ["y"])]
    inits = {"w1": _w(2, 2, 1, 1), "w2": _w(3, 2, 1, 1)}
    samples = _samples((1, 2, 3, 3))
    g, q = _quantized(_model(nodes, inits, [1, 2, 3, 3], [1, 3, 3, 3]), samples)
    assert [op.kind for op in q.ops] == [
        "quantize_linear", "conv_s8", "dequantize_linear", "softmax", "quantize_linear",
        "conv_s8", "dequantize_linear"]
    assert q.ops[3].inputs == ("c",) and q.ops[3].outputs[0].type.dtype == "float32"
    assert _sqnr(g, q, samples) > 25


@pytest.mark.parametrize("op_type, attrs", [("Sigmoid", {}), ("Tanh", {}), ("HardSwish", {}),
                                            ("HardSigmoid", {"alpha": 0.2, "beta": 0.5})])
def test_unary_float_op_between_int8_layers_becomes_a_table(op_type, attrs):
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"]),
             helper.make_node(op_type, ["c"], ["s"], **attrs),
             helper.make_node("Conv", ["s", "w2"], ["y"])]
    inits = {"w1": _w(2, 2, 1, 1), "w2": _w(3, 2, 1, 1)}
    samples = _samples((1, 2, 3, 3))
    model = _model(nodes, inits, [1, 2, 3, 3], [1, 3, 3, 3])
    model.opset_import[0].version = max(model.opset_import[0].version, 14)
    g, q = _quantized(model, samples)
    assert [op.kind for op in q.ops] == [
        "quantize_linear", "conv_s8", "lut_s8", "conv_s8", "dequantize_linear"]
    lut = q.ops[2]
    xq, oq = q.value_types()[lut.inputs[0]].quant, lut.outputs[0].type.quant
    table = q.constant_map()[lut.inputs[1]]
    assert table.shape == (256,) and table.dtype == np.int8
    # entry k is the float op on int8 value k - 128, quantized with the output's parameters
    xs = (np.arange(-128, 128) - xq.zero_point[0]) * np.float32(xq.scale[0])
    unary = next(op for op in g.ops if op.kind != "conv")
    ref = get_op(unary.kind).reference([xs.astype(np.float32)], unary.attrs)[0]
    want = np.clip(np.round(ref / oq.scale[0]) + oq.zero_point[0], -128, 127)
    assert np.abs(table.astype(int) - want).max() <= 1  # halves: away from zero vs to even
    assert np.count_nonzero(table.astype(int) != want) <= 2
    assert _sqnr(g, q, samples) > 25


def test_paddle_hard_swish_chain_is_one_table():
    """x * clip(x + 3, 0, 6) / 6 between convs: four float ops of one int8 value, one lut_s8
    (one rounding instead of four); an intermediate used elsewhere ends the region."""
    three, six, zero = (numpy_helper.from_array(np.array(v, np.float32), n)
                        for v, n in ((3.0, "three"), (6.0, "six"), (0.0, "zero")))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"]),
             helper.make_node("Add", ["c", "three"], ["a"]),
             helper.make_node("Clip", ["a", "zero", "six"], ["r"]),
             helper.make_node("Mul", ["c", "r"], ["m"]),
             helper.make_node("Div", ["m", "six"], ["h"]),
             helper.make_node("Conv", ["h", "w2"], ["y"])]
    inits = {"w1": _w(2, 2, 1, 1), "w2": _w(3, 2, 1, 1)}
    samples = _samples((1, 2, 3, 3))
    model = _model(nodes, inits, [1, 2, 3, 3], [1, 3, 3, 3])
    model.graph.initializer.extend([three, six, zero])
    g, q = _quantized(model, samples)
    assert [op.kind for op in q.ops] == [
        "quantize_linear", "conv_s8", "lut_s8", "conv_s8", "dequantize_linear"]
    assert _sqnr(g, q, samples) > 25


def test_split_slice_concat_resize_move_int8_codes():
    """Data movement stays int8 with the input's parameters (split, slice, nearest resize); a
    concat of inputs in other parameters requantizes them with an identity table."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"]),
             helper.make_node("Split", ["c"], ["s0", "s1"], axis=1),
             helper.make_node("Slice", ["s1", "st", "en", "ax"], ["sl"]),
             helper.make_node("Sigmoid", ["s0"], ["g"]),
             helper.make_node("Concat", ["g", "sl"], ["cat"], axis=1),
             helper.make_node("Resize", ["cat", "", "sc"], ["up"], mode="nearest"),
             helper.make_node("Conv", ["up", "w2"], ["y"])]
    inits = {"w1": _w(4, 2, 1, 1), "w2": _w(3, 3, 1, 1)}
    samples = _samples((1, 2, 3, 3))
    model = _model(nodes, inits, [1, 2, 3, 3], [1, 3, 6, 6])
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array(v, np.int64), n)
        for v, n in (([0], "st"), ([1], "en"), ([1], "ax"))])
    model.graph.initializer.append(numpy_helper.from_array(
        np.array([1, 1, 2, 2], np.float32), "sc"))
    g, q = _quantized(model, samples)
    kinds = [op.kind for op in q.ops]
    assert kinds.count("quantize_linear") == 1 and kinds.count("dequantize_linear") == 1
    for kind in ("split", "slice", "concat", "resize"):
        op = next(o for o in q.ops if o.kind == kind)
        assert all(v.type.dtype == "int8" for v in op.outputs), kind
    split = next(o for o in q.ops if o.kind == "split")
    tq = q.value_types()
    assert all(tq[v.name].quant == tq[split.inputs[0]].quant for v in split.outputs)
    assert _sqnr(g, q, samples) > 20


def test_intermediate_graph_output_is_not_folded():
    nodes, inits = CONV_RELU
    samples = _samples((1, 3, 4, 4))
    g, q = _quantized(_model(nodes, inits, [1, 3, 4, 4], [1, 4, 4, 4], ["c"]), samples)
    conv = next(op for op in q.ops if op.kind == "conv_s8")
    assert conv.attrs["act_min"] == -128  # the relu is not folded: %c is needed as it is
    assert {v.name for v in q.outputs} == {"y", "c"}
    assert all(v.type.dtype == "float32" for v in q.outputs)
    for s in samples[:2]:
        ref, got = run_graph(g, s), run_graph(q, s)
        for n in ("y", "c"):
            assert sqnr_db(ref[n], got[n]) > 25


def test_values_without_a_range_stay_float():
    g = PassManager(FLOAT_PASSES).run(import_model(_model(*CONV_RELU, [1, 3, 4, 4],
                                                          [1, 4, 4, 4])))
    q = quantize_graph(g, {})
    assert [op.kind for op in q.ops] == [op.kind for op in g.ops]
    s = _samples((1, 3, 4, 4), 1)[0]
    np.testing.assert_array_equal(run_graph(g, s)["y"], run_graph(q, s)["y"])


def test_pass_without_ranges_is_a_user_error():
    g = import_model(_model(*CONV_RELU, [1, 3, 4, 4], [1, 4, 4, 4]))
    with pytest.raises(NncError, match="calibrated ranges"):
        PassManager("quantize").run(g)


def test_pass_takes_ranges_from_facts():
    samples = _samples((1, 3, 4, 4))
    g = PassManager(FLOAT_PASSES).run(import_model(_model(*CONV_RELU, [1, 3, 4, 4],
                                                          [1, 4, 4, 4])))
    pm = PassManager("quantize")
    pm.facts["quant_ranges"] = calibrate(g, samples)
    q = pm.run(g)
    assert "conv_s8" in [op.kind for op in q.ops] and pm.facts["quantized_graph"] is q


def test_int8_graph_is_bit_exact_between_interpreter_and_host_c(tmp_path):
    """Every int8 op kind, compiled to C, against the graph interpreter (the output is a
    dequantized int8 tensor, so equal int8 values give equal floats)."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], group=4, pads=[1, 1, 1, 1],
                              strides=[2, 2]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "p1"], ["s"]),
             helper.make_node("Mul", ["s", "p1"], ["m"]),
             helper.make_node("AveragePool", ["m"], ["a"], kernel_shape=[2, 2],
                              pads=[0, 0, 1, 1]),
             helper.make_node("Flatten", ["a"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["g"], transB=1),
             helper.make_node("MatMul", ["g", "w4"], ["h"]),
             helper.make_node("Add", ["h", "b4"], ["y"])]
    inits = {"w1": _w(4, 2, 3, 3), "b1": _w(4), "w2": _w(4, 1, 3, 3), "w3": _w(6, 64),
             "b3": _w(6), "w4": _w(6, 5), "b4": _w(5)}
    model = _model(nodes, inits, [1, 2, 8, 8], [1, 5])
    samples = _samples((1, 2, 8, 8))
    g, q = _quantized(model, samples)
    kinds = {op.kind for op in q.ops}
    assert {"conv_s8", "max_pool_s8", "add_s8", "mul_s8", "avg_pool_s8",
            "fully_connected_s8"} <= kinds
    np.savez(tmp_path / "cal.npz", x=np.concatenate([s["x"] for s in samples]))
    compiled = nnc.compile(model, quantize="int8", calibration=tmp_path / "cal.npz",
                           evaluation=samples[0], bench=False)  # calibrate on all samples
    assert compiled.info["quantization"]["output_sqnr_db"]["y"] > 20
    for s in _samples((1, 2, 8, 8), 3):
        np.testing.assert_array_equal(compiled.run(s)["y"], run_graph(q, s)["y"])
