"""`nnc tune --workers N` and `--plot`, with the made-up board (no QEMU): a pool of forked
workers records the same trials in the same order as one process; the plot is a real PNG with
both searches' curves, and without matplotlib the error is one line naming the install."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from nnc.compiler.errors import NncError
from nnc.compiler.tune.cache import TuningCache
from nnc.compiler.tune.measure import prepare
from nnc.compiler.tune.space import schedule_text
from nnc.compiler.tune.tuner import tune
from tests.test_tune_cache import FakeBoard, tiny_model

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def prep():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare(tiny_model(), "cortex-m7", quantize="int8", calibration="random")


def _rows(path):
    with TuningCache.open(path, create=False) as c:
        return [(t.workload, t.steps, t.figure, t.status, t.error, t.is_default)
                for t in c.trials()]


@pytest.mark.parametrize("search", [pytest.param("guided", marks=pytest.mark.slow), "random"])
def test_workers_record_the_same_trials_as_one_process(prep, tmp_path, search):
    # a build that fails and one that computes wrongly: their re-measurements happen in the
    # workers too
    probe = FakeBoard(prep)
    tune(None, cache=tmp_path / "probe.sqlite", prepared=prep, measurer=probe, trials=8,
         batch=4, search=search, progress=False, seed=3)  # the first batch: builds 1-4
    w0, w1 = prep.workloads[:2]
    bad = schedule_text(probe.assignments[2][w0.key])
    wrong = schedule_text(probe.assignments[4][w1.key])
    results = {}
    for n in (1, 3):
        board = FakeBoard(prep, bad={bad}, wrong={wrong})
        results[n] = tune(None, cache=tmp_path / f"w{n}.sqlite", prepared=prep, measurer=board,
                          trials=8, batch=4, search=search, progress=False, workers=n, seed=3)
    one, three = results[1], results[3]
    assert _rows(tmp_path / "w1.sqlite") == _rows(tmp_path / "w3.sqlite")
    statuses = {r[3] for r in _rows(tmp_path / "w1.sqlite")}
    assert statuses == {"ok", "failed", "wrong"}
    assert one.builds == three.builds > 1 + 8 + 1  # the re-measurements counted too
    for a, b in zip(one.workloads, three.workloads, strict=True):
        assert (a.best, a.best_steps, a.trials, a.failed, a.wrong) == (
            b.best, b.best_steps, b.trials, b.failed, b.wrong)
        assert np.array_equal(a.history, b.history, equal_nan=True)


def test_workers_must_be_positive(prep, tmp_path):
    with pytest.raises(NncError, match="workers"):
        tune(None, cache=tmp_path / "c.sqlite", prepared=prep, measurer=FakeBoard(prep),
             workers=0, progress=False)


def test_plot_draws_both_searches(prep, tmp_path):
    import matplotlib.image

    png = tmp_path / "curve.png"
    board = FakeBoard(prep)
    r = tune(None, cache=tmp_path / "c.sqlite", prepared=prep, measurer=board, trials=10,
             batch=5, progress=False, plot=png)
    assert r.plot == png and png.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert len(r.curves) == len(prep.workloads)
    for w in r.workloads:
        c = r.curves[w.hash]
        assert set(c) == {"guided", "random"}
        assert len(c["guided"]) == len(c["random"]) == 10
        for curve in c.values():
            assert curve == sorted(curve, reverse=True) and curve[-1] <= 1.0
        assert c["guided"][-1] == pytest.approx(w.best / w.default)
    assert set(r.curve_means) == {"guided", "random"}
    # the random curve was measured too (same budget), in a cache that is not kept
    assert board.builds == 2 * (1 + 10 + 1)
    with TuningCache.open(tmp_path / "c.sqlite", create=False) as c:
        assert c.count() == len(prep.workloads) * 11


def test_plot_without_matplotlib_is_one_line(prep, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    board = FakeBoard(prep)
    with pytest.raises(NncError, match=r"pip install nnc\[plot\]"):
        tune(None, cache=tmp_path / "c.sqlite", prepared=prep, measurer=board, trials=2,
             progress=False, plot=tmp_path / "x.png")
    assert board.builds == 0  # said before measuring anything
    code = ("import sys; sys.modules['matplotlib'] = None; from nnc.compiler.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "tune", "m.onnx", "--quantize", "int8",
                        "--calibration", "random", "--plot", "x.png"],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(ROOT.parent), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == "nnc: error: --plot needs matplotlib: pip install nnc[plot]"
