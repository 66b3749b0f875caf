"""A Silero-VAD-shaped model: the graph is one If on the sample rate (an int64 input, fixed with
--bind), whose branches hold the 16 kHz and 8 kHz networks: a rank check through Shape, Size,
Equal, Not and a nested If, a MatMul encoder and an LSTM carrying the state (h, c) across calls.
Compiled for the host with the sample rate bound and compared with onnxruntime given the same
feed (sr included); the CLI path too."""

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, save_model

import nnc
from nnc.compiler.errors import NncError
from nnc.compiler.onnx.importer import import_model
from nnc.ir.interp import run_graph

SAMPLES, HIDDEN = 64, 16
RNG = np.random.default_rng(3)


def _t(name, *shape, scale=0.4):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _i64(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _branch(name, nodes, outs, inits=()):
    return helper.make_graph(nodes, name, [], [_vi(o, None) for o in outs], list(inits))


def _network(name, frames):
    """input [1, SAMPLES] → frames of SAMPLES/frames samples → encoder → LSTM → probability."""
    width = SAMPLES // frames
    as_2d = _branch(f"{name}_unsqueeze", [helper.make_node("Unsqueeze", ["input", "ax0"], ["x2"])],
                    ["x2"], [_i64("ax0", [0])])
    keep = _branch(f"{name}_keep", [helper.make_node("Identity", ["input"], ["x2"])], ["x2"])
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Size", ["shape"], ["rank"]),
        helper.make_node("Equal", ["rank", "two"], ["is2d"]),
        helper.make_node("Not", ["is2d"], ["not2d"]),
        helper.make_node("If", ["not2d"], ["x2"], name=f"{name}_rank_if", then_branch=as_2d,
                         else_branch=keep),
        helper.make_node("Reshape", ["x2", "frame_shape"], ["frames"]),
        helper.make_node("Transpose", ["frames"], ["tf"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["tf", "w_enc"], ["enc"]),
        helper.make_node("Relu", ["enc"], ["feat"]),
        helper.make_node("LSTM", ["feat", "W", "R", "B", "", "h", "c"], ["Y", "hn", "cn"],
                         name=f"{name}_lstm", hidden_size=HIDDEN),
        helper.make_node("Reshape", ["hn", "flat"], ["last"]),
        helper.make_node("MatMul", ["last", "w_out"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    inits = [_i64("two", 2), _i64("frame_shape", [1, frames, width]), _t("w_enc", width, width),
             _t("W", 1, 4 * HIDDEN, width), _t("R", 1, 4 * HIDDEN, HIDDEN),
             _t("B", 1, 8 * HIDDEN), _i64("flat", [1, HIDDEN]), _t("w_out", HIDDEN, 1)]
    return _branch(name, nodes, ["prob", "hn", "cn"], inits)


def vad_model():
    unsupported_rate = _branch("other_rate", [
        helper.make_node("Constant", [], ["prob"],
                         value=numpy_helper.from_array(np.zeros((1, 1), np.float32))),
        helper.make_node("Identity", ["h"], ["hn"]), helper.make_node("Identity", ["c"], ["cn"]),
    ], ["prob", "hn", "cn"])
    not_16k = _branch("not_16k", [
        helper.make_node("Equal", ["sr", "k8"], ["is8k"]),
        helper.make_node("If", ["is8k"], ["prob", "hn", "cn"], name="if_8k",
                         then_branch=_network("net_8k", 8), else_branch=unsupported_rate),
    ], ["prob", "hn", "cn"], [_i64("k8", 8000)])
    nodes = [helper.make_node("Constant", [], ["k16"], value=_i64("v", 16000)),
             helper.make_node("Equal", ["sr", "k16"], ["is16k"]),
             helper.make_node("If", ["is16k"], ["output", "hn", "cn"], name="if_16k",
                              then_branch=_network("net_16k", 4), else_branch=not_16k)]
    g = helper.make_graph(
        nodes, "silero_like",
        [_vi("input", [1, SAMPLES]), _vi("sr", [], TensorProto.INT64), _vi("h", [1, 1, HIDDEN]),
         _vi("c", [1, 1, HIDDEN])],
        [_vi("output", [1, 1]), _vi("hn", [1, 1, HIDDEN]), _vi("cn", [1, 1, HIDDEN])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])
    m.ir_version = 8
    return m


def _feed(seed=0):
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((1, SAMPLES)).astype(np.float32),
            "h": rng.standard_normal((1, 1, HIDDEN)).astype(np.float32),
            "c": rng.standard_normal((1, 1, HIDDEN)).astype(np.float32)}


def _ort(model, feeds, sr):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    res = sess.run(None, {**feeds, "sr": np.array(sr, np.int64)})
    return dict(zip([o.name for o in sess.get_outputs()], res, strict=True))


def _close(got, expected):
    assert set(got) == set(expected)
    for k, want in expected.items():
        np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-5, err_msg=k)


def test_host_build_matches_onnxruntime():
    model = vad_model()
    compiled = nnc.compile(model, target="host", bind={"sr": 16000}, opt_level=1, bench=False)
    assert [d["name"] for d in compiled.inputs] == ["input", "h", "c"]  # sr is gone
    assert compiled.info["bound_inputs"] == ["sr"]
    for seed in range(2):  # state carried across calls, as a VAD is run
        feeds = _feed(seed)
        _close(compiled.run(feeds), _ort(model, feeds, 16000))
    with pytest.raises(NncError, match=r"unexpected \['sr'\].*bound at compile time"):
        compiled.run({**feeds, "sr": np.array(16000, np.int64)})


@pytest.mark.parametrize("sr", [8000, 44100])
def test_other_branches_fold_too(sr):
    model = vad_model()
    g = import_model(model, bind={"sr": sr})
    assert [v.name for v in g.inputs] == ["input", "h", "c"]
    kinds = {op.kind for op in g.ops}
    assert ("gemm" in kinds) == (sr == 8000)  # the 44.1 kHz branch is only copies
    feeds = _feed()
    _close(run_graph(g, feeds), _ort(model, feeds, sr))


def test_unbound_sample_rate_is_one_clear_error():
    with pytest.raises(NncError, match=r"node 'if_16k' \(If, opset 16\): the condition is not a "
                                       r"compile-time constant.*--bind sr=VALUE"):
        import_model(vad_model())


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "nnc.compiler.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_bind(tmp_path):
    model = vad_model()
    path = tmp_path / "vad.onnx"
    save_model(model, str(path))
    r = _cli("compile", path, "-o", tmp_path / "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--bind sr=VALUE" in r.stderr
    out = tmp_path / "out"
    r = _cli("compile", path, "--bind", "sr=16000", "--target", "host", "-o", out)
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "nnc.json").read_text())
    assert [d["name"] for d in info["inputs"]] == ["input", "h", "c"]
    feeds = _feed(5)
    np.savez(tmp_path / "in.npz", **feeds)
    r = _cli("run", out, "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "res.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "res.npz") as res:
        _close({k: res[k] for k in res.files}, _ort(model, feeds, 16000))
    r = _cli("compile", path, "--bind", "sr=16k", "-o", tmp_path / "o")
    assert r.returncode == 2 and "--bind sr: '16k' is not a valid int64 value" in r.stderr
    r = _cli("inspect", path, "--bind", "sr=8000")
    assert r.returncode == 0 and "gemm" in r.stdout
