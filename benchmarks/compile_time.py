"""Compile time of the whole CLI, import to built artifact, per model x target x dtype.

    python -m benchmarks.compile_time [--models kws,vww,ic,ad] [--targets host,cortex-m7,
        cortex-m55,opencl,tvm] [--dtypes fp32,int8] [--repeat 1] [--models-dir DIR]
        [--baseline DIR] [--json F]

Each build is `nnc compile MODEL --target T -o OUT [--quantize int8 --calibration C]
--no-tuning-cache` in a fresh process (one at a time), timed by wall clock from the parent: Python
start-up and imports included. The stages are those nnc.json records (`compile_time_s`: import,
passes, calibration, accuracy, codegen, c_compiler = the backend's build step; for OpenCL the
device program's build_ms, for TVM tvm.compile's build_s, inside c_compiler); "other" is the wall
time none of them covers (interpreter start-up, imports, writing the output folder). Every build
is cold: a new output folder (no model.clbin) and an empty PoCL kernel cache (POCL_CACHE_DIR).

Models: `--models-dir DIR` holding `<model>.onnx` (and `<model>_calibration.npz`, used for int8
when present, else `--calibration random`: 20 samples either way), by default the MLPerf Tiny
models of `benchmarks.models.mlperf_tiny` written into a temporary folder with 20-sample
calibration files. `--baseline DIR` runs every build also with the nnc package found in DIR (a
folder holding an `nnc` checkout or link: an older commit), alternating with this tree, so both
see the same machine load. With `--repeat N` the table shows the median of N builds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("kws", "vww", "ic", "ad")
TARGETS = ("host", "cortex-m7", "cortex-m55", "opencl", "tvm")
DTYPES = ("fp32", "int8")
CALIBRATION_SAMPLES = 20
STAGES = ("import", "passes", "calibration", "accuracy", "codegen", "c_compiler")
CLI = "import sys; from nnc.compiler.cli import main; sys.exit(main(sys.argv[1:]))"


def prepare_models(names: list[str], directory: Path) -> None:
    """`<name>.onnx` and `<name>_calibration.npz` of each MLPerf Tiny model into `directory`."""
    import numpy as np
    import onnx

    from benchmarks.models.calibration import calibration_data
    from benchmarks.models.mlperf_tiny import MODELS as BUILDERS

    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (directory / f"{name}.onnx").exists():
            continue
        model = BUILDERS[name]()
        onnx.save(model, directory / f"{name}.onnx")
        np.savez(directory / f"{name}_calibration.npz",
                 **calibration_data(model, CALIBRATION_SAMPLES))


def command(model: Path, target: str, dtype: str, out: Path) -> list[str]:
    """The `nnc compile` arguments of one build."""
    args = ["compile", str(model), "--target", target, "-o", str(out), "--no-tuning-cache"]
    if dtype == "int8":
        cal = model.with_name(f"{model.stem}_calibration.npz")
        args += ["--quantize", "int8", "--calibration", str(cal) if cal.exists() else "random"]
    return args


def compile_once(model: Path, target: str, dtype: str, out: Path,
                 baseline: Path | None = None) -> dict[str, Any]:
    """One build in a fresh process: wall seconds and the stages of its nnc.json."""
    # a cold build: no earlier output folder (its model.clbin) and an empty PoCL kernel cache
    shutil.rmtree(out, ignore_errors=True)
    pocl = out.with_name(out.name + "-pocl-cache")
    shutil.rmtree(pocl, ignore_errors=True)
    env = dict(os.environ, NNC_HISTORY="off", POCL_CACHE_DIR=str(pocl))
    if baseline is not None:
        env["PYTHONPATH"] = str(baseline)
    argv = [sys.executable, "-c", CLI, *command(model, target, dtype, out)]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=out.parent, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    # user + sys of the build and its children (compilers): steadier than wall on a busy machine
    cpu = done.ru_utime + done.ru_stime - used.ru_utime - used.ru_stime
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "?").splitlines()
        return {"wall_s": round(wall, 3), "error": lines[-1][:200]}
    info = json.loads((out / "nnc.json").read_text())
    stages = dict(info.get("compile_time_s", {}))
    row: dict[str, Any] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "stages_s": stages,
                           "other_s": round(wall - sum(stages.values()), 3)}
    if "opencl" in info and info["opencl"].get("build_ms") is not None:
        row["opencl_program_s"] = round(info["opencl"]["build_ms"] / 1000, 3)
    if "tvm" in info:
        row["tvm_s"] = {k: v for k, v in info["tvm"].items() if k.endswith("_s")}
    return row


def measure(models: list[str], targets: list[str], dtypes: list[str], repeat: int,
            models_dir: Path, workdir: Path, baseline: Path | None = None,
            log: Any = sys.stderr) -> list[dict[str, Any]]:
    """A row per model x target x dtype: every build's figures under "now" (and "baseline"),
    the builds of the two trees alternating."""
    trees: dict[str, Path | None] = {"now": None}
    if baseline is not None:
        trees = {"baseline": baseline, "now": None}
    rows = []
    for name in models:
        model = models_dir / f"{name}.onnx"
        for target in targets:
            for dtype in dtypes:
                row: dict[str, Any] = {"model": name, "target": target, "dtype": dtype,
                                       **{label: [] for label in trees}}
                for i in range(repeat):
                    for label, tree in trees.items():
                        out = workdir / f"{name}_{target}_{dtype}_{label}"
                        run = compile_once(model, target, dtype, out, tree)
                        row[label].append(run)
                        print(f"{name} {target} {dtype} {label} #{i + 1}: {run['wall_s']:.2f} s"
                              + (f" (cpu {run['cpu_s']:.2f} s)" if "cpu_s" in run else "")
                              + (f" ({run['error']})" if "error" in run else ""),
                              file=log, flush=True)
                rows.append(row)
    return rows


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if "error" not in r and key in r]
    return statistics.median(vals) if vals else None


def _median_stage(runs: list[dict[str, Any]], stage: str) -> float:
    vals = [r["stages_s"].get(stage, 0.0) for r in runs if "error" not in r]
    return statistics.median(vals) if vals else 0.0


def _cell(runs: list[dict[str, Any]]) -> str:
    wall = _median(runs, "wall_s")
    if wall is None:
        return f"error: {runs[0]['error'][:60]}"
    return f"{wall:.2f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """A table: the median wall seconds (and before/after ratio with a baseline), the median
    user + sys CPU seconds and the median stages of this tree."""
    labels = [k for k in ("baseline", "now") if rows and k in rows[0]]
    head = ["model", "target", "dtype"]
    head += ["before s", "after s", "after / before"] if len(labels) == 2 else ["wall s"]
    head += ["cpu before -> after s"] if len(labels) == 2 else ["cpu s"]
    head += ["import", "passes", "calib + accuracy", "codegen", "build (cc / cl / tvm)", "other"]
    out = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for r in rows:
        now = r["now"]
        cells = [r["model"], r["target"], r["dtype"]] + [_cell(r[lab]) for lab in labels]
        if len(labels) == 2:
            a, b = _median(r["baseline"], "wall_s"), _median(now, "wall_s")
            cells.append(f"{b / a:.2f}" if a and b else "-")
        cpus = [_median(r[lab], "cpu_s") for lab in labels]
        cells.append(" -> ".join(f"{c:.2f}" if c is not None else "-" for c in cpus))
        if _median(now, "wall_s") is None:
            cells += ["-"] * 6
        else:
            s = {st: _median_stage(now, st) for st in STAGES}
            build = f"{s['c_compiler']:.2f}"
            cl = _median(now, "opencl_program_s")
            if cl is not None:
                build += f" (program {cl:.2f})"
            tvm = [x["tvm_s"].get("build_s") for x in now if "tvm_s" in x]
            if tvm:
                build += f" (tvm.compile {statistics.median(tvm):.2f})"
            cells += [f"{s['import']:.2f}", f"{s['passes']:.2f}",
                      f"{s['calibration'] + s['accuracy']:.2f}", f"{s['codegen']:.2f}", build,
                      f"{_median(now, 'other_s'):.2f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _names(text: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    bad = [n for n in names if allowed is not None and n not in allowed]
    if bad or not names:
        raise ValueError(f"unknown {what} {','.join(bad) or text!r}; choose from "
                         f"{','.join(allowed or ())}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--models-dir", type=Path, default=None)
    p.add_argument("--baseline", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        models = _names(args.models, MODELS if args.models_dir is None else None, "model")
        targets = _names(args.targets, None, "target")
        dtypes = _names(args.dtypes, DTYPES, "dtype")
    except ValueError as e:
        print(f"compile_time: {e}", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("compile_time: --repeat must be at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="nnc-ctime-") as tmp:
        models_dir = args.models_dir
        if models_dir is None:
            models_dir = Path(tmp) / "models"
            prepare_models(models, models_dir)
        missing = [m for m in models if not (models_dir / f"{m}.onnx").exists()]
        if missing:
            print(f"compile_time: no {', '.join(missing)} .onnx in {models_dir}", file=sys.stderr)
            return 2
        rows = measure(models, targets, dtypes, args.repeat, models_dir.resolve(), Path(tmp),
                       args.baseline.resolve() if args.baseline else None)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(markdown(rows))
    result = {"load_average_1min_at_end": load, "repeat": args.repeat, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    else:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
