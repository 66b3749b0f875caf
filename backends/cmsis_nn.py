"""The CMSIS-NN kernel backend: which library, its sources, and the C of each call.

The calls themselves come from the `lower-cmsis-nn` pass module (passes/lower_cmsis_nn.py): one
kernel per int8 op CMSIS-NN can run, whose body is a single `CallExtern` with buffers and
integers in a fixed order. The C emitter asks `render_call` here for each call's C: the real
structs (`cmsis_nn_conv_params`, `cmsis_nn_dims`, ...; designated initializers, so releases that
add fields still compile), a status check, and for `<prefix>_init()` a check that the scratch nnc
planned is at least what the library's `*_get_buffer_size` asks for.

Which library: the project builds against `CMSIS_NN_PATH` / `--cmsis-nn PATH` (a CMSIS-NN
checkout, v7.0.0 or later) when given, else against nnc's portable implementation of the same API
subset (runtime_c/cmsis_nn, bit-exact with TFLite's arithmetic, 3-5x slower than the real
DSP/Helium kernels). Both declare the same signatures (`check_api` compares a checkout's
prototypes of the `CALLED` functions with the portable header's), so the emitted calls are the
same. Of a checkout, a build compiles what CMSIS-NN's own CMake build compiles by default (its
per-folder CMakeLists.txt read by `cmake_sources`: the s4/s8/s16 int kernels, not the experimental
float16/float32 ones behind ARM_NN_ENABLE_F16/F32), narrowed to the sources the called functions
need (`needed_sources`: about 30 of ~110).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nnc.errors import NncError
from nnc.ir.loops import CallExtern, Const, LoopModule, walk_stmts

PORTABLE_ROOT = Path(__file__).resolve().parent.parent / "runtime_c" / "cmsis_nn"
HEADER = "arm_nnfunctions.h"
KERNEL_CHOICES = ("generated", "cmsis-nn")

# ---------------------------------------------------------------- which library

MIN_VERSION = "v7.0.0"  # the oldest CMSIS-NN release whose API nnc's calls match
# What the emitted code calls (`render_call`) and the getters `<prefix>_init()` checks. A checkout
# must declare each with the parameters nnc's portable subset declares (its header is the
# reference: it follows the current CMSIS-NN API), and define it in a source its CMake builds.
CALLED = (
    "arm_convolve_wrapper_s8", "arm_convolve_wrapper_s8_get_buffer_size",
    "arm_depthwise_conv_wrapper_s8", "arm_depthwise_conv_wrapper_s8_get_buffer_size",
    "arm_fully_connected_s8", "arm_fully_connected_per_channel_s8",
    "arm_fully_connected_s8_get_buffer_size", "arm_vector_sum_s8",
    "arm_max_pool_s8", "arm_avgpool_s8", "arm_avgpool_s8_get_buffer_size",
    "arm_elementwise_add_s8", "arm_elementwise_mul_s8", "arm_softmax_s8",
)


@dataclass(frozen=True, slots=True)
class Library:
    """A CMSIS-NN source tree: `root`/Include and `root`/Source/<Folder>/*.c."""

    root: Path
    portable: bool

    @property
    def include_dir(self) -> Path:
        return self.root / "Include"

    def sources(self) -> list[Path]:
        """What a build compiles: all of the portable subset; of a checkout, the sources its own
        CMake build compiles by default (int kernels, no float16/float32 extensions) that the
        functions nnc calls need (`needed_sources`)."""
        if self.portable:
            return sorted(self.root.glob("Source/*/*.c"))
        return needed_sources(self.root)


def find_library(path: str | os.PathLike[str] | None = None) -> Library:
    """The CMSIS-NN tree to build against: `path`, else $CMSIS_NN_PATH, else the portable one.
    A checkout must have the API nnc calls (`check_api`) and the sources that define it."""
    given = path if path is not None else os.environ.get("CMSIS_NN_PATH") or None
    if given is None:
        return Library(PORTABLE_ROOT, True)
    root = Path(given).expanduser().resolve()
    where = f"{'--cmsis-nn' if path is not None else 'CMSIS_NN_PATH'}={given}"
    if not (root / "Include" / HEADER).is_file() or not list(root.glob("Source/*/*.c")):
        raise NncError(f"{where}: not a CMSIS-NN checkout (expected Include/{HEADER} and "
                       "Source/*/*.c); point it at the root of github.com/ARM-software/CMSIS-NN "
                       "or unset it to use nnc's portable CMSIS-NN subset")
    lib = Library(root, root == PORTABLE_ROOT)
    if not lib.portable:
        check_api(root, where)
        try:
            needed_sources(root)
        except NncError as e:
            raise NncError(f"{where}: {e}") from None
    return lib


