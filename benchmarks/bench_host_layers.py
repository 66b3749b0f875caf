"""Host latency per layer: each generated kernel of a model against onnxruntime's nodes.

    python -m benchmarks.bench_host_layers --models kws,vww,ic [--repeat 200] [--top 12]
                                           [--drop PASS]

nnc: the model's C built again with the `NNC_LAYER_BEGIN/END` hooks defined as clock reads
around every kernel call (`CLOCK_MONOTONIC`), run `repeat` times after `warmup` runs in one
process; per kernel the minimum and the median over the runs (a kernel takes microseconds: the
minimum is the figure least disturbed by other processes). onnxruntime: its profiler's
per-node kernel times (whole microseconds) over as many runs, one thread, matched to nnc's
kernels by the ONNX node name: the first node along the kernel's chain of sole consumers that
onnxruntime timed (it names a fused node after its last node); where onnxruntime runs the
chain as several nodes (AD's Gemm, BatchNormalization, Relu) only that first node's time is
shown, so compare the sums. Prints one table per model, the kernels sorted by nnc's median,
and the sums. `--drop PASS` builds without that pass of the host's default pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.bench_host import BENCH_MODELS

DRIVER = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "model.h"
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define SYM(name) CAT(NNC_PREFIX, CAT(_, name))
uint64_t nnc_prof_t0;
uint64_t *nnc_prof_ns;
int nnc_prof_run;
int main(int argc, char **argv)
{
    int warmup = atoi(argv[1]), repeat = atoi(argv[2]);
    int layers = SYM(num_layers), ni = SYM(num_inputs), no = SYM(num_outputs);
    void *ins[64], *outs[64];
    if (SYM(init)() != 0) return 1;
    for (int i = 0; i < ni; ++i) {
        unsigned char *p = malloc((size_t)SYM(inputs)[i].nbytes + 64);
        for (uint64_t k = 0; k < SYM(inputs)[i].nbytes; ++k) p[k] = (unsigned char)(k * 7 % 61);
        if (SYM(inputs)[i].dtype == NNC_FLOAT32)
            for (uint64_t k = 0; k < SYM(inputs)[i].nbytes / 4; ++k)
                ((float *)p)[k] = (float)((k * 7919) % 2001) / 1000.0f - 1.0f;
        ins[i] = p;
    }
    for (int i = 0; i < no; ++i) outs[i] = malloc((size_t)SYM(outputs)[i].nbytes + 64);
    nnc_prof_ns = calloc((size_t)layers * (size_t)(warmup + repeat), sizeof(uint64_t));
    for (nnc_prof_run = 0; nnc_prof_run < warmup + repeat; ++nnc_prof_run)
        if (SYM(run)((const void *const *)ins, outs) != 0) return 1;
    for (int l = 0; l < layers; ++l) {
        printf("%s\t%s\t%s\t%llu", SYM(layers)[l].name, SYM(layers)[l].op_kind,
               SYM(layers)[l].op_name, (unsigned long long)SYM(layers)[l].macs);
        for (int r = warmup; r < warmup + repeat; ++r)
            printf("\t%llu", (unsigned long long)nnc_prof_ns[(size_t)r * layers + l]);
        printf("\n");
    }
    return 0;
}
"""

HOOKS = r"""
#include <stdint.h>
#include <time.h>
extern uint64_t nnc_prof_t0;
extern uint64_t *nnc_prof_ns;
extern int nnc_prof_run;
static inline uint64_t nnc_prof_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}
#define NNC_LAYER_BEGIN(i) (nnc_prof_t0 = nnc_prof_now())
#define NNC_LAYER_END(i) \
    (nnc_prof_ns[(uint64_t)nnc_prof_run * NNC_PROF_LAYERS + (i)] = nnc_prof_now() - nnc_prof_t0)
"""


