"""The int8 accuracy report (compiler/report.py): per-layer SQNR against the float graph, output
SQNR / max error / top-1 agreement on a held-out or separate evaluation set, the API and CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save_model

import nnc
from benchmarks.models import MODELS
from nnc.compiler.api import CompiledModel
from nnc.compiler.onnx.importer import import_model
from nnc.compiler.report import (
    CALIBRATION,
    HELD_OUT,
    SEPARATE,
    QuantReport,
    quant_report,
    split_holdout,
)
from nnc.errors import NncError
from nnc.ir.interp import run_graph
from nnc.passes.calibrate import calibrate
from nnc.passes.manager import PassManager
from nnc.passes.quant_scheme import sqnr_db

FLOAT_PASSES = "fold-constants,eliminate-dead-code,fold-batchnorm,fold-constants"


def _w(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(np.float32)


def _model(nodes, inits, x_shape, y_shape, y="y"):
    g = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _classifier(softmax: bool = True):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["l" if softmax else "y"], transB=1)]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["l"], ["y"], axis=-1))
    return _model(nodes, {"w": _w(4, 2, 3, 3), "b": _w(4), "fc": _w(5, 16)},
                  [1, 2, 4, 4], [1, 5])


def _autoencoder():
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    return _model(nodes, {"w1": _w(16, 8), "w2": _w(8, 16)}, [1, 16], [1, 16])


def _samples(shape, n, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [{"x": (scale * rng.standard_normal(shape)).astype(np.float32)} for _ in range(n)]


def _quantized(model, calib, ranges_edit=None):
    """(float graph, int8 graph, quant_map) as nnc.compile makes them."""
    g = PassManager(FLOAT_PASSES).run(import_model(model))
    ranges = calibrate(g, calib, "minmax")
    if ranges_edit:
        ranges.update(ranges_edit)
    pm = PassManager("quantize")
    pm.facts["quant_ranges"] = ranges
    q = pm.run(g)
    return g, q, pm.facts["quant_map"]


def test_split_holdout_keeps_the_last_fifth_out_of_calibration():
    s = _samples((1, 2), 40)
    cal, ev, src = split_holdout(s)
    assert (len(cal), len(ev), src) == (32, 8, HELD_OUT)
    assert ev[0] is s[32] and cal[-1] is s[31]
    cal, ev, _ = split_holdout(s[:6])
    assert (len(cal), len(ev)) == (5, 1)  # at least one held out
    cal, ev, src = split_holdout(s[:1])
    assert cal == ev == s[:1] and src == CALIBRATION


def test_quant_map_names_the_float_value_of_every_int8_op_output():
    g, q, qmap = _quantized(_classifier(), _samples((1, 2, 4, 4), 8))
    float_values = set(g.value_types())
    int8_outputs = [v.name for op in q.ops for v in op.outputs if v.type.dtype == "int8"]
    assert int8_outputs and all(qmap[n] in float_values for n in int8_outputs)
    conv = next(op for op in q.ops if op.kind == "conv_s8")
    assert qmap[conv.outputs[0].name] == "r"  # the relu folded into the conv's clamp


def test_layer_and_output_figures_match_a_direct_computation():
    model = _classifier()
    calib, evals = _samples((1, 2, 4, 4), 16), _samples((1, 2, 4, 4), 5, seed=7)
    g, q, qmap = _quantized(model, calib)
    rep = quant_report(g, q, qmap, evals)
    assert rep.evaluation == SEPARATE and rep.samples == 5
    # one row per int8-valued op, in graph order
    expect = [(i, op.kind) for i, op in enumerate(q.ops) if op.outputs[0].type.dtype == "int8"]
    assert [(s.index, s.op) for s in rep.layers] == expect
    assert [s.op for s in rep.layers] == ["quantize_linear", "conv_s8", "max_pool_s8", "reshape",
                                          "fully_connected_s8", "softmax_s8"]
    refs = [run_graph(g, s, keep_all=True) for s in evals]
    gots = [run_graph(q, s, keep_all=True) for s in evals]
    for st in rep.layers:
        qp = q.value_types()[st.value].quant
        ref = np.concatenate([r[st.float_value].ravel() for r in refs])
        got = np.concatenate([(x[st.value].ravel().astype(np.float64) - qp.zero_point[0])
                              * qp.scale[0] for x in gots])
        assert st.sqnr_db == pytest.approx(sqnr_db(ref, got), abs=1e-9)
        assert st.max_abs_error == pytest.approx(float(np.abs(ref - got).max()))
        assert 10 < st.sqnr_db < 60  # evaluation ~ calibration data
        # softmax_s8's fixed range tops out at 255/256: a confident class clips there
        assert st.clipped == 0.0 or st.op == "softmax_s8"
    (out,) = rep.outputs
    ref = np.concatenate([r["y"] for r in refs])
    got = np.concatenate([x["y"] for x in gots])
    assert out.sqnr_db == pytest.approx(sqnr_db(ref, got), abs=1e-9)
    assert out.top1_rows == 5
    assert out.top1_agreement == pytest.approx(np.mean(ref.argmax(-1) == got.argmax(-1)))


def test_a_bad_range_shows_up_at_its_layer_and_after():
    calib = _samples((1, 2, 4, 4), 16)
    g, q, qmap = _quantized(_classifier(), calib)
    good = quant_report(g, q, qmap, calib[:4])
    g, q, qmap = _quantized(_classifier(), calib, {"r": (0.0, 0.05)})  # conv+relu squeezed
    bad = quant_report(g, q, qmap, calib[:4])
    by_op = {s.op: s for s in bad.layers}
    good_by_op = {s.op: s for s in good.layers}
    assert by_op["quantize_linear"] == good_by_op["quantize_linear"]
    assert good_by_op["conv_s8"].clipped == 0 and good_by_op["conv_s8"].sqnr_db > 25
    assert by_op["conv_s8"].clipped > 0.3 and by_op["conv_s8"].sqnr_db < 5
    assert bad.largest_drop().op == "conv_s8" and bad.largest_drop().drop_db > 20
    assert good.largest_drop().drop_db < 20
    assert bad.outputs[0].sqnr_db < good.outputs[0].sqnr_db - 10


def test_top1_only_for_class_scores():
    for model, is_class in ((_classifier(True), True), (_classifier(False), True),
                            (_autoencoder(), False)):
        shape = (1, 16) if not is_class else (1, 2, 4, 4)
        g, q, qmap = _quantized(model, _samples(shape, 8))
        (out,) = quant_report(g, q, qmap, _samples(shape, 3, seed=1), layers=False).outputs
        assert (out.top1_agreement is not None) == is_class
        assert math.isfinite(out.sqnr_db) and out.max_abs_error > 0


def test_json_round_trip_and_table():
    g, q, qmap = _quantized(_classifier(), _samples((1, 2, 4, 4), 8))
    rep = quant_report(g, q, qmap, _samples((1, 2, 4, 4), 3, seed=3), HELD_OUT)
    data = json.loads(json.dumps(rep.to_json()))
    back = QuantReport.from_json(data)
    assert back.to_json() == data and len(back.layers) == len(rep.layers)
    text = rep.table()
    assert "3 held-out calibration samples" in text and "largest drop" in text
    for s in rep.layers:
        assert s.name in text and f"{s.sqnr_db:.1f}" in text
    assert "top-1 agreement" in text and "/3 (" in text


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "cls.onnx"
    save_model(_classifier(), str(path))
    cal = path.parent / "cal.npz"
    np.savez(cal, x=np.random.default_rng(0).standard_normal((10, 1, 2, 4, 4)).astype(np.float32))
    ev = path.parent / "eval.npz"
    np.savez(ev, x=np.random.default_rng(1).standard_normal((3, 1, 2, 4, 4)).astype(np.float32))
    return path, cal, ev


def test_api_report_held_out_and_separate(classifier_file, tmp_path):
    path, cal, ev = classifier_file
    m = nnc.compile(path, quantize="int8", calibration=cal, report=True,
                    output_dir=tmp_path / "out", bench=False)
    qi = m.info["quantization"]
    assert qi["calibration_samples"] == 8
    assert qi["evaluation"] == {"data": HELD_OUT, "samples": 2}
    rep = m.quant_report
    assert rep is not None and rep.samples == 2 and rep.layers
    assert qi["output_sqnr_db"] == rep.output_sqnr_db() == {"y": qi["report"]["outputs"][0][
        "sqnr_db"]}
    assert "y" in qi["output_top1_agreement"]
    assert CompiledModel.load(tmp_path / "out").quant_report.to_json() == qi["report"]
    # the held-out samples were not calibrated on: calibrating on the first 8 gives the same
    with np.load(cal) as f:
        x = f["x"]
    same = nnc.compile(path, quantize="int8", calibration={"x": x[:8]},
                       evaluation={"x": x[8:]}, bench=False)
    sq = same.info["quantization"]
    assert sq["calibration_samples"] == 8
    assert sq["evaluation"] == {"data": SEPARATE, "samples": 2}
    assert sq["output_sqnr_db"] == qi["output_sqnr_db"] and same.quant_report is None
    np.testing.assert_array_equal(same.run({"x": x[9]})["y"], m.run({"x": x[9]})["y"])
    sep = nnc.compile(path, quantize="int8", calibration=cal, evaluation=ev, bench=False)
    assert sep.info["quantization"]["calibration_samples"] == 10
    assert sep.info["quantization"]["evaluation"]["samples"] == 3


def test_api_user_errors(classifier_file):
    path, cal, _ = classifier_file
    with pytest.raises(NncError, match="need quantize='int8'"):
        nnc.compile(path, report=True)
    with pytest.raises(NncError, match="need quantize='int8'"):
        nnc.compile(path, evaluation=cal)
    with pytest.raises(NncError, match="evaluation data: .*lacks input"):
        nnc.compile(path, quantize="int8", calibration=cal, evaluation={"z": np.zeros(3)})


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "nnc.compiler.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_report_and_json(classifier_file, tmp_path):
    path, cal, ev = classifier_file
    js = tmp_path / "report.json"
    r = _cli("compile", path, "-o", tmp_path / "out", "--quantize", "int8", "--calibration", cal,
             "--eval", ev, "--report", "--report-json", js)
    assert r.returncode == 0, r.stderr
    assert "per layer" in r.stdout and "conv_s8" in r.stdout and "top-1 agreement" in r.stdout
    assert "3 evaluation samples" in r.stdout
    data = json.loads(js.read_text())
    info = json.loads((tmp_path / "out" / "nnc.json").read_text())
    assert data == info["quantization"]["report"] and data["evaluation"]["samples"] == 3


@pytest.mark.parametrize("args, message", [
    (("--report",), "need --quantize int8"),
    (("--eval", "e.npz"), "need --quantize int8"),
    (("--quantize", "int8", "--calibration", "random", "--report-json", "/nonexistent/r.json"),
     "does not exist"),
    (("--quantize", "int8", "--calibration", "random", "--report-json", "/tmp"),
     "is a directory"),
])
def test_cli_report_user_errors(classifier_file, tmp_path, args, message):
    r = _cli("compile", classifier_file[0], "-o", tmp_path / "out", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()  # refused before compiling


def test_save_json_unwritable_is_a_user_error(tmp_path):
    rep = QuantReport(HELD_OUT, 1, (), ())
    with pytest.raises(NncError, match="cannot write the report"):
        rep.save_json(tmp_path / "missing" / "r.json")


@pytest.mark.parametrize("name", ["kws", "ad"])
def test_mlperf_tiny_report(name):
    model = MODELS[name]()
    g = PassManager(FLOAT_PASSES).run(import_model(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nnc.passes.quant_scheme import random_calibration_data

        cal, ev, src = split_holdout(random_calibration_data(g, 40))
    _, q, qmap = _quantized(model, cal)
    rep = quant_report(g, q, qmap, ev, src)
    n_int8 = sum(op.kind.endswith("_s8") for op in q.ops)
    assert sum(s.op.endswith("_s8") for s in rep.layers) == n_int8 and rep.samples == 8
    assert all(15 < s.sqnr_db < 60 for s in rep.layers), rep.table()
    (out,) = rep.outputs
    assert out.sqnr_db > 20
    if name == "kws":
        assert out.top1_agreement is not None and out.top1_agreement >= 0.75
    else:
        assert out.top1_agreement is None  # an autoencoder's output is no class scores
