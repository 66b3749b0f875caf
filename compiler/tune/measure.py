"""Measuring schedules on the emulated Cortex-M board.

`prepare` runs the compiler's front once (import, calibration and quantization, the graph
passes, lower-to-loops): what every candidate shares. A measurement then needs only the loop
passes, the C emitter, one firmware build and one QEMU run — and it measures one candidate for
*every* workload at once: layers with different workload keys each carry their own candidate
in the same image, and the board's timer gives exact per-layer instruction counts
(`nnc.backends.cortex_m.run`, QEMU `-icount`). Layers that share a key share the candidate.

    prep = prepare("kws.onnx", "cortex-m7", quantize="int8", calibration=data)
    m = CortexMMeasurer(prep, workdir)
    run = m.measure({workload_key: steps, ...})   # run.figures[key] = instructions per layer
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnc.compiler.errors import NncError
from nnc.ir.loops import Kernel, LoopModule, ScheduleStep
from nnc.passes.manager import PassError, PassManager, PipelineStep

OBJECTIVE = "qemu-instructions"


@dataclass
class Workload:
    """One distinct workload of a model: the key, the layers (kernel indices) that have it,
    its definition and buffer shapes, and the default schedule the compiler gives it."""

    key: str
    hash: str
    kind: str
    layers: list[int]
    names: list[str]
    macs: int
    defn: Any
    shapes: dict[str, tuple[int, ...]]
    default: tuple[ScheduleStep, ...]


@dataclass
class Prepared:
    """A model through the compiler's front, ready for the loop passes of each candidate."""

    target: Any
    module: LoopModule
    back: list[PipelineStep]
    facts: dict[str, Any]
    feeds: dict[str, np.ndarray]
    workloads: list[Workload]
    front_s: float

    @property
    def target_key(self) -> str:
        from nnc.passes.lower_to_loops import target_key

        return target_key(self.target)


def prepare(model: Any, target: str = "cortex-m7", *, input_shapes: Mapping[str, Any] | None = None,
            quantize: str | None = None, calibration: Any = None,
            calibration_method: str = "minmax", int8_rounding: str | None = None,
            seed: int = 0) -> Prepared:
    """Run the compiler's front on `model` for `target` with nnc's generated kernels (the ones
    that have schedules); the loop passes from `apply-tuning` on are left for each candidate."""
    from nnc.compiler import api
    from nnc.compiler.onnx.importer import import_model
    from nnc.compiler.pipeline import default_pipeline
    from nnc.passes.default_schedule import reduction_steps
    from nnc.passes.manager import parse_pipeline

    t0 = time.perf_counter()
    tgt = api._target(target)
    if tgt.kind != "cortex-m":
        raise NncError(f"nnc tune measures on the emulated Cortex-M boards; {tgt.name} is not one "
                       "(host tuning is not there yet)")
    graph = import_model(model, input_shapes, None)
    steps = parse_pipeline(default_pipeline(tgt.kind))
    steps, _ = api._kernel_choice(steps, tgt, "generated", None)
    steps = api._rounding_choice(steps, tgt, int8_rounding, quantize)
    facts: dict[str, Any] = {}
    try:
        if quantize is not None:
            graph, steps, info, _ = api._quantize_front(graph, steps, tgt, None, quantize,
                                                        calibration, calibration_method, {})
            facts["quant_ranges"] = info["ranges"]
        at = next(i for i, s in enumerate(steps) if s.name == "default-schedule")
        front = PassManager(steps[:at], target=tgt)
        front.facts.update(facts)
        module = front.run(graph)
    except PassError as e:
        raise NncError(f"compilation failed: {e}") from e
    if not isinstance(module, LoopModule):
        raise NncError("the pipeline must reach the loop IR")
    back = [PipelineStep("apply-tuning", None), *steps[at:]]
    shapes = {b.name: b.shape for b in module.buffers}
    workloads: dict[str, Workload] = {}
    for i, k in enumerate(module.kernels):
        # integer definitions only: a candidate counts when its outputs are bit-identical with
        # the untuned build, which float ones that regroup sums are not (a tolerance check for
        # them is the next step)
        if k.compute is None or not k.workload or k.compute.acc_dtype not in ("int32", "int64"):
            continue
        w = workloads.get(k.workload)
        if w is None:
            kshapes = {n: shapes[n] for n in k.params if n in shapes}
            w = workloads[k.workload] = Workload(
                k.workload, k.workload_hash, k.op_kind, [], [], 0, k.compute, kshapes,
                reduction_steps(k.compute, tgt, shapes))
        w.layers.append(i)
        w.names.append(k.op_name or k.name)
        w.macs += k.macs
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, b in zip(module.input_names or module.inputs, module.inputs, strict=True):
        buf = module.buffer_map()[b]
        if np.dtype(buf.dtype).kind == "f":
            feeds[name] = rng.standard_normal(buf.shape).astype(buf.dtype)
        else:
            feeds[name] = rng.integers(-128, 128, buf.shape).astype(buf.dtype)
    return Prepared(tgt, module, back, front.facts, feeds, list(workloads.values()),
                    time.perf_counter() - t0)


