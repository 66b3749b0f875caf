"""If with a compile-time condition: the taken branch is inlined (outer-scope values resolved,
branch-local names kept apart from the enclosing graph's), nested Ifs fold as they are met, and a
condition that does not fold is one clear error pointing at --bind. Checked against onnxruntime."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.compiler.errors import NncError
from nnc.compiler.onnx.importer import import_model
from nnc.ir.interp import run_graph


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _branch(nodes, outs, inits=()):
    return helper.make_graph(nodes, "b", [], [_vi(o, None) for o in outs], list(inits))


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 10)
    return m


def _ort(model, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def _sr_model():
    """y = If(sr == 16000) then relu(x * two) + t else -x, where `t` is an outer value and both
    branches define a local `t` of their own (a name that collides with the outer one)."""
    then_b = _branch([helper.make_node("Mul", ["x", "two"], ["t_local"]),
                      helper.make_node("Relu", ["t_local"], ["t"], name="inner_relu"),
                      helper.make_node("Add", ["t", "outer"], ["then_out"])], ["then_out"],
                     [numpy_helper.from_array(np.float32(2.0), "two")])
    else_b = _branch([helper.make_node("Neg", ["x"], ["t"])], ["t"])
    nodes = [helper.make_node("Constant", [], ["k"],
                              value=numpy_helper.from_array(np.array(16000, np.int64))),
             helper.make_node("Equal", ["sr", "k"], ["is16"]),
             helper.make_node("If", ["is16"], ["y"], name="sr_if", then_branch=then_b,
                              else_branch=else_b),
             # listed after the If that uses it: the importer orders by implicit uses too
             helper.make_node("Sigmoid", ["x"], ["outer"])]
    return _model(nodes, [_vi("x", [2, 3]), _vi("sr", [], TensorProto.INT64)],
                  [_vi("y", [2, 3])])


@pytest.mark.parametrize("sr", [16000, 8000])
def test_taken_branch_is_inlined(sr):
    m = _sr_model()
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    expected = _ort(m, {"x": x, "sr": np.array(sr, np.int64)})["y"]
    g = import_model(m, bind={"sr": sr})
    assert [v.name for v in g.inputs] == ["x"] and [v.name for v in g.outputs] == ["y"]
    assert "If" not in {op.kind for op in g.ops}
    np.testing.assert_allclose(run_graph(g, {"x": x})["y"], expected, rtol=1e-6)
    names = [v.name for op in g.ops for v in op.outputs]
    assert len(names) == len(set(names))


def test_condition_must_fold():
    with pytest.raises(NncError, match=r"node 'sr_if' \(If, opset 17\): the condition is not a "
                                       r"compile-time constant.*graph input\(s\) 'sr': fix it "
                                       r"with --bind sr=VALUE"):
        import_model(_sr_model())


def test_nested_if_on_static_shapes():
    """Silero-style: If(Not(Size(Shape(x)) == 2)) inside a branch: folds from the static shape."""
    unsq = _branch([helper.make_node("Unsqueeze", ["x", "ax0"], ["x2"])], ["x2"],
                   [numpy_helper.from_array(np.array([0], np.int64), "ax0")])
    same = _branch([helper.make_node("Identity", ["x"], ["x2"])], ["x2"])
    then_b = _branch([
        helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Size", ["s"], ["rank"]),
        helper.make_node("Equal", ["rank", "two"], ["is2"]), helper.make_node("Not", ["is2"],
                                                                              ["not2"]),
        helper.make_node("If", ["not2"], ["xx"], name="rank_if", then_branch=unsq,
                         else_branch=same),
        helper.make_node("Tanh", ["xx"], ["out"]),
    ], ["out"], [numpy_helper.from_array(np.array(2, np.int64), "two")])
    else_b = _branch([helper.make_node("Identity", ["x"], ["out"])], ["out"])
    m = _model([helper.make_node("If", ["c"], ["y"], name="top", then_branch=then_b,
                                 else_branch=else_b)],
               [_vi("x", [2, 3]), _vi("c", [], TensorProto.BOOL)], [_vi("y", None)])
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    expected = _ort(m, {"x": x, "c": np.array(True)})["y"]
    g = import_model(m, bind={"c": True})
    assert [op.kind for op in g.ops] == ["tanh"]
    np.testing.assert_allclose(run_graph(g, {"x": x})["y"], expected, rtol=1e-6)


def test_errors_inside_a_branch_name_the_branch():
    then_b = _branch([helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT64),
                      helper.make_node("Reshape", ["x", "xi"], ["r"], name="bad_reshape")], ["r"])
    m = _model([helper.make_node("If", ["c"], ["y"], name="top", then_branch=then_b,
                                 else_branch=then_b)],
               [_vi("x", [2]), _vi("c", [], TensorProto.BOOL)], [_vi("y", None)])
    with pytest.raises(NncError, match=r"node 'bad_reshape' \(Reshape, opset 17; in then_branch "
                                       r"of If 'top'\): input 1 \(shape\) must be a compile-time "
                                       r"constant.*--bind x=VALUE"):
        import_model(m, bind={"c": "1"})


def test_branch_output_becomes_the_graph_output_without_a_copy():
    then_b = _branch([helper.make_node("Relu", ["x"], ["r"])], ["r"])
    m = _model([helper.make_node("If", ["c"], ["y"], name="i", then_branch=then_b,
                                 else_branch=then_b)],
               [_vi("x", [2]), _vi("c", [], TensorProto.BOOL)], [_vi("y", None)])
    g = import_model(m, bind={"c": True})
    assert [(op.kind, op.outputs[0].name) for op in g.ops] == [("relu", "y")]
