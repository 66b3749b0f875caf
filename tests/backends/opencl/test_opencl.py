"""The OpenCL backend on PoCL (or any OpenCL device): small models and the MLPerf Tiny models
against onnxruntime, int8 bit-identical with the host C target, the binary cache, the errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.backends.opencl.emit import emit_opencl, kernel_mappings
from nnc.backends.opencl.run import KernelBuildError, OpenCLModel, OpenCLUnavailable
from nnc.compiler.cli import main as cli_main

RTOL, ATOL = 1e-3, 1e-4
pytestmark = pytest.mark.needs_opencl


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _w(name, shape, seed):
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)


def small_models() -> dict[str, onnx.ModelProto]:
    return {
        "conv": _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                        helper.make_node("Relu", ["c"], ["y"])],
                       [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 8, 8])],
                       [_w("w", [4, 3, 3, 3], 1), _w("b", [4], 2)]),
        "gemm": _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
                       [_vi("x", [2, 16])], [_vi("y", [2, 10])],
                       [_w("w", [10, 16], 3), _w("b", [10], 4)]),
        "elementwise": _model([helper.make_node("Mul", ["x", "z"], ["m"]),
                               helper.make_node("Tanh", ["m"], ["t"]),
                               helper.make_node("Add", ["t", "x"], ["s"]),
                               helper.make_node("Exp", ["s"], ["y"])],
                              [_vi("x", [2, 3, 5]), _vi("z", [3, 1])], [_vi("y", [2, 3, 5])]),
        "pooling": _model([helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2],
                                            strides=[2, 2]),
                           helper.make_node("GlobalAveragePool", ["p"], ["y"])],
                          [_vi("x", [1, 4, 8, 8])], [_vi("y", [1, 4, 1, 1])]),
        "softmax": _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
                          [_vi("x", [3, 7])], [_vi("y", [3, 7])]),
        "reshape_concat": _model(
            [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Concat", ["r", "z"], ["y"], axis=1)],
            [_vi("x", [2, 3, 4]), _vi("z", [2, 5])], [_vi("y", [2, 17])],
            [numpy_helper.from_array(np.array([2, 12], np.int64), "shape")]),
    }


@pytest.mark.parametrize("name", sorted(small_models()))
def test_small_model_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    model = small_models()[name]
    compiled = nnc.compile(model, target="opencl", output_dir=tmp_path / name)
    feeds = compiled.random_inputs(seed=1)
    got = compiled.run(feeds)
    for out, want in zip(compiled.outputs, ort_run(model, feeds), strict=True):
        np.testing.assert_allclose(got[out["name"]], want, rtol=RTOL, atol=ATOL)
    assert "__kernel void" in (tmp_path / name / "model.cl").read_text()


def test_outer_independent_loops_become_work_items() -> None:
    """Every kernel of the conv and the gemm gets work items (the conv at least its output
    channels); a loop that stores the same element every iteration is never mapped."""
    from tests.backends.opencl.test_mapping import opencl_modules

    # 128-bit tiles: at the compiling CPU's width the gemm's 10 outputs may be one tile
    for name, module in opencl_modules({n: small_models()[n] for n in ("conv", "gemm")}).items():
        maps = kernel_mappings(module)
        assert maps and all(m.loops for m in maps), (name, maps)
        cl = str(emit_opencl(module)["model.cl"])
        assert "get_global_id(0)" in cl
        if name == "conv":
            assert np.prod(maps[0].global_size) >= 4  # at least the output channels


def test_binary_cache_is_reused_by_the_next_compile(tmp_path: Path) -> None:
    model = small_models()["conv"]
    first = nnc.compile(model, target="opencl", output_dir=tmp_path / "m")
    assert first.info["opencl"]["binary_from_cache"] is False
    assert (tmp_path / "m" / "model.clbin").exists()
    second = nnc.compile(model, target="opencl", output_dir=tmp_path / "m")
    assert second.info["opencl"]["binary_from_cache"] is True
    runner = OpenCLModel(tmp_path / "m")
    assert runner.from_cache
    bench = second.benchmark(warmup=1, repeat=3)
    assert len(bench["layers"]) == second.info["num_kernels"]
    assert all(lay["queued_end_us"] >= lay["median_us"] > 0 for lay in bench["layers"])
    assert bench["latency_ms"]["median"] > 0


_READ_SPECIALIZATION = """
import ctypes, sys
from nnc.backends.opencl.run import OpenCLModel
OpenCLModel(sys.argv[1]).close()
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p
print(libc.getenv(b"POCL_WORK_GROUP_SPECIALIZATION"))
"""


@pytest.mark.parametrize(("user", "seen"), [(None, "b'0'"), ("1", "b'1'")])
def test_runtime_keeps_pocl_on_the_built_binary(user: str | None, seen: str,
                                               tmp_path: Path) -> None:
    """Init turns off PoCL's per-enqueue work-group specialization (the first run would compile
    every kernel again) unless the user set it; read in a fresh process, before PoCL starts."""
    nnc.compile(small_models()["conv"], target="opencl", output_dir=tmp_path / "m")
    env = {k: v for k, v in os.environ.items() if k != "POCL_WORK_GROUP_SPECIALIZATION"}
    if user is not None:
        env["POCL_WORK_GROUP_SPECIALIZATION"] = user
    out = subprocess.run([sys.executable, "-c", _READ_SPECIALIZATION, str(tmp_path / "m")],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == seen


def test_cli_compile_run_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "softmax.onnx"
    onnx.save(small_models()["softmax"], path)
    out = tmp_path / "out"
    assert cli_main(["compile", str(path), "--target", "opencl", "-o", str(out),
                     "--device", "0"]) == 0
    assert "OpenCL: 1 kernels in model.cl" in capsys.readouterr().out
    assert cli_main(["run", str(out)]) == 0
    assert cli_main(["bench", str(out), "--repeat", "3"]) == 0
    text = capsys.readouterr().out
    assert "queued->end us" in text and "whole run" in text
    for name in ("model.cl", "model.c", "model.h", "weights.bin", "Makefile", "nnc.json"):
        assert (out / name).exists(), name


def test_makefile_builds_against_the_icd(tmp_path: Path) -> None:
    out = tmp_path / "m"
    nnc.compile(small_models()["gemm"], target="opencl", output_dir=out)
    (out / "libmodel.so").unlink()
    subprocess.run(["make", "-s", "-C", str(out)], check=True, capture_output=True)
    assert OpenCLModel(out).run({"x": np.ones((2, 16), np.float32)})["y"].shape == (2, 10)


def test_no_matching_device_lists_the_devices(tmp_path: Path) -> None:
    compiled = nnc.compile(small_models()["gemm"], target="opencl", output_dir=tmp_path / "m")
    with pytest.raises(OpenCLUnavailable, match="no OpenCL device matches 'no-such-device'; "
                       "the devices are: 0: "):
        OpenCLModel(compiled.source_dir, device="no-such-device")


def test_no_platform_names_the_debian_packages(tmp_path: Path) -> None:
    out = tmp_path / "m"
    nnc.compile(small_models()["gemm"], target="opencl", output_dir=out)
    empty = tmp_path / "vendors"
    empty.mkdir()
    env = dict(os.environ, OCL_ICD_VENDORS=str(empty))
    proc = subprocess.run([sys.executable, "-m", "nnc.compiler.cli", "run", str(out)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no OpenCL platform found" in lines[0]
    assert "pocl-opencl-icd ocl-icd-opencl-dev opencl-c-headers clinfo" in lines[0]


def test_kernel_that_fails_to_build_shows_the_log_and_kernel(tmp_path: Path) -> None:
    out = tmp_path / "m"
    nnc.compile(small_models()["conv"], target="opencl", output_dir=out)
    cl = (out / "model.cl").read_text()
    name = cl.split("__kernel void ", 1)[1].split("(", 1)[0]
    at = cl.rindex("{\n") + 2  # in the last kernel variant: the one this device builds
    cl = cl[:at] + "    undeclared_thing = 1;\n" + cl[at:]
    (out / "model.cl").write_text(cl)
    (out / "model.clbin").unlink(missing_ok=True)
    subprocess.run(["make", "-s", "-B", "-C", str(out)], check=True, capture_output=True)
    with pytest.raises(KernelBuildError, match=rf"(?s)building model.cl for .* failed.*error.*"
                       rf"\[kernel {name}\]"):
        OpenCLModel(out)


# ---- whole models


@pytest.fixture(scope="module")
def mlperf() -> dict:
    from benchmarks.models import MODELS

    return MODELS


@pytest.mark.parametrize("name", ["kws", pytest.param("vww", marks=pytest.mark.slow),
                                  pytest.param("ic", marks=pytest.mark.slow),
                                  pytest.param("ad", marks=pytest.mark.slow)])
def test_mlperf_tiny_matches_onnxruntime(name: str, mlperf: dict, tmp_path: Path) -> None:
    from benchmarks.models import sample_input

    model = mlperf[name]()
    feeds = sample_input(model)
    compiled = nnc.compile(model, target="opencl", output_dir=tmp_path / name)
    (got,) = compiled.run(feeds).values()
    (want,) = ort_run(model, feeds)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_int8_bit_identical_with_host_c(mlperf: dict, tmp_path: Path) -> None:
    model = mlperf["kws"]()
    opts = dict(quantize="int8", calibration="random", kernels="generated")
    cl = nnc.compile(model, target="opencl", output_dir=tmp_path / "cl", **opts)
    host = nnc.compile(model, target="host", output_dir=tmp_path / "c", bench=False, **opts)
    for seed in range(3):
        feeds = cl.random_inputs(seed=seed)
        (a,) = cl.run(feeds).values()
        (b,) = host.run(feeds).values()
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_prequantized_qdq_model_bit_identical_with_host_c(mlperf: dict, tmp_path: Path) -> None:
    """An onnxruntime quantize_static QDQ model (KWS, per-channel int8), not quantized by nnc."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = mlperf["kws"]()
    model.ir_version = min(model.ir_version, 8)
    src, dst = tmp_path / "kws.onnx", tmp_path / "kws_qdq.onnx"
    onnx.save(model, src)
    vi = model.graph.input[0]
    shape = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
    rng = np.random.default_rng(0)
    samples = iter([{vi.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(8)])

    class Reader:
        def get_next(self) -> dict | None:
            return next(samples, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    cl = nnc.compile(dst, target="opencl", output_dir=tmp_path / "cl", kernels="generated")
    host = nnc.compile(dst, target="host", output_dir=tmp_path / "c", bench=False,
                       kernels="generated")
    assert cl.info["num_kernels"] == host.info["num_kernels"]
    for seed in range(3):
        feeds = cl.random_inputs(seed=seed)
        (a,) = cl.run(feeds).values()
        (b,) = host.run(feeds).values()
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_inspect_shows_kernels_and_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import nnc.backends.target as target
    from nnc.compiler.inspect import inspect_opencl

    # 128-bit tiles (OpenCL's are the compiling CPU's width), so the pieces below are known
    monkeypatch.setattr(target, "detect_vector_isa", lambda: ("sse2", 128, ()))
    path = tmp_path / "conv.onnx"
    onnx.save(small_models()["conv"], path)
    text = inspect_opencl(path)
    assert "k0_conv" in text and "conv+relu" in text
    # the conv is register-tiled (a row: peeled first column, a 6-column tile, peeled last
    # column): each output row's three pieces are items on both device types, and GPUs spread
    # the tile's channel lanes too (hand-written bodies are in test_mapping.py)
    assert "24 (unit, oh)" in text and "96 (acc0[0], unit, oh)" in text
    assert cli_main(["inspect", str(path), "--target", "opencl"]) == 0
    assert capsys.readouterr().out.strip() == text
    assert cli_main(["inspect", str(path), "--target", "cortex-m4"]) == 2
    assert "only 'opencl' has a kernel report" in capsys.readouterr().err


def test_float16_matches_onnxruntime_without_cl_khr_fp16(tmp_path: Path) -> None:
    """float16 tensors are `half` buffers (vload_half/vstore_half_rte, core OpenCL 1.2) computed
    in float: the same values as the host C target, on devices with or without cl_khr_fp16."""
    f16 = TensorProto.FLOAT16
    model = _model([helper.make_node("Mul", ["x", "x"], ["m"]),
                    helper.make_node("Sigmoid", ["m"], ["s"]),
                    helper.make_node("ReduceSum", ["s"], ["y"], keepdims=1)],
                   [helper.make_tensor_value_info("x", f16, [4, 8])],
                   [helper.make_tensor_value_info("y", f16, [1, 1])])
    cl = nnc.compile(model, target="opencl", output_dir=tmp_path / "cl")
    host = nnc.compile(model, target="host", output_dir=tmp_path / "c", bench=False)
    assert "cl_khr_fp16" not in (tmp_path / "cl" / "model.cl").read_text()
    # subnormal, tie, overflow and NaN halves as well as ordinary ones
    x = np.array([0, 1e-7, -3e-5, 6.1e-5, 0.5, 1.0009765625, -2, 255.9, 300, 65504, -65504,
                  np.inf, -np.inf, np.nan, 1e-3, 0.1] * 2, np.float16).reshape(4, 8)
    (got,) = cl.run({"x": x}).values()
    (want,) = host.run({"x": x}).values()
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)
    (ref,) = ort_run(model, {"x": x})
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), rtol=1e-2)


