"""Already-quantized ONNX (onnxruntime quantize_static, QDQ and QOperator) compiled by nnc for the
host agrees with onnxruntime's execution of the same model: output codes within 1 LSB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

import nnc
from benchmarks.models import MODELS
from nnc.compiler.onnx.importer import import_model
from nnc.ir.graph import Graph
from nnc.ir.interp import run_graph, run_op
from nnc.passes.fuse_qdq import fuse_qdq_graph


class _Reader(CalibrationDataReader):
    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self.it = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.it, None)


def _input(model: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    vi = model.graph.input[0]
    return vi.name, tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)


def _quantized(tmp: Path, key: str, fmt: QuantFormat) -> Path:
    model = MODELS[key]()
    model.ir_version = min(model.ir_version, 8)  # what the installed onnxruntime reads
    src, dst = tmp / f"{key}.onnx", tmp / f"{key}_{fmt.name}.onnx"
    onnx.save(model, src)
    name, shape = _input(model)
    rng = np.random.default_rng(0)
    samples = [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(16)]
    quantize_static(str(src), str(dst), _Reader(samples), quant_format=fmt, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return dst


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    # onnxruntime's fused int8 kernels (AVX2 without VNNI) saturate with full-range weights
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(_session(path).run(None, feeds)[0])


def _output_scale(path: Path) -> float:
    """Scale of the DequantizeLinear (or QLinear op) that makes the graph output's last codes."""
    m = onnx.load(str(path))
    by_out = {o: n for n in m.graph.node for o in n.output}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    node = by_out[m.graph.output[0].name]
    while node.op_type == "Identity":
        node = by_out[node.input[0]]
    assert node.op_type == "DequantizeLinear", node.op_type
    return float(inits[node.input[1]].ravel()[0])


def _agreement(path: Path, compiled: nnc.CompiledModel, n: int) -> tuple[float, float]:
    """(share of output elements within 1 LSB of onnxruntime, share exactly equal) on n random
    inputs."""
    m = onnx.load(str(path))
    name, shape = _input(m)
    scale = _output_scale(path)
    sess = _session(path)
    rng = np.random.default_rng(11)
    lsb = []
    for _ in range(n):
        x = rng.standard_normal(shape).astype(np.float32)
        got = next(iter(compiled.run({name: x}).values()))
        ref = np.asarray(sess.run(None, {name: x})[0])
        lsb.append(np.round(np.abs(got.astype(np.float64) - ref) / scale).ravel())
    d = np.concatenate(lsb)
    return float(np.mean(d <= 1)), float(np.mean(d == 0))


def _check_fused(g: Graph, weighted: str) -> None:
    kinds = [op.kind for op in g.ops]
    assert weighted in kinds, kinds
    assert not {"conv", "gemm", "matmul", "qlinear_conv", "qlinear_matmul"} & set(kinds), kinds
    types = g.value_types()
    consts = g.constant_map()
    for op in g.ops:
        if op.kind in ("conv_s8", "fully_connected_s8"):
            assert op.inputs[1] in consts and types[op.inputs[1]].dtype == "int8"
            assert types[op.inputs[1]].quant is not None
    # no float copy of any weight: the only float constants are small (scales, BN statistics)
    big = [c.name for c in g.constants if c.data.dtype == np.float32 and c.data.size > 128]
    assert not big, big


@pytest.mark.parametrize("key,fmt,weighted", [
    ("kws", QuantFormat.QDQ, "conv_s8"),
    ("kws", QuantFormat.QOperator, "conv_s8"),  # QLinearConv, com.microsoft QGemm & co.
    # ten int8 FCs with float BatchNorm islands between them: a flipped code early on is
    # amplified (BN gain up to 3.6 LSB per LSB) and spread by every later FC
    ("ad", QuantFormat.QDQ, "fully_connected_s8"),
])
def test_compiled_quantized_model_agrees_with_onnxruntime(
        tmp_path: Path, key: str, fmt: QuantFormat, weighted: str) -> None:
    path = _quantized(tmp_path, key, fmt)
    _check_fused(fuse_qdq_graph(import_model(path)), weighted)
    within, exact = _agreement(path, nnc.compile(path, target="host", bench=False,
                                                   int8_rounding="onnx"), 50)
    print(f"{key} {fmt.name}: {within:.2%} within 1 LSB, {exact:.2%} exact")
    assert within >= 0.99, (within, exact)


def test_ad_layers_agree_with_onnxruntime_arithmetic(tmp_path: Path) -> None:
    """Every fused int8 op of AD (fully_connected_s8 from Gemm and MatMul, add_s8), fed the
    reference's own int8 inputs, gives its int8 codes within 1 LSB, the FCs 99.97% exactly
    (TFLite's double rounding left 0.14% of their codes 1 LSB off; fuse-qdq's multipliers make
    the same arithmetic round once). The reference is the unfused import (onnxruntime's float
    arithmetic: within 1 LSB of onnxruntime itself, the first check, as float summation order
    differs)."""
    path = _quantized(tmp_path, "ad", QuantFormat.QDQ)
    g = import_model(path)
    fused = fuse_qdq_graph(g)
    _check_fused(fused, "fully_connected_s8")
    name, shape = _input(onnx.load(str(path)))
    consts = fused.constant_map()
    scale = _output_scale(path)
    rng = np.random.default_rng(5)
    diffs: dict[str, list[np.ndarray]] = {"fully_connected_s8": [], "add_s8": []}
    for _ in range(8):
        x = rng.standard_normal(shape).astype(np.float32)
        env = run_graph(g, {name: x}, keep_all=True)
        assert np.abs(env[g.outputs[0].name] - _ort(path, {name: x})).max() <= scale * 1.001
        for op in fused.ops:
            if op.kind.endswith("_s8"):
                args = [env[n] if n in env else consts[n] for n in op.inputs]
                got = run_op(op, args)[0].astype(np.int64)
                diffs[op.kind].append(np.abs(got - env[op.outputs[0].name]).ravel())
    fc, add = (np.concatenate(diffs[k]) for k in ("fully_connected_s8", "add_s8"))
    assert fc.max() <= 1 and np.mean(fc == 0) >= 0.9997, (fc.max(), np.mean(fc == 0))
    assert add.max() <= 1 and np.mean(add == 0) >= 0.999, (add.max(), np.mean(add == 0))


def test_import_keeps_integer_weights_and_their_parameters(tmp_path: Path) -> None:
    g = import_model(_quantized(tmp_path, "kws", QuantFormat.QDQ))
    types = g.value_types()
    consts = g.constant_map()
    weights = [op.inputs[0] for op in g.ops
               if op.kind == "dequantize_linear" and op.inputs[0] in consts]
    assert weights and all(consts[w].dtype in (np.int8, np.int32) for w in weights)
    int8 = [w for w in weights if consts[w].dtype == np.int8 and consts[w].ndim == 4]
    assert int8 and all(types[w].quant is not None and types[w].quant.axis == 0 for w in int8)
