"""The Python API: `nnc.compile(model, target="host") -> CompiledModel`.

    >>> import nnc, numpy as np
    >>> m = nnc.compile("kws.onnx", target="host", output_dir="out")        # doctest: +SKIP
    >>> y = m.run({"input": np.zeros((1, 1, 49, 10), np.float32)})          # doctest: +SKIP
    >>> m.benchmark()["latency_ms"]["median"]                               # doctest: +SKIP

A compiled model lives in a directory: the C project (model.h, model.c, weights, runtime, a
Makefile), the built shared library and benchmark executable, and `nnc.json` describing the
model. `CompiledModel.load(dir)` reopens one (that is what `nnc run`/`nnc bench` do).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from nnc.compiler.errors import NncError
from nnc.compiler.onnx.importer import import_model
from nnc.compiler.pipeline import default_pipeline
from nnc.ir.graph import Graph
from nnc.ir.loops import LoopModule
from nnc.passes.manager import PassError, PassManager, PipelineStep, parse_pipeline

METADATA = "nnc.json"


def _target(name: str, ram: int | str | None = None, flash: int | str | None = None) -> Any:
    from nnc.backends.target import parse_target

    try:
        return parse_target(name, ram=ram, flash=flash)
    except ValueError as e:
        raise NncError(str(e)) from None


class CompiledModel:
    """A model compiled and built for a target, with `run` and `benchmark`."""

    def __init__(self, source_dir: Path, info: dict[str, Any], keep: Any = None) -> None:
        self.source_dir = Path(source_dir)
        self.info = info
        self.target = _target(info["target"], info.get("ram_bytes_limit"),
                              info.get("flash_bytes_limit"))
        self.compile_time_s: dict[str, float] = info.get("compile_time_s", {})
        self._runner: Any = None
        self._keep = keep  # a TemporaryDirectory that lives as long as this object

    @staticmethod
    def load(directory: str | os.PathLike[str]) -> CompiledModel:
        d = Path(directory)
        meta = d / METADATA
        if not meta.exists():
            raise NncError(
                f"{d}: not a compiled nnc model (no {METADATA}); run `nnc compile` first")
        return CompiledModel(d, json.loads(meta.read_text()))

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return list(self.info["inputs"])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self.info["outputs"])

    def random_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        feeds = {}
        for d in self.inputs:
            dt = np.dtype(d["dtype"])
            if dt.kind == "f":
                feeds[d["name"]] = rng.standard_normal(d["shape"]).astype(dt)
            elif dt.kind == "b":
                feeds[d["name"]] = rng.integers(0, 2, d["shape"]).astype(dt)
            else:
                feeds[d["name"]] = rng.integers(0, 10, d["shape"]).astype(dt)
        return feeds

    @property
    def is_device(self) -> bool:
        """True for microcontroller targets: runs go through the emulated board (QEMU)."""
        return bool(self.target.kind != "host")

    def _runner_for_target(self) -> Any:
        if self._runner is None:
            if self.is_device:
                from nnc.backends.cortex_m.run import DeviceModel

                self._runner = DeviceModel(self.source_dir)
            else:
                from nnc.backends.c.run import HostModel

                self._runner = HostModel(self.source_dir)
        return self._runner

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once (host: in-process; Cortex-M: on the emulated board); `inputs`/result keyed
        by the ONNX input/output names."""
        self.check_inputs(inputs)
        return dict(self._runner_for_target().run(dict(inputs)))

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        expected = {d["name"]: d for d in self.inputs}
        missing = [n for n in expected if n not in inputs]
        extra = [n for n in inputs if n not in expected]
        if missing or extra:
            raise NncError(
                f"inputs do not match the model: missing {missing}, unexpected {extra}; "
                f"the model's inputs are {list(expected)}")
        for name, d in expected.items():
            arr = np.asarray(inputs[name])
            if tuple(arr.shape) != tuple(d["shape"]):
                raise NncError(f"input '{name}' has shape {tuple(arr.shape)} but the model expects "
                               f"{tuple(d['shape'])}")
            if str(arr.dtype) != d["dtype"]:
                raise NncError(f"input '{name}' has dtype {arr.dtype} but the model expects "
                               f"{d['dtype']}")

    def benchmark(self, warmup: int = 10, repeat: int = 100,
                  inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Host: latency over `repeat` timed runs. Cortex-M: one run on the emulated board with
        exact instruction counts (whole model and per layer), RAM and flash."""
        if inputs is not None:
            self.check_inputs(inputs)
        if self.is_device:
            return dict(self._runner_for_target().benchmark(inputs=inputs))
        if not (self.source_dir / "bench").exists():
            raise NncError(f"{self.source_dir} was compiled without the benchmark executable "
                           "(bench=False); compile again to benchmark")
        runner = self._runner_for_target()
        result = dict(runner.benchmark(warmup=warmup, repeat=repeat, inputs=inputs))
        result.update(target=self.target.name, macs=self.info["macs"], repeat=repeat)
        return result


def _build_host(files: Mapping[str, str | bytes], out: Path, tgt: Any, opt_level: int,
                prefix: str, bench: bool) -> None:
    from nnc.backends.c.build import BuildError, build_project, write_project

    write_project(files, out, tgt, prefix=prefix, opt_level=opt_level)
    try:
        build_project(out, tgt, opt_level=opt_level, prefix=prefix, bench=bench)
    except BuildError as e:
        raise NncError(f"the C compiler failed on the generated code (a bug in nnc, please "
                       f"report it): {str(e).splitlines()[0]}") from e


def _io_desc(graph: Graph) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def d(v: Any) -> dict[str, Any]:
        return {"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype}

    return [d(v) for v in graph.inputs], [d(v) for v in graph.outputs]


RANDOM_CALIBRATION_SAMPLES = 20


def _quantize_front(
    graph: Graph, steps: list[PipelineStep], tgt: Any, dump_ir: Any, quantize: str,
    calibration: Any, method: str, times: dict[str, float],
) -> tuple[Graph, list[PipelineStep], dict[str, Any], PassManager]:
    """Run the float graph passes (those before fuse-ops / lowering), calibrate on their result,
    and return (float graph, the remaining steps led by quantize, quantization info, the
    pass manager that ran the float passes)."""
    from nnc.passes.calibrate import METHODS, calibrate
    from nnc.passes.quant_scheme import load_calibration_data, random_calibration_data

    if quantize != "int8":
        raise NncError(f"quantize={quantize!r} is not supported; use 'int8'")
    if calibration is None:
        raise NncError("quantize='int8' needs calibration data (a .npz, a folder of .npy, a "
                       "dict of arrays, or 'random')")
    if method not in METHODS:
        raise NncError(f"unknown calibration method {method!r}; choose one of {list(METHODS)}")
    split = next((i for i, s in enumerate(steps) if s.name in ("fuse-ops", "lower-to-loops")),
                 len(steps))
    rest = [s for s in steps[split:] if s.name != "quantize"]
    pre = PassManager([s for s in steps[:split] if s.name != "quantize"], target=tgt,
                      dump_dir=Path(dump_ir) / "float" if dump_ir else None)
    float_graph = pre.run(graph)
    t0 = time.perf_counter()
    if isinstance(calibration, str) and calibration == "random":
        samples = random_calibration_data(float_graph, RANDOM_CALIBRATION_SAMPLES)
    else:
        samples = load_calibration_data(calibration, float_graph.inputs)
    ranges = calibrate(float_graph, samples, method)
    times["calibration"] = time.perf_counter() - t0
    info: dict[str, Any] = {
        "scheme": "int8", "calibration_method": method, "calibration_samples": len(samples),
        "random_calibration": isinstance(calibration, str) and calibration == "random",
        "ranges": ranges, "samples": samples,
    }
    return float_graph, [PipelineStep("quantize", None), *rest], info, pre


def _accuracy(float_graph: Graph, quant_graph: Graph,
              samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """Output SQNR (dB) of the int8 graph vs the float graph over `samples` (graph interpreter),
    and how many ops were quantized."""
    from nnc.ir.interp import run_graph
    from nnc.passes.quant_scheme import sqnr_db

    names = float_graph.output_names()
    ref: dict[str, list[np.ndarray]] = {n: [] for n in names}
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for s in samples:
        a, b = run_graph(float_graph, s), run_graph(quant_graph, s)
        for n in names:
            ref[n].append(np.asarray(a[n], np.float64).ravel())
            got[n].append(np.asarray(b[n], np.float64).ravel())
    sqnr = {n: sqnr_db(np.concatenate(ref[n]), np.concatenate(got[n])) for n in names}
    int8_ops = [op.kind for op in quant_graph.ops if op.kind.endswith("_s8")]
    float_ops = sorted({op.kind for op in quant_graph.ops
                        if not op.kind.endswith("_s8") and op.kind not in
                        ("quantize_linear", "dequantize_linear", "reshape")})
    return {"output_sqnr_db": {n: round(v, 2) if np.isfinite(v) else str(v)
                               for n, v in sqnr.items()},
            "int8_ops": len(int8_ops), "float_ops": float_ops}


def compile(  # noqa: A001 - the public name users expect
    model: str | os.PathLike[str] | onnx.ModelProto,
    target: str = "host",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    pipeline: str | None = None,
    dump_ir: str | os.PathLike[str] | None = None,
    opt_level: int = 3,
    prefix: str = "nnc",
    bench: bool = True,
    ram: int | str | None = None,
    flash: int | str | None = None,
    quantize: str | None = None,
    calibration: str | os.PathLike[str] | Mapping[str, np.ndarray] | None = None,
    calibration_method: str = "minmax",
) -> CompiledModel:
    """Compile an ONNX model (path or ModelProto) for `target` and build it.

    With `output_dir` the project is written there (built in a temporary directory next to it and
    renamed into place only on success); without, into a temporary directory that lives as long as
    the returned object. `bench=False` skips linking the host benchmark executable. `ram`/`flash`
    override a microcontroller target's memory sizes (bytes or "512K", "2M").

    `quantize="int8"` quantizes after the float graph passes (before fuse-ops) with ranges
    calibrated on `calibration` (a .npz keyed by input name with samples on the first axis, a
    folder of .npy, a dict of such arrays, or "random": 20 random samples, with a warning) by
    `calibration_method` ("minmax", "percentile" or "entropy"); nnc.json gets the output SQNR of
    the int8 graph against the float one on the calibration samples."""
    tgt = _target(target, ram, flash)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    graph = import_model(model, input_shapes)
    times["import"] = time.perf_counter() - t0

    try:
        steps = parse_pipeline(pipeline or default_pipeline(tgt.kind))
    except PassError as e:
        raise NncError(str(e)) from None
    quant_info: dict[str, Any] | None = None
    pre_timings: list[tuple[str, float]] = []
    pre_text = ""
    t0 = time.perf_counter()
    try:
        if quantize is not None:
            graph, steps, quant_info, pre = _quantize_front(
                graph, steps, tgt, dump_ir, quantize, calibration, calibration_method, times)
            pre_timings, pre_text = pre.timings, pre.pipeline_text()
        pm = PassManager(steps, target=tgt, dump_dir=dump_ir)
        if quant_info is not None:
            pm.facts["quant_ranges"] = quant_info.pop("ranges")
        module = pm.run(graph)
    except PassError as e:
        raise NncError(f"compilation failed: {e}") from e
    times["passes"] = time.perf_counter() - t0 - times.get("calibration", 0.0)
    if quant_info is not None:
        quant_info.update(_accuracy(graph, pm.facts["quantized_graph"],
                                    quant_info.pop("samples")))
    if not isinstance(module, LoopModule):
        raise NncError("the pipeline must end at the loop IR (include lower-to-loops)")

    from nnc.backends.c.emit import emit_c

    t0 = time.perf_counter()
    files = emit_c(module, prefix=prefix)
    times["codegen"] = time.perf_counter() - t0

    inputs, outputs = _io_desc(graph)
    memory = pm.facts.get("memory", {})
    info: dict[str, Any] = {
        "target": tgt.name,
        "ram_bytes_limit": tgt.ram_bytes,
        "flash_bytes_limit": tgt.flash_bytes,
        "prefix": prefix,
        "inputs": inputs,
        "outputs": outputs,
        "macs": int(sum(k.macs for k in module.kernels)),
        "num_kernels": len(module.kernels),
        "weight_bytes": int(sum(np.asarray(a).nbytes for a in module.constants.values())),
        "arena_bytes": int(module.arena_size),
        "arena_floor_bytes": int(memory.get("floor_bytes", module.arena_size)),
        "pipeline": ",".join(filter(None, (pre_text, pm.pipeline_text()))),
        "pass_times_s": {f"{i:02d}-{n}": round(t, 4)
                         for i, (n, t) in enumerate(pre_timings + pm.timings)},
        "layers": [{"name": k.op_name, "op": k.op_kind, "macs": k.macs} for k in module.kernels],
    }
    if quant_info is not None:
        info["quantization"] = quant_info

    keep = None
    if output_dir is None:
        keep = tempfile.TemporaryDirectory(prefix="nnc-")
        final = Path(keep.name) / "model"
        staging = final
        staging.mkdir()
    else:
        final = Path(output_dir)
        if final.exists() and not (final / METADATA).exists() and any(final.iterdir()):
            raise NncError(f"{final}: exists and is not an nnc output directory; refusing to "
                           "overwrite it")
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        t0 = time.perf_counter()
        if tgt.kind == "host":
            _build_host(files, staging, tgt, opt_level, prefix, bench)
        else:
            from nnc.backends.cortex_m.build import build_firmware

            fw = build_firmware(files, staging, tgt, module, opt_level=opt_level, prefix=prefix)
            info["firmware"] = {"flash_bytes": fw.flash_bytes, "static_ram_bytes":
                                fw.static_ram_bytes, "stack_bytes": fw.stack_bytes,
                                "ram_bytes": fw.arena_bytes + fw.stack_bytes}
        times["c_compiler"] = time.perf_counter() - t0
        info["compile_time_s"] = {k: round(v, 4) for k, v in times.items()}
        (staging / METADATA).write_text(json.dumps(info, indent=1))
        if staging != final:
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
    except BaseException:
        if staging != final:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return CompiledModel(final, info, keep)