def test_missing_device_extension_is_one_clear_line(tmp_path: Path) -> None:
    """A model.cl that needs an extension the device lacks (float64 on a device without
    cl_khr_fp64) is refused at init, naming it; simulated with an extension no device has."""
    out = tmp_path / "m"
    nnc.compile(small_models()["gemm"], target="opencl", output_dir=out)
    c = (out / "model.c").read_text()
    assert '    "",\n};' in c
    (out / "model.c").write_text(c.replace('    "",\n};', '    "cl_khr_fp64 cl_nnc_none",\n};'))
    subprocess.run(["make", "-s", "-B", "-C", str(out)], check=True, capture_output=True)
    with pytest.raises(OpenCLUnavailable) as e:  # an NncError: the CLI's one line, exit 2
        OpenCLModel(out)
    assert "does not have cl_nnc_none, which this model needs" in str(e.value)
    assert "\n" not in str(e.value)


TWO_MODELS_MAIN = r"""
#include <stdio.h>
#include <stdint.h>
int ma_configure(const char *, const char *); int ma_init(void);
int ma_run(const void *const *, void *const *); const char *ma_last_error(void);
int mb_configure(const char *, const char *); int mb_init(void);
int mb_run(const void *const *, void *const *); const char *mb_last_error(void);
int main(void)
{
    float xa[3 * 8 * 8], ya[4 * 8 * 8], xb[2 * 16], yb[2 * 10];
    for (int i = 0; i < 3 * 8 * 8; i++) xa[i] = (float)(i % 7) * 0.25f - 0.5f;
    for (int i = 0; i < 2 * 16; i++) xb[i] = (float)(i % 5) * 0.5f - 1.0f;
    const void *ia[1] = { xa }, *ib[1] = { xb };
    void *oa[1] = { ya }, *ob[1] = { yb };
    if (ma_configure(NULL, NULL) || ma_init() || ma_run(ia, oa)) {
        puts(ma_last_error()); return 1;
    }
    if (mb_configure(NULL, NULL) || mb_init() || mb_run(ib, ob)) {
        puts(mb_last_error()); return 1;
    }
    fwrite(ya, sizeof ya, 1, stdout);
    fwrite(yb, sizeof yb, 1, stdout);
    return 0;
}
"""


