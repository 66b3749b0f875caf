"""NN ops: compute definitions vs references (check_op), type rules, macs. The references are
checked against onnxruntime in tests/compiler/test_convert_nn.py."""

import numpy as np
import pytest

from nnc.ir.graph import Attrs
from nnc.ir.ops import OpError, get_op
from nnc.ir.types import TensorType
from nnc.testing import check_op

RNG = np.random.default_rng(3)
TOL = dict(rtol=1e-4, atol=1e-5)


def _r(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _ints(shape, dtype, lo=-20, hi=20):
    return RNG.integers(lo, hi, shape).astype(dtype)


def _infer(kind, types, **attrs):
    return get_op(kind).infer(types, Attrs.of(attrs))


def _t(*shape, dtype="float32"):
    return TensorType(tuple(shape), dtype)


# ---------------------------------------------------------------- conv / conv_transpose


@pytest.mark.parametrize("xshape,wshape,attrs", [
    ((1, 2, 4, 5), (3, 2, 3, 3), {}),
    ((2, 4, 5, 6), (6, 2, 3, 2),
     dict(group=2, strides=(2, 1), pads=(1, 0, 2, 1), dilations=(1, 2))),
    ((1, 3, 5, 5), (3, 1, 3, 3), dict(group=3, pads=(1, 1, 1, 1))),  # depthwise
    ((1, 2, 7), (2, 2, 3), dict(strides=(2,), pads=(2, 1))),
    ((1, 2, 3, 3, 4), (2, 2, 2, 2, 2), dict(pads=(1, 0, 1, 0, 1, 1))),
])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_compute(xshape, wshape, attrs, bias):
    inputs = [_r(*xshape), _r(*wshape)] + ([_r(wshape[0])] if bias else [])
    check_op("conv", inputs, attrs, constant_inputs=(1,), **TOL)


def test_conv_compute_dtypes():
    x, w = _r(1, 2, 4, 4), _r(3, 2, 3, 3)
    check_op("conv", [x.astype(np.float16), w.astype(np.float16)], dict(pads=(1, 1, 1, 1)),
             rtol=2e-3, atol=2e-3)
    check_op("conv", [x.astype(np.float64), w.astype(np.float64)], {})
    check_op("conv", [_ints((1, 2, 4, 4), np.int32), _ints((2, 2, 2, 2), np.int32)], {})


@pytest.mark.parametrize("xshape,wshape,attrs", [
    ((1, 6, 4, 5), (3, 6, 3, 3), dict(pads=(1, 1, 1, 1))),  # channel blocks of 4 + a rest of 2
    ((1, 9, 5, 6), (6, 3, 3, 2), dict(group=3, strides=(2, 1), pads=(2, 0, 1, 1))),
    ((1, 4, 6, 5), (2, 4, 2, 3), dict(pads=(1, 2, 1, 0), dilations=(2, 1))),
    ((1, 5, 9), (2, 5, 4), dict(strides=(2,), pads=(3, 1), dilations=(2,))),
    ((1, 4, 3, 4, 3), (2, 4, 3, 2, 2), dict(pads=(2, 0, 1, 1, 1, 0), strides=(2, 1, 2))),
])
def test_conv_compute_windows_and_groups(xshape, wshape, attrs):
    """Padding windows on either side, groups, strides, dilations, 1-D and 3-D: the declarative
    definition and its default schedules on the host and Cortex-M (check_op runs them)."""
    check_op("conv", [_r(*xshape), _r(*wshape), _r(wshape[0])], attrs, **TOL)
    # constant weights: stored channels-last (per group), the host's lanes along the channels
    check_op("conv", [_r(*xshape), _r(*wshape), _r(wshape[0])], attrs, constant_inputs=(1, 2),
             **TOL)


@pytest.mark.parametrize("xshape,wshape,attrs", [
    ((1, 2, 3, 3), (2, 3, 3, 3), {}),
    ((1, 4, 3, 3), (4, 3, 3, 2),
     dict(group=2, strides=(2, 3), pads=(1, 0, 0, 1), dilations=(1, 2), output_padding=(1, 1))),
    ((2, 2, 4), (2, 1, 3), dict(strides=(3,), pads=(1, 2))),
    ((1, 3, 2, 2), (3, 1, 2, 2), dict(group=3, strides=(2, 2))),
])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_compute(xshape, wshape, attrs, bias):
    inputs = [_r(*xshape), _r(*wshape)]
    if bias:
        inputs.append(_r(wshape[1] * attrs.get("group", 1)))
    check_op("conv_transpose", inputs, attrs, **TOL)


def test_conv_infer_and_errors():
    assert _infer("conv", [_t(1, 4, 8, 8), _t(6, 2, 3, 3)], group=2, strides=(2, 2),
                  pads=(1, 1, 1, 1))[0].shape == (1, 6, 4, 4)
    with pytest.raises(OpError, match="group=3"):
        _infer("conv", [_t(1, 4, 8, 8), _t(6, 2, 3, 3)], group=3)
    with pytest.raises(OpError, match="bias"):
        _infer("conv", [_t(1, 2, 8, 8), _t(6, 2, 3, 3), _t(5)])
    with pytest.raises(OpError, match="larger than padded input"):
        _infer("conv", [_t(1, 2, 2, 2), _t(6, 2, 3, 3)])
    with pytest.raises(OpError, match="pads"):
        _infer("conv", [_t(1, 2, 8, 8), _t(6, 2, 3, 3)], pads=(1, 1))
    with pytest.raises(OpError, match="dtype"):
        _infer("conv", [_t(1, 2, 8, 8, dtype="bool"), _t(6, 2, 3, 3, dtype="bool")])
    t = _infer("conv_transpose", [_t(1, 4, 3, 3), _t(4, 3, 3, 3)], group=2, strides=(2, 2),
               output_padding=(1, 0))
    assert t[0].shape == (1, 6, 8, 7)


def test_macs():
    macs = get_op("conv").macs
    assert macs([_t(1, 4, 8, 8), _t(6, 2, 3, 3)], [_t(1, 6, 8, 8)], Attrs.of(group=2)) == \
        6 * 64 * 2 * 9
    assert get_op("conv_transpose").macs([_t(1, 4, 3, 3), _t(4, 3, 2, 2)], [_t(1, 3, 6, 6)],
                                         Attrs.of()) == 4 * 9 * 3 * 4
    assert get_op("gemm").macs([_t(5, 3), _t(4, 5)], [_t(3, 4)],
                               Attrs.of(trans_a=1, trans_b=1)) == 3 * 5 * 4
    assert get_op("matmul").macs([_t(2, 3, 4), _t(4, 5)], [_t(2, 3, 5)], Attrs.of()) == 120
    assert get_op("max_pool").macs([_t(1, 2, 4, 4)], [_t(1, 2, 2, 2)],
                                   Attrs.of(kernel_shape=(2, 2))) == 8 * 4
    assert get_op("global_average_pool").macs([_t(1, 2, 4, 4)], [_t(1, 2, 1, 1)], Attrs.of()) == 32


# ---------------------------------------------------------------- gemm / matmul


@pytest.mark.parametrize("attrs,cshape", [
    ({}, (3, 5)), (dict(trans_a=1, alpha=0.5), (5,)), (dict(trans_b=1, beta=2.0), (3, 1)),
    (dict(trans_a=1, trans_b=1, beta=0.0), (1,)), ({}, None),
])
def test_gemm_compute(attrs, cshape):
    a = _r(4, 3) if attrs.get("trans_a") else _r(3, 4)
    b = _r(5, 4) if attrs.get("trans_b") else _r(4, 5)
    check_op("gemm", [a, b] + ([_r(*cshape)] if cshape else []), attrs, **TOL)


@pytest.mark.parametrize("k", [1, 5, 8, 13, 19])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_reduction_lengths(k, trans_b):
    """Reduction lengths through the declarative gemm and its default schedules."""
    b = _r(3, k) if trans_b else _r(k, 3)
    check_op("gemm", [_r(2, k), b, _r(3)], dict(trans_b=trans_b), **TOL)
    # a constant B: stored [K, N] (`_gemm_pack`), columns in the host's lanes
    check_op("gemm", [_r(1, k), _r(40, k) if trans_b else _r(k, 40), _r(40)],
             dict(trans_b=trans_b), constant_inputs=(1, 2), **TOL)
    check_op("gemm", [_ints((2, k), np.int32), _ints(b.shape, np.int32)], dict(trans_b=trans_b))


def test_gemm_integer_and_errors():
    check_op("gemm", [_ints((2, 3), np.int64), _ints((3, 2), np.int64), _ints((2,), np.int64)],
             dict(alpha=2.0, beta=3.0))
    with pytest.raises(OpError, match="non-integral alpha"):
        _infer("gemm", [_t(2, 3, dtype="int32"), _t(3, 2, dtype="int32")], alpha=0.5)
    with pytest.raises(OpError, match="inner dimensions"):
        _infer("gemm", [_t(2, 3), _t(2, 3)])
    with pytest.raises(OpError, match="not broadcast"):
        _infer("gemm", [_t(2, 3), _t(3, 4), _t(3)])


@pytest.mark.parametrize("ashape,bshape", [
    ((3, 4), (4, 2)), ((2, 1, 3, 4), (3, 4, 2)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)),
    ((4,), (4,)), ((2, 13), (13, 3)), ((2, 3, 19), (19,)), ((11,), (11,)),
])
def test_matmul_compute(ashape, bshape):
    check_op("matmul", [_r(*ashape), _r(*bshape)], {}, **TOL)


