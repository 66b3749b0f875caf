"""Calibration: real-value ranges of every float activation, measured with the graph interpreter.

Runs `nnc.ir.interp.run_graph` over the samples (the same op references the compiler folds
with, so there is one implementation of each op) and reduces each float graph input and op
output to a range (min, max):

- `minmax`: the observed extremes.
- `percentile`: from a histogram of |x|, the threshold a below which p% of the magnitudes lie;
  the range is (-a, a) clamped to the observed extremes (a ReLU output gets (0, a)). That is
  how onnxruntime's `quantize_static` applies it (PercentileCalibrater's default
  symmetric=True). `symmetric=False` cuts (100 - p) / 2 % from each tail of x instead.
- `entropy`: the clipping threshold minimising the KL divergence between the histogram and its
  int8 quantization (TensorRT's method, fitted to asymmetric int8), among the thresholds whose
  expected squared error (rounding plus the distance of clipped values) is no worse than the
  data range's; see `_entropy_range`.

Histograms use one fixed range per tensor (the extremes from a first pass over the samples), so
the result does not depend on sample order. Activations are cached between the two passes up to
`cache_bytes`; past that the interpreter runs again. Non-finite values are ignored.

>>> # ranges = calibrate(graph, samples, method="entropy")   # {value name: (min, max)}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import numpy as np

from nnc.errors import NncError
from nnc.ir.graph import Graph
from nnc.ir.interp import run_graph
from nnc.ir.types import is_float

Method = Literal["minmax", "percentile", "entropy"]
METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy")
Range = tuple[float, float]


def float_activations(graph: Graph) -> list[str]:
    """Names of the float graph inputs and float op outputs, in definition order."""
    names = [v.name for v in graph.inputs if is_float(v.type.dtype)]
    names += [v.name for op in graph.ops for v in op.outputs if is_float(v.type.dtype)]
    return names


def _finite(a: np.ndarray) -> np.ndarray:
    flat = np.asarray(a).ravel()
    return flat if np.isfinite(flat).all() else flat[np.isfinite(flat)]


def calibrate(
    graph: Graph,
    samples: Iterable[Mapping[str, np.ndarray]],
    method: str = "minmax",
    percentile: float = 99.99,
    num_bins: int = 2048,
    *,
    symmetric: bool | None = None,
    num_quantized_bins: int = 128,
    cache_bytes: int = 256 << 20,
) -> dict[str, Range]:
    """{value name: (min, max)} for every float activation of `graph` over `samples`.

    `symmetric` picks one threshold a for both sides (percentile: from a histogram of |x|):
    minmax returns (-a, a); the histogram methods clamp (-a, a) to the observed extremes, as
    onnxruntime does (so a ReLU output still gets (0, a)). None: onnxruntime's default for the
    method (`create_calibrator`): True for percentile, False for minmax and entropy.
    """
    if symmetric is None:
        symmetric = method == "percentile"
    if method not in METHODS:
        raise NncError(f"unknown calibration method {method!r}; choose one of {list(METHODS)}")
    if not 0.0 < percentile <= 100.0:
        raise NncError(f"percentile must be in (0, 100], got {percentile}")
    if num_bins < num_quantized_bins or num_quantized_bins < 2:
        raise NncError(f"need num_bins ({num_bins}) >= num_quantized_bins "
                       f"({num_quantized_bins}) >= 2")
    feeds = list(samples)
    if not feeds:
        raise NncError("calibration needs at least one sample")
    names = float_activations(graph)

    # pass 1: extremes (and the activations, while they fit in the cache)
    lo = dict.fromkeys(names, np.inf)
    hi = dict.fromkeys(names, -np.inf)
    cache: list[dict[str, np.ndarray]] | None = None if method == "minmax" else []
    cached = 0
    for feed in feeds:
        env = run_graph(graph, feed, keep_all=True)
        kept: dict[str, np.ndarray] = {}
        for n in names:
            x = _finite(env[n])
            if x.size:
                lo[n] = min(lo[n], float(x.min()))
                hi[n] = max(hi[n], float(x.max()))
            kept[n] = x
            cached += x.nbytes
        if cache is not None:
            if cached <= cache_bytes:
                cache.append(kept)
            else:
                cache = None  # too big: pass 2 runs the interpreter again
    extremes = {n: (lo[n], hi[n]) if lo[n] <= hi[n] else (0.0, 0.0) for n in names}
    if method == "minmax":
        return {n: _symmetrize(r) if symmetric else r for n, r in extremes.items()}

    # pass 2: one histogram per tensor over a range fixed by pass 1
    on_abs = method == "percentile" and symmetric
    bounds = {n: max(abs(a), abs(b)) for n, (a, b) in extremes.items()}
    hists = {n: np.zeros(num_bins, dtype=np.int64) for n in names}

    def add(values: Mapping[str, np.ndarray]) -> None:
        for n in names:
            t = bounds[n]
            if t == 0.0:
                continue
            x = _finite(values[n])
            if on_abs:
                hists[n] += np.histogram(np.abs(x), num_bins, range=(0.0, t))[0]
            else:
                hists[n] += np.histogram(x, num_bins, range=(-t, t))[0]

    if cache is not None:
        for kept in cache:
            add(kept)
    else:
        for feed in feeds:
            add(run_graph(graph, feed, keep_all=True))

    ranges: dict[str, Range] = {}
    for n in names:
        t = bounds[n]
        if t == 0.0:
            ranges[n] = extremes[n]
            continue
        if on_abs:
            edges = np.linspace(0.0, t, num_bins + 1)
        else:
            edges = np.linspace(-t, t, num_bins + 1)
        if method == "percentile":
            r = _percentile_range(hists[n], edges, percentile, on_abs)
        else:
            r = _entropy_range(hists[n], edges, num_quantized_bins)
        if symmetric and not on_abs:
            r = _symmetrize(r)
        ranges[n] = (max(r[0], extremes[n][0]), min(r[1], extremes[n][1]))
    return ranges


def _symmetrize(r: Range) -> Range:
    a = max(abs(r[0]), abs(r[1]))
    return (-a, a)


def _percentile_range(hist: np.ndarray, edges: np.ndarray, percentile: float,
                      on_abs: bool) -> Range:
    """onnxruntime's rule: the lower edge of the bin where the CDF crosses the cut."""
    cdf = np.cumsum(hist / hist.sum())
    if on_abs:
        a = float(edges[np.searchsorted(cdf, percentile / 100.0)])
        return (-a, a)
    cut = (100.0 - percentile) / 200.0
    return (float(edges[np.searchsorted(cdf, cut)]),
            float(edges[np.searchsorted(cdf, 1.0 - cut)]))


