"""OpenCL latency: nnc OpenCL (PoCL's CPU device by default) vs nnc host C vs onnxruntime, same
run, same input.

    python -m benchmarks.bench_opencl [--models kws,vww,ic,ad,squeezenet,shufflenet,resnet50]
        [--repeat 50] [--device pocl] [--threads 1] [--untiled] [--json out.json]

nnc OpenCL: median whole-run wall time (inputs written, every kernel enqueued, outputs read;
timed in C by the runtime), plus the summed start->end kernel times from profiling events and
the program build time at compile (source build). nnc host C: median of the `bench`
executable, compiled with `threads=N` (`--threads`, default 1). onnxruntime: median of
`InferenceSession.run` with N intra-op threads. PoCL uses all the cores it is given, so the
OpenCL figure is multi-threaded; `--threads 2` on 2 cores is the issue's like-for-like bar.
The max abs difference of the OpenCL output against onnxruntime is reported too. Prints a
markdown table. `--untiled` also builds the OpenCL model without the host's register tiles
(`passes/default_schedule.py` REGISTER_TILE_KINDS less "opencl": the scalar schedules) and
times it in the same run, for a before/after of the tiles.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import nnc
import nnc.passes.default_schedule as default_schedule
from benchmarks.models import LIGHT_MODELS, MODELS, load_light, sample_input


def ort_latency(model, feeds, repeat: int, threads: int = 1) -> tuple[float, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    out = sess.run(None, feeds)[0]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def compile_untiled(model, out: Path, device: str | None):
    """The OpenCL build with the scalar (pre-register-tile) schedules."""
    kinds = default_schedule.REGISTER_TILE_KINDS
    default_schedule.REGISTER_TILE_KINDS = kinds - {"opencl"}
    try:
        return nnc.compile(model, target="opencl", output_dir=out, device=device)
    finally:
        default_schedule.REGISTER_TILE_KINDS = kinds


def bench(name: str, repeat: int, device: str | None, tmp: Path, threads: int = 1,
          untiled: bool = False) -> dict:
    if name in LIGHT_MODELS:
        model, feeds, _ = load_light(name)
    else:
        model = MODELS[name]()
        feeds = sample_input(model)
    print(f"{name}: compiling", flush=True)
    cl = nnc.compile(model, target="opencl", output_dir=tmp / f"{name}_cl", device=device)
    host = nnc.compile(model, target="host", output_dir=tmp / f"{name}_c", threads=threads)
    flat = compile_untiled(model, tmp / f"{name}_cl_untiled", device) if untiled else None
    print(f"{name}: measuring", flush=True)
    extra = {}
    if flat is not None:
        extra["opencl_untiled_ms"] = flat.benchmark(warmup=5, repeat=repeat,
                                                    inputs=feeds)["latency_ms"]["median"]
    rcl = cl.benchmark(warmup=5, repeat=repeat, inputs=feeds)
    rc = host.benchmark(warmup=5, repeat=repeat, inputs=feeds)
    ort_ms, want = ort_latency(model, feeds, repeat, threads)
    (got,) = cl.run(feeds).values()
    return {
        "model": name, "kernels": cl.info["num_kernels"], "macs": cl.info["macs"],
        "opencl_ms": rcl["latency_ms"]["median"], "opencl_kernels_ms": rcl["kernels_ms"],
        "opencl_build_ms": cl.info["opencl"].get("build_ms"), "device": rcl["device"],
        "host_c_ms": rc["latency_ms"]["median"], "onnxruntime_ms": ort_ms, "threads": threads,
        "max_abs_diff_vs_ort": float(np.abs(got - want).max()), **extra,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="kws,vww,ic,ad")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads of the host C build and of onnxruntime (PoCL uses every core)")
    ap.add_argument("--untiled", action="store_true",
                    help="also time the OpenCL build without the host's register tiles")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnc-bench-cl-") as tmp:
        for name in args.models.split(","):
            rows.append(bench(name, args.repeat, args.device, Path(tmp), args.threads,
                              args.untiled))
            print(json.dumps(rows[-1]), flush=True)  # each row as it lands
    print(f"device: {rows[0]['device'] if rows else '-'}; host C and onnxruntime: "
          f"{args.threads} thread(s)\n")
    untiled = "| OpenCL untiled ms " if args.untiled else ""
    print(f"| model | kernels | MACs {untiled}| nnc OpenCL ms (kernels ms) | nnc host C ms "
          "| onnxruntime ms | OpenCL / C | program build ms | max abs diff vs ORT |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.untiled else ""))
    for r in rows:
        flat = f"| {r['opencl_untiled_ms']:.3f} " if args.untiled else ""
        print(f"| {r['model']} | {r['kernels']} | {r['macs']:,} {flat}| {r['opencl_ms']:.3f} "
              f"({r['opencl_kernels_ms']:.3f}) | {r['host_c_ms']:.3f} | {r['onnxruntime_ms']:.3f} "
              f"| {r['opencl_ms'] / r['host_c_ms']:.2f}x | {r['opencl_build_ms']} "
              f"| {r['max_abs_diff_vs_ort']:.2e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
