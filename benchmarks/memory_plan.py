"""Activation arena vs its floor, per model, before and after the microcontroller memory work.

    python -m benchmarks.memory_plan [--models kws,ic] [--light] [--json out.json]

"before" is the host pipeline (without its host-only speed passes) with in-place reuse off
(the planner as it was: liveness + three offset strategies); "after" is the cortex-m pipeline
up to plan-memory (order-ops, in-place reuse of dying inputs by elementwise kernels and fused
epilogues). The floor is the most bytes live at once (in-place pairs counted once), which no
whole-tensor plan can beat; the issue's bar
is arena <= 1.05 x floor. float32 models, no hardware needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import onnx

from benchmarks.models import LIGHT_MODELS, MODELS, load_light
from nnc.compiler.onnx.importer import import_model
from nnc.compiler.pipeline import GRAPH_PASSES, HOST_GRAPH_PASSES, PIPELINES
from nnc.passes.manager import PassManager

# the host's own speed passes (explicit padding copies, flattened views) are no part of the
# planner's baseline: the shared graph passes only
_HOST_ONLY = set(HOST_GRAPH_PASSES) - set(GRAPH_PASSES)
BEFORE = ",".join(p if p != "plan-memory" else "plan-memory{inplace=false}"
                  for p in PIPELINES["host"] if p not in _HOST_ONLY)
AFTER = ",".join(p for p in PIPELINES["cortex-m"] if p != "check-fit")


def plan(model: onnx.ModelProto, pipeline: str) -> dict[str, Any]:
    """The memory facts plan-memory (and order-ops) leave for `model` under `pipeline`."""
    pm = PassManager(pipeline)
    pm.run(import_model(model))
    return {**pm.facts["memory"], "order_ops": pm.facts.get("order_ops")}


def measure(name: str, model: onnx.ModelProto) -> dict[str, Any]:
    before, after = plan(model, BEFORE), plan(model, AFTER)
    return {
        "model": name,
        "before_arena": before["arena_bytes"],
        "before_floor": before["floor_bytes"],
        "after_arena": after["arena_bytes"],
        "after_floor": after["floor_bytes"],
        "ratio": after["arena_bytes"] / max(after["floor_bytes"], 1),
        "strategy": after["strategy"],
        "inplace": len(after["inplace"]),
        "reordered": (after["order_ops"] or {}).get("segments_reordered", 0),
        "peak": after["peak"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated MLPerf Tiny names")
    ap.add_argument("--light", action="store_true", help="also the nine light ONNX models")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}",
              file=sys.stderr)
        return 2
    jobs = [(n, MODELS[n]()) for n in names]
    if args.light:
        jobs += [(n, load_light(n)[0]) for n in LIGHT_MODELS]
    print("| model | before arena | before floor | after arena | after floor | arena/floor "
          "| in-place pairs | segments reordered | strategy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    rows = []
    for name, model in jobs:
        r = measure(name, model)
        rows.append(r)
        print(f"| {name} | {r['before_arena']:,} | {r['before_floor']:,} | {r['after_arena']:,} "
              f"| {r['after_floor']:,} | {r['ratio']:.3f} | {r['inplace']} | {r['reordered']} "
              f"| {r['strategy']} |", flush=True)
    print("\nfloat32 bytes; floor = most bytes live at once (in-place pairs counted once).")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
