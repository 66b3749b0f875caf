"""Invalid models are refused with the onnx checker's reason instead of being given a meaning
of nnc's own; newcomer mistakes get one-line user errors (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.compiler.onnx.importer import import_model, parse_input_shapes
from nnc.errors import NncError


def _base() -> onnx.ModelProto:
    w = np.ones((4, 3), np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
         helper.make_node("Relu", ["h"], ["y"], name="r")],
        "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _dup_init(m):
    m.graph.initializer.append(numpy_helper.from_array(np.zeros((4, 3), np.float32), "w"))


def _concatenated(m):
    m.ParseFromString(m.SerializeToString() * 2)


def _bn_epsilon_int(m):
    g = helper.make_graph(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "s", "s"], ["y"], name="bn",
                          epsilon=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3])],
        [numpy_helper.from_array(np.ones(2, np.float32), "s"),
         numpy_helper.from_array(np.zeros(2, np.float32), "b")])
    m.graph.CopyFrom(g)


CASES = {
    "duplicate initializer": (_dup_init, "initializer 'w' is defined twice"),
    "output listed twice": (lambda m: m.graph.output.append(m.graph.output[0]),
                            "graph output 'y' is listed twice"),
    "bytes concatenated": (_concatenated, "is listed twice"),
    "no outputs": (lambda m: m.graph.ClearField("output"), "has no graph outputs"),
    "unknown attribute": (lambda m: m.graph.node[1].attribute.append(
        helper.make_attribute("foo", 1)), "Unrecognized attribute: foo for operator Relu"),
    "ir_version 0": (lambda m: setattr(m, "ir_version", 0), "ir_version set properly"),
    "ir_version 99": (lambda m: setattr(m, "ir_version", 99), "ir_version 99 is higher"),
    "epsilon as int": (_bn_epsilon_int, "attribute 'epsilon' must be FLOAT, got INT"),
    "value produced twice": (lambda m: m.graph.node[1].output.__setitem__(0, "h"),
                             "value 'h' is produced twice"),
    "unknown elem_type": (lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 77),
                          "element type 77 \\(not an ONNX element type\\)"),
    # found by fuzzing: the MatMul converter met a missing B (IndexError, exit 1)
    # found by fuzzing: nnc ignored a value_info type that onnxruntime refuses
    "value_info type contradicts": (lambda m: m.graph.value_info.append(
        helper.make_tensor_value_info("h", TensorProto.INT64, [2, 3])),
        "value_info says 'h' is INT64, but it is computed as FLOAT by node 'mm' \\(MatMul\\)"),
    "variadic input empty": (lambda m: m.graph.node.append(helper.make_node(
        "Sum", ["y", ""], ["z"], name="s")), "node 's' \\(Sum\\): input 1 \\(data_0, variadic\\) "
        "has an empty name"),
    "required input empty": (lambda m: m.graph.node[0].input.__setitem__(1, ""),
                             "node 'mm' \\(MatMul\\): input 1 \\(B\\) is required but its name is "
                             "empty"),
}


@pytest.mark.parametrize("case", CASES)
def test_invalid_model_is_refused(case: str) -> None:
    mutate, message = CASES[case]
    m = _base()
    mutate(m)
    with pytest.raises(NncError, match=message):
        import_model(m)


def test_a_stale_value_info_shape_is_accepted_as_onnxruntime_does() -> None:
    import onnxruntime as ort

    m = _base()
    m.graph.value_info.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [7, 7, 7]))
    import_model(m)
    x = np.ones((2, 4), np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": x})[0].shape == (2, 3)


def test_non_utf8_names_are_refused() -> None:
    data = _base().SerializeToString().replace(b"small", b"sm\xffll")
    m = onnx.ModelProto()
    m.ParseFromString(data)
    with pytest.raises(NncError, match="model.graph.name is not UTF-8"):
        import_model(m)
    data = _base().SerializeToString().replace(b"\x1a\x02mm", b"\x1a\x02m\xff")  # node name
    m.ParseFromString(data)
    with pytest.raises(NncError, match="not UTF-8"):
        import_model(m)


def test_zero_sized_input_shape_is_refused() -> None:
    with pytest.raises(NncError, match="size 0 leaves the model nothing to compute"):
        parse_input_shapes(["input=0x3x8x8"])


def _nnc(*args):
    return subprocess.run([sys.executable, "-m", "nnc.compiler.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_newcomer_mistakes_are_one_line_user_errors(tmp_path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(_base(), str(model))
    out = tmp_path / "out"
    assert _nnc("compile", model, "-o", out).returncode == 0
    (tmp_path / "empty.onnx").write_bytes(b"")
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    (tmp_path / "file").write_text("x")
    cases = [
        (("compile", tmp_path / "empty.onnx", "-o", tmp_path / "o"), "is empty (0 bytes)"),
        (("compile", model, "-o", tmp_path / "file"), "is a file, not a folder"),
        (("run", out, "--outputs", tmp_path / "nodir" / "o.npz"), "does not exist"),
        (("run", out, "--inputs", tmp_path / "x.npy"), "a .npy file (one array)"),
        (("run", out, "--inputs", model), "not a .npz"),
    ]
    for args, message in cases:
        r = _nnc(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("nnc: error: ") and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_random_calibration_warns_once(tmp_path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(_base(), str(model))
    r = _nnc("compile", model, "-o", tmp_path / "o", "--quantize", "int8", "--calibration",
             "random")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("RANDOM") == 1, r.stderr
