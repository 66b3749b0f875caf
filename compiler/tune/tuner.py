"""`nnc.tune(model, target=...)`: tune every distinct workload of a model and fill the cache.

    >>> r = nnc.tune("kws.onnx", target="cortex-m7", quantize="int8",
    ...              calibration="kws_calibration.npz", trials=32)      # doctest: +SKIP
    >>> print(r.table())                                                 # doctest: +SKIP

How a session goes (`nnc.compiler.tune.measure` says how one build measures one candidate per
workload at once):
1. the compiler's front runs once; each workload with a declarative definition (int8 conv, fully
   connected) gets its schedule space, the default schedule included;
2. the untuned build is measured: its outputs are the reference every candidate's outputs must
   equal bit for bit (int8; fp32 on the host: within the model tests' tolerances,
   `measure.close_outputs`), its per-layer counts (host: median ns) the defaults;
3. batches: each workload proposes `batch` candidates (random, or the cost model's top-k plus an
   epsilon share of random); build i carries candidate i of every workload (on the host the
   whole batch is one executable, `measure.HostMeasurer`); every trial goes to
   the cache as it is measured (ok / failed / wrong). A build that fails, faults or computes a
   wrong result is measured again one candidate at a time, so only the guilty are marked;
4. stop at `trials` per workload (trials in the cache from earlier sessions count: a rerun
   resumes), at `early_stop` trials without improvement, or when `time_budget_s` is spent;
5. a last build with every workload's best checks the outputs and measures the whole model.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nnc.compiler.errors import NncError
from nnc.compiler.tune.cache import Trial, TuningCache, nnc_version
from nnc.compiler.tune.features import features
from nnc.compiler.tune.measure import (
    CortexMMeasurer,
    HostMeasurer,
    Prepared,
    Run,
    Workload,
    prepare,
    same_outputs,
)
from nnc.compiler.tune.search import Candidate, CostModel, GuidedSearch, RandomSearch
from nnc.compiler.tune.space import ScheduleSpace, schedule_text, space_for
from nnc.ir.loop_parser import parse_schedule
from nnc.ir.loops import ScheduleStep

SEARCHES = ("guided", "random")
HOST_WORKERS = ("--workers: host candidates are timed one process at a time on one pinned CPU "
                "(a batch's builds already use every core); leave it at 1")
HOST_CLUSTER = ("--cluster: host candidates are timed on this machine's CPU (the cache keys "
                "them by its features); tune the host without --cluster")


@dataclass
class WorkloadResult:
    key: str
    hash: str
    kind: str
    layers: list[str]
    default: float  # instructions (host: ns) per layer, default schedule
    best: float
    best_steps: str
    trials: int  # measured candidates, earlier sessions included
    failed: int = 0
    wrong: int = 0
    history: list[float] = field(default_factory=list)  # figure per trial of this session

    @property
    def speedup(self) -> float:
        return self.default / self.best if self.best else 0.0


@dataclass
class TuneResult:
    workloads: list[WorkloadResult]
    cache: Path
    target: str
    objective: str
    builds: int
    seconds: float
    model_default: int = 0  # whole-model instructions (host: ns), untuned
    model_tuned: int = 0  # whole-model instructions (host: ns) with every best schedule
    stopped: str = ""
    plot: Path | None = None  # the PNG `plot=` asked for
    # {workload hash: {search: best so far / default per trial}} and their geometric means
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    curve_means: dict[str, list[float]] = field(default_factory=dict)

    def table(self) -> str:
        rows = [("workload", "op", "layers", "default", "best", "speedup", "trials")]
        for w in self.workloads:
            rows.append((w.hash, w.kind, str(len(w.layers)), f"{w.default:,.0f}",
                         f"{w.best:,.0f}", f"{w.speedup:.2f}x",
                         str(w.trials) + (f" ({w.failed + w.wrong} rejected)"
                                          if w.failed + w.wrong else "")))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(wd) if i < 2 else c.rjust(wd)
                           for i, (c, wd) in enumerate(zip(r, widths, strict=True)))
                 for r in rows]
        if self.model_default:
            lines.append("")
            unit = "ns" if self.objective == "host-ns" else "instructions"
            lines.append(f"whole model on {self.target}: {self.model_default:,} -> "
                         f"{self.model_tuned:,} {unit} "
                         f"({self.model_default / max(self.model_tuned, 1):.2f}x), "
                         f"{self.builds} builds in {self.seconds:.0f} s; cache {self.cache}")
        return "\n".join(lines)


class _State:
    """One workload's search."""

    def __init__(self, w: Workload, space: ScheduleSpace, searcher: RandomSearch,
                 default: float, earlier: list[Trial]) -> None:
        self.w = w
        self.space = space
        self.searcher = searcher
        self.default = default
        ok = [t for t in earlier if t.status == "ok" and t.figure is not None]
        self.trials = sum(not t.is_default for t in earlier)
        self.failed = sum(t.status == "failed" for t in earlier)
        self.wrong = sum(t.status == "wrong" for t in earlier)
        best = min(ok, key=lambda t: t.figure or 0.0, default=None)
        self.best = min(default, best.figure or default) if best is not None else default
        self.best_steps = (best.steps if best is not None and (best.figure or 0) <= default
                           else schedule_text(w.default))
        self.since_best = 0
        self.history: list[float] = []

    def record(self, figure: float | None) -> bool:
        self.trials += 1
        self.history.append(figure if figure is not None else float("nan"))
        if figure is not None and figure < self.best:
            self.best, self.since_best = figure, 0
            return True
        self.since_best += 1
        return False


