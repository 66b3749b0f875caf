"""float -> integer conversion, defined for every value (C leaves NaN, infinities and values out
of the target's range undefined; ARM saturates, x86 does not).

nnc uses x86's truncating conversion, the one onnxruntime and numpy give on x86-64:

* to int32 / int64: truncate toward zero when the value is in [-2^(N-1), 2^(N-1)); otherwise
  (NaN, +-inf, too large) the lowest value, INT32_MIN / INT64_MIN;
* to int8, int16, uint8, uint16: through int32 as above, then modulo 2^bits (300.7 -> int8 44,
  -1.5 -> uint8 255, NaN and 1e10 -> 0);
* to uint32 / uint64: values >= 2^(N-1) convert as `to_intN(x - 2^(N-1)) ^ 2^(N-1)`, the others
  as `to_intN(x)` reinterpreted (3e9 -> uint32 3000000000, -1 -> 4294967295, NaN -> 2^31,
  +inf -> 0).

The arithmetic is in the source's precision (float16 as float32). The C emitter writes the same
rule as helpers (`nnc_to_i32_f32`, ...), so host C, Cortex-M, OpenCL and both interpreters agree
bit for bit; `tests/backends/test_float_to_int.py` checks them against onnxruntime.

    >>> float_to_int(np.array([np.nan, 300.7, -1.5], np.float32), "uint8").tolist()
    [0, 44, 255]
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SIGNED: dict[int, np.dtype[Any]] = {32: np.dtype(np.int32), 64: np.dtype(np.int64)}


def _to_signed(x: np.ndarray, bits: int) -> np.ndarray:
    """x86 `cvtt`: truncation where in range, the lowest value elsewhere (NaN included)."""
    itype = _SIGNED[bits]
    bound = x.dtype.type(2.0 ** (bits - 1))
    ok = (x >= -bound) & (x < bound)
    lowest = np.array(-(2 ** (bits - 1)), itype)
    return np.where(ok, np.trunc(np.where(ok, x, 0)).astype(itype), lowest)


def float_to_int(x: np.ndarray, dtype: str) -> np.ndarray:
    """`x` (a float array) converted to the integer `dtype` by the rule above."""
    x = np.asarray(x)
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32)
    target = np.dtype(dtype)
    if target.kind == "u" and target.itemsize >= 4:
        bits = 8 * target.itemsize
        half = x.dtype.type(2.0 ** (bits - 1))
        big = x >= half
        with np.errstate(invalid="ignore"):
            low = _to_signed(np.where(big, x - half, x), bits)
        flip = np.array(-(2 ** (bits - 1)), _SIGNED[bits])
        return np.where(big, low ^ flip, low).astype(target)
    wide = _to_signed(x, 64 if target.itemsize == 8 else 32)
    return wide.astype(target)  # integer -> integer is modular in numpy