def nnc_layers(out_dir: Path, info: dict[str, Any], warmup: int,
               repeat: int) -> list[dict[str, Any]]:
    """Build `out_dir`'s model with the profiling hooks and run it: one row per kernel."""
    cc = info["cc"]
    prefix = info.get("prefix", "nnc")
    model_c = (out_dir / "model.c").read_text()
    layers = int(model_c.split(f"const int32_t {prefix}_num_layers = ")[1].split(";")[0])
    with tempfile.TemporaryDirectory(prefix="nnc-prof-") as tmp:
        t = Path(tmp)
        (t / "hooks.h").write_text(f"#define NNC_PROF_LAYERS {max(layers, 1)}\n{HOOKS}")
        (t / "driver.c").write_text(DRIVER)
        srcs = [str(out_dir / s) for s in ("model.c", "weights.c") if (out_dir / s).exists()]
        if len(srcs) > 1 and not (out_dir / "weights.bin").exists():
            # the folder keeps large weights in libmodel.so only: take weights.bin back out
            subprocess.run(["make", "--no-print-directory", "weights.bin"], cwd=out_dir,
                           check=True, capture_output=True, text=True)
        cmd = [cc["command"], *cc["cflags"], "-D_POSIX_C_SOURCE=199309L",
               f"-DNNC_PREFIX={prefix}", "-include", str(t / "hooks.h"), f"-I{out_dir}",
               *srcs, str(t / "driver.c"), "-o", str(t / "prof"), "-lm"]
        subprocess.run(cmd, check=True, cwd=out_dir, capture_output=True, text=True)
        run = subprocess.run([str(t / "prof"), str(warmup), str(repeat)], check=True,
                             capture_output=True, text=True, cwd=out_dir)
    rows = []
    for line in run.stdout.splitlines():
        name, kind, op, macs, *times = line.split("\t")
        ns = [int(v) for v in times]
        rows.append({"kernel": name, "kind": kind, "op": op, "macs": int(macs),
                     "min_ms": min(ns) / 1e6, "median_ms": statistics.median(ns) / 1e6})
    return rows


def ort_nodes(model: onnx.ModelProto, feeds: dict[str, np.ndarray], warmup: int,
              repeat: int) -> dict[str, float]:
    """Node name -> onnxruntime's median kernel time in ms (its profiler, one thread)."""
    with tempfile.TemporaryDirectory(prefix="nnc-ortprof-") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        for _ in range(warmup):
            sess.run(None, feeds)
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(model.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        for _ in range(warmup + repeat):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per.setdefault(e["name"][: -len("_kernel_time")], []).append(e["dur"] / 1e3)
    return {k: statistics.median(v[warmup:] or v) for k, v in per.items()}


def _ort_time(model: onnx.ModelProto, op: str, ort_ms: dict[str, float]) -> float | None:
    """onnxruntime's time for the nnc kernel whose first node is `op`: the first node along
    its chain of sole consumers that onnxruntime timed (it names a fused node after its last
    node, with suffixes such as `_nchwc`)."""
    by_name = {n.name: n for n in model.graph.node}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    node = by_name.get(op)
    for _ in range(8):
        if node is None:
            return None
        for key in (node.name, f"{node.name}_nchwc", f"{node.name}_fused"):
            if key in ort_ms:
                return ort_ms[key]
        nxt = users.get(node.output[0], []) if node.output else []
        node = nxt[0] if len(nxt) == 1 else None
    return None


def profile(name: str, warmup: int, repeat: int, workdir: Path,
            drop: str | None = None) -> dict[str, Any]:
    import nnc
    from nnc.compiler.pipeline import PIPELINES

    model, feeds = BENCH_MODELS[name]()
    out = workdir / name
    kwargs: dict[str, Any] = {}
    if drop is not None:
        kwargs["pipeline"] = ",".join(p for p in PIPELINES["host"] if p != drop)
    compiled = nnc.compile(model, target="host", output_dir=out, **kwargs)
    rows = nnc_layers(out, compiled.info, warmup, repeat)
    ort_ms = ort_nodes(model, feeds, warmup, repeat)
    for r in rows:
        r["ort_ms"] = _ort_time(model, r["op"].split(",")[0].strip(), ort_ms)
    return {"model": name, "layers": rows, "ort_nodes": ort_ms}


def markdown(result: dict[str, Any], top: int) -> str:
    rows = sorted(result["layers"], key=lambda r: -r["median_ms"])
    lines = [f"### {result['model']}", "",
             "| kernel | op | MACs | nnc min ms | nnc median ms | GMAC/s | ORT ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows[:top]:
        g = r["macs"] / (r["median_ms"] * 1e6) if r["median_ms"] and r["macs"] else 0.0
        o = "" if r["ort_ms"] is None else f"{r['ort_ms']:.4f}"
        lines.append(f"| {r['kernel']} | {r['kind']} '{r['op']}' | {r['macs']} "
                     f"| {r['min_ms']:.4f} | {r['median_ms']:.4f} | {g:.1f} | {o} |")
    total = sum(r["median_ms"] for r in rows)
    ort_total = sum(result["ort_nodes"].values())
    lines.append(f"| all {len(rows)} kernels | | | {sum(r['min_ms'] for r in rows):.4f} "
                 f"| {total:.4f} | | {ort_total:.4f} (all nodes) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_host_layers",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="kws,vww,ic")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--top", type=int, default=12, help="kernels shown per model")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--drop", default=None,
                   help="build without this pass of the host's default pipeline")
    args = p.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(BENCH_MODELS))
    if unknown:
        print(f"error: unknown model(s) {unknown}; choose from {sorted(BENCH_MODELS)}",
              file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="nnc-layers-") as tmp:
        for name in names:
            results.append(profile(name, args.warmup, args.repeat, Path(tmp), args.drop))
            print(markdown(results[-1], args.top) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
