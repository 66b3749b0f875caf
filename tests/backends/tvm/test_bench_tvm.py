"""benchmarks/bench_tvm.py's model selection and its Relax timeout (no TVM build: seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_tvm


def test_models_option_takes_the_light_models_and_groups() -> None:
    assert bench_tvm.model_names("all") == ["kws", "vww", "ic", "ad",
                                            "squeezenet", "shufflenet", "resnet50"]
    assert bench_tvm.model_names("light") == ["squeezenet", "shufflenet", "resnet50"]
    assert bench_tvm.model_names("kws,resnet50") == ["kws", "resnet50"]
    with pytest.raises(ValueError, match="unknown model"):
        bench_tvm.model_names("kws,nope")


def test_relax_past_the_timeout_is_reported_not_waited_for(tmp_path: Path) -> None:
    # The child cannot even import and load the model in 0.2 s: killed, reported as a build
    # that took longer than the limit.
    row = bench_tvm.relax_in_child("ad", [np.zeros(1, np.float32)], 1, 1, tmp_path, 0.2)
    assert "relax_ms" not in row
    assert row["relax_error"].startswith("build > 0.2 s (killed after")
    table = bench_tvm.markdown([{"model": "ad", "nnc_tvm_ms": {"median": 1.0},
                                 "nnc_c_ms": {"median": 1.0}, "ort_ms": {"median": 1.0},
                                 "nnc_tvm_compile_s": 1.0, **row}])
    assert "build > 0.2 s" in table and "failed" not in table


def test_tuned_relax_past_the_timeout_is_reported_with_its_column(tmp_path: Path) -> None:
    row = bench_tvm.relax_in_child("ad", [np.zeros(1, np.float32)], 1, 1, tmp_path, 0.2,
                                   tuned=(8, tmp_path / "db"))
    assert "relax_tuned_ms" not in row
    assert row["relax_tuned_error"].startswith("tuning + build > 0.2 s (killed after")
    base = {"model": "ad", "nnc_tvm_ms": {"median": 1.0}, "nnc_c_ms": {"median": 1.0},
            "ort_ms": {"median": 1.0}, "nnc_tvm_compile_s": 1.0, "relax_ms": {"median": 4.0}}
    table = bench_tvm.markdown([{**base, **row}])
    assert "Relax tuned ms" in table and "tuning + build > 0.2 s" in table
    done = {**base, "relax_tuned_ms": {"median": 2.0}, "relax_tuned_tune_s": 95.4,
            "relax_tuned_tasks": 5, "relax_tuned_trials": 40, "relax_tuned_matches_ort": True}
    line = bench_tvm.markdown([done]).splitlines()[-1]
    assert "| 2.000 (5, 40, 95) |" in line and "| 0.25x | 0.50x |" in line
    assert "Relax tuned" not in bench_tvm.markdown([base])
