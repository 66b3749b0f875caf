"""The int8 accuracy report: how far the quantized graph is from the float one, layer by layer.

Both graphs run in the graph interpreter (bit-exact with the compiled C) on an evaluation set:

    >>> rep = quant_report(float_graph, int8_graph, quant_map, samples)    # doctest: +SKIP
    >>> print(rep.table())                                                 # doctest: +SKIP
    >>> rep.to_json()["outputs"][0]["sqnr_db"]                             # doctest: +SKIP

- per layer: every op of the int8 graph with an int8 output, in graph order: SQNR (dB), max
  absolute error and the share of float values outside the int8 range (clipped) of its output,
  dequantized, against the float value it stands for (`quant_map`, recorded by the quantize pass);
- per graph output: SQNR, max absolute error and, when the output looks like class scores,
  top-1 agreement (argmax over the last axis, one vote per row).

The evaluation set defaults to the last 20% of the calibration samples, held out from calibration
(`split_holdout`); `nnc.compile(..., evaluation=DATA)` / `--eval DATA` gives a separate one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnc.errors import NncError
from nnc.ir.graph import Graph, Value
from nnc.ir.interp import run_graph
from nnc.ir.types import QuantParams

Sample = Mapping[str, np.ndarray]
HOLDOUT_FRACTION = 0.2
# where the evaluation samples come from, as the report names them after their count
HELD_OUT = "held-out calibration samples"
SEPARATE = "evaluation samples"
CALIBRATION = "calibration samples (too few to hold any out)"
_CLASS_SCORE_PRODUCERS = ("softmax", "log_softmax")
_PASS_THROUGH = ("reshape", "flatten", "squeeze", "unsqueeze", "identity")


def split_holdout(samples: Sequence[Sample], fraction: float = HOLDOUT_FRACTION
                  ) -> tuple[list[Sample], list[Sample], str]:
    """(calibration samples, evaluation samples, where the evaluation set comes from).

    The last `fraction` of the samples (at least one) is held out; a single sample is used for
    both, and the report says so.
    """
    n = len(samples)
    if n < 2:
        return list(samples), list(samples), CALIBRATION
    held = max(1, int(n * fraction))
    return list(samples[:n - held]), list(samples[n - held:]), HELD_OUT


@dataclass(frozen=True, slots=True)
class LayerStat:
    """One int8 op's output (dequantized) against the float value it stands for."""

    index: int  # position in the int8 graph's op list
    name: str
    op: str
    value: str  # the int8 value
    float_value: str
    scale: float
    zero_point: int
    sqnr_db: float
    drop_db: float | None  # SQNR lost in this op: its int8 inputs' lowest SQNR minus its own
    max_abs_error: float
    clipped: float  # share of float values outside the int8 range


@dataclass(frozen=True, slots=True)
class OutputStat:
    """One graph output of the int8 graph against the float graph's."""

    name: str
    sqnr_db: float
    max_abs_error: float
    top1_agreement: float | None  # None when the output does not look like class scores
    top1_rows: int  # how many argmax votes top1_agreement is over