def test_matmul_dtypes_and_errors():
    check_op("matmul", [_ints((2, 3), np.int32), _ints((3, 2), np.int32)], {})
    check_op("matmul", [_ints((2, 3), np.uint64, 0), _ints((3, 2), np.uint64, 0)], {})
    check_op("matmul", [_r(2, 3).astype(np.float16), _r(3, 2).astype(np.float16)], {},
             rtol=2e-3, atol=2e-3)
    with pytest.raises(OpError, match="inner dimensions"):
        _infer("matmul", [_t(2, 3), _t(4, 2)])
    with pytest.raises(OpError, match="do not broadcast"):
        _infer("matmul", [_t(2, 2, 3), _t(3, 3, 2)])


# ---------------------------------------------------------------- pools


POOLS = [
    dict(kernel_shape=(2, 2)),
    dict(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
    dict(kernel_shape=(3, 2), strides=(2, 3), pads=(1, 0, 1, 1), ceil_mode=1),
    dict(kernel_shape=(2, 2), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(2, 2), ceil_mode=1),
]


@pytest.mark.parametrize("attrs", POOLS)
def test_max_pool_compute(attrs):
    check_op("max_pool", [_r(1, 2, 6, 5)], attrs)


@pytest.mark.parametrize("attrs", POOLS)
@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_with_indices_compute(attrs, storage_order):
    x = RNG.integers(0, 4, (1, 2, 6, 5)).astype(np.float32)  # ties: the first max wins
    y, idx = check_op("max_pool", [x], {**attrs, "with_indices": True,
                                        "storage_order": storage_order})
    sp = np.arange(30).reshape(6, 5) if storage_order == 0 else np.arange(30).reshape(5, 6).T
    flat = (np.arange(2).reshape(2, 1, 1) * 30 + sp)[None]
    assert idx.dtype == np.int64
    for i, v in zip(idx.reshape(-1), y.reshape(-1), strict=True):  # each index points at its max
        assert x.reshape(-1)[np.argwhere(flat.reshape(-1) == i)[0, 0]] == v


def test_max_pool_with_indices_dtypes_and_errors():
    check_op("max_pool", [_ints((1, 2, 5), np.int16)],
             dict(kernel_shape=(2,), pads=(1, 1), with_indices=True))
    check_op("max_pool", [_r(1, 1, 3, 4, 4).astype(np.float16)],
             dict(kernel_shape=(2, 2, 3), with_indices=True, storage_order=1))
    t = _infer("max_pool", [_t(1, 1, 4, 4)], kernel_shape=(2, 2), with_indices=True)
    assert [x.dtype for x in t] == ["float32", "int64"] and t[1].shape == (1, 1, 3, 3)
    with pytest.raises(OpError, match="storage_order"):
        _infer("max_pool", [_t(1, 1, 4, 4)], kernel_shape=(2, 2), with_indices=True,
               storage_order=2)


@pytest.mark.parametrize("attrs", POOLS)
@pytest.mark.parametrize("include", [0, 1])
def test_average_pool_compute(attrs, include):
    check_op("average_pool", [_r(1, 2, 6, 5)], {**attrs, "count_include_pad": include}, **TOL)


def test_pool_dtypes_1d_and_errors():
    check_op("max_pool", [_ints((1, 2, 5, 5), np.int8, -128, 127)],
             dict(kernel_shape=(3, 3), pads=(1, 1, 1, 1)))
    check_op("max_pool", [_ints((1, 1, 5), np.uint8, 0, 255)], dict(kernel_shape=(2,)))
    check_op("average_pool", [_r(1, 2, 7).astype(np.float16)],
             dict(kernel_shape=(3,), pads=(1, 1)), rtol=2e-3, atol=2e-3)
    with pytest.raises(OpError, match="smaller than kernel"):
        _infer("max_pool", [_t(1, 1, 5, 5)], kernel_shape=(2, 2), pads=(2, 0, 0, 0))
    with pytest.raises(OpError, match="kernel_shape"):
        _infer("max_pool", [_t(1, 1, 5, 5)])
    with pytest.raises(OpError, match="dtype"):
        _infer("average_pool", [_t(1, 1, 5, 5, dtype="int8")], kernel_shape=(2, 2))
    # ceil mode drops a window that would start in the end padding (onnxruntime semantics)
    t = _infer("max_pool", [_t(1, 1, 5, 5)], kernel_shape=(2, 2), strides=(3, 3),
               pads=(1, 1, 1, 1), dilations=(2, 2), ceil_mode=1)
    assert t[0].shape == (1, 1, 2, 2)


@pytest.mark.parametrize("kind", ["global_average_pool", "global_max_pool"])
@pytest.mark.parametrize("shape", [(2, 3, 2, 3), (1, 2, 5), (1, 1, 2, 2, 2)])
def test_global_pools_compute(kind, shape):
    check_op(kind, [_r(*shape)], {}, **TOL)


def test_global_max_pool_int():
    check_op("global_max_pool", [_ints((1, 2, 3, 3), np.int8, -128, 127)], {})


# ---------------------------------------------------------------- normalizations, lrn, softmax


@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (3, 4), (1, 2, 3)])
def test_batch_normalization_compute(shape):
    c = shape[1]
    inputs = [_r(*shape), _r(c), _r(c), _r(c), np.abs(_r(c)) + 0.1]
    check_op("batch_normalization", inputs, dict(epsilon=1e-3), constant_inputs=(1, 2, 3, 4),
             **TOL)


