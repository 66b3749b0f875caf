"""The backend interface: what `nnc.compile` asks of a target kind, in four steps.

    >>> backend = get_backend("host")
    >>> backend.kind, backend.is_device
    ('host', False)

`emit` turns the scheduled loop module into files, `build` writes and builds them into the
output folder (returning what it adds to nnc.json), `load` reopens a built folder as a runner
with `run(inputs)`, and `benchmark` times it. Each target kind (`Target.kind`) has one backend,
registered in `BACKENDS`; each lives in its own package and is imported only when asked for,
so a kind whose toolchain is missing (TVM, OpenCL) costs nothing to the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnc.ir.loops import LoopModule

Files = Mapping[str, str | bytes]


@dataclass(frozen=True)
class BuildJob:
    """Everything one build needs. `out` is where to write (the staging folder of `final`, the
    output folder; both the same for a temporary build)."""

    files: Files
    out: Path
    final: Path
    target: Any  # backends.target.Target
    module: LoopModule
    opt_level: int = 3
    prefix: str = "nnc"
    bench: bool = True
    cmsis: Any = None  # backends.cmsis_nn library to build against, None without library calls
    device: str | None = None
    threads: int = 1  # host: the thread count parallel loops were emitted for


class Backend:
    """One target kind's emit / build / load / benchmark. Subclasses override all four."""

    kind = ""
    is_device = False  # runs on an emulated board (results come from QEMU)
    generated_only = False  # runs nnc's generated kernels only (no CMSIS-NN calls)

    def emit(self, module: LoopModule, prefix: str, threads: int = 1) -> Files:
        """The files of `module`; `threads` > 1 only reaches the host backend (compile refuses
        it elsewhere)."""
        raise NotImplementedError

    def build(self, job: BuildJob) -> dict[str, Any]:
        """Write and build `job.files` into `job.out`; returns the keys it adds to nnc.json."""
        raise NotImplementedError

    def load(self, directory: Path, info: Mapping[str, Any], device: str | None) -> Any:
        """A runner for a built folder: `.run(inputs) -> {name: array}`."""
        raise NotImplementedError

    def benchmark(self, runner: Any, directory: Path, info: Mapping[str, Any], warmup: int,
                  repeat: int, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        raise NotImplementedError


# target kind -> "module:class", imported on first use
BACKENDS: dict[str, str] = {
    "host": "nnc.backends.c.backend:HostBackend",
    "cortex-m": "nnc.backends.cortex_m.backend:CortexMBackend",
    "opencl": "nnc.backends.opencl.backend:OpenCLBackend",
    "tvm": "nnc.backends.tvm.backend:TVMBackend",
}


def get_backend(kind: str) -> Backend:
    """The backend of target kind `kind`."""
    try:
        where = BACKENDS[kind]
    except KeyError:
        raise ValueError(f"no backend for target kind {kind!r}; known: {sorted(BACKENDS)}") \
            from None
    module, _, cls = where.partition(":")
    backend: Backend = getattr(importlib.import_module(module), cls)()
    return backend