@dataclass(frozen=True, slots=True)
class QuantReport:
    """Per-layer and per-output accuracy of an int8 graph against its float graph."""

    evaluation: str  # where the evaluation samples come from
    samples: int
    outputs: tuple[OutputStat, ...]
    layers: tuple[LayerStat, ...]

    def output_sqnr_db(self) -> dict[str, float | str]:
        """{output name: SQNR in dB} as nnc.json stores it (2 decimals; "inf" when exact)."""
        return {o.name: _num(o.sqnr_db) for o in self.outputs}

    def worst_layer(self) -> LayerStat | None:
        """The layer with the lowest SQNR (error accumulates, so often the last ones)."""
        return min(self.layers, key=lambda s: s.sqnr_db, default=None)

    def largest_drop(self) -> LayerStat | None:
        """The layer that loses the most SQNR itself: where to look first."""
        dropping = [s for s in self.layers if s.drop_db is not None and math.isfinite(s.drop_db)]
        return max(dropping, key=lambda s: s.drop_db or 0.0, default=None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite SQNR as "inf" / "-inf")."""
        return {
            "evaluation": {"data": self.evaluation, "samples": self.samples},
            "outputs": [{"name": o.name, "sqnr_db": _num(o.sqnr_db),
                         "max_abs_error": _num(o.max_abs_error, 6),
                         "top1_agreement": (None if o.top1_agreement is None
                                            else round(o.top1_agreement, 4)),
                         "top1_rows": o.top1_rows} for o in self.outputs],
            "layers": [{"index": s.index, "name": s.name, "op": s.op, "value": s.value,
                        "float_value": s.float_value, "scale": s.scale,
                        "zero_point": s.zero_point, "sqnr_db": _num(s.sqnr_db),
                        "drop_db": None if s.drop_db is None else _num(s.drop_db),
                        "max_abs_error": _num(s.max_abs_error, 6),
                        "clipped": round(s.clipped, 6)} for s in self.layers],
        }

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> QuantReport:
        """The inverse of `to_json` (up to its rounding)."""
        ev = d["evaluation"]
        return QuantReport(
            ev["data"], int(ev["samples"]),
            tuple(OutputStat(o["name"], float(o["sqnr_db"]), float(o["max_abs_error"]),
                             o["top1_agreement"], int(o["top1_rows"])) for o in d["outputs"]),
            tuple(LayerStat(s["index"], s["name"], s["op"], s["value"], s["float_value"],
                            float(s["scale"]), int(s["zero_point"]), float(s["sqnr_db"]),
                            None if s["drop_db"] is None else float(s["drop_db"]),
                            float(s["max_abs_error"]), float(s["clipped"]))
                  for s in d["layers"]))

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write `to_json()` to `path` (NncError when it cannot be written)."""
        write_json(self.to_json(), path)

    def table(self) -> str:
        """The report as text: the layer table, then the outputs."""
        head = [f"int8 vs float on {self.samples} {self.evaluation} (graph interpreter, "
                "bit-exact with the compiled C)",
                "per layer: its int8 output, dequantized, vs the float value it stands for "
                "(error accumulated from the input)"]
        rows = [("#", "layer", "op", "scale", "zp", "SQNR dB", "drop dB", "max |err|",
                 "clipped")]
        rows += [(str(s.index), _short(s.name), s.op, f"{s.scale:.4g}", str(s.zero_point),
                  _db(s.sqnr_db), "-" if s.drop_db is None else _db(s.drop_db),
                  f"{s.max_abs_error:.4g}", f"{100 * s.clipped:.2f}%") for s in self.layers]
        lines = [*head, "", *_columns(rows, left=(1, 2))]
        worst, drop = self.worst_layer(), self.largest_drop()
        if worst is not None:
            lines.append(f"lowest SQNR: {_db(worst.sqnr_db)} dB at #{worst.index} "
                         f"{_short(worst.name)} ({worst.op})")
        if drop is not None and drop.drop_db is not None:
            lines.append(f"largest drop: {_db(drop.drop_db)} dB at #{drop.index} "
                         f"{_short(drop.name)} ({drop.op})")
        out_rows = [("output", "SQNR dB", "max |err|", "top-1 agreement")]
        for o in self.outputs:
            top1 = ("n/a (not class scores)" if o.top1_agreement is None else
                    f"{round(o.top1_agreement * o.top1_rows)}/{o.top1_rows} "
                    f"({100 * o.top1_agreement:.1f}%)")
            out_rows.append((_short(o.name), _db(o.sqnr_db), f"{o.max_abs_error:.4g}", top1))
        lines += ["", *_columns(out_rows, left=(0, 3))]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def write_json(data: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    p = Path(path)
    try:
        p.write_text(json.dumps(data, indent=1) + "\n")
    except OSError as e:
        raise NncError(f"cannot write the report to {p}: {e.strerror or e}") from None


def quant_report(float_graph: Graph, quant_graph: Graph, quant_map: Mapping[str, str],
                 samples: Sequence[Sample], evaluation: str = SEPARATE,
                 layers: bool = True) -> QuantReport:
    """Run both graphs on `samples` and compare them (see the module docstring).

    `quant_map` maps int8 value names of `quant_graph` to the float values of `float_graph` they
    stand for (the quantize pass's `ctx.facts["quant_map"]`); `layers=False` skips the per-layer
    part (and keeps only the outputs of each run).
    """
    if not samples:
        raise NncError("the accuracy report needs at least one evaluation sample")
    float_types = float_graph.value_types()
    watched = _watched_layers(quant_graph, quant_map, float_types) if layers else []
    acc = {v.name: _Acc(v.type.quant) for _, v, _ in watched}
    outputs = [v.name for v in float_graph.outputs]
    out_acc = {n: _Acc() for n in outputs}
    classes = {n: _looks_like_class_scores(float_graph, v)
               for n, v in zip(outputs, float_graph.outputs, strict=True)}
    votes = {n: [0, 0] for n in outputs}  # [agreeing rows, rows]
    for s in samples:
        ref = run_graph(float_graph, s, keep_all=layers)
        got = run_graph(quant_graph, s, keep_all=layers)
        for _, v, fname in watched:
            acc[v.name].add(ref[fname], _dequantize(got[v.name], v.type.quant))
        for n in outputs:
            r, g = np.asarray(ref[n], np.float64), np.asarray(got[n], np.float64)
            out_acc[n].add(r, g)
            if classes[n]:
                agree = np.argmax(r.reshape(-1, r.shape[-1]), -1) == np.argmax(
                    g.reshape(-1, g.shape[-1]), -1)
                votes[n][0] += int(agree.sum())
                votes[n][1] += agree.size
    layer_stats = []
    for i, v, fname in watched:
        op = quant_graph.ops[i]
        q = v.type.quant
        assert q is not None
        a = acc[v.name]
        ins = [acc[n].sqnr_db() for n in op.inputs if n in acc]
        drop = min(ins) - a.sqnr_db() if ins else None
        layer_stats.append(LayerStat(i, op.name, op.kind, v.name, fname, float(q.scale[0]),
                                     int(q.zero_point[0]), a.sqnr_db(),
                                     drop if drop is None or not math.isnan(drop) else 0.0,
                                     a.max_abs, a.clipped_share()))
    out_stats = tuple(
        OutputStat(n, out_acc[n].sqnr_db(), out_acc[n].max_abs,
                   votes[n][0] / votes[n][1] if classes[n] and votes[n][1] else None,
                   votes[n][1])
        for n in outputs)
    return QuantReport(evaluation, len(samples), out_stats, tuple(layer_stats))


def quant_summary(report: QuantReport, quant_graph: Graph) -> dict[str, Any]:
    """What nnc.json's "quantization" always holds besides the calibration facts: the
    evaluation set, output SQNR and top-1 agreement on it, how many ops are int8 and which op
    kinds stayed float."""
    int8_ops = [op for op in quant_graph.ops if op.kind.endswith("_s8")]
    float_ops = sorted({op.kind for op in quant_graph.ops if not op.kind.endswith("_s8")
                        and op.kind not in ("quantize_linear", "dequantize_linear", "reshape")})
    return {
        "evaluation": {"data": report.evaluation, "samples": report.samples},
        "output_sqnr_db": report.output_sqnr_db(),
        "output_top1_agreement": {o.name: round(o.top1_agreement, 4) for o in report.outputs
                                  if o.top1_agreement is not None},
        "int8_ops": len(int8_ops),
        "float_ops": float_ops,
    }


# --- accumulation -----------------------------------------------------------------------------

class _Acc:
    """Running sums for SQNR, max error and (given the int8 range in float) clipping."""

    def __init__(self, q: QuantParams | None = None) -> None:
        self.signal = 0.0
        self.noise = 0.0
        self.max_abs = 0.0
        self.count = 0
        self.clipped = 0
        self.lo, self.hi = -math.inf, math.inf
        if q is not None:  # values beyond half a step outside the int8 range saturate
            scale, zp = float(q.scale[0]), int(q.zero_point[0])
            self.lo, self.hi = scale * (-128 - zp - 0.5), scale * (127 - zp + 0.5)

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        r = np.asarray(ref, np.float64).ravel()
        d = r - np.asarray(got, np.float64).ravel()
        self.signal += float(np.dot(r, r))
        self.noise += float(np.dot(d, d))
        self.max_abs = max(self.max_abs, float(np.max(np.abs(d), initial=0.0)))
        self.count += r.size
        self.clipped += int(np.count_nonzero((r < self.lo) | (r > self.hi)))

    def sqnr_db(self) -> float:
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)

    def clipped_share(self) -> float:
        return self.clipped / self.count if self.count else 0.0


