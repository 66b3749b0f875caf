"""The tuning cache (nnc.compiler.tune.cache) and the tuner's bookkeeping around it, without a
board: lookups apply only where workload, target and objective match; failed and wrong trials
are recorded and never best; a corrupt or foreign file is one clear error; kill -9 during a
tune leaves a cache that opens, and a rerun resumes; apply-tuning sets the cached schedules
before default-schedule."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from benchmarks.models.mlperf_tiny import _Builder
from nnc.compiler.errors import NncError
from nnc.compiler.tune.apply import open_tuning
from nnc.compiler.tune.cache import CacheError, Trial, TuningCache, default_cache_path
from nnc.compiler.tune.measure import Run, prepare, scheduled_module
from nnc.compiler.tune.space import schedule_text
from nnc.compiler.tune.tuner import tune

ROOT = Path(__file__).resolve().parent.parent


def tiny_model():
    """Four workloads: a 3x3 conv, a depthwise conv, a pointwise conv, a fully connected."""
    m = _Builder("tune_tiny", seed=5)
    y = m.conv_bn("input", 1, 8, (3, 3), pads=(1, 1, 1, 1))
    y = m.conv_bn(y, 8, 8, (3, 3), pads=(1, 1, 1, 1), group=8)
    y = m.conv_bn(y, 8, 16, (1, 1))
    logits = m.classifier_head(y, 16, (8, 6), 4)
    return m.finish("input", [1, 1, 8, 6], logits, [1, 4])


@pytest.fixture(scope="module")
def prepared():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare(tiny_model(), "cortex-m7", quantize="int8", calibration="random")


class FakeBoard:
    """A measurer with made-up but deterministic figures (fewer instructions with more scalar
    accumulators, a little noise from the text); `bad` schedules fail to build, `wrong` ones
    compute other outputs."""

    objective = "qemu-instructions"

    def __init__(self, prep, bad=(), wrong=(), delay=0.0):
        self.prep, self.bad, self.wrong, self.delay = prep, set(bad), set(wrong), delay
        self.builds = 0
        self.assignments = []

    def figure(self, key, steps):
        w = next(w for w in self.prep.workloads if w.key == key)
        text = schedule_text(steps)
        f = 1000.0 + 37 * (sum(map(ord, text)) % 97) + 200 * len(steps)
        return f if steps != w.default else 2000.0

    def measure(self, assignment):
        self.builds += 1
        self.assignments.append(dict(assignment))
        time.sleep(self.delay)
        texts = {schedule_text(s) for s in assignment.values()}
        if texts & self.bad:
            return Run(error="build: error: made up")
        out = np.zeros(4, np.int8)
        if texts & self.wrong:
            out[0] = 1
        figs = {w.key: self.figure(w.key, assignment.get(w.key, w.default))
                for w in self.prep.workloads}
        return Run(figures=figs, outputs={"y": out}, total=int(sum(figs.values())))

    def close(self):
        pass


def test_best_applies_only_where_workload_target_and_objective_match(tmp_path):
    with TuningCache.open(tmp_path / "c.sqlite") as c:
        c.add(Trial("conv A", "target=cortex-m7", "qemu-instructions", "[X]", 90.0))
        c.add(Trial("conv A", "target=cortex-m7", "qemu-instructions", "[Y]", 80.0))
        c.add(Trial("conv A", "target=cortex-m7", "qemu-instructions", "[Z]", None, "failed",
                    "boom"))
        c.add(Trial("conv A", "target=cortex-m7", "qemu-instructions", "[W]", None, "wrong"))
        c.add(Trial("conv A", "target=cortex-m4", "qemu-instructions", "[V]", 10.0))
        c.add(Trial("conv A", "target=cortex-m7", "host-ns", "[U]", 1.0))
        with pytest.raises(ValueError):
            c.add(Trial("conv A", "t", "o", "[]", None, "ok"))
    with TuningCache.open(tmp_path / "c.sqlite", create=False) as c:
        assert c.best("conv A", "target=cortex-m7", "qemu-instructions").steps == "[Y]"
        assert c.best("conv B", "target=cortex-m7", "qemu-instructions") is None
        assert c.best("conv A", "target=cortex-m55", "qemu-instructions") is None
        assert c.count() == 6
        assert [t.status for t in c.trials("conv A", "target=cortex-m7",
                                           "qemu-instructions")] == ["ok", "ok", "failed",
                                                                     "wrong"]


def test_corrupt_foreign_or_newer_files_are_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all " * 200)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (a)")
    con.commit()
    con.close()
    newer = tmp_path / "newer.sqlite"
    TuningCache.open(newer).close()
    con = sqlite3.connect(newer)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    for path, message in [(junk, "not a tuning cache or corrupt"),
                          (other, "not an nnc tuning cache"), (newer, "schema version 99"),
                          (tmp_path / "missing.sqlite", "no such file"),
                          (tmp_path, "is a directory")]:
        with pytest.raises(CacheError, match=message):
            TuningCache.open(path, create=False)
    cli = [sys.executable, "-m", "nnc.compiler.cli", "compile", "m.onnx", "--tuning-cache",
           str(junk)]
    r = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT.parent,
                       env={**os.environ, "PYTHONPATH": str(ROOT.parent)})
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_tune_records_every_trial_and_rejects_failed_and_wrong(prepared, tmp_path):
    w0, w1 = prepared.workloads[:2]
    board = FakeBoard(prepared)
    first = tune(None, cache=tmp_path / "c.sqlite", prepared=prepared, measurer=board,
                 trials=3, batch=3, search="random", progress=False)
    # make the next session's first candidate of w0 fail to build, of w1 compute wrongly
    probe = FakeBoard(prepared)
    tune(None, cache=tmp_path / "probe.sqlite", prepared=prepared, measurer=probe, trials=4,
         batch=4, search="random", progress=False, seed=0)
    bad = schedule_text(probe.assignments[1][w0.key])
    wrong = schedule_text(probe.assignments[1][w1.key])
    board = FakeBoard(prepared, bad={bad}, wrong={wrong})
    tune(None, cache=tmp_path / "d.sqlite", prepared=prepared, measurer=board, trials=4,
         batch=4, search="random", progress=False, seed=0)
    with TuningCache.open(tmp_path / "d.sqlite") as c:
        rows = {t.steps: t for t in c.trials()}
    assert rows[bad].status == "failed" and "made up" in rows[bad].error
    assert rows[wrong].status == "wrong" and rows[wrong].figure is None
    # the batch build failed, so each candidate was measured again on its own
    assert any(list(a) == [w0.key] for a in board.assignments)
    assert sum(t.status == "ok" for t in rows.values()) == len(rows) - 2
    assert first.builds == 1 + 3 + 1  # untuned, one per trial, the final check
    for w in first.workloads:
        assert w.trials == 3 and w.best <= w.default
    assert "speedup" in first.table()


def test_a_rerun_resumes_and_guided_search_proposes_unmeasured(prepared, tmp_path):
    cache = tmp_path / "c.sqlite"
    tune(None, cache=cache, prepared=prepared, measurer=FakeBoard(prepared), trials=2,
         batch=2, progress=False)
    board = FakeBoard(prepared)
    r = tune(None, cache=cache, prepared=prepared, measurer=board, trials=12, batch=5,
             progress=False)
    assert all(w.trials == 12 for w in r.workloads)
    assert board.builds == 1 + 10 + 1  # only the 10 trials still missing per workload
    with TuningCache.open(cache) as c:
        for w in prepared.workloads:
            texts = [t.steps for t in c.trials(w.key) if not t.is_default]
            assert len(texts) == len(set(texts)) == 12


def test_kill_9_loses_only_trials_in_flight(prepared, tmp_path):
    """A tune killed at random moments: the cache opens every time with whole rows, and a
    rerun finishes the trials."""
    cache = tmp_path / "c.sqlite"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, warnings
        sys.path.insert(0, {str(ROOT)!r})
        sys.path.insert(0, {str(ROOT.parent)!r})
        warnings.simplefilter("ignore")
        from tests.test_tune_cache import FakeBoard, tiny_model
        from nnc.compiler.tune.measure import prepare
        from nnc.compiler.tune.tuner import tune
        prep = prepare(tiny_model(), "cortex-m7", quantize="int8", calibration="random")
        print("ready", flush=True)
        tune(None, cache={str(cache)!r}, prepared=prep, measurer=FakeBoard(prep, delay=0.02),
             trials=int(sys.argv[1]), batch=4, progress=False, search="random")
        """))
    rng = np.random.default_rng(0)
    last = 0
    for _ in range(10):  # the bar: 10 kills at random moments
        p = subprocess.Popen([sys.executable, str(script), "40"], stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.02, 0.5)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        with TuningCache.open(cache, create=False) as c:
            rows = c.trials()
        assert all(t.status == "ok" and t.figure is not None and t.workload for t in rows)
        assert all(t.steps.startswith("[") and t.steps.endswith("]") and t.target
                   and t.nnc_version and t.created > 0 for t in rows)  # whole rows only
        assert len(rows) >= last
        last = len(rows)
    subprocess.run([sys.executable, str(script), "40"], check=True, capture_output=True)
    with TuningCache.open(cache) as c:
        for w in prepared.workloads:
            assert sum(not t.is_default for t in c.trials(w.key)) == 40