def tune(model: Any, target: str = "cortex-m7", *,
         input_shapes: Mapping[str, Any] | None = None, quantize: str | None = None,
         calibration: Any = None, calibration_method: str = "minmax",
         trials: int = 32, time_budget_s: float | None = None,
         cache: str | Path | TuningCache | None = None, search: str = "guided",
         batch: int = 8, epsilon: float = 0.2, early_stop: int | None = None, seed: int = 0,
         progress: bool = True, workdir: str | Path | None = None, workers: int = 1,
         cluster: Any = None, plot: str | Path | None = None, prepared: Prepared | None = None,
         measurer: Any = None,
         spaces: Callable[[Workload, Any], ScheduleSpace] | None = None) -> TuneResult:
    """Tune `model`'s workloads for `target` (see the module docstring); the trials go to
    `cache` (a path or an open TuningCache; default `default_cache_path()`). `prepared` (from
    `measure.prepare`) skips the front; `measurer` replaces the board (an object with
    `objective`, `builds`, `measure(assignment) -> Run` and `close()`); `spaces(workload,
    target)` replaces the schedule spaces (benchmarks: a measured table's points).

    `workers` > 1: the builds of a batch run in that many forked worker processes, each with
    its own measurer and build folder (the front is not run again); the trials are recorded in
    the same order, so the cache and the result are the same as with one worker.
    `cluster` (tcp://HOST:PORT of a Dask scheduler, or a `distributed` Client): the builds run
    on that cluster's workers instead (nnc.compiler.tune.cluster), recorded the same way.
    `plot`: a PNG of best-so-far vs trials for this search and, run after it with the same
    budget and seed in a fresh temporary cache (not kept), the other search."""
    t_start = time.monotonic()
    if search not in SEARCHES:
        raise NncError(f"search={search!r} is not one of {list(SEARCHES)}")
    if trials < 1 or batch < 1:
        raise NncError("trials and batch must be at least 1")
    if not 0.0 <= epsilon <= 1.0:
        raise NncError("epsilon must be between 0 and 1")
    if workers < 1:
        raise NncError("workers must be at least 1")
    if cluster is not None and workers > 1:
        raise NncError("--workers and --cluster exclude each other: the cluster's workers "
                       "measure the builds")
    if cluster is not None:
        from nnc.compiler.tune.cluster import _distributed

        _distributed()  # no distributed package: say so before the front runs
    if plot is not None:
        from nnc.compiler.tune.plot import _pyplot

        _pyplot()  # no matplotlib: say so before measuring anything
    if workers > 1 and measurer is None and prepared is None:
        from nnc.compiler.api import _target

        if _target(target).kind == "host":  # before the front runs: a quick error
            raise NncError(HOST_WORKERS)
    if cluster is not None and measurer is None and prepared is None:
        from nnc.compiler.api import _target

        if _target(target).kind == "host":
            raise NncError(HOST_CLUSTER)
    prep = prepared or prepare(model, target, input_shapes=input_shapes, quantize=quantize,
                               calibration=calibration, calibration_method=calibration_method,
                               seed=seed)
    host = prep.target.kind == "host"
    if not prep.workloads:
        raise NncError("the model has no kernel with a schedule space to tune ("
                       + ("fp32 conv / gemm)" if host else "int8 conv / fully connected with "
                          "generated kernels); quantize it with --quantize int8"))
    if host and workers > 1 and measurer is None:
        raise NncError(HOST_WORKERS)
    if host and cluster is not None and measurer is None:
        raise NncError(HOST_CLUSTER)
    owned = not isinstance(cache, TuningCache)
    db = TuningCache.open(cache) if not isinstance(cache, TuningCache) else cache
    if measurer is None:
        measurer = HostMeasurer(prep, workdir) if host else CortexMMeasurer(prep, workdir)
    opts = _Options(trials, time_budget_s, search, batch, epsilon, early_stop, seed, progress,
                    workers, spaces, cluster)
    try:
        result = _session(prep, db, measurer, opts, t_start)
        if plot is not None:
            result.plot = _plot(prep, measurer, opts, result, Path(plot))
        return result
    finally:
        measurer.close()
        if owned:
            db.close()