def scheduled_module(prep: Prepared, assignment: Mapping[str, tuple[ScheduleStep, ...]]
                     ) -> LoopModule:
    """The module through the loop passes with `assignment`'s schedules on their workloads."""
    pm = PassManager(prep.back, target=prep.target)
    pm.facts.update({k: v for k, v in prep.facts.items() if k != "tuned_kernels"})
    pm.facts["tuned_schedules"] = dict(assignment)
    module = pm.run(prep.module)
    assert isinstance(module, LoopModule)
    return module


@dataclass
class Run:
    """One build + run: instructions per layer of each workload, the outputs, or why not."""

    figures: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    error: str = ""
    total: int = 0  # whole-model instructions
    build_s: float = 0.0
    run_s: float = 0.0


class CortexMMeasurer:
    """Builds and runs candidate assignments on the emulated board of `prep.target`."""

    objective = OBJECTIVE

    def __init__(self, prep: Prepared, workdir: str | os.PathLike[str] | None = None,
                 timeout_s: float = 120.0) -> None:
        self.prep = prep
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(
            prefix="nnc-tune-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)  # type: ignore
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self.builds = 0

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for a cluster worker (`nnc tune --cluster`): the front, not this process's
        temporary folder (the worker's `for_worker` makes its own)."""
        return {**self.__dict__, "_tmp": None}

    def for_worker(self, workdir: str | os.PathLike[str]) -> CortexMMeasurer:
        """A measurer for a worker process (`nnc tune --workers`): same front, own folder."""
        return CortexMMeasurer(self.prep, workdir, self.timeout_s)

    def measure(self, assignment: Mapping[str, tuple[ScheduleStep, ...]]) -> Run:
        from nnc.backends.c.build import BuildError
        from nnc.backends.c.emit import emit_c
        from nnc.backends.cortex_m.build import build_firmware
        from nnc.backends.cortex_m.run import DeviceModel

        self.builds += 1
        out = self.workdir / f"b{self.builds % 2}"
        if out.exists():
            shutil.rmtree(out)
        t0 = time.perf_counter()
        try:
            module = scheduled_module(self.prep, assignment)
            files = emit_c(module)
            build_firmware(files, out, self.prep.target, module)
        except (PassError, NncError, BuildError) as e:
            return Run(error=f"build: {_first_line(e)}", build_s=time.perf_counter() - t0)
        t1 = time.perf_counter()
        try:
            dev = DeviceModel(out, timeout_s=self.timeout_s)
            r = dev.execute(self.prep.feeds)
        except NncError as e:
            return Run(error=f"run: {_first_line(e)}", build_s=t1 - t0,
                       run_s=time.perf_counter() - t1)
        run = Run(outputs=r.outputs, total=dev.ticks_to_instructions(r.total_ticks),
                  build_s=t1 - t0, run_s=time.perf_counter() - t1)
        for w in self.prep.workloads:
            counts = [dev.ticks_to_instructions(r.layer_ticks[i]) for i in w.layers]
            run.figures[w.key] = float(sum(counts)) / len(counts)
        return run

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def same_outputs(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """Bit for bit (the int8 models' outputs; a float output dequantized from int8 too)."""
    return set(a) == set(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        and np.array_equal(a[k].view(np.uint8), b[k].view(np.uint8)) for k in a)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def kernel_of(module: LoopModule, workload: Workload) -> Kernel:
    return module.kernels[workload.layers[0]]


def layer_names(workloads: Sequence[Workload]) -> list[str]:
    return [", ".join(w.names) for w in workloads]
