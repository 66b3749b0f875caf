"""Whole models: the four MLPerf Tiny models and the nine light models shipped in onnx.

Fast tests check the benchmark models themselves with onnxruntime (sizes match the published
figures, they run, outputs are sane). Slow tests compile each model with `nnc.compile` for the host
and compare with onnxruntime (rtol 1e-3, atol 1e-4).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from benchmarks.models import (
    EXPECTED,
    LIGHT_MODELS,
    MODELS,
    load_light,
    model_stats,
    randomize_light_weights,
    sample_input,
    save_all,
)

RTOL, ATOL = 1e-3, 1e-4


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # the light models carry unused initializers ORT warns about
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


# --- the benchmark models (fast, onnxruntime only) ----------------------------------------------


@pytest.fixture(scope="module", params=sorted(MODELS))
def mlperf(request: pytest.FixtureRequest) -> tuple[str, onnx.ModelProto]:
    return request.param, MODELS[request.param]()


def test_mlperf_sizes_match_published(mlperf: tuple[str, onnx.ModelProto]) -> None:
    name, model = mlperf
    params, macs = model_stats(model)
    want_params, want_macs = EXPECTED[name]
    assert abs(params - want_params) / want_params < 0.02, (name, params)
    assert abs(macs - want_macs) / want_macs < 0.02, (name, macs)


def test_mlperf_runs_in_onnxruntime(mlperf: tuple[str, onnx.ModelProto]) -> None:
    name, model = mlperf
    (out,) = ort_run(model, sample_input(model)).values()
    assert out.dtype == np.float32 and np.isfinite(out).all()
    if name == "ad":
        assert out.shape == (1, 640) and 0.1 < np.abs(out).mean() < 10
    else:
        assert out.shape == (1, {"kws": 12, "vww": 2, "ic": 10}[name])
        np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-5)
        assert out.max() < 0.999, "softmax saturated: weights are badly scaled"


def test_mlperf_keeps_batchnorm_separate(mlperf: tuple[str, onnx.ModelProto]) -> None:
    name, model = mlperf
    ops = [n.op_type for n in model.graph.node]
    layers = ops.count("Conv") + ops.count("Gemm") + ops.count("MatMul")
    # Every conv/dense is followed by BN, except classifiers, the AD output and ResNet skip convs.
    expected_bn = {"kws": layers - 1, "vww": layers - 1, "ic": layers - 3, "ad": layers - 1}[name]
    assert ops.count("BatchNormalization") == expected_bn
    assert model.opset_import[0].version == 13


def test_mlperf_models_are_deterministic() -> None:
    for build in MODELS.values():
        assert build().SerializeToString() == build().SerializeToString()


def test_save_all_writes_loadable_models(tmp_path: Path) -> None:
    paths = save_all(tmp_path)
    assert sorted(p.name for p in paths) == ["ad.onnx", "ic.onnx", "kws.onnx", "vww.onnx"]
    for p in paths:
        onnx.checker.check_model(onnx.load(p))


# --- compiled with nnc (slow) --------------------------------------------------------------------


def _compile(model: onnx.ModelProto, tmp_path: Path):  # noqa: ANN202 - nnc.CompiledModel
    nnc = pytest.importorskip("nnc")
    try:
        compile_fn = nnc.compile
    except (ImportError, AttributeError):
        pytest.skip("nnc.compile is not available")
    return compile_fn(model, target="host", output_dir=tmp_path / "out")


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for k, w in want.items():
        g = np.asarray(got[k])
        assert g.shape == w.shape and g.dtype == w.dtype, (k, g.shape, g.dtype)
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_compiled_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    model = MODELS[name]()
    compiled = _compile(model, tmp_path)
    for seed in (0, 1):
        feeds = sample_input(model, seed)
        _assert_close(compiled.run(feeds), ort_run(model, feeds))
    assert set(compiled.compile_time_s) >= {"passes", "codegen", "c_compiler"}


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_compiled_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    model, feeds, reference = load_light(name)
    want = ort_run(model, feeds)
    np.testing.assert_allclose(next(iter(want.values())), reference, rtol=RTOL, atol=ATOL)
    compiled = _compile(model, tmp_path)
    _assert_close(compiled.run(feeds), want)
    if os.environ.get("NNC_BENCH_PRINT"):
        print(name, compiled.compile_time_s)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "shufflenet", "resnet50"])
def test_light_model_with_random_weights_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    """The shipped light models have one value in every weight (flat softmax output, every
    channel alike): with random weights a wrong tap, channel or group shows. The logits reach
    1e4-1e6 through the residual adds, hence atol relative to the output's range."""
    model, feeds, _ = load_light(name)
    model = randomize_light_weights(model)
    want = ort_run(model, feeds)
    assert len(want) == 2 and np.std(list(want.values())[1]) > 0.1  # the logits, not flat
    got = _compile(model, tmp_path).run(feeds)
    assert set(got) == set(want)
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=RTOL, atol=ATOL * max(1.0, np.abs(w).max()),
                                   err_msg=k)
