"""ONNX importer: loading, dynamic shapes, unsupported ops, shape-subgraph folding, external
data."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.compiler.errors import NncError
from nnc.compiler.onnx.importer import import_model, parse_input_shapes
from nnc.ir.interp import run_graph


def _model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def test_missing_file_and_garbage_file(tmp_path):
    with pytest.raises(NncError, match="no such file"):
        import_model(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    with pytest.raises(NncError, match="not an ONNX model|cannot read"):
        import_model(bad)


def test_unsupported_ops_are_listed_all_at_once():
    m = _model([helper.make_node("Relu", ["x"], ["a"], name="ok"),
                helper.make_node("NonZero", ["a"], ["b"], name="nz1"),
                helper.make_node("Foo", ["b"], ["y"], name="foo1", domain="com.acme")],
               [_vi("x", [2])], [_vi("y", None)])
    m.opset_import.append(helper.make_opsetid("com.acme", 1))
    with pytest.raises(NncError) as e:
        import_model(m)
    msg = str(e.value)
    assert "NonZero (node 'nz1')" in msg and "Foo (domain com.acme, node 'foo1')" in msg
    assert "opset 13" in msg


def test_dynamic_dimension_needs_input_shape():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["N", 4])], [_vi("y", ["N", 4])])
    with pytest.raises(NncError, match=r"dynamic dimension 0 \('N'\).*--input-shape x=1x4"):
        import_model(m)
    g = import_model(m, {"x": (3, 4)})
    assert g.inputs[0].type.shape == (3, 4)
    with pytest.raises(NncError, match="unknown input"):
        import_model(m, {"z": (3, 4)})
    with pytest.raises(NncError, match="dimension 4 is fixed"):
        import_model(m, {"x": (3, 5)})


def test_parse_input_shapes():
    shapes = parse_input_shapes(["x=1x3x224x224", "a:b=2,3"])
    assert shapes == {"x": (1, 3, 224, 224), "a:b": (2, 3)}
    with pytest.raises(NncError, match="bad --input-shape"):
        parse_input_shapes(["x=1xQ"])


def test_shape_subgraph_feeding_reshape_folds_to_a_constant():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "i0"),
             numpy_helper.from_array(np.array([0], np.int64), "ax"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    g = import_model(_model(nodes, [_vi("x", [2, 3, 4])], [_vi("y", None)], inits))
    assert [op.kind for op in g.ops] == ["reshape"]
    assert g.outputs[0].type.shape == (2, 12)


def test_external_data_is_loaded(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_vi("x", [3, 4])], [_vi("y", [3, 4])],
               [numpy_helper.from_array(w, "w")])
    path = tmp_path / "m.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0)
    assert (tmp_path / "m.data").exists()
    g = import_model(path)
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], x + w)


def test_output_aliasing_an_input_keeps_its_onnx_name():
    m = _model([helper.make_node("Identity", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])])
    g = import_model(m)
    assert [v.name for v in g.outputs] == ["y"]
    np.testing.assert_array_equal(run_graph(g, {"x": np.ones(2, np.float32)})["y"], [1, 1])


def test_inconsistent_model_is_reported():
    m = _model([helper.make_node("Add", ["x", "z"], ["y"])], [_vi("x", [2, 3]), _vi("z", [4])],
               [_vi("y", None)])
    with pytest.raises(NncError, match="node|inconsistent|broadcast"):
        import_model(m)


def test_old_opset_is_upgraded():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])], opset=6)
    g = import_model(m)
    x = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], [0.0, 2.0])


def test_opset_the_converter_cannot_upgrade_is_a_clear_error(monkeypatch):
    from onnx import version_converter

    def refuse(model, version):
        raise RuntimeError("No adapter for Foo")

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])], opset=1)
    with pytest.raises(NncError, match="older than 7 .*No adapter for Foo"):
        import_model(m)


def test_negative_dim_value_is_dynamic():
    """Old Paddle exports write dim_value -1 for an unknown dimension (outputs too)."""
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [-1, 3, 48, 192])],
               [_vi("y", [-1, 3, 48, 192])])
    with pytest.raises(NncError, match=r"dynamic dimension 0 \(dim_value -1\).*--input-shape "
                                       r"x=1x3x48x192.*--bind"):
        import_model(m)
    g = import_model(m, parse_input_shapes(["x=1x3x48x192"]))
    assert g.inputs[0].type.shape == (1, 3, 48, 192)
    with pytest.raises(NncError, match="dimension 3 is fixed in the model, got 4"):
        import_model(m, {"x": (1, 4, 48, 192)})
    m0 = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [0, 4])], [_vi("y", [0, 4])])
    with pytest.raises(NncError, match=r"dynamic dimension 0 \(dim_value 0\)"):
        import_model(m0)
    assert import_model(m0, {"x": (2, 4)}).inputs[0].type.shape == (2, 4)


def test_dynamic_shape_error_names_both_flags():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", None)], [_vi("y", None)])
    with pytest.raises(NncError, match="no shape; give one with --input-shape x=.*--bind x="):
        import_model(m)


def _branch(nodes, out, inits=()):
    return helper.make_graph(nodes, "b", [], [_vi(out, None)], list(inits))


def test_unsupported_ops_in_subgraphs_are_listed_with_the_top_level_ones():
    inner = _branch([helper.make_node("NonZero", ["x"], ["nz"], name="deep")], "nz")
    then_b = _branch([helper.make_node("Unique", ["x"], ["u"], name="uq"),
                      helper.make_node("If", ["c"], ["v"], name="inner_if", then_branch=inner,
                                       else_branch=inner)], "u")
    body = helper.make_graph([helper.make_node("Det", ["x"], ["d"], name="det"),
                              helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
                             [_vi("i", [], TensorProto.INT64),
                              _vi("cond_in", [], TensorProto.BOOL)],
                             [_vi("cond_out", [], TensorProto.BOOL), _vi("d", None)])
    nodes = [helper.make_node("If", ["c"], ["y"], name="top_if", then_branch=then_b,
                              else_branch=_branch([helper.make_node("Relu", ["x"], ["r"])], "r")),
             helper.make_node("Loop", ["", "c"], ["ys"], name="loop", body=body),
             helper.make_node("TopK", ["x", "k"], ["t", "ti"], name="tk")]
    m = _model(nodes, [_vi("x", [3]), _vi("c", [], TensorProto.BOOL), _vi("k", [1], 7)],
               [_vi("y", None), _vi("ys", None), _vi("t", None)], opset=11)
    with pytest.raises(NncError) as e:
        import_model(m)
    msg = str(e.value)
    assert msg.count("unsupported ops") == 1 and "\n" not in msg
    for part in ["Unique (node 'uq', in then_branch of If 'top_if')",
                 "NonZero (node 'deep', in then_branch of If 'inner_if' in then_branch of If "
                 "'top_if')",
                 "Loop (node 'loop')", "Det (node 'det', in body of Loop 'loop')",
                 "TopK (node 'tk')"]:
        assert part in msg, part
    assert "If (node" not in msg  # If itself is supported


def test_unsupported_op_only_in_a_branch_not_taken_is_fine():
    then_b = _branch([helper.make_node("Relu", ["x"], ["r"])], "r")
    else_b = _branch([helper.make_node("Hardmax", ["x"], ["hm"], name="hm")], "hm")
    m = _model([helper.make_node("If", ["c"], ["y"], name="if0", then_branch=then_b,
                                 else_branch=else_b)],
               [_vi("x", [3]), _vi("c", [], TensorProto.BOOL)], [_vi("y", None)])
    g = import_model(m, bind={"c": True})
    assert [op.kind for op in g.ops] == ["relu"]
    with pytest.raises(NncError, match=r"unsupported ops .*Hardmax \(node 'hm', in else_branch "
                                       r"of If 'if0'\)"):
        import_model(m, bind={"c": False})
