"""Sample efficiency of `nnc tune`: guided (XGBoost) vs random search, best-so-far per trial,
on the workloads of MLPerf Tiny models quantized to int8 for the Cortex-M7 (QEMU instruction
counts, exact).

    python -m benchmarks.tune_efficiency [--models ad,kws,ic,vww] [--points 1000]
        [--tables /tmp/nnc-tune-tables.sqlite] [--trials 128] [--seeds 5] [--plot curves.png]
    python -m benchmarks.tune_efficiency --mode live [--models kws] [--trials 24]
    python -m benchmarks.tune_efficiency --mode workers [--models ad] [--workers 2]

tables (the default): each workload's table is measured once on the board: its whole
deduplicated space where that has <= --points points, else --points distinct points drawn from
it uniformly (seeded) -- exactly what that many random trials would measure. Build i carries
point i of every workload of the model, each trial is validated bit for bit like the tuner's and
recorded in a tuning cache (--tables; a rerun measures only what is missing, --deadline stops
early). Then, per workload, the reference is the best of the table (= the best of 1,000 random
trials); random search's best-so-far curve is its exact expectation over draws without
replacement from the table, its trials to within 5% the exact median of the first hit; the
guided search is the real `nnc tune` session (XGBoost, batches, epsilon, refits) replayed
against the table (`TableBoard`, the space restricted to the table's points), --seeds
sessions per model from fresh caches, the median of their trials to within 5%.

live: both searches run on the board with the same budget (the reference: the best either
found). workers: the same random session with 1 and --workers build workers, side by side.
Prints a markdown table and the medians; writes the curves (best-so-far / default per trial)
as JSON, and with --plot as a PNG.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nnc.compiler.tune.plot import best_so_far

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "tune_efficiency.json"
WITHIN = 0.05


def _calibration(model: Any, n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return {inp.name: rng.standard_normal([n, *shape]).astype(np.float32)}


def trials_to_reach(curve: list[float], target: float) -> int | None:
    """The first trial (1-based) whose best-so-far is within WITHIN of `target` (0: the default,
    1.0, is there already)."""
    if 1.0 <= target * (1 + WITHIN):
        return 0
    for i, v in enumerate(curve, 1):
        if v <= target * (1 + WITHIN):
            return i
    return None


def run(models: dict[str, tuple[Any, Any]], trials: int, batch: int, seed: int = 0,
        measurer: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Both searches on every model; `measurer(prepared)` replaces the board (tests)."""
    from nnc.compiler.tune.measure import prepare
    from nnc.compiler.tune.tuner import tune

    rows: list[dict[str, Any]] = []
    sessions = []
    for name, (model, cal) in models.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prep = prepare(model, "cortex-m7", quantize="int8", calibration=cal, seed=seed)
        results = {}
        for search in ("guided", "random"):
            with tempfile.TemporaryDirectory(prefix="nnc-tune-eff-") as tmp:
                t0 = time.perf_counter()
                r = tune(None, prepared=prep, cache=Path(tmp) / "c.sqlite", trials=trials,
                         batch=batch, search=search, seed=seed, progress=False,
                         measurer=measurer(prep) if measurer is not None else None)
                results[search] = r
                sessions.append({"model": name, "search": search, "builds": r.builds,
                                 "seconds": round(time.perf_counter() - t0, 1),
                                 "model_default": r.model_default,
                                 "model_tuned": r.model_tuned})
        for g, rnd in zip(results["guided"].workloads, results["random"].workloads,
                          strict=True):
            cg = best_so_far(g.history, g.default)
            cr = best_so_far(rnd.history, rnd.default)
            ref = min(cg[-1] if cg else 1.0, cr[-1] if cr else 1.0)
            rows.append({
                "model": name, "workload": g.hash, "op": g.kind, "layers": len(g.layers),
                "default": g.default, "guided_best": g.best, "random_best": rnd.best,
                "reference": ref * g.default,
                "guided_trials_to_5pct": trials_to_reach(cg, ref),
                "random_trials_to_5pct": trials_to_reach(cr, ref),
                "guided_curve": [round(v, 4) for v in cg],
                "random_curve": [round(v, 4) for v in cr],
            })
    return {"trials": trials, "batch": batch, "within": WITHIN, "rows": rows,
            "sessions": sessions, "median": _medians(rows, trials)}


