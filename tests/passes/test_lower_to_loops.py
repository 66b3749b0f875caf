"""lower-to-loops: one kernel per (fused) op, aliases for reshape-like ops, copies for outputs."""

import numpy as np

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.types import TensorType
from nnc.passes.lower_to_loops import lower_to_loops
from nnc.passes.manager import PassContext

T = TensorType((2, 3), "float32")


def _fused_add_relu_graph():
    x, t, y = Value("x", T), Value("t", T), Value("y", T)
    bias = Constant.of("bias", np.array([1.0, -2.0, 0.5], np.float32))
    body = Graph("add_0", (x, bias.value), (y,), (),
                 (Op("add", ("x", "bias"), (t,), name="add_0"), Op("relu", ("t",), (y,), name="r")))
    fused = Op("fused", ("x", "bias"), (y,), Attrs.of(ops="add+relu"), name="add_0", body=body)
    return Graph("g", (x,), (y,), (bias,), (fused,))


def test_fused_chain_is_one_kernel_without_intermediate_buffer():
    m = lower_to_loops(_fused_add_relu_graph(), PassContext())
    assert len(m.kernels) == 1
    assert m.kernels[0].op_kind == "add+relu"
    assert {b.name for b in m.buffers} == {"x", "bias", "y"}
    x = np.array([[1, 2, 3], [-1, -2, -3]], np.float32)
    out = run_loop_module(m, {"x": x})["y"]
    np.testing.assert_array_equal(out, np.maximum(x + np.array([1, -2, 0.5], np.float32), 0))


def test_output_that_is_an_input_gets_a_copy_and_user_names_survive():
    x = Value("in:0", T)
    g = Graph("g", (x,), (x,), (), ())
    m = lower_to_loops(g, PassContext())
    assert m.input_names == ("in:0",) and m.output_names == ("in:0",)
    assert m.inputs[0] != m.outputs[0]
    assert all(c.isalnum() or c == "_" for c in m.inputs[0])
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(run_loop_module(m, {m.inputs[0]: data})[m.outputs[0]], data)
