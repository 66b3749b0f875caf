"""The Cortex-M backend: the host's C plus a board project, built into firmware.elf and run in
QEMU (backends/cortex_m/{build,run}.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnc.backends.base import Backend, BuildJob, Files
from nnc.ir.loops import LoopModule


class CortexMBackend(Backend):
    kind = "cortex-m"
    is_device = True

    def emit(self, module: LoopModule, prefix: str, threads: int = 1) -> Files:
        from nnc.backends.c.emit import emit_c

        return emit_c(module, prefix=prefix)

    def build(self, job: BuildJob) -> dict[str, Any]:
        from nnc.backends.cortex_m.build import build_firmware

        fw = build_firmware(job.files, job.out, job.target, job.module, opt_level=job.opt_level,
                            prefix=job.prefix, cmsis=job.cmsis)
        return {"firmware": {"flash_bytes": fw.flash_bytes, "static_ram_bytes":
                             fw.static_ram_bytes, "stack_bytes": fw.stack_bytes,
                             "ram_bytes": fw.arena_bytes + fw.stack_bytes}}

    def load(self, directory: Path, info: Mapping[str, Any], device: str | None) -> Any:
        from nnc.backends.cortex_m.run import DeviceModel

        return DeviceModel(directory)

    def benchmark(self, runner: Any, directory: Path, info: Mapping[str, Any], warmup: int,
                  repeat: int, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        return dict(runner.benchmark(inputs=inputs))  # one run: instruction counts are exact