# ---- the checkout's API against the one nnc calls

_C_JUNK = re.compile(r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'", re.S)


def _strip_c(text: str) -> str:
    """C text without comments (a space each) and with empty string/char literals."""
    return _C_JUNK.sub(lambda m: " " if m.group(0)[0] == "/" else '""', text)


def _param_types(params: str) -> tuple[str, ...]:
    """The parameter types of a prototype's parameter list, names dropped; `const` of a value
    parameter dropped too (it does not change how a call is compiled)."""
    out = []
    for p in params.split(","):
        toks = re.findall(r"\w+|\*", p)
        if not toks or toks == ["void"]:
            continue
        if len(toks) > 1 and toks[-1] != "*":
            toks = toks[:-1]  # the parameter's name
        if "*" not in toks:
            toks = [t for t in toks if t != "const"]
        out.append(" ".join(toks).replace(" *", "*"))
    return tuple(out)


def declared_api(include_dir: Path, names: Sequence[str] = CALLED) -> dict[str, tuple[str, ...]]:
    """{function: parameter types} of the prototypes of `names` in the headers of
    `include_dir` (arm_nnfunctions.h first); functions not declared are left out."""
    headers = [include_dir / HEADER] + sorted(h for h in include_dir.glob("*.h")
                                               if h.name != HEADER)
    texts = [_strip_c(h.read_text(errors="replace")) for h in headers if h.is_file()]
    found: dict[str, tuple[str, ...]] = {}
    for name in names:
        for text in texts:
            m = re.search(rf"\b{name}\s*\(([^;{{}}()]*)\)\s*;", text)
            if m:
                found[name] = _param_types(m.group(1))
                break
    return found


def check_api(root: Path, where: str) -> None:
    """NncError unless the checkout at `root` declares every function nnc calls with the
    parameters nnc passes (those of the portable subset, which follows CMSIS-NN >= v7.0.0)."""
    want = declared_api(PORTABLE_ROOT / "Include")
    have = declared_api(root / "Include")
    problems = []
    for name in CALLED:
        if name not in have:
            problems.append(f"{name} is not declared")
        elif have[name] != want[name]:
            problems.append(f"{name} takes {len(have[name])} parameters ({', '.join(have[name])})"
                            f" where nnc passes {len(want[name])} ({', '.join(want[name])})")
    if problems:
        raise NncError(f"{where}: this CMSIS-NN's API is not the one nnc calls: "
                       f"{'; '.join(problems)}; nnc needs CMSIS-NN {MIN_VERSION} or later "
                       "(arm_vector_sum_s8 took its rhs_offset parameter in 2024)")


# ---- which sources: CMSIS-NN's CMake selection, then what nnc's calls need

_FLOAT_NAME = re.compile(r"_(f16|f32|flt)(_|$)")


class _CMakeUnsupported(Exception):
    """A CMakeLists.txt construct the small reader below does not interpret."""


_CMAKE_FALSE = {"", "0", "OFF", "NO", "FALSE", "N", "IGNORE", "NOTFOUND"}
_CMAKE_TRUE = {"1", "ON", "YES", "TRUE", "Y"}


def _cmake_args(text: str) -> list[tuple[str, bool]]:
    """(argument, quoted) of one command's argument text."""
    return [(m.group(1), True) if m.group(1) is not None else (m.group(2), False)
            for m in re.finditer(r'"([^"]*)"|([^\s"]+)', text)]


def _cmake_condition(tokens: list[str], defined: Mapping[str, list[str]]) -> bool:
    """if() conditions made of NOT/AND/OR, parentheses, constants and variable names (a name is
    true when set to a value that is not a false constant, as in CMake; options CMSIS-NN's
    CMakeLists tests, e.g. ARM_NN_ENABLE_F16, are unset here: their default is OFF)."""
    pos = 0

    def atom() -> bool:
        nonlocal pos
        if pos >= len(tokens):
            raise _CMakeUnsupported("empty condition")
        tok = tokens[pos]
        pos += 1
        if tok == "NOT":
            return not atom()
        if tok == "(":
            value = disjunction()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise _CMakeUnsupported("unbalanced parentheses")
            pos += 1
            return value
        if tok == "DEFINED":
            pos += 1
            return tokens[pos - 1] in defined
        if tok.upper() in _CMAKE_TRUE or tok.upper() in _CMAKE_FALSE:
            return tok.upper() in _CMAKE_TRUE
        if not re.fullmatch(r"[A-Za-z_][\w.+-]*", tok):
            raise _CMakeUnsupported(f"condition {tok!r}")
        value = ";".join(defined.get(tok, []))
        return value.upper() not in _CMAKE_FALSE and not value.upper().endswith("-NOTFOUND")

    def conjunction() -> bool:
        nonlocal pos
        value = atom()
        while pos < len(tokens) and tokens[pos] == "AND":
            pos += 1
            value = atom() and value
        return value

    def disjunction() -> bool:
        nonlocal pos
        value = conjunction()
        while pos < len(tokens) and tokens[pos] == "OR":
            pos += 1
            value = conjunction() or value
        return value

    value = disjunction()
    if pos != len(tokens):
        raise _CMakeUnsupported(f"condition operator {tokens[pos]!r}")
    return value


def cmake_folder_sources(cmakelists: Path) -> list[Path]:
    """The C sources one of CMSIS-NN's per-folder CMakeLists.txt adds with target_sources(),
    read with its options at their defaults (float16/float32 extensions off). Understands what
    those files use: file(GLOB), set(), list(APPEND), if()/elseif()/else()/endif(),
    target_sources(); raises _CMakeUnsupported on anything else that could change the list."""
    folder = cmakelists.parent
    text = re.sub(r"#[^\n]*", "", cmakelists.read_text(errors="replace"))
    variables: dict[str, list[str]] = {"CMAKE_CURRENT_SOURCE_DIR": [str(folder)],
                                       "CMAKE_CURRENT_LIST_DIR": [str(folder)]}
    blocks: list[list[bool]] = []  # per open if(): [branch active now, some branch taken]
    sources: list[Path] = []

    def expand(args: list[tuple[str, bool]]) -> list[str]:
        out: list[str] = []
        for arg, quoted in args:
            value = re.sub(r"\$\{(\w+)\}", lambda m: ";".join(variables.get(m.group(1), [])), arg)
            out += [value] if quoted else [v for v in value.split(";") if v]
        return out

    for m in re.finditer(r"(\w+)\s*\(((?:[^()]|\([^()]*\))*)\)", text):
        cmd, raw = m.group(1).lower(), m.group(2)
        active = all(b[0] for b in blocks)
        if cmd in ("if", "elseif", "else", "endif"):
            cond = re.findall(r"\(|\)|[^\s()]+", raw)
            if cmd == "if":
                value = active and _cmake_condition(cond, variables)
                blocks.append([value, value])
            elif not blocks:
                raise _CMakeUnsupported(f"{cmd}() without if()")
            elif cmd == "endif":
                blocks.pop()
            else:
                outer = all(b[0] for b in blocks[:-1])
                value = (outer and not blocks[-1][1]
                         and (cmd == "else" or _cmake_condition(cond, variables)))
                blocks[-1] = [value, blocks[-1][1] or value]
            continue
        if not active:
            continue
        args = expand(_cmake_args(raw))
        if cmd == "file":
            if not args or args[0] != "GLOB":
                raise _CMakeUnsupported(f"file({args[0] if args else ''})")
            var, patterns = args[1], [a for a in args[2:] if a != "CONFIGURE_DEPENDS"]
            variables[var] = sorted({str(p) for pat in patterns for p in folder.glob(pat)})
        elif cmd == "set":
            variables[args[0]] = [a for a in args[1:] if a != "PARENT_SCOPE"] if args else []
        elif cmd == "list":
            if len(args) < 2 or args[0] != "APPEND":
                raise _CMakeUnsupported(f"list({args[0] if args else ''})")
            variables.setdefault(args[1], []).extend(args[2:])
        elif cmd == "target_sources":
            for item in args[1:]:
                if item in ("PRIVATE", "PUBLIC", "INTERFACE"):
                    continue
                path = Path(item) if Path(item).is_absolute() else folder / item
                if path.suffix == ".c" and path.is_file():
                    sources.append(path.resolve())
        elif cmd in ("add_subdirectory", "include", "foreach", "function", "macro"):
            raise _CMakeUnsupported(f"{cmd}()")
    if blocks:
        raise _CMakeUnsupported("if() without endif()")
    return sorted(set(sources))


def cmake_sources(root: Path) -> list[Path]:
    """The C sources CMSIS-NN's own CMake build compiles by default: each Source/<Folder>'s
    CMakeLists.txt read by `cmake_folder_sources`; a folder without one (or with constructs the
    reader does not know) contributes its *.c files except the float16/float32 ones."""
    out: list[Path] = []
    for folder in sorted(p for p in (root / "Source").iterdir() if p.is_dir()):
        listed = None
        if (folder / "CMakeLists.txt").is_file():
            try:
                listed = cmake_folder_sources(folder / "CMakeLists.txt")
            except (_CMakeUnsupported, IndexError):
                listed = None
        if listed is None:
            listed = [p.resolve() for p in sorted(folder.glob("*.c"))
                      if not _FLOAT_NAME.search(p.stem)]
        out += listed
    return out


_PREPROCESSOR = re.compile(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", re.M)
_ATTRIBUTE = re.compile(r"__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)")
# definitions at file scope start in column 0 (CMSIS-NN is clang-formatted): a function's
# declarator followed by its body, or an initialized variable (the tables)
_FUNCTION_DEF = re.compile(r"^([A-Za-z_][\w\s*]*?)?\b([A-Za-z_]\w*)\s*\([^;{}]*\)\s*\{", re.M)
_DATA_DEF = re.compile(r"^([A-Za-z_][\w \t*]*?)\b([A-Za-z_]\w*)\s*(?:\[[^\]\n]*\]\s*)*=", re.M)
_IDENT = re.compile(r"\b[A-Za-z_]\w*\b")
_NOT_NAMES = {"if", "for", "while", "switch", "return", "sizeof", "do", "else"}


def _scan_source(path: Path) -> tuple[set[str], set[str]]:
    """(external symbols `path` defines, identifiers it uses) of one C source. Identifiers are
    taken from every preprocessor branch, so a source is counted as needing what its DSP and
    Helium paths call alike."""
    code = _strip_c(path.read_text(errors="replace"))
    body = _ATTRIBUTE.sub(" ", _PREPROCESSOR.sub("", code))
    defined = set()
    for rx in (_FUNCTION_DEF, _DATA_DEF):
        for m in rx.finditer(body):
            prefix, name = m.group(1) or "", m.group(2)
            if name not in _NOT_NAMES and not re.search(r"\b(static|typedef)\b", prefix):
                defined.add(name)
    return defined, set(_IDENT.findall(code)) - defined


def _header_uses(include_dir: Path) -> set[str]:
    """Identifiers used in the bodies of the headers' inline functions (they may call functions
    defined in Source/, on behalf of every source that includes them)."""
    used: set[str] = set()
    for h in sorted(include_dir.rglob("*.h")):
        if _FLOAT_NAME.search(h.stem):
            continue
        text = _PREPROCESSOR.sub("", _strip_c(h.read_text(errors="replace")))
        for m in re.finditer(r"\)\s*\{", text):
            i, depth = m.end(), 1
            while i < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            used |= set(_IDENT.findall(text[m.end():i]))
    return used


def needed_sources(root: Path, calls: Sequence[str] = CALLED) -> list[Path]:
    """The sources of `cmake_sources(root)` that the functions `calls` need: the ones defining
    them, then, transitively, the ones defining what those use (a few dozen of CMSIS-NN's ~110
    int sources). NncError when no source defines one of `calls`."""
    return list(_needed_sources(root.resolve(), tuple(calls), _fingerprint(root)))


def _fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    paths = [*root.glob("Source/*/*.c"), *root.glob("Source/*/CMakeLists.txt"),
             *root.glob("Include/**/*.h")]
    return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths))


