"""int8 end to end: the four MLPerf Tiny models quantized (20 random-normal calibration samples
from a .npz) and compiled for host and cortex-m7; the int8 host build agrees bit for bit with the
graph interpreter's run of the quantized graph and with the board; output SQNR vs float is
reported and above a floor; weights are stored as int8."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save_model

import nnc
from benchmarks.models import MODELS, sample_input
from benchmarks.models.mlperf_tiny import EXPECTED
from nnc.compiler.onnx.importer import import_model
from nnc.compiler.report import split_holdout
from nnc.errors import NncError
from nnc.ir.interp import run_graph
from nnc.passes.calibrate import calibrate
from nnc.passes.manager import PassManager
from nnc.passes.quant_scheme import load_calibration_data
from nnc.passes.quantize import quantize_graph

SQNR_FLOOR_DB = 10.0
FLOAT_PASSES = "fold-constants,eliminate-dead-code,fold-batchnorm,fold-constants"
needs_tools = pytest.mark.skipif(
    not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make install)")


def _calibration_file(model, path):
    rng = np.random.default_rng(0)
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    np.savez(path, **{inp.name: rng.standard_normal([20, *shape]).astype(np.float32)})
    return path


@pytest.fixture(scope="module")
def host_int8(tmp_path_factory):
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            model = MODELS[name]()
            cal = _calibration_file(model, tmp_path_factory.mktemp(name) / "cal.npz")
            compiled = nnc.compile(model, target="host", quantize="int8", calibration=cal,
                                   bench=False)
            cache[name] = (model, cal, compiled)
        return cache[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_tiny_int8_on_host(name, host_int8):
    model, cal, compiled = host_int8(name)
    q = compiled.info["quantization"]
    sqnr = q["output_sqnr_db"]["output"]
    print(f"{name}: int8 output SQNR vs float {sqnr} dB over {q['calibration_samples']} "
          f"samples, {q['int8_ops']} int8 ops, float ops {q['float_ops']}")
    assert sqnr > SQNR_FLOOR_DB
    assert q["float_ops"] in ([], ["softmax"])
    params = EXPECTED[name][0]
    # int8 weights plus int32 bias / multiplier / shift per output channel
    assert params * 0.9 < compiled.info["weight_bytes"] < params * 1.6
    # the compiled host C computes exactly what the graph interpreter says the int8 graph does
    g = PassManager(FLOAT_PASSES).run(import_model(model))
    calibration = split_holdout(load_calibration_data(cal, g.inputs))[0]  # as compile does
    qg = quantize_graph(g, calibrate(g, calibration))
    feeds = sample_input(model)
    got = compiled.run(feeds)["output"]
    want = run_graph(qg, feeds)["output"]
    if "softmax" in q["float_ops"]:  # libm's expf vs numpy's: ulps apart
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, want)


@needs_tools
@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_tiny_int8_on_cortex_m7_matches_host(name, host_int8):
    model, cal, host = host_int8(name)
    compiled = nnc.compile(model, target="cortex-m7", quantize="int8", calibration=cal)
    feeds = sample_input(model)
    np.testing.assert_array_equal(compiled.run(feeds)["output"], host.run(feeds)["output"])
    bench = compiled.benchmark()
    print(f"{name}: cortex-m7 int8 {bench['instructions']:,} instructions, "
          f"{bench['ram_bytes']:,} B RAM, {bench['flash_bytes']:,} B flash")
    assert compiled.info["firmware"]["flash_bytes"] > compiled.info["weight_bytes"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    rng = np.random.default_rng(1)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Flatten", ["r"], ["f"]),
         helper.make_node("Gemm", ["f", "fc"], ["l"], transB=1),
         helper.make_node("Softmax", ["l"], ["y"], axis=-1)],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal((3, 64)).astype(np.float32), "fc")])
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "nnc.compiler.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_quantize_with_npz_and_method(tiny_model, tmp_path):
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(0).standard_normal((6, 1, 2, 4, 4)).astype(np.float32))
    out = tmp_path / "out"
    r = _cli("compile", tiny_model, "-o", out, "--quantize", "int8", "--calibration", cal,
             "--calibration-method", "percentile")
    assert r.returncode == 0, r.stderr
    assert "SQNR" in r.stdout and "WARNING" not in r.stderr
    info = json.loads((out / "nnc.json").read_text())
    q = info["quantization"]
    # 6 samples: 5 calibrate, the last one is held out to evaluate on
    assert q["calibration_method"] == "percentile" and q["calibration_samples"] == 5
    assert q["output_sqnr_db"]["y"] > 10 and q["float_ops"] == []
    assert "quantize" in info["pipeline"]
    layer_ops = " ".join(lay["op"] for lay in info["layers"])
    assert "conv_s8" in layer_ops and "fully_connected_s8" in layer_ops, layer_ops


def test_cli_random_calibration_warns_loudly(tiny_model, tmp_path):
    r = _cli("compile", tiny_model, "-o", tmp_path / "out", "--quantize", "int8",
             "--calibration", "random")
    assert r.returncode == 0, r.stderr
    assert "WARNING" in r.stderr and "RANDOM" in r.stderr


@pytest.mark.parametrize("args, message", [
    (("--quantize", "int8"), "needs --calibration"),
    (("--calibration", "random"), "need --quantize int8"),
    (("--quantize", "int8", "--calibration", "nope.npz"), "does not exist"),
])
def test_cli_quantize_user_errors(tiny_model, tmp_path, args, message):
    r = _cli("compile", tiny_model, "-o", tmp_path / "out", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_api_quantize_user_errors(tiny_model):
    with pytest.raises(NncError, match="not supported"):
        nnc.compile(tiny_model, quantize="int4", calibration="random")
    with pytest.raises(NncError, match="needs calibration data"):
        nnc.compile(tiny_model, quantize="int8")
    with pytest.raises(NncError, match="calibration method"):
        nnc.compile(tiny_model, quantize="int8", calibration="random",
                    calibration_method="mse")
    with pytest.raises(NncError, match="lacks input"):
        nnc.compile(tiny_model, quantize="int8", calibration={"z": np.zeros((1, 1, 2, 4, 4))})


def test_api_quantize_from_dict(tiny_model):
    x = np.random.default_rng(2).standard_normal((4, 1, 2, 4, 4)).astype(np.float32)
    m = nnc.compile(tiny_model, quantize="int8", calibration={"x": x}, bench=False)
    assert m.info["quantization"]["calibration_samples"] == 3  # one of 4 held out
    y = m.run({"x": x[0]})["y"]
    assert y.shape == (1, 3) and abs(float(y.sum()) - 1.0) < 3 / 256  # int8 softmax: 1/256 steps
