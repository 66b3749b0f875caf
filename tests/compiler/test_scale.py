"""Scale: a 10,000-node model imports within the bar (30 s); a model whose weights cannot fit a
microcontroller's flash is refused right after import, before any lowering."""

from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.compiler.api import compile as nnc_compile
from nnc.compiler.onnx.importer import import_model
from nnc.errors import NncError


def test_a_10000_node_model_imports_in_under_30_s() -> None:
    nodes, prev = [], "x"
    for i in range(10_000):
        ins = [prev] if i % 2 == 0 else [prev, "b"]
        kind = "Relu" if i % 2 == 0 else "Add"
        nodes.append(helper.make_node(kind, ins, [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    b = numpy_helper.from_array(np.full((1, 8), -1e-3, np.float32), "b")
    g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                       [1, 8])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 8])], [b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    t0 = time.perf_counter()
    graph = import_model(m)
    assert time.perf_counter() - t0 < 30 and len(graph.ops) == 10_000


def _gemm(n: int) -> object:
    w = numpy_helper.from_array(np.zeros((n, n), np.float32), "w")
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], "fc",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_weights_too_big_for_flash_are_refused_before_lowering(tmp_path, quantize) -> None:
    m = _gemm(2048)  # 16 MiB fp32, 4 MiB int8: neither fits the 4 MiB of cortex-m7's board
    q = {"quantize": "int8", "calibration": "random"} if quantize else {}
    t0 = time.perf_counter()
    checked = r"\(checked (right after import|before loading them)\)"
    with pytest.raises(NncError, match=r"weights alone need .* " + checked) as e:
        nnc_compile(m, target="cortex-m7", output_dir=tmp_path / "o", **q)
    assert time.perf_counter() - t0 < 15  # no calibration, lowering or build ran
    assert ("--quantize int8" in str(e.value)) == (quantize is None)
    assert not (tmp_path / "o" / "firmware.elf").exists()


def test_the_toposort_is_fast_on_an_unsorted_file_and_names_a_cycle() -> None:
    from nnc.compiler.onnx.importer import _toposort

    nodes = [helper.make_node("Relu", [f"t{i - 1}" if i else "x"], [f"t{i}"], name=f"n{i}")
             for i in range(10_000)]
    t0 = time.perf_counter()
    order = _toposort(list(reversed(nodes)), {"x"})
    assert time.perf_counter() - t0 < 5 and [n.name for n in order] == [n.name for n in nodes]
    side = helper.make_node("Relu", ["x"], ["s"], name="side")
    assert [n.name for n in _toposort([nodes[1], side, nodes[0]], {"x"})] == ["side", "n0", "n1"]
    loop = [helper.make_node("Relu", ["b"], ["a"], name="r1"),
            helper.make_node("Relu", ["a"], ["b"], name="r2")]
    with pytest.raises(NncError, match=r"cycle: 'r1' \(Relu\) -> 'r2' \(Relu\)"):
        _toposort(loop, {"x"})


def test_a_file_with_nodes_out_of_order_compiles_and_matches_onnxruntime(tmp_path) -> None:
    """onnx's shape inference reads nodes in file order; the importer sorts them first, so an
    unsorted file (which onnxruntime runs) compiles instead of failing with "expected to have
    type but instead is null"."""
    import onnx
    import onnxruntime as ort

    relu = helper.make_node("Relu", ["x"], ["a"], name="r1")
    neg = helper.make_node("Neg", ["a"], ["b"], name="n2")
    mul = helper.make_node("Mul", ["b", "x"], ["y"], name="m3")
    f32 = TensorProto.FLOAT
    g = helper.make_graph([mul, neg, relu], "g", [helper.make_tensor_value_info("x", f32, [2, 3])],
                          [helper.make_tensor_value_info("y", f32, [2, 3])])
    path = tmp_path / "unsorted.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.linspace(-2, 3, 6, dtype=np.float32).reshape(2, 3)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    got = nnc_compile(path, bench=False).run({"x": x})["y"]
    np.testing.assert_array_equal(got, want)
    assert np.any(got != 0)
