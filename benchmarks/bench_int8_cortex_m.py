"""int8 on Cortex-M: the four MLPerf Tiny models quantized and run on the emulated boards, with
CMSIS-NN kernels and with nnc's generated kernels, next to the float32 build.

    python -m benchmarks.bench_int8_cortex_m [--models kws,ic] [--targets cortex-m7,cortex-m55]
        [--samples 20] [--cmsis-nn PATH ...] [--no-portable] [--no-fp32] [--json out.json]

For each model and target: instructions executed in QEMU (`-icount`; instructions, not cycles),
instructions per MAC, the activation arena next to the int8 floor (REFERENCE.md §4: the most
bytes live at once, whole tensors), RAM (arena + the stack measured on the board), flash; and
whether each CMSIS-NN build gives outputs bit-identical with the generated kernels.

CMSIS-NN builds: nnc's portable subset (runtime_c/cmsis_nn: plain C, slower than the real
library's DSP/Helium kernels) and one row per real checkout given with `--cmsis-nn PATH`
(repeatable; `$CMSIS_NN_PATH` counts as one), labelled with its `git describe`. Calibration:
`--samples` random-normal inputs (the models have random weights). Prints a markdown table and
writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

import nnc
from benchmarks.models import MODELS, sample_input

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "bench_int8_cortex_m.json"
TARGETS = ("cortex-m4", "cortex-m7", "cortex-m55")
INT8_FLOOR = {"kws": 16_000, "vww": 55_296, "ic": 49_152, "ad": 768}  # REFERENCE.md §4
GENERATED = "int8 generated"


def _calibration(model: Any, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return {inp.name: rng.standard_normal([n, *shape]).astype(np.float32)}


def checkout_label(path: str) -> str:
    """`git describe` of a CMSIS-NN checkout (e.g. v7.0.0-43-g99f736a6), else its folder name."""
    try:
        r = subprocess.run(["git", "-C", path, "describe", "--tags", "--always"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        r = None
    return r.stdout.strip() if r is not None and r.returncode == 0 else Path(path).name


def variants(checkouts: list[str], portable: bool = True,
             fp32: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """(name, nnc.compile options) of each build of a model."""
    out: list[tuple[str, dict[str, Any]]] = []
    if fp32:
        out.append(("fp32", {}))
    out.append((GENERATED, {"kernels": "generated"}))
    if portable:
        out.append(("int8 cmsis-nn portable", {"kernels": "cmsis-nn"}))
    for path in checkouts:
        out.append((f"int8 cmsis-nn {checkout_label(path)}",
                    {"kernels": "cmsis-nn", "cmsis_nn": path}))
    return out


def measure(name: str, target: str, samples: int,
            builds: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    model = MODELS[name]()
    feeds = sample_input(model)
    cal = _calibration(model, samples)
    rows, outs = [], {}
    for variant, options in builds:
        kw = dict(options)
        if variant != "fp32":
            kw.update(quantize="int8", calibration=cal)
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
            "stack_bytes": bench["stack_bytes"], "stack_source": bench["stack_source"],
            "stack_estimate_bytes": bench["stack_estimate_bytes"],
            "flash_bytes": bench["flash_bytes"], "weight_bytes": compiled.info["weight_bytes"],
            "compile_s": round(wall, 2),
            "layers": [{k: lay[k] for k in ("name", "op", "instructions", "macs")}
                       for lay in bench["layers"]],
        })
    for r in rows:
        if r["variant"] != "fp32":
            r["arena_vs_int8_floor"] = round(r["arena_bytes"] / INT8_FLOOR[name], 3)
        if r["variant"].startswith("int8 cmsis-nn"):
            r["bit_identical_cmsis_vs_generated"] = all(
                np.array_equal(outs[GENERATED][k], outs[r["variant"]][k]) for k in outs[GENERATED])
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | target | kernels | instructions | instr/MAC | arena B (× int8 floor) | "
             "RAM B (stack) | flash B | = generated |",
             "|---|---|---|---:|---:|---:|---:|---:|:-:|"]
    for r in rows:
        floor = f" ({r['arena_vs_int8_floor']:.2f}×)" if "arena_vs_int8_floor" in r else ""
        same = {True: "yes", False: "NO"}.get(r.get("bit_identical_cmsis_vs_generated"), "")
        lines.append(
            f"| {r['model']} | {r['target']} | {r['variant']} | {r['instructions']:,} | "
            f"{r['instructions_per_mac']:.2f} | {r['arena_bytes']:,}{floor} | "
            f"{r['ram_bytes']:,} ({r['stack_bytes']:,}) | {r['flash_bytes']:,} | {same} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="kws,vww,ic,ad")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--cmsis-nn", action="append", default=[], metavar="PATH",
                   help="a CMSIS-NN checkout to build against (repeatable; $CMSIS_NN_PATH too)")
    p.add_argument("--no-portable", action="store_true",
                   help="leave out the builds against nnc's portable CMSIS-NN subset")
    p.add_argument("--no-fp32", action="store_true", help="leave out the float32 builds")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    checkouts = list(args.cmsis_nn)
    env = os.environ.pop("CMSIS_NN_PATH", None)  # the portable rows must not pick it up
    if env and env not in checkouts:
        checkouts.append(env)
    builds = variants(checkouts, portable=not args.no_portable, fp32=not args.no_fp32)
    rows = [r for m in args.models.split(",") for t in args.targets.split(",")
            for r in measure(m, t, args.samples, builds)]
    print(table(rows))
    print("\nInstructions are executed instructions in QEMU (emulated), not cycles. RAM = arena + "
          "the stack measured on the board. CMSIS-NN checkouts: "
          + (", ".join(f"{checkout_label(c)} ({c})" for c in checkouts) or "none"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
