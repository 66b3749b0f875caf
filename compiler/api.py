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
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from nnc import config
from nnc.compiler.errors import NncError
from nnc.compiler.onnx.importer import import_model
from nnc.compiler.output_dir import FS_ERRNOS, OutputDir, check_build, fs_error
from nnc.compiler.pipeline import default_pipeline
from nnc.compiler.signals import terminate_on_signals
from nnc.compiler.tune.apply import open_tuning, tuning_info, with_apply_tuning
from nnc.ir.graph import Graph
from nnc.ir.loops import For, LoopModule, walk_stmts
from nnc.passes.manager import PassError, PassManager, PipelineStep, parse_pipeline

if TYPE_CHECKING:
    from nnc.compiler.report import QuantReport

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
        self.device: str | None = info.get("opencl", {}).get("device_spec")  # OpenCL only
        self._keep = keep  # a TemporaryDirectory that lives as long as this object

    @staticmethod
    def load(directory: str | os.PathLike[str]) -> CompiledModel:
        d = Path(directory)
        meta = d / METADATA
        if not meta.exists():
            raise NncError(
                f"{d}: not a compiled nnc model (no {METADATA}); run `nnc compile` first")
        try:
            check_build(d)
            info = json.loads(meta.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise NncError(f"{meta}: not valid JSON ({e}); compile again") from None
        except OSError as e:
            raise fs_error(e, f"reading {d}") from None
        if not isinstance(info, dict) or not {"target", "inputs", "outputs"} <= set(info):
            raise NncError(f"{meta}: not an nnc model description (a key of target, inputs, "
                           "outputs is missing); compile again")
        return CompiledModel(d, info)

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return list(self.info["inputs"])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self.info["outputs"])

    @property
    def quant_report(self) -> QuantReport | None:
        """The int8 accuracy report (a `nnc.compiler.report.QuantReport`; `print` it for the
        table) of a model compiled with quantize="int8", report=True; None otherwise."""
        data = self.info.get("quantization", {}).get("report")
        if data is None:
            return None
        from nnc.compiler.report import QuantReport

        return QuantReport.from_json(data)

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
    def backend(self) -> Any:
        """The target kind's `nnc.backends.base.Backend` (emit, build, load, benchmark)."""
        from nnc.backends.base import get_backend

        return get_backend(self.target.kind)

    @property
    def is_device(self) -> bool:
        """True for microcontroller targets: runs go through the emulated board (QEMU)."""
        return bool(self.backend.is_device)

    def _runner_for_target(self) -> Any:
        if self._runner is None:
            self._runner = self.backend.load(self.source_dir, self.info, self.device)
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
        bound = [n for n in extra if n in self.info.get("bound_inputs", [])]
        if missing or extra:
            raise NncError(
                f"inputs do not match the model: missing {missing}, unexpected {extra}; "
                f"the model's inputs are {list(expected)}"
                + (f" ({bound} were bound at compile time with --bind)" if bound else ""))
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
        return self.backend.benchmark(self._runner_for_target(), self.source_dir, self.info,
                                      warmup, repeat, inputs)


def _kernel_choice(steps: list[PipelineStep], tgt: Any, kernels: str | None,
                   cmsis_nn: str | os.PathLike[str] | None) -> tuple[list[PipelineStep], Any]:
    """The pipeline with lower-to-loops set to `kernels`, and the CMSIS-NN library to build
    against (None with generated kernels)."""
    from nnc.backends.cmsis_nn import KERNEL_CHOICES, find_library
    from nnc.passes.lower_to_loops import LowerOptions

    # a CMSIS-NN checkout (given, or $CMSIS_NN_PATH on Cortex-M) asks for CMSIS-NN kernels, on
    # the host too; without one nnc's generated kernels run: they take fewer instructions than
    # both the portable CMSIS-NN subset (~4x on KWS) and the real library on the M4/M7
    choice = kernels or ("cmsis-nn" if cmsis_nn or (tgt.kind == "cortex-m"
                                                  and os.environ.get("CMSIS_NN_PATH"))
                         else "generated")
    from nnc.backends.base import get_backend

    if get_backend(tgt.kind).generated_only and choice != "generated":
        raise NncError(f"the {tgt.name} target runs nnc's generated kernels only (no CMSIS-NN)")
    if choice not in KERNEL_CHOICES:
        raise NncError(f"kernels={choice!r} is not supported; choose one of "
                       f"{list(KERNEL_CHOICES)}")
    if cmsis_nn is not None and choice != "cmsis-nn":
        raise NncError("a CMSIS-NN path is only used with kernels='cmsis-nn'")
    out = []
    for s in steps:
        if s.name == "lower-to-loops" and (kernels is not None
                                           or s.options in (None, LowerOptions())):
            s = PipelineStep(s.name, LowerOptions(kernels=choice))
        out.append(s)
    return out, (find_library(cmsis_nn) if choice == "cmsis-nn" else None)


