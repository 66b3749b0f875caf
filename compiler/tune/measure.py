"""Measuring schedules: on the emulated Cortex-M board (instructions) or on the host (ns).

`prepare` runs the compiler's front once (import, calibration and quantization, the graph
passes, lower-to-loops): what every candidate shares. A measurement then needs only the loop
passes, the C emitter, one firmware build and one QEMU run — and it measures one candidate for
*every* workload at once: layers with different workload keys each carry their own candidate
in the same image, and the board's timer gives exact per-layer instruction counts
(`nnc.backends.cortex_m.run`, QEMU `-icount`). Layers that share a key share the candidate.

    prep = prepare("kws.onnx", "cortex-m7", quantize="int8", calibration=data)
    m = CortexMMeasurer(prep, workdir)
    run = m.measure({workload_key: steps, ...})   # run.figures[key] = instructions per layer

On the host (`HostMeasurer`, fp32 conv / gemm, objective `host-ns`) one executable holds a
whole batch: each candidate assignment is the model emitted under a prefix of its own
(`cand0_run`, `cand1_run`, ...), compiled on its own (a candidate that does not compile fails
alone) and linked with a generated harness. The harness runs each model once with every kernel
once (the outputs the tuner validates: the model's, and each tuned layer's own output, written
out after its call), then times it: each tuned layer runs warm-up + repeat
times in a row inside the model's own run (the `NNC_LAYER_BEGIN`/`END` hooks of model.c; its
inputs are the real intermediate tensors), median ns per layer, in `rounds` rounds that
alternate the candidates, pinned to one CPU; the figure is the median of the rounds. Every
batch after the untuned one carries the default schedules too and its figures are scaled by
the untuned build's / that copy's (the machine's load drifts between batches; candidates are
compared with a default timed in the same process). A harness that faults or times out is run
again one model at a time, so only the guilty fail.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnc.compiler.errors import NncError
from nnc.compiler.tune.apply import HOST_OBJECTIVE as HOST_NS
from nnc.ir.loops import Kernel, LoopModule, ScheduleStep
from nnc.passes.manager import PassError, PassManager, PipelineStep

OBJECTIVE = "qemu-instructions"
HOST_OBJECTIVE = HOST_NS  # `nnc compile --target host` looks records up under it (apply.py)
HOST_KINDS = frozenset({"conv", "gemm", "depthwise_flat"})  # the host's tuned definitions (fp32)
# fp32 candidates against the untuned build: the tolerances of the model tests vs onnxruntime
FP32_RTOL, FP32_ATOL = 1e-3, 1e-4


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
    if tgt.kind not in ("cortex-m", "host"):
        raise NncError(f"nnc tune measures on the emulated Cortex-M boards or the host; "
                       f"{tgt.name} is neither")
    host = tgt.kind == "host"
    if host and quantize is not None:
        raise NncError("nnc tune --target host tunes fp32 models (conv / gemm); leave out "
                       "--quantize")
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
        # Cortex-M: integer definitions only (a candidate counts when its outputs are
        # bit-identical with the untuned build's); the host: the fp32 conv / gemm
        # definitions, whose candidates count within FP32_RTOL / FP32_ATOL
        if k.compute is None or not k.workload:
            continue
        if (k.compute.acc_dtype != "float32" or k.compute.kind not in HOST_KINDS) if host \
                else k.compute.acc_dtype not in ("int32", "int64"):
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


def close_outputs(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray],
                  rtol: float = FP32_RTOL, atol: float = FP32_ATOL) -> bool:
    """Float outputs within `rtol`/`atol` (NaN where the other has NaN), others bit for bit."""
    if set(a) != set(b):
        return False
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if x.dtype.kind == "f":
            if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
                return False
        elif not np.array_equal(x.view(np.uint8), y.view(np.uint8)):
            return False
    return True


# model.c of a host candidate starts with these hooks: each layer the harness times runs
# `nnc_tune_reps` times in a row, each call timed on its own
_HOOKS = """#include <stddef.h>
#include <stdint.h>
#define NNC_TUNE_MODEL {index}
uint64_t nnc_tune_now(void);
int nnc_tune_reps(int model, int layer);
void nnc_tune_record(int model, int layer, int rep, uint64_t ns);
void nnc_tune_dump(int model, int layer, const void *data, size_t nbytes);
#define NNC_LAYER_BEGIN(i) {{ int nnc_tune_r_; const int nnc_tune_n_ = \\
    nnc_tune_reps(NNC_TUNE_MODEL, (i)); for (nnc_tune_r_ = 0; nnc_tune_r_ < nnc_tune_n_; \\
    ++nnc_tune_r_) {{ const uint64_t nnc_tune_t0_ = nnc_tune_now();
#define NNC_LAYER_END(i) nnc_tune_record(NNC_TUNE_MODEL, (i), nnc_tune_r_, \\
    nnc_tune_now() - nnc_tune_t0_); }} }}