def _medians(rows: list[dict[str, Any]], trials: int) -> dict[str, float]:
    # a search that never got there counts as needing more than its budget
    def n(v: int | None) -> float:
        return float(v) if v is not None else math.inf

    out: dict[str, float] = {}
    for s in ("guided", "random"):
        vals = [n(r[f"{s}_trials_to_5pct"]) for r in rows]
        out[f"{s}_trials_to_5pct"] = statistics.median(vals) if vals else math.nan
        out[f"{s}_speedup"] = statistics.median(
            [r["default"] / r[f"{s}_best"] for r in rows]) if rows else math.nan
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["| model | workload | op | default | guided best | random best | "
             f"trials to {100 * WITHIN:.0f}% (guided / random) |",
             "|---|---|---|---:|---:|---:|---:|"]

    def t(v: int | None) -> str:
        return str(v) if v is not None else f">{result['trials']}"

    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['workload']} | {r['op']} | {r['default']:,.0f} | "
                     f"{r['guided_best']:,.0f} | {r['random_best']:,.0f} | "
                     f"{t(r['guided_trials_to_5pct'])} / {t(r['random_trials_to_5pct'])} |")
    m = result["median"]
    lines.append(f"\nmedian over {len(result['rows'])} workloads: trials to within "
                 f"{100 * WITHIN:.0f}% of the best found: guided {m['guided_trials_to_5pct']}, "
                 f"random {m['random_trials_to_5pct']}; speedup over the default schedule: "
                 f"guided {m['guided_speedup']:.2f}x, random {m['random_speedup']:.2f}x")
    for s in result["sessions"]:
        lines.append(f"{s['model']} {s['search']}: {s['builds']} builds in {s['seconds']} s, "
                     f"whole model {s['model_default']:,} -> {s['model_tuned']:,} instructions")
    return "\n".join(lines)


# -- the measured tables: 1,000 random trials (or the whole space) per workload, measured once

def table_points(prep: Any, points: int, seed: int = 0) -> dict[str, list[str]]:
    """Per workload, the schedule texts of its table: the whole deduplicated space less the
    default where it has <= `points` points, else `points` distinct ones drawn uniformly from
    it (seeded): what `points` random trials would measure."""
    from nnc.compiler.tune.space import ScheduleSpace, schedule_text

    out = {}
    for w in prep.workloads:
        default = schedule_text(w.default)
        space = [schedule_text(s) for _, s in
                 ScheduleSpace(w.defn, w.shapes, prep.target).enumerate()]
        space = [t for t in space if t != default]
        if len(space) > points:
            space = random.Random(f"{seed}:{w.key}").sample(space, points)
        out[w.key] = space
    return out


def measure_tables(prep: Any, tables: Any, points: int, seed: int = 0,
                   measurer: Any = None, progress: bool = True,
                   deadline: float | None = None) -> dict[str, dict[str, float | None]]:
    """Measure every table point of `prep`'s workloads (build i carries point i of each),
    recording each trial in the tuning cache `tables` (a path or TuningCache): a rerun measures
    only what is missing. Returns {workload: {schedule text: figure or None (failed / wrong)}}
    with the default schedule's figure under "default"."""
    from nnc.compiler.tune.cache import Trial, TuningCache, nnc_version
    from nnc.compiler.tune.features import features
    from nnc.compiler.tune.measure import CortexMMeasurer
    from nnc.compiler.tune.search import Candidate
    from nnc.compiler.tune.space import schedule_text
    from nnc.compiler.tune.tuner import _measure
    from nnc.ir.loop_parser import parse_schedule

    db = tables if isinstance(tables, TuningCache) else TuningCache.open(tables)
    board = measurer if measurer is not None else CortexMMeasurer(prep)
    tkey, obj = prep.target_key, board.objective
    try:
        want = table_points(prep, points, seed)
        have = {w.key: {t.steps: t for t in db.trials(w.key, tkey, obj)} for w in prep.workloads}
        todo = {k: [t for t in texts if t not in have[k]] for k, texts in want.items()}
        n = max((len(v) for v in todo.values()), default=0)
        in_time = deadline is None or time.time() < deadline
        base = board.measure({}) if (n and in_time) or any(
            not any(t.is_default for t in have[w.key].values()) for w in prep.workloads) else None
        if base is not None and base.error:
            raise RuntimeError(f"the untuned build fails: {base.error}")
        for w in prep.workloads:
            if base is not None and not any(t.is_default for t in have[w.key].values()):
                db.add(Trial(w.key, tkey, obj, schedule_text(w.default), base.figures[w.key],
                             is_default=True, nnc_version=nnc_version()))
        t0 = time.monotonic()
        for i in range(n):
            if deadline is not None and time.time() > deadline:
                break
            cands = {}
            for w in prep.workloads:
                if i < len(todo[w.key]):
                    steps = parse_schedule(todo[w.key][i])
                    cands[w.key] = Candidate(steps, todo[w.key][i],
                                             features(w.defn, steps, w.shapes))
            assert base is not None
            for k, (status, figure, error) in _measure(board, cands, base.outputs).items():
                db.add(Trial(k, tkey, obj, cands[k].text, figure, status, error,
                             features=cands[k].features, nnc_version=nnc_version()))
            if progress and (i + 1) % 25 == 0:
                print(f"  {i + 1}/{n} builds, {time.monotonic() - t0:.0f} s", file=sys.stderr,
                      flush=True)
        result = {}
        for w in prep.workloads:
            rows = {t.steps: t for t in db.trials(w.key, tkey, obj)}
            d = next(t for t in rows.values() if t.is_default)
            table: dict[str, float | None] = {"default": d.figure}
            for text in want[w.key]:
                if text in rows:
                    t = rows[text]
                    table[text] = t.figure if t.status == "ok" else None
            result[w.key] = table
        return result
    finally:
        if measurer is None:
            board.close()
        if not isinstance(tables, TuningCache):
            db.close()


