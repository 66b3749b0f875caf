"""Write an OpenCL model as a project directory and build its host library.

    >>> build(module, "out/")                   # doctest: +SKIP
    PosixPath('out/libmodel.so')

The directory holds model.cl, model.c/.h, blobs.c (model.cl and weights.bin linked in), the
runtime (runtime_c/opencl/nnc_opencl.[ch], nnc_runtime.h) and a Makefile, so `make` rebuilds
the library without nnc. The device program is built at init by the runtime, not here.
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from nnc.backends.c.build import RUNTIME_DIR, WARNINGS, BuildError, _run_all, write_files
from nnc.backends.opencl.emit import TEMPLATES, emit_opencl
from nnc.backends.target import Target, parse_target
from nnc.errors import NncError
from nnc.ir.loops import LoopModule

LIBRARY = "libmodel.so"
SOURCES = ("model.c", "blobs.c", "nnc_opencl.c")
OPENCL_RUNTIME = RUNTIME_DIR / "opencl"
CL_HEADER = Path("/usr/include/CL/cl.h")
DEBIAN_PACKAGES = "pocl-opencl-icd ocl-icd-opencl-dev opencl-c-headers clinfo"


def write_project(files: Mapping[str, str | bytes], out_dir: str | Path, target: Target,
                  opt_level: int = 3, model: str = "model") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_files(files, out)
    shutil.copyfile(RUNTIME_DIR / "include" / "nnc_runtime.h", out / "nnc_runtime.h")
    for name in ("nnc_opencl.h", "nnc_opencl.c"):
        shutil.copyfile(OPENCL_RUNTIME / name, out / name)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                      keep_trailing_newline=True)
    (out / "Makefile").write_text(env.get_template("Makefile.j2").render(
        model=model, cc=target.cc, opt_level=opt_level,
        cflags=shlex.join(target.cflags + WARNINGS), ldflags=shlex.join(target.ldflags)))
    return out


def build_project(out_dir: str | Path, target: Target | str = "opencl", opt_level: int = 3,
                  werror: bool = False) -> float:
    """Compile the host library; returns the seconds it took."""
    start = time.perf_counter()
    tgt = parse_target(target)
    out = Path(out_dir)
    if not CL_HEADER.exists():
        raise BuildError(f"OpenCL headers not found ({CL_HEADER}); install the Debian packages "
                         f"{DEBIAN_PACKAGES}")
    base = [tgt.cc, f"-O{opt_level}", *tgt.cflags, *WARNINGS, *(["-Werror"] if werror else []),
            "-I.", "-fPIC"]
    objects = [s.replace(".c", ".o") for s in SOURCES]
    _run_all([[*base, "-c", s, "-o", o] for s, o in zip(SOURCES, objects, strict=True)], out)
    _run_all([[tgt.cc, "-shared", "-o", LIBRARY, *objects, *tgt.ldflags]], out)
    return time.perf_counter() - start


def build(module: LoopModule, out_dir: str | Path, target: Target | str = "opencl",
          opt_level: int = 3, prefix: str = "nnc", werror: bool = False,
          mapping: str | None = None) -> Path:
    """Emit `module` for OpenCL, write the project into `out_dir` and build the host library;
    `mapping` as in `emit_opencl`."""
    tgt = parse_target(target)
    write_project(emit_opencl(module, prefix, mapping), out_dir, tgt, opt_level, module.name)
    build_project(out_dir, tgt, opt_level, werror)
    return Path(out_dir) / LIBRARY


def build_opencl(files: Mapping[str, str | bytes], staging: Path, final: Path, target: Target,
                 opt_level: int, model: str, device: str | None) -> dict[str, Any]:
    """`nnc compile`'s OpenCL step: write and build the project in `staging`, then build the
    device program once (reusing `final`'s cached binary when source, device and driver are
    unchanged) so the first run does not pay for it. Returns nnc.json's "opencl" entry. Without
    any OpenCL device here (and none asked for) the program is built at the first run."""
    from nnc.backends.c.build import explain_failure
    from nnc.backends.opencl.run import CACHE, OpenCLModel, OpenCLUnavailable

    write_project(files, staging, target, opt_level, model)
    try:
        build_project(staging, target, opt_level)
    except BuildError as e:
        if not e.command:
            raise NncError(str(e).splitlines()[0]) from None
        raise explain_failure(e, "the OpenCL host library", staging) from None
    old = final / CACHE
    if old.exists() and final != staging:
        shutil.copyfile(old, staging / CACHE)
    info: dict[str, Any] = {"device_spec": device, "kernels": files_kernels(files)}
    try:
        runner = OpenCLModel(staging, device=device)
    except OpenCLUnavailable as e:
        if device is not None:
            raise
        info.update(device=None, note=f"program not built at compile time: {e}")
        return info
    info.update(device=runner.device_name, build_ms=round(runner.build_ms, 2),
                binary_from_cache=runner.from_cache)
    runner.close()
    return info


def files_kernels(files: Mapping[str, str | bytes]) -> int:
    source = files.get("model.cl", "")
    return str(source).count("__kernel void ")
