"""ONNX converters for recurrent ops: LSTM, GRU, RNN, decomposed into existing graph ops.

The sequence length is static, so the recurrence is unrolled: per direction, one gemm projects
the whole input sequence (`X·Wᵀ + Wb + Rb`, rows in the input's order), then every time step
adds `H·Rᵀ` (a gemm), splits the gates and applies the activations with elementwise ops. Every
backend runs the result as it is, the elementwise chains fuse into the gemms, and int8
quantization sees ordinary gemms with constant weights. Y, Y_h (and LSTM's Y_c) are reshapes
and concats of the per-step states.

Supported: directions forward/reverse/bidirectional, `layout` 0 and 1, the `activations`
attribute (Sigmoid, Tanh, Relu, LeakyRelu, ThresholdedRelu, HardSigmoid, Elu, Softsign,
Softplus, Affine, ScaledTanh, with activation_alpha/beta taken in order as onnxruntime does),
`clip`, GRU's `linear_before_reset`, LSTM's `input_forget` and peepholes, and the optional
inputs B, initial_h, initial_c, P. `sequence_lens` must be a constant equal to the sequence
length for every batch entry: variable-length batches need masking nnc does not do.

Gate order (ONNX): LSTM i, o, f, c (peepholes i, o, f); GRU z, r, h; RNN one gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nnc.compiler.onnx.registry import ConversionError, ConvertContext, converter
from nnc.ir.types import TensorType, is_float

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"),
                       "RNN": ("Tanh",)}
# activation (lower case) -> (graph-IR op, default alpha, default beta); None: no such
# parameter. The defaults are onnxruntime's (the spec gives none): 0 where it has no other.
ACTIVATIONS: dict[str, tuple[str, float | None, float | None]] = {
    "sigmoid": ("sigmoid", None, None), "tanh": ("tanh", None, None),
    "relu": ("relu", None, None), "softsign": ("softsign", None, None),
    "softplus": ("softplus", None, None), "leakyrelu": ("leaky_relu", 0.01, None),
    "thresholdedrelu": ("thresholded_relu", 0.0, None),
    "hardsigmoid": ("hard_sigmoid", 0.2, 0.5), "elu": ("elu", 1.0, None),
    "affine": ("affine", 0.0, 0.0), "scaledtanh": ("scaled_tanh", 0.0, 0.0),
}


@dataclass(frozen=True)
class Activation:
    name: str  # lower case ONNX name
    alpha: float | None
    beta: float | None


@dataclass(frozen=True)
class Recurrence:
    """One recurrent node's static configuration."""

    op_type: str
    seq: int
    batch: int
    hidden: int
    layout: int
    directions: tuple[str, ...]  # "forward" / "reverse", one per output direction
    activations: tuple[tuple[Activation, ...], ...]  # per direction
    clip: float | None
    dtype: str

    @property
    def gates(self) -> int:
        return GATES[self.op_type]


# ---------------------------------------------------------------- configuration


def _type(ctx: ConvertContext, i: int, what: str) -> TensorType:
    t = ctx.type(i)
    if t is None:
        raise ConversionError(f"input {i} ({what}) is required")
    return t


def _expect(t: TensorType | None, shape: Sequence[int], what: str) -> None:
    if t is not None and t.shape != tuple(shape):
        raise ConversionError(f"{what} has shape {list(t.shape)}, expected {list(shape)}")


def _activations(ctx: ConvertContext, nd: int) -> tuple[tuple[Activation, ...], ...]:
    per_dir = len(DEFAULT_ACTIVATIONS[ctx.node.op_type])
    names = ctx.attr("activations")
    if not names:
        names = list(DEFAULT_ACTIVATIONS[ctx.node.op_type]) * nd
    names = [str(n) for n in names]
    if len(names) == per_dir and nd == 2:
        names = names * 2  # one set given for both directions
    if len(names) != per_dir * nd:
        raise ConversionError(f"activations {names}: expected {per_dir} per direction "
                              f"({per_dir * nd} in all)")
    alphas = iter(float(a) for a in ctx.attr("activation_alpha", []) or [])
    betas = iter(float(b) for b in ctx.attr("activation_beta", []) or [])
    acts = []
    for n in names:
        key = n.lower()
        if key not in ACTIVATIONS:
            raise ConversionError(f"activation {n!r} is not supported (supported: "
                                  f"{', '.join(sorted(ACTIVATIONS))}, any case)")
        _, da, db = ACTIVATIONS[key]
        # onnxruntime hands out activation_alpha/beta in order to the functions that take one
        alpha = next(alphas, da) if da is not None else None
        beta = next(betas, db) if db is not None else None
        acts.append(Activation(key, alpha, beta))
    return tuple(tuple(acts[d * per_dir:(d + 1) * per_dir]) for d in range(nd))