def _smooth(p: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Give empty bins a little mass (taken from the others) so KL stays finite."""
    zeros = p == 0
    n_zeros = int(zeros.sum())
    n_nonzeros = p.size - n_zeros
    if n_nonzeros == 0:
        return None
    eps1 = eps * n_zeros / n_nonzeros
    if eps1 >= p[~zeros].min():  # too sparse to smooth: treat the window as unusable
        return None
    return p + np.where(zeros, eps, -eps1)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def _entropy_range(hist: np.ndarray, edges: np.ndarray, num_quantized_bins: int) -> Range:
    """TensorRT's KL threshold search, fitted to asymmetric int8, among the windows that do not
    raise the expected squared error above the unclipped range's.

    Candidate i is the window of bins [z - i, z + i + 1) around zero (z = num_bins // 2, as
    onnxruntime indexes) clamped to the bins that hold data: that clamped range is what
    `activation_params` quantizes, with all 2 * `num_quantized_bins` int8 levels. Outliers fold
    into its end bins to form p; the window's bins spread evenly over those levels, merged, and
    spread back over its non-empty bins form q. Windows with fewer bins than levels are skipped
    (their rounding error would hide inside bins, so they would look best).

    KL compares shapes only: a clipped value costs the same however far it lies, and a narrow
    spike smeared over one level costs as much as clipping a whole mode. On the spiky, heavy-
    tailed ReLU outputs of small convnets that makes it clip 1-10% of the values (measured on
    MLPerf Tiny VWW: 11% of one tensor, -15 dB at the output). So a window competes only if its
    expected squared error from the histogram — rounding, Δ²/12 per value inside (Δ = width /
    255), plus (x - edge)² per clipped value at its bin centre — is no larger than that of the
    full data range (which always competes): KL then picks among thresholds that trade rounding
    for clipping at no loss, and the full range wins only where every cut loses.

    onnxruntime instead merges the whole symmetric window into `num_quantized_bins` levels
    (7-bit quantization; 6-bit for a ReLU output, whose negative half is empty) and piles the
    remainder into the last level (favouring widths that are multiples of the level count), and
    with its default 128 histogram bins tries a single window: the data range. The zero bin is
    capped at its neighbours' count for both measures (as pytorch-quantization does for KL):
    zero is exact in int8, so a ReLU's spike of zeros is no rounding error.
    """
    h = hist.astype(np.float64)
    num_bins = h.size
    zero = num_bins // 2
    levels = 2 * num_quantized_bins
    h[zero] = min(h[zero], max(h[zero - 1], h[zero + 1] if zero + 1 < num_bins else 0.0))
    filled = np.flatnonzero(hist)
    if filled.size == 0:
        return float(edges[0]), float(edges[-1])
    first, last = int(filled[0]), int(filled[-1]) + 1
    windows = {(max(zero - i, first), min(zero + i + 1, last)) for i in range(zero + 1)}
    candidates = sorted({(a, b) for a, b in windows if b - a >= levels} | {(first, last)})
    mse = _window_mse(h, edges, levels)
    bound = mse(first, last)
    prefix = np.concatenate(([0.0], np.cumsum(h)))
    best, best_kl = (float(edges[first]), float(edges[last])), np.inf
    for start, end in candidates:
        if mse(start, end) > bound:
            continue
        sliced = h[start:end]
        p = sliced.copy()
        p[0] += prefix[start]
        p[-1] += prefix[-1] - prefix[end]
        nonzero = p != 0
        n = min(levels, sliced.size)
        level = np.arange(sliced.size) * n // sliced.size
        mass = np.bincount(level, weights=sliced, minlength=n)
        count = np.bincount(level, weights=nonzero, minlength=n)
        q = np.where(nonzero, mass[level] / np.maximum(count[level], 1.0), 0.0)
        ps, qs = _smooth(p), _smooth(q)
        kl = np.inf if ps is None or qs is None else _kl(ps, qs)
        if kl < best_kl:
            best_kl, best = kl, (float(edges[start]), float(edges[end]))
    return best


def _window_mse(h: np.ndarray, edges: np.ndarray, levels: int) -> Callable[[int, int], float]:
    """Expected squared int8 error of quantizing histogram `h` over bins [start, end).

    Inside: Δ²/12 per value, Δ = the range (widened to hold 0, as `activation_params` does)
    over `levels` - 1 steps. Outside: (c - edge)² per value at bin centre c.
    """
    centres = (edges[:-1] + edges[1:]) * 0.5
    n = np.concatenate(([0.0], np.cumsum(h)))
    s1 = np.concatenate(([0.0], np.cumsum(h * centres)))
    s2 = np.concatenate(([0.0], np.cumsum(h * centres * centres)))

    def clipped(i: int, j: int, e: float) -> float:  # sum of h (c - e)^2 over bins [i, j)
        return float((s2[j] - s2[i]) - 2.0 * e * (s1[j] - s1[i]) + e * e * (n[j] - n[i]))

    def mse(start: int, end: int) -> float:
        lo, hi = float(edges[start]), float(edges[end])
        step = (max(hi, 0.0) - min(lo, 0.0)) / (levels - 1)
        inside = (n[end] - n[start]) * step * step / 12.0
        return inside + clipped(0, start, lo) + clipped(end, h.size, hi)

    return mse
