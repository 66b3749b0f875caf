"""`nnc eval` / `nnc.evaluate(...)`: the original model (onnxruntime) and compiled variants of it
on the same labelled samples, scored with one metric, in one table.

    >>> r = nnc.evaluate("kws.onnx", target="cortex-m7", data="test.npz",        # doctest: +SKIP
    ...                  quantize="int8", calibration="calib.npz")
    >>> print(r.table())                                                        # doctest: +SKIP

Variants: `onnxruntime` (the original, the reference every other row is compared with),
`host-fp32`, `host-int8`, `device-fp32`, `device-int8` (the firmware on the emulated board,
all samples in one QEMU start through the firmware's batch mode). Data is loaded the way
`--calibration` is (`passes/quant_scheme.load_calibration_data`: a .npz keyed by input name with
samples on the first axis, a folder of .npy, a .npy for a one-input model, or a dict); labels
come from `labels=` (a .npy or an array, one per sample) or a `labels` key in the .npz.

Metrics (numpy): `top1` / `top5` (accuracy against the labels; without labels against the
original's top-1), `auc` (binary labels; the score is the reconstruction error when the output
has an input's shape (an autoencoder: MLPerf Tiny AD), the positive class's output for two
classes, else the single output value), `mse` (against the labels when they have the output's
shape, else against the original's outputs) and `sqnr` (dB, against the original's outputs).
Every row also reports SQNR against the original and, for a classifier, top-1 agreement.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from nnc.compiler.errors import NncError

METRICS = ("top1", "top5", "auc", "mse", "sqnr")
VARIANTS = ("onnxruntime", "host-fp32", "host-int8", "device-fp32", "device-int8")
ORIGINAL = "onnxruntime"
HIGHER_IS_BETTER = {"top1": True, "top5": True, "auc": True, "mse": False, "sqnr": True}

Samples = list[dict[str, np.ndarray]]


# ---- data


def load_eval_data(source: str | os.PathLike[str] | Mapping[str, np.ndarray], inputs: Sequence[Any],
                   labels: str | os.PathLike[str] | np.ndarray | None = None,
                   limit: int | None = None) -> tuple[Samples, np.ndarray | None]:
    """(samples, labels or None) from `source` (the forms `--calibration` takes) and `labels`
    (a .npy, an array, or None: then a `labels` key of a .npz / mapping when there is one)."""
    from nnc.passes.quant_scheme import load_calibration_data

    try:
        samples = load_calibration_data(source, inputs)
    except NncError as e:
        raise NncError(str(e).replace("calibration data", "evaluation data")) from None
    names = {v.name for v in inputs}
    found: np.ndarray | None = None
    if labels is not None:
        if isinstance(labels, np.ndarray):
            found = labels
        else:
            path = Path(labels)
            if not path.is_file():
                raise NncError(f"labels: {path} does not exist")
            try:
                found = np.asarray(np.load(path, allow_pickle=False))
            except (OSError, ValueError, EOFError) as e:
                raise NncError(f"labels: cannot read {path} as .npy: {e}") from None
            if not isinstance(found, np.ndarray) or found.dtype == object:
                raise NncError(f"labels: {path} must be one .npy array, a label per sample")
    elif isinstance(source, Mapping):
        if "labels" in source and "labels" not in names:
            found = np.asarray(source["labels"])
    elif Path(source).is_file() and zipfile.is_zipfile(source):
        with np.load(source, allow_pickle=False) as npz:
            if "labels" in npz.files and "labels" not in names:
                found = np.asarray(npz["labels"])
    if found is not None and len(found) != len(samples):
        raise NncError(f"labels: {len(found)} labels for {len(samples)} samples; give one label "
                       "per sample (on the first axis)")
    if limit is not None:
        if limit < 1:
            raise NncError(f"--samples {limit}: give at least 1")
        samples = samples[:limit]
        found = None if found is None else found[:limit]
    return samples, found


# ---- metrics


def sqnr_db(reference: np.ndarray, x: np.ndarray) -> float:
    """10 log10(signal / noise) of `x` against `reference`; inf when identical."""
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(x, np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-30) / noise)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of binary `labels` for `scores` (Mann-Whitney U, ties counted
    half), as scikit-learn's roc_auc_score."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, np.float64).reshape(-1)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        raise NncError("auc needs labels of both classes (0 and 1) among the samples")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def _scores(outs: np.ndarray) -> np.ndarray:
    """[N, ...] outputs -> [N, C] class scores."""
    return outs.reshape(outs.shape[0], -1).astype(np.float64)


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _anomaly_scores(outs: np.ndarray, samples: Samples) -> np.ndarray | None:
    """Reconstruction error per sample when the output has an input's shape (an autoencoder)."""
    for name in samples[0]:
        inp = np.stack([s[name] for s in samples]).astype(np.float64)
        if inp.shape == outs.shape:
            return np.mean((outs.astype(np.float64) - inp).reshape(len(outs), -1) ** 2, axis=1)
    return None


