"""The CMSIS-NN kernel backend: int8 ops become calls into CMSIS-NN's s8 API (built here against
the portable subset in runtime_c/cmsis_nn, or a checkout named by CMSIS_NN_PATH / --cmsis-nn),
and the outputs equal the generated int8 loop nests' bit for bit, on the host and on the
emulated Cortex-M7."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from benchmarks.models import MODELS
from nnc.backends.cmsis_nn import PORTABLE_ROOT, find_library
from nnc.errors import NncError
from nnc.passes.lower_cmsis_nn import conv_scratch, depthwise_scratch

needs_tools = pytest.mark.skipif(
    not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make install)")
RNG = np.random.default_rng(5)


def _w(*shape):
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def _net():
    """conv + relu, depthwise, residual add, mul, max and average pool, flatten, gemm."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "dw"], ["d"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("Add", ["d", "ar"], ["s"]),
             helper.make_node("Mul", ["s", "ar"], ["m"]),
             helper.make_node("MaxPool", ["m"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["p"], ["q"], kernel_shape=[2, 2], pads=[1, 1, 0, 0]),
             helper.make_node("Flatten", ["q"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = {"w1": _w(8, 3, 3, 3), "b1": _w(8), "dw": _w(8, 1, 3, 3), "fw": _w(6, 8 * 4 * 4),
             "fb": _w(6)}
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _cal(shape, n=6):
    return {"x": RNG.standard_normal([n, *shape]).astype(np.float32)}


def _compile(model, cal, kernels, target="host", **kw):
    return nnc.compile(model, target=target, quantize="int8", calibration=cal, bench=False,
                       kernels=kernels, **kw)


def test_host_cmsis_calls_equal_generated_kernels():
    model, cal = _net(), _cal([1, 3, 8, 8])
    gen = _compile(model, cal, "generated")
    lib = _compile(model, cal, "cmsis-nn")
    src = (lib.source_dir / "model.c").read_text()
    for fn in ("arm_convolve_wrapper_s8", "arm_depthwise_conv_wrapper_s8",
               "arm_elementwise_add_s8", "arm_elementwise_mul_s8", "arm_max_pool_s8",
               "arm_avgpool_s8", "arm_fully_connected_per_channel_s8"):
        assert f"{fn}(" in src, fn
    assert '#include "arm_nnfunctions.h"' in src
    assert "arm_" not in (gen.source_dir / "model.c").read_text()
    assert lib.info["library_calls"] == 7 and lib.info["kernel_library"] == "cmsis-nn (portable)"
    assert (lib.source_dir / "cmsis_nn" / "Include" / "arm_nnfunctions.h").exists()
    for _ in range(4):
        x = {"x": RNG.standard_normal([1, 3, 8, 8]).astype(np.float32)}
        a, b = gen.run(x), lib.run(x)
        np.testing.assert_array_equal(a["y"], b["y"])


@pytest.mark.parametrize("name", ["kws", "ic", "ad"])
def test_mlperf_host_cmsis_equals_generated(name):
    model = MODELS[name]()
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    cal = {inp.name: RNG.standard_normal([4, *shape]).astype(np.float32)}
    gen, lib = _compile(model, cal, "generated"), _compile(model, cal, "cmsis-nn")
    assert lib.info["library_calls"] >= 8
    x = {inp.name: RNG.standard_normal(shape).astype(np.float32)}
    out = model.graph.output[0].name
    np.testing.assert_array_equal(gen.run(x)[out], lib.run(x)[out])


@pytest.mark.parametrize("logit_scale", [0.3, 6.0])
def test_fc_softmax_head_cmsis_equals_generated(logit_scale):
    """A classifier head (gemm → softmax over the last axis, 3 rows): the softmax runs as
    arm_softmax_s8 on the CMSIS-NN path and as the generated softmax_s8 loop nest otherwise,
    bit-identical; large logits (most outputs -128) and small ones."""
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"], axis=-1)]
    g = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 12])],
        [numpy_helper.from_array(_w(12, 20) * logit_scale, "w"),
         numpy_helper.from_array(_w(12), "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    cal = {"x": RNG.standard_normal([8, 3, 20]).astype(np.float32)}
    gen, lib = _compile(model, cal, "generated"), _compile(model, cal, "cmsis-nn")
    src = (lib.source_dir / "model.c").read_text()
    assert "arm_softmax_s8(" in src and "arm_fully_connected" in src
    assert lib.info["library_calls"] == 2
    for _ in range(4):
        x = {"x": RNG.standard_normal([3, 20]).astype(np.float32)}
        a, b = gen.run(x)["y"], lib.run(x)["y"]
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(np.round(a * 256), a * 256)  # int8 softmax: 1/256 steps


def test_project_makefile_rebuilds_with_the_library(tmp_path):
    m = _compile(_net(), _cal([1, 3, 8, 8]), "cmsis-nn", output_dir=tmp_path / "out")
    make = subprocess.run(["make", "-C", str(m.source_dir), "clean", "libmodel.so"],
                          capture_output=True, text=True)
    assert make.returncode == 0, make.stderr


def test_cmsis_nn_path_checkout_is_used_in_place(tmp_path, monkeypatch):
    """A CMSIS-NN checkout (here: a copy of the portable tree laid out like one) is compiled
    where it is, not copied into the project."""
    checkout = tmp_path / "CMSIS-NN"
    shutil.copytree(PORTABLE_ROOT, checkout)
    monkeypatch.setenv("CMSIS_NN_PATH", str(checkout))
    m = _compile(_net(), _cal([1, 3, 8, 8]), "cmsis-nn")
    assert m.info["kernel_library"] == f"cmsis-nn ({checkout.resolve()})"
    assert not (m.source_dir / "cmsis_nn").exists()
    assert str(checkout.resolve()) in (m.source_dir / "Makefile").read_text()


def test_bad_cmsis_nn_path_is_a_user_error(tmp_path, monkeypatch):
    with pytest.raises(NncError, match="not a CMSIS-NN checkout"):
        find_library(tmp_path)
    monkeypatch.setenv("CMSIS_NN_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(NncError, match="CMSIS_NN_PATH"):
        _compile(_net(), _cal([1, 3, 8, 8]), "cmsis-nn")
    with pytest.raises(NncError, match="kernels='cmsis-nn'"):
        _compile(_net(), _cal([1, 3, 8, 8]), "generated", cmsis_nn=tmp_path)
    with pytest.raises(NncError, match="not supported"):
        _compile(_net(), _cal([1, 3, 8, 8]), "tflm")


def test_cli_kernels_flag(tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(_net().SerializeToString())
    np.savez(tmp_path / "cal.npz", **_cal([1, 3, 8, 8]))
    proc = subprocess.run([sys.executable, "-m", "nnc.compiler.cli", "compile", str(path), "-o",
                           str(tmp_path / "out"), "--quantize", "int8", "--calibration",
                           str(tmp_path / "cal.npz"), "--kernels", "cmsis-nn"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "7 kernels call cmsis-nn (portable)" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "nnc.compiler.cli", "compile", str(path), "-o",
                          str(tmp_path / "out2"), "--quantize", "int8", "--calibration",
                          str(tmp_path / "cal.npz"), "--cmsis-nn", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "not a CMSIS-NN checkout" in bad.stderr


def test_scratch_sizes_follow_the_cores():
    # DSP: two int16 im2col columns; Helium: four int8 columns padded to 16; 1x1: none
    assert conv_scratch(3, 3, 8, False, mve=False) == 2 * 72 * 2
    assert conv_scratch(3, 3, 8, False, mve=True) == 4 * 80
    assert conv_scratch(1, 1, 64, True, mve=False) == 0
    # DSP depthwise 3x3 with padding <= 1 needs none; Helium keeps 124 channels of taps
    assert depthwise_scratch(3, 3, 64, 64, 1, False, 1, 1, mve=False) == 0
    assert depthwise_scratch(3, 3, 64, 64, 1, False, 1, 1, mve=True) == 4 * 124 * 9


@pytest.mark.slow
@needs_tools
@pytest.mark.parametrize("target", ["cortex-m7", "cortex-m55"])
def test_board_cmsis_equals_generated(target):
    """On the emulated board: CMSIS-NN calls (the default on Cortex-M) and the generated
    kernels give the same int8 outputs; the scratch check in init passes."""
    model = MODELS["kws"]()
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    cal = {inp.name: RNG.standard_normal([4, *shape]).astype(np.float32)}
    lib = nnc.compile(model, target=target, quantize="int8", calibration=cal,
                      kernels="cmsis-nn")
    gen = _compile(model, cal, "generated", target=target)
    assert lib.info["library_calls"] == 12  # 11 conv / pool / FC layers and the softmax
    x = {inp.name: RNG.standard_normal(shape).astype(np.float32)}
    out = model.graph.output[0].name
    np.testing.assert_array_equal(gen.run(x)[out], lib.run(x)[out])
