"""nnc's benchmarks as a pytest-benchmark suite: each model and target next to its peer, measured
in the same session.

    pytest benchmarks/ --benchmark-only [--bench-models kws,vww,ic,ad] [--bench-targets
        host,cortex-m7] [--benchmark-autosave] [--benchmark-compare[=NNNN]
        [--benchmark-compare-fail=min:5%]]
    python -m benchmarks.bench_tables .benchmarks/<machine>/NNNN_<commit>.json   # README tables

Groups (`<target>/<model>`):
- `host/<model>`: a call of the compiled model from Python (`CompiledModel.run`, ctypes) against
  `InferenceSession.run` of onnxruntime (one thread), same input; the outputs are compared
  before timing.
- `<cortex-m>/<model>`: fp32 and int8 (CMSIS-NN calls, the peer) and int8 (nnc's generated
  kernels) firmware, one emulated run per round; the timed figure is QEMU's wall time, the exact
  figures are in `extra_info`: instructions, instructions/MAC, RAM, arena, stack, flash.

`--benchmark-compare-fail` judges the timed stats; the instruction counts are exact, so
`python -m benchmarks.bench_tables --compare OLD.json NEW.json` lists every instruction change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import nnc
from benchmarks.models.mlperf_tiny import MODELS, sample_input


def _ort(model: Any) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def model_and_input(model_name: str) -> tuple[Any, dict[str, np.ndarray]]:
    model = MODELS[model_name]()
    return model, sample_input(model)


@pytest.fixture(scope="module")
def calibration(model_and_input: tuple[Any, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    from benchmarks.models.calibration import calibration_data

    return calibration_data(model_and_input[0], 40)


def _info(benchmark: Any, **extra: Any) -> None:
    benchmark.extra_info.update(extra)


def test_host_nnc(benchmark: Any, model_name: str, host_target: str,
                  model_and_input: tuple[Any, dict[str, np.ndarray]]) -> None:
    model, feeds = model_and_input
    benchmark.group = f"{host_target}/{model_name}"
    compiled = nnc.compile(model, target=host_target, bench=False)
    ref = _ort(model).run(None, feeds)[0]
    out = next(iter(compiled.run(feeds).values()))
    _info(benchmark, model=model_name, target=host_target, engine="nnc",
          macs=compiled.info["macs"], arena_bytes=compiled.info["arena_bytes"],
          weight_bytes=compiled.info["weight_bytes"],
          max_abs_diff_vs_ort=float(np.max(np.abs(out - ref))))
    benchmark(compiled.run, feeds)


def test_host_onnxruntime(benchmark: Any, model_name: str, host_target: str,
                          model_and_input: tuple[Any, dict[str, np.ndarray]]) -> None:
    model, feeds = model_and_input
    benchmark.group = f"{host_target}/{model_name}"
    sess = _ort(model)
    _info(benchmark, model=model_name, target=host_target, engine="onnxruntime")
    benchmark(sess.run, None, feeds)


@pytest.mark.parametrize("variant", ["fp32", "int8-cmsis-nn", "int8-generated"])
def test_device(benchmark: Any, model_name: str, device_target: str, variant: str,
                model_and_input: tuple[Any, dict[str, np.ndarray]],
                calibration: dict[str, np.ndarray]) -> None:
    import shutil

    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("needs gcc-arm-none-eabi and qemu-system-arm")
    model, feeds = model_and_input
    benchmark.group = f"{device_target}/{model_name}"
    options: dict[str, Any] = {}
    if variant != "fp32":
        options = {"quantize": "int8", "calibration": calibration,
                   "kernels": variant.removeprefix("int8-")}
    compiled = nnc.compile(model, target=device_target, **options)
    result = benchmark.pedantic(compiled.benchmark, kwargs={"inputs": feeds}, rounds=1,
                                iterations=1)
    _info(benchmark, model=model_name, target=device_target, engine=f"nnc {variant}",
          **{k: result[k] for k in ("instructions", "instructions_per_mac", "macs", "ram_bytes",
                                     "arena_bytes", "stack_bytes", "flash_bytes")},
          layers=[{"name": la["name"], "instructions": la["instructions"]}
                  for la in result["layers"]])
