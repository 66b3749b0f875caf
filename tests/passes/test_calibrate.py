"""calibrate: per-tensor ranges from the graph interpreter, checked by hand and against
onnxruntime's calibrators on the same ONNX model and data."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.calibrate import (
    CalibrationDataReader,
    CalibrationMethod,
    create_calibrator,
)

from nnc.compiler.onnx.importer import import_model
from nnc.errors import NncError
from nnc.ir.graph import Graph
from nnc.passes.calibrate import _entropy_range, calibrate, float_activations

RNG = np.random.default_rng(0)


def model(nodes: list[onnx.NodeProto], inputs: dict[str, list[int]], output: tuple[str, list[int]],
          inits: dict[str, np.ndarray] | None = None, out_type: int = TensorProto.FLOAT
          ) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes, "m",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(output[0], out_type, output[1])],
        [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (inits or {}).items()])
    # IR version 8: what the installed onnxruntime loads
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def conv_net() -> onnx.ModelProto:
    """conv -> relu -> strided conv -> tanh -> global pool -> flatten -> gemm."""
    rng = np.random.default_rng(1)
    inits = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)), "b1": rng.normal(0, 0.1, 8),
             "w2": rng.normal(0, 0.2, (8, 8, 3, 3)), "b2": rng.normal(0, 0.1, 8),
             "w3": rng.normal(0, 0.3, (10, 8)), "b3": rng.normal(0, 0.1, 10)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Tanh", ["c2"], ["t2"]),
        helper.make_node("GlobalAveragePool", ["t2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    return model(nodes, {"x": [1, 3, 8, 8]}, ("y", [1, 10]), inits)


def conv_samples(n: int) -> list[dict[str, np.ndarray]]:
    x = np.random.default_rng(2).standard_normal((n, 1, 3, 8, 8)).astype(np.float32)
    x[:, :, :, :2] *= 4  # heavier tails on two rows, so the histogram methods cut something
    return [{"x": s} for s in x]


def identity_graph(shape: list[int]) -> Graph:
    return import_model(model([helper.make_node("Relu", ["x"], ["y"])], {"x": shape},
                              ("y", shape)))


# --- by hand ----------------------------------------------------------------------------------

def test_minmax_covers_inputs_and_outputs_not_constants_or_ints() -> None:
    nodes = [helper.make_node("Mul", ["x", "k"], ["m"]),
             helper.make_node("Relu", ["m"], ["r"]),
             helper.make_node("ArgMax", ["r"], ["y"], axis=1)]
    g = import_model(model(nodes, {"x": [2, 3]}, ("y", [2, 1]), {"k": np.full((2, 3), 2.0)},
                           out_type=TensorProto.INT64))
    assert float_activations(g) == ["x", "m", "r"]
    xs = [np.array([[1, -2, 3], [0, 1, 2]], np.float32), np.array([[5, 0, -7], [1, 1, 1]],
                                                                     np.float32)]
    ranges = calibrate(g, [{"x": x} for x in xs])
    assert ranges == {"x": (-7.0, 5.0), "m": (-14.0, 10.0), "r": (0.0, 10.0)}
    sym = calibrate(g, ({"x": x} for x in xs), symmetric=True)  # any iterable
    assert sym["x"] == (-7.0, 7.0) and sym["r"] == (-10.0, 10.0)


def test_percentile_cuts_tails() -> None:
    g = identity_graph([1, 10000])
    x = np.linspace(-1.0, 1.0, 10000, dtype=np.float32)[None]
    x[0, 0], x[0, -1] = -50.0, 100.0  # one outlier on each side
    r = calibrate(g, [{"x": x}], method="percentile", percentile=99.9, num_bins=4096)
    assert r["x"][0] == pytest.approx(-r["x"][1]) and 0.95 < r["x"][1] < 1.1
    assert r["y"][0] == 0.0 and r["y"][1] < 1.1  # clamped to the observed minimum
    full = calibrate(g, [{"x": x}], method="percentile", percentile=100.0)
    assert full["x"] == pytest.approx((-50.0, 100.0))
    sides = calibrate(g, [{"x": x}], method="percentile", percentile=99.9, symmetric=False)
    assert -1.1 < sides["x"][0] < -0.95 and 0.95 < sides["x"][1] < 1.1


def test_percentile_cuts_magnitudes_by_default_as_onnxruntime_applies_it() -> None:
    # half zeros, half uniform on [0, 1]: |x| at 99% cuts the top 1% of all values (a = 0.98);
    # per side cuts 0.5% from the top (0.99)
    g = identity_graph([1, 10000])
    x = np.concatenate([np.zeros(5000), np.linspace(0.0, 1.0, 5000)]).astype(np.float32)[None]
    default = calibrate(g, [{"x": x}], method="percentile", percentile=99.0)["x"]
    assert default[0] == 0.0 and default[1] == pytest.approx(0.98, abs=2e-3)
    sides = calibrate(g, [{"x": x}], method="percentile", percentile=99.0, symmetric=False)
    assert sides["x"][0] == 0.0 and sides["x"][1] == pytest.approx(0.99, abs=2e-3)
    assert calibrate(g, [{"x": x}])["x"] == (0.0, 1.0)  # minmax stays asymmetric by default


def test_entropy_clips_rare_outliers_only_when_the_data_outweighs_them() -> None:
    # two outliers at +-40: clipping them to ~4 sigma costs 2 * 36^2 of squared error; it pays
    # when the rounding error saved on every other value is larger (2^18 values), not with 4096
    big = identity_graph([1, 1 << 18])
    gauss = RNG.standard_normal((1, 1 << 18)).astype(np.float32)
    gauss[0, :2] = (-40.0, 40.0)
    r = calibrate(big, [{"x": gauss}], method="entropy")
    assert 2.0 < r["x"][1] < 20.0 and -20.0 < r["x"][0] < -2.0
    small = identity_graph([1, 4096])
    few = calibrate(small, [{"x": gauss[:, :4096]}], method="entropy")
    assert few["x"] == pytest.approx((-40.0, 40.0), rel=1e-3)
    uniform = RNG.uniform(-1, 1, (1, 4096)).astype(np.float32)
    u = calibrate(small, [{"x": uniform}], method="entropy")["x"]
    assert u[0] < -0.9 and u[1] > 0.9


def relu_like(n: int, seed: int) -> np.ndarray:
    """Half zeros, a spiky body (narrow modes, as small random-weight convnets give), a mode at
    0.35 and an exponential tail: KL alone (no squared-error bound) cuts at ~0.57, -10 dB."""
    rng = np.random.default_rng(seed)
    body = np.concatenate([rng.normal(c, 0.004, n // 10) for c in (0.05, 0.1, 0.17, 0.2)])
    tail = rng.normal(0.35, 0.01, n // 10)
    spread = rng.exponential(0.1, n // 10)
    x = np.concatenate([np.zeros(n // 2), body, tail, spread])
    return np.maximum(x, 0.0).astype(np.float32)[None]


def test_entropy_never_loses_squared_error_against_the_data_range() -> None:
    from nnc.passes.quant_scheme import activation_params, dequantize, quantize, sqnr_db

    x = relu_like(1 << 16, 3)
    g = identity_graph(list(x.shape))
    lo, hi = calibrate(g, [{"x": x}], method="entropy")["x"]
    assert lo == 0.0 and 0.4 < hi < float(x.max())  # it does cut the sparse far tail
    sqnr = {}
    for name, r in (("entropy", (lo, hi)), ("minmax", (0.0, float(x.max())))):
        qp = activation_params(*r)
        sqnr[name] = sqnr_db(x, dequantize(quantize(x, qp), qp))
    assert sqnr["entropy"] >= sqnr["minmax"] - 0.05, sqnr


def test_entropy_window_search_on_a_gaussian_histogram() -> None:
    # N(0, sigma = 40 bins) in 2048 bins over [-8, 8] plus one far outlier per side: the KL
    # threshold lands a few sigma out, far inside the outliers
    k = np.arange(2048)
    hist = np.round(1e6 * np.exp(-((k + 0.5 - 1024) ** 2) / (2 * 40.0**2))).astype(np.int64)
    hist[0] = hist[-1] = 1
    sigma = 40 * 16 / 2048
    lo, hi = _entropy_range(hist, np.linspace(-8.0, 8.0, 2049), 128)
    assert 3 * sigma < hi < 7 * sigma and -7 * sigma < lo < -3 * sigma


def test_order_and_cache_do_not_matter() -> None:
    g = import_model(conv_net())
    samples = conv_samples(6)
    for method in ("percentile", "entropy"):
        a = calibrate(g, samples, method=method, num_bins=512)
        b = calibrate(g, samples[::-1], method=method, num_bins=512, cache_bytes=0)
        assert a == b


def test_bad_arguments() -> None:
    g = identity_graph([1, 4])
    feed = [{"x": np.zeros((1, 4), np.float32)}]
    with pytest.raises(NncError, match="unknown calibration method 'kl'"):
        calibrate(g, feed, method="kl")
    with pytest.raises(NncError, match="at least one sample"):
        calibrate(g, [])
    with pytest.raises(NncError, match="percentile must be in"):
        calibrate(g, feed, method="percentile", percentile=0.0)
    with pytest.raises(NncError, match="num_bins"):
        calibrate(g, feed, method="entropy", num_bins=64)
    assert calibrate(g, feed, method="entropy") == {"x": (0.0, 0.0), "y": (0.0, 0.0)}


# --- against onnxruntime ----------------------------------------------------------------------

class _Reader(CalibrationDataReader):
    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self.it = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.it, None)


Ranges = dict[str, tuple[float, float]]


def ort_ranges(tmp_path: Path, proto: onnx.ModelProto, samples: list[dict[str, np.ndarray]],
               method: CalibrationMethod, extra: Mapping[str, object]) -> Ranges:
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    with contextlib.redirect_stdout(io.StringIO()):  # its calibrators print progress
        cal = create_calibrator(path, None, tmp_path / "aug.onnx", calibrate_method=method,
                                extra_options=extra)
        cal.collect_data(_Reader(samples))
        data = cal.compute_data()
    return {k: (float(np.ravel(v.range_value[0])[0]), float(np.ravel(v.range_value[1])[0]))
            for k, v in data.items()}


@pytest.mark.parametrize("method, ours, extra", [
    (CalibrationMethod.MinMax, {"method": "minmax"}, {}),
    (CalibrationMethod.Percentile, {"method": "percentile", "percentile": 99.9,
                                    "symmetric": False},
     {"num_bins": 2048, "percentile": 99.9, "symmetric": False}),
    # the defaults on both sides: what quantize_static does with CalibPercentile alone
    (CalibrationMethod.Percentile, {"method": "percentile", "percentile": 99.99},
     {"percentile": 99.99}),
    (CalibrationMethod.Percentile, {"method": "percentile", "percentile": 99.99,
                                    "symmetric": True},
     {"num_bins": 2048, "percentile": 99.99, "symmetric": True}),
])
def test_agrees_with_onnxruntime(tmp_path: Path, method: CalibrationMethod,
                                 ours: dict[str, object], extra: dict[str, object]) -> None:
    proto, samples = conv_net(), conv_samples(16)
    ref = ort_ranges(tmp_path, proto, samples, method, extra)
    got = calibrate(import_model(proto), samples, **ours)  # type: ignore[arg-type]
    assert set(ref) == set(got) == {"x", "c1", "r1", "c2", "t2", "g", "f", "y"}
    for name, (lo, hi) in ref.items():
        tol = 1e-5 * (hi - lo)  # float rounding of onnxruntime's kernels vs our references
        assert got[name] == pytest.approx((lo, hi), abs=tol), name


def test_entropy_versus_onnxruntime(tmp_path: Path) -> None:
    """onnxruntime's KL search truncates q to integers and spreads it over empty bins too; ours
    follows TensorRT/MXNet, so the thresholds differ (same histograms: fed onnxruntime's
    histogram, the onnxruntime rule reproduces its thresholds exactly). Check ours stay inside
    the observed range and clip no worse on average (int8 SQNR of each tensor on its own)."""
    from nnc.ir.interp import run_graph
    from nnc.passes.quant_scheme import activation_params, dequantize, quantize, sqnr_db

    proto, samples = conv_net(), conv_samples(16)
    graph = import_model(proto)
    extra = {"num_bins": 512, "num_quantized_bins": 128}
    ref = ort_ranges(tmp_path, proto, samples, CalibrationMethod.Entropy, extra)
    got = calibrate(graph, samples, method="entropy", num_bins=512)
    envs = [run_graph(graph, s, keep_all=True) for s in samples]
    ours: list[float] = []
    theirs: list[float] = []
    for name in ref:
        values = np.concatenate([e[name].ravel() for e in envs])
        assert values.min() - 1e-5 <= got[name][0] <= got[name][1] <= values.max() + 1e-5
        for r, out in ((got[name], ours), (ref[name], theirs)):
            qp = activation_params(*r)
            out.append(sqnr_db(values, dequantize(quantize(values, qp), qp)))
    assert np.mean(ours) >= np.mean(theirs) - 0.5, (ours, theirs)