"""

_HARNESS = r"""/* nnc tune --target host: the timing harness of one batch (generated). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NM {n_models}
#define NI {n_inputs}
#define NO {n_outputs}
{decls}
static int (*const inits[NM])(void) = {{ {inits} }};
static int (*const runs[NM])(const void *const *, void *const *) = {{ {runs} }};
{timed}
static const unsigned char *const timed[NM] = {{ {timed_ptrs} }};
static const size_t in_bytes[NI > 0 ? NI : 1] = {{ {in_bytes} }};
static const size_t out_bytes[NO > 0 ? NO : 1] = {{ {out_bytes} }};

static int timing, warmup, repeat, dumping;
static uint64_t *samples;
static const char *dump_dir;

uint64_t nnc_tune_now(void)
{{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}}

int nnc_tune_reps(int model, int layer)
{{
    return timing && timed[model][layer] ? warmup + repeat : 1;
}}

static int cmp_u64(const void *a, const void *b)
{{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}}

void nnc_tune_record(int model, int layer, int rep, uint64_t ns)
{{
    if (!timing || !timed[model][layer]) return;
    samples[rep] = ns;
    if (rep == warmup + repeat - 1) {{
        qsort(samples + warmup, (size_t)repeat, sizeof samples[0], cmp_u64);
        printf("t %d %d %llu\n", model, layer, (unsigned long long)samples[warmup + repeat / 2]);
        fflush(stdout);
    }}
}}

void nnc_tune_dump(int model, int layer, const void *data, size_t nbytes)
{{
    char path[4096];
    FILE *f;
    if (!dumping) return;
    snprintf(path, sizeof path, "%s/l%d_%d.bin", dump_dir, model, layer);
    f = fopen(path, "wb");
    if (f) {{
        fwrite(data, 1, nbytes, f);
        fclose(f);
    }}
}}

static void *alloc(size_t n)
{{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) {{ fputs("out of memory\n", stderr); exit(3); }}
    memset(p, 0, n ? n : 1);
    return p;
}}

/* harness INPUTS OUTDIR ROUNDS WARMUP REPEAT [MODEL...] */
int main(int argc, char **argv)
{{
    const void *ins[NI > 0 ? NI : 1];
    void *outs[NO > 0 ? NO : 1];
    int selected[NM], n_sel = 0, rounds, r, s, i;
    FILE *f;
    if (argc < 6) {{
        fputs("usage: harness INPUTS OUTDIR ROUNDS WARMUP REPEAT [MODEL...]\n", stderr);
        return 2;
    }}
    rounds = atoi(argv[3]); warmup = atoi(argv[4]); repeat = atoi(argv[5]);
    if (repeat < 1) repeat = 1;
    if (warmup < 0) warmup = 0;
    samples = alloc(sizeof(uint64_t) * (size_t)(warmup + repeat));
    for (i = 6; i < argc; ++i) selected[n_sel++] = atoi(argv[i]);
    if (!n_sel) for (i = 0; i < NM; ++i) selected[n_sel++] = i;
    f = fopen(argv[1], "rb");
    if (!f) {{ perror(argv[1]); return 2; }}
    for (i = 0; i < NI; ++i) {{
        void *p = alloc(in_bytes[i]);
        if (fread(p, 1, in_bytes[i], f) != in_bytes[i]) {{
            fputs("short input file\n", stderr);
            return 2;
        }}
        ins[i] = p;
    }}
    fclose(f);
    for (i = 0; i < NO; ++i) outs[i] = alloc(out_bytes[i]);
    for (s = 0; s < n_sel; ++s) {{
        const int m = selected[s];
        char path[4096];
        int rc = inits[m]();
        dump_dir = argv[2];
        dumping = 1;
        if (rc == 0) rc = runs[m](ins, outs);
        dumping = 0;
        if (rc != 0) {{ printf("rc %d %d\n", m, rc); fflush(stdout); continue; }}
        snprintf(path, sizeof path, "%s/out%d.bin", argv[2], m);
        f = fopen(path, "wb");
        if (!f) {{ perror(path); return 2; }}
        for (i = 0; i < NO; ++i) fwrite(outs[i], 1, out_bytes[i], f);
        fclose(f);
        printf("ok %d\n", m);
        fflush(stdout);
    }}
    for (r = 0; r < rounds; ++r) {{
        for (s = 0; s < n_sel; ++s) {{
            const int m = selected[s];
            uint64_t t0, best = 0;
            int k;
            timing = 1;
            runs[m](ins, outs);
            timing = 0;
            for (k = 0; k < 3; ++k) {{  /* the whole model, every kernel once */
                uint64_t t;
                t0 = nnc_tune_now();
                runs[m](ins, outs);
                t = nnc_tune_now() - t0;
                if (!k || t < best) best = t;
            }}
            printf("w %d %llu\n", m, (unsigned long long)best);
            fflush(stdout);
        }}
    }}
    return 0;
}}
"""


class HostMeasurer:
    """Builds a batch of candidate assignments into one executable and times each tuned layer
    on one pinned CPU (see the module docstring); `measure` is a batch of one."""

    objective = HOST_OBJECTIVE

    def __init__(self, prep: Prepared, workdir: str | os.PathLike[str] | None = None,
                 timeout_s: float = 120.0, warmup: int = 5, repeat: int = 21, rounds: int = 3,
                 cpu: int | None = None, same_process_baseline: bool = True) -> None:
        self.prep = prep
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(
            prefix="nnc-tune-host-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)  # type: ignore
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self.warmup, self.repeat, self.rounds = warmup, repeat, rounds
        try:
            allowed = sorted(os.sched_getaffinity(0))
        except AttributeError:  # not Linux: no pinning
            allowed = []
        self.cpu = cpu if cpu is not None else (allowed[-1] if allowed else None)
        self.builds = 0
        self.timed = sorted({i for w in prep.workloads for i in w.layers})
        # the untuned build's Run, once measured; with `same_process_baseline` every batch
        # after it carries the default too and is scaled to it (see measure_batch)
        self.baseline: Run | None = None
        self.same_process_baseline = same_process_baseline
        self._inputs = b"".join(np.ascontiguousarray(prep.feeds[n]).tobytes()
                                for n in prep.module.input_names or prep.module.inputs)

    def for_worker(self, workdir: str | os.PathLike[str]) -> HostMeasurer:
        m = HostMeasurer(self.prep, workdir, self.timeout_s, self.warmup, self.repeat,
                         self.rounds, self.cpu, self.same_process_baseline)
        m.baseline = self.baseline
        return m

    @staticmethod
    def matches(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> bool:
        return close_outputs(outputs, reference)

    def measure(self, assignment: Mapping[str, tuple[ScheduleStep, ...]]) -> Run:
        return self.measure_batch([assignment])[0]

    def measure_batch(self, assignments: Sequence[Mapping[str, tuple[ScheduleStep, ...]]]
                      ) -> list[Run]:
        """One Run per assignment, all built into one executable and timed in one process.

        The first batch's first default assignment (`{}`, the untuned build) is the baseline:
        every later batch carries the default once more, timed in the same process, and
        scales its figures by baseline / that run's, so a batch timed while the machine was
        busier (or quieter) than during the baseline is compared fairly with it."""
        if self.baseline is None or not self.same_process_baseline:
            runs = self._measure_batch(assignments)
            if self.baseline is None:
                first = next((r for a, r in zip(assignments, runs, strict=True)
                              if not a and not r.error), None)
                self.baseline = first
            return runs
        *runs, ref = self._measure_batch([*assignments, {}])
        if ref.error:
            return runs
        base = self.baseline
        for r in runs:
            if r.error:
                continue
            r.figures = {k: v * base.figures[k] / ref.figures[k] if ref.figures.get(k) else v
                         for k, v in r.figures.items()}
            if ref.total:
                r.total = int(round(r.total * base.total / ref.total))
        return runs

    def _measure_batch(self, assignments: Sequence[Mapping[str, tuple[ScheduleStep, ...]]]
                       ) -> list[Run]:
        from concurrent.futures import ThreadPoolExecutor

        from nnc.backends.c.build import RUNTIME_DIR, build_jobs

        self.builds += 1
        out = self.workdir / f"b{self.builds % 2}"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for header in sorted((RUNTIME_DIR / "include").glob("*.h")):
            shutil.copyfile(header, out / header.name)
        runs = [Run() for _ in assignments]
        modules: dict[int, LoopModule] = {}
        t0 = time.perf_counter()
        for i, a in enumerate(assignments):
            try:
                modules[i] = self._write(i, a, out)
            except Exception as e:  # noqa: BLE001 - a candidate nnc cannot lower is a failed trial
                runs[i].error = f"build: {_first_line(e)}"
        with ThreadPoolExecutor(max(1, min(build_jobs(), len(modules)))) as pool:
            errors = dict(zip(modules, pool.map(lambda i: self._compile(out / f"m{i}"), modules),
                              strict=True))
        for i, err in errors.items():
            if err:
                runs[i].error = f"build: {err}"
                del modules[i]
        build_s = time.perf_counter() - t0
        for r in runs:
            r.build_s = build_s
        if not modules:
            return runs
        err = self._link(out, modules)
        if err:
            for i in modules:
                runs[i].error = f"build: {err}"
            return runs
        t1 = time.perf_counter()
        results = self._run(out, list(modules))
        if any(i not in results for i in modules) and len(modules) > 1:
            for i in modules:  # a fault or a timeout: each model alone, to find the guilty
                if i not in results:
                    results.update(self._run(out, [i]))
        run_s = time.perf_counter() - t1
        for i in modules:
            got = results.get(i)
            runs[i].run_s = run_s
            if isinstance(got, str):
                runs[i].error = f"run: {got}"
                continue
            assert got is not None
            outputs, layer_ns, total = got
            runs[i].outputs, runs[i].total = outputs, total
            for w in self.prep.workloads:
                runs[i].figures[w.key] = float(np.mean([layer_ns[k] for k in w.layers]))
        return runs

    def _write(self, i: int, assignment: Mapping[str, tuple[ScheduleStep, ...]],
               out: Path) -> LoopModule:
        from nnc.backends.c.emit import emit_c

        module = scheduled_module(self.prep, assignment)
        if len(module.kernels) != len(self.prep.module.kernels):
            raise NncError("the loop passes changed the number of kernels")
        files = emit_c(module, prefix=f"cand{i}")
        folder = out / f"m{i}"
        folder.mkdir()
        for name, content in files.items():
            if name == "model.c":
                content = _HOOKS.format(index=i) + self._dumps(str(content), module)
            if isinstance(content, bytes):
                (folder / name).write_bytes(content)
            else:
                (folder / name).write_text(content)
        return module

    def _dumps(self, c_text: str, module: LoopModule) -> str:
        """model.c with each tuned layer's output written out after its call (in the
        validation run): every candidate's kernel output is checked, not only the model's."""
        bufs = module.buffer_map()
        for i in self.timed:
            k = module.kernels[i]
            assert k.compute is not None
            at = k.params.index(k.compute.out)
            call = re.search(rf"NNC_LAYER_BEGIN\({i}\);\n\s*\w+\(([^)]*)\);\n(\s*)"
                             rf"NNC_LAYER_END\({i}\);\n", c_text)
            if call is None:
                raise NncError(f"layer {i}'s call is not where the harness looks for it")
            arg = call.group(1).split(",")[at].strip()
            dump = (f"{call.group(2)}nnc_tune_dump(NNC_TUNE_MODEL, {i}, {arg}, "
                    f"{bufs[k.compute.out].nbytes});\n")
            c_text = c_text[:call.end()] + dump + c_text[call.end():]
        return c_text

    def _compile(self, folder: Path) -> str:
        """Compile one candidate's model (in its folder: weights.c's .incbin is relative);
        the first error line, or ''."""
        from nnc.backends.c.processes import run_commands

        tgt = self.prep.target
        base = [tgt.cc, "-O3", *tgt.cflags, "-I..", "-I."]
        srcs = ["model.c"] + (["weights.c"] if (folder / "weights.c").exists() else [])
        cmds = [[*base, "-c", s, "-o", s.replace(".c", ".o")] for s in srcs]
        for result in run_commands(cmds, folder, 1):
            if result is None:
                continue
            cmd, rc, output = result
            if rc == -1:
                raise NncError(f"C compiler {cmd[0]!r} not found (set NNC_CC)")
            if rc != 0:
                lines = [ln for ln in output.splitlines() if "error" in ln] or output.splitlines()
                return (lines[0] if lines else f"{cmd[0]} exit {rc}")[:300]
        return ""

    def _link(self, out: Path, modules: Mapping[int, LoopModule]) -> str:
        from nnc.backends.c.build import BuildError, _run_all

        m0 = self.prep.module
        bufs = m0.buffer_map()
        nbytes = [bufs[n].nbytes for n in m0.inputs]
        out_bytes = [bufs[n].nbytes for n in m0.outputs]
        n = max(modules) + 1
        timed = []
        for i in range(n):
            flags = ["1" if k in self.timed else "0" for k in range(len(m0.kernels))] or ["0"]
            timed.append(f"static const unsigned char timed{i}[] = {{ {', '.join(flags)} }};")
        decls = "\n".join(f"int cand{i}_init(void);\nint cand{i}_run(const void *const *, "
                          f"void *const *);" if i in modules else
                          f"static int cand{i}_init(void) {{ return -1; }}\n"
                          f"static int cand{i}_run(const void *const *a, void *const *b) "
                          f"{{ (void)a; (void)b; return -1; }}" for i in range(n))
        text = _HARNESS.format(
            n_models=n, n_inputs=len(nbytes), n_outputs=len(out_bytes), decls=decls,
            inits=", ".join(f"cand{i}_init" for i in range(n)),
            runs=", ".join(f"cand{i}_run" for i in range(n)),
            timed="\n".join(timed), timed_ptrs=", ".join(f"timed{i}" for i in range(n)),
            in_bytes=", ".join(map(str, nbytes)) or "0",
            out_bytes=", ".join(map(str, out_bytes)) or "0")
        (out / "harness.c").write_text(text)
        (out / "inputs.bin").write_bytes(self._inputs)
        tgt = self.prep.target
        objs = [str(p.relative_to(out)) for i in sorted(modules)
                for p in sorted((out / f"m{i}").glob("*.o"))]
        try:
            _run_all([[tgt.cc, "-O2", *tgt.cflags, "-c", "harness.c", "-o", "harness.o"]], out)
            _run_all([[tgt.cc, "-o", "harness", "harness.o", *objs, *tgt.ldflags, "-lm"]], out)
        except BuildError as e:
            return _first_line(e)
        return ""

    def _run(self, out: Path, models: list[int]
             ) -> dict[int, tuple[dict[str, np.ndarray], dict[int, float], int] | str]:
        """{model: (outputs, median ns per timed layer, whole-model ns) or why not}; a model
        the process did not get through is missing."""
        import subprocess

        m0 = self.prep.module
        cpu = self.cpu

        def pin() -> None:
            if cpu is not None:
                try:
                    os.sched_setaffinity(0, {cpu})
                except OSError:
                    pass

        cmd = [str(out / "harness"), str(out / "inputs.bin"), str(out), str(self.rounds),
               str(self.warmup), str(self.repeat), *map(str, models)]
        for i in models:
            (out / f"out{i}.bin").unlink(missing_ok=True)
            for k in self.timed:
                (out / f"l{i}_{k}.bin").unlink(missing_ok=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s,
                                  preexec_fn=pin)
            stdout, rc, why = proc.stdout, proc.returncode, proc.stderr.strip()
        except subprocess.TimeoutExpired as e:
            raw = e.stdout or b""
            stdout = raw.decode() if isinstance(raw, bytes) else raw
            rc, why = -9, f"timed out after {self.timeout_s:.0f} s"
        samples: dict[int, dict[int, list[int]]] = {i: {} for i in models}
        totals: dict[int, list[int]] = {i: [] for i in models}
        status: dict[int, str] = {}
        for line in stdout.splitlines():
            parts = line.split()
            if parts[:1] == ["ok"]:
                status[int(parts[1])] = "ok"
            elif parts[:1] == ["rc"]:
                status[int(parts[1])] = f"the model's run returned {parts[2]}"
            elif parts[:1] == ["t"]:
                samples[int(parts[1])].setdefault(int(parts[2]), []).append(int(parts[3]))
            elif parts[:1] == ["w"]:
                totals[int(parts[1])].append(int(parts[2]))
        results: dict[int, tuple[dict[str, np.ndarray], dict[int, float], int] | str] = {}
        complete = rc == 0
        for i in models:
            if i in status and status[i] != "ok":
                results[i] = status[i]
                continue
            if not complete:
                if len(models) == 1:
                    results[i] = (f"the harness {_signal_text(rc)}" if rc != -9 else why) + \
                        (f": {why.splitlines()[-1][:200]}" if why and rc != -9 else "")
                continue
            try:
                outputs = _read_outputs(out / f"out{i}.bin", m0)
                outputs.update(self._layer_outputs(out, i))
            except (OSError, ValueError) as e:
                results[i] = f"no outputs ({e})"
                continue
            layer_ns = {k: float(np.median(v)) for k, v in samples[i].items()}
            if any(k not in layer_ns for k in self.timed):
                results[i] = "the harness timed no figure for a tuned layer"
                continue
            results[i] = (outputs, layer_ns, int(np.median(totals[i])) if totals[i] else 0)
        return results

    def _layer_outputs(self, out: Path, model: int) -> dict[str, np.ndarray]:
        """The tuned layers' outputs of one model's validation run, keyed `layer <i>`."""
        m0 = self.prep.module
        bufs = m0.buffer_map()
        found = {}
        for i in self.timed:
            k = m0.kernels[i]
            assert k.compute is not None
            b = bufs[k.compute.out]
            data = (out / f"l{model}_{i}.bin").read_bytes()
            if len(data) != b.nbytes:
                raise ValueError(f"layer {i}'s output is {len(data)} bytes, not {b.nbytes}")
            found[f"layer {i} ({k.op_name or k.name})"] = np.frombuffer(
                data, dtype=b.dtype).reshape(b.shape).copy()
        return found

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _signal_text(rc: int) -> str:
    if rc < 0:
        import signal

        try:
            return f"died of {signal.Signals(-rc).name}"
        except ValueError:
            return f"died of signal {-rc}"
    return f"exited {rc}"


def _read_outputs(path: Path, module: LoopModule) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    bufs = module.buffer_map()
    names = module.output_names or module.outputs
    outputs, at = {}, 0
    for name, b in zip(names, module.outputs, strict=True):
        buf = bufs[b]
        n = buf.nbytes
        if at + n > len(data):
            raise ValueError(f"{path.name} is short")
        outputs[name] = np.frombuffer(data[at:at + n], dtype=buf.dtype).reshape(buf.shape).copy()
        at += n
    return outputs
