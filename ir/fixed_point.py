"""TFLite's fixed-point requantization (MultiplyByQuantizedMultiplier) in numpy: the one definition
the int8 ops' references and the loop interpreter's `requantize` intrinsic share.

>>> int(np_requantize(np.int64(1000), 1691341787, -6))
12
"""

from __future__ import annotations

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _np_srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul of int32 values held in int64."""
    ab = a * b
    v = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(v >= 0, v >> 31, -((-v) >> 31))  # C division truncates toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def _np_rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent, nearest, ties away from zero."""
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def wrap32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.int64).astype(np.int32).astype(np.int64)


def np_requantize(x: np.ndarray | np.integer, multiplier: np.ndarray | int,
                  shift: np.ndarray | int) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier on int32 values (any int dtype), broadcasting;
    int64 result holding int32 values."""
    m = np.asarray(multiplier, np.int64)
    s = np.asarray(shift, np.int64)
    if s.size and (s.min() < -31 or s.max() > 30):
        raise ValueError(f"requantization shifts must lie in [-31, 30], got {s.min()}..{s.max()}")
    shifted = wrap32(np.asarray(x, np.int64) << np.maximum(s, 0))  # wraps like int32 math
    return _np_rounding_divide_by_pot(_np_srdhm(shifted, m), np.maximum(-s, 0))