def default_metric(outs: np.ndarray, samples: Samples, labels: np.ndarray | None) -> str:
    if labels is None:
        return "sqnr"
    if _anomaly_scores(outs, samples) is not None:
        return "auc"
    return "top1" if _scores(outs).shape[1] > 1 else "mse"


def score(metric: str, outs: np.ndarray, original: np.ndarray, samples: Samples,
          labels: np.ndarray | None) -> float:
    """`metric` of the outputs `outs` ([N, ...], the model's first output) of one variant."""
    if metric not in METRICS:
        raise NncError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    if metric == "sqnr":
        return sqnr_db(original, outs)
    if metric == "mse":
        target = original
        if labels is not None and labels.size == outs.size:
            target = labels.reshape(outs.shape)
        return float(np.mean((outs.astype(np.float64) - target.astype(np.float64)) ** 2))
    if metric == "auc":
        if labels is None:
            raise NncError("--metric auc needs labels (--labels FILE.npy or a 'labels' key)")
        s = _anomaly_scores(outs, samples)
        if s is None:
            sc = _scores(outs)
            s = sc[:, 1] if sc.shape[1] == 2 else sc[:, 0] if sc.shape[1] == 1 else None
        if s is None:
            raise NncError(f"--metric auc needs a binary score: an output of 1 or 2 values or an "
                           f"autoencoder's reconstruction; this output has shape "
                           f"{list(outs.shape[1:])}")
        return roc_auc(labels, s)
    k = 1 if metric == "top1" else 5
    sc = _scores(outs)
    if sc.shape[1] < k:
        raise NncError(f"--metric {metric} needs at least {k} classes; the output has "
                       f"{sc.shape[1]}")
    truth = (labels.reshape(-1).astype(np.int64) if labels is not None
             else np.argmax(_scores(original), axis=1))
    return float(np.mean(np.any(_topk(sc, k) == truth[:, None], axis=1)))


# ---- variants


@dataclass
class VariantResult:
    """One row of the table. `instructions` (device: mean, min, max per sample) or
    `latency_ms` (host: median of the benchmark); RAM and flash in bytes."""

    variant: str
    metric: float
    drop: float
    agreement: float
    sqnr_db: float
    wall_s: float
    instructions: dict[str, float] | None = None
    latency_ms: float | None = None
    ram_bytes: int | None = None
    flash_bytes: int | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EvalResult:
    model: str
    target: str
    metric: str
    samples: int
    labelled: bool
    variants: list[VariantResult]
    options: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for v in d["variants"]:
            for k in ("sqnr_db", "metric", "drop", "agreement"):
                if isinstance(v[k], float) and not np.isfinite(v[k]):
                    v[k] = None if np.isnan(v[k]) else ("inf" if v[k] > 0 else "-inf")
        return d

    def table(self) -> str:
        rows = [("variant", self.metric, "drop", "top-1 agree", "SQNR dB", "instr/sample",
                 "latency ms", "RAM B", "flash B")]
        for v in self.variants:
            rows.append((
                v.variant, _fmt_metric(self.metric, v.metric),
                "-" if v.variant == ORIGINAL or not np.isfinite(v.drop)
                else _fmt_metric(self.metric, v.drop),
                f"{100 * v.agreement:.1f}%" if np.isfinite(v.agreement) else "-",
                "-" if v.variant == ORIGINAL else ("inf" if v.sqnr_db == float("inf")
                                                   else f"{v.sqnr_db:.1f}"),
                f"{v.instructions['mean']:,.0f}" if v.instructions else "-",
                f"{v.latency_ms:.4f}" if v.latency_ms is not None else "-",
                f"{v.ram_bytes:,}" if v.ram_bytes is not None else "-",
                f"{v.flash_bytes:,}" if v.flash_bytes is not None else "-"))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                           for k, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
        truth = "labels" if self.labelled else "the original's outputs (no labels)"
        lines += ["", f"{self.model} on {self.target}: {self.samples} samples, {self.metric} "
                  f"against {truth}; drop = original - variant"
                  + (" (lower is better)" if not HIGHER_IS_BETTER[self.metric] else "")
                  + "; device instructions are emulated (QEMU), not cycles"]
        return "\n".join(lines)


