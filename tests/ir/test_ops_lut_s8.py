"""lut_s8: loop nest vs numpy reference, the type rule's errors, and compiled C vs reference."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.ir.graph import Attrs
from nnc.ir.ops import OpError, get_op
from nnc.ir.types import TensorType
from nnc.testing import check_op


def _table(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, 256).astype(np.int8)


@pytest.mark.parametrize("shape", [(1,), (2, 3), (1, 4, 5, 3)])
def test_lut_loop_nest_matches_reference(shape):
    x = np.random.default_rng(1).integers(-128, 128, shape).astype(np.int8)
    got = check_op("lut_s8", [x, _table()], {}, rtol=0, atol=0, constant_inputs=(1,))[0]
    np.testing.assert_array_equal(got, _table()[x.astype(int) + 128])


def test_lut_covers_every_code():
    x = np.arange(-128, 128, dtype=np.int8)
    table = _table(3)
    got = check_op("lut_s8", [x, table], {}, rtol=0, atol=0, constant_inputs=(1,))[0]
    np.testing.assert_array_equal(got, table)  # entry k is int8 value k - 128


@pytest.mark.parametrize("types, message", [
    ([TensorType((4,), "float32"), TensorType((256,), "int8")], "input must be int8"),
    ([TensorType((4,), "int8"), TensorType((255,), "int8")], r"table must be i8\[256\]"),
    ([TensorType((4,), "int8"), TensorType((256,), "int32")], r"table must be i8\[256\]"),
])
def test_lut_type_errors(types, message):
    with pytest.raises(OpError, match=message):
        get_op("lut_s8").infer(types, Attrs.of({}))