def _thread_choice(steps: list[PipelineStep], tgt: Any,
                   threads: int | None) -> tuple[list[PipelineStep], int]:
    """The pipeline with parallelize set to `threads` (default: the pipeline's, else 1), and
    the thread count the C code is emitted and built for."""
    from nnc.passes.parallelize import ParallelizeOptions

    given = [s.options.threads for s in steps if s.name == "parallelize" and s.options]
    n = threads if threads is not None else (given[-1] if given else 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise NncError(f"threads={n!r}: the thread count must be an integer >= 1")
    if n > 1 and tgt.kind != "host":
        raise NncError(f"threads={n}: parallel loops run on the host target only, not on "
                       f"{tgt.name}; compile for {tgt.name} with threads=1 (--threads 1)")
    if n > 1 and not any(s.name == "parallelize" for s in steps):
        steps = [*steps, PipelineStep("parallelize", None)]
    out = []
    for s in steps:
        if s.name == "parallelize":
            s = PipelineStep(s.name, replace(s.options or ParallelizeOptions(), threads=n))
        out.append(s)
    return out, n


def _rounding_choice(steps: list[PipelineStep], tgt: Any, int8_rounding: str | None,
                     quantize: str | None) -> list[PipelineStep]:
    """The pipeline with fuse-qdq set to `int8_rounding` (default: the target's)."""
    from nnc.passes.fuse_qdq import ROUNDINGS, FuseQdqOptions, default_rounding

    if int8_rounding is not None and int8_rounding not in ROUNDINGS:
        raise NncError(f"int8_rounding={int8_rounding!r} is not supported; choose one of "
                       f"{list(ROUNDINGS)}")
    if quantize is not None and int8_rounding == "onnx":
        raise NncError("int8_rounding='onnx' is for pre-quantized models; quantize='int8' "
                       "always rounds the TFLite way (what CMSIS-NN computes)")
    choice = int8_rounding or default_rounding(tgt)
    out = []
    for s in steps:
        if s.name == "fuse-qdq" and (int8_rounding is not None
                                     or s.options in (None, FuseQdqOptions())):
            s = PipelineStep(s.name, FuseQdqOptions(rounding=choice))
        out.append(s)
    return out


def _io_desc(graph: Graph) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def d(v: Any) -> dict[str, Any]:
        return {"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype}

    return [d(v) for v in graph.inputs], [d(v) for v in graph.outputs]


RANDOM_CALIBRATION_SAMPLES = 20


def _quantize_front(
    graph: Graph, steps: list[PipelineStep], tgt: Any, dump_ir: Any, quantize: str,
    calibration: Any, method: str, times: dict[str, float], evaluation: Any = None,
) -> tuple[Graph, list[PipelineStep], dict[str, Any], PassManager]:
    """Run the float graph passes (those before fuse-ops / lowering), calibrate on their result,
    and return (float graph, the remaining steps led by quantize, quantization info, the
    pass manager that ran the float passes). Without `evaluation` data the last 20% of the
    calibration samples are held out of calibration to evaluate the int8 graph on."""
    from nnc.compiler.report import SEPARATE, split_holdout
    from nnc.passes.calibrate import METHODS, calibrate
    from nnc.passes.quant_scheme import load_calibration_data, random_calibration_data

    if quantize != "int8":
        raise NncError(f"quantize={quantize!r} is not supported; use 'int8'")
    if calibration is None:
        raise NncError("quantize='int8' needs calibration data (a .npz, a folder of .npy, a "
                       "dict of arrays, or 'random')")
    if method not in METHODS:
        raise NncError(f"unknown calibration method {method!r}; choose one of {list(METHODS)}")
    split = next((i for i, s in enumerate(steps)
                  if s.name in ("layout-nhwc", "fuse-ops", "lower-to-loops")), len(steps))
    rest = [s for s in steps[split:] if s.name != "quantize"]
    pre = PassManager([s for s in steps[:split] if s.name != "quantize"], target=tgt,
                      dump_dir=Path(dump_ir) / "float" if dump_ir else None)
    float_graph = pre.run(graph)
    t0 = time.perf_counter()
    if isinstance(calibration, str) and calibration == "random":
        samples = random_calibration_data(float_graph, RANDOM_CALIBRATION_SAMPLES)
    else:
        samples = load_calibration_data(calibration, float_graph.inputs)
    if evaluation is None:
        samples, eval_samples, eval_source = split_holdout(samples)
    else:
        try:
            eval_samples = load_calibration_data(evaluation, float_graph.inputs)
        except NncError as e:
            raise NncError(f"evaluation data: {e}") from None
        eval_source = SEPARATE
    ranges = calibrate(float_graph, samples, method)
    times["calibration"] = time.perf_counter() - t0
    info: dict[str, Any] = {
        "scheme": "int8", "calibration_method": method, "calibration_samples": len(samples),
        "random_calibration": isinstance(calibration, str) and calibration == "random",
        "ranges": ranges, "eval_samples": eval_samples, "eval_source": eval_source,
    }
    return float_graph, [PipelineStep("quantize", None), *rest], info, pre


def _accuracy_report(float_graph: Graph, facts: Mapping[str, Any],
                     samples: Sequence[Mapping[str, np.ndarray]], source: str,
                     layers: bool) -> dict[str, Any]:
    """nnc.json's accuracy keys for the quantized graph the quantize pass left in `facts`, plus
    the per-layer report under "report" when `layers`."""
    from nnc.compiler.report import quant_report, quant_summary

    quant_graph = facts["quantized_graph"]
    rep = quant_report(float_graph, quant_graph, facts["quant_map"], samples, source, layers)
    info = quant_summary(rep, quant_graph)
    if layers:
        info["report"] = rep.to_json()
    return info


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
    evaluation: str | os.PathLike[str] | Mapping[str, np.ndarray] | None = None,
    report: bool = False,
    kernels: str | None = None,
    cmsis_nn: str | os.PathLike[str] | None = None,
    keep_failed: bool = False,
    bind: Mapping[str, Any] | None = None,
    int8_rounding: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    tuning_cache: str | os.PathLike[str] | bool | None = None,
) -> CompiledModel:
    """Compile an ONNX model (path or ModelProto) for `target` and build it.

    With `output_dir` the project is written there: built in a staging folder inside it and
    swapped in only on success, replacing only the files an earlier compile wrote (listed in its
    `.nnc-manifest.json`; see `nnc.compiler.output_dir`); without, into a temporary directory
    that lives as long as the returned object. `bench=False` skips linking the host benchmark
    executable. `ram`/`flash` override a microcontroller target's memory sizes (bytes or "512K",
    "2M").

    `quantize="int8"` quantizes after the float graph passes (before fuse-ops) with ranges
    calibrated on `calibration` (a .npz keyed by input name with samples on the first axis, a
    folder of .npy, a dict of such arrays, or "random": 20 random samples, with a warning) by
    `calibration_method` ("minmax", "percentile" or "entropy"). The int8 graph is evaluated
    against the float one on `evaluation` (same forms as `calibration`; default: the last 20% of
    the calibration samples, held out of calibration): nnc.json's "quantization" gets the output
    SQNR and top-1 agreement; `report=True` adds the per-layer SQNR report (`nnc.compiler.report`)
    there and as `CompiledModel.quant_report`.

    `kernels` picks who runs the int8 ops: "generated" (nnc's own scheduled loop nests, with
    the tuning cache's schedules; the default) or "cmsis-nn" (calls into CMSIS-NN, built from
    `cmsis_nn` / $CMSIS_NN_PATH, else nnc's portable CMSIS-NN subset; the default on Cortex-M
    when a checkout is given, or $CMSIS_NN_PATH is set). Ops CMSIS-NN lacks are generated
    either way.

    A project the C compiler fails on raises `GeneratedCodeError` (nnc's bug) or, when a
    CMSIS-NN checkout's sources fail, `LibraryBuildError` (an NncError), with the compiler's
    first errors; `keep_failed=True` (or NNC_DEBUG=1) keeps the failed project and names it.

    `bind` fixes graph inputs to constants at compile time, e.g. `bind={"sr": 16000}` (a number,
    a list, a numpy array, or the CLI's text forms: "1,2,3", a path to a .npy); the value takes
    the input's declared dtype and shape. A bound input is no longer an input of the compiled
    model, and what is computed from it folds: shape operands, an If on its value.

    `int8_rounding` is how a pre-quantized model's (QDQ / QOperator) requantization rounds:
    "tflite" (the default on every target, so host and board agree: TFLite's double rounding,
    bit-exact with TFLite Micro and CMSIS-NN) or "onnx" (one rounding, as onnxruntime). The graph
    interpreter, the generated kernels and the CMSIS-NN calls compute the same either way.
    `quantize="int8"` always rounds the TFLite way.

    `device` (target "opencl") picks the OpenCL device that builds and runs the kernels:
    "pocl", "gpu", "cpu", an index, or part of its name (default: the first device).

    `threads` (host only, default 1) runs the outermost legal loop of each big kernel on that
    many threads (OpenMP; fixed at compile time, recorded in nnc.json); 1 emits serial code.

    `tuning_cache` (a file `nnc.tune` wrote) gives each generated kernel the best schedule
    measured for its workload on this target, with no measurement (`nnc.compiler.tune.apply`);
    None uses the default cache ($NNC_TUNING_CACHE or the XDG one) where it exists, False none."""
    if quantize is None and (report or evaluation is not None):
        raise NncError("report=True and evaluation= need quantize='int8'")
    tgt = _target(target, ram, flash)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    from nnc.passes.check_fit import check_weight_sizes, check_weights_fit

    if tgt.flash_bytes is not None:  # from the dims, before the weights are read: fails fast
        from nnc.compiler.onnx.weight_sizes import weight_sizes

        int8 = quantize is not None
        check_weight_sizes(weight_sizes(model, int8), tgt, int8, "checked before loading them")
    graph = import_model(model, input_shapes, bind)
    times["import"] = time.perf_counter() - t0
    check_weights_fit(graph, tgt, int8=quantize is not None)  # before lowering: fails fast

    try:
        steps = parse_pipeline(pipeline or default_pipeline(tgt.kind))
    except PassError as e:
        raise NncError(str(e)) from None
    steps, library = _kernel_choice(steps, tgt, kernels, cmsis_nn)
    steps = _rounding_choice(steps, tgt, int8_rounding, quantize)
    steps, n_threads = _thread_choice(steps, tgt, threads)
    quant_info: dict[str, Any] | None = None
    rounding: str | None = None
    pre_timings: list[tuple[str, float]] = []
    pre_text = ""
    tuning = None
    t0 = time.perf_counter()
    try:
        if quantize is not None:
            graph, steps, quant_info, pre = _quantize_front(
                graph, steps, tgt, dump_ir, quantize, calibration, calibration_method, times,
                evaluation)
            pre_timings, pre_text = pre.timings, pre.pipeline_text()
            rounding = pre.facts.get("int8_rounding", "tflite")
        tuning = open_tuning(tuning_cache, tgt)
        if tuning is not None:
            steps = with_apply_tuning(steps)
        pm = PassManager(steps, target=tgt, dump_dir=dump_ir)
        if quant_info is not None:
            pm.facts["quant_ranges"] = quant_info.pop("ranges")
        if tuning is not None:
            pm.facts["tuned_schedules"] = tuning
        module = pm.run(graph)
        rounding = pm.facts.get("int8_rounding", rounding)
    except PassError as e:
        raise NncError(f"compilation failed: {e}") from e
    finally:
        if tuning is not None:
            tuning.cache.close()
    times["passes"] = time.perf_counter() - t0 - times.get("calibration", 0.0)
    if quant_info is not None:
        t0 = time.perf_counter()
        quant_info.update(_accuracy_report(graph, pm.facts, quant_info.pop("eval_samples"),
                                           quant_info.pop("eval_source"), report))
        times["accuracy"] = time.perf_counter() - t0
    if not isinstance(module, LoopModule):
        raise NncError("the pipeline must end at the loop IR (include lower-to-loops)")

    from nnc.backends.base import get_backend

    t0 = time.perf_counter()
    files = get_backend(tgt.kind).emit(module, prefix, threads=n_threads)
    from nnc.backends.cmsis_nn import library_calls

    cmsis = library if library_calls(module) else None
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
        "bound_inputs": sorted(bind or {}),
        "macs": int(sum(k.macs for k in module.kernels)),
        "num_kernels": len(module.kernels),
        "threads": n_threads,
        "parallel_kernels": sum(any(isinstance(s, For) and s.kind == "parallel"
                                    for s in walk_stmts(k.body)) for k in module.kernels),
        "kernel_library": (None if cmsis is None else
                           "cmsis-nn (portable)" if cmsis.portable else f"cmsis-nn ({cmsis.root})"),
        "library_calls": library_calls(module),
        "weight_bytes": int(sum(np.asarray(a).nbytes for a in module.constants.values())),
        "arena_bytes": int(module.arena_size),
        "arena_floor_bytes": int(memory.get("floor_bytes", module.arena_size)),
        "pipeline": ",".join(filter(None, (pre_text, pm.pipeline_text()))),
        "pass_times_s": {f"{i:02d}-{n}": round(t, 4)
                         for i, (n, t) in enumerate(pre_timings + pm.timings)},
        "layers": [{"name": k.op_name, "op": k.op_kind, "macs": k.macs} for k in module.kernels],
        "model": _model_identity(model),  # the history (compiler/history.py) keys on it
        "memory_plan": _memory_plan(module),  # the HTML report's arena timeline
        "options": {"opt_level": opt_level, "quantize": quantize, "kernels": kernels,
                    "calibration_method": calibration_method if quantize else None,
                    "pipeline": pipeline, "ram": ram, "flash": flash},
    }
    if quant_info is not None:
        info["quantization"] = quant_info
    if tuning is not None:
        info["tuning"] = tuning_info(tuning, pm.facts)
    if rounding is not None:  # the model has int8 ops (pre-quantized, or quantize="int8")
        info["int8_rounding"] = rounding

    if output_dir is None:
        keep = tempfile.TemporaryDirectory(prefix="nnc-")
        final = Path(keep.name) / "model"
        final.mkdir()
        try:
            _build(files, final, tgt, module, opt_level, prefix, bench, cmsis, info, times,
                   final, device)
        except BaseException as e:
            _failed(e, keep_failed, lambda: _keep_temporary(final))
            raise
        return CompiledModel(final, info, keep)
    with terminate_on_signals(), OutputDir(output_dir) as out:
        try:
            _build(files, out.staging, tgt, module, opt_level, prefix, bench, cmsis, info,
                   times, out.root, device)
            out.commit()
        except OSError as e:
            if e.errno in FS_ERRNOS:
                raise fs_error(e, f"writing the output folder {out.root}") from None
            raise
        except BaseException as e:
            _failed(e, keep_failed, out.keep_failed)
            raise
    return CompiledModel(out.root, info)


