"""Host fp32: nnc on N threads against nnc on 1 thread, same model, same run.

    python -m benchmarks.bench_threads [--models resnet50] [--threads 2] [--rounds 7]

Each model is compiled twice (threads=1, threads=N), the outputs are compared on the same
input (they must be bit-identical: the parallel loops leave every reduction serial), then the
two `bench` executables take turns: each round times `--repeat` runs of one, then of the other
(C-side timing, no Python in the loop), so a busy machine slows both alike. The figure is the
median over rounds of each round's median; the speedup is 1-thread median / N-thread median.
The load average before and after is recorded: the cores may be shared. Prints a markdown table
and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_host import BENCH_MODELS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "bench_threads.json"


def bench_model(name: str, threads: int, rounds: int, repeat: int, workdir: Path
                ) -> dict[str, Any]:
    import nnc

    model, feeds = BENCH_MODELS[name]()
    one = nnc.compile(model, target="host", output_dir=workdir / f"{name}-t1")
    many = nnc.compile(model, target="host", output_dir=workdir / f"{name}-t{threads}",
                       threads=threads)
    y1, yn = one.run(feeds), many.run(feeds)
    identical = all(np.array_equal(y1[k], yn[k]) for k in y1)
    max_diff = max(float(np.max(np.abs(y1[k].astype(np.float64) - yn[k]))) for k in y1)
    times: dict[int, list[float]] = {1: [], threads: []}
    for r in range(rounds):
        order = (one, many) if r % 2 == 0 else (many, one)  # neither always goes first
        for m in order:
            res = m.benchmark(warmup=1, repeat=repeat, inputs=feeds)
            times[m.info["threads"]].append(float(res["latency_ms"]["median"]))
        print(f"{name}: round {r + 1}/{rounds}: 1 thread {times[1][-1]:.1f} ms, {threads} "
              f"threads {times[threads][-1]:.1f} ms", file=sys.stderr, flush=True)
    med1, medn = statistics.median(times[1]), statistics.median(times[threads])
    return {
        "model": name, "threads": threads, "macs": many.info["macs"],
        "parallel_kernels": many.info["parallel_kernels"], "kernels": many.info["num_kernels"],
        "ms_1_thread": round(med1, 3), f"ms_{threads}_threads": round(medn, 3),
        "speedup": round(med1 / medn, 3), "outputs_identical": identical,
        "max_abs_diff": max_diff, "rounds_ms": {str(k): v for k, v in times.items()},
        "repeat": repeat,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | parallel kernels | 1 thread ms | N threads ms | speedup | outputs |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error'][:80]} | | | | |")
            continue
        n = r["threads"]
        same = "bit-identical" if r["outputs_identical"] else f"differ {r['max_abs_diff']:.1e}"
        lines.append(f"| {r['model']} | {r['parallel_kernels']}/{r['kernels']} "
                     f"| {r['ms_1_thread']:.1f} | {r[f'ms_{n}_threads']:.1f} ({n}) "
                     f"| {r['speedup']:.2f}x | {same} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_threads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet50",
                   help=f"comma-separated subset of {','.join(BENCH_MODELS)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeat", type=int, default=5, help="timed runs per round and side")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(BENCH_MODELS))
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {sorted(BENCH_MODELS)}")
    if args.threads < 2:
        p.error("--threads must be at least 2 (it is compared with 1 thread)")
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnc-bench-threads-") as tmp:
        for name in names:
            try:
                rows.append(bench_model(name, args.threads, args.rounds, args.repeat, Path(tmp)))
            except Exception as e:  # one failing model must not hide the others' figures
                rows.append({"model": name, "error": f"{type(e).__name__}: {e}".splitlines()[0]})
    load_after = os.getloadavg()
    print(markdown(rows))
    print(f"\n{os.cpu_count()} CPUs; load average (1/5/15 min) before "
          f"{'/'.join(f'{x:.2f}' for x in load_before)}, after "
          f"{'/'.join(f'{x:.2f}' for x in load_after)}")
    meta = {"machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after,
            "rounds": args.rounds, "repeat": args.repeat}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"written to {args.json}", file=sys.stderr)
    return 0 if all("error" not in r and r["outputs_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