def test_apply_tuning_sets_cached_schedules_before_default_schedule(prepared, tmp_path,
                                                                    monkeypatch):
    import random

    from nnc.compiler.tune.space import ScheduleSpace

    w = prepared.workloads[2]
    (_, steps), = ScheduleSpace(w.defn, w.shapes, prepared.target).sample(random.Random(3), 1)
    monkeypatch.delenv("NNC_TUNING_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert open_tuning(None, prepared.target) is None  # no default cache yet: nothing
    with TuningCache.open(default_cache_path()) as c:
        assert c.path == tmp_path / "nnc" / "tuning.sqlite"
        c.add(Trial(w.key, prepared.target_key, "qemu-instructions", schedule_text(steps), 5.0))
        c.add(Trial(w.key, prepared.target_key, "qemu-instructions", "[]", 9.0))
    lookup = open_tuning(None, prepared.target)  # the default cache, no flag
    module = scheduled_module(prepared, lookup)
    tuned = [k for k in module.kernels if k.workload == w.key]
    assert tuned and all(k.schedule == steps for k in tuned)
    others = [k for k in module.kernels if k.compute is not None and k.workload != w.key]
    assert all(k.schedule == next(x.default for x in prepared.workloads
                                  if x.key == k.workload) for k in others)
    assert lookup.hits == [w.key]
    monkeypatch.setenv("NNC_TUNING_CACHE", "off")
    assert open_tuning(None, prepared.target) is None
    assert open_tuning(False, prepared.target) is None


def test_nothing_to_tune_is_a_user_error(tmp_path):
    with pytest.raises(NncError, match="no kernel with a schedule space"):
        tune(tiny_model(), "cortex-m7", cache=tmp_path / "c.sqlite", progress=False)
    # the host tunes fp32 (tests/test_tune_host.py); other targets have no measurer
    with pytest.raises(NncError, match="emulated Cortex-M boards or the host"):
        tune(tiny_model(), "opencl", cache=tmp_path / "c.sqlite", progress=False)
    with pytest.raises(NncError, match="fp32"):
        tune(tiny_model(), "host", quantize="int8", calibration="random",
             cache=tmp_path / "c.sqlite", progress=False)


def test_tune_efficiency_benchmark_bounded(prepared):
    """benchmarks/tune_efficiency.py end to end on the tiny model, the board replaced by the
    made-up one (the README's figures come from the real board)."""
    from benchmarks.tune_efficiency import run, table

    result = run({"tiny": (tiny_model(), "random")}, trials=6, batch=3, measurer=FakeBoard)
    assert len(result["rows"]) == 5  # three convs, the average pool, the FC
    for r in result["rows"]:
        assert len(r["guided_curve"]) == len(r["random_curve"]) == 6
        assert r["guided_curve"] == sorted(r["guided_curve"], reverse=True)
        assert r["reference"] <= r["default"]
    assert "median over 5 workloads" in table(result)


def test_time_budget_and_early_stop(prepared, tmp_path):
    r = tune(None, cache=tmp_path / "a.sqlite", prepared=prepared, measurer=FakeBoard(prepared),
             trials=50, time_budget_s=1e-6, progress=False)
    assert r.stopped == "time budget" and all(w.trials == 0 for w in r.workloads)
    r = tune(None, cache=tmp_path / "b.sqlite", prepared=prepared, measurer=FakeBoard(prepared),
             trials=200, batch=1, early_stop=3, search="random", progress=False)
    assert r.stopped == "early stop"
    for w in r.workloads:
        h = w.history
        assert len(h) < 200 and min(h[-3:]) >= min(h[:-3] + [w.default])


def test_a_record_of_the_same_isa_family_schedules_the_kernel(prepared, tmp_path):
    """A cache tuned on the Cortex-M4 schedules the M7 build's kernel (same dsp/32 family),
    and the lookup says so."""
    import random

    from nnc.backends.target import parse_target
    from nnc.compiler.tune.space import ScheduleSpace
    from nnc.passes.lower_to_loops import target_key

    w = prepared.workloads[2]
    m4 = target_key(parse_target("cortex-m4"))
    assert w.key.endswith(" " + prepared.target_key)
    (_, steps), = ScheduleSpace(w.defn, w.shapes, prepared.target).sample(random.Random(3), 1)
    with TuningCache.open(tmp_path / "c.sqlite") as c:
        c.add(Trial(w.key[: -len(prepared.target_key)] + m4, m4, "qemu-instructions",
                    schedule_text(steps), 5.0))
    lookup = open_tuning(tmp_path / "c.sqlite", prepared.target)
    # apply-tuning asks `get(kernel.workload)` (nnc.compile hands it the lookup itself)
    found = {x.key: lookup.get(x.key) for x in prepared.workloads}
    module = scheduled_module(prepared, {k: v for k, v in found.items() if v is not None})
    tuned = [k for k in module.kernels if k.workload == w.key]
    assert tuned and all(k.schedule == steps for k in tuned)
    assert lookup.fallbacks == [(w.key, m4)]
    assert [k for k, v in found.items() if v is not None] == [w.key]
