"""ONNX elementwise converters: one-node models imported and run with the graph interpreter,
compared with onnxruntime, across opsets and attribute/input forms."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.compiler.errors import NncError
from nnc.compiler.onnx.importer import import_model
from nnc.ir.graph import Graph
from nnc.ir.interp import run_graph
from nnc.testing import assert_close


def sample(dtype: str, shape: tuple[int, ...] = (2, 3, 4), domain: str = "any", seed: int = 0
           ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return np.asarray(rng.random(shape) < 0.5)
    if np.dtype(dtype).kind in "iu":
        lo = 1 if domain == "positive" else (0 if dtype.startswith("uint") else -9)
        return np.asarray(rng.integers(lo, 9, shape).astype(dtype))
    x = rng.standard_normal(shape) * 2
    if domain == "positive":
        x = np.abs(x) + 0.1
    elif domain == "unit":
        x = rng.uniform(-0.95, 0.95, shape)
    elif domain == "above1":
        x = np.abs(x) + 1.05
    return np.asarray(x.astype(dtype))


def make_model(nodes: list[onnx.NodeProto], inputs: dict[str, np.ndarray], outputs: list[str],
               opset: int, initializers: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in inputs.items()]
    outs = []
    for name in outputs:
        vi = helper.ValueInfoProto()
        vi.name = name
        outs.append(vi)
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "g", vis, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def check_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 1e-5,
                atol: float = 1e-6) -> Graph:
    """Import, run with the graph interpreter and compare every output with onnxruntime."""
    graph = import_model(model)
    got = run_graph(graph, feeds)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    expected = dict(zip(names, sess.run(None, feeds), strict=True))
    for v in graph.outputs:
        assert_close(got[v.name], expected[v.name], rtol, atol, v.name)
    return graph


def check_node(op_type: str, inputs: list[np.ndarray], attrs: dict[str, Any] | None = None,
               opset: int = 17, rtol: float = 1e-5, atol: float = 1e-6) -> Graph:
    names = [f"x{i}" for i in range(len(inputs))]
    node = helper.make_node(op_type, names, ["y"], **(attrs or {}))
    model = make_model([node], dict(zip(names, inputs, strict=True)), ["y"], opset)
    return check_model(model, dict(zip(names, inputs, strict=True)), rtol, atol)


def op_kinds(graph: Graph) -> list[str]:
    return [op.kind for op in graph.ops]


# (ONNX op, opsets to try, attrs, input domain); each runs at the first opset >= 7 that has it
UNARY: list[tuple[str, list[int], dict[str, Any], str]] = [
    ("Sqrt", [7, 13], {}, "positive"), ("Exp", [7, 13], {}, "any"),
    ("Log", [7, 13], {}, "positive"),
    ("Neg", [7, 13], {}, "any"), ("Abs", [7, 13], {}, "any"),
    ("Reciprocal", [7, 13], {}, "positive"), ("Floor", [7, 13], {}, "any"),
    ("Ceil", [7, 13], {}, "any"), ("Relu", [7, 14], {}, "any"), ("Sigmoid", [7, 13], {}, "any"),
    ("Tanh", [7, 13], {}, "any"), ("Softplus", [7, 22], {}, "any"),
    ("Softsign", [7, 22], {}, "any"), ("Erf", [9, 13], {}, "any"),
    ("HardSwish", [14, 22], {}, "any"), ("Mish", [18, 22], {}, "any"),
    ("Sign", [9, 13], {}, "any"), ("Sin", [7, 22], {}, "any"), ("Cos", [7, 22], {}, "any"),
    ("Tan", [7, 22], {}, "unit"), ("Asin", [7, 22], {}, "unit"), ("Acos", [7, 22], {}, "unit"),
    ("Atan", [7, 22], {}, "any"), ("Sinh", [9, 22], {}, "any"), ("Cosh", [9, 22], {}, "any"),
    ("Asinh", [9, 22], {}, "any"), ("Acosh", [9, 22], {}, "above1"),
    ("Atanh", [9, 22], {}, "unit"),
    ("LeakyRelu", [7, 16], {}, "any"), ("LeakyRelu", [16], {"alpha": 0.2}, "any"),
    ("Elu", [7, 22], {}, "any"), ("Elu", [22], {"alpha": 0.3}, "any"),
    ("Selu", [7, 22], {}, "any"), ("Selu", [7], {"alpha": 2.0, "gamma": 0.5}, "any"),
    ("HardSigmoid", [7, 22], {}, "any"), ("HardSigmoid", [7], {"alpha": 0.1, "beta": 0.6}, "any"),
    ("Celu", [12], {}, "any"), ("Celu", [12], {"alpha": 2.0}, "any"),
    ("ThresholdedRelu", [10, 22], {}, "any"), ("ThresholdedRelu", [10], {"alpha": 0.5}, "any"),
    ("Swish", [24], {"alpha": 0.5}, "any"),
    ("Gelu", [20], {}, "any"), ("Gelu", [20], {"approximate": "tanh"}, "any"),
]


@pytest.mark.parametrize("op_type,opset,attrs,domain", [
    (op, opset, attrs, domain) for op, opsets, attrs, domain in UNARY for opset in opsets
])
def test_unary(op_type: str, opset: int, attrs: dict[str, Any], domain: str) -> None:
    graph = check_node(op_type, [sample("float32", domain=domain)], attrs, opset)
    assert len(graph.ops) == 1


def test_attribute_defaults_are_explicit() -> None:
    x = sample("float32")
    op = check_node("LeakyRelu", [x], {}, 16).ops[0]
    assert op.kind == "leaky_relu" and op.attrs["alpha"] == pytest.approx(0.01)
    op = check_node("Selu", [x], {}, 13).ops[0]
    assert set(op.attrs) == {"alpha", "gamma"}
    assert check_node("Gelu", [x], {}, 20).ops[0].attrs["approximate"] == "none"


BINARY = [
    ("Add", "add", 7, "float32"), ("Add", "add", 14, "int8"), ("Sub", "sub", 13, "int64"),
    ("Mul", "mul", 7, "float32"), ("Mul", "mul", 14, "uint8"), ("Div", "div", 13, "float32"),
    ("Equal", "equal", 7, "int32"), ("Equal", "equal", 11, "float32"),
    ("Equal", "equal", 13, "bool"), ("Less", "less", 9, "int64"),
    ("Greater", "greater", 7, "float32"), ("LessOrEqual", "less_equal", 12, "float32"),
    ("GreaterOrEqual", "greater_equal", 16, "int32"), ("And", "and", 7, "bool"),
    ("Or", "or", 7, "bool"), ("Xor", "xor", 7, "bool"), ("Pow", "pow", 7, "float32"),
    ("PRelu", "prelu", 9, "float32"), ("PRelu", "prelu", 16, "int32"),
]


@pytest.mark.parametrize("op_type,kind,opset,dtype", BINARY)
def test_binary_broadcasting(op_type: str, kind: str, opset: int, dtype: str) -> None:
    a = sample(dtype, (2, 3, 4), seed=1)
    b = sample(dtype, (3, 1), domain="positive" if op_type in ("Div", "Pow") else "any", seed=2)
    if op_type == "Pow":
        a = np.abs(a)
    graph = check_node(op_type, [a, b], {}, opset)
    assert op_kinds(graph) == [kind]


def test_integer_div_truncates() -> None:
    a = np.array([7, -7, 7, -7, 5], np.int32)
    b = np.array([2, 2, -2, -2, 7], np.int32)
    check_node("Div", [a, b], {}, 13)


def test_pow_mixed_dtypes() -> None:
    a = sample("float32", domain="positive")
    check_node("Pow", [a, np.array([2, 3, 0, 1], np.int64)], {}, 15)
    check_node("Pow", [a, np.array(0.5, np.float64)], {}, 15)
    check_node("Pow", [np.array([2, 3, -2], np.int32), np.array([3, 2, 3], np.int32)], {}, 15)


@pytest.mark.parametrize("opset", [9, 16])
def test_where(opset: int) -> None:
    cond = sample("bool", (3, 1))
    check_node("Where", [cond, sample("float32", seed=1), sample("float32", (4,), seed=2)],
               {}, opset)


def test_not() -> None:
    check_node("Not", [sample("bool")], {}, 7)


# ---------------------------------------------------------------- clip


@pytest.mark.parametrize("attrs", [{}, {"min": -0.5}, {"max": 0.5}, {"min": -1.0, "max": 1.0}])
def test_clip_attribute_form(attrs: dict[str, float]) -> None:
    graph = check_node("Clip", [sample("float32")], attrs, 7)
    assert op_kinds(graph) == ["clip"]


def _clip_model(x: np.ndarray, lo: np.ndarray | None, hi: np.ndarray | None, opset: int,
                dynamic: bool) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    inputs, feeds, inits = ["x"], {"x": x}, {}
    for name, value in [("lo", lo), ("hi", hi)]:
        if value is None:
            inputs.append("")
            continue
        inputs.append(name)
        (feeds if dynamic else inits)[name] = value
    while inputs[-1] == "":
        inputs.pop()
    node = helper.make_node("Clip", inputs, ["y"])
    return make_model([node], feeds, ["y"], opset, inits), feeds


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("bounds", [(None, None), (-0.5, None), (None, 0.5), (-1.0, 1.0),
                                    (1.0, -1.0)])
@pytest.mark.parametrize("opset", [11, 13])
def test_clip_input_form(opset: int, bounds: tuple[float | None, float | None],
                         dynamic: bool) -> None:
    lo, hi = (None if b is None else np.array(b, np.float32) for b in bounds)
    model, feeds = _clip_model(sample("float32"), lo, hi, opset, dynamic)
    graph = check_model(model, feeds)
    if not dynamic and bounds != (None, None):
        assert op_kinds(graph) == ["clip"]
        assert set(graph.ops[0].attrs) == {k for k, b in zip(("min", "max"), bounds, strict=True)
                                           if b is not None}


def test_clip_mixed_constant_and_dynamic_bounds() -> None:
    x = sample("float32")
    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"])
    lo = np.array(0.8, np.float32)
    model = make_model([node], {"x": x, "hi": np.array(-0.2, np.float32)}, ["y"], 13, {"lo": lo})
    graph = check_model(model, {"x": x, "hi": np.array(-0.2, np.float32)})
    assert op_kinds(graph) == ["clip", "min"]


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8"])
def test_clip_integer(dtype: str) -> None:
    x = sample(dtype)
    lo, hi = np.array(1, dtype), np.array(5, dtype)
    model, feeds = _clip_model(x, lo, hi, 13, dynamic=False)
    graph = check_model(model, feeds)
    assert graph.ops[0].attrs["min"] == 1 and isinstance(graph.ops[0].attrs["min"], int)


# ---------------------------------------------------------------- variadic


@pytest.mark.parametrize("op_type", ["Sum", "Mean", "Min", "Max"])
@pytest.mark.parametrize("opset", [7, 13])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_variadic(op_type: str, opset: int, count: int) -> None:
    # before opset 8 these ops do not broadcast
    shapes = [(2, 3, 4), (3, 4), (2, 1, 4)] if opset >= 8 else [(2, 3, 4)] * 3
    inputs = {f"x{i}": sample("float32", shapes[i], seed=i) for i in range(count)}
    node = helper.make_node(op_type, list(inputs), ["y"])
    graph = check_model(make_model([node], inputs, ["y"], opset), inputs)
    expected_ops = count - 1 + (op_type == "Mean" and count > 1)
    assert len([op for op in graph.ops if op.kind != "reshape"]) == expected_ops


def test_variadic_integers() -> None:
    inputs = {f"x{i}": sample("int32", seed=i) for i in range(3)}
    for op_type in ("Min", "Max"):  # Sum and Mean are float-only in ONNX
        node = helper.make_node(op_type, list(inputs), ["y"])
        check_model(make_model([node], inputs, ["y"], 13), inputs)


# ---------------------------------------------------------------- cast

CAST_TYPES = {
    "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "float16": TensorProto.FLOAT16,
    "int8": TensorProto.INT8, "int32": TensorProto.INT32, "int64": TensorProto.INT64,
    "uint8": TensorProto.UINT8, "bool": TensorProto.BOOL,
}


@pytest.mark.parametrize("opset", [7, 13, 19, 21])
@pytest.mark.parametrize("dst", sorted(CAST_TYPES))
def test_cast(dst: str, opset: int) -> None:
    x = np.array([[0.0, 0.5, 1.7, 2.0], [3.9, 100.2, 0.0, 7.5]], np.float32)
    if not dst.startswith("uint") and dst != "bool":
        x[1] *= -1
    graph = check_node("Cast", [x], {"to": CAST_TYPES[dst]}, opset)
    assert op_kinds(graph) == (["cast"] if dst != "float32" else ["reshape"])


def test_cast_from_ints_and_bools() -> None:
    check_node("Cast", [np.array([0, 1, -3, 100], np.int64)], {"to": TensorProto.FLOAT}, 13)
    check_node("Cast", [np.array([0, 1, -3, 100], np.int32)], {"to": TensorProto.BOOL}, 13)
    check_node("Cast", [np.array([True, False])], {"to": TensorProto.FLOAT}, 13)


def test_cast_like() -> None:
    x = sample("float32")
    check_node("CastLike", [x, np.zeros((1,), np.int32)], {}, 15)
    graph = check_node("CastLike", [x, np.zeros((1,), np.float32)], {}, 15)
    assert op_kinds(graph) == ["reshape"]  # same dtype: no cast, only the output copy


def test_cast_unsupported_type_is_a_clear_error() -> None:
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.BFLOAT16)
    model = make_model([node], {"x": sample("float32")}, ["y"], 13)
    with pytest.raises(NncError, match="Cast to BFLOAT16 is not supported"):
        import_model(model)


# ---------------------------------------------------------------- errors, folding, chains


def test_gelu_bad_approximation_is_a_clear_error() -> None:
    node = helper.make_node("Gelu", ["x"], ["y"], approximate="fast")
    model = make_model([node], {"x": sample("float32")}, ["y"], 20)
    with pytest.raises(NncError, match="approximate"):
        import_model(model)


def test_mismatched_shapes_are_a_clear_error() -> None:
    node = helper.make_node("Add", ["a", "b"], ["y"])
    model = make_model([node], {"a": sample("float32", (2, 3)), "b": sample("float32", (4,))},
                       ["y"], 13)
    with pytest.raises(NncError, match="broadcast|inconsistent"):
        import_model(model)


def test_constant_operands_fold_and_broadcast() -> None:
    x = sample("float32", (1, 3, 2, 2))
    nodes = [
        helper.make_node("Mul", ["s", "t"], ["st"]),  # constant: folds at import
        helper.make_node("Add", ["x", "st"], ["a"]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["c"]),
        helper.make_node("Sigmoid", ["c"], ["y"]),
    ]
    inits = {"s": np.array([[[1.0]], [[2.0]], [[3.0]]], np.float32), "t": np.array(0.5, np.float32),
             "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    graph = check_model(make_model(nodes, {"x": x}, ["y"], 13, inits), {"x": x})
    assert op_kinds(graph) == ["add", "clip", "sigmoid"]
