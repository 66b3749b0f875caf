"""The CMSIS-NN kernel backend: int8 ops lowered to calls into CMSIS-NN's s8 API.

    %y = conv_s8(%x, %w, %m, %s, %b) {layout="NHWC", ...}
    →  kernel k3_conv_s8 { call arm_convolve_wrapper_s8(%x, %w, %b, %m, %s, %y, %scratch, ...) }

`lower_cmsis(op, ...)` turns one NHWC int8 op into a loop-IR kernel whose body is a single
`CallExtern` (buffers by name, then the op's integers: shapes, strides, pads, offsets, clamps,
scratch bytes); it returns None for what CMSIS-NN cannot do (broadcasting add/mul, NCHW ops,
3-D convs), and that op keeps its generated loop nest. The C emitter renders each call with the
real structs (`cmsis_nn_conv_params`, `cmsis_nn_dims`, ...; designated initializers, so releases
that add fields still compile), checks its status, and `<prefix>_init()` checks that the
scratch nnc planned is at least what the library's `*_get_buffer_size` asks for.

Scratch: a kernel's scratch is an arena buffer that lives for that kernel only, so plan-memory
overlaps it with everything not live there. Its size is what CMSIS-NN's kernels for the target's
core need (the `_dsp` getters' formulas for Cortex-M4/M7 and the host, `_mve` for Helium cores);
`<prefix>_init()` calls the library's own getter and returns NNC_ERR_SCRATCH if it asks for more.

Which library: the project builds against `CMSIS_NN_PATH` / `--cmsis-nn PATH` (a CMSIS-NN
checkout: Include/ and Source/*/*.c) when given, else against nnc's portable implementation of the
same API subset (runtime_c/cmsis_nn, bit-exact with TFLite's arithmetic, 3-5x slower than the
real DSP/Helium kernels).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nnc.errors import NncError
from nnc.ir.graph import Op
from nnc.ir.loops import Buffer, CallExtern, Const, Kernel, KernelBuilder, LoopModule, walk_stmts
from nnc.ir.ops.int8 import is_depthwise, is_nhwc
from nnc.ir.ops.int8_softmax import rows_of
from nnc.ir.ops.nn import spatial_attrs

PORTABLE_ROOT = Path(__file__).resolve().parent.parent / "runtime_c" / "cmsis_nn"
HEADER = "arm_nnfunctions.h"
KERNEL_CHOICES = ("generated", "cmsis-nn")

# ---------------------------------------------------------------- which library


@dataclass(frozen=True, slots=True)
class Library:
    """A CMSIS-NN source tree: `root`/Include and `root`/Source/*/*.c."""

    root: Path
    portable: bool

    @property
    def include_dir(self) -> Path:
        return self.root / "Include"

    def sources(self) -> list[Path]:
        return sorted(self.root.glob("Source/*/*.c"))


def find_library(path: str | os.PathLike[str] | None = None) -> Library:
    """The CMSIS-NN tree to build against: `path`, else $CMSIS_NN_PATH, else the portable one."""
    given = path if path is not None else os.environ.get("CMSIS_NN_PATH") or None
    if given is None:
        return Library(PORTABLE_ROOT, True)
    root = Path(given).expanduser().resolve()
    if not (root / "Include" / HEADER).is_file() or not list(root.glob("Source/*/*.c")):
        where = "--cmsis-nn" if path is not None else "CMSIS_NN_PATH"
        raise NncError(f"{where}={given}: not a CMSIS-NN checkout (expected Include/{HEADER} and "
                       "Source/*/*.c); point it at the root of github.com/ARM-software/CMSIS-NN "
                       "or unset it to use nnc's portable CMSIS-NN subset")
    return Library(root, root == PORTABLE_ROOT)


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


# ---------------------------------------------------------------- scratch sizes (bytes)


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def conv_scratch(kh: int, kw: int, c_in: int, one_by_one: bool, mve: bool) -> int:
    """arm_convolve_wrapper_s8_get_buffer_size: DSP: two im2col columns of int16; Helium: four
    int8 columns padded to 16; 0 for the 1x1 fast path."""
    if one_by_one:
        return 0
    cols = kh * kw * c_in
    return 4 * _round_up(cols, 16) if mve else 2 * _round_up(cols, 4) * 2


def depthwise_scratch(kh: int, kw: int, c: int, c_out: int, batch: int, dilated: bool,
                      pad_h: int, pad_w: int, mve: bool) -> int:
    """arm_depthwise_conv_wrapper_s8_get_buffer_size: the optimized (ch_mult 1, batch 1, no
    dilation) paths' buffers (DSP: none for 3x3 with padding <= 1)."""
    if c != c_out or batch != 1 or dilated:
        return 0
    if mve:
        return 4 * 124 * kh * kw
    return 0 if (kh, kw) == (3, 3) and pad_h <= 1 and pad_w <= 1 else c * kh * kw * 2


