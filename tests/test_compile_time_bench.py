"""benchmarks/compile_time.py: one small model on one target runs through the CLI and reports
nnc.json's stages (no timing assertion: the figures depend on the machine)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.compile_time import command, main, markdown, measure, prepare_models


def test_one_build_reports_wall_time_and_stages(tmp_path: Path) -> None:
    prepare_models(["ad"], tmp_path / "models")
    rows = measure(["ad"], ["host"], ["int8"], 1, tmp_path / "models", tmp_path, log=None)
    (run,) = rows[0]["now"]
    assert "error" not in run, run
    assert {"import", "passes", "calibration", "codegen", "c_compiler"} <= set(run["stages_s"])
    assert run["wall_s"] >= sum(run["stages_s"].values()) > 0
    assert run["cpu_s"] > 0  # the child's user + sys, not this process's
    table = markdown(rows)
    assert table.count("\n") == 2 and "| ad | host | int8 |" in table


def test_the_command_is_the_cli_with_calibration_for_int8(tmp_path: Path) -> None:
    model = tmp_path / "kws.onnx"
    assert "--quantize" not in command(model, "tvm", "fp32", tmp_path / "o")
    args = command(model, "host", "int8", tmp_path / "o")
    assert args[args.index("--calibration") + 1] == "random"  # no kws_calibration.npz here
    assert "--no-tuning-cache" in args


def test_unknown_model_is_a_usage_error(capsys) -> None:
    assert main(["--models", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
