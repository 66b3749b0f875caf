"""`nnc eval` / `nnc.evaluate`: the metrics against brute force, labelled data loading, and the
variants table on a tiny classifier (host; the emulated board when its tools are there)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.compiler.cli import main
from nnc.compiler.errors import NncError
from nnc.compiler.eval import Progress, load_eval_data, roc_auc, score, sqnr_db
from nnc.compiler.onnx.importer import import_model

RNG = np.random.default_rng(11)
W = RNG.standard_normal((16, 8)).astype(np.float32)
B = RNG.standard_normal(8).astype(np.float32)


def classifier() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["a"]),
             helper.make_node("Softmax", ["a"], ["y"], axis=-1)]
    graph = helper.make_graph(
        nodes, "tinycls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def probs(x: np.ndarray) -> np.ndarray:
    a = x.reshape(len(x), 16) @ W + B
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "tinycls.onnx"
    onnx.save(classifier(), path)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    x = np.random.default_rng(2).standard_normal((40, 1, 16)).astype(np.float32)
    labels = np.argmax(probs(x), axis=1)
    labels[:4] = (labels[:4] + 1) % 8  # 4 of 40 wrong: the original scores 90%
    path = tmp_path / "test.npz"
    np.savez(path, x=x, labels=labels)
    return path


def test_roc_auc_is_the_pairwise_probability() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.standard_normal(60), 1)  # ties on purpose
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for (a, ya), (b, yb) in
             itertools.product(zip(s, y, strict=True), zip(s, y, strict=True)) if ya and not yb]
    assert roc_auc(y, s) == pytest.approx(np.mean(pairs), abs=1e-12)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    with pytest.raises(NncError, match="both classes"):
        roc_auc([1, 1], [0.1, 0.2])


def test_top1_top5_mse_sqnr() -> None:
    ref = np.eye(8)[[0, 1, 2, 3]][:, None, :] + 0.01
    outs = ref.copy()
    outs[3, 0, 3], outs[3, 0, 5] = 0.5, 0.9  # sample 3: top-1 now class 5, class 3 still top-5
    labels = np.array([0, 1, 2, 3])
    assert score("top1", outs, ref, [], labels) == 0.75
    assert score("top5", outs, ref, [], labels) == 1.0
    assert score("top1", outs, ref, [], None) == 0.75  # no labels: against the original's top-1
    assert score("mse", outs, ref, [], None) == pytest.approx(np.mean((outs - ref) ** 2))
    assert sqnr_db(ref, ref) == float("inf")
    noise = np.sum((ref - outs) ** 2)
    assert score("sqnr", outs, ref, [], None) == pytest.approx(
        10 * np.log10(np.sum(ref ** 2) / noise))
    with pytest.raises(NncError, match="needs labels"):
        score("auc", outs, ref, [], None)


def test_labels_from_the_npz_or_a_npy(data: Path, tmp_path: Path) -> None:
    inputs = import_model(classifier()).inputs
    samples, labels = load_eval_data(data, inputs)
    assert len(samples) == 40 and samples[0]["x"].shape == (1, 16) and labels is not None
    np.save(tmp_path / "l.npy", np.arange(40))
    _, other = load_eval_data(data, inputs, tmp_path / "l.npy", limit=10)
    assert list(other) == list(range(10))  # type: ignore[arg-type]
    np.save(tmp_path / "short.npy", np.arange(39))
    with pytest.raises(NncError, match="39 labels for 40 samples"):
        load_eval_data(data, inputs, tmp_path / "short.npy")
    with pytest.raises(NncError, match="evaluation data: .* lacks input"):
        np.savez(tmp_path / "bad.npz", z=np.zeros(3))
        load_eval_data(tmp_path / "bad.npz", inputs)


def test_host_variants_against_onnxruntime(model_path: Path, data: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    r = nnc.evaluate(model_path, data, quantize="int8", calibration=data,
                     variants=["host-fp32", "host-int8"],
                     progress=lambda v, done, n: calls.append((v, done, n)))
    assert r.metric == "top1" and r.labelled and r.samples == 40
    orig, fp32, int8 = r.variants
    assert orig.variant == "onnxruntime" and orig.metric == pytest.approx(0.9)
    assert fp32.agreement == 1.0 and fp32.metric == orig.metric and fp32.sqnr_db > 100
    assert 0.5 <= int8.agreement <= 1.0 and 10 < int8.sqnr_db < 60
    assert int8.drop == pytest.approx(orig.metric - int8.metric)
    assert fp32.latency_ms is not None and fp32.latency_ms > 0 and fp32.ram_bytes is not None
    assert ("host-int8", 40, 40) in calls and ("onnxruntime", 1, 40) in calls
    text = r.table()
    assert "host-int8" in text and "90.00%" in text
    json.dumps(r.to_json())  # inf SQNR of the original is a string there


def test_progress_bar_to_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Progress("device-fp32", 100)
    for i in range(1, 101):
        bar(i)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11 and lines[-1].startswith("device-fp32") and "100/100" in lines[-1]


def nnc_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nnc.compiler.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_json_and_errors(model_path: Path, data: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    hist = tmp_path / "h.sqlite"
    r = nnc_cli("eval", model_path, "--data", data, "--json", "--samples", "10", "-q",
                "--history", hist)
    assert r.returncode == 0, r.stderr
    from nnc.compiler.history import History

    with History(hist) as h:
        run, = h.runs(kind="eval")
    # the first 4 of the 10 labels are wrong on purpose
    assert run.model == "tinycls" and run.target == "host" and run.key_value == 0.6
    assert run.figures["metric_name"] == "top1" and run.options["variant"] == "host-fp32"
    out = json.loads(r.stdout)
    assert out["samples"] == 10 and [v["variant"] for v in out["variants"]] == \
        ["onnxruntime", "host-fp32"]
    assert out["variants"][1]["agreement"] == 1.0
    np.save(tmp_path / "short.npy", np.arange(5))
    for args, message in [
        (["--labels", tmp_path / "short.npy"], "5 labels for 40 samples"),
        (["--variant", "device-fp32"], "give a Cortex-M --target"),
        (["--variant", "host-int8"], "needs --quantize int8"),
        (["--metric", "auc"], "auc needs a binary score"),
    ]:
        code = main(["eval", str(model_path), "--data", str(data), "-q", *map(str, args)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (args, err)


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
def test_device_fp32_agrees_and_counts(model_path: Path, data: Path) -> None:
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("needs gcc-arm-none-eabi and qemu-system-arm")
    r = nnc.evaluate(model_path, data, target="cortex-m7", variants=["device-fp32"])
    dev = r.variants[1]
    assert dev.agreement == 1.0 and dev.sqnr_db > 100
    assert dev.instructions is not None and 0 < dev.instructions["min"] <= dev.instructions["max"]
    assert dev.flash_bytes and dev.ram_bytes and len(dev.layers) >= 1
    assert sum(la["instructions"] for la in dev.layers) <= dev.instructions["max"]


def test_autoencoder_scores_auc_and_no_agreement(tmp_path: Path) -> None:
    """An output with the input's shape is a reconstruction: AUC on its error, no top-1."""
    w = (np.eye(16) + 0.05 * RNG.standard_normal((16, 16))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "ae",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(4).standard_normal((30, 1, 16)).astype(np.float32)
    err = np.mean((x.reshape(30, 16) @ w - x.reshape(30, 16)) ** 2, axis=1)
    labels = (err > np.median(err)).astype(np.int64)
    r = nnc.evaluate(model, {"x": x, "labels": labels})
    assert r.metric == "auc" and r.variants[0].metric == 1.0  # labelled by its own error
    assert r.variants[1].metric == 1.0 and np.isnan(r.variants[1].agreement)
    assert r.to_json()["variants"][1]["agreement"] is None and " - " in r.table()
