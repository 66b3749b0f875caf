"""CMSIS-NN calls for `lower-to-loops{kernels=cmsis-nn}`: the int8 ops CMSIS-NN can run, as
loop-IR kernels that call it.

    %y = conv_s8(%x, %w, %m, %s, %b) {layout="NHWC", ...}
    →  kernel k3_conv_s8 { call arm_convolve_wrapper_s8(%x, %w, %b, %m, %s, %y, %scratch, ...) }

`lower-to-loops{kernels=cmsis-nn}` asks `lower_cmsis(op, ...)` for each NHWC int8 op: one kernel
whose body is a single `CallExtern` (buffers by name, then the op's integers: shapes, strides,
pads, offsets, clamps, scratch bytes), or None for what CMSIS-NN cannot do (broadcasting add/mul,
NCHW ops, 3-D convs), and that op keeps its generated loop nest. The call's argument order is the
contract with the backend (`nnc.backends.cmsis_nn.render_call` builds the structs from it);
library lookup, staging and C rendering are the backend's, so no pass imports `backends/`.

Scratch: a kernel's scratch is an arena buffer that lives for that kernel only, so plan-memory
overlaps it with everything not live there. Its size is what CMSIS-NN's kernels for the target's
core need (the `_dsp` getters' formulas for Cortex-M4/M7 and the host, `_mve` for Helium cores);
`<prefix>_init()` calls the library's own getter and returns NNC_ERR_SCRATCH if it asks for more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nnc.ir.graph import Op
from nnc.ir.loops import Buffer, CallExtern, Const, Kernel, KernelBuilder
from nnc.ir.ops.int8 import is_depthwise, is_nhwc
from nnc.ir.ops.int8_softmax import rows_of
from nnc.ir.ops.nn import spatial_attrs

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
