"""The TVM backend behind `--target tvm`: a tirx IRModule from the loop IR, model.so from TVM."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnc.backends.base import Backend, BuildJob, Files
from nnc.ir.loops import LoopModule


class TVMBackend(Backend):
    kind = "tvm"
    generated_only = True

    def emit(self, module: LoopModule, prefix: str, threads: int = 1) -> Files:
        from nnc.backends.tvm.build import LOADER, WEIGHTS, require_tvm

        require_tvm()  # say so before any work is written
        from nnc.backends.tvm.emit import emit_weights

        # the IRModule is made by build (TVM objects are no files); model_tir.py is its print
        loader = (Path(__file__).parent / "templates" / LOADER).read_text()
        return {WEIGHTS: emit_weights(module), LOADER: loader}

    def build(self, job: BuildJob) -> dict[str, Any]:
        from nnc.backends.tvm.build import build_tvm

        return {"tvm": build_tvm(job.files, job.out, job.module)}

    def load(self, directory: Path, info: Mapping[str, Any], device: str | None) -> Any:
        from nnc.backends.tvm.run import TVMModel

        return TVMModel(directory, info)

    def benchmark(self, runner: Any, directory: Path, info: Mapping[str, Any], warmup: int,
                  repeat: int, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        result = dict(runner.benchmark(warmup, repeat, inputs))
        result.update(target=info["target"], macs=info["macs"])
        return result