def random_curve(table: dict[str, float | None], n_max: int) -> list[float]:
    """The exact expected best-so-far (relative to the default) after n = 1..n_max trials of
    random search drawing without replacement from the table (a failed / wrong point is a trial
    that finds nothing): E[min(default, f of n points)], from the order statistics."""
    default = table["default"]
    assert default
    vals = sorted(min(default, f) if f is not None else default
                  for k, f in table.items() if k != "default")
    big_n = len(vals)
    out = []
    for n in range(1, min(n_max, big_n) + 1):
        # P(the i-th smallest is the minimum of an n-subset) = C(N-i, n-1) / C(N, n)
        exp = sum(v * math.comb(big_n - i, n - 1) for i, v in enumerate(vals, 1)
                  if big_n - i >= n - 1) / math.comb(big_n, n)
        out.append(exp / default)
    return out


def random_trials_to(table: dict[str, float | None], target: float) -> float:
    """Trials random search needs to come within WITHIN of `target` (a figure) with
    probability >= 1/2 (the median of the first hit, exact; 0: the default is there already,
    inf: no point of the table is)."""
    default = table["default"]
    assert default is not None
    if default <= target * (1 + WITHIN):
        return 0
    vals = [f for k, f in table.items() if k != "default"]
    good = sum(f is not None and f <= target * (1 + WITHIN) for f in vals)
    big_n = len(vals)
    if not good:
        return math.inf
    for n in range(1, big_n + 1):
        if math.comb(big_n - good, n) / math.comb(big_n, n) <= 0.5:
            return n
    return math.inf


class TableBoard:
    """A measurer that looks figures up in measured tables (the guided search replayed against
    the real measurements): a point not in its workload's table is an error, a failed / wrong
    one fails its build."""

    objective = "qemu-instructions"

    def __init__(self, prep: Any, tables: dict[str, dict[str, float | None]]) -> None:
        self.prep, self.tables, self.builds = prep, tables, 0

    def measure(self, assignment: Any) -> Any:
        from nnc.compiler.tune.measure import Run
        from nnc.compiler.tune.space import schedule_text

        self.builds += 1
        figs = {}
        for w in self.prep.workloads:
            steps = assignment.get(w.key)
            text = "default" if steps is None or steps == w.default else schedule_text(steps)
            if text not in self.tables[w.key]:
                raise KeyError(f"{w.hash}: {text} is not in the measured table")
            f = self.tables[w.key][text]
            if f is None:
                return Run(error="build: failed or wrong in the measured table")
            figs[w.key] = f
        return Run(figures=figs, outputs={"y": np.zeros(1, np.int8)},
                   total=int(sum(figs.values())))

    def close(self) -> None:
        pass


def table_spaces(tables: dict[str, dict[str, float | None]]) -> Callable[[Any, Any], Any]:
    """`tune(spaces=...)`: each workload's space restricted to its table's points."""
    from nnc.compiler.tune.space import TableSpace

    def make(w: Any, target: Any) -> Any:
        return TableSpace(w.defn, w.shapes, target,
                          [k for k in tables[w.key] if k != "default"])
    return make


