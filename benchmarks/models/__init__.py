"""Models used by the benchmarks and the whole-model tests.

`mlperf_tiny` builds the four MLPerf Tiny models; the nine "light" models ship inside the onnx
wheel (opset 9, 1x3x224x224 input, weights made by ConstantOfShape nodes) with a reference output
computed from the input `light_input` makes.
"""

from pathlib import Path
from typing import Any

import numpy as np
import onnx

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                "shufflenet", "squeezenet", "vgg19", "zfnet512")


def light_input(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The input onnx's backend runner feeds these models: arange(n) / n in the input's shape."""
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name not in inits:
            shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
            n = int(np.prod(shape))
            feeds[vi.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds


def randomize_light_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy of light model `model` whose conv / gemm / batch-norm weights are random.

    The shipped models fill every weight with one value (ConstantOfShape), so every output
    channel is the same and the softmax output is flat (1/1000 everywhere): a wrong tap or a
    swapped channel cannot show. Here each ConstantOfShape that feeds a Conv / Gemm weight or
    bias or a BatchNormalization parameter becomes an initializer of the same shape: He-scaled
    normal weights, small biases, batch-norm scale near 1 and variance in [0.5, 1.5], so the
    activations stay O(1) through 50+ layers and the classes differ. Where the model ends in
    a Softmax, its input (the logits) is a second output.
    """
    rng = np.random.default_rng(seed)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    roles: dict[str, tuple[str, int, onnx.NodeProto]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            roles.setdefault(name, (node.op_type, i, node))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    new_inits = []
    for node in model.graph.node:
        role = roles.get(node.output[0]) if node.op_type == "ConstantOfShape" else None
        if role is None or role[:2] not in _RANDOM_ROLES or node.input[0] not in inits:
            out.graph.node.append(node)
            continue
        shape = tuple(int(d) for d in inits[node.input[0]])
        op, index, consumer = role
        if (op, index) in (("Conv", 1), ("Gemm", 1)):
            trans_b = any(a.name == "transB" and a.i for a in consumer.attribute)
            fan_in = int(np.prod(shape[1:])) if op == "Conv" or trans_b else shape[0]
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif op == "BatchNormalization" and index == 1:
            value = rng.normal(1.0, 0.1, shape)
        elif op == "BatchNormalization" and index == 4:
            value = rng.uniform(0.5, 1.5, shape)
        else:  # biases, batch-norm shift and mean
            value = rng.normal(0.0, 0.05, shape)
        new_inits.append(onnx.numpy_helper.from_array(value.astype(np.float32), node.output[0]))
    out.graph.initializer.extend(new_inits)
    # The trained-like weights give peaked logits, so the softmax output saturates (0 / 1):
    # its input becomes a second output, where a wrong number shows.
    producers = {n.output[0]: n for n in out.graph.node}
    last = producers.get(out.graph.output[0].name)
    if last is not None and last.op_type == "Softmax":
        inferred = onnx.shape_inference.infer_shapes(out)
        for vi in inferred.graph.value_info:
            if vi.name == last.input[0]:
                out.graph.output.append(vi)
    return out


_RANDOM_ROLES = {("Conv", 1), ("Conv", 2), ("Gemm", 1), ("Gemm", 2),
                 ("BatchNormalization", 1), ("BatchNormalization", 2),
                 ("BatchNormalization", 3), ("BatchNormalization", 4)}


def load_light(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray], np.ndarray]:
    """(model, input, reference output) of light model `name` (e.g. "resnet50")."""
    model = onnx.load(LIGHT_DIR / f"light_{name}.onnx")
    ref = onnx.numpy_helper.to_array(onnx.load_tensor(LIGHT_DIR / f"light_{name}_output_0.pb"))
    return model, light_input(model), ref


_MLPERF_NAMES = ("EXPECTED", "MODELS", "model_stats", "sample_input", "save_all")


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m benchmarks.models.mlperf_tiny` does not import the module twice.
    if name in _MLPERF_NAMES:
        from benchmarks.models import mlperf_tiny

        return getattr(mlperf_tiny, name)
    raise AttributeError(name)


__all__ = ["EXPECTED", "LIGHT_DIR", "LIGHT_MODELS", "MODELS", "light_input", "load_light",
           "model_stats", "randomize_light_weights", "sample_input", "save_all"]
