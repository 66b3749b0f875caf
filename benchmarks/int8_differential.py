"""int8 differential check: every build of a quantized model must give the same bits.

A model is quantized once per variant (same calibration data, so the same int8 graph) and run on
the same inputs by:
  interp            nnc's graph interpreter on the int8 graph lowering starts from (the reference)
  host              the host build, nnc's generated kernels
  host/cmsis-nn     the host build, CMSIS-NN kernels (nnc's portable subset or CMSIS_NN_PATH)
  <board>           each Cortex-M target with its default CMSIS-NN kernels, -O3, under QEMU
  cortex-m7/O0      the same firmware built at -O0 (a compiler that misreads the C shows up here)
  <board>/generated the Cortex-M targets with nnc's generated int8 kernels
  opencl            the OpenCL build (--target opencl) on the first OpenCL device (PoCL in CI)
  tvm               the TVM module (--target tvm; only where apache-tvm is installed)
Outputs are compared bit for bit (the dequantized float output is a bijection of the int8 one).
The issue-11 bug this guards against: GCC 12 deleted a transpose kernel's call at -O2 and up on
the Cortex-M builds only (docs/gcc-pure-const-bug.md); nothing failed, outputs were 0.39 off.

    python -m benchmarks.int8_differential [--models a,b] [--variants v1,v2] [--inputs N]
        [--json out.json]

prints a table (model x variant: "=" identical to the reference; "~" only an output that a float op
computes differs, within FLOAT_TAIL_RTOL, as libm does between targets; else the mismatching
elements and the largest difference in LSB) and exits 1 on any int8 difference. `make test` runs
it (tests/test_int8_differential.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

import nnc
from nnc.ir.graph import Graph
from nnc.ir.interp import run_graph
from nnc.passes.manager import register_pass

CORTEX_M = ("cortex-m4", "cortex-m7", "cortex-m55")
# (name, target, compile options)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "host": ("host", {"kernels": "generated"}),
    "host/cmsis-nn": ("host", {"kernels": "cmsis-nn"}),
    **{t: (t, {"kernels": "cmsis-nn"}) for t in CORTEX_M},
    "cortex-m7/O0": ("cortex-m7", {"kernels": "cmsis-nn", "opt_level": 0}),
    **{f"{t}/generated": (t, {"kernels": "generated"}) for t in CORTEX_M},
    "opencl": ("opencl", {}),
    # the [tvm] extra is optional: no column where it is missing
    **({"tvm": ("tvm", {})} if importlib.util.find_spec("tvm") is not None else {}),
}
REFERENCE = "interp"

_captured: list[Graph] = []


@register_pass("capture-graph")
def capture_graph(graph: Graph, ctx: Any) -> Graph:
    """Keeps the graph it sees (the int8 graph lowering starts from) for the interpreter."""
    _captured.append(graph)
    return graph


def _pipeline(target: str) -> str:
    from nnc.compiler.pipeline import default_pipeline

    kind = target if target in ("host", "tvm", "opencl") else "cortex-m"
    steps = default_pipeline(kind).split(",")
    at = steps.index("lower-to-loops")
    return ",".join(steps[:at] + ["capture-graph"] + steps[at:])


def calibration_samples(model: onnx.ModelProto, n: int, seed: int) -> dict[str, np.ndarray]:
    from benchmarks.models.calibration import calibration_data

    return calibration_data(model, n, seed)


def model_inputs(model: onnx.ModelProto, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    data = calibration_samples(model, n, seed)
    return [{k: v[i] for k, v in data.items()} for i in range(n)]


@dataclass
class Result:
    model: str
    variant: str
    outputs: list[dict[str, np.ndarray]]
    seconds: float
    error: str = ""


def run_variant(model: onnx.ModelProto, variant: str, calibration: Mapping[str, np.ndarray],
                inputs: Sequence[Mapping[str, np.ndarray]]) -> tuple[list[dict], Graph]:
    """Outputs of `variant` on every input, and the int8 graph it lowered."""
    target, options = VARIANTS[variant]
    _captured.clear()
    compiled = nnc.compile(model, target=target, quantize="int8", calibration=dict(calibration),
                           pipeline=_pipeline(target), **options)
    graph = _captured[-1]
    return [compiled.run(x) for x in inputs], graph


def interpret(graph: Graph, inputs: Sequence[Mapping[str, np.ndarray]]) -> list[dict]:
    outs = []
    for x in inputs:
        vals = run_graph(graph, {v.name: np.asarray(x[v.name]) for v in graph.inputs})
        outs.append({v.name: vals[v.name] for v in graph.outputs})
    return outs


def lsb_of(graph: Graph) -> dict[str, float]:
    """Output name -> the float size of one int8 step (its dequantize scale), where there is one
    (a fused op's last body op included)."""
    out: dict[str, float] = {}
    producers = {o.name: op for op in graph.ops for o in op.outputs}
    for v in graph.outputs:
        op = producers.get(v.name)
        if op is not None and op.kind == "fused" and op.body is not None:
            op = op.body.ops[-1]
        if op is not None and op.kind == "dequantize_linear" and len(op.inputs) > 1:
            scale = graph.constant_map().get(op.inputs[1])
            if scale is not None and np.asarray(scale).size == 1:
                out[v.name] = float(np.asarray(scale).reshape(-1)[0])
    return out


FLOAT_TAIL_RTOL = 1e-5  # an output a float op computes (libm differs by target): ~100 float32 ulp


def compare(ref: Sequence[Mapping[str, np.ndarray]], got: Sequence[Mapping[str, np.ndarray]],
            lsb: Mapping[str, float]) -> str:
    """"=" when bit-identical; "~" when only outputs computed by float ops (no dequantize: not an
    int8 value) differ, within FLOAT_TAIL_RTOL; else "<n>/<total> differ, max <d> LSB"."""
    bad = total = 0
    worst = 0.0
    tail_only = True
    for r, g in zip(ref, got, strict=True):
        for name, want in r.items():
            have = np.asarray(g[name])
            want = np.asarray(want)
            if have.shape != want.shape:
                return f"shape {have.shape} != {want.shape}"
            differ = (have != want) & ~(np.isnan(have) & np.isnan(want))
            total += want.size
            if differ.any():
                bad += int(np.count_nonzero(differ))
                step = lsb.get(name)
                delta = np.abs(have.astype(np.float64) - want.astype(np.float64))[differ]
                if step is None:
                    scale = np.maximum(np.abs(want.astype(np.float64))[differ], 1e-3)
                    tail_only &= bool(np.all(delta <= FLOAT_TAIL_RTOL * scale))
                    worst = max(worst, float((delta / scale).max()))
                else:
                    tail_only = False
                    worst = max(worst, float(delta.max()) / step)
    if bad == 0:
        return "="
    if tail_only:
        return f"~ ({bad}/{total} float-tail values, rel {worst:.1e})"
    return f"{bad}/{total} differ, max {worst:.3g} LSB"


def agrees(verdict: str) -> bool:
    return verdict == "=" or verdict.startswith("~")


def disagreements(name: str, variants: Sequence[str], n_inputs: int = 2) -> dict[str, str]:
    """The variants of `variants` (and the interpreter) whose outputs on model `name` do not
    agree with the interpreter's: {} when every build gives the same bits."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    row = check_model(name, all_models()[name], variants, n_inputs=n_inputs)
    assert len(row) == len(variants) + 1, row
    return {variant: verdict for variant, verdict in row.items() if not agrees(verdict)}


def check_model(name: str, build: Callable[[], onnx.ModelProto], variants: Sequence[str],
                n_inputs: int = 2, progress: Callable[[str], None] = lambda s: None
                ) -> dict[str, str]:
    """variant -> comparison with the interpreter ("=" when identical)."""
    model = build()
    calibration = calibration_samples(model, 16, seed=0)
    inputs = model_inputs(model, n_inputs, seed=1)
    row: dict[str, str] = {}
    ref = None
    lsb: dict[str, float] = {}
    for variant in variants:
        t0 = time.perf_counter()
        try:
            outs, graph = run_variant(model, variant, calibration, inputs)
        except Exception as e:  # a build that fails is a result too, not the end of the run
            row[variant] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            progress(f"{name} {variant}: {row[variant]}")
            continue
        if ref is None:
            ref, lsb = interpret(graph, inputs), lsb_of(graph)
            row[REFERENCE] = "="
        row[variant] = compare(ref, outs, lsb)
        progress(f"{name} {variant}: {row[variant]} ({time.perf_counter() - t0:.1f} s)")
    return row


def all_models() -> dict[str, Callable[[], onnx.ModelProto]]:
    from benchmarks.models.mlperf_tiny import MODELS
    from benchmarks.models.zoo import ZOO

    return {**MODELS, **ZOO}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma list (default: all)")
    ap.add_argument("--variants", help=f"comma list of {', '.join(VARIANTS)} (default: all)")
    ap.add_argument("--inputs", type=int, default=2, help="inputs per model (default 2)")
    ap.add_argument("--json", help="write the table as JSON here")
    args = ap.parse_args(argv)
    models = all_models()
    names = args.models.split(",") if args.models else list(models)
    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in models] + [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"unknown model or variant: {', '.join(unknown)}", file=sys.stderr)
        return 2
    table = {}
    for i, name in enumerate(names, 1):
        table[name] = check_model(name, models[name], variants, args.inputs,
                                  progress=lambda s, i=i: print(f"[{i}/{len(names)}] {s}",
                                                                file=sys.stderr, flush=True))
    cols = [REFERENCE, *variants]
    width = max(len(n) for n in names)
    print(f"{'model':<{width}}  " + "  ".join(cols))
    for name, row in table.items():
        print(f"{name:<{width}}  " + "  ".join(f"{row.get(c, '-'):<{len(c)}}" for c in cols))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    return 0 if all(agrees(v) for row in table.values() for v in row.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
