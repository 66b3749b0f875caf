"""`nnc eval` on the four MLPerf Tiny models on an emulated board: device fp32 and int8 against
onnxruntime on labelled held-out samples.

    python -m benchmarks.eval_mlperf_tiny [--models kws,vww,ic,ad] [--samples N]
        [--target cortex-m7] [--calibration N] [--out DIR]

The models have random weights, so there is no labelled data set: the stand-in is held-out
synthetic inputs (`benchmarks.quant_accuracy.make_inputs`, seed 1000, not the calibration seed
0) labelled by the float model's own output: argmax for the classifiers (metric top-1), and for
the AD autoencoder "anomalous" when its reconstruction error is above the median (metric AUC;
the float model scores 1.0 by construction). int8 calibrates on `--calibration` samples (seed 0).
Writes `<out>/<model>_eval.npz` (inputs + labels, the form `nnc eval --data` reads) and
`<out>/eval_mlperf_tiny.json`, and prints each table and the wall time of each model's eval.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx

import nnc
from benchmarks.quant_accuracy import make_inputs, ort_outputs

MODELS = ("kws", "vww", "ic", "ad")
MODELS_DIR = Path(__file__).parent / "models"


def labelled_data(name: str, model: onnx.ModelProto, n: int, seed: int = 1000
                  ) -> dict[str, np.ndarray]:
    """{input name: [n, ...], "labels": [n]}: synthetic inputs labelled by the float model."""
    samples = make_inputs(name, model, n, seed)
    outs = np.stack([o.reshape(-1) for o in ort_outputs(model, samples)])
    data = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
    if name == "ad":
        x = data[next(iter(data))].reshape(n, -1).astype(np.float64)
        err = np.mean((outs - x) ** 2, axis=1)
        data["labels"] = (err > np.median(err)).astype(np.int64)
    else:
        data["labels"] = np.argmax(outs, axis=1).astype(np.int64)
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--calibration", type=int, default=40)
    p.add_argument("--target", default="cortex-m7")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.models.split(","):
        path = MODELS_DIR / f"{name}.onnx"
        if not path.exists():
            print(f"{path} is missing: build it with `python -m benchmarks.models.mlperf_tiny "
                  f"benchmarks/models`", file=sys.stderr)
            return 2
        model = onnx.load(str(path))
        data_path = out / f"{name}_eval.npz"
        np.savez(data_path, **labelled_data(name, model, args.samples))
        cal = make_inputs(name, model, args.calibration, seed=0)
        calibration = {k: np.stack([s[k] for s in cal]) for k in cal[0]}
        t0 = time.perf_counter()
        r = nnc.evaluate(path, data_path, target=args.target, quantize="int8",
                         calibration=calibration, variants=["device-fp32", "device-int8"],
                         metric="auc" if name == "ad" else "top1", progress=True)
        wall = time.perf_counter() - t0
        print(r.table())
        print(f"{name}: eval of {args.samples} samples took {wall:.1f} s (compiles included)\n")
        results[name] = {**r.to_json(), "wall_s": round(wall, 1)}
    (out / "eval_mlperf_tiny.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
