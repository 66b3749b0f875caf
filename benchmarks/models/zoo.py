"""Small models with the structures trained models bring, for the int8 differential tests.

The MLPerf Tiny four (`mlperf_tiny`) are plain CNN/FC stacks. Real deployments bring more:
MobileNetV3 squeeze-excite blocks with hard-swish written out the Paddle way (x * clip(x + 3, 0,
6) / 6) or as the opset-14 HardSwish op, transposes between NCHW and a model's own NHWC input
(tf2onnx), detector necks (ConvTranspose, Resize, Concat of scales, HardSigmoid gates, Mul with
broadcasting), grouped and dilated convs, inception-style concats, gated FC layers, a
bidirectional LSTM. Each builder
here makes one such model with deterministic weights (seeded numpy, like `mlperf_tiny`), small
enough to build and run on the emulated boards in seconds.

    python -m benchmarks.models.zoo [out_dir]     # writes every model as <name>.onnx
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks.models.mlperf_tiny import _Builder

OPSET = 13


class _Zoo(_Builder):
    """`_Builder` plus the layers the models below need."""

    def const(self, hint: str, value: float | list[float]) -> str:
        return self.weight(hint, np.asarray(value, dtype=np.float32))

    def int_const(self, hint: str, value: list[int]) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
        return name

    def hardswish_paddle(self, x: str) -> str:
        """x * clip(x + 3, 0, 6) / 6, as Paddle (and opset < 14 exporters) write it."""
        shifted = self.node("Add", [x, self.const("three", 3.0)], "hs_add")
        clipped = self.node("Clip", [shifted, self.const("zero", 0.0), self.const("six", 6.0)],
                            "hs_clip")
        return self.node("Div", [self.node("Mul", [x, clipped], "hs_mul"),
                                 self.const("six", 6.0)], "hs_div")

    def hardswish(self, x: str) -> str:
        return self.node("HardSwish", [x], "hswish")

    def squeeze_excite(self, x: str, c: int, reduced: int) -> str:
        """GlobalAveragePool → 1x1 conv → ReLU → 1x1 conv → HardSigmoid → Mul (broadcast)."""
        s = self.node("GlobalAveragePool", [x], "se_pool")
        s = self.relu(self.conv(s, c, reduced, (1, 1)))
        s = self.conv(s, reduced, c, (1, 1))
        s = self.node("HardSigmoid", [s], "se_gate", alpha=0.2, beta=0.5)
        return self.node("Mul", [x, s], "se_mul")

    def conv_bn_act(self, x: str, cin: int, cout: int, k: int, stride: int = 1,
                    group: int = 1, act: str = "relu", paddle: bool = True) -> str:
        y = self.batch_norm(self.conv(x, cin, cout, (k, k), stride, (k // 2,) * 4, group), cout)
        if act == "relu":
            return self.relu(y)
        if act == "hswish":
            return self.hardswish_paddle(y) if paddle else self.hardswish(y)
        return y

    def finish_any(self, inputs: list[tuple[str, list[int]]],
                   outputs: list[tuple[str, list[int]]], opset: int = OPSET) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="nnc-benchmarks")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


# (kernel, expanded, out, SE, activation, stride) of MobileNetV3-small's blocks, channels scaled
# down like PaddleOCR's direction classifier (scale 0.35).
_MBV3_BLOCKS = (
    (3, 16, 8, True, "relu", 2), (3, 24, 8, False, "relu", 1), (3, 32, 16, False, "relu", 2),
    (5, 40, 16, True, "hswish", 1), (5, 48, 16, True, "hswish", 1), (5, 48, 24, True, "hswish", 2),
    (5, 64, 24, True, "hswish", 1), (5, 96, 32, True, "hswish", 1),
)


def build_mbv3_se() -> onnx.ModelProto:
    """PaddleOCR-classifier-shaped MobileNetV3-small: Paddle hard-swish, squeeze-excite on NCHW,
    residual adds, unnamed nodes; 1x3x32x96 text-line crop → 2 classes."""
    m = _Zoo("mbv3_se", seed=11)
    y = m.conv_bn_act("input", 3, 8, 3, stride=2, act="hswish")
    c, h, w = 8, 16, 48
    for k, exp, cout, se, act, stride in _MBV3_BLOCKS:
        z = m.conv_bn_act(y, c, exp, 1, act=act)
        z = m.conv_bn_act(z, exp, exp, k, stride=stride, group=exp, act=act)
        if se:
            z = m.squeeze_excite(z, exp, max(exp // 4, 4))
        z = m.conv_bn_act(z, exp, cout, 1, act="none")
        y = m.node("Add", [y, z], "res") if stride == 1 and c == cout else z
        c, h, w = cout, -(-h // stride), -(-w // stride)
    y = m.conv_bn_act(y, c, 64, 1, act="hswish")
    y = m.node("MaxPool", [y], "pool", kernel_shape=[2, 2], strides=[2, 2])
    y = m.node("Flatten", [y], "flatten", axis=1)
    logits = m.gemm(y, 64 * (h // 2) * (w // 2), 2)
    out = m.node("Softmax", [logits], "softmax", axis=1)
    model = m.finish_any([("input", [1, 3, 32, 96])], [(out, [1, 2])])
    for node in model.graph.node:  # Paddle's exporter leaves nodes unnamed
        node.name = ""
    return model


def build_se_hardswish() -> onnx.ModelProto:
    """Opset-14 HardSwish and HardSigmoid ops, squeeze-excite, a residual add; 1x3x24x24 → 6."""
    m = _Zoo("se_hardswish", seed=12)
    y = m.conv_bn_act("input", 3, 16, 3, stride=2, act="hswish", paddle=False)
    z = m.conv_bn_act(y, 16, 16, 3, group=16, act="hswish", paddle=False)
    z = m.squeeze_excite(z, 16, 4)
    z = m.conv_bn_act(z, 16, 16, 1, act="none")
    y = m.hardswish(m.node("Add", [y, z], "res"))
    y = m.node("GlobalAveragePool", [y], "gap")
    y = m.node("Flatten", [y], "flatten", axis=1)
    return m.finish_any([("input", [1, 3, 24, 24])], [(m.gemm(y, 16, 6), [1, 6])], opset=14)


def build_det_fpn() -> onnx.ModelProto:
    """PP-OCR-detector-shaped: a strided hard-swish backbone, an FPN neck (Resize nearest x2 and
    Add, Concat of upsampled scales), a DB head (ConvTranspose x2 twice, Sigmoid) and a
    HardSigmoid-gated Mul with broadcasting; 1x3x32x32 → 1x1x32x32 probability map."""
    m = _Zoo("det_fpn", seed=13)
    c1 = m.conv_bn_act("input", 3, 8, 3, stride=2, act="hswish")  # 16x16
    c2 = m.conv_bn_act(c1, 8, 16, 3, stride=2, act="hswish")  # 8x8
    c3 = m.conv_bn_act(c2, 16, 24, 3, stride=2, act="hswish")  # 4x4
    lat3 = m.conv(c3, 24, 16, (1, 1))
    lat2 = m.conv(c2, 16, 16, (1, 1))
    lat1 = m.conv(c1, 8, 16, (1, 1))
    scales = m.const("scales", [1.0, 1.0, 2.0, 2.0])
    up3 = m.node("Resize", [lat3, "", scales], "up", mode="nearest")
    p2 = m.node("Add", [lat2, up3], "fpn_add")
    up2 = m.node("Resize", [p2, "", scales], "up", mode="nearest")
    p1 = m.node("Add", [lat1, up2], "fpn_add")
    f3 = m.node("Resize", [m.conv(lat3, 16, 4, (3, 3), pads=(1, 1, 1, 1)), "",
                           m.const("scales4", [1.0, 1.0, 4.0, 4.0])], "up", mode="nearest")
    f2 = m.node("Resize", [m.conv(p2, 16, 4, (3, 3), pads=(1, 1, 1, 1)), "", scales], "up",
                mode="nearest")
    f1 = m.conv(p1, 16, 4, (3, 3), pads=(1, 1, 1, 1))
    fuse = m.node("Concat", [f1, f2, f3], "concat", axis=1)  # 12 x 16x16
    # channel attention gate (RSE-style): mean over space, conv, HardSigmoid, broadcast Mul
    gate = m.node("HardSigmoid", [m.conv(m.node("GlobalAveragePool", [fuse], "gap"), 12, 12,
                                          (1, 1))], "gate", alpha=0.2, beta=0.5)
    fuse = m.node("Mul", [fuse, gate], "gate_mul")
    head = m.conv_bn_act(fuse, 12, 8, 3, act="relu")
    w1 = m.weight("deconv_w", m.he((8, 8, 2, 2), 32))
    head = m.relu(m.node("ConvTranspose", [head, w1, m.weight("deconv_b", m.bias(8))], "deconv",
                         kernel_shape=[2, 2], strides=[2, 2]))  # 32x32
    w2 = m.weight("deconv_w", m.he((8, 1, 3, 3), 72))
    head = m.node("ConvTranspose", [head, w2, m.weight("deconv_b", m.bias(1))], "deconv",
                  kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    out = m.node("Sigmoid", [head], "prob")
    return m.finish_any([("input", [1, 3, 32, 32])], [(out, [1, 1, 32, 32])])


def build_nhwc_io() -> onnx.ModelProto:
    """tf2onnx-shaped: an NHWC input transposed to NCHW, convs, a transpose back to NHWC, then
    Reshape and MatMul + Add; 1x20x20x3 → 1x5."""
    m = _Zoo("nhwc_io", seed=14)
    y = m.node("Transpose", ["input"], "to_nchw", perm=[0, 3, 1, 2])
    y = m.conv_bn_act(y, 3, 12, 3, stride=2, act="relu")  # 10x10
    y = m.conv_bn_act(y, 12, 12, 3, group=12, act="relu")
    y = m.conv_bn_act(y, 12, 16, 1, act="relu")
    y = m.node("Transpose", [y], "to_nhwc", perm=[0, 2, 3, 1])
    y = m.node("Reshape", [y, m.int_const("shape", [1, -1])], "reshape")
    y = m.matmul_add(y, 10 * 10 * 16, 5)
    return m.finish_any([("input", [1, 20, 20, 3])], [(y, [1, 5])])


def build_grouped_dilated() -> onnx.ModelProto:
    """Grouped (2 and 4 groups), dilated, even-kernel and asymmetrically padded convs, a padded
    MaxPool and an AveragePool; 1x4x19x17 → 1x16x4x4."""
    m = _Zoo("grouped_dilated", seed=15)
    y = m.relu(m.conv("input", 4, 16, (3, 3), pads=(1, 1, 1, 1), group=2))
    w = m.weight("w", m.he((16, 16, 3, 3), 144))
    y = m.relu(m.node("Conv", [y, w, m.weight("b", m.bias(16))], "dil", kernel_shape=[3, 3],
                      dilations=[2, 2], pads=[2, 2, 2, 2]))
    y = m.relu(m.conv(y, 16, 16, (2, 2), stride=2, pads=(0, 1, 1, 0), group=4))  # 10x9
    y = m.node("MaxPool", [y], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = m.conv(y, 16, 16, (1, 1))
    y = m.node("AveragePool", [y], "avg", kernel_shape=[2, 2], strides=[1, 1])
    return m.finish_any([("input", [1, 4, 19, 17])], [(y, [1, 16, 4, 4])])


def build_inception_concat() -> onnx.ModelProto:
    """Four parallel branches (1x1, 3x3, 5x5, max pool + 1x1) concatenated, twice; → Softmax."""
    m = _Zoo("inception_concat", seed=16)
    y, c = m.relu(m.conv("input", 3, 8, (3, 3), pads=(1, 1, 1, 1))), 8
    for _ in range(2):
        b1 = m.relu(m.conv(y, c, 4, (1, 1)))
        b2 = m.relu(m.conv(m.relu(m.conv(y, c, 4, (1, 1))), 4, 6, (3, 3), pads=(1, 1, 1, 1)))
        b3 = m.relu(m.conv(y, c, 2, (5, 5), pads=(2, 2, 2, 2)))
        b4 = m.node("MaxPool", [y], "pool", kernel_shape=[3, 3], strides=[1, 1],
                    pads=[1, 1, 1, 1])
        b4 = m.relu(m.conv(b4, c, 4, (1, 1)))
        y, c = m.node("Concat", [b1, b2, b3, b4], "concat", axis=1), 16
    y = m.node("Flatten", [m.node("GlobalAveragePool", [y], "gap")], "flatten", axis=1)
    out = m.node("Softmax", [m.gemm(y, 16, 7)], "softmax", axis=1)
    return m.finish_any([("input", [1, 3, 16, 16])], [(out, [1, 7])])


def build_gated_fc() -> onnx.ModelProto:
    """FC layers (MatMul + Add and Gemm) with a sigmoid gate (GLU), Tanh, Clip (ReLU6) and a
    residual; 1x48 → 1x10."""
    m = _Zoo("gated_fc", seed=17)
    y = m.matmul_add("input", 48, 64)
    gate = m.node("Sigmoid", [m.matmul_add("input", 48, 64)], "gate")
    y = m.node("Mul", [m.node("Tanh", [y], "tanh"), gate], "glu")
    z = m.node("Clip", [m.gemm(y, 64, 64), m.const("lo", 0.0), m.const("hi", 6.0)], "relu6")
    y = m.node("Add", [y, z], "res")
    return m.finish_any([("input", [1, 48])], [(m.gemm(y, 64, 10), [1, 10])])


def build_broadcast_ops() -> onnx.ModelProto:
    """Add and Mul with every broadcast an NCHW model uses: per-channel [1,C,1,1], per-pixel
    [1,1,H,W], a scalar, and two activations of the same shape; 1x8x12x12 → 1x8x6x6."""
    m = _Zoo("broadcast_ops", seed=18)
    y = m.relu(m.conv("input", 8, 8, (3, 3), pads=(1, 1, 1, 1)))
    y = m.node("Mul", [y, m.weight("chan", m.rng.uniform(0.5, 1.5, (1, 8, 1, 1)))], "mul_c")
    y = m.node("Add", [y, m.weight("pix", m.rng.normal(0, 0.3, (1, 1, 12, 12)))], "add_p")
    z = m.conv(y, 8, 8, (1, 1))
    y = m.node("Mul", [y, z], "mul_t")
    y = m.node("Add", [y, m.const("s", 0.25)], "add_s")
    pooled = m.node("GlobalAveragePool", [y], "gap")
    y = m.node("Mul", [y, m.node("Sigmoid", [pooled], "sig")], "mul_gap")
    y = m.node("MaxPool", [y], "pool", kernel_shape=[2, 2], strides=[2, 2])
    return m.finish_any([("input", [1, 8, 12, 12])], [(y, [1, 8, 6, 6])])


def build_resize_linear() -> onnx.ModelProto:
    """Bilinear Resize (align-corners off) up and down between convs; 1x3x10x14 → 1x6x10x14."""
    m = _Zoo("resize_linear", seed=19)
    y = m.relu(m.conv("input", 3, 6, (3, 3), stride=2, pads=(1, 1, 1, 1)))  # 5x7
    y = m.node("Resize", [y, "", m.const("up", [1.0, 1.0, 2.0, 2.0])], "up", mode="linear")
    y = m.relu(m.conv(y, 6, 6, (3, 3), pads=(1, 1, 1, 1)))
    return m.finish_any([("input", [1, 3, 10, 14])], [(y, [1, 6, 10, 14])])


def build_lstm_kws() -> onnx.ModelProto:
    """Keyword-spotting-shaped recurrent model: 10 frames of 12 features → a bidirectional LSTM
    (16 hidden) → the last hidden states → Gemm → Softmax; 1x10x12 → 1x4."""
    m = _Zoo("lstm_kws", seed=20)
    hidden, feats, dirs = 16, 12, 2
    x = m.node("Transpose", ["input"], "seq_first", perm=[1, 0, 2])  # [T, 1, F]
    w = m.weight("lstm_w", m.rng.normal(0, 0.3, (dirs, 4 * hidden, feats)))
    r = m.weight("lstm_r", m.rng.normal(0, 0.3, (dirs, 4 * hidden, hidden)))
    b = m.weight("lstm_b", m.rng.normal(0, 0.1, (dirs, 8 * hidden)))
    y, y_h = m.fresh("lstm_y"), m.fresh("lstm_h")
    m.nodes.append(helper.make_node("LSTM", [x, w, r, b], [y, y_h], name=y_h,
                                    hidden_size=hidden, direction="bidirectional"))
    h = m.node("Reshape", [y_h, m.int_const("shape", [1, dirs * hidden])], "flat")
    out = m.node("Softmax", [m.gemm(h, dirs * hidden, 4)], "softmax", axis=1)
    return m.finish_any([("input", [1, 10, feats])], [(out, [1, 4])])


ZOO: dict[str, Callable[[], onnx.ModelProto]] = {
    "mbv3_se": build_mbv3_se,
    "se_hardswish": build_se_hardswish,
    "det_fpn": build_det_fpn,
    "nhwc_io": build_nhwc_io,
    "grouped_dilated": build_grouped_dilated,
    "inception_concat": build_inception_concat,
    "gated_fc": build_gated_fc,
    "broadcast_ops": build_broadcast_ops,
    "resize_linear": build_resize_linear,
    "lstm_kws": build_lstm_kws,
}


def main(argv: list[str]) -> None:
    out = Path(argv[0] if argv else "benchmarks/models/onnx")
    out.mkdir(parents=True, exist_ok=True)
    for name, build in ZOO.items():
        onnx.save(build(), out / f"{name}.onnx")
        print(out / f"{name}.onnx")


if __name__ == "__main__":
    main(sys.argv[1:])