def _check_sequence_lens(ctx: ConvertContext, seq: int, batch: int) -> None:
    if not ctx.has_input(4):
        return
    lens = ctx.const(4)
    if lens is None:
        raise ConversionError(
            "sequence_lens must be a compile-time constant equal to the sequence length "
            f"({seq}) for every batch entry{ctx.bind_hint(4)}")
    values = [int(v) for v in np.asarray(lens).reshape(-1)]
    if len(values) != batch or any(v != seq for v in values):
        raise ConversionError(
            f"sequence_lens {values} must equal the sequence length ({seq}) for each of the "
            f"{batch} batch entries; nnc supports only full-length sequences")


def _configure(ctx: ConvertContext) -> Recurrence:
    op_type = ctx.node.op_type
    g = GATES[op_type]
    x = _type(ctx, 0, "X")
    if x.rank != 3 or not is_float(x.dtype):
        raise ConversionError(f"X must be a 3-D float tensor, got {x}")
    layout = int(ctx.attr("layout", 0)) if ctx.opset >= 14 else 0
    if layout not in (0, 1):
        raise ConversionError(f"layout={layout} is not 0 or 1")
    seq, batch, n_in = (x.shape[1], x.shape[0], x.shape[2]) if layout else x.shape
    if seq < 1 or batch < 1:
        raise ConversionError(f"X {x}: the sequence length and batch must be >= 1")
    direction = ctx.attr("direction", "forward")
    dirs = {"forward": ("forward",), "reverse": ("reverse",),
            "bidirectional": ("forward", "reverse")}.get(direction)
    if dirs is None:
        raise ConversionError(f"direction={direction!r} is not forward, reverse or bidirectional")
    nd = len(dirs)
    w, r = _type(ctx, 1, "W"), _type(ctx, 2, "R")
    hidden = int(ctx.attr("hidden_size", r.shape[-1] if r.rank == 3 else 0))
    _expect(w, (nd, g * hidden, n_in), "W")
    _expect(r, (nd, g * hidden, hidden), "R")
    _expect(ctx.type(3), (nd, 2 * g * hidden), "B")
    state = (batch, nd, hidden) if layout else (nd, batch, hidden)
    _expect(ctx.type(5), state, "initial_h")
    if op_type == "LSTM":
        _expect(ctx.type(6), state, "initial_c")
        _expect(ctx.type(7), (nd, 3 * hidden), "P")
    for i in (1, 2, 3, 5, 6, 7):
        t = ctx.type(i) if i < len(ctx.node.input) else None
        if t is not None and t.dtype != x.dtype:
            raise ConversionError(f"input {i} has dtype {t.dtype}, X has {x.dtype}")
    _check_sequence_lens(ctx, seq, batch)
    clip = ctx.attr("clip")
    if clip is not None and float(clip) <= 0:
        raise ConversionError(f"clip={clip} must be > 0")
    return Recurrence(op_type, seq, batch, hidden, layout, dirs, _activations(ctx, nd),
                      None if clip is None else float(clip), x.dtype)


# ---------------------------------------------------------------- graph-building helpers


