"""The four MLPerf Tiny models (mlcommons/tiny `benchmark/training/*`) as ONNX opset-13 graphs.

Weights are deterministic (seeded numpy RNG, He-style scaling) so every run of the tests and the
benchmarks sees the same model; they are not trained, only sized like the real ones. Layout is NCHW
with batch 1, Keras "same" padding is written as explicit pads, and BatchNormalization stays a
separate node after every conv/dense (with non-trivial statistics) so the compiler's BN folding has
something to do.

    python -m benchmarks.models.mlperf_tiny [out_dir]   # writes kws, vww, ic, ad .onnx
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


@dataclass
class _Builder:
    """Accumulates nodes and initializers; every layer helper returns its output name."""

    name: str
    seed: int
    rng: np.random.Generator = field(init=False)
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    count: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def weight(self, hint: str, array: np.ndarray) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def he(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return self.rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)

    def bias(self, n: int) -> np.ndarray:
        return self.rng.normal(0.0, 0.05, n)

    def node(self, op: str, inputs: list[str], hint: str, **attrs: object) -> str:
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        kernel: tuple[int, int],
        stride: int = 1,
        pads: tuple[int, int, int, int] = (0, 0, 0, 0),
        group: int = 1,
    ) -> str:
        kh, kw = kernel
        fan_in = cin // group * kh * kw
        w = self.weight("w", self.he((cout, cin // group, kh, kw), fan_in))
        b = self.weight("b", self.bias(cout))
        return self.node(
            "Conv", [x, w, b], "conv", kernel_shape=[kh, kw], strides=[stride, stride],
            pads=list(pads), group=group,
        )

    def batch_norm(self, x: str, c: int) -> str:
        # Non-trivial statistics: folding BN into the preceding layer must really change weights.
        scale = self.weight("bn_scale", self.rng.uniform(0.5, 1.5, c))
        beta = self.weight("bn_bias", self.rng.normal(0.0, 0.1, c))
        mean = self.weight("bn_mean", self.rng.normal(0.0, 0.1, c))
        var = self.weight("bn_var", self.rng.uniform(0.5, 1.5, c))
        return self.node(
            "BatchNormalization", [x, scale, beta, mean, var], "bn", epsilon=1e-3,
        )

    def relu(self, x: str) -> str:
        return self.node("Relu", [x], "relu")

    def conv_bn(
        self,
        x: str,
        cin: int,
        cout: int,
        kernel: tuple[int, int],
        stride: int = 1,
        pads: tuple[int, int, int, int] = (0, 0, 0, 0),
        group: int = 1,
        relu: bool = True,
    ) -> str:
        y = self.batch_norm(self.conv(x, cin, cout, kernel, stride, pads, group), cout)
        return self.relu(y) if relu else y

    def gemm(self, x: str, cin: int, cout: int) -> str:
        w = self.weight("fc_w", self.he((cout, cin), cin))
        b = self.weight("fc_b", self.bias(cout))
        return self.node("Gemm", [x, w, b], "fc", transB=1)

    def matmul_add(self, x: str, cin: int, cout: int) -> str:
        w = self.weight("mm_w", self.he((cin, cout), cin))
        b = self.weight("mm_b", self.bias(cout))
        return self.node("Add", [self.node("MatMul", [x, w], "matmul"), b], "add")

    def classifier_head(self, x: str, c: int, pool: tuple[int, int], classes: int) -> str:
        y = self.node("AveragePool", [x], "avgpool", kernel_shape=list(pool), strides=list(pool))
        y = self.node("Flatten", [y], "flatten", axis=1)
        return self.gemm(y, c, classes)

    def finish(
        self, x: str, x_shape: list[int], logits: str, out_shape: list[int], softmax: bool = True
    ) -> onnx.ModelProto:
        out = "output"
        if softmax:
            self.nodes.append(helper.make_node("Softmax", [logits], [out], name=out, axis=-1))
        else:
            self.nodes.append(helper.make_node("Identity", [logits], [out], name=out))
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nnc-benchmarks"
        )
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TF "same" padding: the odd extra pixel goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pads2d(h: int, w: int, k: tuple[int, int], stride: int) -> tuple[int, int, int, int]:
    (t, b), (left, r) = _same_pads(h, k[0], stride), _same_pads(w, k[1], stride)
    return t, left, b, r


def build_kws() -> onnx.ModelProto:
    """KWS DS-CNN: 1x1x49x10 MFCC input → 12 keyword classes (22.6k params, 2.66M MACs)."""
    m = _Builder("kws_ds_cnn", seed=1)
    x = "input"
    y = m.conv_bn(x, 1, 64, (10, 4), stride=2, pads=_pads2d(49, 10, (10, 4), 2))  # → 25x5
    for _ in range(4):
        y = m.conv_bn(y, 64, 64, (3, 3), pads=(1, 1, 1, 1), group=64)
        y = m.conv_bn(y, 64, 64, (1, 1))
    logits = m.classifier_head(y, 64, (24, 5), 12)
    return m.finish(x, [1, 1, 49, 10], logits, [1, 12])


# (stride, out channels) of the 13 depthwise-separable blocks of MobileNetV1 alpha=0.25.
_VWW_BLOCKS = ((1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128)) + ((1, 128),) * 5 + (
    (2, 256),
    (1, 256),
)


def build_vww() -> onnx.ModelProto:
    """VWW MobileNetV1 alpha=0.25: 1x3x96x96 image → person or not (211k params, 7.49M MACs)."""
    m = _Builder("vww_mobilenet_v1_025", seed=2)
    x = "input"
    y = m.conv_bn(x, 3, 8, (3, 3), stride=2, pads=_pads2d(96, 96, (3, 3), 2))  # → 48x48
    size, c = 48, 8
    for stride, cout in _VWW_BLOCKS:
        y = m.conv_bn(y, c, c, (3, 3), stride=stride, pads=_pads2d(size, size, (3, 3), stride),
                      group=c)
        size = -(-size // stride)
        y = m.conv_bn(y, c, cout, (1, 1))
        c = cout
    logits = m.classifier_head(y, c, (size, size), 2)  # size == 3
    return m.finish(x, [1, 3, 96, 96], logits, [1, 2])


def build_ic() -> onnx.ModelProto:
    """IC ResNet-8: 1x3x32x32 CIFAR-10 image → 10 classes (77.7k params, 12.5M MACs)."""
    m = _Builder("ic_resnet8", seed=3)
    x = "input"
    y = m.conv_bn(x, 3, 16, (3, 3), pads=(1, 1, 1, 1))
    # Stack 1: identity shortcut.
    r = m.conv_bn(y, 16, 16, (3, 3), pads=(1, 1, 1, 1))
    r = m.conv_bn(r, 16, 16, (3, 3), pads=(1, 1, 1, 1), relu=False)
    y = m.relu(m.node("Add", [y, r], "add"))
    size, c = 32, 16
    # Stacks 2 and 3: strided 3x3 path plus a strided 1x1 conv on the skip path.
    for cout in (32, 64):
        r = m.conv_bn(y, c, cout, (3, 3), stride=2, pads=_pads2d(size, size, (3, 3), 2))
        r = m.conv_bn(r, cout, cout, (3, 3), pads=(1, 1, 1, 1), relu=False)
        skip = m.conv(y, c, cout, (1, 1), stride=2)
        y = m.relu(m.node("Add", [skip, r], "add"))
        size, c = size // 2, cout
    logits = m.classifier_head(y, c, (size, size), 10)  # size == 8
    return m.finish(x, [1, 3, 32, 32], logits, [1, 10])


def build_ad() -> onnx.ModelProto:
    """AD FC autoencoder: 1x640 → 1x640 reconstruction (266k params, 264k MACs).

    Dense layers alternate between Gemm and MatMul+Add so both import paths are exercised; BN1d is a
    BatchNormalization on an [N, C] tensor.
    """
    m = _Builder("ad_autoencoder", seed=4)
    x = "input"
    widths = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128]
    y = x
    for i, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False)):
        dense = m.gemm if i % 2 == 0 else m.matmul_add
        y = m.relu(m.batch_norm(dense(y, cin, cout), cout))
    out = m.gemm(y, 128, 640)
    return m.finish(x, [1, 640], out, [1, 640], softmax=False)


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "kws": build_kws,
    "vww": build_vww,
    "ic": build_ic,
    "ad": build_ad,
}

# Published sizes (REFERENCE.md §1): parameters of conv/dense weights and biases (BN folded away).
EXPECTED = {
    "kws": (22_600, 2_660_000),
    "vww": (211_000, 7_490_000),
    "ic": (77_700, 12_500_000),
    "ad": (266_000, 264_000),
}


def model_stats(model: onnx.ModelProto) -> tuple[int, int]:
    """(parameters, MACs) counted the way MLPerf Tiny reports them.

    Parameters are the initializers feeding Conv/Gemm/MatMul/Add (BatchNormalization's four vectors
    fold into the preceding layer and are not counted); MACs are those of Conv, Gemm and MatMul.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    shapes.update(inits)
    params = macs = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul", "Add"):
            params += sum(int(np.prod(inits[i])) for i in node.input if i in inits)
        if node.op_type == "Conv":
            w = shapes[node.input[1]]
            macs += int(np.prod(shapes[node.output[0]])) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            k = shapes[node.input[0]][-1]
            macs += int(np.prod(shapes[node.output[0]])) * k
    return params, macs


def sample_input(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """A deterministic standard-normal input for every graph input of a float32 model."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def save_all(directory: str | Path) -> list[Path]:
    """Write every model as `<name>.onnx` into directory; returns the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in MODELS.items():
        path = out / f"{name}.onnx"
        onnx.save(build(), path)
        paths.append(path)
    return paths


def main(argv: list[str]) -> None:
    out = argv[0] if argv else "benchmarks/models/onnx"
    for path in save_all(out):
        params, macs = model_stats(onnx.load(path))
        print(f"{path}: {params:,} params, {macs:,} MACs")


if __name__ == "__main__":
    main(sys.argv[1:])
