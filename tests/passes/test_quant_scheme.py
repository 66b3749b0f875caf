"""quant_scheme: TFLite int8 parameters, QuantizeMultiplier, SQNR and calibration data loading."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from onnxruntime.quantization.quant_utils import compute_scale_zp

from nnc.errors import NncError
from nnc.ir.graph import Graph, Value
from nnc.ir.types import TensorType
from nnc.passes.quant_scheme import (
    activation_params,
    bias_params,
    dequantize,
    load_calibration_data,
    quantize,
    quantize_multiplier,
    random_calibration_data,
    sqnr_db,
    weight_params,
)
from tests.backends.cmsis_nn import tflite_reference as tflite

RNG = np.random.default_rng(0)


# --- activations ------------------------------------------------------------------------------

@pytest.mark.parametrize("rmin, rmax, scale, zp", [
    (-1.0, 3.0, np.float32(4.0) / np.float32(255.0), -64),
    (0.5, 2.0, np.float32(2.0) / np.float32(255.0), -128),  # widened to include 0
    (-2.0, -1.0, np.float32(2.0) / np.float32(255.0), 127),
    (-63.75, 0.0, np.float32(0.25), 127),
    (-12.75, 51.0, np.float32(0.25), -77),
])
def test_activation_params_tflite(rmin: float, rmax: float, scale: float, zp: int) -> None:
    qp = activation_params(rmin, rmax)
    assert qp.scale == (float(np.float32(scale)),)
    assert qp.zero_point == (zp,)
    assert qp.axis is None


def test_activation_params_zero_is_exact_and_range_covered() -> None:
    for _ in range(200):
        lo, hi = sorted(RNG.normal(0, 5, 2))
        qp = activation_params(float(lo), float(hi))
        assert -128 <= qp.zero_point[0] <= 127
        assert quantize(0.0, qp)[()] == qp.zero_point[0]
        assert dequantize(quantize(0.0, qp), qp)[()] == 0.0
        # every value of the range is within half a step of its dequantized code
        x = np.linspace(min(lo, 0.0), max(hi, 0.0), 101, dtype=np.float32)
        err = np.abs(dequantize(quantize(x, qp), qp) - x)
        assert err.max() <= qp.scale[0] * 0.5 * (1 + 1e-4) + 1e-7


def test_activation_params_agree_with_onnxruntime() -> None:
    for _ in range(200):
        lo, hi = sorted(RNG.normal(0, 3, 2).astype(np.float32))
        qp = activation_params(float(lo), float(hi))
        zp, scale = compute_scale_zp(np.float32(lo), np.float32(hi), np.int8(-128), np.int8(127))
        assert qp.scale[0] == pytest.approx(float(scale), rel=1e-6)
        assert abs(qp.zero_point[0] - int(zp)) <= 1  # ties: half-away vs half-even


def test_activation_params_degenerate_and_bad() -> None:
    assert activation_params(0.0, 0.0).scale == (1.0,)
    with pytest.raises(NncError, match="bad activation range"):
        activation_params(1.0, -1.0)
    with pytest.raises(NncError, match="bad activation range"):
        activation_params(0.0, math.inf)


# --- weights and bias -------------------------------------------------------------------------

def test_weight_params_per_channel_symmetric() -> None:
    w = RNG.normal(0, 1, (4, 3, 3, 3)).astype(np.float32)
    qp = weight_params(w, axis=0)
    assert qp.axis == 0 and qp.zero_point == (0,) * 4
    want = np.abs(w).reshape(4, -1).max(1) / np.float32(127)
    np.testing.assert_array_equal(np.asarray(qp.scale, dtype=np.float32), want.astype(np.float32))
    q = quantize(w, qp, narrow_range=True)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    assert np.all(np.abs(q).reshape(4, -1).max(1) == 127)  # each channel uses its full range
    err = np.abs(dequantize(q, qp) - w).reshape(4, -1).max(1)
    assert np.all(err <= np.asarray(qp.scale, dtype=np.float32) * 0.5 + 1e-7)


def test_weight_params_other_axis_per_tensor_and_zero_channel() -> None:
    w = RNG.normal(0, 1, (5, 3)).astype(np.float32)
    w[:, 1] = 0.0
    qp = weight_params(w, axis=1)
    assert len(qp.scale) == 3 and qp.axis == 1
    assert qp.scale[1] == max(qp.scale[0], qp.scale[2])  # all-zero channel: no zero scale
    np.testing.assert_array_equal(quantize(w, qp, narrow_range=True)[:, 1], 0)
    per_tensor = weight_params(w, axis=None)
    assert per_tensor.axis is None and per_tensor.scale == (float(np.abs(w).max() / 127),)
    assert weight_params(np.zeros((2, 2)), axis=0).scale == (1.0, 1.0)
    with pytest.raises(NncError, match="axis 2 out of range"):
        weight_params(w, axis=2)


def test_bias_params_and_int32_quantization() -> None:
    wq = weight_params(RNG.normal(0, 1, (3, 4)).astype(np.float32), axis=0)
    bp = bias_params(0.05, wq.scale)
    assert bp.axis == 0 and bp.zero_point == (0, 0, 0)
    bias_scale = np.asarray(bp.scale, dtype=np.float32)
    np.testing.assert_array_equal(
        bias_scale, np.float32(0.05) * np.asarray(wq.scale, dtype=np.float32))
    b = np.array([0.3, -0.7, 1e9], dtype=np.float32)
    q = quantize(b, bp, "int32", narrow_range=True)
    assert q.dtype == np.int32 and q[2] == 2**31 - 1
    np.testing.assert_array_equal(q[:2], np.round(b[:2] / bias_scale[:2]))
    assert bias_params(0.5, [0.25]).axis is None


# --- requantization multiplier ----------------------------------------------------------------

# TFLite's quantization_util_test.cc (QuantizeMultiplier, QuantizeMultiplierUnderflow)
@pytest.mark.parametrize("real, expected", [
    (-4.0, (-(1 << 30), 3)), (-2.0, (-(1 << 30), 2)), (-1.0, (-(1 << 30), 1)),
    (-0.5, (-(1 << 30), 0)), (-0.25, (-(1 << 30), -1)), (-0.125, (-(1 << 30), -2)),
    (0.0, (0, 0)), (0.125, (1 << 30, -2)), (0.25, (1 << 30, -1)), (0.5, (1 << 30, 0)),
    (1.0, (1 << 30, 1)), (2.0, (1 << 30, 2)), (4.0, (1 << 30, 3)),
    (math.ldexp(1.0, -31), (1 << 30, -30)), (math.ldexp(1.0, -32), (1 << 30, -31)),
    (math.ldexp(1.0, -33), (0, 0)),
    (0.75, (1610612736, 0)), (1.0 - 2.0**-33, (1 << 30, 1)),  # rounds up to 1.0: renormalized
    (1.0 - 2.0**-31, (2**31 - 1, 0)),
])
def test_quantize_multiplier_tflite_values(real: float, expected: tuple[int, int]) -> None:
    assert quantize_multiplier(real) == expected


def test_quantize_multiplier_matches_reference_and_is_accurate() -> None:
    for real in 10.0 ** RNG.uniform(-9, 3, 500):
        m, s = quantize_multiplier(float(real))
        assert (m, s) == tflite.quantize_multiplier(float(real))
        assert (1 << 30) <= m < (1 << 31)
        assert abs(m * 2.0 ** (s - 31) - real) <= 2.0 ** (s - 32)
    assert quantize_multiplier(2.0**40) == (2**31 - 1, 30)
    with pytest.raises(NncError, match="not finite"):
        quantize_multiplier(math.nan)


# --- SQNR -------------------------------------------------------------------------------------

def test_sqnr_db() -> None:
    ref = np.array([1.0, -1.0, 1.0, -1.0])
    assert sqnr_db(ref, ref + 0.1) == pytest.approx(20.0)
    assert sqnr_db(ref, ref * 0.99) == pytest.approx(40.0)
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(np.zeros(3), np.ones(3)) == -math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        sqnr_db(ref, ref[:2])


# --- calibration data -------------------------------------------------------------------------

X = Value("x", TensorType((1, 3, 4, 4), "float32"))
T = Value("t", TensorType((2,), "int64"))


def test_load_npz(tmp_path: Path) -> None:
    xs = RNG.normal(size=(5, 3, 4, 4))  # batch axis of size 1 omitted, float64 on disk
    ts = np.arange(10).reshape(5, 2)
    np.savez(tmp_path / "cal.npz", x=xs, t=ts)
    samples = load_calibration_data(tmp_path / "cal.npz", [X, T])
    assert len(samples) == 5
    assert samples[2]["x"].shape == (1, 3, 4, 4) and samples[2]["x"].dtype == np.float32
    np.testing.assert_allclose(samples[2]["x"][0], xs[2].astype(np.float32))
    assert samples[4]["t"].dtype == np.int64 and list(samples[4]["t"]) == [8, 9]
    with_batch = load_calibration_data({"x": xs[:, None]}, [X])  # full input shape per sample
    assert len(with_batch) == 5 and with_batch[0]["x"].shape == (1, 3, 4, 4)


def test_load_folders_and_npy(tmp_path: Path) -> None:
    per_input = tmp_path / "per_input"
    per_input.mkdir()
    np.save(per_input / "x.npy", RNG.normal(size=(3, 1, 3, 4, 4)).astype(np.float32))
    np.save(per_input / "t.npy", np.zeros((3, 2), dtype=np.int64))
    assert len(load_calibration_data(str(per_input), [X, T])) == 3

    per_sample = tmp_path / "per_sample"
    per_sample.mkdir()
    for i in range(4):  # one sample per file, with or without the batch axis
        shape = (1, 3, 4, 4) if i % 2 else (3, 4, 4)
        np.save(per_sample / f"img{i}.npy", np.full(shape, i, dtype=np.float32))
    np.save(per_sample / "img9.npy", np.full((2, 3, 4, 4), 9, dtype=np.float32))  # a batch
    samples = load_calibration_data(per_sample, [X])
    assert [float(s["x"].flat[0]) for s in samples] == [0, 1, 2, 3, 9, 9]

    np.save(tmp_path / "one.npy", np.ones((7, 3, 4, 4), dtype=np.float32))
    assert len(load_calibration_data(tmp_path / "one.npy", [X])) == 7


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path / "c.npz", **arrays)  # type: ignore[arg-type]
    return path / "c.npz"


def _garbage(path: Path) -> Path:
    (path / "bad.npz").write_bytes(b"not a zip")
    return path / "bad.npz"


def _empty_dir(path: Path) -> Path:
    (path / "empty").mkdir()
    return path / "empty"


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "nope.npz", "does not exist"),
    (_garbage, "cannot read"),
    (lambda p: _npz(p, y=np.zeros((2, 3, 4, 4))), r"lacks input\(s\) \['x'\]"),
    (lambda p: _npz(p, x=np.zeros((2, 3, 5, 4))),
     r"input 'x' has shape \[2, 3, 5, 4\]; expected samples on the first axis, each of shape "
     r"\[1, 3, 4, 4\] \(or \[3, 4, 4\]\)"),
    (lambda p: _npz(p, x=np.full((1, 3, 4, 4), np.nan)), "NaN or infinity"),
    (lambda p: _npz(p, x=np.array(["a"])), "non-numeric"),
    (lambda p: _npz(p, x=np.zeros((0, 3, 4, 4))), "no samples"),
    (_empty_dir, "holds no .npy files"),
])
def test_load_errors(tmp_path: Path, setup: Callable[[Path], Path], message: str) -> None:
    with pytest.raises(NncError, match=message):
        load_calibration_data(setup(tmp_path), [X])


def test_load_errors_multi_input(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", x=np.zeros((2, 3, 4, 4)), t=np.zeros((3, 2)))
    with pytest.raises(NncError, match="different sample counts"):
        load_calibration_data(tmp_path / "c.npz", [X, T])
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "x.npy", np.zeros((2, 3, 4, 4)))
    with pytest.raises(NncError, match=r"lacks \['t.npy'\]"):
        load_calibration_data(tmp_path / "d", [X, T])
    with pytest.raises(NncError, match="only serves a one-input model"):
        load_calibration_data(tmp_path / "d" / "x.npy", [X, T])


def test_random_calibration_data_warns_and_is_seeded() -> None:
    g = Graph("g", (X, T), (X,), (), ())
    with pytest.warns(UserWarning, match="RANDOM data"):
        a = random_calibration_data(g, 3, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = random_calibration_data(g, 3, seed=1)
    assert len(a) == 3 and a[0]["x"].shape == (1, 3, 4, 4) and a[0]["t"].dtype == np.int64
    np.testing.assert_array_equal(a[2]["x"], b[2]["x"])
    with pytest.raises(NncError, match="at least one sample"):
        random_calibration_data(g, 0)
