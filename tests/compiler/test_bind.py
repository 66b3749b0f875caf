"""--bind NAME=VALUE: a graph input fixed to a constant at import; its value takes the input's
declared dtype and shape, the input disappears from the graph and what depends on it folds."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from nnc.compiler.errors import NncError
from nnc.compiler.onnx.bind import bound_value, parse_bind
from nnc.compiler.onnx.importer import import_model
from nnc.ir.interp import run_graph


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_parse_bind():
    assert parse_bind(["sr=16000", "s = 1,2", "p=a=b.npy"]) == {
        "sr": "16000", "s": "1,2", "p": "a=b.npy"}
    for bad in ["sr", "=3", "sr="]:
        with pytest.raises(NncError, match=r"bad --bind .*expected NAME=VALUE"):
            parse_bind([bad])


def test_values_take_the_declared_type():
    assert bound_value("sr", (), "int64", "16000").dtype == np.int64
    assert bound_value("sr", (1,), "int64", "16000").shape == (1,)  # a scalar for shape [1]
    assert bound_value("sr", (), "int64", 16000).shape == ()
    assert bound_value("f", (None,), "float32", "0.5, 2").tolist() == [0.5, 2.0]
    assert bound_value("f", (3,), "float32", [1, 2, 3]).dtype == np.float32  # ints -> float
    assert bound_value("b", (), "bool", "true").item() is True
    assert bound_value("n", None, "int32", "7").shape == ()  # no declared shape: as given
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert bound_value("t", (None, 3), "float32", arr) is not None


@pytest.mark.parametrize("dims,dtype,value,msg", [
    ((), "int64", "16k", r"--bind sr: '16k' is not a valid int64 value"),
    ((), "int64", "1.5", "is not a valid int64 value"),
    ((), "int8", "300", "is not a valid int8 value"),
    ((), "bool", "yes", "is not a valid bool value"),
    ((), "int64", 0.5, "a float64 value cannot bind an input of type int64"),
    ((), "int8", 300, "does not fit the input's type int8"),
    ((), "int64", np.float32(3), "the value has dtype float32 but the input is int64"),
    ((2,), "int64", "1,2,3", r"shape \[3\] but the input's shape is \[2\]"),
    ((), "int64", "1,2", r"shape \[2\] but the input's shape is \[\]"),
    ((2, 3), "float32", "1,2,3,4,5,6", r"shape \[6\] .*\[2, 3\] \(give a .npy file"),
])
def test_bad_values_name_the_input(dims, dtype, value, msg):
    name = "sr"
    with pytest.raises(NncError, match=msg):
        bound_value(name, dims, dtype, value)


def test_npy_file(tmp_path):
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "t.npy", arr)
    np.testing.assert_array_equal(bound_value("t", (2, None), "float32", str(tmp_path / "t.npy")),
                                  arr)
    with pytest.raises(NncError, match="t.npy holds float32 but the input is int64"):
        bound_value("t", (2, 3), "int64", str(tmp_path / "t.npy"))
    with pytest.raises(NncError, match="nope.npy: no such file"):
        bound_value("t", (2, 3), "float32", str(tmp_path / "nope.npy"))


def _reshape_model():
    """y = Reshape(x, shape) with `shape` a graph input: static only once it is bound."""
    return _model([helper.make_node("Reshape", ["x", "shape"], ["r"]),
                   helper.make_node("Relu", ["r"], ["y"])],
                  [_vi("x", [2, 6]), _vi("shape", [2], TensorProto.INT64)], [_vi("y", None)])


def test_bound_input_disappears_and_shape_operands_fold():
    m = _reshape_model()
    with pytest.raises(NncError, match=r"input 1 \(shape\) must be a compile-time constant; .*"
                                       r"depends on graph input\(s\) 'shape'.*--bind shape="):
        import_model(m)
    g = import_model(m, bind={"shape": "3,4"})
    assert [v.name for v in g.inputs] == ["x"]
    assert [op.kind for op in g.ops] == ["reshape", "relu"]
    x = np.arange(-6, 6, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], np.maximum(x, 0).reshape(3, 4))


def test_bind_errors_name_the_input():
    m = _reshape_model()
    with pytest.raises(NncError, match=r"--bind names unknown input\(s\) \['nope'\]; the model's "
                                       r"inputs are \['x', 'shape'\]"):
        import_model(m, bind={"nope": 1})
    with pytest.raises(NncError, match=r"--bind shape: the value has shape \[3\]"):
        import_model(m, bind={"shape": [1, 2, 3]})
    with pytest.raises(NncError, match="cannot view|reshape"):
        import_model(m, bind={"shape": "5,5"})
    with pytest.raises(NncError, match="disagrees with the shape"):
        import_model(m, {"shape": (3,)}, bind={"shape": "3,4"})


def test_bind_a_data_input():
    """Any input can be bound, not only shape operands: the whole graph folds."""
    m = _model([helper.make_node("Mul", ["x", "s"], ["y"])], [_vi("x", [3]), _vi("s", [1])],
               [_vi("y", None)])
    g = import_model(m, bind={"s": 2.0})
    x = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], 2 * x)
