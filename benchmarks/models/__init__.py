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
           "model_stats", "sample_input", "save_all"]
