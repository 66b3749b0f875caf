"""Fuzzing (seeded, bounded): byte flips, truncation and structural mutations of small models end
in a clean success or an NncError, never a crash or an internal error relabelled as the user's;
a sample of the mutants that compile is built with the host C compiler and run against
onnxruntime (`benchmarks/fuzz_models.py`; the long run is in the README)."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from benchmarks.fuzz_models import (
    STRUCTURAL,
    Worker,
    build_and_compare,
    classify,
    compare,
    run,
    seed_models,
    with_specials,
)
from nnc.compiler.api import compile as nnc_compile
from nnc.errors import NncError


def test_mutated_models_never_crash() -> None:
    result = run(mutants=1500, seed=0, time_limit=90)
    assert result["failures"] == []
    counts = result["counts"]
    assert result["mutants"] >= 500 and counts.get("ok", 0) > 0 and counts.get("user-error")
    assert len(STRUCTURAL) >= 69


def test_built_mutants_run_like_onnxruntime() -> None:
    """Up to 16 mutants that compile: built with gcc, run (every second one on NaN/inf/out-of-
    range inputs) and compared with onnxruntime: no wrong output, crash or exit-1 error."""
    result = run(mutants=300, seed=1, build=16, build_timeout=60)
    assert result["failures"] == []
    built = result["built"]
    assert sum(built.values()) == 16 and built.get("matches", 0) >= 8, built


def test_the_classification_can_fail() -> None:
    try:
        try:
            raise TypeError("internal")
        except TypeError as e:
            raise NncError("looks like the user's") from e
    except NncError as e:
        assert classify(e) == "masked"
    assert classify(KeyError("x")) == "crash" and classify(NncError("y")) == "user-error"


def test_a_hung_worker_is_a_finding() -> None:
    worker = Worker(timeout=0.01)  # no build answers that fast: killed, counted as a timeout
    try:
        assert build_and_compare(worker, seed_models()[0].SerializeToString())[0] == "timeout"
        assert worker.proc is None
    finally:
        worker.close()


def test_the_comparison_can_fail() -> None:
    a = np.array([1.0, np.nan, 3.0], np.float32)
    assert compare({"y": a}, {"y": a.copy()})[0] == "matches"
    assert compare({"y": a}, {"y": a + 1})[0] == "mismatch"
    assert compare({"y": a}, {"y": np.array([1.0, 0.0, 3.0], np.float32)})[0] == "nonfinite"
    assert compare({"y": a}, {"z": a})[0] == "mismatch"
    assert compare({"y": a}, {"y": a.astype(np.float64)})[0] == "mismatch"
    assert compare({"y": np.array([1, 2])}, {"y": np.array([1, 3])})[0] == "mismatch"
    special = with_specials({"x": np.zeros((8, 8), np.float32)}, seed=0)["x"]
    assert not np.all(np.isfinite(special))


def test_found_a_double_negation_is_not_a_decrement(tmp_path) -> None:
    """Found by the build stage (`deep_chain`): Neg(Neg(x)) was emitted as `--x`, which gcc
    rejected (exit 1); fused with a Gemm it was `-------(acc + b)`."""
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"]),
             helper.make_node("Neg", ["b"], ["y"])]
    g = helper.make_graph(nodes, "negs", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(m, str(tmp_path / "negs.onnx"))
    x = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
    got = nnc_compile(str(tmp_path / "negs.onnx"), output_dir=tmp_path / "o", bench=False).run(
        {"x": x})["y"]
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.testing.assert_array_equal(got, ref)