def _toolchain(prep: Prepared) -> str:
    import subprocess

    try:
        r = subprocess.run([prep.target.cc, "-dumpversion"], capture_output=True, text=True,
                           timeout=10)
        return f"{prep.target.cc} {r.stdout.strip()}"
    except (OSError, subprocess.TimeoutExpired):
        return prep.target.cc


@dataclass(frozen=True)
class _Options:
    trials: int
    time_budget_s: float | None
    search: str
    batch: int
    epsilon: float
    early_stop: int | None
    seed: int
    progress: bool
    workers: int = 1
    spaces: Callable[[Workload, Any], ScheduleSpace] | None = None
    cluster: Any = None


def _plot(prep: Prepared, measurer: Any, opts: _Options, result: TuneResult,
          path: Path) -> Path:
    """The other search with the same budget in a throw-away cache, then both curves."""
    import tempfile

    from nnc.compiler.tune.plot import best_so_far, plot_curves

    other = "random" if opts.search == "guided" else "guided"
    with tempfile.TemporaryDirectory(prefix="nnc-tune-plot-") as tmp, \
            TuningCache.open(Path(tmp) / "c.sqlite") as scratch:
        peer = _session(prep, scratch, measurer,
                        replace(opts, search=other, time_budget_s=None, progress=False,
                                trials=max(len(w.history) for w in result.workloads) or 1),
                        time.monotonic())
    mine = {w.key: w for w in result.workloads}
    curves = {}
    for w in peer.workloads:
        curves[w.hash] = {opts.search: best_so_far(mine[w.key].history, w.default),
                          other: best_so_far(w.history, w.default)}
    warm = sum(w.trials - len(w.history) for w in result.workloads)
    labels = {opts.search: f"{opts.search} search, this session"
              + (f" (resumed: {warm} earlier trials not drawn)" if warm else ""),
              other: f"{other} search, same budget and seed, fresh cache (not kept)"}
    result.curves = curves
    result.curve_means = plot_curves(
        curves, path, labels=labels,
        title=f"nnc tune on {prep.target.name}: {len(curves)} workloads, "
              f"{opts.trials} trials each, batches of {opts.batch}")
    return path