@functools.lru_cache(maxsize=16)
def _needed_sources(root: Path, calls: tuple[str, ...],
                    fingerprint: tuple[tuple[str, int, int], ...]) -> tuple[Path, ...]:
    del fingerprint  # only part of the cache key: a changed checkout is scanned again
    scans = {p: _scan_source(p) for p in cmake_sources(root)}
    where: dict[str, Path] = {}
    for path, (defined, _) in scans.items():
        for name in defined:
            where.setdefault(name, path)
    missing = [c for c in calls if c not in where]
    if missing:
        raise NncError(f"no source CMSIS-NN's CMake build compiles defines {', '.join(missing)} "
                       f"(nnc needs CMSIS-NN {MIN_VERSION} or later)")
    todo = [*calls, *sorted(n for n in _header_uses(root / "Include") if n in where)]
    seen: set[str] = set()
    need: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in where:
            continue
        seen.add(name)
        path = where[name]
        if path not in need:
            need.add(path)
            todo += sorted(scans[path][1])
    return tuple(sorted(need))


def project_files(lib: Library, project: Path) -> tuple[list[str], list[str]]:
    """(include dirs, C sources) of the library for a project in `project`: the portable
    library's copy inside it (relative paths, see `stage`), a real checkout where it is."""
    if not lib.portable:
        return [str(lib.include_dir)], [str(p) for p in lib.sources()]
    return (["cmsis_nn/Include"],
            [str(p.relative_to(project)) for p in sorted(project.glob("cmsis_nn/Source/*/*.c"))])


