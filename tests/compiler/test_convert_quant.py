"""Quantization converters against onnxruntime (one-node models through import_model, run by the
graph interpreter and the loop interpreter), the ONNX node conformance cases of these ops compiled
to C, and whole QDQ / QOperator models made by onnxruntime's quantize_static compiled with
nnc.compile and compared with onnxruntime running the same quantized model."""

import logging
import shutil
import tempfile
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.compiler.errors import NncError
from nnc.compiler.onnx.importer import import_model
from nnc.ir.interp import run_graph
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.types import QuantParams
from nnc.passes.lower_to_loops import lower_to_loops
from nnc.passes.manager import PassContext

RNG = np.random.default_rng(5)


def _q(shape, dtype, lo=None, hi=None):
    info = np.iinfo(dtype)
    return RNG.integers(info.min if lo is None else lo, (info.max if hi is None else hi) + 1,
                        shape).astype(dtype)


def _f(*values):
    return np.array(values if len(values) != 1 else values[0], np.float32)


def _model(op_type, inputs, attrs, opset, const_inputs):
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    node = helper.make_node(op_type, names, ["y"], name="n0", **attrs)
    g_in = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
            for i, (n, x) in enumerate(zip(names, inputs, strict=True))
            if n and i not in const_inputs]
    inits = [numpy_helper.from_array(inputs[i], names[i]) for i in const_inputs]
    g = helper.make_graph([node], "g", g_in, [helper.make_empty_tensor_value_info("y")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 10)  # what onnxruntime accepts
    return m


def _ort(model, feeds, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def check(op_type, inputs, attrs=None, opset=21, const_inputs=None):
    """import + reference and import + lower + loop interpreter, both equal to onnxruntime.
    By default every input but the first is a constant (as in real quantized models)."""
    const = tuple(range(1, len(inputs))) if const_inputs is None else tuple(const_inputs)
    const = tuple(i for i in const if inputs[i] is not None)
    model = _model(op_type, inputs, attrs or {}, opset, const)
    feeds = {f"in{i}": x for i, x in enumerate(inputs) if x is not None and i not in const}
    expected = _ort(model, feeds)
    graph = import_model(model)
    got = run_graph(graph, feeds)["y"]
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    module = lower_to_loops(graph, PassContext())
    looped = run_loop_module(module, {module.inputs[k]: v for k, v in enumerate(feeds.values())})
    np.testing.assert_array_equal(looped[module.outputs[0]], expected)
    return graph


# ---------------------------------------------------------------- QuantizeLinear / Dequantize


@pytest.mark.parametrize("opset", [10, 13, 19, 21])
def test_quantize_linear_per_tensor(opset):
    x = np.concatenate([RNG.standard_normal(20) * 3, [0.5, 1.5, -2.5, 100.0, -100.0]])
    x = x.astype(np.float32).reshape(5, 5)
    graph = check("QuantizeLinear", [x, _f(0.05), np.array(-3, np.int8)], opset=opset)
    assert graph.outputs[0].type.quant == QuantParams((0.05000000074505806,), (-3,), None)
    check("QuantizeLinear", [x, _f(0.05), np.array(9, np.uint8)], opset=opset)
    check("QuantizeLinear", [x, _f(0.05)], opset=opset)  # default uint8, zero point 0


@pytest.mark.parametrize("opset", [13, 19, 21])
@pytest.mark.parametrize("axis", [1, -1, 0])
def test_quantize_dequantize_per_axis(opset, axis):
    x = RNG.standard_normal((3, 4, 2)).astype(np.float32) * 2
    n = x.shape[axis]
    scale = np.linspace(0.01, 0.05, n).astype(np.float32)
    zp = _q((n,), "int8", -10, 10)
    graph = check("QuantizeLinear", [x, scale, zp], {"axis": axis}, opset=opset)
    quant = graph.outputs[0].type.quant
    assert quant is not None and quant.axis == axis % 3 and len(quant.scale) == n
    xq = _q(x.shape, "int8")
    check("DequantizeLinear", [xq, scale, zp], {"axis": axis}, opset=opset)
    check("DequantizeLinear", [xq, scale, zp], {"axis": axis}, opset=opset, const_inputs=())


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32"])
def test_dequantize_linear(dtype):
    wide = dtype == "int32"
    x = _q((2, 3, 4), dtype, -5000 if wide else None, 5000 if wide else None)
    zp = np.array(0 if dtype == "int32" else 4, dtype)
    check("DequantizeLinear", [x, _f(0.125), zp], opset=13)
    check("DequantizeLinear", [x, _f(0.125)], opset=10)


def test_blocked_quantization_opset21():
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    scale = np.array([[0.1, 0.2], [0.3, 0.05]], np.float32)
    zp = np.array([[1, -2], [0, 3]], np.int8)
    check("QuantizeLinear", [x, scale, zp], {"axis": 1, "block_size": 3})
    check("DequantizeLinear", [_q((2, 6), "int8"), scale, zp], {"axis": 1, "block_size": 3})
    check("QuantizeLinear", [x, scale], {"axis": 1, "block_size": 3,
                                         "output_dtype": TensorProto.INT8})


def test_quantize_fp16_and_int16():
    x = (RNG.standard_normal((4, 4)) * 10).astype(np.float16)
    check("QuantizeLinear", [x, np.array(0.1, np.float16), np.array(2, np.int8)], opset=19)
    xf = (RNG.standard_normal((4, 4)) * 1000).astype(np.float32)
    check("QuantizeLinear", [xf, _f(0.1), np.array(-7, np.int16)], opset=21)
    check("DequantizeLinear", [_q((4, 4), "uint16"), _f(0.1), np.array(300, np.uint16)],
          opset=21)


@pytest.mark.parametrize("op_type,inputs,attrs,message", [
    ("QuantizeLinear", [_f(1.0, 2.0), _f(0.1)], {"output_dtype": TensorProto.FLOAT8E4M3FN},
     "FLOAT8E4M3FN is not supported"),
    ("QuantizeLinear", [_f(1.0, 2.0), _f(0.1)], {"output_dtype": TensorProto.INT4},
     "output_dtype INT4 is not supported"),
    ("QuantizeLinear", [np.zeros((2, 3), np.float32), _f(0.1, 0.2)], {"axis": 1},
     "1-D tensor of 3"),
    ("QuantizeLinear", [np.zeros((2, 3), np.float32), _f(0.1, 0.2)], {"axis": 2},
     "axis=2 is out of range"),
    ("DequantizeLinear", [np.zeros((2, 4), np.int8), np.full((2, 3), 0.1, np.float32)],
     {"axis": 1, "block_size": 2}, "does not fit"),
])
def test_conversion_errors(op_type, inputs, attrs, message):
    model = _model(op_type, inputs, attrs, 21, tuple(range(1, len(inputs))))
    with pytest.raises(NncError, match=message):
        import_model(model)


# ---------------------------------------------------------------- integer / QLinear ops


@pytest.mark.parametrize("attrs", [
    {},
    {"pads": [1, 0, 1, 2], "strides": [2, 1]},
    {"auto_pad": "SAME_UPPER", "strides": [2, 1]},
    {"dilations": [1, 2], "pads": [0, 2, 0, 2]},
    {"group": 2, "pads": [1, 1, 1, 1]},
])
def test_conv_integer(attrs):
    x, w = _q((1, 4, 6, 5), "uint8"), _q((4, 4 // attrs.get("group", 1), 3, 3), "uint8")
    check("ConvInteger", [x, w, np.array(120, np.uint8), np.array(130, np.uint8)], attrs,
          opset=10)
    check("ConvInteger", [x, w], attrs, opset=10)


@pytest.mark.parametrize("attrs", [
    {"pads": [1, 1, 1, 1]},
    {"pads": [0, 1, 2, 0], "strides": [2, 2]},
    {"group": 4, "pads": [1, 1, 1, 1]},  # depthwise
    {"auto_pad": "SAME_LOWER", "kernel_shape": [3, 3]},
])
@pytest.mark.parametrize("xdtype,per_channel", [("uint8", True), ("int8", True),
                                                 ("uint8", False)])
def test_qlinear_conv(attrs, xdtype, per_channel):
    cg = 4 // attrs.get("group", 1)
    # 7-bit weights: onnxruntime's x86 u8s8 kernels (no VNNI) saturate int16 pair sums of
    # full-range weights (nnc is exact there: tests/ir/test_ops_quant.py vs onnx.reference)
    x, w = _q((1, 4, 5, 5), xdtype), _q((6 if cg == 4 else 4, cg, 3, 3), "int8", -63, 63)
    oc = w.shape[0]
    w_scale = np.linspace(0.002, 0.02, oc).astype(np.float32) if per_channel else _f(0.01)
    w_zp = np.zeros(oc if per_channel else (), np.int8)
    bias = RNG.integers(-3000, 3000, oc).astype(np.int32)
    y_zp = np.array(5 if xdtype == "int8" else 128, xdtype)
    inputs = [x, _f(0.04), np.array(3, xdtype), w, w_scale, w_zp, _f(0.2), y_zp, bias]
    graph = check("QLinearConv", inputs, attrs, opset=10)
    assert graph.outputs[0].type.quant == QuantParams((0.20000000298023224,), (int(y_zp),), None)
    check("QLinearConv", inputs[:8], attrs, opset=10)


@pytest.mark.parametrize("ashape,bshape", [((3, 5), (5, 4)), ((2, 3, 5), (5, 4)),
                                           ((2, 3, 4), (2, 4, 3))])
def test_matmul_integer(ashape, bshape):
    a, b = _q(ashape, "uint8"), _q(bshape, "int8", -63, 63)  # 7-bit: see test_qlinear_conv
    check("MatMulInteger", [a, b, np.array(100, np.uint8), np.array(3, np.int8)], opset=10)
    check("MatMulInteger", [a, b, np.array(100, np.uint8)], opset=10, const_inputs=(2,))
    check("MatMulInteger", [a, _q(bshape, "uint8")], opset=10, const_inputs=())


@pytest.mark.parametrize("ashape,bshape", [((3, 5), (5, 4)), ((2, 3, 5), (5, 4))])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("opset", [10, 21])
def test_qlinear_matmul(ashape, bshape, dtype, opset):
    a, b = _q(ashape, dtype), _q(bshape, dtype)
    inputs = [a, _f(0.05), np.array(3, dtype), b, _f(0.02), np.array(1, dtype), _f(0.3),
              np.array(10, dtype)]
    check("QLinearMatMul", inputs, opset=opset)
    check("QLinearMatMul", inputs, opset=opset, const_inputs=())


# ---------------------------------------------------------------- ONNX node conformance

PREFIXES = ("test_quantizelinear", "test_dequantizelinear", "test_qlinearconv",
            "test_qlinearmatmul", "test_convinteger", "test_matmulinteger")


def _conformance_cases():
    from onnx.backend.test.case.node import collect_testcases

    from tests.test_conformance import _graph_type_problem

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    # int4/int2/float8/float4 element types are outside nnc's dtypes
    return [c for c in cases if c.name.startswith(PREFIXES)
            and _graph_type_problem(c.model.graph) is None]


CASES = _conformance_cases()


def test_conformance_selection():
    assert len(CASES) >= 20, [c.name for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance_case(case, tmp_path):
    """Compiled to C with scales and zero points as runtime inputs (as the cases give them)."""
    from tests.test_conformance import case_io, compare, run_nnc

    feeds, expected = case_io(case)
    assert compare(expected, run_nnc(case.model, feeds, tmp_path)) is None


# ---------------------------------------------------------------- whole quantized models


def _float_net():
    def w(name, *shape, k=0.3):
        return numpy_helper.from_array((RNG.standard_normal(shape) * k).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2],
                         group=2),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "w3"], ["m"]),
        helper.make_node("Add", ["m", "b3"], ["y"]),
    ]
    inits = [w("w1", 8, 3, 3, 3), w("b1", 8, k=0.1), w("w2", 8, 4, 3, 3, k=0.2),
             w("b2", 8, k=0.1), w("w3", 32, 10, k=0.2), w("b3", 10, k=0.1),
             numpy_helper.from_array(np.array([1, 32], np.int64), "shape")]
    g = helper.make_graph(
        nodes, "qnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _quantized(fmt, reduce_range, op_types=None):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    samples = [{"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(16)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(samples)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d:
        onnx.save(_float_net(), f"{d}/f.onnx")
        logging.disable(logging.WARNING)  # quantize_static's pre-processing advice
        try:
            quantize_static(f"{d}/f.onnx", f"{d}/q.onnx", Reader(), per_channel=True,
                            quant_format=getattr(QuantFormat, fmt), reduce_range=reduce_range,
                            op_types_to_quantize=op_types)
        finally:
            logging.disable(logging.NOTSET)
        return onnx.load(f"{d}/q.onnx")


def _lsb_agreement(model, compiled, level, n=20):
    """Fraction of output elements within 1 LSB of onnxruntime (one LSB: the output scale of
    the last quantized op — QLinearConv/QLinearMatMul's y_scale or a QuantizeLinear's scale),
    and the largest difference in LSBs."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    last = [n for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "QLinearConv", "QLinearMatMul")][-1]
    scale = inits[last.input[1] if last.op_type == "QuantizeLinear" else last.input[6]]
    diffs = []
    for _ in range(n):
        x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
        want = _ort(model, {"x": x}, level)
        got = compiled.run({"x": x})["y"]
        diffs.append(np.abs(np.rint(want / scale) - np.rint(got / scale)).ravel())
    d = np.concatenate(diffs)
    return float((d <= 1).mean()), float(d.max())


@pytest.mark.parametrize("reduce_range,level", [
    # onnxruntime's fused int8 kernels (QDQ -> QLinearConv), 7-bit weights
    (True, ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
    # full-range int8 weights: onnxruntime's unfused QDQ graph (its fused x86 u8s8 kernels
    # without VNNI saturate int16 pair sums, tens of LSBs off the float model)
    (False, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
])
def test_qdq_model_matches_onnxruntime(reduce_range, level, tmp_path):
    model = _quantized("QDQ", reduce_range)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    compiled = nnc.compile(model, target="host", output_dir=tmp_path, bench=False)
    within, worst = _lsb_agreement(model, compiled, level)
    assert within >= 0.99, (within, worst)


def test_qoperator_model_matches_onnxruntime(tmp_path):
    # QLinearAdd, QLinearMaxPool... are com.microsoft ops: the rest stays float
    model = _quantized("QOperator", reduce_range=True, op_types=["Conv", "MatMul"])
    ops = {n.op_type for n in model.graph.node}
    assert {"QLinearConv", "QLinearMatMul"} <= ops, ops
    compiled = nnc.compile(model, target="host", output_dir=tmp_path, bench=False)
    within, worst = _lsb_agreement(model, compiled, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    assert within >= 0.99, (within, worst)


def test_qdq_import_annotates_quantized_values():
    graph = import_model(_quantized("QDQ", reduce_range=True))
    quantized = [v for op in graph.ops for v in op.outputs if op.kind == "quantize_linear"]
    assert quantized and all(v.type.quant is not None and v.type.quant.axis is None
                             for v in quantized)


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="needs gcc-arm-none-eabi and qemu-system-arm (make install)")
@pytest.mark.parametrize("fmt,op_types", [("QDQ", None), ("QOperator", ["Conv", "MatMul"])])
def test_quantized_model_on_cortex_m7_matches_host(fmt, op_types, tmp_path, monkeypatch):
    model = _quantized(fmt, reduce_range=True, op_types=op_types)
    feeds = {"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    # Cortex-M rounds the TFLite way by default (the host: onnxruntime's): same rounding here
    board = nnc.compile(model, target="cortex-m7", output_dir=tmp_path / "m7")
    assert board.info["int8_rounding"] == "tflite"
    got = board.run(feeds)["y"]
    # the QOperator model keeps float ops (a dequantize fused with a float add: one a * b + c
    # expression), which a host clang contracts into an FMA (-ffp-contract=on) and gcc 12, the
    # board's compiler too, does not: bit for bit with the host built by gcc, within rounding
    # of the default host compiler
    for cc in ("gcc", None):
        if cc is None:
            monkeypatch.delenv("NNC_CC", raising=False)
        else:
            monkeypatch.setenv("NNC_CC", cc)
        host = nnc.compile(model, target="host", output_dir=tmp_path / f"host-{cc}", bench=False,
                           int8_rounding="tflite")
        if cc == "gcc":
            np.testing.assert_array_equal(got, host.run(feeds)["y"])
        else:
            np.testing.assert_allclose(got, host.run(feeds)["y"], rtol=1e-6, atol=1e-7)
