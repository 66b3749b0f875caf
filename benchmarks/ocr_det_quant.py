"""int8 accuracy of a text detector (PP-OCRv4 det) on synthetic text images: nnc vs onnxruntime.

    pip download --no-deps rapidocr-onnxruntime && unzip -o rapidocr_onnxruntime-*.whl
    python -m benchmarks.ocr_det_quant rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx \
        [--size 192] [--samples 16] [--eval 8]

The model is not ours to ship; bring it (above: from the rapidocr-onnxruntime wheel on PyPI).
Inputs are synthetic text pages (light background, lines of stroke glyphs, ImageNet-normalized
as PaddleOCR does), so the detector's probability map has real text regions to find. Both
quantizers see the same calibration images; output SQNR (dB) vs the float model (onnxruntime)
on separate evaluation images. nnc: the int8 graph (graph interpreter, bit-exact with every
compiled build); onnxruntime: quantize_static (QDQ, per-channel), run with ORT_ENABLE_BASIC.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np
import onnx

from benchmarks import quant_accuracy as qa

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def text_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """[1, 3, size, size]: 3-6 lines of dark stroke glyphs on a light page."""
    img = np.full((size, size, 3), rng.uniform(0.75, 1.0), np.float32)
    for _ in range(rng.integers(3, 7)):
        y, x = int(rng.integers(4, size - 22)), int(rng.integers(0, size // 2))
        h, ink = int(rng.integers(8, 18)), rng.uniform(0.0, 0.3)
        for _ in range(rng.integers(4, 14)):
            w = int(rng.integers(int(h * 0.6), h + 1))
            if x + w >= size:
                break
            for _ in range(rng.integers(2, 5)):  # horizontal and vertical strokes
                if rng.random() < 0.5:
                    yy = int(rng.integers(y, y + h))
                    img[yy:yy + 2, x:x + w] = ink
                else:
                    xx = int(rng.integers(x, x + w))
                    img[y:y + h, xx:xx + 2] = ink
            x += w + int(rng.integers(1, 4))
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    img = (np.clip(img, 0, 1) - MEAN) / STD
    return img.transpose(2, 0, 1)[None].astype(np.float32)


def fixed_input(model: onnx.ModelProto, size: int) -> str:
    """Fix the detector's dynamic [N, 3, H, W] input to [1, 3, size, size]; its name."""
    inp = model.graph.input[0]
    for d, v in zip(inp.type.tensor_type.shape.dim, (1, 3, size, size), strict=True):
        d.ClearField("dim_param")
        d.dim_value = v
    return inp.name


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--eval", type=int, default=8)
    args = ap.parse_args(argv)
    try:
        model = onnx.load(args.model)
    except Exception as e:  # a missing, unreadable or corrupt file: one line, exit 2
        print(f"{args.model}: cannot load the model ({e}); see the docstring for where to get "
              "it", file=sys.stderr)
        return 2
    name = fixed_input(model, args.size)
    rng = np.random.default_rng(0)
    cal = [{name: text_image(rng, args.size)} for _ in range(args.samples)]
    ev = [{name: text_image(rng, args.size)} for _ in range(args.eval)]
    ref = qa.ort_outputs(model, ev)
    print(f"text pixels (p > 0.3): {np.mean(np.concatenate(ref) > 0.3):.1%}", file=sys.stderr)
    print("method      nnc dB  onnxruntime dB")
    for method in ("minmax", "percentile"):
        ours = qa._sqnr(ref, qa.nnc_outputs(model, cal, ev, method, engine="interp"))
        theirs = qa._sqnr(ref, qa.ort_outputs(qa.ort_quantize(model, cal, method, False), ev))
        print(f"{method:<10} {ours:7.2f}  {theirs:14.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