def _dequantize(q: np.ndarray, params: QuantParams | None) -> np.ndarray:
    assert params is not None
    return (np.asarray(q, np.float64) - params.zero_point[0]) * params.scale[0]


def _watched_layers(quant_graph: Graph, quant_map: Mapping[str, str],
                    float_types: Mapping[str, Any]) -> list[tuple[int, Value, str]]:
    """(op index, int8 output, float value) for each per-tensor int8 output with a float twin."""
    found = []
    for i, op in enumerate(quant_graph.ops):
        for v in op.outputs:
            fname = quant_map.get(v.name)
            q = v.type.quant
            if (fname is None or fname not in float_types or q is None or len(q.scale) != 1
                    or v.type.dtype not in ("int8", "uint8")):
                continue
            found.append((i, v, fname))
    return found


def _looks_like_class_scores(graph: Graph, value: Value) -> bool:
    """A softmax / log-softmax output (through reshapes), or an [N, C] output (C >= 2) shaped
    unlike every input: an autoencoder's output is shaped like its input, logits are not."""
    producers = {v.name: op for op in graph.ops for v in op.outputs}
    op = producers.get(value.name)
    while op is not None and op.kind in _PASS_THROUGH:
        op = producers.get(op.inputs[0])
    if op is not None and op.kind in _CLASS_SCORE_PRODUCERS:
        return True
    shape = value.type.shape
    return (len(shape) == 2 and shape[-1] >= 2 and value.type.dtype.startswith("float")
            and all(tuple(v.type.shape) != tuple(shape) for v in graph.inputs))


# --- formatting -------------------------------------------------------------------------------

def _num(x: float, digits: int = 2) -> float | str:
    return round(x, digits) if math.isfinite(x) else str(x)


def _db(x: float) -> str:
    return f"{x:.1f}" if math.isfinite(x) else ("exact" if x > 0 else "-inf")


def _short(name: str, width: int = 36) -> str:
    """Long ONNX names keep their head and tail."""
    if len(name) <= width:
        return name
    keep = width - 3
    return name[:keep // 2] + "..." + name[len(name) - (keep - keep // 2):]


def _columns(rows: Sequence[Sequence[str]], left: Sequence[int]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if k in left else c.rjust(w)
                      for k, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]
