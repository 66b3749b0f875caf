"""Latency, one thread each, same inputs, same run: nnc -> TVM module (`--target tvm`) against
nnc's host C, TVM's own Relax ONNX frontend (untuned: `tvm.compile` of the imported module) and
onnxruntime.

    python -m benchmarks.bench_tvm [--models kws,vww,ic,ad,squeezenet,shufflenet,resnet50]
        [--repeat 100] [--light-repeat 10] [--relax-timeout 300] [--json F] [--tbaa]
        [--tuned-relax [--trials 200] [--tuned-timeout 1800] [--tuning-dir DIR]]
    python -m benchmarks.bench_tvm --compile-times [--models ...] [--quant int8] [--baseline DIR]

Timing: the two TVM modules with TVM's `time_evaluator` (C++, no Python in the loop), nnc host C
with its `bench` executable (C), onnxruntime with `InferenceSession.run` in Python (a few
microseconds of call overhead), each the median of `repeat` runs after `warmup`. One thread:
TVM_NUM_THREADS=1 (set before TVM is imported), onnxruntime intra/inter-op threads 1; nnc's
parallel loops run serially. Every output is compared with onnxruntime's (rtol 1e-3, atol 1e-4).
Prints a markdown table and writes JSON. `--models` also takes `mlperf` (the four MLPerf Tiny
models), `light` (onnx's light models squeezenet, shufflenet, resnet50: feeds from
`benchmarks.models.load_light`) and `all` (the default). The light models are timed
`--light-repeat` times (they take 10-1000x longer). TVM's Relax build and runs happen in a child
process killed after `--relax-timeout` seconds; a build that does not finish by then is reported
as "build > N s" (measured), not waited for.

`--tuned-relax` adds TVM's MetaSchedule-tuned Relax build ("Relax tuned"): the same imported
module, legalized and fused as TVM's `static_shape_tuning` pipeline does it, its fused TIR
functions tuned by MetaSchedule (`tvm.s_tir.meta_schedule`: evolutionary search, XGBoost cost
model, candidates built in 2 worker processes and timed one at a time at TVM_NUM_THREADS=1,
target `num-cores` 1) with `--trials` candidates per model: `--trials` / tasks per task,
rounded down to a multiple of 8 (one search iteration), at least 8, so every task is tuned;
then the database applied and `tvm.compile`d. It runs in a child process killed after
`--tuned-timeout` seconds; the row reports the tuning and build seconds, the tasks and the
trials. The database goes to `--tuning-dir DIR`/<model> (kept; an existing one is tuned
further) or a temporary folder. MetaSchedule needs cloudpickle and
psutil (in the `[tvm]` extra).

`--compile-times`: any model of `benchmarks.int8_differential` (MLPerf Tiny and the zoo; "all":
the four MLPerf Tiny models), import to built model.so, fp32 and int8, each build in a fresh
process (one at a time), with the stages nnc.json records; `--baseline DIR` runs the same
builds, alternating, with the nnc package found in DIR (a folder holding an `nnc` checkout or
link: an older commit).
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before tvm is imported anywhere

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from benchmarks.bench_host import BENCH_MODELS, LIGHT, ort_session, time_ort  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "bench_tvm.json"
RTOL, ATOL = 1e-3, 1e-4


def relax_build(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[Any, Any, float]:
    """TVM's own path: Relax ONNX frontend, weights bound as constants, default (untuned)
    pipeline for this CPU; returns (vm, input tensors, build seconds)."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from nnc.backends.tvm.build import llvm_target

    t0 = time.perf_counter()
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    ex = tvm.compile(mod, target=llvm_target(tvm))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input if i.name in feeds]
    return vm, args, time.perf_counter() - t0