def test_batch_normalization_errors():
    with pytest.raises(OpError, match="scale"):
        _infer("batch_normalization", [_t(1, 3, 2), _t(2), _t(3), _t(3), _t(3)])


@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (1, 2, 5)])
def test_instance_normalization_compute(shape):
    c = shape[1]
    check_op("instance_normalization", [_r(*shape), _r(c), _r(c)], dict(epsilon=1e-4), **TOL)


@pytest.mark.parametrize("axis,sshape,bias", [
    (2, (4,), True), (1, (3, 4), False), (0, (2, 3, 4), True), (1, (1, 4), True),
])
def test_layer_normalization_compute(axis, sshape, bias):
    inputs = [_r(2, 3, 4), _r(*sshape)] + ([_r(*sshape)] if bias else [])
    check_op("layer_normalization", inputs, dict(axis=axis, epsilon=1e-3), **TOL)


def test_layer_normalization_float16_and_errors():
    check_op("layer_normalization", [_r(2, 6).astype(np.float16), _r(6).astype(np.float16)],
             dict(axis=1), rtol=5e-3, atol=5e-3)
    with pytest.raises(OpError, match="not broadcast"):
        _infer("layer_normalization", [_t(2, 3, 4), _t(3)], axis=1)
    with pytest.raises(OpError, match="axis"):
        _infer("layer_normalization", [_t(2, 3), _t(3)], axis=2)


