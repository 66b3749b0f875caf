"""Cortex-M figures: the four MLPerf Tiny models (fp32) on the emulated boards.

    python -m benchmarks.bench_cortex_m [--models kws,ic] [--targets cortex-m7,cortex-m4]
                                        [--json out.json]

For each model and target: instructions executed in QEMU (`-icount`; instructions, not cycles),
instructions per MAC, RAM (activation arena + scratch + stack estimate), the arena next to its
liveness floor, flash (code + const data from arm-none-eabi-size) and compile time. Every run is
also compared with the host target's output. These fp32 figures are the baseline the int8 and
autotuning work must beat. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

import nnc
from benchmarks.models import MODELS, sample_input

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "bench_cortex_m.json"
TARGETS = ("cortex-m7", "cortex-m4", "cortex-m55")


@cache
def _model_and_host_outputs(name: str) -> tuple[Any, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The model, its input and the host target's outputs (compiled once per model)."""
    model = MODELS[name]()
    feeds = sample_input(model)
    return model, feeds, nnc.compile(model, target="host", bench=False).run(feeds)


def measure(name: str, target: str) -> dict[str, Any]:
    model, feeds, host = _model_and_host_outputs(name)
    t0 = time.perf_counter()
    compiled = nnc.compile(model, target=target)
    wall = time.perf_counter() - t0
    bench = compiled.benchmark(inputs=feeds)
    device = compiled.run(feeds)
    err = max(float(np.max(np.abs(device[k] - v))) for k, v in host.items())
    return {
        "model": name, "target": target, "instructions": bench["instructions"],
        "instructions_per_mac": bench["instructions_per_mac"], "macs": bench["macs"],
        "ram_bytes": bench["ram_bytes"], "arena_bytes": bench["arena_bytes"],
        "arena_floor_bytes": compiled.info["arena_floor_bytes"],
        "stack_bytes": bench["stack_bytes"], "flash_bytes": bench["flash_bytes"],
        "compile_s": round(wall, 2), "max_abs_diff_vs_host": err,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | target | instructions | instr/MAC | RAM B | arena / floor B | flash B | "
             "compile s | max diff vs host |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['target']} | {r['instructions']:,} | "
            f"{r['instructions_per_mac']:.2f} | {r['ram_bytes']:,} | {r['arena_bytes']:,} / "
            f"{r['arena_floor_bytes']:,} | {r['flash_bytes']:,} | {r['compile_s']:.1f} | "
            f"{r['max_abs_diff_vs_host']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(sorted(MODELS)))
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    rows = [measure(m, t) for m in args.models.split(",") for t in args.targets.split(",")]
    print(table(rows))
    print("\ninstructions are executed instructions in QEMU (emulated), not cycles")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