def _take(ctx: ConvertContext, name: str, axis: int, start: int, stop: int,
          squeeze: bool = False, step: int = 1) -> str:
    """name[..., start:stop:step, ...] along `axis` (dropped when `squeeze`); a constant is
    sliced here, anything else gets a slice op."""
    t = ctx.value_type(name)
    arr = ctx.builder.constants.get(name)
    index = tuple(slice(start, stop, step) if a == axis else slice(None) for a in range(t.rank))
    shape = list(t.shape)
    shape[axis] = len(range(start, stop, step))
    if squeeze:
        del shape[axis]
    if arr is not None:
        return ctx.constant(np.ascontiguousarray(arr[index]).reshape(shape), "rnn_w")
    if (start, stop, step) == (0, t.shape[axis], 1):
        out = name
    else:
        attrs = {"starts": tuple(start if a == axis else 0 for a in range(t.rank)),
                 "ends": tuple(stop if a == axis else d for a, d in enumerate(t.shape)),
                 "steps": tuple(step if a == axis else 1 for a in range(t.rank))}
        out = ctx.emit("slice", [name], attrs)[0]
    return _reshape(ctx, out, shape) if squeeze else out


def _reshape(ctx: ConvertContext, name: str, shape: Sequence[int], out: str = "") -> str:
    return ctx.emit("reshape", [name], {"shape": tuple(int(d) for d in shape)},
                    outputs=[out] if out else None)[0]


def _binary(ctx: ConvertContext, kind: str, a: str, b: str) -> str:
    return ctx.emit(kind, [a, b])[0]


def _scalar(ctx: ConvertContext, value: float, dtype: str) -> str:
    return ctx.constant(np.array(value, dtype=dtype), "rnn_k")


def _activate(ctx: ConvertContext, rec: Recurrence, fn: Activation, x: str,
              clip: bool = True) -> str:
    """fn(x), x clipped first when the node has `clip` (gate inputs are; LSTM's cell state
    before h() is not, as in onnxruntime)."""
    if clip and rec.clip is not None:
        x = ctx.emit("clip", [x], {"min": -rec.clip, "max": rec.clip})[0]
    kind = ACTIVATIONS[fn.name][0]
    if kind == "affine":  # alpha * x + beta
        y = _binary(ctx, "mul", x, _scalar(ctx, fn.alpha or 0.0, rec.dtype))
        return _binary(ctx, "add", y, _scalar(ctx, fn.beta or 0.0, rec.dtype))
    if kind == "scaled_tanh":  # alpha * tanh(beta * x)
        t = ctx.emit("tanh", [_binary(ctx, "mul", x, _scalar(ctx, fn.beta or 0.0, rec.dtype))])[0]
        return _binary(ctx, "mul", t, _scalar(ctx, fn.alpha or 0.0, rec.dtype))
    attrs: dict[str, float] = {}
    if fn.alpha is not None:
        attrs["alpha"] = fn.alpha
    if fn.beta is not None:
        attrs["beta"] = fn.beta
    return ctx.emit(kind, [x], attrs)[0]


def _recur(ctx: ConvertContext, h: str | None, r: str, bias: str | None = None) -> str | None:
    """H·Rᵀ (+ bias), None without a previous state (an all-zero H)."""
    if h is None:
        return None
    return ctx.emit("gemm", [h, r] + ([bias] if bias else []), {"trans_b": 1})[0]


def _add(ctx: ConvertContext, a: str, b: str | None) -> str:
    return a if b is None else _binary(ctx, "add", a, b)


def _mul(ctx: ConvertContext, a: str, b: str | None) -> str | None:
    return None if b is None else _binary(ctx, "mul", a, b)


# ---------------------------------------------------------------- the cells


@dataclass
class Direction:
    """One direction's operands (graph-IR names, 2-D/1-D: the direction axis removed)."""

    w: str  # [G*H, input]
    r: str  # [G*H, H]
    wb: str | None  # [G*H]
    rb: str | None  # [G*H]
    h0: str | None  # [batch, H]
    c0: str | None
    p: str | None  # [3H]
    acts: tuple[Activation, ...]


