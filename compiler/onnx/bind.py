"""`--bind NAME=VALUE`: a graph input fixed to a constant at compile time.

The importer turns a bound input into a constant, so everything computed from it folds as it is
emitted (a sample-rate check feeding an `If`, a shape operand). The value takes the dtype and
shape the model declares for the input:

    >>> bound_value("sr", (), "int64", "16000")
    array(16000)
    >>> bound_value("w", (None,), "float32", "0.5,1,2").tolist()
    [0.5, 1.0, 2.0]

VALUE is a scalar, a comma list (a 1-D input) or the path of a `.npy` file (any shape); from
Python also a number, a list or a numpy array. A scalar fits a rank-0 input and a shape-[1] one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnc.compiler.errors import NncError

# dims of an input as the model declares them: None for a dynamic one; no shape at all: None
Dims = tuple[int | None, ...] | None
BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False}


def parse_bind(specs: Sequence[str]) -> dict[str, str]:
    """CLI specs like `sr=16000`, `scales=1,2`, `table=t.npy` → {name: value text}."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise NncError(f"bad --bind {spec!r}: expected NAME=VALUE (a number, a comma list "
                           "like 1,2,3, or a .npy file), e.g. sr=16000")
        out[name.strip()] = value.strip()
    return out


def bound_value(name: str, dims: Dims, dtype: str, value: Any) -> np.ndarray:
    """The constant for input `name` (declared `dims` and `dtype`) bound to `value`."""
    where = f"--bind {name}"
    if isinstance(value, str | os.PathLike):
        arr = _from_text(where, os.fspath(value), dtype)
    elif isinstance(value, np.ndarray | np.generic):
        arr = np.asarray(value)
        if str(arr.dtype) != dtype:
            raise NncError(f"{where}: the value has dtype {arr.dtype} but the input is {dtype}")
    else:
        arr = _from_python(where, value, dtype)
    return _fit_shape(where, arr, dims)


def _from_text(where: str, text: str, dtype: str) -> np.ndarray:
    if text.endswith(".npy") or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise NncError(f"{where}: {text}: no such file")
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:
            raise NncError(f"{where}: {text}: cannot read as .npy ({e})") from None
        if str(arr.dtype) != dtype:
            raise NncError(f"{where}: {text} holds {arr.dtype} but the input is {dtype}")
        return np.asarray(arr)
    values = [_parse_scalar(where, tok.strip(), dtype) for tok in text.split(",")]
    return np.array(values[0] if len(values) == 1 else values, dtype=dtype)


def _parse_scalar(where: str, tok: str, dtype: str) -> bool | int | float:
    try:
        if dtype == "bool":
            return BOOL_WORDS[tok.lower()]
        if np.dtype(dtype).kind in "iu":
            v = int(tok, 10)
            info = np.iinfo(dtype)
            if not info.min <= v <= info.max:
                raise ValueError
            return v
        return float(tok)
    except (KeyError, ValueError):
        raise NncError(f"{where}: {tok!r} is not a valid {dtype} value (the input's "
                       "type)") from None


def _from_python(where: str, value: Any, dtype: str) -> np.ndarray:
    arr = np.asarray(value)
    target = np.dtype(dtype)
    ok = {"b": "b", "i": "iuf", "u": "iuf", "f": "f"}.get(arr.dtype.kind, "")
    if target.kind not in ok:
        raise NncError(f"{where}: a {arr.dtype} value "
                       f"cannot bind an input of type {dtype}")
    cast = arr.astype(target)
    if target.kind in "iub" and not np.array_equal(cast, arr):
        raise NncError(f"{where}: {value!r} does not fit the input's type {dtype}")
    return cast


def _fit_shape(where: str, arr: np.ndarray, dims: Dims) -> np.ndarray:
    if dims is None:
        return arr
    rank = len(dims)
    if arr.ndim != rank and arr.size == 1 and rank <= 1 and (rank == 0 or dims[0] in (1, None)):
        arr = arr.reshape((1,) * rank)  # a scalar for shape [1], a 1-element list for a scalar
    shown = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
    if arr.ndim != rank or any(d is not None and d != n for d, n in zip(dims, arr.shape,
                                                                       strict=True)):
        hint = " (give a .npy file for a tensor of rank >= 2)" if rank >= 2 else ""
        raise NncError(f"{where}: the value has shape {list(arr.shape)} but the input's shape is "
                       f"{shown}{hint}")
    return arr
