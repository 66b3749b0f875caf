"""Models that used to end in an internal error: a graph output that is an initializer ("IR
invalid after pass 'layout-nhwc'"), long elementwise chains (RecursionError), a ConstantOfShape
that asks for GiBs (MemoryError), a 2-D Reshape shape tensor (accepted with a meaning of its own).
Each now compiles and matches onnxruntime, or is refused with one line, exit 2."""

from __future__ import annotations

import resource
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.compiler.api import compile as nnc_compile
from nnc.compiler.onnx.importer import import_model
from nnc.errors import NncError


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _matches_ort(m: onnx.ModelProto, tmp_path, **options) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    cm = nnc_compile(str(path), output_dir=tmp_path / "out", bench=False, **options)
    x = cm.random_inputs(seed=1)
    got = cm.run(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, x)
    for o, r in zip(sess.get_outputs(), ref, strict=True):
        atol = 0.05 if options.get("quantize") else 1e-6
        np.testing.assert_allclose(got[o.name], r, rtol=1e-5, atol=atol, err_msg=o.name)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_graph_output_that_is_an_initializer(tmp_path, quantize) -> None:
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [1, 3, 4, 4])],
               [_vi("y", [1, 3, 4, 4]), _vi("w", [2, 3])], [numpy_helper.from_array(w, "w")])
    options = {"quantize": "int8", "calibration": "random"} if quantize else {}
    _matches_ort(m, tmp_path, **options)


def test_initializer_output_also_used_by_an_op(tmp_path) -> None:
    w = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3, 1, 1)
    m = _model([helper.make_node("Conv", ["x", "w"], ["y"])], [_vi("x", [1, 3, 4, 4])],
               [_vi("y", [1, 2, 4, 4]), _vi("w", [2, 3, 1, 1])], [numpy_helper.from_array(w, "w")])
    g = import_model(m)
    assert [v.name for v in g.outputs] == ["y", "w"]
    assert "w" not in {c.name for c in g.constants}  # the output is a buffer, not a weight
    _matches_ort(m, tmp_path)


def test_a_chain_of_2000_elementwise_ops_compiles(tmp_path) -> None:
    nodes, prev = [], "x"
    for i in range(2000):
        ins = [prev] if i % 2 == 0 else [prev, "b"]
        kind = "Relu" if i % 2 == 0 else "Add"
        nodes.append(helper.make_node(kind, ins, [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    b = numpy_helper.from_array(np.full((1, 8), -1e-3, np.float32), "b")
    m = _model(nodes, [_vi("x", [1, 8])], [_vi(prev, [1, 8])], [b])
    _matches_ort(m, tmp_path)


def _cli_limited(args, limit_bytes: int) -> subprocess.CompletedProcess[str]:
    """The CLI with its address space capped: a model that makes nnc allocate GiBs fails fast
    instead of swapping the machine."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return subprocess.run([sys.executable, "-m", "nnc.compiler.cli", *map(str, args)],
                          capture_output=True, text=True, preexec_fn=cap, timeout=120)


def test_constant_of_shape_is_sized_before_it_is_made(tmp_path) -> None:
    shape = numpy_helper.from_array(np.array([1 << 16, 1 << 16], np.int64), "shape")
    m = _model([helper.make_node("ConstantOfShape", ["shape"], ["c"], name="fill"),
                helper.make_node("Add", ["x", "c"], ["y"], name="add")],
               [_vi("x", [1, 1])], [_vi("y", None)], [shape])
    path = tmp_path / "cos.onnx"
    onnx.save(m, str(path))
    r = _cli_limited(["compile", path, "-o", tmp_path / "out"], 3 << 30)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "'fill' (ConstantOfShape" in r.stderr and "4,294,967,296 elements" in r.stderr


def test_constant_of_shape_within_the_limit_still_folds() -> None:
    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "shape")
    m = _model([helper.make_node("ConstantOfShape", ["shape"], ["c"],
                                 value=numpy_helper.from_array(np.array([2.5], np.float32))),
                helper.make_node("Add", ["x", "c"], ["y"])],
               [_vi("x", [2, 3])], [_vi("y", [2, 3])], [shape])
    g = import_model(m)
    assert [op.kind for op in g.ops] == ["add"]
    assert any(np.all(c.data == 2.5) and c.data.shape == (2, 3) for c in g.constants)


@pytest.mark.parametrize("op", ["Reshape", "ConstantOfShape"])
def test_a_2d_shape_tensor_is_refused(op) -> None:
    s = numpy_helper.from_array(np.array([[1, 48]], np.int64), "s")
    if op == "Reshape":
        node = helper.make_node("Reshape", ["x", "s"], ["y"], name="r")
        m = _model([node], [_vi("x", [1, 3, 4, 4])], [_vi("y", None)], [s])
    else:
        node = helper.make_node("ConstantOfShape", ["s"], ["y"], name="r")
        m = _model([node], [], [_vi("y", None)], [s])
    with pytest.raises(NncError, match=r"node 'r' \(" + op + r".*must be a 1-D tensor.*\[1, 2\]"):
        import_model(m)