def replay(models: dict[str, tuple[Any, dict[str, dict[str, float | None]]]], trials: int,
           batch: int, seeds: int, warm: Any = None) -> dict[str, Any]:
    """Guided search (`seeds` sessions per model, fresh caches; `warm`: a cache file whose
    records of the *other* models warm-start the cost model) replayed against the measured
    tables, and random search's exact expectation from them. `models`: name -> (prepared,
    tables)."""
    from nnc.compiler.tune.cache import TuningCache
    from nnc.compiler.tune.tuner import tune

    rows: list[dict[str, Any]] = []
    for name, (prep, tables) in models.items():
        runs = []
        for s in range(seeds):
            with tempfile.TemporaryDirectory(prefix="nnc-tune-eff-") as tmp:
                cache = Path(tmp) / "c.sqlite"
                if warm is not None:
                    keys = {w.key for w in prep.workloads}
                    with TuningCache.open(warm, create=False) as src, \
                            TuningCache.open(cache) as dst:
                        for t in src.trials(target=prep.target_key):
                            if t.workload not in keys:
                                dst.add(t)
                runs.append(tune(None, prepared=prep, cache=cache, trials=trials, batch=batch,
                                 search="guided", seed=s, progress=False,
                                 measurer=TableBoard(prep, tables),
                                 spaces=table_spaces(tables)))
        for i, w in enumerate(prep.workloads):
            table = tables[w.key]
            figs = [f for k, f in table.items() if k != "default" and f is not None]
            default = table["default"]
            assert default is not None
            best = min([default, *figs])
            curves = [best_so_far(r.workloads[i].history, default) for r in runs]
            hits = [trials_to_reach(c, best / default) for c in curves]
            g = statistics.median([h if h is not None else math.inf for h in hits])
            n_max = max(len(c) for c in curves)
            mean_curve = [statistics.fmean(c[min(j, len(c) - 1)] for c in curves)
                          for j in range(n_max)]
            rows.append({
                "model": name, "workload": w.hash, "op": w.kind, "layer": w.names[0],
                "points": len(table) - 1, "failed": len(table) - 1 - len(figs),
                "default": default, "best": best,
                "guided_trials_to_5pct": g, "guided_hits": hits,
                "random_trials_to_5pct": random_trials_to(table, best),
                "guided_curve": [round(v, 4) for v in mean_curve],
                "random_curve": [round(v, 4) for v in random_curve(table, n_max)],
            })
    # where the default is within WITHIN of the table's best already both need 0 trials: the
    # median over the others too
    hard = [r for r in rows if r["default"] > r["best"] * (1 + WITHIN)]
    med = {s: statistics.median([r[f"{s}_trials_to_5pct"] for r in rows]) if rows
           else math.nan for s in ("guided", "random")}
    med_hard = {s: statistics.median([r[f"{s}_trials_to_5pct"] for r in hard]) if hard
                else math.nan for s in ("guided", "random")}
    return {"mode": "tables", "trials": trials, "batch": batch, "seeds": seeds,
            "within": WITHIN, "warm": warm is not None, "rows": rows, "median": med,
            "median_hard": med_hard, "hard": len(hard)}


def tables_table(result: dict[str, Any]) -> str:
    """The markdown table of a `replay` result."""
    def t(v: float) -> str:
        return "never" if v == math.inf else f"{v:g}"

    lines = ["| model | workload | layer | points (failed) | default | best of the table | "
             f"trials to {100 * WITHIN:.0f}%: guided (median of {result['seeds']}) | random "
             "(exact median) |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['workload']} | {r['layer']} | {r['points']} "
                     f"({r['failed']}) | {r['default']:,.0f} | {r['best']:,.0f} | "
                     f"{t(r['guided_trials_to_5pct'])} | {t(r['random_trials_to_5pct'])} |")
    m = result["median"]
    lines.append(f"\nmedian over {len(result['rows'])} workloads: guided {t(m['guided'])}, "
                 f"random {t(m['random'])} trials to within {100 * WITHIN:.0f}% of the best "
                 "of the table")
    h = result["median_hard"]
    lines.append(f"median over the {result['hard']} whose default is not within "
                 f"{100 * WITHIN:.0f}% of it: guided {t(h['guided'])}, random {t(h['random'])}")
    return "\n".join(lines)


def workers_run(model: Any, cal: Any, trials: int, batch: int, workers: int,
                seed: int = 0) -> list[dict[str, Any]]:
    """The same session (random search, fresh cache, same seed) with 1 and `workers` build
    workers, side by side: wall time, builds, and whether the caches hold the same trials."""
    from nnc.compiler.tune.cache import TuningCache
    from nnc.compiler.tune.measure import prepare
    from nnc.compiler.tune.tuner import tune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare(model, "cortex-m7", quantize="int8", calibration=cal, seed=seed)
    out, rows = [], {}
    with tempfile.TemporaryDirectory(prefix="nnc-tune-workers-") as tmp:
        for n in (1, workers):
            t0 = time.perf_counter()
            r = tune(None, prepared=prep, cache=Path(tmp) / f"w{n}.sqlite", trials=trials,
                     batch=batch, search="random", seed=seed, progress=False, workers=n)
            wall = time.perf_counter() - t0
            with TuningCache.open(Path(tmp) / f"w{n}.sqlite", create=False) as c:
                rows[n] = [(t.workload, t.steps, t.figure, t.status) for t in c.trials()]
            out.append({"workers": n, "seconds": round(wall, 1), "builds": r.builds,
                        "trials": trials, "batch": batch, "model_tuned": r.model_tuned,
                        "same_trials": rows[n] == rows[1]})
    return out


