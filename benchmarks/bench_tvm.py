"""Latency, one thread each, same inputs, same run: nnc -> TVM module (`--target tvm`) against
nnc's host C, TVM's own Relax ONNX frontend (untuned: `tvm.compile` of the imported module) and
onnxruntime.

    python -m benchmarks.bench_tvm [--models kws,ic,vww,ad] [--repeat 100] [--json out.json]

Timing: the two TVM modules with TVM's `time_evaluator` (C++, no Python in the loop), nnc host C
with its `bench` executable (C), onnxruntime with `InferenceSession.run` in Python (a few
microseconds of call overhead), each the median of `repeat` runs after `warmup`. One thread:
TVM_NUM_THREADS=1 (set before TVM is imported), onnxruntime intra/inter-op threads 1; nnc's
parallel loops run serially. Every output is compared with onnxruntime's (rtol 1e-3, atol 1e-4).
Prints a markdown table and writes JSON.
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

from benchmarks.bench_host import BENCH_MODELS, ort_session, time_ort  # noqa: E402

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


def _outputs(value: Any) -> list[np.ndarray]:
    if hasattr(value, "numpy"):
        return [value.numpy()]
    return [v.numpy() for v in value]


def time_evaluator(run: Any, repeat: int) -> dict[str, float]:
    times = [t * 1e3 for t in run.results]
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def bench_model(name: str, warmup: int, repeat: int, workdir: Path) -> dict[str, Any]:
    import tvm

    import nnc

    model, feeds = BENCH_MODELS[name]()
    sess = ort_session(model)
    ref = sess.run(None, feeds)
    row: dict[str, Any] = {"model": name}

    t0 = time.perf_counter()
    m_tvm = nnc.compile(model, target="tvm", output_dir=workdir / f"{name}_tvm")
    row["nnc_tvm_compile_s"] = round(time.perf_counter() - t0, 2)
    got = m_tvm.run(feeds)
    row["nnc_tvm_matches_ort"] = all(np.allclose(g, r, rtol=RTOL, atol=ATOL)
                                     for g, r in zip(got.values(), ref, strict=True))
    row["nnc_tvm_ms"] = m_tvm.benchmark(warmup, repeat, feeds)["latency_ms"]

    m_c = nnc.compile(model, target="host", output_dir=workdir / f"{name}_host")
    got = m_c.run(feeds)
    row["nnc_c_matches_ort"] = all(np.allclose(g, r, rtol=RTOL, atol=ATOL)
                                   for g, r in zip(got.values(), ref, strict=True))
    row["nnc_c_ms"] = m_c.benchmark(warmup, repeat, feeds)["latency_ms"]

    try:
        vm, args, build_s = relax_build(model, feeds)
        row["relax_compile_s"] = round(build_s, 2)
        outs = _outputs(vm["main"](*args))
        row["relax_matches_ort"] = all(np.allclose(g, r, rtol=RTOL, atol=ATOL)
                                       for g, r in zip(outs, ref, strict=True))
        for _ in range(warmup):
            vm["main"](*args)
        timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat, min_repeat_ms=0)
        row["relax_ms"] = time_evaluator(timer(*args), repeat)
    except Exception as e:  # the frontend's failure is a result too
        row["relax_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
    row["ort_ms"] = time_ort(sess, feeds, warmup, repeat)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| model | nnc→TVM ms | nnc host C ms | TVM Relax (untuned) ms | onnxruntime ms | "
           "nnc→TVM / nnc C | nnc→TVM / Relax | nnc→TVM compile s |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, c, o = r["nnc_tvm_ms"]["median"], r["nnc_c_ms"]["median"], r["ort_ms"]["median"]
        x = r.get("relax_ms", {}).get("median")
        relax = f"{x:.3f}" if x else f"failed ({r.get('relax_error', '')[:60]})"
        out.append(f"| {r['model']} | {t:.3f} | {c:.3f} | {relax} | {o:.3f} | {t / c:.2f} | "
                   f"{f'{t / x:.2f}' if x else '-'} | {r['nnc_tvm_compile_s']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_tvm")
    p.add_argument("--models", default="kws,vww,ic,ad")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeat", type=int, default=100)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnc-bench-tvm-") as tmp:
        for name in args.models.split(","):
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append(bench_model(name, args.warmup, args.repeat, Path(tmp)))
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
