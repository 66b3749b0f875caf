"""LSTM, GRU and RNN converters against onnxruntime: one-node models through import_model, then
the graph interpreter (op references) and the lowered loop nests (loop interpreter) are compared
with ORT on all outputs (Y, Y_h and LSTM's Y_c)."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.compiler.errors import NncError
from nnc.compiler.onnx.importer import import_model
from nnc.ir.interp import run_graph
from nnc.ir.loop_interp import run_loop_module
from nnc.passes.lower_to_loops import lower_to_loops
from nnc.passes.manager import PassContext

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
STATE_INPUTS = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]


def _operands(op, seq, batch, n_in, hidden, nd, layout, bias, init, peepholes, seed):
    rng = np.random.default_rng(seed)
    g = GATES[op]

    def r(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    state = (batch, nd, hidden) if layout else (nd, batch, hidden)
    vals = {"X": r(*((batch, seq, n_in) if layout else (seq, batch, n_in))),
            "W": r(nd, g * hidden, n_in, scale=0.5), "R": r(nd, g * hidden, hidden, scale=0.5)}
    if bias:
        vals["B"] = r(nd, 2 * g * hidden)
    if init:
        vals["initial_h"] = r(*state)
        if op == "LSTM":
            vals["initial_c"] = r(*state)
    if peepholes:
        vals["P"] = r(nd, 3 * hidden)
    return vals


def _model(op, vals, attrs, const_weights, opset=17):
    slots = STATE_INPUTS[: 8 if op == "LSTM" else 6]
    names = [n if n in vals else "" for n in slots]
    while not names[-1]:
        names.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, names, outs, name="rnn0", **attrs)
    runtime = ["X"] if const_weights else [n for n in names if n]
    g_in = [helper.make_tensor_value_info(n, TensorProto.FLOAT, vals[n].shape) for n in runtime]
    inits = [numpy_helper.from_array(v, n) for n, v in vals.items() if n not in runtime]
    g_out = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    m = helper.make_model(helper.make_graph([node], "g", g_in, g_out, inits),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 10)  # what onnxruntime accepts
    return m, {n: vals[n] for n in runtime}


def _ort(model, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _expected(op, vals, attrs, const_weights):
    """ORT's outputs; onnxruntime has no layout=1 kernel, so a batch-major case runs the
    time-major model on transposed operands and transposes the results back."""
    if not attrs.get("layout"):
        return _ort(*_model(op, vals, attrs, const_weights))
    tm = dict(vals)
    for k in ("X", "initial_h", "initial_c"):
        if k in tm:
            tm[k] = tm[k].transpose(1, 0, 2)
    res = _ort(*_model(op, tm, {k: v for k, v in attrs.items() if k != "layout"},
                       const_weights))
    return [res[0].transpose(2, 0, 1, 3)] + [r.transpose(1, 0, 2) for r in res[1:]]


def check(op, seq=3, batch=2, n_in=4, hidden=5, direction="forward", layout=0, bias=True,
          init=True, peepholes=False, const_weights=True, loops=True, seed=0, **attrs):
    nd = 2 if direction == "bidirectional" else 1
    vals = _operands(op, seq, batch, n_in, hidden, nd, layout, bias, init, peepholes, seed)
    attrs = dict(hidden_size=hidden, direction=direction, **attrs)
    if layout:
        attrs["layout"] = layout
    expected = _expected(op, vals, attrs, const_weights)
    model, feeds = _model(op, vals, attrs, const_weights)
    graph = import_model(model)
    got = run_graph(graph, feeds)
    names = [v.name for v in graph.outputs]
    for name, want in zip(names, expected, strict=True):
        assert got[name].shape == want.shape, name
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5,
                                   err_msg=f"{name}: reference vs ORT")
    if loops:
        module = lower_to_loops(graph, PassContext())
        by_name = dict(zip(module.input_names or module.inputs, module.inputs, strict=True))
        res = run_loop_module(module, {by_name[k]: v for k, v in feeds.items()})
        for out, want in zip(module.outputs, expected, strict=True):
            np.testing.assert_allclose(res[out], want, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{out}: loops vs ORT")
    return graph


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("bias,init", [(True, True), (False, False), (True, False)])
def test_directions_biases_initial_states(op, direction, bias, init):
    check(op, direction=direction, bias=bias, init=init, loops=direction == "bidirectional")


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_batch_major_layout(op, direction):
    check(op, direction=direction, layout=1, batch=3, seq=4)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_peepholes(direction):
    check("LSTM", direction=direction, peepholes=True)
    check("LSTM", direction=direction, peepholes=True, init=False, loops=False)


@pytest.mark.parametrize("init", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_linear_before_reset(init, bias):
    check("GRU", init=init, bias=bias, linear_before_reset=1)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_clip(op):
    check(op, clip=0.5, loops=False)


def test_lstm_input_forget():
    check("LSTM", input_forget=1, loops=False)


@pytest.mark.parametrize("op,acts,alpha,beta", [
    ("LSTM", ["Relu", "Tanh", "Sigmoid"], [], []),
    ("LSTM", ["HardSigmoid", "LeakyRelu", "Tanh"], [0.3, 0.1], [0.4]),
    ("GRU", ["Sigmoid", "Relu"], [], []),
    ("RNN", ["Relu", "Sigmoid"], [], []),  # bidirectional: one per direction
    ("RNN", ["Elu"], [0.5], []),
    ("RNN", ["ScaledTanh"], [1.5], [0.7]),
    ("GRU", ["Affine", "ThresholdedRelu"], [0.5, 0.2], [0.1]),  # alphas in order of use
    ("LSTM", ["Sigmoid", "Softsign", "Softplus"], [], []),
])
def test_activations(op, acts, alpha, beta):
    direction = "bidirectional" if op == "RNN" and len(acts) == 2 else "forward"
    extra = {"activation_alpha": alpha} if alpha else {}
    if beta:
        extra["activation_beta"] = beta
    check(op, direction=direction, activations=acts, loops=False, **extra)


def test_weights_as_runtime_inputs():
    """W, R, B as graph inputs (the conformance cases' form): sliced per direction by ops."""
    check("LSTM", direction="bidirectional", peepholes=True, const_weights=False)
    check("GRU", const_weights=False, linear_before_reset=1, loops=False)


def test_single_step_batch_one_has_no_slices():
    g = check("LSTM", seq=1, batch=1, loops=False, init=False)
    kinds = [op.kind for op in g.ops]
    assert "slice" not in kinds and kinds.count("gemm") == 1  # no state: no recurrent gemm


def test_decomposition_is_gemms_with_constant_weights():
    """The input projection is one gemm for the whole sequence, each step one more."""
    g = check("GRU", seq=4, loops=False)
    gemms = [op for op in g.ops if op.kind == "gemm"]
    consts = g.constant_map()
    assert len(gemms) == 1 + 2 * 3 + 1  # projection; steps 2-4: z/r and h recurrences; step 1: h
    assert all(op.inputs[1] in consts for op in gemms)


def _lstm_model(seq_lens_as_input: bool, lens):
    vals = _operands("LSTM", 3, 2, 4, 5, 1, 0, True, False, False, 0)
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "sl"], ["Y"], name="l0", hidden_size=5)
    g_in = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 2, 4])]
    inits = [numpy_helper.from_array(vals[k], k) for k in ("W", "R", "B")]
    lens = np.array(lens, np.int32)
    if seq_lens_as_input:
        g_in.append(helper.make_tensor_value_info("sl", TensorProto.INT32, [2]))
    else:
        inits.append(numpy_helper.from_array(lens, "sl"))
    g = helper.make_graph([node], "g", g_in, [helper.make_tensor_value_info("Y", 1, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_sequence_lens_must_be_the_full_constant_length():
    import_model(_lstm_model(False, [3, 3]))  # all full length: accepted
    with pytest.raises(NncError, match=r"node 'l0' \(LSTM.*sequence_lens \[3, 2\] must equal "
                                       r"the sequence length \(3\)"):
        import_model(_lstm_model(False, [3, 2]))
    with pytest.raises(NncError, match="sequence_lens must be a compile-time constant.*--bind sl="):
        import_model(_lstm_model(True, [3, 3]))
    g = import_model(_lstm_model(True, [3, 3]), bind={"sl": "3,3"})
    assert [v.name for v in g.inputs] == ["X"]


def test_bad_attributes_are_clear_errors():
    vals = _operands("RNN", 2, 1, 3, 4, 1, 0, False, False, False, 0)
    for attrs, msg in [({"direction": "sideways"}, "direction='sideways'"),
                       ({"activations": ["Gelu"]}, "activation 'Gelu' is not supported"),
                       ({"hidden_size": 7}, r"W has shape \[1, 4, 3\], expected \[1, 7, 3\]")]:
        model, _ = _model("RNN", vals, {"hidden_size": 4, **attrs}, True)
        with pytest.raises(NncError, match=msg):
            import_model(model)


def test_lstm_becomes_plain_graph_ops():
    """No recurrent graph op: every backend runs the decomposition as it is."""
    vals = _operands("LSTM", 2, 1, 3, 4, 1, 0, True, True, False, 0)
    model, _ = _model("LSTM", vals, {"hidden_size": 4}, True)
    g = import_model(model)
    assert {op.kind for op in g.ops} <= {"gemm", "add", "split", "sigmoid", "tanh", "mul",
                                         "slice", "reshape", "concat"}
