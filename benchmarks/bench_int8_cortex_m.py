"""int8 on Cortex-M: the four MLPerf Tiny models quantized and run on the emulated boards, with
CMSIS-NN kernels and with nnc's generated kernels, next to the float32 build.

    python -m benchmarks.bench_int8_cortex_m [--models kws,ic] [--targets cortex-m7,cortex-m55]
                                             [--samples 20] [--json out.json]

For each model and target: instructions executed in QEMU (`-icount`; instructions, not cycles),
instructions per MAC, the activation arena next to the int8 floor (REFERENCE.md §4: the most
bytes live at once, whole tensors), RAM (arena + stack), flash; whether the CMSIS-NN and generated
builds give bit-identical outputs; and the published instruction counts of TFLite-style int8
with the real CMSIS-NN s8 kernels on the emulated M7 (REFERENCE.md §4) for scale.

The CMSIS-NN builds here use nnc's portable CMSIS-NN subset (runtime_c/cmsis_nn: plain C, 3-5x
slower than the real library's DSP/Helium kernels), unless CMSIS_NN_PATH names a checkout.
Calibration: `--samples` random-normal inputs (the models have random weights). Prints a markdown
table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

import nnc
from benchmarks.models import MODELS, sample_input

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "bench_int8_cortex_m.json"
TARGETS = ("cortex-m7", "cortex-m55")
INT8_FLOOR = {"kws": 16_000, "vww": 55_296, "ic": 49_152, "ad": 768}  # REFERENCE.md §4
REAL_CMSIS_M7 = {"kws": 7_760_000, "ic": 29_900_000, "vww": 24_500_000, "ad": 590_000}
VARIANTS = ("fp32", "int8 generated", "int8 cmsis-nn")


def _calibration(model: Any, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return {inp.name: rng.standard_normal([n, *shape]).astype(np.float32)}


def measure(name: str, target: str, samples: int) -> list[dict[str, Any]]:
    model = MODELS[name]()
    feeds = sample_input(model)
    cal = _calibration(model, samples)
    rows, outs = [], {}
    for variant in VARIANTS:
        kw: dict[str, Any] = {}
        if variant != "fp32":
            kw = dict(quantize="int8", calibration=cal, kernels=variant.split()[1])
        t0 = time.perf_counter()
        compiled = nnc.compile(model, target=target, **kw)
        wall = time.perf_counter() - t0
        bench = compiled.benchmark(inputs=feeds)
        outs[variant] = compiled.run(feeds)
        rows.append({
            "model": name, "target": target, "variant": variant,
            "kernel_library": compiled.info.get("kernel_library"),
            "instructions": bench["instructions"],
            "instructions_per_mac": bench["instructions_per_mac"], "macs": bench["macs"],
            "arena_bytes": bench["arena_bytes"], "ram_bytes": bench["ram_bytes"],
            "stack_bytes": bench["stack_bytes"], "flash_bytes": bench["flash_bytes"],
            "weight_bytes": compiled.info["weight_bytes"], "compile_s": round(wall, 2),
        })
    same = all(np.array_equal(outs["int8 generated"][k], outs["int8 cmsis-nn"][k])
               for k in outs["fp32"])
    for r in rows:
        if r["variant"] != "fp32":
            r["bit_identical_cmsis_vs_generated"] = same
            r["arena_vs_int8_floor"] = round(r["arena_bytes"] / INT8_FLOOR[name], 3)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | target | kernels | instructions | instr/MAC | arena B (× int8 floor) | "
             "RAM B | flash B | CMSIS = generated |",
             "|---|---|---|---:|---:|---:|---:|---:|:-:|"]
    for r in rows:
        floor = f" ({r['arena_vs_int8_floor']:.2f}×)" if "arena_vs_int8_floor" in r else ""
        same = {True: "yes", False: "NO"}.get(r.get("bit_identical_cmsis_vs_generated"), "")
        lines.append(
            f"| {r['model']} | {r['target']} | {r['variant']} | {r['instructions']:,} | "
            f"{r['instructions_per_mac']:.2f} | {r['arena_bytes']:,}{floor} | "
            f"{r['ram_bytes']:,} | {r['flash_bytes']:,} | {same} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="kws,vww,ic,ad")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    rows = [r for m in args.models.split(",") for t in args.targets.split(",")
            for r in measure(m, t, args.samples)]
    print(table(rows))
    lib = os.environ.get("CMSIS_NN_PATH") or "nnc's portable CMSIS-NN subset (plain C)"
    print(f"\nCMSIS-NN library: {lib}. Instructions are executed instructions in QEMU "
          "(emulated), not cycles.")
    print("Real CMSIS-NN s8 kernels on the emulated M7 (REFERENCE.md §4): " + ", ".join(
        f"{k} {v / 1e6:.2f}M" for k, v in REAL_CMSIS_M7.items()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