def _memory_plan(module: LoopModule) -> list[dict[str, Any]]:
    from nnc.compiler.report_html import memory_plan

    return memory_plan(module)


def _model_identity(model: str | os.PathLike[str] | onnx.ModelProto) -> dict[str, str]:
    """The model's name and the SHA-256 of its ONNX bytes."""
    import hashlib

    if isinstance(model, onnx.ModelProto):
        return {"name": model.graph.name or "model",
                "sha256": hashlib.sha256(model.SerializeToString()).hexdigest()}
    from nnc.compiler.history import file_hash

    return {"name": Path(model).stem, "sha256": file_hash(model)}


def _build(files: Mapping[str, str | bytes], out: Path, tgt: Any, module: LoopModule,
           opt_level: int, prefix: str, bench: bool, cmsis: Any, info: dict[str, Any],
           times: dict[str, float], final: Path, device: str | None) -> None:
    """Write and build the project into `out` (staging for `final`, the output folder; the
    same folder for a temporary build) and write nnc.json there."""
    from nnc.backends.base import BuildJob, get_backend

    t0 = time.perf_counter()
    info.update(get_backend(tgt.kind).build(BuildJob(files, out, final, tgt, module, opt_level,
                                                     prefix, bench, cmsis, device,
                                                     info.get("threads", 1))))
    times["c_compiler"] = time.perf_counter() - t0
    info["compile_time_s"] = {k: round(v, 4) for k, v in times.items()}
    (out / METADATA).write_text(json.dumps(info, indent=1))


def _failed(e: BaseException, keep_failed: bool, keep: Any) -> None:
    """A failed build: keep the project where asked (and say where), else note how to."""
    from nnc.backends.c.build import FailedBuild

    if isinstance(e, FailedBuild):
        if keep_failed or config.debug():
            e.project, e.kept = keep(), True
        else:
            e.kept = False


def _keep_temporary(staging: Path) -> Path:
    """A failed project of a compile into a temporary directory (removed with it): moved into a
    new folder in the system's temp."""
    kept = Path(tempfile.mkdtemp(prefix="nnc-failed-"))
    shutil.move(str(staging), kept / "model")
    return kept / "model"