def _lrn_by_spec(x, size, alpha, beta, bias):
    """The ONNX formula, written out per channel."""
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    c = x.shape[1]
    sq = np.stack([
        (x[:, max(0, i - lo): min(c - 1, i + hi) + 1] ** 2).sum(axis=1) for i in range(c)
    ], axis=1)
    return x / (bias + alpha / size * sq) ** beta


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7])
def test_lrn_compute(size):
    # onnxruntime rejects even sizes (and onnx's reference LRN is wrong), so check the formula
    x = _r(1, 5, 2, 3)
    attrs = dict(size=size, alpha=0.01, beta=0.75, bias=1.5)
    ref = check_op("lrn", [x], attrs, **TOL)[0]
    np.testing.assert_allclose(ref, _lrn_by_spec(x, size, 0.01, 0.75, 1.5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axes", [
    ((2, 5), (1,)), ((2, 3, 4), (1,)), ((2, 3, 4), (0,)), ((2, 3, 4), (1, 2)), ((6,), (0,)),
])
def test_softmax_compute(kind, shape, axes):
    check_op(kind, [_r(*shape) * 10], dict(axes=axes), rtol=1e-4, atol=1e-6)


def test_softmax_dtypes_and_errors():
    check_op("softmax", [_r(2, 4).astype(np.float16)], dict(axes=(1,)), rtol=2e-3, atol=1e-3)
    check_op("log_softmax", [_r(2, 4, dtype=np.float64)], {})
    big = np.array([[1000.0, 1001.0, 999.0]], np.float32)  # stable: no overflow
    assert np.isfinite(check_op("softmax", [big], dict(axes=(1,)))[0]).all()
    with pytest.raises(OpError, match="axes"):
        _infer("softmax", [_t(2, 3)], axes=(2,))
    with pytest.raises(OpError, match="dtype"):
        _infer("softmax", [_t(2, 3, dtype="int32")])
