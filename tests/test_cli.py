"""The command line: compile/run/bench/inspect, and user errors as one line with exit code 2."""

import json
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save_model


def nnc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nnc.compiler.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    w = np.linspace(-1, 1, 4 * 3, dtype=np.float32).reshape(4, 3)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(w, "w")])
    path = d / "small.onnx"
    save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path, w


def test_compile_run_bench_inspect(small_model, tmp_path):
    path, w = small_model
    out = tmp_path / "out"
    r = nnc("compile", path, "--target", "host", "-o", out)
    assert r.returncode == 0, r.stderr
    assert (out / "model.h").exists() and (out / "nnc.json").exists()
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    r = nnc("run", out, "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "o.npz")
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "o.npz")["y"]
    np.testing.assert_allclose(y, np.maximum(x @ w, 0), rtol=1e-5, atol=1e-6)
    r = nnc("bench", out, "--json", "--repeat", "5", "--warmup", "1")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["target"] == "host" and res["latency_ms"]["median"] > 0
    r = nnc("inspect", path)
    assert r.returncode == 0, r.stderr
    assert "matmul" in r.stdout and "MACs" in r.stdout and "24" in r.stdout


@pytest.mark.parametrize("case", ["missing", "garbage", "bad_shape_arg", "not_compiled",
                                  "bad_bind_arg", "bind_unknown_input", "bind_wrong_shape"])
def test_user_errors_are_one_line_exit_2(case, tmp_path, small_model):
    if case == "missing":
        r = nnc("compile", tmp_path / "nope.onnx", "-o", tmp_path / "o")
    elif case == "garbage":
        (tmp_path / "g.onnx").write_bytes(b"garbage" * 100)
        r = nnc("compile", tmp_path / "g.onnx", "-o", tmp_path / "o")
    elif case == "bad_shape_arg":
        r = nnc("compile", small_model[0], "--input-shape", "x=2xZ", "-o", tmp_path / "o")
    elif case == "bad_bind_arg":
        r = nnc("compile", small_model[0], "--bind", "x", "-o", tmp_path / "o")
    elif case == "bind_unknown_input":
        r = nnc("compile", small_model[0], "--bind", "z=1", "-o", tmp_path / "o")
    elif case == "bind_wrong_shape":
        r = nnc("compile", small_model[0], "--bind", "x=1,2", "-o", tmp_path / "o")
    else:
        r = nnc("run", tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("nnc: error: ") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_wrong_input_shape_and_name(small_model, tmp_path):
    path, _ = small_model
    out = tmp_path / "out"
    assert nnc("compile", path, "-o", out).returncode == 0
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 4), np.float32))
    r = nnc("run", out, "--inputs", tmp_path / "bad.npz")
    assert r.returncode == 2
    assert "input 'x' has shape (3, 4) but the model expects (2, 4)" in r.stderr
    np.savez(tmp_path / "bad2.npz", z=np.zeros((2, 4), np.float32))
    r = nnc("run", out, "--inputs", tmp_path / "bad2.npz")
    assert r.returncode == 2 and "missing ['x']" in r.stderr


def test_unsupported_op_fails_before_codegen(tmp_path):
    g = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"], name="nz")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    path = tmp_path / "u.onnx"
    save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    r = nnc("compile", path, "-o", tmp_path / "o")
    assert r.returncode == 2 and "NonZero (node 'nz')" in r.stderr
    assert not (tmp_path / "o").exists()
