"""Agreement with TFLite of TFLite int8 models converted to ONNX by tf2onnx and compiled by nnc.

The fixtures (`tests/fixtures/tflite/`, built by its `make_tflite.py`, which needs TensorFlow)
hold each model as .tflite and tf2onnx's .onnx, 48 int8 inputs, and TFLite's outputs on them:
`tflite_ref` (TensorFlow 2.15's TFLite interpreter with its reference kernels, BUILTIN_REF: what
TFLite Micro's kernels compute, and CMSIS-NN is bit-exact with those), `tflite_builtin` (its
default optimized kernels), `litert_ref` / `litert_builtin` (the `ai-edge-litert` 2.3
interpreter; its reference FULLY_CONNECTED rounds once). This compares nnc's outputs with one of
them, output code by output code, for each int8 rounding (`int8_rounding=`) and build:

  interp            nnc's graph interpreter on the fuse-qdq graph (the reference semantics)
  host              the host build, nnc's generated kernels
  host/cmsis-nn     the host build, CMSIS-NN kernels
  <board>           a Cortex-M target (cortex-m4 / -m7 / -m55) with its default CMSIS-NN kernels,
                    under QEMU;  <board>/generated: with nnc's generated kernels

    python -m benchmarks.tflite_agreement [--dir DIR] [--models cnn,kws,ad]
        [--roundings tflite,onnx] [--variants interp,host,...] [--reference tflite_ref]
        [--inputs N] [--json out.json]

prints one row per model, rounding and variant: the share of output elements identical to the
reference, the share within 1 LSB, the largest difference in LSB, and whether the build's outputs
are bit-identical with the interpreter's (=interp); exits 1 if one is not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tflite"
MODELS = ("cnn", "kws", "ad")
REFERENCES = ("tflite_ref", "tflite_builtin", "litert_ref", "litert_builtin")
CORTEX_M = ("cortex-m4", "cortex-m7", "cortex-m55")
# variant -> (target, compile options)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "interp": ("", {}),
    "host": ("host", {"kernels": "generated"}),
    "host/cmsis-nn": ("host", {"kernels": "cmsis-nn"}),
    **{t: (t, {}) for t in CORTEX_M},
    **{f"{t}/generated": (t, {"kernels": "generated"}) for t in CORTEX_M},
}


@dataclass(frozen=True)
class Fixture:
    name: str
    onnx_path: Path
    input_name: str
    inputs: np.ndarray  # int8 [N, *input shape with batch 1]
    output_names: tuple[str, ...]  # the ONNX model's outputs
    outputs: dict[str, list[np.ndarray]]  # reference -> per output, int8 [N, *output shape]

    @property
    def input_shapes(self) -> dict[str, list[int]]:
        """The input's shape with its (often unknown) batch dimension fixed to 1."""
        return {self.input_name: [int(d) for d in self.inputs.shape[1:]]}

    def feeds(self, n: int | None = None) -> list[dict[str, np.ndarray]]:
        return [{self.input_name: x} for x in self.inputs[:n]]


def load_fixture(name: str, directory: Path = FIXTURES) -> Fixture:
    path = Path(directory) / f"{name}.onnx"
    model = onnx.load(str(path), load_external_data=False)
    names = tuple(o.name for o in model.graph.output)
    with np.load(path.with_suffix(".npz")) as data:
        inputs = data["inputs"]
        refs = {k.rsplit(".", 1)[0] for k in data.files if k != "inputs"}
        outputs = {r: [data[f"{r}.{i}"] for i in range(len(names))] for r in refs}
    return Fixture(name, path, model.graph.input[0].name, inputs, names, outputs)


def interp_outputs(fx: Fixture, rounding: str, n: int | None = None) -> list[np.ndarray]:
    """The graph interpreter on the fuse-qdq graph of the imported model, per output."""
    from nnc.compiler.onnx.importer import import_model
    from nnc.ir.interp import run_graph
    from nnc.passes.fuse_qdq import fuse_qdq_graph

    graph = fuse_qdq_graph(import_model(fx.onnx_path, fx.input_shapes), rounding)
    runs = [run_graph(graph, feed) for feed in fx.feeds(n)]
    return [np.stack([r[name] for r in runs]) for name in fx.output_names]


def build_outputs(fx: Fixture, variant: str, rounding: str, n: int | None = None,
                  ) -> tuple[list[np.ndarray], dict[str, Any]]:
    """(outputs per output, nnc.json's info) of `variant` built with `rounding`."""
    import nnc

    target, options = VARIANTS[variant]
    compiled = nnc.compile(fx.onnx_path, target=target, input_shapes=fx.input_shapes,
                           int8_rounding=rounding, bench=False, **options)
    runs = [compiled.run(feed) for feed in fx.feeds(n)]
    return [np.stack([r[name] for r in runs]) for name in fx.output_names], compiled.info


def agreement(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> dict[str, float]:
    """exact / within-1-LSB shares (%) of the output codes (all outputs), and the largest
    difference (LSB)."""
    if [g.shape for g in got] != [w.shape for w in want]:
        raise ValueError(f"outputs of shapes {[g.shape for g in got]} do not match the "
                         f"reference's {[w.shape for w in want]}")
    d = np.concatenate([np.abs(g.astype(np.int64) - w.astype(np.int64)).ravel()
                        for g, w in zip(got, want, strict=True)])
    return {"exact_pct": 100.0 * float(np.mean(d == 0)),
            "within_1_lsb_pct": 100.0 * float(np.mean(d <= 1)),
            "max_lsb": int(d.max(initial=0)), "elements": int(d.size)}


def measure(fx: Fixture, variant: str, rounding: str, reference: str = "tflite_ref",
            n: int | None = None, interp: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """`agreement` of `variant`'s outputs with `reference`; with the interpreter's outputs
    (`interp`), also whether the build gives exactly those ("same_as_interp")."""
    got = (interp_outputs(fx, rounding, n) if variant == "interp"
           else build_outputs(fx, variant, rounding, n)[0])
    r: dict[str, Any] = agreement(got, [o[:n] for o in fx.outputs[reference]])
    if interp is not None:
        r["same_as_interp"] = all(np.array_equal(g, w) for g, w in zip(got, interp,
                                                                      strict=True))
    return r


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=str(FIXTURES), help="fixture folder (default: the tests')")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--roundings", default="tflite,onnx")
    ap.add_argument("--variants", default="interp,host,host/cmsis-nn",
                    help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--reference", default="tflite_ref", choices=REFERENCES)
    ap.add_argument("--inputs", type=int, default=None, help="inputs per model (default: all)")
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"unknown variant(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    rows = []
    print(f"{'model':8} {'rounding':8} {'variant':20} {'exact':>8} {'<=1 LSB':>8} {'max':>4}"
          f"  {'=interp':7}  (vs {args.reference})")
    for name in args.models.split(","):
        fx = load_fixture(name, Path(args.dir))
        for rounding in args.roundings.split(","):
            interp = interp_outputs(fx, rounding, args.inputs)
            for variant in variants:
                t0 = time.perf_counter()
                r = measure(fx, variant, rounding, args.reference, args.inputs, interp)
                rows.append({"model": name, "rounding": rounding, "variant": variant,
                             "reference": args.reference, **r})
                print(f"{name:8} {rounding:8} {variant:20} {r['exact_pct']:7.2f}% "
                      f"{r['within_1_lsb_pct']:7.2f}% {r['max_lsb']:4d}  "
                      f"{'yes' if r['same_as_interp'] else 'NO':7}  "
                      f"({r['elements']} codes, {time.perf_counter() - t0:.1f} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["same_as_interp"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