def _lstm_step(ctx: ConvertContext, rec: Recurrence, d: Direction, xw: str, h: str | None,
               c: str | None) -> tuple[str, str]:
    hs = rec.hidden
    f_act, g_act, h_act = d.acts
    gates = _add(ctx, xw, _recur(ctx, h, d.r))
    i, o, f, cc = ctx.emit("split", [gates], {"axis": 1, "splits": (hs,) * 4})
    pi = po = pf = None
    if d.p is not None:
        pi, po, pf = (_take(ctx, d.p, 0, k * hs, (k + 1) * hs) for k in range(3))
    if c is not None and pi is not None and pf is not None:
        i = _binary(ctx, "add", i, _binary(ctx, "mul", c, pi))
        f = _binary(ctx, "add", f, _binary(ctx, "mul", c, pf))
    i = _activate(ctx, rec, f_act, i)
    if int(ctx.attr("input_forget", 0)):
        f = _binary(ctx, "sub", _scalar(ctx, 1.0, rec.dtype), i)
    else:
        f = _activate(ctx, rec, f_act, f)
    new_c = _binary(ctx, "mul", i, _activate(ctx, rec, g_act, cc))
    new_c = _add(ctx, new_c, _mul(ctx, f, c))
    if po is not None:
        o = _binary(ctx, "add", o, _binary(ctx, "mul", new_c, po))
    o = _activate(ctx, rec, f_act, o)
    new_h = _binary(ctx, "mul", o, _activate(ctx, rec, h_act, new_c, clip=False))
    return new_h, new_c


def _gru_step(ctx: ConvertContext, rec: Recurrence, d: Direction, xw: str, h: str | None,
              rb_h: str | None) -> str:
    """`rb_h`: the recurrent bias of the h gate with linear_before_reset ([G*H], zeros for z
    and r; the other biases are in `xw`)."""
    hs = rec.hidden
    f_act, g_act = d.acts
    zx, rx, hx = ctx.emit("split", [xw], {"axis": 1, "splits": (hs,) * 3})
    if int(ctx.attr("linear_before_reset", 0)):
        rec_all = _recur(ctx, h, d.r, rb_h)
        if rec_all is not None:
            zr, rr, hr = ctx.emit("split", [rec_all], {"axis": 1, "splits": (hs,) * 3})
            zx, rx = _binary(ctx, "add", zx, zr), _binary(ctx, "add", rx, rr)
            h_rec: str | None = hr
        else:
            h_rec = None if rb_h is None else _take(ctx, rb_h, 0, 2 * hs, 3 * hs)
        z, r = _activate(ctx, rec, f_act, zx), _activate(ctx, rec, f_act, rx)
        hh = _add(ctx, hx, _mul(ctx, r, h_rec))
    else:
        zr_rec = None if h is None else _recur(ctx, h, _take(ctx, d.r, 0, 0, 2 * hs))
        if zr_rec is not None:
            zr, rr = ctx.emit("split", [zr_rec], {"axis": 1, "splits": (hs, hs)})
            zx, rx = _binary(ctx, "add", zx, zr), _binary(ctx, "add", rx, rr)
        z, r = _activate(ctx, rec, f_act, zx), _activate(ctx, rec, f_act, rx)
        rh = _mul(ctx, r, h)
        hh = _add(ctx, hx, _recur(ctx, rh, _take(ctx, d.r, 0, 2 * hs, 3 * hs)))
    hh = _activate(ctx, rec, g_act, hh)
    # H = (1 - z) * hh + z * H_prev
    keep = _binary(ctx, "sub", _scalar(ctx, 1.0, rec.dtype), z)
    return _add(ctx, _binary(ctx, "mul", keep, hh), _mul(ctx, z, h))


def _rnn_step(ctx: ConvertContext, rec: Recurrence, d: Direction, xw: str,
              h: str | None) -> str:
    return _activate(ctx, rec, d.acts[0], _add(ctx, xw, _recur(ctx, h, d.r)))


# ---------------------------------------------------------------- the node


def _direction(ctx: ConvertContext, rec: Recurrence, k: int) -> Direction:
    gh = rec.gates * rec.hidden
    state_axis = 1 if rec.layout else 0

    def opt(i: int, axis: int = 0) -> str | None:
        return _take(ctx, ctx.input(i), axis, k, k + 1, squeeze=True) if ctx.has_input(i) \
            else None

    b = opt(3)
    wb = None if b is None else _take(ctx, b, 0, 0, gh)
    rb = None if b is None else _take(ctx, b, 0, gh, 2 * gh)
    lstm = rec.op_type == "LSTM"
    return Direction(
        w=_take(ctx, ctx.input(1), 0, k, k + 1, squeeze=True),
        r=_take(ctx, ctx.input(2), 0, k, k + 1, squeeze=True), wb=wb, rb=rb,
        h0=opt(5, state_axis), c0=opt(6, state_axis) if lstm else None,
        p=opt(7) if lstm else None, acts=rec.activations[k])