def _fmt_metric(metric: str, x: float) -> str:
    if metric in ("top1", "top5"):
        return f"{100 * x:.2f}%"
    if metric == "sqnr":
        return "inf" if x == float("inf") else "-" if not np.isfinite(x) else f"{x:.2f}"
    return f"{x:.4g}"


class Progress:
    """A one-line progress bar on stderr: `Progress("device-fp32", 1000)(done)`."""

    def __init__(self, label: str, total: int, stream: Any = None) -> None:
        self.label, self.total = label, max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.shown = -1

    def __call__(self, done: int) -> None:
        pct = 100 * done // self.total
        if not self.tty and pct // 10 == self.shown // 10 and done != self.total:
            return  # a log file gets a line per 10%
        if self.tty and pct == self.shown and done != self.total:
            return
        self.shown = pct
        bar = "#" * (pct * 30 // 100)
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        text = (f"{self.label:<12} [{bar:<30}] {done}/{self.total} {rate:.1f} samples/s")
        end = "\n" if not self.tty or done == self.total else ""
        self.stream.write(("\r" if self.tty else "") + text + end)
        self.stream.flush()


def _stack(outputs: list[Mapping[str, np.ndarray]], name: str) -> np.ndarray:
    return np.stack([np.asarray(o[name]) for o in outputs])


def _run_ort(model: str | os.PathLike[str] | onnx.ModelProto, samples: Samples,
             progress: Callable[[int], None]) -> list[dict[str, np.ndarray]]:
    import onnxruntime as ort

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = []
    for i, s in enumerate(samples):
        outs.append(dict(zip(names, sess.run(None, s), strict=True)))
        progress(i + 1)
    return outs


def _default_variants(kind: str, quantize: str | None) -> list[str]:
    out = ["host-fp32"]
    if kind == "cortex-m":
        out.append("device-fp32")
    if quantize:
        out.append("device-int8" if kind == "cortex-m" else "host-int8")
    return out


def evaluate(
    model: str | os.PathLike[str] | onnx.ModelProto,
    data: str | os.PathLike[str] | Mapping[str, np.ndarray],
    target: str = "host",
    labels: str | os.PathLike[str] | np.ndarray | None = None,
    metric: str | None = None,
    samples: int | None = None,
    variants: Sequence[str] | None = None,
    quantize: str | None = None,
    calibration: str | os.PathLike[str] | Mapping[str, np.ndarray] | None = None,
    calibration_method: str = "minmax",
    kernels: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    ram: int | str | None = None,
    flash: int | str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    progress: bool | Callable[[str, int, int], None] = False,
) -> EvalResult:
    """Run the original model (onnxruntime) and each compiled variant on the same samples and
    score them (see the module docstring). `variants` default: host-fp32, plus device-fp32 on a
    Cortex-M target, plus the int8 variant of the target with `quantize="int8"` (then
    `calibration` is needed). `output_dir` keeps each variant's build in `<output_dir>/<variant>`
    (default: temporary). `progress=True` draws progress bars on stderr; a callable gets
    (variant, done, total)."""
    from nnc.compiler.api import _target
    from nnc.compiler.api import compile as nnc_compile
    from nnc.compiler.onnx.importer import import_model

    tgt = _target(target, ram, flash)
    if metric is not None and metric not in METRICS:
        raise NncError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    chosen = list(variants) if variants else _default_variants(tgt.kind, quantize)
    for v in chosen:
        if v not in VARIANTS:
            raise NncError(f"unknown variant {v!r}; choose from {list(VARIANTS)}")
        if v.startswith("device") and tgt.kind != "cortex-m":
            raise NncError(f"variant {v} runs on the emulated board: give a Cortex-M --target "
                           f"(cortex-m7, cortex-m4, cortex-m55), not {tgt.name}")
        if v.endswith("int8") and (quantize != "int8" or calibration is None):
            raise NncError(f"variant {v} needs --quantize int8 --calibration DATA")
    chosen = [v for v in chosen if v != ORIGINAL]
    graph = import_model(model, input_shapes)
    data_samples, label_arr = load_eval_data(data, graph.inputs, labels, samples)
    n = len(data_samples)

    def bar(variant: str) -> Callable[[int], None]:
        if callable(progress):
            return lambda done: progress(variant, done, n)
        return Progress(variant, n) if progress else (lambda done: None)

    t0 = time.perf_counter()
    original = _run_ort(model, data_samples, bar(ORIGINAL))
    ort_wall = time.perf_counter() - t0
    out_name = graph.outputs[0].name
    ref = _stack(original, out_name)
    metric = metric or default_metric(ref, data_samples, label_arr)
    ref_top1 = np.argmax(_scores(ref), axis=1)
    # top-1 agreement means nothing for an autoencoder's reconstruction or a single value
    classifier = _anomaly_scores(ref, data_samples) is None and _scores(ref).shape[1] > 1
    ref_metric = score(metric, ref, ref, data_samples, label_arr)
    rows = [VariantResult(ORIGINAL, ref_metric, 0.0, 1.0 if classifier else float("nan"),
                          float("inf"), round(ort_wall, 3))]

    keep = None if output_dir is not None else tempfile.TemporaryDirectory(prefix="nnc-eval-")
    root = Path(output_dir) if output_dir is not None else Path(keep.name)  # type: ignore[union-attr]
    try:
        for variant in chosen:
            where, scheme = variant.split("-")
            compiled = nnc_compile(
                model, target="host" if where == "host" else target, input_shapes=input_shapes,
                output_dir=root / variant, ram=None if where == "host" else ram,
                flash=None if where == "host" else flash,
                quantize="int8" if scheme == "int8" else None,
                calibration=calibration if scheme == "int8" else None,
                calibration_method=calibration_method,
                kernels=kernels if scheme == "int8" else None)
            t0 = time.perf_counter()
            row = _run_variant(variant, compiled, data_samples, bar(variant))
            outs = _stack(row.pop("outputs"), out_name)
            value = score(metric, outs, ref, data_samples, label_arr)
            drop = ref_metric - value if np.isfinite(ref_metric) else float("nan")
            rows.append(VariantResult(
                variant, value, drop,
                float(np.mean(np.argmax(_scores(outs), axis=1) == ref_top1)) if classifier
                else float("nan"),
                sqnr_db(ref, outs), round(time.perf_counter() - t0, 3), **row))
    finally:
        if keep is not None:
            keep.cleanup()
    name = model.graph.name if isinstance(model, onnx.ModelProto) else Path(model).stem
    options = {"quantize": quantize, "calibration_method": calibration_method if quantize else None,
               "kernels": kernels, "variants": [ORIGINAL, *chosen]}
    return EvalResult(name, tgt.name, metric, n, label_arr is not None, rows, options)


def _run_variant(variant: str, compiled: Any, samples: Samples,
                 progress: Callable[[int], None]) -> dict[str, Any]:
    """Outputs of every sample plus the variant's cost figures."""
    if compiled.is_device:
        dev = compiled._runner_for_target()
        batch = dev.execute_batch(samples, progress=progress)
        instr = np.array([dev.ticks_to_instructions(int(t)) for t in batch.total_ticks])
        per_layer = batch.layer_ticks.mean(axis=0)
        layers = [{"name": lay["name"], "op": lay["op"], "macs": lay["macs"],
                   "instructions": dev.ticks_to_instructions(int(round(t)))}
                  for lay, t in zip(dev.layers, per_layer, strict=False)]
        fw = compiled.info.get("firmware", {})
        stack = batch.stack_bytes or int(fw.get("stack_bytes", 0))
        return {"outputs": batch.outputs,
                "instructions": {"mean": float(instr.mean()), "min": int(instr.min()),
                                 "max": int(instr.max())},
                "ram_bytes": int(compiled.info["arena_bytes"]) + stack,
                "flash_bytes": int(fw.get("flash_bytes", 0)), "layers": layers}
    outs = []
    for i, s in enumerate(samples):
        outs.append(compiled.run(s))
        progress(i + 1)
    bench = compiled.benchmark(warmup=3, repeat=20, inputs=samples[0])
    return {"outputs": outs, "latency_ms": float(bench["latency_ms"]["median"]),
            "ram_bytes": int(compiled.info["arena_bytes"]),
            "flash_bytes": int(compiled.info["weight_bytes"])}