def fc_scratch(oc: int, mve: bool) -> int:
    """arm_fully_connected_s8_get_buffer_size: Helium keeps the kernel sums (int32 per output)."""
    return 4 * oc if mve else 0


def avgpool_scratch(c: int, mve: bool) -> int:
    """arm_avgpool_s8_get_buffer_size: the DSP kernel's int32 row of channel sums."""
    return 0 if mve else 4 * c


# ---------------------------------------------------------------- lowering


ScratchFn = Callable[[int], Buffer | None]


@dataclass(frozen=True, slots=True)
class _Call:
    """What the lowering of one op needs besides the op: its buffers, a scratch maker, and
    whether the core has Helium (MVE; else DSP sizes: Cortex-M4/M7 and the host)."""

    ins: Sequence[Buffer | None]
    out: Buffer
    scratch: ScratchFn
    mve: bool


def _ints(*values: int) -> tuple[Const, ...]:
    return tuple(Const(int(v), "int32") for v in values)


def _spatial2(values: Sequence[int], fill: int) -> tuple[int, int]:
    """(h, w) of a 2-D attribute, or (fill, w) for a 1-D op."""
    return (values[0], values[1]) if len(values) == 2 else (fill, values[0])


def _conv(op: Op, c: _Call) -> tuple[str, tuple[str | Const, ...]] | None:
    ins, out = c.ins, c.out
    x, w, mult, shift = ins[:4]
    bias = ins[4] if len(ins) > 4 else None
    assert x is not None and w is not None and mult is not None and shift is not None
    nsp = len(x.shape) - 2
    if nsp not in (1, 2):
        return None
    strides, pb, _, dil = spatial_attrs(op.attrs, nsp)
    group = op.attrs.get_int("group", 1)
    a = op.attrs
    n, c_in, oc = x.shape[0], x.shape[-1], out.shape[-1]
    h, wd = _spatial2(x.shape[1:-1], 1)
    oh, ow = _spatial2(out.shape[1:-1], 1)
    kh, kw = _spatial2(w.shape[1:-1], 1)
    sh, sw = _spatial2(strides, 1)
    ph, pw = _spatial2(pb, 0)
    dh, dw = _spatial2(dil, 1)
    common = _ints(n, h, wd, c_in, oc, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw,
                   -a.get_int("input_zero_point", 0), a.get_int("output_zero_point", 0),
                   a.get_int("act_min", -128), a.get_int("act_max", 127))
    per_tensor = mult.size == 1 and oc > 1
    if per_tensor:
        return None  # CMSIS-NN convs take one multiplier per output channel
    if is_depthwise(group, c_in):
        size = depthwise_scratch(kh, kw, c_in, oc, n, (dh, dw) != (1, 1), ph, pw, c.mve)
        fn = "arm_depthwise_conv_wrapper_s8"
    elif group == 1:
        one = (kh, kw, ph, pw, dh, dw) == (1, 1, 0, 0, 1, 1)
        size = conv_scratch(kh, kw, c_in, one, c.mve)
        fn = "arm_convolve_wrapper_s8"
    else:
        return None  # grouped (not depthwise): CMSIS-NN's wrapper support varies by release
    buf = c.scratch(size)
    return fn, (x.name, w.name, bias.name if bias else "", mult.name, shift.name, out.name,
                buf.name if buf else "", *common, *_ints(size))


def _fc(op: Op, c: _Call) -> tuple[str, tuple[str | Const, ...]] | None:
    ins, out = c.ins, c.out
    x, w, mult, shift = ins[:4]
    bias = ins[4] if len(ins) > 4 else None
    assert x is not None and w is not None and mult is not None and shift is not None
    a = op.attrs
    depth, oc = w.shape[1], w.shape[0]
    batch = x.size // depth
    size = fc_scratch(oc, c.mve)
    buf = c.scratch(size)
    fn = "arm_fully_connected_s8" if mult.size == 1 else "arm_fully_connected_per_channel_s8"
    return fn, (x.name, w.name, bias.name if bias else "", mult.name, shift.name, out.name,
                buf.name if buf else "",
                *_ints(batch, depth, oc, -a.get_int("input_zero_point", 0),
                       -a.get_int("weight_zero_point", 0), a.get_int("output_zero_point", 0),
                       a.get_int("act_min", -128), a.get_int("act_max", 127), size))