def _input_bias(ctx: ConvertContext, rec: Recurrence, d: Direction) -> tuple[str | None,
                                                                               str | None]:
    """(the bias added to X·Wᵀ, GRU linear_before_reset's recurrent bias or None)."""
    if d.wb is None or d.rb is None:
        return None, None
    if rec.op_type == "GRU" and int(ctx.attr("linear_before_reset", 0)):
        hs = rec.hidden
        mask = np.repeat(np.array([1, 1, 0], dtype=rec.dtype), hs)
        zr = _binary(ctx, "mul", d.rb, ctx.constant(mask, "rnn_mask"))
        hb = _binary(ctx, "mul", d.rb, ctx.constant(1 - mask, "rnn_mask"))
        return _binary(ctx, "add", d.wb, zr), hb
    return _binary(ctx, "add", d.wb, d.rb), None


def _join(ctx: ConvertContext, parts: Sequence[str], axis: int, out: str = "") -> str:
    if len(parts) == 1:
        if not out:
            return parts[0]
        return _reshape(ctx, parts[0], ctx.value_type(parts[0]).shape, out)
    return ctx.emit("concat", list(parts), {"axis": axis}, outputs=[out] if out else None)[0]


def convert_recurrent(ctx: ConvertContext) -> list[str]:
    rec = _configure(ctx)
    s, bsz, hs = rec.seq, rec.batch, rec.hidden
    n_in = _type(ctx, 0, "X").shape[2]
    x2 = _reshape(ctx, ctx.input(0), (s * bsz, n_in))  # rows t*batch+b (layout 1: b*seq+t)
    outs = list(ctx.node.output) + [""] * 3
    want_y = bool(outs[0])
    ys, last_h, last_c = [], [], []
    for k, direction in enumerate(rec.directions):
        d = _direction(ctx, rec, k)
        bias, rb_h = _input_bias(ctx, rec, d)
        xw = ctx.emit("gemm", [x2, d.w] + ([bias] if bias else []), {"trans_b": 1})[0]
        h, c = d.h0, d.c0
        states: dict[int, str] = {}
        steps = range(s) if direction == "forward" else range(s - 1, -1, -1)
        for t in steps:
            if s == 1:
                xw_t = xw
            elif rec.layout:
                xw_t = _take(ctx, xw, 0, t, s * bsz, step=s)
            else:
                xw_t = _take(ctx, xw, 0, t * bsz, (t + 1) * bsz)
            if rec.op_type == "LSTM":
                h, c = _lstm_step(ctx, rec, d, xw_t, h, c)
            elif rec.op_type == "GRU":
                h = _gru_step(ctx, rec, d, xw_t, h, rb_h)
            else:
                h = _rnn_step(ctx, rec, d, xw_t, h)
            states[t] = h
        assert h is not None
        last_h.append(h)
        if c is not None:
            last_c.append(c)
        if want_y:
            piece = (bsz, 1, 1, hs) if rec.layout else (1, 1, bsz, hs)
            ys.append(_join(ctx, [_reshape(ctx, states[t], piece) for t in range(s)],
                            1 if rec.layout else 0))
    results = []
    results.append(_join(ctx, ys, 2 if rec.layout else 1, outs[0]) if want_y else "")
    state = (bsz, 1, hs) if rec.layout else (1, bsz, hs)
    finals = [last_h, last_c] if rec.op_type == "LSTM" else [last_h]
    for k, values in enumerate(finals, start=1):
        if outs[k]:
            results.append(_join(ctx, [_reshape(ctx, v, state) for v in values],
                                 1 if rec.layout else 0, outs[k]))
        else:
            results.append("")
    return results


for _op in GATES:
    converter(_op, since=7)(convert_recurrent)