def stage(lib: Library, project: Path) -> tuple[list[str], list[str]]:
    """Copy the portable library into the project (`cmsis_nn/`, so the project builds on its
    own; a real checkout stays where it is) and return `project_files`."""
    dst = project / "cmsis_nn"
    if dst.exists():
        shutil.rmtree(dst)
    if lib.portable:
        shutil.copytree(lib.root, dst)
    return project_files(lib, project)


def library_calls(module: LoopModule) -> int:
    """How many kernels of `module` call CMSIS-NN."""
    return sum(any(isinstance(s, CallExtern) and is_cmsis_call(s.fn) for s in walk_stmts(k.body))
               for k in module.kernels)


def module_uses_cmsis(module: LoopModule) -> bool:
    return library_calls(module) > 0


# ---------------------------------------------------------------- C rendering


@dataclass(frozen=True, slots=True)
class ExternCode:
    """C for one extern call: file-scope definitions, the statements at the call site, and the
    checks `<prefix>_init()` runs (each a statement that returns an error code on failure)."""

    includes: tuple[str, ...]
    globals: tuple[str, ...]
    body: tuple[str, ...]
    init: tuple[str, ...]


def _dims(name: str, n: int = 1, h: int = 1, w: int = 1, c: int = 1) -> str:
    return f"static const cmsis_nn_dims {name} = {{ .n = {n}, .h = {h}, .w = {w}, .c = {c} }};"


