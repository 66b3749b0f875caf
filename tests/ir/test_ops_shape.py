"""Shape/data-movement ops: type rules (incl. error messages), references and loop nests."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.ir.graph import Attrs
from nnc.ir.ops import OpError, get_op
from nnc.ir.ops.shape import normalize_slice
from nnc.ir.types import TensorType
from nnc.testing import check_op

RNG = np.random.default_rng(1)
DTYPES = ["float32", "float64", "float16", "int8", "uint8", "int32", "int64", "uint64", "bool"]


def _data(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    if dtype == "bool":
        return RNG.integers(0, 2, shape).astype(bool)
    return (RNG.standard_normal(shape) * 10).astype(dtype)


def _infer(kind: str, shapes: list[tuple[int, ...]], **attrs: object) -> list[TensorType]:
    types = [TensorType(s, "float32") for s in shapes]
    return list(get_op(kind).infer(types, Attrs.of(attrs)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_data_movement_all_dtypes(dtype):
    x = _data((2, 3, 4), dtype)
    check_op("transpose", [x], {"perm": (2, 0, 1)})
    check_op("concat", [x, x[:, :2]], {"axis": 1})
    check_op("split", [x], {"axis": 2, "splits": (1, 3)})
    check_op("slice", [x], {"starts": (1, 2, 3), "ends": (-1, 0, -1), "steps": (-1, -1, -2)})
    check_op("gather", [x, np.array([[0, -1], [2, 1]], np.int64)], {"axis": 1})
    check_op("pad", [x], {"pads": (0, 1, 1, 1, 0, 2), "mode": "constant", "value": 1})
    check_op("expand", [x[:, :1]], {"shape": (2, 2, 3, 4)})
    check_op("tile", [x], {"repeats": (1, 2, 2)})
    check_op("reshape", [x], {"shape": (6, 4)})


def test_reshape_is_alias():
    assert get_op("reshape").alias
    with pytest.raises(OpError, match="cannot view"):
        _infer("reshape", [(2, 3)], shape=(4, 2))


def test_transpose():
    check_op("transpose", [_data((2, 3, 4, 5))], {"perm": (0, 2, 3, 1)})
    with pytest.raises(OpError, match="not a permutation"):
        _infer("transpose", [(2, 3)], perm=(0, 0))


def test_concat_three_inputs_and_errors():
    check_op("concat", [_data((2, 1)), _data((2, 3)), _data((2, 2))], {"axis": 1},
             constant_inputs=(1,))
    assert _infer("concat", [(2, 1), (2, 4)], axis=1)[0].shape == (2, 5)
    with pytest.raises(OpError, match="differ off axis"):
        _infer("concat", [(2, 1), (3, 1)], axis=1)
    with pytest.raises(OpError, match="out of range"):
        _infer("concat", [(2, 1), (2, 1)], axis=2)


def test_split_uneven_and_errors():
    check_op("split", [_data((7, 2))], {"axis": 0, "splits": (3, 3, 1)})
    with pytest.raises(OpError, match="do not add up"):
        _infer("split", [(7, 2)], axis=0, splits=(3, 3))


@pytest.mark.parametrize("start,end,step", [
    (0, 2**62, 1), (-1, -(2**62), -1), (10, -10, -2), (1, 1, 1), (-3, 5, 2), (3, 0, 1),
])
def test_slice_normalization(start, end, step):
    x = _data((5, 3))
    s, e, st = normalize_slice(start, end, step, 5)
    ref = x[slice(start, end, step)]
    out = check_op("slice", [x], {"starts": (s, 0), "ends": (e, 3), "steps": (st, 1)})[0]
    np.testing.assert_array_equal(out, ref)


def test_slice_errors():
    with pytest.raises(OpError, match="step must not be 0"):
        normalize_slice(0, 1, 0, 3)
    with pytest.raises(OpError, match="not canonical"):
        _infer("slice", [(4,)], starts=(-2,), ends=(4,), steps=(1,))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gather_runtime_indices_axes(axis):
    x = _data((3, 4, 2))
    n = x.shape[axis]
    ind = np.array([[n - 1, -n], [0, -1]], np.int32)
    check_op("gather", [x, ind], {"axis": axis})
    check_op("gather", [x, np.array(-1, np.int64)], {"axis": axis})


def test_gather_index_dtype_checked():
    with pytest.raises(OpError, match="int32 or int64"):
        get_op("gather").infer([TensorType((3,), "float32"), TensorType((2,), "float32")],
                               Attrs.of(axis=0))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [(1, 2, 0, 3), (0, -1, 2, 1), (2, 0, -1, 3), (3, 5, 4, 6)])
def test_pad_modes(mode, pads):
    check_op("pad", [_data((3, 4))], {"pads": pads, "mode": mode, "value": -2.5})


def test_pad_errors():
    with pytest.raises(OpError, match="2\\*rank"):
        _infer("pad", [(3, 4)], pads=(1, 1), mode="constant")
    with pytest.raises(OpError, match="unknown mode"):
        _infer("pad", [(3, 4)], pads=(1, 1, 1, 1), mode="mirror")
    with pytest.raises(OpError, match="crop more"):
        _infer("pad", [(3, 4)], pads=(-2, 0, -2, 0), mode="constant")


def test_expand_and_tile():
    check_op("expand", [_data((3, 1))], {"shape": (2, 1, 4)})
    check_op("expand", [_data((2, 3))], {"shape": (3,)})
    check_op("tile", [_data((2, 1, 3))], {"repeats": (2, 3, 1)})
    with pytest.raises(OpError, match="do not broadcast"):
        _infer("expand", [(3, 2)], shape=(3, 3))
    with pytest.raises(OpError, match="repeats"):
        _infer("tile", [(3, 2)], repeats=(2,))


COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
          "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"]


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode,nearest", [
    ("nearest", "round_prefer_floor"), ("nearest", "round_prefer_ceil"), ("nearest", "floor"),
    ("nearest", "ceil"), ("nearest", "simple"), ("linear", "round_prefer_floor"),
])
def test_resize(coord, mode, nearest):
    x = RNG.integers(-5, 5, (1, 2, 3, 4)).astype(np.float32)
    attrs = {"mode": mode, "coordinate_transformation_mode": coord, "nearest_mode": nearest,
             "scales": (1.0, 1.0, 2.0, 0.5), "sizes": (1, 2, 6, 2),
             "roi": (0, 0, 0.1, 0.2, 1, 1, 0.9, 1.2), "extrapolation_value": -3.0}
    check_op("resize", [x], attrs)


def test_resize_trilinear_and_dtypes():
    attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel",
             "nearest_mode": "round_prefer_floor", "scales": (1.0, 2.0, 1.5, 2.0),
             "sizes": (1, 4, 3, 4), "roi": ()}
    check_op("resize", [_data((1, 2, 2, 2))], attrs)
    check_op("resize", [_data((1, 2, 2, 2), "float64")], attrs)
    check_op("resize", [_data((1, 2, 2, 2), "float16")], attrs, rtol=1e-3, atol=1e-3)
    near = dict(attrs, mode="nearest")
    check_op("resize", [_data((1, 2, 2, 2), "int8")], near)
    with pytest.raises(OpError, match="linear mode needs a float"):
        get_op("resize").infer([TensorType((1, 2, 2, 2), "int8")], Attrs.of(attrs))
    with pytest.raises(OpError, match="mode 'area'"):
        _infer("resize", [(1, 2, 2, 2)], **dict(attrs, mode="area"))
    with pytest.raises(OpError, match="cubic mode needs a float"):
        get_op("resize").infer([TensorType((1, 2, 2, 2), "int8")],
                               Attrs.of(dict(attrs, mode="cubic")))


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode,extra", [
    ("cubic", {}), ("cubic", {"cubic_coeff_a": -0.5, "exclude_outside": True}),
    ("cubic", {"antialias": True}), ("linear", {"antialias": True}),
    ("linear", {"antialias": True, "exclude_outside": True}),
])
def test_resize_kernel_modes(coord, mode, extra):
    """Cubic and antialiased resizes; dim 2 upscales, dim 3 downscales."""
    x = _data((1, 2, 3, 7))
    attrs = {"mode": mode, "coordinate_transformation_mode": coord, "nearest_mode": "floor",
             "scales": (1.0, 1.0, 2.0, 0.4), "sizes": (1, 2, 6, 2),
             "roi": (0, 0, 0.1, 0.2, 1, 1, 0.9, 1.2), "extrapolation_value": -3.0, **extra}
    check_op("resize", [x], attrs, rtol=1e-4, atol=1e-5)


def test_resize_cubic_matches_onnx_reference_and_dtypes():
    from onnx.reference.ops.op_resize import _cubic_coeffs_antialias, _interpolate_nd

    x = _data((1, 1, 9, 4))
    attrs = {"mode": "cubic", "coordinate_transformation_mode": "half_pixel",
             "scales": (1.0, 1.0, 1 / 3, 1.75), "sizes": (1, 1, 3, 7), "roi": (),
             "antialias": True, "cubic_coeff_a": -0.6}
    (got,) = check_op("resize", [x], attrs, rtol=1e-4, atol=1e-5)
    expected = _interpolate_nd(x, lambda r, s: _cubic_coeffs_antialias(r, s, A=-0.6),
                               output_size=[1, 1, 3, 7])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    check_op("resize", [x.astype("float64")], attrs)
    check_op("resize", [x.astype("float16")], attrs, rtol=2e-3, atol=2e-3)
