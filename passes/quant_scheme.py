"""The TFLite int8 scheme (what CMSIS-NN expects) and calibration data loading.

- activations: asymmetric int8 [-128, 127], range widened to include 0, zero point nudged to an
  integer so that real 0.0 is exact (TFLite GetAsymmetricQuantizationParams);
- weights: symmetric int8 [-127, 127], zero point 0, per output channel (or per tensor);
- bias: int32, zero point 0, scale = input_scale * weight_scale;
- requantization: real multiplier -> (int32 multiplier, shift), TFLite QuantizeMultiplier.

>>> activation_params(-1.0, 3.0)
QuantParams(scale=(0.01568627543747425,), zero_point=(-64,), axis=None)
>>> quantize_multiplier(0.75)
(1610612736, 0)
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nnc.errors import NncError
from nnc.ir.graph import Graph, Value
from nnc.ir.types import QuantParams, is_float

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127  # symmetric weights never use -128 (TFLite spec)
INT32_MAX = 2**31 - 1

Samples = list[dict[str, np.ndarray]]


def _round_half_away(x: npt.ArrayLike) -> np.ndarray:
    """std::round: halves away from zero (numpy's rint rounds them to even)."""
    a = np.asarray(x, dtype=np.float64)  # float64 keeps |x| + 0.5 exact for float32 inputs
    return np.sign(a) * np.floor(np.abs(a) + 0.5)


def activation_params(rmin: float, rmax: float) -> QuantParams:
    """Asymmetric per-tensor int8 parameters for the real range [rmin, rmax] (float32 math)."""
    if not (math.isfinite(rmin) and math.isfinite(rmax)) or rmin > rmax:
        raise NncError(f"bad activation range [{rmin}, {rmax}]")
    lo = np.float32(min(rmin, 0.0))
    hi = np.float32(max(rmax, 0.0))
    qmin, qmax = np.float32(INT8_MIN), np.float32(INT8_MAX)
    scale = np.float32((hi - lo) / (qmax - qmin))
    if scale == 0:  # an all-zero tensor: any scale represents it; keep the arithmetic finite
        return QuantParams((1.0,), (0,))
    zp_from_min = np.float32(qmin - lo / scale)
    zp = int(np.clip(_round_half_away(zp_from_min), INT8_MIN, INT8_MAX))
    return QuantParams((float(scale),), (zp,))


def weight_params(w: np.ndarray, axis: int | None) -> QuantParams:
    """Symmetric int8 parameters: per channel along `axis` (conv: 0), or per tensor if None.

    An all-zero channel gets the largest scale of the others (1.0 if all are zero), so its bias
    keeps the same precision as the coarsest channel's.
    """
    a = np.abs(np.asarray(w, dtype=np.float32))
    if a.size == 0:
        raise NncError(f"cannot quantize an empty weight tensor of shape {a.shape}")
    if axis is None:
        amax = a.max().reshape(1)
    else:
        if not -a.ndim <= axis < a.ndim:
            raise NncError(f"weight axis {axis} out of range for shape {a.shape}")
        axis %= a.ndim
        amax = a.max(axis=tuple(d for d in range(a.ndim) if d != axis))
    if not np.all(np.isfinite(amax)):
        raise NncError("weights contain NaN or infinity")
    scales = (amax / np.float32(WEIGHT_MAX)).astype(np.float32)
    positive = scales[scales > 0]
    scales[scales == 0] = positive.max() if positive.size else np.float32(1.0)
    return QuantParams(tuple(float(s) for s in scales), (0,) * len(scales), axis)


def bias_params(input_scale: float, weight_scales: Sequence[float]) -> QuantParams:
    """int32 bias parameters: scale_c = input_scale * weight_scale_c (float32), zero point 0."""
    scales = np.float32(input_scale) * np.asarray(weight_scales, dtype=np.float32)
    axis = 0 if len(scales) > 1 else None
    return QuantParams(tuple(float(s) for s in scales), (0,) * len(scales), axis)


def quantize(x: npt.ArrayLike, params: QuantParams, dtype: str = "int8",
             narrow_range: bool = False) -> np.ndarray:
    """real -> integer: round(x / scale) + zero_point, halves away from zero, saturated.

    `narrow_range` drops the most negative code (weights: [-127, 127]; bias: ±(2^31 - 1)).
    """
    a = np.asarray(x, dtype=np.float32)
    shape = [1] * a.ndim
    if params.axis is not None:
        shape[params.axis] = len(params.scale)
    scale = np.asarray(params.scale, dtype=np.float32).reshape(shape)
    zp = np.asarray(params.zero_point, dtype=np.int64).reshape(shape)
    info = np.iinfo(dtype)
    lo = info.min + 1 if narrow_range else info.min
    q = _round_half_away(a / scale).astype(np.int64) + zp
    return np.clip(q, lo, info.max).astype(dtype)


def dequantize(q: npt.ArrayLike, params: QuantParams) -> np.ndarray:
    """integer -> real (float32): scale * (q - zero_point)."""
    a = np.asarray(q, dtype=np.int64)
    shape = [1] * a.ndim
    if params.axis is not None:
        shape[params.axis] = len(params.scale)
    scale = np.asarray(params.scale, dtype=np.float32).reshape(shape)
    zp = np.asarray(params.zero_point, dtype=np.int64).reshape(shape)
    return ((a - zp).astype(np.float32) * scale).astype(np.float32)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real ~= multiplier * 2^(shift - 31), |multiplier| in [2^30, 2^31).

    A positive shift is a left shift (CMSIS-NN's convention too). Multipliers below 2^-31 flush to
    (0, 0); the left shift is capped at 30 as single-rounding TFLite does.
    """
    real = float(real)
    if not math.isfinite(real):
        raise NncError(f"requantization multiplier {real} is not finite")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.floor(abs(q) * 2**31 + 0.5)) * (1 if q > 0 else -1)
    if abs(q_fixed) == 2**31:  # rounding reached 1.0: renormalize
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (INT32_MAX if q_fixed > 0 else -INT32_MAX), 30
    return q_fixed, shift


def sqnr_db(reference: npt.ArrayLike, test: npt.ArrayLike) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σref² / Σ(ref−test)²) in dB (inf if equal)."""
    ref = np.asarray(reference, dtype=np.float64)
    tst = np.asarray(test, dtype=np.float64)
    if ref.shape != tst.shape:
        raise ValueError(f"sqnr_db: shapes differ {ref.shape} vs {tst.shape}")
    noise = float(np.sum((ref - tst) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


# --- calibration data -------------------------------------------------------------------------

def _split_samples(arr: np.ndarray, v: Value, where: str) -> list[np.ndarray]:
    """Samples on the first axis; each sample has the input's shape, or lacks its batch-1 axis."""
    shape = v.type.shape
    if arr.dtype.kind not in "biuf":
        raise NncError(f"{where}: input {v.name!r} has non-numeric dtype {arr.dtype}")
    if arr.shape == shape:
        samples = [arr]
    elif shape and shape[0] == 1 and arr.shape == shape[1:]:  # one sample without its batch axis
        samples = [arr[None]]
    elif arr.shape[1:] == shape:
        samples = list(arr)
    elif shape and shape[0] == 1 and arr.shape[1:] == shape[1:]:
        samples = [a[None] for a in arr]
    else:
        raise NncError(
            f"{where}: input {v.name!r} has shape {list(arr.shape)}; expected samples on the first "
            f"axis, each of shape {list(shape)}"
            + (f" (or {list(shape[1:])})" if shape and shape[0] == 1 else ""))
    out = [np.ascontiguousarray(s, dtype=v.type.dtype) for s in samples]
    if is_float(v.type.dtype) and not all(np.all(np.isfinite(s)) for s in out):
        raise NncError(f"{where}: input {v.name!r} contains NaN or infinity")
    return out


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError, EOFError) as e:
        raise NncError(f"calibration data: cannot read {path}: {e}") from e


def _arrays_from(source: str | os.PathLike[str], inputs: Sequence[Value]
                 ) -> tuple[dict[str, list[np.ndarray]], str]:
    """{input name: [arrays holding samples]} from a .npz, a .npy or a folder of .npy."""
    path = Path(source)
    where = str(path)
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise NncError(f"calibration data: folder {path} holds no .npy files")
        by_name = {f.stem: f for f in files}
        if all(v.name in by_name for v in inputs):  # one <input name>.npy per input
            return {v.name: [_load_npy(by_name[v.name])] for v in inputs}, where
        if len(inputs) == 1:  # any .npy files, each one sample or a batch of samples
            return {inputs[0].name: [_load_npy(f) for f in files]}, where
        missing = [v.name for v in inputs if v.name not in by_name]
        raise NncError(f"calibration data: folder {path} lacks {[m + '.npy' for m in missing]} "
                       f"(a multi-input model needs one <input name>.npy per input)")
    if not path.exists():
        raise NncError(f"calibration data: {path} does not exist")
    if path.suffix == ".npy":
        if len(inputs) != 1:
            raise NncError(f"calibration data: a single .npy file ({path}) only serves a "
                           f"one-input model; this one has {[v.name for v in inputs]} (use .npz)")
        return {inputs[0].name: [_load_npy(path)]}, where
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("not an .npz archive")
            data = {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, EOFError) as e:
        raise NncError(f"calibration data: cannot read {path} as .npz: {e}") from e
    missing = [v.name for v in inputs if v.name not in data]
    if missing:
        raise NncError(f"calibration data: {path} lacks input(s) {missing} "
                       f"(it holds {sorted(data)})")
    return {v.name: [data[v.name]] for v in inputs}, where


def load_calibration_data(source: str | os.PathLike[str] | Mapping[str, np.ndarray],
                          inputs: Sequence[Value]) -> Samples:
    """Calibration samples [{input name: array}] for a model with graph inputs `inputs`.

    `source`: a .npz keyed by input name (samples on the first axis), a folder with one
    `<input name>.npy` per input (same layout), a folder of .npy files for a one-input model
    (each file one sample or a batch of samples), a .npy for a one-input model, or a mapping of
    arrays laid out like the .npz. A sample may omit a batch axis of size 1.
    """
    if not inputs:
        raise NncError("calibration data: the model has no inputs")
    if isinstance(source, Mapping):
        missing = [v.name for v in inputs if v.name not in source]
        if missing:
            raise NncError(f"calibration data lacks input(s) {missing}")
        arrays = {v.name: [np.asarray(source[v.name])] for v in inputs}
        where = "calibration data"
    else:
        arrays, where = _arrays_from(source, inputs)
    per_input: dict[str, list[np.ndarray]] = {}
    for v in inputs:
        per_input[v.name] = [s for a in arrays[v.name] for s in _split_samples(a, v, where)]
    counts = {name: len(s) for name, s in per_input.items()}
    if len(set(counts.values())) != 1:
        raise NncError(f"{where}: inputs have different sample counts {counts}")
    n = next(iter(counts.values()))
    if n == 0:
        raise NncError(f"{where}: no samples")
    return [{name: s[i] for name, s in per_input.items()} for i in range(n)]


def random_calibration_data(graph: Graph, n: int, seed: int = 0) -> Samples:
    """`n` random samples (floats ~ N(0, 1), ints in [0, 10), bools) — a last resort.

    Ranges calibrated on random data rarely match real inputs; callers should say so loudly.
    """
    if n <= 0:
        raise NncError(f"random calibration needs at least one sample, got {n}")
    warnings.warn("calibrating on RANDOM data: int8 accuracy on real inputs will likely be poor; "
                  "pass representative samples instead", UserWarning, stacklevel=2)
    rng = np.random.default_rng(seed)
    samples: Samples = []
    for _ in range(n):
        sample: dict[str, np.ndarray] = {}
        for v in graph.inputs:
            shape, dtype = v.type.shape, v.type.dtype
            if is_float(dtype):
                sample[v.name] = rng.standard_normal(shape).astype(dtype)
            elif dtype == "bool":
                sample[v.name] = rng.integers(0, 2, shape).astype(bool)
            else:
                sample[v.name] = rng.integers(0, 10, shape).astype(dtype)
        samples.append(sample)
    return samples