def test_two_models_link_into_one_binary(tmp_path: Path) -> None:
    """Each project's runtime functions carry its prefix (ma_cl_init, mb_cl_init): the two
    models' objects link into one executable and both run right."""
    models = small_models()
    a = nnc.compile(models["conv"], target="opencl", output_dir=tmp_path / "a", prefix="ma")
    b = nnc.compile(models["gemm"], target="opencl", output_dir=tmp_path / "b", prefix="mb")
    assert "#define NNC_CL_PREFIX ma" in (tmp_path / "a" / "nnc_opencl_prefix.h").read_text()
    (tmp_path / "main.c").write_text(TWO_MODELS_MAIN)
    objects = [str(tmp_path / d / f"{s}.o") for d in "ab" for s in ("model", "blobs", "nnc_opencl")]
    subprocess.run(["gcc", "-O1", "-o", str(tmp_path / "both"), str(tmp_path / "main.c"),
                    *objects, "-lOpenCL", "-lm"], check=True, capture_output=True, text=True)
    run = subprocess.run([str(tmp_path / "both")], check=True, capture_output=True)
    got = np.frombuffer(run.stdout, np.float32)
    xa = ((np.arange(3 * 8 * 8) % 7) * 0.25 - 0.5).astype(np.float32).reshape(1, 3, 8, 8)
    xb = ((np.arange(2 * 16) % 5) * 0.5 - 1.0).astype(np.float32).reshape(2, 16)
    np.testing.assert_array_equal(got[:4 * 8 * 8], a.run({"x": xa})["y"].ravel())
    np.testing.assert_array_equal(got[4 * 8 * 8:], b.run({"x": xb})["y"].ravel())