def _session(prep: Prepared, db: TuningCache, measurer: Any, opts: _Options,
             t_start: float) -> TuneResult:
    trials, time_budget_s, search, batch = (opts.trials, opts.time_budget_s, opts.search,
                                            opts.batch)
    epsilon, early_stop, seed, progress = opts.epsilon, opts.early_stop, opts.seed, opts.progress
    target_key, objective = prep.target_key, measurer.objective
    toolchain = _toolchain(prep)
    matches = getattr(measurer, "matches", same_outputs)
    base = measurer.measure({})
    if base.error:
        raise NncError(f"the untuned model does not build or run on {prep.target.name}, so "
                       f"there is nothing to compare candidates with: {base.error}")
    reference = base.outputs
    cost = CostModel(seed)
    rng = random.Random(seed)
    states: list[_State] = []
    for w in prep.workloads:
        earlier = db.trials(w.key, target_key, objective)
        default_text = schedule_text(w.default)
        if not any(t.is_default and t.steps == default_text for t in earlier):
            db.add(Trial(w.key, target_key, objective, default_text, base.figures[w.key],
                         is_default=True, features=features(w.defn, w.default, w.shapes),
                         nnc_version=nnc_version(), toolchain=toolchain))
        space = (opts.spaces(w, prep.target) if opts.spaces is not None
                 else space_for(w.defn, w.shapes, prep.target))
        measured = {t.steps for t in earlier} | {default_text}
        searcher: RandomSearch = (GuidedSearch(space, random.Random(rng.random()), cost, w.key,
                                               measured, epsilon) if search == "guided"
                                  else RandomSearch(space, random.Random(rng.random()),
                                                    measured))
        states.append(_State(w, space, searcher, base.figures[w.key], earlier))
    # warm start: every ok trial of this target and objective the cache holds (other
    # workloads' and models' too)
    for t in db.trials(target=target_key, objective=objective):
        if t.status == "ok" and t.figure is not None:
            cost.add(t.workload, t.features, t.figure)
    if search == "guided":
        cost.fit()

    pool: Any = None  # _Pool or cluster.ClusterPool
    if opts.cluster is not None:
        from nnc.compiler.tune.cluster import ClusterPool

        pool = ClusterPool(opts.cluster, measurer, reference, toolchain, prep.target.cc)
    elif opts.workers > 1:
        pool = _Pool(measurer, opts.workers, reference)
    bars = _Bars(states, trials, progress)
    stopped = ""
    try:
        while True:
            active = [s for s in states if s.trials < trials
                      and (early_stop is None or s.since_best < early_stop)]
            if not active:
                stopped = "trials" if all(s.trials >= trials for s in states) else "early stop"
                break
            if time_budget_s is not None and time.monotonic() - t_start > time_budget_s:
                stopped = "time budget"
                break
            proposals = {s.w.key: s.searcher.propose(min(batch, trials - s.trials))
                         for s in active}
            if not any(proposals.values()):
                stopped = "space exhausted"
                break
            by_key = {s.w.key: s for s in states}
            builds = [{k: p[i] for k, p in proposals.items() if i < len(p)}
                      for i in range(max(len(p) for p in proposals.values()))]
            # one worker: build by build (the time budget is checked between builds); a pool:
            # the batch's builds at once, recorded in the same order
            # one worker: build by build (the time budget is checked between builds), or the
            # whole batch in one build where the measurer takes batches (the host); a pool:
            # the batch's builds at once, recorded in the same order
            measured = (pool.map(builds) if pool is not None else
                        _measure_batch(measurer, builds, reference, matches)
                        if hasattr(measurer, "measure_batch") else
                        (_measure(measurer, cands, reference, matches) for cands in builds))
            for cands, results in zip(builds, measured, strict=False):
                for k, (status, figure, error) in results.items():
                    s, c = by_key[k], cands[k]
                    db.add(Trial(k, target_key, objective, c.text, figure, status, error,
                                 features=c.features, nnc_version=nnc_version(),
                                 toolchain=toolchain))
                    s.failed += status == "failed"
                    s.wrong += status == "wrong"
                    ok = status == "ok" and figure is not None
                    if s.record(figure if ok else None):
                        s.best_steps = c.text
                    if ok:
                        assert figure is not None
                        cost.add(k, c.features, figure)
                    bars.update(s)
                if time_budget_s is not None and time.monotonic() - t_start > time_budget_s:
                    break
            if search == "guided":
                cost.fit()
    finally:
        bars.close()
        if pool is not None:
            pool.close()
    best = {s.w.key: parse_schedule(s.best_steps) for s in states}
    final = measurer.measure(best)
    if final.error or not matches(final.outputs, reference):
        raise RuntimeError(f"the build with every workload's best schedule "
                           f"{final.error or 'computes other outputs than the untuned one'}")
    summary = [WorkloadResult(s.w.key, s.w.hash, s.w.kind, s.w.names, s.default, s.best,
                              s.best_steps, s.trials, s.failed, s.wrong, s.history)
               for s in states]
    builds = measurer.builds + (pool.builds if pool is not None else 0)
    return TuneResult(summary, db.path, prep.target.name, objective, builds,
                      time.monotonic() - t_start, base.total, final.total, stopped)


def _measure(measurer: Any, cands: Mapping[str, Candidate],
             reference: Mapping[str, Any], matches: Callable[..., bool] = same_outputs
             ) -> dict[str, tuple[str, float | None, str]]:
    """(status, figure, error) per workload of one build carrying `cands`; a build that fails
    or computes a wrong result is measured again one candidate at a time."""
    assignment: dict[str, tuple[ScheduleStep, ...]] = {k: c.steps for k, c in cands.items()}
    run = measurer.measure(assignment)
    if not run.error and matches(run.outputs, reference):
        return {k: ("ok", run.figures[k], "") for k in cands}
    if len(cands) == 1:
        (k,) = cands
        return {k: _verdict(run, reference, k, matches)}
    out = {}
    for k, steps in assignment.items():
        out[k] = _verdict(measurer.measure({k: steps}), reference, k, matches)
    return out


