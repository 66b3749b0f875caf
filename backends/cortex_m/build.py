"""Write and build a Cortex-M firmware project: `build_firmware(files, out_dir, target, module)`.

    >>> files = emit_c(module)                                          # doctest: +SKIP
    >>> info = build_firmware(files, "out", "cortex-m7", module)        # doctest: +SKIP
    >>> info.flash_bytes, info.static_ram_bytes, info.stack_bytes       # doctest: +SKIP

`out_dir` receives:
- `model/`: the emitted model as a board-independent library (model.c/.h, weights, nnc_runtime.h)
  with a Makefile and CMakeLists.txt that build `libmodel.a` with the target's flags;
- `board/`: the emulated board's support files (startup, timer, linker scripts) and
  `device_main.c`;
- `Makefile`: builds `firmware.elf` exactly as this module does (the same flags);
- `device.json`: what `DeviceModel` needs to run the firmware from the directory alone.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from nnc.backends.c.build import (
    RUNTIME_DIR,
    WARNINGS,
    BuildError,
    _run_all,
    explain_failure,
)
from nnc.backends.cmsis_nn import Library, find_library, module_uses_cmsis, stage
from nnc.backends.cortex_m.boards import Board, board_for, memory_ld
from nnc.backends.cortex_m.toolchain import find_toolchain, supports_callgraph_info, tool_for
from nnc.backends.target import Target, format_size, parse_target
from nnc.errors import NncError
from nnc.ir.loops import LoopModule

TEMPLATES = Path(__file__).parent / "templates"
DEVICE_JSON = "device.json"
FIRMWARE = "firmware.elf"
# Code and data in their own sections so --gc-sections drops what the model never calls.
SECTION_FLAGS = ("-ffunction-sections", "-fdata-sections")
PROFILE_HOOKS = ("-include", "nnc_board.h", "-DNNC_LAYER_BEGIN(i)=nnc_layer_begin(i)",
                 "-DNNC_LAYER_END(i)=nnc_layer_end(i)")


@dataclass(frozen=True, slots=True)
class FirmwareInfo:
    """Sizes of a built firmware. flash = text + data (what the flash holds); static RAM =
    data + bss (the model's arena included); stack = compile-time estimate: the deepest chain
    of -fstack-usage frames through the call graph (-fcallgraph-info) of everything compiled
    (model, CMSIS-NN, board code; newlib's functions count 0). `DeviceModel.benchmark` measures
    the real figure on the board."""

    out_dir: Path
    elf: Path
    board: str
    target: str
    text_bytes: int
    data_bytes: int
    bss_bytes: int
    arena_bytes: int
    stack_bytes: int
    seconds: float
    commands: tuple[tuple[str, ...], ...]

    @property
    def flash_bytes(self) -> int:
        return self.text_bytes + self.data_bytes

    @property
    def static_ram_bytes(self) -> int:
        return self.data_bytes + self.bss_bytes


def describe_module(module: LoopModule, prefix: str = "nnc") -> dict[str, Any]:
    """Inputs, outputs and layers of a loop module, as stored in device.json."""
    bmap = module.buffer_map()

    def tensors(names: Sequence[str], user: Sequence[str]) -> list[dict[str, Any]]:
        return [{"name": user[i] if user else n, "shape": list(bmap[n].shape),
                 "dtype": bmap[n].dtype, "nbytes": bmap[n].nbytes} for i, n in enumerate(names)]

    return {
        "model": module.name,
        "prefix": prefix,
        "inputs": tensors(module.inputs, module.input_names),
        "outputs": tensors(module.outputs, module.output_names),
        "layers": [{"kernel": k.name, "name": k.op_name or k.name, "op": k.op_kind,
                    "macs": int(k.macs)} for k in module.kernels],
        "macs": int(sum(k.macs for k in module.kernels)),
        "arena_bytes": int(module.arena_size),
        # the largest kernel-library scratch buffer; it is planned inside the arena
        "library_scratch_bytes": max((b.nbytes for b in module.buffers
                                      if b.name.endswith("_scratch") and b.scope == "arena"),
                                     default=0),
        "weight_bytes": int(sum(a.nbytes for a in module.constants.values())),
    }


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                       keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def _write(path: Path, content: str | bytes) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


@dataclass(frozen=True, slots=True)
class _Compile:
    dir: str  # compiled from this folder (weights.c's .incbin is relative to it)
    src: str
    obj: str  # relative to out_dir
    flags: str  # MODEL_FLAGS | BOARD_FLAGS

    @property
    def prerequisite(self) -> str:
        """The source as the top-level Makefile names it (relative to out_dir, or absolute: a
        CMSIS-NN checkout's sources are compiled where they are)."""
        return self.src if Path(self.src).is_absolute() else f"{self.dir}/{self.src}"


class _Plan:
    """The flags and commands of one firmware build, shared by the Makefile and Python."""

    def __init__(self, target: Target, board: Board, cc: str, opt_level: int, prefix: str,
                 model_srcs: Sequence[str], board_srcs: Sequence[str], num_layers: int,
                 defines: Sequence[str], model_includes: Sequence[str] = ()) -> None:
        callgraph = ("-fcallgraph-info=su",) if supports_callgraph_info(cc) else ()
        self.cflags = (*board.cpu_flags, *target.cflags, *SECTION_FLAGS, "-fstack-usage",
                       *callgraph, *WARNINGS)
        self.model_flags = ("-I.", *(f"-I{i}" for i in model_includes), "-I../board",
                            *PROFILE_HOOKS)
        self.board_flags = ("-I.", "-I../model", f"-DNNC_PREFIX={prefix}",
                            f"-DNNC_LAYER_CAPACITY={max(num_layers, 1)}",
                            *(f"-D{d}" for d in defines))
        self.ldflags = (*board.cpu_flags, "--specs=rdimon.specs", "-Wl,--gc-sections",
                        "-Tboard/board.ld", "-Lboard", "-Wl,-Map=firmware.map")
        self.opt = f"-O{opt_level}"
        self.cc = cc
        self.compiles = [_Compile("model", s, f"build/{Path(s).stem}.o", "MODEL_FLAGS")
                         for s in model_srcs]
        self.compiles += [_Compile("board", s, f"build/{Path(s).stem}.o", "BOARD_FLAGS")
                          for s in board_srcs]
        objs = [c.obj for c in self.compiles]
        if len(set(objs)) != len(objs):
            raise NncError(f"model and board sources share a file name: {sorted(objs)}")

    def compile_cmd(self, c: _Compile) -> list[str]:
        extra = self.model_flags if c.flags == "MODEL_FLAGS" else self.board_flags
        return [self.cc, self.opt, *self.cflags, *extra, "-c", c.src, "-o", f"../{c.obj}"]

    def link_cmd(self) -> list[str]:
        return [self.cc, *self.ldflags, "-o", FIRMWARE, *(c.obj for c in self.compiles), "-lm"]


def write_firmware_project(files: Mapping[str, str | bytes], out_dir: str | Path,
                           target: Target | str, module: LoopModule, opt_level: int = 3,
                           prefix: str = "nnc", defines: Sequence[str] = (),
                           cc: str | None = None, cmsis: Library | None = None) -> _Plan:
    """Write model/, board/, the Makefiles and device.json; returns the build plan. With
    `cmsis`, model/ builds the CMSIS-NN library the model calls too."""
    tgt = parse_target(target)
    board = _board(tgt)
    out = Path(out_dir)
    model_dir, board_dir = out / "model", out / "board"
    for d in (model_dir, board_dir):
        if d.exists():
            shutil.rmtree(d)  # stale sources (e.g. weights.c of a bigger model) must go
        d.mkdir(parents=True)
    for name, content in files.items():
        _write(model_dir / name, content)
    shutil.copyfile(RUNTIME_DIR / "include" / "nnc_runtime.h", model_dir / "nnc_runtime.h")
    for src_dir in board.source_dirs():
        for f in sorted(src_dir.iterdir()):
            if f.is_file():
                shutil.copyfile(f, board_dir / f.name)
    shutil.copyfile(RUNTIME_DIR / "include" / "nnc_board.h", board_dir / "nnc_board.h")
    shutil.copyfile(RUNTIME_DIR / "src" / "device_main.c", board_dir / "device_main.c")
    flash, ram = _link_sizes(tgt, board)
    if (board_dir / "memory.ld").exists() and (flash, ram) != (board.flash_bytes,
                                                              board.ram_bytes):
        (board_dir / "memory.ld").write_text(memory_ld(board, flash, ram))

    incs, lib_srcs = stage(cmsis, model_dir) if cmsis is not None else ([], [])
    model_srcs = sorted(n for n in files if n.endswith(".c")) + lib_srcs
    board_srcs = sorted(f.name for f in board_dir.glob("*.c"))
    plan = _Plan(tgt, board, cc or tgt.cc, opt_level, prefix, model_srcs, board_srcs,
                 len(module.kernels), defines, incs)
    env = _env()
    has_bin = "weights.bin" in files
    lib_flags = (*board.cpu_flags, *tgt.cflags, *SECTION_FLAGS, *WARNINGS)
    common = dict(model=module.name, target=tgt.name, prefix=prefix, opt_level=opt_level,
                  srcs=model_srcs, has_weights_bin=has_bin)
    (model_dir / "Makefile").write_text(env.get_template("model.Makefile.j2").render(
        cc=plan.cc, ar=tool_for(plan.cc, "ar"), rules=_library_rules(files, model_srcs),
        cflags=shlex.join((*lib_flags, *(f"-I{i}" for i in incs))), **common))
    cmake_incs = [i if Path(i).is_absolute() else f"${{CMAKE_CURRENT_SOURCE_DIR}}/{i}"
                  for i in incs]
    (model_dir / "CMakeLists.txt").write_text(env.get_template("CMakeLists.txt.j2").render(
        cc=plan.cc, cflags=shlex.join(lib_flags), includes=cmake_incs, **common))
    from nnc.backends.cortex_m.run import qemu_command

    (out / "Makefile").write_text(env.get_template("firmware.Makefile.j2").render(
        model=module.name, target=tgt.name, board=board.name, cc=plan.cc, opt_level=opt_level,
        cflags=shlex.join(plan.cflags), model_flags=shlex.join(plan.model_flags),
        board_flags=shlex.join(plan.board_flags), ldflags=shlex.join(plan.ldflags),
        objects=[c.obj for c in plan.compiles], compiles=plan.compiles,
        qemu_cmd=shlex.join(qemu_command("qemu-system-arm", board, FIRMWARE))))

    meta = describe_module(module, prefix)
    meta.update(target=tgt.name, board=board.name, target_ram_bytes=tgt.ram_bytes,
                target_flash_bytes=tgt.flash_bytes, opt_level=opt_level)
    (out / DEVICE_JSON).write_text(json.dumps(meta, indent=1))
    return plan


def _library_rules(files: Mapping[str, str | bytes],
                   srcs: Sequence[str]) -> list[tuple[str, str, str]]:
    """(source, object, extra prerequisites) of model/Makefile: the model's sources depend on
    its headers; a checkout's sources (absolute paths) get objects here, not in the checkout."""
    deps = " model.h nnc_runtime.h" + (" weights.bin" if "weights.bin" in files else "")
    rules = []
    for src in srcs:
        if Path(src).is_absolute():
            rules.append((src, f"cmsis_nn_{Path(src).stem}.o", ""))
        else:
            rules.append((src, src[:-2] + ".o", deps if src in files else ""))
    return rules


def _board(target: Target) -> Board:
    if target.kind != "cortex-m":
        raise NncError(f"target {target.name!r} is not a Cortex-M target")
    try:
        return board_for(target.name)
    except KeyError as e:
        raise NncError(str(e.args[0])) from None


def _link_sizes(target: Target, board: Board) -> tuple[int, int]:
    """Linker region sizes: the larger of board and target, so a firmware for a bigger part still
    links; `check_fits` compares with the target and DeviceModel with the board."""
    return (max(board.flash_bytes, target.flash_bytes or 0),
            max(board.ram_bytes, target.ram_bytes or 0))


_SU_LINE = re.compile(r"^(?P<loc>.*):(?P<func>[^:\s]+)\t(?P<bytes>\d+)\t(?P<kind>\S+)$")


def stack_usage(build_dir: Path, prefix: str) -> dict[str, int]:
    """{function: frame bytes} from the -fstack-usage (.su) files of a build."""
    frames: dict[str, int] = {}
    for su in sorted(build_dir.glob("*.su")):
        for line in su.read_text().splitlines():
            m = _SU_LINE.match(line)
            if m:
                func = m["func"].split(".")[0]  # k0_conv.constprop.0 -> k0_conv
                frames[func] = max(frames.get(func, 0), int(m["bytes"]))
    return frames


def estimate_stack(frames: Mapping[str, int], kernels: Sequence[str], prefix: str) -> int:
    """Deepest call chain of a run: Reset_Handler -> main -> <prefix>_run -> the largest of
    (kernel frames, the profiling hooks). Library leaf calls (libm) are not in .su files."""
    deepest = max([frames.get(k, 0) for k in kernels]
                  + [frames.get("nnc_layer_begin", 0), frames.get("nnc_layer_end", 0)])
    return (frames.get("Reset_Handler", 0) + frames.get("main", 0)
            + frames.get(f"{prefix}_run", 0) + deepest)


_CI_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
_CI_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
_CI_FRAME = re.compile(r"\\n(\d+) bytes \(([\w,]+)\)")


@dataclass(frozen=True, slots=True)
class CallGraph:
    """Frames and calls of the functions of a build, from gcc's -fcallgraph-info=su (.ci)
    files: `frames[f]` bytes (functions compiled elsewhere, e.g. newlib's, have none), and
    `calls[f]` the functions f calls. Static functions are named "file:f"."""

    frames: Mapping[str, int]
    calls: Mapping[str, frozenset[str]]

    def deepest(self, root: str) -> int:
        """Bytes of the deepest chain of frames from `root` (recursion counts one round;
        functions without frames count 0)."""
        memo: dict[str, int] = {}
        active: set[str] = set()

        def depth(f: str) -> int:
            if f in memo:
                return memo[f]
            if f in active:  # recursion: nnc's code has none; do not loop
                return 0
            active.add(f)
            below = max((depth(g) for g in self.calls.get(f, ())), default=0)
            active.discard(f)
            memo[f] = self.frames.get(f, 0) + below
            return memo[f]

        return depth(root)


def call_graph(build_dir: Path) -> CallGraph | None:
    """The call graph of the .ci files in `build_dir`, or None when there are none."""
    files = sorted(build_dir.glob("*.ci"))
    if not files:
        return None
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    for ci in files:
        text = ci.read_text(errors="replace")
        for title, label in _CI_NODE.findall(text):
            m = _CI_FRAME.search(label)
            if m:
                frames[title] = max(frames.get(title, 0), int(m.group(1)))
        for src, dst in _CI_EDGE.findall(text):
            calls.setdefault(src, set()).add(dst)
    return CallGraph(frames, {f: frozenset(g) for f, g in calls.items()})


def _kernel_functions(model_c: str) -> list[str]:
    """Names of the kernel functions in model.c (static void k<i>_...(...))."""
    return re.findall(r"^static void (k\d+_\w+)\(", model_c, flags=re.M)


def _sizes(size_tool: str, elf: Path) -> tuple[int, int, int]:
    proc = subprocess.run([size_tool, "-B", str(elf)], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or len(lines) < 2:
        raise NncError(f"{size_tool} failed on {elf}: {proc.stderr.strip()}")
    text, data, bss = (int(v) for v in lines[1].split()[:3])
    return text, data, bss


def _symbol_address(nm_tool: str, elf: Path, symbol: str) -> int | None:
    proc = subprocess.run([nm_tool, str(elf)], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == symbol:
            return int(parts[0], 16)
    return None


def check_fits(info: FirmwareInfo, target: Target, meta: Mapping[str, Any]) -> None:
    """NncError with the numbers when the firmware exceeds the target's flash or RAM."""
    problems = []
    if target.flash_bytes is not None and info.flash_bytes > target.flash_bytes:
        problems.append(f"flash needs {info.flash_bytes:,} B but {target.name} has "
                        f"{target.flash_bytes:,} B ({format_size(target.flash_bytes)}); "
                        f"weights are {meta.get('weight_bytes', 0):,} B")
    ram = info.static_ram_bytes + info.stack_bytes
    if target.ram_bytes is not None and ram > target.ram_bytes:
        problems.append(f"RAM needs {ram:,} B (static {info.static_ram_bytes:,} B incl. arena "
                        f"{info.arena_bytes:,} B, stack {info.stack_bytes:,} B) but "
                        f"{target.name} has {target.ram_bytes:,} B "
                        f"({format_size(target.ram_bytes)})")
    if problems:
        raise NncError("the model does not fit: " + "; ".join(problems)
                       + "; use a bigger part (--ram/--flash) or a smaller model")


def build_firmware(files: Mapping[str, str | bytes], out_dir: str | Path,
                   target: Target | str, module: LoopModule, opt_level: int = 3,
                   prefix: str = "nnc", defines: Sequence[str] = (),
                   check_memory: bool = True, cmsis: Library | None = None) -> FirmwareInfo:
    """Write the firmware project for `module` (emitted as `files`) and build firmware.elf.

    `defines` are extra NAME=VALUE macros for the board code (tests use NNC_TEST_FAULT_LAYER).
    Raises NncError when the toolchain is missing, the build fails or (with `check_memory`) the
    firmware does not fit the target's flash/RAM."""
    start = time.perf_counter()
    tgt = parse_target(target)
    tools = find_toolchain(tgt.cc)
    out = Path(out_dir)
    if cmsis is None and module_uses_cmsis(module):
        cmsis = find_library()
    plan = write_firmware_project(files, out, tgt, module, opt_level, prefix, defines,
                                  cmsis=cmsis)
    build_dir = out / "build"
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir()
    (out / FIRMWARE).unlink(missing_ok=True)
    by_dir: dict[str, list[list[str]]] = {}
    for c in plan.compiles:
        by_dir.setdefault(c.dir, []).append(plan.compile_cmd(c))
    commands: list[list[str]] = []
    try:
        for d, cmds in by_dir.items():
            _run_all(cmds, out / d)
            commands += cmds
        link = plan.link_cmd()
        _run_all([link], out)
        commands.append(link)
    except BuildError as e:
        overflow = [ln.strip() for ln in e.stderr.splitlines()
                    if "RAM overflow" in ln or re.search(r"region `?\w+'? overflowed", ln)]
        if e.source is None and overflow:  # the linker's: the model does not fit the RAM/flash
            raise NncError(f"linking the {tgt.name} firmware failed: {overflow[0]}; use a "
                           "bigger part (--ram/--flash) or a smaller model") from None
        raise explain_failure(e, f"the {tgt.name} firmware", out, cmsis) from None

    elf = out / FIRMWARE
    text, data, bss = _sizes(tools.size, elf)
    meta = json.loads((out / DEVICE_JSON).read_text())
    model_c = str(files.get("model.c", ""))
    graph = call_graph(build_dir)
    if graph is not None:
        stack = graph.deepest("Reset_Handler")
    else:  # a compiler without -fcallgraph-info: the frames of the model's own chain
        stack = estimate_stack(stack_usage(build_dir, prefix), _kernel_functions(model_c),
                               prefix)
    info = FirmwareInfo(out_dir=out, elf=elf, board=meta["board"], target=tgt.name,
                        text_bytes=text, data_bytes=data, bss_bytes=bss,
                        arena_bytes=int(meta["arena_bytes"]), stack_bytes=stack,
                        seconds=time.perf_counter() - start,
                        commands=tuple(tuple(c) for c in commands))
    meta["firmware"] = {k: v for k, v in asdict(info).items()
                        if k not in ("out_dir", "elf", "commands", "seconds")}
    meta["firmware"].update(flash_bytes=info.flash_bytes, static_ram_bytes=info.static_ram_bytes,
                            build_seconds=round(info.seconds, 3))
    meta["current_layer_address"] = _symbol_address(tools.nm, elf, "nnc_current_layer")
    meta["stack_top_address"] = _symbol_address(tools.nm, elf, "__StackTop")
    (out / DEVICE_JSON).write_text(json.dumps(meta, indent=1))
    if check_memory:
        check_fits(info, tgt, meta)
    return info