def _tile(w: int, h: int) -> str:
    return f"{{ .w = {w}, .h = {h} }}"


def _ctx(scratch: str, size: int) -> str:
    buf = f"(void *){scratch}" if scratch else "NULL"
    return f"const cmsis_nn_context ctx = {{ .buf = {buf}, .size = {size if scratch else 0} }};"


def _checked(call: str) -> list[str]:
    return [f"if ({call} != ARM_CMSIS_NN_SUCCESS) {{", "    nnc_extern_status = NNC_ERR_EXTERN;",
            "}"]


def _scratch_check(getter: str, planned: int) -> tuple[str, ...]:
    return (f"if ({getter} > {planned}) return NNC_ERR_SCRATCH;",)


def render_call(call: CallExtern, names: Mapping[str, str], tag: str) -> ExternCode:
    """C for `call` (as `lower_cmsis` built it); `names` maps buffer names to C expressions and
    `tag` prefixes the file-scope definitions."""
    bufs = [names[a] if a else "" for a in call.args if isinstance(a, str)]
    ints = [int(a.value) for a in call.args if isinstance(a, Const)]
    fn = call.fn
    g: list[str] = []
    body: list[str] = []
    init: tuple[str, ...] = ()
    if fn in ("arm_convolve_wrapper_s8", "arm_depthwise_conv_wrapper_s8"):
        x, w, bias, mult, shift, y, scratch = bufs
        (n, h, wd, c, oc, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, in_off, out_off, lo, hi,
         size) = ints
        dwc = fn == "arm_depthwise_conv_wrapper_s8"
        ptype = "cmsis_nn_dw_conv_params" if dwc else "cmsis_nn_conv_params"
        extra = f" .ch_mult = {oc // c}," if dwc else ""
        g += [f"static const {ptype} {tag}_params = {{ .input_offset = {in_off}, "
              f".output_offset = {out_off},{extra} .stride = {_tile(sw, sh)}, "
              f".padding = {_tile(pw, ph)}, .dilation = {_tile(dw, dh)}, "
              f".activation = {{ .min = {lo}, .max = {hi} }} }};",
              _dims(f"{tag}_input", n, h, wd, c),
              _dims(f"{tag}_filter", 1 if dwc else oc, kh, kw, oc if dwc else c),
              _dims(f"{tag}_bias", c=oc), _dims(f"{tag}_output", n, oh, ow, oc)]
        body += [_ctx(scratch, size),
                 "const cmsis_nn_per_channel_quant_params quant = { "
                 f".multiplier = (int32_t *){mult}, .shift = (int32_t *){shift} }};"]
        body += _checked(f"{fn}(&ctx, &{tag}_params, &quant, &{tag}_input, {x}, &{tag}_filter, "
                         f"{w}, &{tag}_bias, {bias or 'NULL'}, &{tag}_output, {y})")
        init = _scratch_check(f"{fn}_get_buffer_size(&{tag}_params, &{tag}_input, "
                              f"&{tag}_filter, &{tag}_output)", size)
    elif fn in ("arm_fully_connected_s8", "arm_fully_connected_per_channel_s8"):
        x, w, bias, mult, shift, y, scratch = bufs
        batch, depth, oc, in_off, w_off, out_off, lo, hi, size = ints
        g += [f"static const cmsis_nn_fc_params {tag}_params = {{ .input_offset = {in_off}, "
              f".filter_offset = {w_off}, .output_offset = {out_off}, "
              f".activation = {{ .min = {lo}, .max = {hi} }} }};",
              _dims(f"{tag}_input", batch, 1, 1, depth), _dims(f"{tag}_filter", depth, 1, 1, oc),
              _dims(f"{tag}_bias", c=oc), _dims(f"{tag}_output", batch, 1, 1, oc)]
        body.append(_ctx(scratch, size))
        if fn == "arm_fully_connected_s8":
            body.append(f"const cmsis_nn_per_tensor_quant_params quant = {{ "
                        f".multiplier = {mult}[0], .shift = {shift}[0] }};")
        else:
            body.append("const cmsis_nn_per_channel_quant_params quant = { "
                        f".multiplier = (int32_t *){mult}, .shift = (int32_t *){shift} }};")
        if scratch:  # Helium kernels read the kernel sums from the context buffer
            body += ["#if defined(ARM_MATH_MVEI)",
                     f"arm_vector_sum_s8((int32_t *){scratch}, {depth}, {oc}, {w}, {in_off}, "
                     f"{w_off}, {bias or 'NULL'});", "#endif"]
        body += _checked(f"{fn}(&ctx, &{tag}_params, &quant, &{tag}_input, {x}, &{tag}_filter, "
                         f"{w}, &{tag}_bias, {bias or 'NULL'}, &{tag}_output, {y})")
        init = _scratch_check(f"arm_fully_connected_s8_get_buffer_size(&{tag}_filter)", size)
    elif fn in ("arm_max_pool_s8", "arm_avgpool_s8"):
        x, y, scratch = bufs
        n, h, wd, c, oh, ow, kh, kw, sh, sw, ph, pw, lo, hi, size = ints
        g += [f"static const cmsis_nn_pool_params {tag}_params = {{ .stride = {_tile(sw, sh)}, "
              f".padding = {_tile(pw, ph)}, .activation = {{ .min = {lo}, .max = {hi} }} }};",
              _dims(f"{tag}_input", n, h, wd, c), _dims(f"{tag}_filter", 1, kh, kw, 1),
              _dims(f"{tag}_output", n, oh, ow, c)]
        body.append(_ctx(scratch, size))
        body += _checked(f"{fn}(&ctx, &{tag}_params, &{tag}_input, {x}, &{tag}_filter, "
                         f"&{tag}_output, {y})")
        if fn == "arm_avgpool_s8":
            init = _scratch_check(f"arm_avgpool_s8_get_buffer_size({ow}, {c})", size)
    elif fn == "arm_elementwise_add_s8":
        a, b, y = bufs
        body += _checked(f"{fn}({a}, {b}, {', '.join(map(str, ints[:7]))}, {y}, "
                         f"{', '.join(map(str, ints[7:]))})")
    elif fn == "arm_elementwise_mul_s8":
        a, b, y = bufs
        body += _checked(f"{fn}({a}, {b}, {ints[0]}, {ints[1]}, {y}, "
                         f"{', '.join(map(str, ints[2:]))})")
    elif fn == "arm_softmax_s8":  # returns nothing: no status to check
        x, y = bufs
        body.append(f"{fn}({x}, {', '.join(map(str, ints))}, {y});")
    else:
        raise NncError(f"unknown CMSIS-NN call {fn!r}")
    return ExternCode((HEADER,), tuple(g), tuple(body), init)


def is_cmsis_call(fn: str) -> bool:
    return fn.startswith("arm_")