def _measure_batch(measurer: Any, builds: list[dict[str, Candidate]],
                   reference: Mapping[str, Any], matches: Callable[..., bool]
                   ) -> list[dict[str, tuple[str, float | None, str]]]:
    """`_measure` for a measurer that builds a whole batch at once (`measure_batch`): the
    assignments that fail or compute a wrong result go again, one candidate each, in one more
    batch."""
    runs = measurer.measure_batch([{k: c.steps for k, c in cands.items()} for cands in builds])
    out: list[dict[str, tuple[str, float | None, str]]] = []
    again: list[tuple[int, str]] = []
    for i, (cands, run) in enumerate(zip(builds, runs, strict=True)):
        if not run.error and matches(run.outputs, reference):
            out.append({k: ("ok", run.figures[k], "") for k in cands})
            continue
        out.append({})
        if len(cands) == 1:
            (k,) = cands
            out[i][k] = _verdict(run, reference, k, matches)
        else:
            again += [(i, k) for k in cands]
    if again:
        singles = measurer.measure_batch([{k: builds[i][k].steps} for i, k in again])
        for (i, k), run in zip(again, singles, strict=True):
            out[i][k] = _verdict(run, reference, k, matches)
    return out


_WORKER: dict[str, Any] = {}


def _worker_init(measurer: Any, reference: Mapping[str, Any], workdir: str) -> None:
    """In a forked worker: its own measurer (own build folder) on the inherited front."""
    import os

    own = getattr(measurer, "for_worker", None)
    _WORKER["measurer"] = own(Path(workdir) / f"w{os.getpid()}") if own else measurer
    _WORKER["reference"] = reference


def _worker_measure(cands: Mapping[str, Candidate]
                    ) -> tuple[dict[str, tuple[str, float | None, str]], int]:
    m = _WORKER["measurer"]
    before = m.builds
    return (_measure(m, cands, _WORKER["reference"], getattr(m, "matches", same_outputs)),
            m.builds - before)


def _ready() -> None:
    pass


class _Pool:
    """`workers` forked processes that stay up for the session, each measuring whole builds
    (with their one-at-a-time re-measurements) on the front the parent prepared."""

    def __init__(self, measurer: Any, workers: int, reference: Mapping[str, Any]) -> None:
        import multiprocessing
        import tempfile
        from concurrent.futures import ProcessPoolExecutor

        self.tmp = tempfile.TemporaryDirectory(prefix="nnc-tune-workers-")
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                        initializer=_worker_init,
                                        initargs=(measurer, reference, self.tmp.name))
        self.pool.submit(_ready).result()  # fork every worker now, before any bar's thread
        self.builds = 0

    def map(self, builds: list[dict[str, Candidate]]
            ) -> list[dict[str, tuple[str, float | None, str]]]:
        out = []
        for results, n in self.pool.map(_worker_measure, builds):
            self.builds += n
            out.append(results)
        return out

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        self.tmp.cleanup()


def _verdict(run: Run, reference: Mapping[str, Any], key: str,
             matches: Callable[..., bool] = same_outputs) -> tuple[str, float | None, str]:
    if run.error:
        return "failed", None, run.error
    if not matches(run.outputs, reference):
        return "wrong", None, "outputs differ from the untuned build's"
    return "ok", run.figures[key], ""


class _Bars:
    """One tqdm bar per workload: trials done, best so far, speedup over the default."""

    def __init__(self, states: list[_State], trials: int, enabled: bool) -> None:
        self.bars: dict[str, Any] = {}
        if not enabled:
            return
        from tqdm import tqdm

        for i, s in enumerate(states):
            bar = tqdm(total=trials, initial=min(s.trials, trials), position=i, leave=True,
                       desc=f"{s.w.hash} {s.w.kind} x{len(s.w.layers)}", file=sys.stderr,
                       dynamic_ncols=True, bar_format="{desc} {bar} {n_fmt}/{total_fmt}"
                       "{postfix} [{elapsed}]")
            bar.set_postfix_str(self._post(s))
            self.bars[s.w.key] = bar

    @staticmethod
    def _post(s: _State) -> str:
        return f"best {s.best:,.0f} ({s.default / s.best:.2f}x)"

    def update(self, s: _State) -> None:
        bar = self.bars.get(s.w.key)
        if bar is not None:
            bar.n = min(s.trials, bar.total)
            bar.set_postfix_str(self._post(s), refresh=False)
            bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