def workers_table(runs: list[dict[str, Any]], name: str) -> str:
    lines = ["| model | workers | builds | wall s | speedup | same trials as 1 worker |",
             "|---|---:|---:|---:|---:|---|"]
    for r in runs:
        lines.append(f"| {name} | {r['workers']} | {r['builds']} | {r['seconds']} | "
                     f"{runs[0]['seconds'] / r['seconds']:.2f}x | {r['same_trials']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from benchmarks.models import MODELS
    from nnc.compiler.tune.measure import prepare

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["tables", "live", "workers"], default="tables",
                    help="tables: measure each workload's table once, replay the searches "
                    "against it (default); live: both searches on the board; workers: one "
                    "random-search session with 1 and with --workers build workers")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", default="kws")
    ap.add_argument("--trials", type=int, default=None,
                    help="per workload (default: 128 replayed, 24 live)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", type=int, default=1000,
                    help="table size per workload: the whole space where smaller (default 1000)")
    ap.add_argument("--tables", default="/tmp/nnc-tune-tables.sqlite",
                    help="the tuning cache that holds the measured tables (a rerun resumes)")
    ap.add_argument("--no-measure", action="store_true",
                    help="replay on what the tables hold, measure nothing")
    ap.add_argument("--deadline", type=float, default=None, metavar="UNIX_TIME",
                    help="stop measuring at this time (the replay uses what is measured)")
    ap.add_argument("--seeds", type=int, default=5, help="guided sessions per model (tables)")
    ap.add_argument("--warm", action="store_true",
                    help="warm-start the cost model on the other models' tables")
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    ap.add_argument("--plot", metavar="PNG", help="draw the curves")
    args = ap.parse_args(argv)
    models = {}
    for name in args.models.split(","):
        model = MODELS[name]()
        models[name] = (model, _calibration(model))
    if args.mode == "workers":
        for name, (model, cal) in models.items():
            print(workers_table(workers_run(model, cal, args.trials or 16, args.batch,
                                            args.workers, args.seed), name))
        return
    if args.mode == "live":
        result = run(models, args.trials or 24, args.batch, args.seed)
        print(table(result))
    else:
        measured = {}
        for name, (model, cal) in models.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                prep = prepare(model, "cortex-m7", quantize="int8", calibration=cal,
                               seed=args.seed)
            print(f"{name}: {len(prep.workloads)} workloads", file=sys.stderr, flush=True)
            tables = (_read_tables(prep, args.tables, args.points, args.seed) if args.no_measure
                      else measure_tables(prep, args.tables, args.points, args.seed,
                                          deadline=args.deadline))
            measured[name] = (prep, tables)
        result = replay(measured, args.trials or 128, args.batch, args.seeds,
                        warm=args.tables if args.warm else None)
        print(tables_table(result))
    if args.plot:
        from nnc.compiler.tune.plot import plot_curves

        plot_curves({f"{r['model']} {r['workload']}": {"guided": r["guided_curve"],
                                                       "random": r["random_curve"]}
                     for r in result["rows"]}, args.plot,
                    title="best so far / default vs trials per workload",
                    labels=None if args.mode == "live" else {
                        "guided": f"guided, mean of {args.seeds} sessions replayed on the tables",
                        "random": "random, exact expectation over the tables"})
        print(f"curves drawn in {args.plot}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"\nwritten to {args.json}")


def _read_tables(prep: Any, path: Any, points: int, seed: int
                 ) -> dict[str, dict[str, float | None]]:
    from nnc.compiler.tune.cache import TuningCache

    with TuningCache.open(path, create=False) as db:
        return measure_tables(prep, db, points, seed, measurer=_NoBoard(), progress=False,
                              deadline=0.0)


class _NoBoard:
    """The measurer of `--no-measure`: measures nothing (the deadline is already past)."""

    objective = "qemu-instructions"
    builds = 0

    def measure(self, assignment: Any) -> Any:
        raise RuntimeError("--no-measure: the tables lack this workload's default")

    def close(self) -> None:
        pass


if __name__ == "__main__":
    main()
