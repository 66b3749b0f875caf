"""Write a generated C model as a project directory and build it with the host compiler.

    >>> result = build(module, "out/", target="host", opt_level=3)    # doctest: +SKIP
    >>> result.library, result.bench                                  # doctest: +SKIP
    (PosixPath('out/libmodel.so'), PosixPath('out/bench'))

The directory is self-contained: the emitted files, the runtime headers, the benchmark driver and a
Makefile, so `make` rebuilds it without nnc. `model.c` is compiled once (position independent) into
the shared library (for `HostModel`); the benchmark executable links against that library (rpath
`$ORIGIN`), and weights.bin (the constants of a model above WEIGHTS_INLINE_LIMIT, pulled in by
weights.c's `.incbin`) is removed once linked: its bytes are in the folder once, in libmodel.so's
`.nnc_weights` section, and the Makefile takes weights.bin back out of the library with objcopy
when it rebuilds (issue 14: a 64 MB Gemm's folder held them four times, then twice).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from nnc.backends.c.emit import (
    HOST_WEIGHTS_SECTION,
    HOST_WEIGHTS_SECTION_NAME,
    TEMPLATES,
    WEIGHTS_INLINE_LIMIT,
    emit_c,
)
from nnc.backends.c.processes import run_commands
from nnc.backends.cmsis_nn import (
    Library,
    find_library,
    module_uses_cmsis,
    project_files,
    stage,
)
from nnc.backends.target import Target, parse_target
from nnc.errors import NncError
from nnc.ir.loops import LoopModule

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime_c"
WARNINGS = ("-Wall", "-Wextra")
LIBRARY = "libmodel.so"
THREADS = ("-pthread",)  # compile and link flag of a model with threads > 1 (nnc_threads.h)
BENCH = "bench"


class BuildError(Exception):
    """The C compiler failed; carries the command, the compiler's stderr and the source it was
    compiling (None for a link)."""

    def __init__(self, message: str, command: Sequence[str] = (), stderr: str = "",
                 cwd: Path | None = None) -> None:
        self.command = tuple(command)
        self.stderr = stderr
        self.cwd = cwd
        self.source = _compiled_source(self.command)
        detail = f"\n$ {shlex.join(self.command)}\n{stderr}" if self.command else ""
        super().__init__(message + detail)

    @property
    def source_path(self) -> Path | None:
        """The compiled source as a path (relative ones resolved against the command's cwd)."""
        if self.source is None:
            return None
        path = Path(self.source)
        return path if path.is_absolute() or self.cwd is None else self.cwd / path


def _compiled_source(command: Sequence[str]) -> str | None:
    if "-c" in command:
        i = list(command).index("-c")
        return command[i + 1] if i + 1 < len(command) else None
    return None


_DIAGNOSTIC = re.compile(r":\s*(fatal error|error):|undefined reference to|multiple definition of"
                         r"|region `?\w+'? overflowed|RAM overflow|cannot find -l")
_EXCERPT = re.compile(r"^\s*(\d+\s*)?\|")  # gcc's source excerpt and caret lines
_CARET = re.compile(r"^\s*[\^~][\^~ ]*$")  # clang's caret line under its plain source line


def first_errors(stderr: str, max_errors: int = 3, max_lines: int = 16,
                 width: int = 240) -> str:
    """The compiler's first `max_errors` error lines (file:line:col: error: ...), each with the
    source excerpt gcc or clang prints under it and gcc's "In function" line before it; bounded to
    `max_lines` lines of at most `width` characters. Without error lines, the last lines."""
    lines = stderr.splitlines()
    picked: list[int] = []
    errors = 0
    for i, line in enumerate(lines):
        if errors >= max_errors:
            break
        if not _DIAGNOSTIC.search(line):
            continue
        errors += 1
        context = next((j for j in range(i - 1, max(i - 4, -1), -1)
                        if "In function" in lines[j]), None)
        if context is not None:
            picked.append(context)
        picked.append(i)
        j = i + 1
        while j < len(lines) and j <= i + 4 and _EXCERPT.match(lines[j]):
            picked.append(j)
            j += 1
        if j == i + 1 and j + 1 < len(lines) and _CARET.match(lines[j + 1]):
            picked += [j, j + 1]  # clang: the source line as is, then the caret
    if not picked:
        picked = list(range(max(0, len(lines) - max_lines // 2), len(lines)))
    seen: list[int] = []
    for i in picked:
        if i not in seen:
            seen.append(i)
    out = [lines[i] if len(lines[i]) <= width else lines[i][:width - 3] + "..."
           for i in seen[:max_lines]]
    more = sum(1 for line in lines if _DIAGNOSTIC.search(line)) - errors
    if more > 0:
        out.append(f"... and {more} more error line{'s' if more > 1 else ''}")
    elif len(seen) > max_lines:
        out.append("...")
    return "\n".join(out)


class FailedBuild(Exception):
    """A generated project that did not build: a one-line summary, the compiler's first errors
    and where the project is. `kept`: True when the failed project was kept (its path is
    printed), False when it was removed (the message says how to keep it), None when the caller
    never removes it (low-level build functions)."""

    def __init__(self, summary: str, errors: str, project: Path | None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.errors = errors
        self.project = project
        self.kept: bool | None = None

    def __str__(self) -> str:
        if self.kept is True:
            note = (f"the failed project is kept in {self.project} (`make -C {self.project}` "
                    "repeats the build)")
        elif self.kept is False:
            note = ("run again with --keep-failed (Python: keep_failed=True) or NNC_DEBUG=1 to "
                    "keep the failed project")
        else:
            note = f"the project is in {self.project}"
        errors = "".join(f"\n  {line}" for line in self.errors.splitlines())
        return f"{self.summary}:{errors}\n{note}"


class GeneratedCodeError(FailedBuild):
    """The C compiler rejected code nnc wrote (the model, the runtime or nnc's portable
    CMSIS-NN): a bug in nnc, not in the user's model; the CLI exits with 1."""


class LibraryBuildError(FailedBuild, NncError):
    """A user-supplied CMSIS-NN checkout did not build or link (wrong version, broken tree):
    a user error (exit 2)."""


class BuildEnvironmentError(FailedBuild, NncError):
    """The C compiler failed for a reason outside the code (disk full, read-only or unwritable
    folder, out of memory): the user's environment (exit 2)."""


_ENVIRONMENT = re.compile(r"No space left on device|Disk quota exceeded|Read-only file system"
                          r"|Permission denied|Cannot allocate memory|out of memory allocating")


def explain_failure(error: BuildError, what: str, project: Path,
                    cmsis: Library | None = None) -> FailedBuild:
    """The exception to raise for a failed build of `what` ("the cortex-m7 firmware"): the
    checkout's fault when a source of a real CMSIS-NN checkout failed or the link misses one of
    its functions, nnc's otherwise."""
    errors = first_errors(error.stderr or str(error))
    env = _ENVIRONMENT.search(error.stderr)
    if env is not None:
        return BuildEnvironmentError(f"building {what} failed: {env.group(0)}", errors, project)
    src = error.source_path
    real = cmsis is not None and not cmsis.portable
    if real and src is not None and src.resolve().is_relative_to(cmsis.root):
        name = src.resolve().relative_to(cmsis.root)
        return LibraryBuildError(f"building {what} failed in the CMSIS-NN checkout "
                                 f"{cmsis.root}: {name} does not compile (nnc compiles the "
                                 "sources its own CMake build compiles for the functions nnc "
                                 "calls; is the checkout complete and at least v7.0.0?)",
                                 errors, project)
    if real and src is None and re.search(r"undefined reference to `arm_", error.stderr):
        return LibraryBuildError(f"linking {what} against the CMSIS-NN checkout {cmsis.root} "
                                 "failed: it lacks functions its own headers declare",
                                 errors, project)
    where = f" ({error.source})" if error.source else " (link)"
    return GeneratedCodeError(f"the C compiler rejected the code nnc generated for {what}"
                              f"{where}; this is an nnc bug, please report it", errors, project)


@dataclass(frozen=True, slots=True)
class BuildResult:
    out_dir: Path
    library: Path
    bench: Path | None
    commands: tuple[tuple[str, ...], ...]
    warnings: str  # whatever the compiler printed on stderr while succeeding
    seconds: float


def write_files(files: Mapping[str, str | bytes], out: Path) -> None:
    """The emitted files (text or bytes) into folder `out`."""
    for name, content in files.items():
        path = out / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def thread_flags(threads: int) -> tuple[str, ...]:
    """Extra compile and link flags of a model emitted for `threads` threads."""
    return THREADS if threads > 1 else ()


def write_project(files: Mapping[str, str | bytes], out_dir: str | Path, target: Target,
                  prefix: str = "nnc", opt_level: int = 3, cmsis: Library | None = None,
                  threads: int = 1) -> Path:
    """Write the emitted files, the runtime (headers + bench driver) and a Makefile; with
    `cmsis`, the CMSIS-NN library the model calls (see nnc.backends.cmsis_nn.stage)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    incs, srcs = stage(cmsis, out) if cmsis is not None else ([], [])
    for stale in ("weights.c", "weights.bin"):  # left over from an earlier, bigger model
        if stale not in files:
            (out / stale).unlink(missing_ok=True)
    write_files(files, out)
    for header in sorted((RUNTIME_DIR / "include").glob("*.h")):
        shutil.copyfile(header, out / header.name)
    shutil.copyfile(RUNTIME_DIR / "src" / "bench_main.c", out / "bench_main.c")
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                      keep_trailing_newline=True)
    makefile = env.get_template("Makefile.j2").render(
        model=prefix, target=target.name, cc=target.cc, opt_level=opt_level,
        cflags=shlex.join(target.cflags + thread_flags(threads) + WARNINGS
                          + tuple(f"-I{i}" for i in incs)),
        ldflags=shlex.join(target.ldflags + thread_flags(threads)), prefix=prefix,
        model_srcs=_model_sources(out) + srcs,
        has_weights_bin=(out / "weights.bin").exists(),
        weights_section=HOST_WEIGHTS_SECTION_NAME)
    (out / "Makefile").write_text(makefile)
    return out


def _model_sources(out: Path) -> list[str]:
    return ["model.c"] + (["weights.c"] if (out / "weights.c").exists() else [])


@functools.cache
def compiler_version(cc: str) -> str | None:
    """The first line of `cc --version` ("Debian clang version 15.0.6"), None when it does not
    run; nnc.json records it beside the command."""
    try:
        r = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = r.stdout.strip().splitlines()
    return lines[0].strip() if r.returncode == 0 and lines else None


def build_jobs() -> int:
    """How many compiler processes a build runs at once: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run_all(commands: Sequence[Sequence[str]], cwd: Path, jobs: int | None = None) -> str:
    """Run compiler commands, at most `jobs` (default `build_jobs()`) at a time, none outliving
    nnc (`processes.run_commands`); raise BuildError for the first failure in command order
    (commands not started yet are skipped)."""
    results = run_commands(commands, cwd, min(jobs or build_jobs(), max(len(commands), 1)))
    log = []
    for result in results:
        if result is None:
            continue
        cmd, rc, output = result
        if rc == -1:
            raise BuildError(f"C compiler {cmd[0]!r} not found{_install_hint(cmd[0])}", cmd,
                             cwd=cwd)
        if rc != 0:
            raise BuildError(f"C compilation failed (exit {rc})", cmd, output, cwd=cwd)
        log.append(output)
    return "".join(log)


def _install_hint(cc: str) -> str:
    if "arm-none-eabi" in cc:
        return "; install the Debian packages gcc-arm-none-eabi libnewlib-arm-none-eabi"
    if cc in ("gcc", "cc") or cc.endswith("/gcc"):
        return "; install the Debian package gcc (apt-get install gcc), or set NNC_CC"
    return " (set NNC_CC to the host C compiler)"


def build_project(out_dir: str | Path, target: Target | str = "host", opt_level: int = 3,
                  prefix: str = "nnc", werror: bool = False, bench: bool = True,
                  cmsis: Library | None = None, threads: int = 1) -> BuildResult:
    """Compile a written project into `libmodel.so` (and the `bench` executable); a model
    emitted for `threads` > 1 with -pthread."""
    start = time.perf_counter()
    tgt = parse_target(target)
    out = Path(out_dir)
    incs, lib_srcs = project_files(cmsis, out) if cmsis is not None else ([], [])
    omp = thread_flags(threads)
    base = [tgt.cc, f"-O{opt_level}", *tgt.cflags, *omp, *WARNINGS,
            *(["-Werror"] if werror else []), "-I.", *(f"-I{i}" for i in incs)]
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
    # the weights live in libmodel.so only: bench links against it (found beside itself through
    # $ORIGIN), and weights.o, a third copy, goes once both are linked (issue 14)
    links = [[tgt.cc, "-shared", f"-Wl,-soname,{LIBRARY}", "-o", LIBRARY, *objects,
              *tgt.ldflags, *omp]]
    log += _run_all(links, out)
    if bench:
        bench_link = [tgt.cc, "-o", BENCH, "bench_main.o", LIBRARY, "-Wl,-rpath,$ORIGIN",
                      *tgt.ldflags, *omp]
        links.append(bench_link)
        log += _run_all([bench_link], out)
    if "weights.o" in objects:
        (out / "weights.o").unlink(missing_ok=True)
        if HOST_WEIGHTS_SECTION_NAME in (out / "weights.c").read_text():
            (out / "weights.bin").unlink(missing_ok=True)  # in libmodel.so now: stored once
    return BuildResult(
        out_dir=out, library=out / LIBRARY, bench=out / BENCH if bench else None,
        commands=tuple(tuple(c) for c in compiles + links), warnings=log,
        seconds=time.perf_counter() - start)


def build(module: LoopModule, out_dir: str | Path, target: Target | str = "host",
          opt_level: int = 3, prefix: str = "nnc", werror: bool = False,
          bench: bool = True, weights_inline_limit: int = WEIGHTS_INLINE_LIMIT,
          cmsis: Library | None = None, threads: int = 1) -> BuildResult:
    """Emit `module` as C, write the project into `out_dir` and compile it. A module with
    CMSIS-NN calls builds against `cmsis` (default: CMSIS_NN_PATH, else the portable one);
    `threads` > 1 runs its parallel loops on that many threads (nnc_threads.h)."""
    tgt = parse_target(target)
    files = emit_c(module, prefix, weights_inline_limit=weights_inline_limit, threads=threads,
                   weights_section=HOST_WEIGHTS_SECTION)
    if cmsis is None and module_uses_cmsis(module):
        cmsis = find_library()
    write_project(files, out_dir, tgt, prefix, opt_level, cmsis, threads)
    return build_project(out_dir, tgt, opt_level, prefix, werror, bench, cmsis, threads)
