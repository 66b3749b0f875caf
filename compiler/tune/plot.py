"""Best-so-far curves of tuning searches as a PNG (`nnc tune --plot`, the efficiency benchmark).

matplotlib is optional (`pip install nnc[plot]`) and imported only here, when a plot is asked
for; without it the caller gets one error line naming the install.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from nnc.compiler.errors import NncError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise NncError("--plot needs matplotlib: pip install nnc[plot]") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def geomean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    """The geometric mean over workloads of best-so-far / default per trial (a workload whose
    search stopped early keeps its last value)."""
    curves = [c for c in curves if c]
    if not curves:
        return []
    n = max(len(c) for c in curves)
    return [math.exp(sum(math.log(c[min(i, len(c) - 1)]) for c in curves) / len(curves))
            for i in range(n)]


def plot_curves(curves: Mapping[str, Mapping[str, Sequence[float]]],
                path: str | os.PathLike[str], title: str = "",
                labels: Mapping[str, str] | None = None) -> dict[str, list[float]]:
    """Draw `curves` ({workload: {search: best-so-far / default per trial}}) into the PNG
    `path`: one thin line per workload and search, and per search the geometric mean over the
    workloads, bold. `labels` gives each search's legend text. Returns the bold curves."""
    plt = _pyplot()
    searches: list[str] = []
    for per in curves.values():
        searches += [s for s in per if s not in searches]
    colors = dict(zip(searches, ("tab:blue", "tab:orange", "tab:green", "tab:red"),
                      strict=False))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    means = {}
    for s in searches:
        per = [list(c[s]) for c in curves.values() if s in c and len(c[s])]
        for c in per:
            ax.plot(range(1, len(c) + 1), c, color=colors[s], alpha=0.25, linewidth=0.8)
        means[s] = geomean_curve(per)
        ax.plot(range(1, len(means[s]) + 1), means[s], color=colors[s], linewidth=2.2,
                label=(labels or {}).get(s, s) + f" (geomean of {len(per)} workloads)")
    ax.set_xlabel("trials per workload")
    ax.set_ylabel("best so far / default schedule (lower is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return means


def best_so_far(history: Sequence[float], default: float) -> list[float]:
    """Per trial, the best figure so far relative to the default (1.0 = the default); a failed
    trial (NaN) keeps the best."""
    out, best = [], default
    for f in history:
        if f == f:
            best = min(best, f)
        out.append(best / default)
    return out
