"""Project layout, the bench executable, the Makefile, clang, compiler errors, HostModel checks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from nnc.backends.c.build import BuildError, build
from nnc.backends.c.run import HostModel, detect_prefix
from nnc.backends.target import host_target
from nnc.ir.loops import Buffer, CallExtern, Kernel, KernelBuilder, LoopModule, call
from nnc.testing import find_clang


def _softplus_module() -> LoopModule:
    x = Buffer("x", (2, 8), "float32", "input")
    t = Buffer("t", (2, 8), "float32", "arena", offset=0)
    y = Buffer("y", (2, 8), "float32", "output")
    k0 = KernelBuilder("exp")
    with k0.loop(2) as i:
        with k0.loop(8, kind="vectorized") as j:
            k0.store(t, (i, j), call("exp", x[i, j]))
    k1 = KernelBuilder("log1p")
    with k1.loops((2, 8)) as (i, j):
        k1.store(y, (i, j), call("log1p", t[i, j]))
    return LoopModule("softplus", (x, t, y),
                      (k0.build(("x", "t"), op_kind="exp", op_name="Exp_0"),
                       k1.build(("t", "y"), op_kind="log1p", op_name="Log1p_0")),
                      ("x",), ("y",), {}, 64, ("input",), ("output",))


def _softplus(x):
    return np.log1p(np.exp(x))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("softplus")
    result = build(_softplus_module(), out, opt_level=2, prefix="sp", werror=True)
    return result


def test_project_layout_and_run(built):
    out = built.out_dir
    for name in ("model.c", "model.h", "nnc_runtime.h", "bench_main.c", "Makefile",
                 "libmodel.so", "bench"):
        assert (out / name).exists(), name
    assert detect_prefix(out) == "sp"
    model = HostModel(out)
    assert [t.name for t in model.inputs] == ["input"]
    assert model.outputs[0].shape == (2, 8) and model.outputs[0].dtype == "float32"
    assert [layer.op_name for layer in model.layers] == ["Exp_0", "Log1p_0"]
    x = np.linspace(-3, 3, 16, dtype=np.float32).reshape(2, 8)
    np.testing.assert_allclose(model.run({"input": x})["output"], _softplus(x), rtol=1e-6)
    assert any("-O2" in cmd for cmd in built.commands)


def test_host_model_validates_inputs(built):
    model = HostModel(built.out_dir)
    good = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match=r"input 'input' has shape \(2, 7\) but the model "
                                         r"expects \(2, 8\)"):
        model.run({"input": np.zeros((2, 7), np.float32)})
    with pytest.raises(ValueError, match="has dtype float64 but the model expects float32"):
        model.run({"input": good.astype(np.float64)})
    with pytest.raises(ValueError, match="unknown input 'x'; the model's inputs are: 'input'"):
        model.run({"input": good, "x": good})
    with pytest.raises(ValueError, match="missing input 'input'"):
        model.run({})
    # lists are converted to the expected dtype
    assert model.run({"input": good.tolist()})["output"].dtype == np.float32


def test_bench_executable_prints_json(built, tmp_path):
    model = HostModel(built.out_dir)
    stats = model.benchmark(warmup=2, repeat=5)
    lat = stats["latency_ms"]
    assert stats["repeat"] == 5 and stats["warmup"] == 2
    assert 0 <= lat["min"] <= lat["median"] <= lat["max"]
    assert stats["inputs"] == ["input"] and stats["arena_bytes"] == 64
    # inputs from files, outputs to files
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    x.tofile(tmp_path / "x.bin")
    proc = subprocess.run([str(built.bench), "--repeat", "1", "--input", "0",
                           str(tmp_path / "x.bin"), "--output", "0", str(tmp_path / "y.bin")],
                          capture_output=True, text=True, check=True)
    assert '"latency_ms"' in proc.stdout
    y = np.fromfile(tmp_path / "y.bin", np.float32).reshape(2, 8)
    np.testing.assert_allclose(y, _softplus(x), rtol=1e-6)
    assert model.benchmark(warmup=0, repeat=1, inputs={"input": x})["repeat"] == 1
    bad = subprocess.run([str(built.bench), "--input", "0", str(tmp_path / "missing.bin")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "cannot open" in bad.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_makefile_rebuilds_the_project(built, tmp_path):
    copy = tmp_path / "proj"
    shutil.copytree(built.out_dir, copy)
    for name in ("libmodel.so", "bench"):
        (copy / name).unlink()
    subprocess.run(["make", "-s", "OPT=-O1"], cwd=copy, check=True, capture_output=True)
    model = HostModel(copy)
    x = np.zeros((2, 8), np.float32)
    np.testing.assert_allclose(model.run({"input": x})["output"], _softplus(x), rtol=1e-6)


def test_rebuild_in_place_loads_the_new_library(tmp_path):
    m = _softplus_module()
    build(m, tmp_path, opt_level=1, bench=False)
    first = HostModel(tmp_path)
    k1 = KernelBuilder("neg")
    x = m.buffer_map()["x"]
    y = m.buffer_map()["y"]
    with k1.loops((2, 8)) as (i, j):
        k1.store(y, (i, j), -x[i, j])
    build(m.replace(kernels=(k1.build(("x", "y")),)), tmp_path, opt_level=1, bench=False)
    second = HostModel(tmp_path)
    ones = np.ones((2, 8), np.float32)
    assert second.run({"input": ones})["output"][0, 0] == -1.0
    np.testing.assert_allclose(first.run({"input": ones})["output"], _softplus(ones), rtol=1e-6)


def test_compiler_errors_carry_stderr(tmp_path):
    x = Buffer("x", (4,), "float32", "input")
    y = Buffer("y", (4,), "float32", "output")
    k = Kernel("ext", ("x", "y"), (), (CallExtern("undeclared_fn", ("x", "y")),))
    m = LoopModule("bad", (x, y), (k,), ("x",), ("y",), {}, 0)
    with pytest.raises(BuildError, match="undeclared_fn") as info:
        build(m, tmp_path, opt_level=0, werror=True, bench=False)
    # gcc: "implicit declaration of function"; clang: "call to undeclared function"
    assert re.search("implicit declaration|undeclared function", info.value.stderr)
    with pytest.raises(BuildError, match="not found"):
        build(m, tmp_path, target=host_target(cc="no-such-cc-nnc"), bench=False)


@pytest.mark.parametrize("cc", [
    "gcc",  # a machine without clang
    pytest.param(find_clang(), marks=pytest.mark.skipif(find_clang() is None,
                                                        reason="clang not installed"))])
def test_host_compilers_build_with_werror(tmp_path, cc):
    result = build(_softplus_module(), tmp_path, target=host_target(cc=cc), opt_level=2,
                   werror=True)
    model = HostModel(result.out_dir)
    x = np.linspace(-3, 3, 16, dtype=np.float32).reshape(2, 8)
    np.testing.assert_allclose(model.run({"input": x})["output"], _softplus(x), rtol=1e-6)


def test_large_weights_are_stored_once_in_the_library(tmp_path):
    """A large model's weights are in its folder once, in libmodel.so: bench links against it
    (rpath $ORIGIN), weights.o and weights.bin are removed after the link, and the Makefile
    takes weights.bin back out of the library (issue 14: was four copies in the folder)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import nnc
    w = np.random.default_rng(0).standard_normal((512, 640)).astype(np.float32)  # 1.3 MB
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 640])],
        [numpy_helper.from_array(w, "w")])
    path = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    out = tmp_path / "out"
    model = nnc.compile(str(path), output_dir=out)
    sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    assert sizes["libmodel.so"] >= w.nbytes
    assert sum(sizes.values()) < w.nbytes * 1.25, sizes  # once: weights.bin, weights.o gone
    assert "weights.bin" not in json.loads((out / ".nnc-manifest.json").read_text())["files"]
    x = np.ones((1, 512), np.float32)
    np.testing.assert_allclose(model.run({"x": x})["y"], x @ w, rtol=1e-4, atol=1e-3)
    assert model.benchmark(warmup=0, repeat=1)["repeat"] == 1  # bench finds libmodel.so
    # `make` without nnc: weights.bin comes back out of the library, the rebuilt library and
    # bench give the same numbers; `make clean` keeps the weights (as weights.bin)
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "MAKEFLAGS")}
    subprocess.run(["make", "clean"], cwd=out, env=env, check=True, capture_output=True)
    assert (out / "weights.bin").read_bytes()[:w.nbytes] == w.tobytes()
    assert not (out / "libmodel.so").exists()
    subprocess.run(["make"], cwd=out, env=env, check=True, capture_output=True)
    np.testing.assert_allclose(HostModel(out).run({"x": x})["y"], x @ w, rtol=1e-4, atol=1e-3)


