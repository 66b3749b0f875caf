"""Tensor types of the graph IR: shape, element type, layout and optional quantization parameters.

>>> TensorType((1, 3, 32, 32), "float32")
TensorType(shape=(1, 3, 32, 32), dtype='float32', layout=None, quant=None)
>>> str(TensorType((1, 10), "float32"))
'f32[1,10]'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# dtype name -> short spelling used by the printers.
DTYPE_SHORT: dict[str, str] = {
    "float32": "f32",
    "float64": "f64",
    "float16": "f16",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "uint16": "u16",
    "uint32": "u32",
    "uint64": "u64",
    "bool": "bool",
}
SHORT_DTYPE: dict[str, str] = {v: k for k, v in DTYPE_SHORT.items()}
DTYPES: frozenset[str] = frozenset(DTYPE_SHORT)
FLOAT_DTYPES: frozenset[str] = frozenset({"float16", "float32", "float64"})
INT_DTYPES: frozenset[str] = DTYPES - FLOAT_DTYPES - {"bool"}


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def is_int(dtype: str) -> bool:
    return dtype in INT_DTYPES


def itemsize(dtype: str) -> int:
    return int(np.dtype(dtype).itemsize)


@dataclass(frozen=True, slots=True)
class QuantParams:
    """Affine quantization: real = scale * (q - zero_point); per-tensor when axis is None."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def __str__(self) -> str:
        s = ",".join(repr(float(x)) for x in self.scale)
        z = ",".join(str(int(x)) for x in self.zero_point)
        ax = "" if self.axis is None else f",axis={self.axis}"
        return f"q<scale=[{s}],zp=[{z}]{ax}>"


@dataclass(frozen=True, slots=True)
class TensorType:
    """A statically shaped tensor type. `layout` is e.g. "NCHW"/"NHWC" where it matters."""

    shape: tuple[int, ...]
    dtype: str
    layout: str | None = None
    quant: QuantParams | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}")
        if not all(isinstance(d, int) and d >= 0 for d in self.shape):
            raise ValueError(f"shape must be non-negative ints, got {self.shape!r}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * itemsize(self.dtype)

    def with_shape(self, shape: tuple[int, ...]) -> TensorType:
        return TensorType(tuple(int(d) for d in shape), self.dtype, self.layout, self.quant)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype, self.layout, None)

    def __str__(self) -> str:
        s = f"{DTYPE_SHORT[self.dtype]}[{','.join(str(d) for d in self.shape)}]"
        if self.layout:
            s += f"@{self.layout}"
        if self.quant is not None:
            s += " " + str(self.quant)
        return s


def tensor_type_of(array: np.ndarray) -> TensorType:
    return TensorType(tuple(int(d) for d in array.shape), str(array.dtype))