def relax_tuned_build(model: onnx.ModelProto, feeds: dict[str, np.ndarray], trials: int,
                      work_dir: Path, per_iter: int = 8) -> tuple[Any, Any, dict[str, Any]]:
    """TVM's own path, tuned: the Relax ONNX import, legalized and fused (TVM's
    `static_shape_tuning` pipeline without its tuning pass, whose knobs are fixed), each fused
    TIR function tuned by MetaSchedule with `trials` / tasks candidates each, rounded down to
    whole iterations of `per_iter`, at least one (more than `trials` in all when there are
    many tasks), the database in `work_dir` applied,
    `tvm.compile`; returns (vm, input tensors, {tune_s, build_s, tasks, trials})."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.s_tir import meta_schedule as ms

    from nnc.backends.tvm.build import llvm_target

    def build_candidate(mod: Any, target: Any, _params: Any) -> Any:
        # MetaSchedule's default_build without its `import tvm.s_tir.tensor_intrin`: that import
        # parses every tensor intrinsic's TVMScript (26 s of CPU, 72 s wall at load 6, in each
        # fresh builder process: every build timed out). A tensorized candidate already holds
        # the intrinsic's body, so the builder does not need the registry.
        from tvm.driver import build as tvm_build
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod),
                         target=target)

    target = tvm.target.Target({**llvm_target(tvm).export(), "num-cores": 1})
    t0 = time.perf_counter()
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    with target:
        mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                        relax.transform.CanonicalizeBindings(),
                                        relax.get_pipeline("zero")])(mod)
    extracted = ms.relax_integration.extract_tasks(mod, target)
    work_dir.mkdir(parents=True, exist_ok=True)
    tasks, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted, str(work_dir), num_threads=2, seed=0)
    # whole search iterations per task (a last iteration of 1-7 candidates costs as much)
    per_task = per_iter * max(1, trials // (per_iter * max(1, len(tasks))))
    t1 = time.perf_counter()
    database = ms.tune.tune_tasks(
        tasks=tasks, task_weights=weights, work_dir=str(work_dir),
        max_trials_global=per_task * len(tasks), max_trials_per_task=per_task,
        num_trials_per_iter=per_iter,
        builder=ms.builder.LocalBuilder(max_workers=2, timeout_sec=120,
                                        f_build=build_candidate),
        runner=ms.runner.LocalRunner(timeout_sec=60))
    t2 = time.perf_counter()
    with target, database, tvm.transform.PassContext(opt_level=3):
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    ex = tvm.compile(mod, target=target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input if i.name in feeds]
    measured = sum(1 for r in database.get_all_tuning_records()
                   if r.run_secs and max(float(x) for x in r.run_secs) < 1e9)  # 1e10: failed
    return vm, args, {"tune_s": round(t2 - t1, 1),
                      "build_s": round(time.perf_counter() - t2 + t1 - t0, 1),
                      "tasks": len(tasks), "trials": measured}


def _outputs(value: Any) -> list[np.ndarray]:
    if hasattr(value, "numpy"):
        return [value.numpy()]
    return [v.numpy() for v in value]


def time_evaluator(run: Any, repeat: int) -> dict[str, float]:
    times = [t * 1e3 for t in run.results]
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def llvm_target_with_tbaa(tvm: Any, cpu: str | None = None) -> Any:
    """The LLVM target of backends/tvm/build.py with type-based alias analysis left on (its
    default): what turning it off costs (it is off for correctness: build.py::llvm_target)."""
    return tvm.target.Target({"kind": "llvm",
                              "mcpu": cpu or tvm.target.codegen.llvm_get_system_cpu()})


RELAX_CHILD = r"""
import os, sys, json, time
os.environ["TVM_NUM_THREADS"] = "1"
import numpy as np
from benchmarks.bench_host import BENCH_MODELS
from benchmarks import bench_tvm as b
name, ref_path, warmup, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model, feeds = BENCH_MODELS[name]()
ref = list(np.load(ref_path).values())
import tvm
vm, args, build_s = b.relax_build(model, feeds)
print(json.dumps({"relax_compile_s": round(build_s, 2)}), flush=True)
outs = b._outputs(vm["main"](*args))
ok = all(np.allclose(g, r, rtol=b.RTOL, atol=b.ATOL) for g, r in zip(outs, ref, strict=True))
for _ in range(warmup):
    vm["main"](*args)
timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat, min_repeat_ms=0)
print(json.dumps({"relax_matches_ort": bool(ok),
                  "relax_ms": b.time_evaluator(timer(*args), repeat)}), flush=True)
"""

# MetaSchedule prints its task tables to stdout too: the child's own lines carry a prefix
RELAX_TUNED_CHILD = r"""
import os, sys, json, time
os.environ["TVM_NUM_THREADS"] = "1"
from pathlib import Path
import numpy as np
from benchmarks.bench_host import BENCH_MODELS
from benchmarks import bench_tvm as b
name, ref_path, warmup, repeat, trials, db = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                              int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
model, feeds = BENCH_MODELS[name]()
ref = list(np.load(ref_path).values())
import tvm
vm, args, info = b.relax_tuned_build(model, feeds, trials, Path(db))
print("NNC_ROW " + json.dumps({f"relax_tuned_{k}": v for k, v in info.items()}), flush=True)
outs = b._outputs(vm["main"](*args))
ok = all(np.allclose(g, r, rtol=b.RTOL, atol=b.ATOL) for g, r in zip(outs, ref, strict=True))
for _ in range(warmup):
    vm["main"](*args)
timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat, min_repeat_ms=0)
print("NNC_ROW " + json.dumps({"relax_tuned_matches_ort": bool(ok),
                               "relax_tuned_ms": b.time_evaluator(timer(*args), repeat)}),
      flush=True)
"""


def relax_in_child(name: str, ref: list[np.ndarray], warmup: int, repeat: int, workdir: Path,
                   timeout_s: float, tuned: tuple[int, Path] | None = None) -> dict[str, Any]:
    """TVM's Relax build and timing of `name` in a child process killed after `timeout_s`:
    the row's relax_* fields, or relax_error ("build > N s" when the build did not finish).
    `tuned` = (trials, database folder): the MetaSchedule-tuned build instead
    (`relax_tuned_build`), fields relax_tuned_*."""
    import subprocess

    ref_path = workdir / f"{name}_ref.npz"
    np.savez(ref_path, *ref)
    key, prefix = ("relax_tuned", "NNC_ROW ") if tuned else ("relax", "")
    cmd = [sys.executable, "-c", RELAX_TUNED_CHILD if tuned else RELAX_CHILD, name,
           str(ref_path), str(warmup), str(repeat)]
    if tuned:
        cmd += [str(tuned[0]), str(tuned[1])]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        out, err = proc.communicate()
    waited = time.perf_counter() - t0
    row: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith(prefix + "{"):
            row.update(json.loads(line[len(prefix):]))
    if f"{key}_ms" in row:
        return row
    if timed_out:
        built = "relax_tuned_tune_s" in row if tuned else "relax_compile_s" in row
        what = "runs" if built else ("tuning + build" if tuned else "build")
        row[f"{key}_error"] = f"{what} > {timeout_s:g} s (killed after {waited:.1f} s)"
    else:
        tail = err.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        row[f"{key}_error"] = tail[0][:200]
    return row


def bench_model(name: str, warmup: int, repeat: int, workdir: Path,
                tbaa: bool = False, relax_timeout_s: float = 300.0,
                tuned: tuple[int, Path, float] | None = None) -> dict[str, Any]:
    """One row; `tuned` = (trials, database folder, timeout s) adds the MetaSchedule-tuned
    Relax build (tuned first, so the other timings come after the tuning's load is gone)."""

    import nnc
    from nnc.backends.tvm import build as tvm_build

    model, feeds = BENCH_MODELS[name]()
    sess = ort_session(model)
    ref = sess.run(None, feeds)
    row: dict[str, Any] = {"model": name}
    if tuned:
        trials, db, tuned_timeout_s = tuned
        row.update(relax_in_child(name, ref, warmup, repeat, workdir, tuned_timeout_s,
                                  (trials, db)))

    t0 = time.perf_counter()
    m_tvm = nnc.compile(model, target="tvm", output_dir=workdir / f"{name}_tvm")
    row["nnc_tvm_compile_s"] = round(time.perf_counter() - t0, 2)
    got = m_tvm.run(feeds)
    row["nnc_tvm_matches_ort"] = all(np.allclose(g, r, rtol=RTOL, atol=ATOL)
                                     for g, r in zip(got.values(), ref, strict=True))
    row["nnc_tvm_ms"] = m_tvm.benchmark(warmup, repeat, feeds)["latency_ms"]
    if tbaa:
        default = tvm_build.llvm_target
        tvm_build.llvm_target = llvm_target_with_tbaa
        try:
            m_tbaa = nnc.compile(model, target="tvm", output_dir=workdir / f"{name}_tvm_tbaa")
        finally:
            tvm_build.llvm_target = default
        got = m_tbaa.run(feeds)
        row["nnc_tvm_tbaa_matches_ort"] = all(np.allclose(g, r, rtol=RTOL, atol=ATOL)
                                              for g, r in zip(got.values(), ref, strict=True))
        row["nnc_tvm_tbaa_ms"] = m_tbaa.benchmark(warmup, repeat, feeds)["latency_ms"]

    m_c = nnc.compile(model, target="host", output_dir=workdir / f"{name}_host")
    got = m_c.run(feeds)
    row["nnc_c_matches_ort"] = all(np.allclose(g, r, rtol=RTOL, atol=ATOL)
                                   for g, r in zip(got.values(), ref, strict=True))
    row["nnc_c_ms"] = m_c.benchmark(warmup, repeat, feeds)["latency_ms"]

    row.update(relax_in_child(name, ref, warmup, repeat, workdir, relax_timeout_s))
    row["ort_ms"] = time_ort(sess, feeds, warmup, repeat)
    return row


COMPILE_ONE = r"""
import json, sys, time
import nnc
from benchmarks.int8_differential import all_models, calibration_samples
name, quant, out = sys.argv[1:4]
model = all_models()[name]()
kw = {} if quant == "fp32" else dict(quantize="int8", calibration=calibration_samples(model, 16, 0))
t0 = time.perf_counter()
m = nnc.compile(model, target="tvm", output_dir=out, **kw)
total = time.perf_counter() - t0
print(json.dumps({"total_s": total, "stages": m.info["compile_time_s"], "tvm": m.info["tvm"]}))
"""


def compile_times(models: list[str], baseline: Path | None, workdir: Path,
                  quants: tuple[str, ...] = ("fp32", "int8")) -> list[dict[str, Any]]:
    """Seconds from import to model.so per model and quantization, this tree and `baseline`."""
    import subprocess

    trees = {"now": None} if baseline is None else {"baseline": baseline, "now": None}
    rows = []
    for name in models:
        for quant in quants:
            row: dict[str, Any] = {"model": name, "quant": quant}
            for label, tree in trees.items():
                env = dict(os.environ)
                if tree is not None:
                    env["PYTHONPATH"] = str(tree)
                out = workdir / f"{name}_{quant}_{label}"
                proc = subprocess.run([sys.executable, "-c", COMPILE_ONE, name, quant, str(out)],
                                      cwd=ROOT, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    row[label] = {"error": proc.stderr.strip().splitlines()[-1][:200]}
                else:
                    row[label] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{name} {quant} {label}: {row[label].get('total_s', row[label])}",
                      file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def compile_markdown(rows: list[dict[str, Any]]) -> str:
    labels = [k for k in ("baseline", "now") if k in rows[0]]
    head = " | ".join(f"{lab} s (nnc + emit + TVM)" for lab in labels)
    out = [f"| model | {head} |", "|---|" + "---:|" * len(labels)]
    for r in rows:
        cells = []
        for lab in labels:
            v = r[lab]
            if "error" in v:
                cells.append(f"error: {v['error'][:60]}")
                continue
            st, tv = v["stages"], v["tvm"]
            # older builds: parse_s (TVMScript parsing) and build_s (tvm.compile + export)
            tvm_s = tv.get("build_s", 0.0) + tv.get("export_s", 0.0)
            emit_s = st.get("codegen", 0.0) + sum(tv.get(k, 0.0) for k in
                                                  ("parse_s", "emit_s", "print_s"))
            nnc_s = v["total_s"] - emit_s - tvm_s
            cells.append(f"{v['total_s']:.1f} ({nnc_s:.1f} + {emit_s:.1f} + {tvm_s:.1f})")
        out.append(f"| {r['model']} {r['quant']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _relax_cell(r: dict[str, Any], key: str) -> tuple[str, float | None]:
    x = r.get(f"{key}_ms", {}).get("median")
    err = r.get(f"{key}_error", "")
    return (f"{x:.3f}" if x else (err if " > " in err else f"failed ({err[:60]})")), x


def markdown(rows: list[dict[str, Any]]) -> str:
    tbaa = all("nnc_tvm_tbaa_ms" in r for r in rows)
    tuned = any("relax_tuned_ms" in r or "relax_tuned_error" in r for r in rows)
    out = ["| model | nnc→TVM ms | nnc host C ms | TVM Relax (untuned) ms | "
           + ("Relax tuned ms (tasks, trials, tune s) | " if tuned else "")
           + "onnxruntime ms | nnc→TVM / nnc C | nnc→TVM / Relax | "
           + ("nnc→TVM / Relax tuned | " if tuned else "") + "nnc→TVM compile s |"
           + (" TBAA on ms (matches ort) |" if tbaa else ""),
           "|---|" + "---:|" * (7 + 2 * tuned + tbaa)]
    for r in rows:
        t, c, o = r["nnc_tvm_ms"]["median"], r["nnc_c_ms"]["median"], r["ort_ms"]["median"]
        relax, x = _relax_cell(r, "relax")
        cells = [r["model"], f"{t:.3f}", f"{c:.3f}", relax]
        if tuned:
            cell, y = _relax_cell(r, "relax_tuned")
            if "relax_tuned_tune_s" in r:
                cell += (f" ({r['relax_tuned_tasks']}, {r['relax_tuned_trials']}, "
                         f"{r['relax_tuned_tune_s']:.0f})")
                if r.get("relax_tuned_matches_ort") is False:
                    cell += " wrong outputs"
            cells.append(cell)
        cells += [f"{o:.3f}", f"{t / c:.2f}x", f"{t / x:.2f}x" if x else "-"]
        if tuned:
            cells.append(f"{t / y:.2f}x" if y else "-")
        cells.append(str(r["nnc_tvm_compile_s"]))
        if tbaa:
            cells.append(f"{r['nnc_tvm_tbaa_ms']['median']:.3f} "
                         f"({r['nnc_tvm_tbaa_matches_ort']})")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def model_names(spec: str) -> list[str]:
    """`--models`: comma-separated names of BENCH_MODELS, or the groups mlperf, light, all."""
    mlperf = [n for n in BENCH_MODELS if n not in LIGHT]
    groups = {"mlperf": mlperf, "light": list(LIGHT), "all": [*mlperf, *LIGHT]}
    names = [m for n in spec.split(",") if n for m in groups.get(n, [n])]
    unknown = sorted(set(names) - set(BENCH_MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {sorted(BENCH_MODELS)} "
                         "or mlperf, light, all")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_tvm")
    p.add_argument("--models", default="all",
                   help="comma-separated names, or mlperf / light / all")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeat", type=int, default=100)
    p.add_argument("--light-repeat", type=int, default=10,
                   help="runs timed for the light models (squeezenet, shufflenet, resnet50)")
    p.add_argument("--relax-timeout", type=float, default=300.0,
                   help="seconds before TVM's Relax build + runs of one model are given up")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--compile-times", action="store_true")
    p.add_argument("--tbaa", action="store_true",
                   help="also build each model with LLVM's type-based alias analysis on")
    p.add_argument("--tuned-relax", action="store_true",
                   help="also build each model with TVM's MetaSchedule-tuned Relax pipeline")
    p.add_argument("--trials", type=int, default=200,
                   help="--tuned-relax: candidates per model, all tasks together (per task: "
                   "a multiple of 8, at least 8)")
    p.add_argument("--tuned-timeout", type=float, default=1800.0,
                   help="--tuned-relax: seconds before one model's tuning + build + runs are "
                   "given up")
    p.add_argument("--tuning-dir", type=Path, default=None,
                   help="--tuned-relax: keep the MetaSchedule databases in DIR/<model>")
    p.add_argument("--baseline", type=Path, default=None)
    p.add_argument("--quant", default="fp32,int8", help="--compile-times: fp32, int8 or both")
    args = p.parse_args(argv)
    if args.compile_times:
        # int8_differential's models (MLPerf Tiny + the zoo); "all" is the four MLPerf ones here
        mlperf = [n for n in BENCH_MODELS if n not in LIGHT]
        names = [m for n in args.models.split(",") if n
                 for m in ({"all": mlperf, "mlperf": mlperf}.get(n, [n]))]
        with tempfile.TemporaryDirectory(prefix="nnc-compile-tvm-") as tmp:
            crows = compile_times(names, args.baseline, Path(tmp),
                                  tuple(args.quant.split(",")))
        print(compile_markdown(crows))
        path = args.json or DEFAULT_JSON.with_name("compile_tvm.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": crows}, indent=1) + "\n")
        print(f"written to {path}", file=sys.stderr)
        return 0
    try:
        names = model_names(args.models)
    except ValueError as e:
        p.error(str(e))
    args.json = args.json or DEFAULT_JSON
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnc-bench-tvm-") as tmp:
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            light = name in LIGHT
            repeat = args.light_repeat if light else args.repeat
            warmup = min(args.warmup, 2) if light else args.warmup
            tuned = None
            if args.tuned_relax:
                tuned = (args.trials, (args.tuning_dir or Path(tmp) / "tuning") / name,
                         args.tuned_timeout)
            rows.append(bench_model(name, warmup, repeat, Path(tmp), args.tbaa,
                                    args.relax_timeout, tuned))
            rows[-1]["repeat"] = repeat
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    import tvm

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                     "tvm": tvm.__version__, "threads": 1, "rows": rows},
                                    indent=1) + "\n")
    print(f"written to {args.json}", file=sys.stderr)
    return 0 if all(r["nnc_tvm_matches_ort"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