# bounded: two zoo models of the differential matrix (`python -m benchmarks.int8_differential
# --variants host,opencl` runs all fourteen; the slow matrix test includes opencl)
@pytest.mark.parametrize("name", ["gated_fc", "broadcast_ops"])
def test_int8_differential_opencl_identical_with_host_and_interpreter(name: str) -> None:
    from benchmarks.int8_differential import disagreements

    bad = disagreements(name, ["host", "opencl"])
    assert not bad, f"{name}: {bad}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kws", "ic"])
def test_mlperf_tiny_gpu_mapping_matches_onnxruntime(name: str, mlperf: dict,
                                                     tmp_path: Path) -> None:
    """The register-tiled kernels under the GPU mapping (tile pieces as items, lanes spread),
    run by PoCL's CPU device."""
    from benchmarks.models import sample_input
    from nnc.backends.opencl.build import build
    from nnc.compiler.api import _target
    from nnc.compiler.onnx.importer import import_model
    from nnc.compiler.pipeline import default_pipeline
    from nnc.passes.manager import PassManager, parse_pipeline

    model = mlperf[name]()
    feeds = sample_input(model)
    module = PassManager(parse_pipeline(default_pipeline("opencl")),
                         target=_target("opencl")).run(import_model(model))
    build(module, tmp_path, mapping="gpu")
    (got,) = OpenCLModel(tmp_path).run(feeds).values()
    (want,) = ort_run(model, feeds)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "shufflenet", "resnet50"])
def test_light_models_with_random_weights_match_onnxruntime(name: str, tmp_path: Path) -> None:
    """Issue 12's bar on the light models, with random weights (the shipped ones are constant:
    benchmarks.models.randomize_light_weights); atol relative to the logits' range."""
    from benchmarks.models import load_light, randomize_light_weights

    model, feeds, _ = load_light(name)
    model = randomize_light_weights(model)
    wants = ort_run(model, feeds)
    gots = list(nnc.compile(model, target="opencl", output_dir=tmp_path / "cl").run(feeds).values())
    assert len(gots) == len(wants) == 2
    for got, want in zip(gots, wants, strict=True):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * max(1.0, np.abs(want).max()))
