"""One layer: nnc's generated C against onnxruntime, one thread each, same run.

    python -m benchmarks.bench_layer conv:64,64,56,56,3,1,1 gemm:1,640,128 maxpool:64,112,112,3,2,1

`conv:C,K,H,W,KS,STRIDE,PAD[,GROUP]` is a Conv (+ bias, + Relu) of a [1, C, H, W] input into K
channels with a KS x KS kernel; `gemm:M,K,N` a Gemm (transB, + bias, + Relu);
`maxpool:C,H,W,KS,STRIDE,PAD` / `avgpool:...` a MaxPool / AveragePool of [1, C, H, W];
`gap:C,H,W` a GlobalAveragePool; `reducemean:C,H,W` a ReduceMean over H and W (keepdims);
`matmul:B,M,K,N` a MatMul of [B, M, K] by a constant [B, K, N] (each + Relu). Random weights
(seed 0). Prints the best of `--repeat` runs of each (a layer takes microseconds, so the minimum
is the figure least disturbed by other processes) and the largest difference of the outputs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks.bench_host import ort_session, time_ort


def layer_model(spec: str) -> tuple[onnx.ModelProto, np.ndarray]:
    kind, _, args = spec.partition(":")
    dims = [int(v) for v in args.split(",")]
    rng = np.random.default_rng(0)
    if kind == "conv":
        c, k, h, w, ks, stride, pad = dims[:7]
        group = dims[7] if len(dims) > 7 else 1
        weight = rng.standard_normal((k, c // group, ks, ks)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y0"], pads=[pad] * 4,
                                strides=[stride] * 2, group=group)
        x = rng.standard_normal((1, c, h, w)).astype(np.float32)
        bias = rng.standard_normal(k).astype(np.float32)
    elif kind == "gemm":
        m, depth, n = dims
        weight = rng.standard_normal((n, depth)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y0"], transB=1)
        x = rng.standard_normal((m, depth)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
    elif kind in ("maxpool", "avgpool"):
        c, h, w, ks, stride, pad = dims
        op = "MaxPool" if kind == "maxpool" else "AveragePool"
        node = helper.make_node(op, ["x"], ["y0"], kernel_shape=[ks, ks], strides=[stride] * 2,
                                pads=[pad] * 4)
        x = rng.standard_normal((1, c, h, w)).astype(np.float32)
        weight = bias = None
    elif kind in ("gap", "reducemean"):
        c, h, w = dims
        node = helper.make_node("GlobalAveragePool", ["x"], ["y0"]) if kind == "gap" else \
            helper.make_node("ReduceMean", ["x"], ["y0"], axes=[2, 3], keepdims=1)
        x = rng.standard_normal((1, c, h, w)).astype(np.float32)
        weight = bias = None
    elif kind == "matmul":
        batch, m, depth, n = dims
        weight = rng.standard_normal((batch, depth, n)).astype(np.float32)
        node = helper.make_node("MatMul", ["x", "w"], ["y0"])
        x = rng.standard_normal((batch, m, depth)).astype(np.float32)
        bias = None
    else:
        raise SystemExit(f"unknown layer kind {kind!r} (conv, gemm, maxpool, avgpool, gap, "
                         f"reducemean or matmul)")
    inits = [numpy_helper.from_array(a, name) for a, name in ((weight, "w"), (bias, "b"))
             if a is not None]
    graph = helper.make_graph(
        [node, helper.make_node("Relu", ["y0"], ["y"])], kind,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), x


def main(argv: list[str] | None = None) -> int:
    import nnc

    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_layer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("layers", nargs="+")
    p.add_argument("--repeat", type=int, default=50)
    args = p.parse_args(argv)
    print("| layer | nnc ms | ORT ms | nnc/ORT | max abs diff |\n|---|---:|---:|---:|---:|")
    for spec in args.layers:
        model, x = layer_model(spec)
        with tempfile.TemporaryDirectory(prefix="nnc-layer-") as tmp:
            compiled = nnc.compile(model, target="host", output_dir=Path(tmp) / "out")
            got = compiled.run({"x": x})["y"]
            sess = ort_session(model)
            want = sess.run(None, {"x": x})[0]
            ort_ms = time_ort(sess, {"x": x}, 5, args.repeat)["min"]
            nnc_ms = compiled.benchmark(warmup=5, repeat=args.repeat,
                                        inputs={"x": x})["latency_ms"]["min"]
        print(f"| {spec} | {nnc_ms:.4f} | {ort_ms:.4f} | {nnc_ms / ort_ms:.2f}x "
              f"| {float(np.abs(got - want).max()):.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
