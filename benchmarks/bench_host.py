"""Host latency: nnc's generated C against onnxruntime, one thread each, same inputs, same run.

    python -m benchmarks.bench_host [--models kws,ic] [--repeat 200] [--json out.json]
                                    [--cc gcc,clang-15] [--drop pad-depthwise-rows]
                                    [--tuning-cache FILE]

For each model: nnc compile time split into graph (import + graph passes), codegen and C compiler;
nnc latency is the median of `repeat` runs of the generated `bench` executable after `warmup`
runs (timed in C, no Python in the loop); onnxruntime latency is the median of as many
`InferenceSession.run` calls (timed in Python, so it includes a few microseconds of call
overhead), with `intra_op_num_threads = inter_op_num_threads = 1`. Slow models get fewer runs
(see --budget). The outputs of both are compared on the same input. Prints a markdown table and
writes JSON. `--cc` builds each model with each listed host C compiler in turn (each row
with its own onnxruntime timing, taken right before), default: nnc's choice (NNC_CC, else the
newest clang, else gcc). `--drop PASS` adds, for each model and compiler, a build without that
pass of the default pipeline (rows marked "-PASS"), timed in the same run. `--tuning-cache FILE`
(from `nnc tune --target host`) adds, for each model and compiler, a build with the cache's
schedules (rows marked "+tuned"; the other rows then use no cache at all), timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.models import MODELS, load_light, model_stats, sample_input

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "bench_host.json"
LIGHT = ("squeezenet", "shufflenet", "resnet50")


def _light(name: str) -> Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    def load() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        model, feeds, _ = load_light(name)
        return model, feeds

    return load


def _mlperf(name: str) -> Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    def load() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        model = MODELS[name]()
        return model, sample_input(model)

    return load


BENCH_MODELS: dict[str, Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]] = {
    **{name: _mlperf(name) for name in MODELS},
    **{name: _light(name) for name in LIGHT},
}


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def time_ort(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], warmup: int,
             repeat: int) -> dict[str, float]:
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def bench_model(name: str, warmup: int, repeat: int, workdir: Path,
                opt_level: int | None, budget_s: float = 10.0,
                cc: str | None = None, drop: str | None = None,
                tuning_cache: Path | bool | None = None) -> dict[str, Any]:
    import nnc
    from nnc.backends.target import host_target
    from nnc.compiler.pipeline import PIPELINES

    model, feeds = BENCH_MODELS[name]()
    kwargs: dict[str, Any] = {} if opt_level is None else {"opt_level": opt_level}
    if drop is not None:
        kwargs["pipeline"] = ",".join(p for p in PIPELINES["host"] if p != drop)
    if tuning_cache is not None:
        kwargs["tuning_cache"] = tuning_cache
    tuned = tuning_cache not in (None, False)
    target = host_target() if cc is None else host_target(cc=cc)
    t0 = time.perf_counter()
    compiled = nnc.compile(model, target=target,
                           output_dir=workdir / f"{name}-{target.cc}-{drop}-{tuned}", **kwargs)
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = compiled.run(feeds)
    once = time.perf_counter() - t0
    # Slow models get fewer runs, so a whole benchmark stays within about `budget_s` per side.
    repeat = max(5, min(repeat, int(budget_s / max(once, 1e-6))))
    warmup = min(warmup, max(1, repeat // 10))

    sess = ort_session(model)
    want = sess.run(None, feeds)
    ort_ms = time_ort(sess, feeds, warmup, repeat)
    err = max(float(np.max(np.abs(np.asarray(got[o.name]) - w)))
              for o, w in zip(sess.get_outputs(), want, strict=True))
    result = compiled.benchmark(warmup=warmup, repeat=repeat, inputs=feeds)
    ct = compiled.compile_time_s
    params, macs = model_stats(model) if name in MODELS else (None, compiled.info.get("macs"))
    nnc_ms = result["latency_ms"]
    return {
        "model": (name if drop is None else f"{name} -{drop}") + (" +tuned" if tuned else ""),
        "tuned_kernels": compiled.info.get("tuning", {}).get("tuned_kernels", 0),
        "cc": compiled.info["cc"]["version"] or target.cc,
        "params": params,
        "macs": macs,
        "nnc_ms": {k: round(float(nnc_ms[k]), 5) for k in ("median", "min", "max")},
        "ort_ms": {k: round(v, 5) for k, v in ort_ms.items()},
        "nnc_over_ort": round(float(nnc_ms["median"]) / ort_ms["median"], 3),
        "max_abs_err": err,
        "compile_s": {
            "graph": round(ct.get("import", 0.0) + ct.get("passes", 0.0), 3),
            "codegen": round(ct.get("codegen", 0.0), 3),
            "c_compiler": round(ct.get("c_compiler", 0.0), 3),
            "total": round(wall, 3),
        },
        "arena_bytes": compiled.info.get("arena_bytes"),
        "warmup": warmup,
        "repeat": repeat,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | MACs | nnc ms | ORT ms | nnc/ORT | nnc GMAC/s | max abs err "
        "| compile s: graph / codegen / cc | C compiler |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | failed: {r['error'][:80]} | | | | | | |")
            continue
        macs, med = r["macs"] or 0, r["nnc_ms"]["median"]
        gmacs = macs / (med * 1e6) if med else 0.0
        c = r["compile_s"]
        lines.append(
            f"| {r['model']} | {macs / 1e6:.2f}M | {med:.3f} | {r['ort_ms']['median']:.3f} "
            f"| {r['nnc_over_ort']:.2f}x | {gmacs:.2f} | {r['max_abs_err']:.1e} "
            f"| {c['graph']:.2f} / {c['codegen']:.2f} / {c['c_compiler']:.2f} | {r['cc']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_host", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(BENCH_MODELS),
                   help=f"comma-separated subset of {','.join(BENCH_MODELS)}")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--opt-level", type=int, default=None,
                   help="C optimisation level (default: nnc's)")
    p.add_argument("--budget", type=float, default=10.0,
                   help="seconds of timed runs per model and runtime (fewer repeats if slow)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    p.add_argument("--drop", default=None,
                   help="also build each model without this pass of the default pipeline")
    p.add_argument("--cc", default="",
                   help="comma-separated host C compilers to build each model with, in turn "
                        "(default: nnc's choice)")
    p.add_argument("--tuning-cache", type=Path, default=None,
                   help="also build each model with this tuning cache (`nnc tune --target "
                        "host`); the other builds then use none")
    args = p.parse_args(argv)

    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(BENCH_MODELS))
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {sorted(BENCH_MODELS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnc-bench-") as tmp:
        for name in names:
            for cc in [c for c in args.cc.split(",") if c] or [None]:
                caches: list[Path | bool | None] = (
                    [False, args.tuning_cache] if args.tuning_cache else [None])
                for drop, tc in [(d, t) for d in [None] + ([args.drop] if args.drop else [])
                                 for t in caches]:
                    try:
                        rows.append(bench_model(name, args.warmup, args.repeat, Path(tmp),
                                                args.opt_level, args.budget, cc, drop, tc))
                    except Exception as e:  # one failing model must not hide the others
                        rows.append({"model": name, "cc": cc,
                                     "error": f"{type(e).__name__}: {e}".splitlines()[0]})
                    print(f"{name} ({cc or 'default'}{f', -{drop}' if drop else ''}): done",
                          file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version(), "onnxruntime": ort.__version__,
            "warmup": args.warmup, "repeat": args.repeat}
    args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"written to {args.json}", file=sys.stderr)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
