"""Fuzzing (seeded, bounded): byte flips, truncation and structural mutations of small models end
in a clean success or an NncError, never a crash or an internal error relabelled as the user's;
a sample of the mutants that compile is built with the host C compiler and run against
onnxruntime (`benchmarks/fuzz_models.py`; the long run is in the README)."""

import numpy as np

from benchmarks.fuzz_models import STRUCTURAL, classify, compare, run, with_specials
from nnc.errors import NncError


def test_mutated_models_never_crash() -> None:
    result = run(mutants=1500, seed=0, time_limit=90)
    assert result["failures"] == []
    counts = result["counts"]
    assert result["mutants"] >= 500 and counts.get("ok", 0) > 0 and counts.get("user-error")
    assert len(STRUCTURAL) >= 59


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
