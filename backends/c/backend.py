"""The host backend: C from the loop IR, built into libmodel.so + the bench executable, run in
process with ctypes (backends/c/{emit,build,run}.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnc.backends.base import Backend, BuildJob, Files
from nnc.errors import NncError
from nnc.ir.loops import LoopModule


class HostBackend(Backend):
    kind = "host"

    def emit(self, module: LoopModule, prefix: str, threads: int = 1) -> Files:
        from nnc.backends.c.emit import HOST_WEIGHTS_SECTION, emit_c

        return emit_c(module, prefix=prefix, threads=threads,
                      weights_section=HOST_WEIGHTS_SECTION)

    def build(self, job: BuildJob) -> dict[str, Any]:
        from nnc.backends.c.build import (
            BuildError,
            build_project,
            compiler_version,
            explain_failure,
            thread_flags,
            write_project,
        )

        tgt, out = job.target, job.out
        write_project(job.files, out, tgt, prefix=job.prefix, opt_level=job.opt_level,
                      cmsis=job.cmsis, threads=job.threads)
        try:
            build_project(out, tgt, opt_level=job.opt_level, prefix=job.prefix, bench=job.bench,
                          cmsis=job.cmsis, threads=job.threads)
        except BuildError as e:
            if not e.command or e.stderr == "" and "not found" in str(e):
                raise NncError(str(e).splitlines()[0]) from None  # no compiler: the user's setup
            raise explain_failure(e, f"the {tgt.name} build", out, job.cmsis) from None
        return {"cc": {"command": tgt.cc, "version": compiler_version(tgt.cc),
                       "cflags": [f"-O{job.opt_level}", *tgt.cflags,
                                  *thread_flags(job.threads)]}}

    def load(self, directory: Path, info: Mapping[str, Any], device: str | None) -> Any:
        from nnc.backends.c.run import HostModel

        return HostModel(directory)

    def benchmark(self, runner: Any, directory: Path, info: Mapping[str, Any], warmup: int,
                  repeat: int, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        if not (directory / "bench").exists():
            raise NncError(f"{directory} was compiled without the benchmark executable "
                           "(bench=False); compile again to benchmark")
        result = dict(runner.benchmark(warmup=warmup, repeat=repeat, inputs=inputs))
        result.update(target=info["target"], macs=info["macs"], repeat=repeat,
                      threads=info.get("threads", 1))
        return result
