"""Per-kernel comparison: nnc OpenCL (profiling events) against nnc host C (per-layer clock),
same model, same run, same input; prints the kernels where OpenCL loses most.

    python -m benchmarks.opencl_layers [--model resnet50] [--threads 2] [--repeat 10]
        [--rounds 3] [--device pocl] [--top 15] [--json out.json]

OpenCL: each kernel's start->end time from profiling events (median over `--repeat` profiled
runs; `OpenCLModel.benchmark`). Host C: the model compiled with `threads=N` (default 2: PoCL
uses every core, the issue compares both on 2 threads), its library rebuilt in a copy of the
build folder with the per-layer hooks of model.c (`NNC_LAYER_BEGIN/END`, here a monotonic clock
around every kernel call, summed per layer into `nnc_layer_us`), run from Python `--repeat`
times; the median per layer. `--rounds` rounds alternate the two sides; every figure is the
best round's median (a shared machine disturbs some rounds). Both builds come from the same
loop module, so kernel i is layer i on both sides (checked by name). Prints the totals, then
the top kernels by absolute gap (OpenCL - host, where the time goes) and by ratio (OpenCL /
host, among kernels of at least 1% of the host total).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np

import nnc
from benchmarks.models import LIGHT_MODELS, MODELS, load_light, sample_input
from nnc.backends.c.run import HostModel

MAX_LAYERS = 4096
CLOCK_HEADER = f"""\
/* per-layer clock for benchmarks/opencl_layers.py: -include'd into the host model's sources */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 199309L
#endif
#include <time.h>
__attribute__((weak)) double nnc_layer_us[{MAX_LAYERS}];
__attribute__((weak)) double nnc_layer_t0;
static inline double nnc_layer_now(void)
{{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}}
#define NNC_LAYER_BEGIN(i) (nnc_layer_t0 = nnc_layer_now())
#define NNC_LAYER_END(i) (nnc_layer_us[(i)] += nnc_layer_now() - nnc_layer_t0)
"""


def clocked_copy(host_dir: Path, dest: Path) -> Path:
    """A copy of the host build folder whose libmodel.so times every layer (`nnc_layer_us`)."""
    shutil.copytree(host_dir, dest)
    (dest / "nnc_layer_clock.h").write_text(CLOCK_HEADER)
    make = (dest / "Makefile").read_text()
    m = re.search(r"^CFLAGS \?= (.*)$", make, re.M)
    if m is None:
        raise SystemExit(f"{host_dir}/Makefile has no CFLAGS line")
    (dest / "libmodel.so").unlink()
    subprocess.run(["make", "-s", "libmodel.so", f"CFLAGS={m.group(1)} -include nnc_layer_clock.h"],
                   cwd=dest, check=True)
    return dest


def host_layers(model: HostModel, feeds: dict[str, np.ndarray], warmup: int, repeat: int
                ) -> tuple[list[str], list[float], float]:
    """(layer names, median us per layer, median sum ms) of the clocked host build."""
    n = len(model.layers)
    if n > MAX_LAYERS:
        raise SystemExit(f"{n} layers: more than the clock's {MAX_LAYERS}")
    acc = (ctypes.c_double * MAX_LAYERS).in_dll(model._lib, "nnc_layer_us")
    for _ in range(warmup):
        model.run(feeds)
    runs = []
    for _ in range(repeat):
        ctypes.memset(acc, 0, ctypes.sizeof(acc))
        model.run(feeds)
        runs.append(list(acc[:n]))
    per_layer = [statistics.median(r[i] for r in runs) for i in range(n)]
    total = statistics.median(sum(r) for r in runs) / 1e3
    return [lay.op_name for lay in model.layers], per_layer, total


def compare(name: str, threads: int, repeat: int, device: str | None, tmp: Path,
            rounds: int = 3) -> dict:
    if name in LIGHT_MODELS:
        model, feeds, _ = load_light(name)
    else:
        model = MODELS[name]()
        feeds = sample_input(model)
    print(f"{name}: compiling", flush=True)
    cl = nnc.compile(model, target="opencl", output_dir=tmp / "cl", device=device)
    host = nnc.compile(model, target="host", output_dir=tmp / "c", threads=threads)
    clocked = clocked_copy(tmp / "c", tmp / "c_clocked")
    print(f"{name}: measuring", flush=True)
    timed = HostModel(clocked)
    # rounds alternate the two sides; each figure is the best round's median (the round least
    # disturbed by other processes: the machine this was written on is shared)
    cl_us: list[float] | None = None
    host_us: list[float] | None = None
    cl_ms = cl_kernels = host_ms = host_sum = float("inf")
    for _ in range(rounds):
        rcl = cl.benchmark(warmup=3, repeat=repeat, inputs=feeds)
        names, layer_us, layer_sum = host_layers(timed, feeds, 3, repeat)
        if [lay["name"] for lay in rcl["layers"]] != names:
            raise SystemExit("the OpenCL kernels and the host layers differ; cannot compare")
        med = [lay["median_us"] for lay in rcl["layers"]]
        cl_us = med if cl_us is None else [min(a, b) for a, b in zip(cl_us, med, strict=True)]
        host_us = layer_us if host_us is None else [min(a, b) for a, b in
                                                    zip(host_us, layer_us, strict=True)]
        cl_ms = min(cl_ms, rcl["latency_ms"]["median"])
        cl_kernels = min(cl_kernels, rcl["kernels_ms"])
        host_sum = min(host_sum, layer_sum)
        host_ms = min(host_ms, host.benchmark(warmup=3, repeat=repeat,
                                              inputs=feeds)["latency_ms"]["median"])
    assert cl_us is not None and host_us is not None
    rows = []
    for i, lay in enumerate(rcl["layers"]):
        rows.append({"index": i, "kernel": lay["kernel"], "name": lay["name"], "op": lay["op"],
                     "macs": lay["macs"], "opencl_us": cl_us[i],
                     "host_us": round(host_us[i], 3)})
    return {"model": name, "threads": threads, "device": rcl["device"], "rounds": rounds,
            "opencl_ms": cl_ms, "opencl_kernels_ms": cl_kernels,
            "host_ms": host_ms, "host_layers_ms": round(host_sum, 4), "layers": rows}


def table(rows: list[dict], title: str) -> str:
    lines = [f"{title}\n", "| # | kernel | op | MMACs | OpenCL us | host C us | OpenCL / C "
             "| gap us |", "|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["opencl_us"] / r["host_us"] if r["host_us"] > 0 else float("inf")
        lines.append(f"| {r['index']} | {r['kernel']} | {r['op']} | {r['macs'] / 1e6:.1f} "
                     f"| {r['opencl_us']:.1f} | {r['host_us']:.1f} | {ratio:.2f}x "
                     f"| {r['opencl_us'] - r['host_us']:.1f} |")
    return "\n".join(lines)


def report(res: dict, top: int) -> str:
    rows = res["layers"]
    host_total = sum(r["host_us"] for r in rows)
    by_gap = sorted(rows, key=lambda r: r["host_us"] - r["opencl_us"])[:top]
    big = [r for r in rows if r["host_us"] >= 0.01 * host_total]
    by_ratio = sorted(big, key=lambda r: -r["opencl_us"] / max(r["host_us"], 1e-9))[:top]
    ops: dict[str, list[float]] = {}
    for r in rows:
        kind = r["op"].split("(")[-1].split(",")[0].rstrip(")")
        ops.setdefault(kind, [0.0, 0.0])
        ops[kind][0] += r["opencl_us"]
        ops[kind][1] += r["host_us"]
    by_op = ["| first op | OpenCL ms | host C ms | OpenCL / C |", "|---|---:|---:|---:|"]
    for kind, (a, b) in sorted(ops.items(), key=lambda kv: -kv[1][0]):
        by_op.append(f"| {kind} | {a / 1e3:.2f} | {b / 1e3:.2f} | {a / max(b, 1e-9):.2f}x |")
    head = (f"{res['model']} on {res['device']}; host C {res['threads']} thread(s)\n"
            f"whole run: OpenCL {res['opencl_ms']:.2f} ms (kernels {res['opencl_kernels_ms']:.2f}"
            f"), host C {res['host_ms']:.2f} ms (layers {res['host_layers_ms']:.2f}, clocked "
            f"build): {res['opencl_ms'] / res['host_ms']:.2f}x\n")
    return "\n\n".join([head, "\n".join(by_op),
                        table(by_gap, f"top {top} kernels by gap (OpenCL - host C)"),
                        table(by_ratio, f"top {top} kernels by OpenCL / host C (>= 1% of "
                                        "the host's time)")])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads of the host C build (PoCL uses every core)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds alternating OpenCL and host C; the best round's median counts")
    ap.add_argument("--device", default=None)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", help="also write the result as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nnc-cl-layers-") as tmp:
        res = compare(args.model, args.threads, args.repeat, args.device, Path(tmp),
                      args.rounds)
    print(report(res, args.top))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