def test_nnc_json_records_the_host_compiler(tmp_path, monkeypatch):
    import json

    from onnx import TensorProto, helper

    import nnc

    graph = helper.make_graph([helper.make_node("Softplus", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    monkeypatch.setenv("NNC_CC", "gcc")  # NNC_CC overrides the default (clang when present)
    compiled = nnc.compile(model, target="host", output_dir=tmp_path / "out", bench=False)
    cc = json.loads((tmp_path / "out" / "nnc.json").read_text())["cc"]
    assert cc["command"] == "gcc" and cc["version"].startswith("gcc")
    assert "-ffp-contract=on" in cc["cflags"] and "-O3" in cc["cflags"]
    assert "CC = gcc\n" in (tmp_path / "out" / "Makefile").read_text()
    # `make` in the folder uses that compiler too (make's built-in CC=cc must not win)
    env = {k: v for k, v in os.environ.items()
           if k not in ("CC", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}  # also under `make test`
    dry = subprocess.run(["make", "--no-print-directory", "-B", "-n", "libmodel.so"],
                         cwd=tmp_path / "out", env=env, capture_output=True, text=True,
                         check=True).stdout
    assert dry.splitlines()[0].startswith("gcc "), dry
    x = np.linspace(-3, 3, 16, dtype=np.float32).reshape(2, 8)
    np.testing.assert_allclose(compiled.run({"x": x})["y"], _softplus(x), rtol=1e-6)
