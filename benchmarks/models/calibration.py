"""Write calibration data for a model: `python -m benchmarks.models.calibration MODEL OUT.npz [N]`.

N (default 40) random-normal samples per graph input, keyed by input name with the samples on the
first axis (the .npz form `nnc compile --calibration` reads). The MLPerf Tiny models built here have
random weights, so random inputs are as representative as any; for a trained model, calibrate on
real inputs instead.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import helper


def calibration_data(model: onnx.ModelProto, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        out[inp.name] = rng.standard_normal([n, *shape]).astype(dtype)
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    model = onnx.load(argv[0])
    np.savez(argv[1], **calibration_data(model, int(argv[2]) if len(argv) == 3 else 40))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