def _pool(op: Op, call: _Call) -> tuple[str, tuple[str | Const, ...]] | None:
    x, out = call.ins[0], call.out
    assert x is not None
    nsp = len(x.shape) - 2
    if nsp not in (1, 2):
        return None
    a = op.attrs
    strides, pb, _, _ = spatial_attrs(a, nsp)
    n, c = x.shape[0], x.shape[-1]
    h, wd = _spatial2(x.shape[1:-1], 1)
    oh, ow = _spatial2(out.shape[1:-1], 1)
    kh, kw = _spatial2(a.get_ints("kernel_shape"), 1)
    sh, sw = _spatial2(strides, 1)
    ph, pw = _spatial2(pb, 0)
    is_max = op.kind == "max_pool_s8"
    size = 0 if is_max else avgpool_scratch(c, call.mve)
    buf = call.scratch(size)
    fn = "arm_max_pool_s8" if is_max else "arm_avgpool_s8"
    return fn, (x.name, out.name, buf.name if buf else "",
                *_ints(n, h, wd, c, oh, ow, kh, kw, sh, sw, ph, pw, a.get_int("act_min", -128),
                       a.get_int("act_max", 127), size))


def _elementwise(op: Op, c: _Call) -> tuple[str, tuple[str | Const, ...]] | None:
    a_buf, b_buf, out = c.ins[0], c.ins[1], c.out
    assert a_buf is not None and b_buf is not None
    if a_buf.shape != out.shape or b_buf.shape != out.shape:
        return None  # CMSIS-NN's elementwise kernels do not broadcast
    a = op.attrs
    lo, hi = a.get_int("act_min", -128), a.get_int("act_max", 127)
    if op.kind == "add_s8":
        return "arm_elementwise_add_s8", (a_buf.name, b_buf.name, out.name, *_ints(
            -a.get_int("a_zero_point", 0), a.get_int("a_multiplier", 0), a.get_int("a_shift", 0),
            -a.get_int("b_zero_point", 0), a.get_int("b_multiplier", 0), a.get_int("b_shift", 0),
            a.get_int("left_shift", 20), a.get_int("output_zero_point", 0),
            a.get_int("output_multiplier", 0), a.get_int("output_shift", 0), lo, hi, out.size))
    return "arm_elementwise_mul_s8", (a_buf.name, b_buf.name, out.name, *_ints(
        -a.get_int("a_zero_point", 0), -a.get_int("b_zero_point", 0),
        a.get_int("output_zero_point", 0), a.get_int("output_multiplier", 0),
        a.get_int("output_shift", 0), lo, hi, out.size))


def _softmax(op: Op, c: _Call) -> tuple[str, tuple[str | Const, ...]] | None:
    x = c.ins[0]
    assert x is not None
    rows, row_size = rows_of(x.shape, op.attrs)
    a = op.attrs
    return "arm_softmax_s8", (x.name, c.out.name, *_ints(
        rows, row_size, a.get_int("input_multiplier"), a.get_int("input_left_shift"),
        a.get_int("diff_min")))


_LOWERINGS = {
    "conv_s8": _conv,
    "fully_connected_s8": _fc,
    "max_pool_s8": _pool,
    "avg_pool_s8": _pool,
    "add_s8": _elementwise,
    "mul_s8": _elementwise,
    "softmax_s8": _softmax,
}


def supports(op: Op) -> bool:
    """Whether CMSIS-NN may run `op` (the final say is `lower_cmsis`, which sees the shapes)."""
    if op.kind not in _LOWERINGS:
        return False
    return op.kind not in ("conv_s8", "max_pool_s8", "avg_pool_s8") or is_nhwc(op.attrs)


def lower_cmsis(op: Op, kernel_name: str, ins: Sequence[Buffer | None], outs: Sequence[Buffer],
                scratch: ScratchFn, macs: int, mve: bool = False) -> Kernel | None:
    """A kernel calling CMSIS-NN for `op`, or None when CMSIS-NN cannot run it. `scratch(n)`
    makes an n-byte arena buffer for this kernel (None for n == 0); `mve`: size scratch for
    Helium cores (Cortex-M55) instead of DSP ones (M4/M7, host)."""
    if not supports(op) or len(outs) != 1:
        return None
    made = _LOWERINGS[op.kind](op, _Call(ins, outs[0], scratch, mve))
    if made is None:
        return None
    fn, args = made
    b = KernelBuilder(kernel_name)
    b.emit(CallExtern(fn, args))
    params: list[str] = []
    for a in args:
        if isinstance(a, str) and a and a not in params:
            params.append(a)
    return b.build(params, op_kind=op.kind, op_name=op.name, macs=macs)


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
