"""Write a generated C model as a project directory and build it with the host compiler.

    >>> result = build(module, "out/", target="host", opt_level=3)    # doctest: +SKIP
    >>> result.library, result.bench                                  # doctest: +SKIP
    (PosixPath('out/libmodel.so'), PosixPath('out/bench'))

The directory is self-contained: the emitted files, the runtime headers, the benchmark driver and a
Makefile, so `make` rebuilds it without nnc. `model.c` is compiled once (position independent) and
linked into both the shared library (for `HostModel`) and the benchmark executable.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from nnc.backends.c.emit import TEMPLATES, WEIGHTS_INLINE_LIMIT, emit_c
from nnc.backends.cmsis_nn import (
    Library,
    find_library,
    module_uses_cmsis,
    project_files,
    stage,
)
from nnc.backends.target import Target, parse_target
from nnc.ir.loops import LoopModule

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime_c"
WARNINGS = ("-Wall", "-Wextra")
LIBRARY = "libmodel.so"
BENCH = "bench"


class BuildError(Exception):
    """The C compiler failed; carries the command and the compiler's stderr."""

    def __init__(self, message: str, command: Sequence[str] = (), stderr: str = "") -> None:
        self.command = tuple(command)
        self.stderr = stderr
        detail = f"\n$ {shlex.join(self.command)}\n{stderr}" if self.command else ""
        super().__init__(message + detail)


@dataclass(frozen=True, slots=True)
class BuildResult:
    out_dir: Path
    library: Path
    bench: Path | None
    commands: tuple[tuple[str, ...], ...]
    warnings: str  # whatever the compiler printed on stderr while succeeding
    seconds: float


def write_project(files: Mapping[str, str | bytes], out_dir: str | Path, target: Target,
                  prefix: str = "nnc", opt_level: int = 3, cmsis: Library | None = None) -> Path:
    """Write the emitted files, the runtime (headers + bench driver) and a Makefile; with
    `cmsis`, the CMSIS-NN library the model calls (see nnc.backends.cmsis_nn.stage)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    incs, srcs = stage(cmsis, out) if cmsis is not None else ([], [])
    for stale in ("weights.c", "weights.bin"):  # left over from an earlier, bigger model
        if stale not in files:
            (out / stale).unlink(missing_ok=True)
    for name, content in files.items():
        path = out / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    for header in sorted((RUNTIME_DIR / "include").glob("*.h")):
        shutil.copyfile(header, out / header.name)
    shutil.copyfile(RUNTIME_DIR / "src" / "bench_main.c", out / "bench_main.c")
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                      keep_trailing_newline=True)
    makefile = env.get_template("Makefile.j2").render(
        model=prefix, target=target.name, cc=target.cc, opt_level=opt_level,
        cflags=shlex.join(target.cflags + WARNINGS + tuple(f"-I{i}" for i in incs)),
        ldflags=shlex.join(target.ldflags), prefix=prefix, model_srcs=_model_sources(out) + srcs,
        has_weights_bin=(out / "weights.bin").exists())
    (out / "Makefile").write_text(makefile)
    return out


def _model_sources(out: Path) -> list[str]:
    return ["model.c"] + (["weights.c"] if (out / "weights.c").exists() else [])


def _run_all(commands: Sequence[Sequence[str]], cwd: Path) -> str:
    """Run compiler commands in parallel; raise BuildError with stderr of the first failure."""
    procs = []
    for cmd in commands:
        try:
            procs.append((cmd, subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True)))
        except FileNotFoundError as e:
            for _, p in procs:
                p.kill()
            raise BuildError(f"C compiler {cmd[0]!r} not found (set NNC_CC)", cmd) from e
    stderr = []
    failure: BuildError | None = None
    for cmd, p in procs:
        out, err = p.communicate()
        stderr.append(out + err)
        if p.returncode != 0 and failure is None:
            failure = BuildError(f"C compilation failed (exit {p.returncode})", cmd, err or out)
    if failure is not None:
        raise failure
    return "".join(stderr)


def build_project(out_dir: str | Path, target: Target | str = "host", opt_level: int = 3,
                  prefix: str = "nnc", werror: bool = False, bench: bool = True,
                  cmsis: Library | None = None) -> BuildResult:
    """Compile a written project into `libmodel.so` (and the `bench` executable)."""
    start = time.perf_counter()
    tgt = parse_target(target)
    out = Path(out_dir)
    incs, lib_srcs = project_files(cmsis, out) if cmsis is not None else ([], [])
    base = [tgt.cc, f"-O{opt_level}", *tgt.cflags, *WARNINGS, *(["-Werror"] if werror else []),
            "-I.", *(f"-I{i}" for i in incs)]
    srcs = _model_sources(out)
    objects = [src.replace(".c", ".o") for src in srcs]
    compiles = [[*base, "-fPIC", "-c", src, "-o", obj]
                for src, obj in zip(srcs, objects, strict=True)]
    # the library without -Werror: its warnings are not ours to fix
    base_lib = [a for a in base if a != "-Werror"]
    for src in lib_srcs:
        objects.append(f"cmsis_nn_{Path(src).stem}.o")
        compiles.append([*base_lib, "-fPIC", "-c", src, "-o", objects[-1]])
    if bench:
        compiles.append([*base, "-D_POSIX_C_SOURCE=199309L", f"-DNNC_PREFIX={prefix}",
                         "-c", "bench_main.c", "-o", "bench_main.o"])
    log = _run_all(compiles, out)
    links = [[tgt.cc, "-shared", "-o", LIBRARY, *objects, *tgt.ldflags]]
    if bench:
        links.append([tgt.cc, "-o", BENCH, "bench_main.o", *objects, *tgt.ldflags])
    log += _run_all(links, out)
    return BuildResult(
        out_dir=out, library=out / LIBRARY, bench=out / BENCH if bench else None,
        commands=tuple(tuple(c) for c in compiles + links), warnings=log,
        seconds=time.perf_counter() - start)


def build(module: LoopModule, out_dir: str | Path, target: Target | str = "host",
          opt_level: int = 3, prefix: str = "nnc", werror: bool = False,
          bench: bool = True, weights_inline_limit: int = WEIGHTS_INLINE_LIMIT,
          cmsis: Library | None = None) -> BuildResult:
    """Emit `module` as C, write the project into `out_dir` and compile it. A module with
    CMSIS-NN calls builds against `cmsis` (default: CMSIS_NN_PATH, else the portable one)."""
    tgt = parse_target(target)
    files = emit_c(module, prefix, weights_inline_limit=weights_inline_limit)
    if cmsis is None and module_uses_cmsis(module):
        cmsis = find_library()
    write_project(files, out_dir, tgt, prefix, opt_level, cmsis)
    return build_project(out_dir, tgt, opt_level, prefix, werror, bench, cmsis)
