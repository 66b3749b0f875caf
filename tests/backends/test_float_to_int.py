"""float -> integer Casts of NaN, infinities and out-of-range values: undefined in C (x86 and Arm
disagree), defined by nnc as x86's conversion (`nnc.ir.float_to_int`), which onnxruntime gives
on x86. Host C == onnxruntime for every integer type from float32 and float64, the graph
reference and the loop interpreter == host C, the C is clean under UBSan's float-cast-overflow,
and Cortex-M (QEMU), OpenCL (PoCL) and the TVM module == host."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from nnc.compiler.api import compile as nnc_compile
from nnc.ir.float_to_int import float_to_int
from nnc.testing import check_op

VALUES = [np.nan, -np.nan, np.inf, -np.inf, 1e10, -1e10, 3e9, -3e9, 300.7, -300.7, 200.5, 127.9,
          128.0, -128.9, -129.0, 255.9, 256.0, -1.5, 65535.9, 65536.0, 2147483520.0,
          2147483648.0, -2147483648.0, 4294967040.0, 4294967296.0, 9.3e18, 1.9e19, -9.3e18,
          0.0, -0.0, 0.99, -0.99]
# onnxruntime converts tensors this long with one rule; a 1-element uint32 Cast of 1e10 takes
# another path there (1410065408 via int64, where its vector path and numpy give 0)
X = np.array(VALUES * 3, np.float32)
TYPES = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int16": TensorProto.INT16,
         "uint16": TensorProto.UINT16, "int32": TensorProto.INT32, "uint32": TensorProto.UINT32,
         "int64": TensorProto.INT64, "uint64": TensorProto.UINT64}
SOURCES = {"x": (TensorProto.FLOAT, np.float32), "xd": (TensorProto.DOUBLE, np.float64)}


def _model() -> onnx.ModelProto:
    nodes, outputs = [], []
    for src in SOURCES:
        for name, to in TYPES.items():
            nodes.append(helper.make_node("Cast", [src], [f"{src}_{name}"], to=to))
            outputs.append(helper.make_tensor_value_info(f"{src}_{name}", to, [len(X)]))
    inputs = [helper.make_tensor_value_info(s, e, [len(X)]) for s, (e, _) in SOURCES.items()]
    g = helper.make_graph(nodes, "casts", inputs, outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _feeds() -> dict[str, np.ndarray]:
    return {s: X.astype(dt) for s, (_, dt) in SOURCES.items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("casts")
    path = tmp / "casts.onnx"
    onnx.save(_model(), str(path))
    cm = nnc_compile(str(path), output_dir=tmp / "host", bench=False)
    return path, cm, cm.run(_feeds())


def test_host_matches_onnxruntime(built) -> None:
    path, _, got = built
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for name, ref in zip(names, sess.run(names, _feeds()), strict=True):
        assert got[name].dtype == ref.dtype
        np.testing.assert_array_equal(got[name], ref, err_msg=name)


def test_the_interpreters_match_the_host(built) -> None:
    _, _, got = built
    for src, (_, dt) in SOURCES.items():
        for name in TYPES:
            ref = check_op("cast", [X.astype(dt)], {"to": name})[0]  # loop interp == reference
            np.testing.assert_array_equal(ref, got[f"{src}_{name}"], err_msg=f"{src}_{name}")
            np.testing.assert_array_equal(float_to_int(X.astype(dt), name), ref)
    assert float_to_int(np.array([np.nan, 300.7, -1.5], np.float32), "uint8").tolist() == [
        0, 44, 255]


SANITIZED_MAIN = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "model.h"
static const double VALUES[] = {NAN, -NAN, INFINITY, -INFINITY, 1e10, -1e10, 3e9, 1.9e19,
                                -9.3e18, 2147483648.0, 4294967296.0, -300.7, 65536.0};
int main(void) {
    void *in[NNC_NUM_INPUTS], *out[NNC_NUM_OUTPUTS];
    for (int i = 0; i < nnc_num_inputs; i++) {
        in[i] = malloc(nnc_inputs[i].nbytes);
        size_t n = nnc_inputs[i].nbytes / (nnc_inputs[i].dtype == NNC_FLOAT32 ? 4 : 8);
        for (size_t k = 0; k < n; k++) {
            double v = VALUES[k % (sizeof VALUES / sizeof VALUES[0])];
            if (nnc_inputs[i].dtype == NNC_FLOAT32) ((float *)in[i])[k] = (float)v;
            else ((double *)in[i])[k] = v;
        }
    }
    for (int i = 0; i < nnc_num_outputs; i++) out[i] = malloc(nnc_outputs[i].nbytes);
    if (nnc_init() != 0 || nnc_run((const void *const *)in, out) != 0) return 3;
    printf("ok\n");
    return 0;
}
"""


def test_the_c_is_clean_under_float_cast_overflow(built, tmp_path) -> None:
    _, cm, _ = built
    out = cm.source_dir
    (tmp_path / "main.c").write_text(SANITIZED_MAIN)
    exe = tmp_path / "sanitized"
    srcs = [str(out / "model.c"), *map(str, out.glob("weights.c"))]
    r = subprocess.run(["gcc", "-std=c99", "-O1", "-fsanitize=undefined,float-cast-overflow",
                        "-fno-sanitize-recover=all", "-I", str(out), str(tmp_path / "main.c"),
                        *srcs, "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr[-3000:]


@pytest.mark.needs_qemu
@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="needs qemu-system-arm")
def test_cortex_m_matches_the_host(built, tmp_path) -> None:
    """Arm's VCVT saturates (NaN -> 0, 1e10 -> INT32_MAX): without the defined conversion the
    board and the host disagree on most of these values."""
    path, _, host = built
    cm = nnc_compile(str(path), target="cortex-m7", output_dir=tmp_path / "m7", bench=False)
    board = cm.run(_feeds())
    for name in host:
        np.testing.assert_array_equal(board[name], host[name], err_msg=name)


@pytest.mark.needs_opencl
def test_opencl_matches_the_host(built, tmp_path) -> None:
    from tests.backends.opencl.conftest import opencl_device_count

    if opencl_device_count() == 0:
        pytest.skip("no OpenCL device")
    path, _, host = built
    cm = nnc_compile(str(path), target="opencl", output_dir=tmp_path / "cl", bench=False)
    device = cm.run(_feeds())
    for name in host:
        np.testing.assert_array_equal(device[name], host[name], err_msg=name)


@pytest.mark.needs_tvm
@pytest.mark.skipif(importlib.util.find_spec("tvm") is None, reason="needs apache-tvm")
def test_tvm_matches_the_host(built, tmp_path) -> None:
    """TVM's Cast is LLVM's fptosi (poison out of range): the TIR selects on range tests."""
    path, _, host = built
    cm = nnc_compile(str(path), target="tvm", output_dir=tmp_path / "tvm", bench=False)
    got = cm.run(_feeds())
    for name in host:
        np.testing.assert_array_equal(got[name], host[name], err_msg=name)
