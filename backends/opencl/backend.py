"""The OpenCL backend: kernels in model.cl plus a C host runtime against the ICD loader, run
with ctypes (backends/opencl/{emit,build,run}.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnc.backends.base import Backend, BuildJob, Files
from nnc.ir.loops import LoopModule


class OpenCLBackend(Backend):
    kind = "opencl"
    generated_only = True

    def emit(self, module: LoopModule, prefix: str, threads: int = 1) -> Files:
        from nnc.backends.opencl.emit import emit_opencl

        return emit_opencl(module, prefix=prefix)

    def build(self, job: BuildJob) -> dict[str, Any]:
        from nnc.backends.opencl.build import build_opencl

        return {"opencl": build_opencl(job.files, job.out, job.final, job.target, job.opt_level,
                                       job.module.name, job.device)}

    def load(self, directory: Path, info: Mapping[str, Any], device: str | None) -> Any:
        from nnc.backends.opencl.run import OpenCLModel

        return OpenCLModel(directory, device=device)

    def benchmark(self, runner: Any, directory: Path, info: Mapping[str, Any], warmup: int,
                  repeat: int, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        result = dict(runner.benchmark(warmup, repeat, inputs))
        result.update(target=info["target"], macs=info["macs"])
        return result
