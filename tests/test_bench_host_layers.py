"""benchmarks/bench_host_layers.py: every kernel of a model timed through the layer hooks, and
onnxruntime's per-node times matched to them."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_host_layers import main, markdown, profile


def test_every_kernel_gets_a_time_and_onnxruntime_nodes_match(tmp_path: Path) -> None:
    result = profile("ad", warmup=1, repeat=3, workdir=tmp_path)
    rows = result["layers"]
    assert rows and all(0 < r["min_ms"] <= r["median_ms"] for r in rows)
    assert [r["kernel"] for r in rows] == sorted((r["kernel"] for r in rows),
                                                  key=lambda k: int(k[1:].split("_")[0]))
    assert any(r["ort_ms"] is not None for r in rows if r["kind"].startswith("gemm"))
    table = markdown(result, top=3)
    assert table.startswith("### ad") and table.count("\n| k") == 1 + 3  # header + 3 rows


def test_unknown_model_is_a_usage_error(capsys) -> None:
    assert main(["--models", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
