"""Fuzzing (seeded, bounded): byte flips, truncation and structural mutations of small models end
in a clean success or an NncError, never a crash or an internal error relabelled as the user's
(`benchmarks/fuzz_models.py`; the long run is in the README)."""

from benchmarks.fuzz_models import classify, run
from nnc.errors import NncError


def test_mutated_models_never_crash() -> None:
    result = run(mutants=1500, seed=0, time_limit=90)
    assert result["failures"] == []
    counts = result["counts"]
    assert result["mutants"] >= 500 and counts.get("ok", 0) > 0 and counts.get("user-error")


def test_the_classification_can_fail() -> None:
    try:
        try:
            raise TypeError("internal")
        except TypeError as e:
            raise NncError("looks like the user's") from e
    except NncError as e:
        assert classify(e) == "masked"
    assert classify(KeyError("x")) == "crash" and classify(NncError("y")) == "user-error"
