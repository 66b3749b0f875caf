"""Reductions and arg_max/arg_min: type rules, references and loop nests."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.ir.graph import Attrs
from nnc.ir.ops import OpError, get_op
from nnc.ir.types import TensorType
from nnc.testing import check_op

RNG = np.random.default_rng(2)
KINDS = ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 2), (0, 1, 2)])
@pytest.mark.parametrize("keepdims", [True, False])
def test_reduce_float(kind, axes, keepdims):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    check_op(kind, [x], {"axes": axes, "keepdims": keepdims})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8", "float64"])
def test_reduce_dtypes(kind, dtype):
    x = RNG.integers(0 if dtype == "uint8" else -3, 4, (3, 4)).astype(dtype)
    check_op(kind, [x], {"axes": (1,), "keepdims": False})


@pytest.mark.parametrize("kind", KINDS)
def test_reduce_float16_accumulates_in_float32(kind):
    x = RNG.standard_normal((2, 8)).astype(np.float16)
    out = check_op(kind, [x], {"axes": (1,), "keepdims": True}, rtol=1e-3, atol=1e-3)[0]
    assert out.dtype == np.float16


@pytest.mark.parametrize("kind", ["reduce_sum_square", "reduce_l1", "reduce_l2",
                                  "reduce_log_sum", "reduce_log_sum_exp"])
@pytest.mark.parametrize("axes", [(1,), (0, 2)])
@pytest.mark.parametrize("keepdims", [True, False])
def test_reduce_sums_of_a_term(kind, axes, keepdims):
    """The sums of a term (x*x, |x|, exp(x - max)) with a finish (sqrt, log, log + max); the
    log-sum-exp stays finite where exp(x) alone overflows float32."""
    x = RNG.uniform(0.1, 2.0, (2, 3, 4)).astype(np.float32)
    if kind == "reduce_l1":
        x = x - 1.0
    inputs = [x]
    if kind == "reduce_log_sum_exp":
        x = x * 100.0  # exp(200) is inf in float32
        inputs = [x, np.max(x, axis=axes, keepdims=True)]
    out = check_op(kind, inputs, {"axes": axes, "keepdims": keepdims})[0]
    assert np.isfinite(out).all()


def test_reduce_sums_of_a_term_on_integers():
    x = RNG.integers(-5, 5, (3, 4)).astype(np.int32)
    assert check_op("reduce_l1", [x], {"axes": (1,), "keepdims": False})[0].tolist() == \
        np.abs(x).sum(axis=1).tolist()
    check_op("reduce_sum_square", [x], {"axes": (0,), "keepdims": True})
    with pytest.raises(OpError, match="floats only"):
        get_op("reduce_l2").infer([TensorType((3, 4), "int32")], Attrs.of(axes=(1,),
                                                                          keepdims=True))


def test_reduce_integer_mean_truncates():
    x = np.array([[-3, -4], [3, 4]], np.int32)
    assert check_op("reduce_mean", [x], {"axes": (1,), "keepdims": False})[0].tolist() == [-3, 3]


def test_reduce_bool_max_min():
    x = np.array([[True, False], [False, False]])
    assert check_op("reduce_max", [x], {"axes": (1,), "keepdims": False})[0].tolist() == [
        True, False]
    check_op("reduce_min", [x], {"axes": (0,), "keepdims": False})


def test_reduce_empty_axis_gives_identity():
    x = np.zeros((2, 0), np.float32)
    assert check_op("reduce_sum", [x], {"axes": (1,), "keepdims": False})[0].tolist() == [0, 0]
    assert check_op("reduce_prod", [x], {"axes": (1,), "keepdims": False})[0].tolist() == [1, 1]


def test_reduce_infer_errors():
    t = [TensorType((2, 3), "float32")]
    assert get_op("reduce_sum").infer(t, Attrs.of(axes=(1,), keepdims=True))[0].shape == (2, 1)
    for axes in [(), (2,), (1, 0), (1, 1), (-1,)]:
        with pytest.raises(OpError, match="axes"):
            get_op("reduce_sum").infer(t, Attrs.of(axes=axes, keepdims=True))


@pytest.mark.parametrize("kind", ["arg_max", "arg_min"])
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("keepdims", [True, False])
@pytest.mark.parametrize("last", [False, True])
def test_arg(kind, axis, keepdims, last):
    x = RNG.integers(0, 3, (2, 3, 4)).astype(np.float32)  # many ties
    out = check_op(kind, [x], {"axis": axis, "keepdims": keepdims, "select_last_index": last})
    assert out[0].dtype == np.int64


@pytest.mark.parametrize("dtype", ["int8", "uint16", "float16", "int64"])
def test_arg_dtypes(dtype):
    x = RNG.integers(0, 9, (3, 5)).astype(dtype)
    check_op("arg_max", [x], {"axis": 1, "keepdims": False, "select_last_index": False})
    check_op("arg_min", [x], {"axis": 0, "keepdims": True, "select_last_index": True})


def test_arg_errors():
    with pytest.raises(OpError, match="out of range"):
        get_op("arg_max").infer([TensorType((2, 3), "float32")], Attrs.of(axis=2, keepdims=True))
    with pytest.raises(OpError, match="empty axis"):
        get_op("arg_max").infer([TensorType((2, 0), "float32")], Attrs.of(axis=1, keepdims=True))
