"""benchmarks/tune_efficiency.py's table mode: each workload's table (its whole space, or 1,000
random points of it) measured once on the board, random search's curve as an exact expectation
over it, the guided search replayed against it. Bounded here: the tiny model, 5 points each."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import statistics
import warnings

import pytest

from benchmarks.tune_efficiency import (
    TableBoard,
    measure_tables,
    random_curve,
    random_trials_to,
    replay,
    table_points,
    tables_table,
)
from nnc.compiler.tune.cache import TuningCache
from nnc.compiler.tune.measure import CortexMMeasurer, prepare
from tests.test_tune_cache import tiny_model

needs_tools = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="needs gcc-arm-none-eabi and qemu-system-arm")

TABLE = {"default": 100.0, "a": 120.0, "b": 97.0, "c": None, "d": 90.0, "e": 99.0, "f": 60.0,
         "g": 62.0}


def test_random_curve_is_the_expectation_over_every_draw():
    points = [k for k in TABLE if k != "default"]
    curve = random_curve(TABLE, 10)
    assert len(curve) == len(points)
    for n in range(1, len(points) + 1):
        draws = list(itertools.combinations(points, n))
        # drawing n points without replacement, in any order: each n-subset equally likely
        best = [min([100.0] + [TABLE[p] for p in d if TABLE[p] is not None]) for d in draws]
        assert curve[n - 1] == pytest.approx(statistics.fmean(best) / 100.0)
        hit = sum(b <= 60.0 * 1.05 for b in best) / len(draws)
        need = random_trials_to(TABLE, 60.0)
        assert (hit >= 0.5) == (n >= need)
    assert random_trials_to(TABLE, 98.0) == 0  # the default is within 5% already
    assert random_trials_to({"default": 10.0, "a": None}, 5.0) == math.inf


@needs_tools
@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.slow
def test_tables_measured_once_and_the_searches_replayed(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare(tiny_model(), "cortex-m7", quantize="int8", calibration="random")
    want = table_points(prep, 5)
    assert all(len(v) == 5 for v in want.values())
    assert table_points(prep, 5) == want  # seeded: a rerun asks for the same points
    db = tmp_path / "tables.sqlite"
    board = CortexMMeasurer(prep)
    tables = measure_tables(prep, db, 5, measurer=board, progress=False)
    assert board.builds >= 1 + 5  # the untuned build, then point i of every workload
    again = CortexMMeasurer(prep)
    assert measure_tables(prep, db, 5, measurer=again, progress=False) == tables
    assert again.builds == 0  # all there: a rerun measures nothing
    with TuningCache.open(db, create=False) as c:
        assert c.count() == len(prep.workloads) * 6
    for w in prep.workloads:
        t = tables[w.key]
        assert set(t) == {"default", *want[w.key]}
        assert all(f is None or f == int(f) for f in t.values())  # exact instruction counts
    # a point outside the table cannot be replayed
    with pytest.raises(KeyError, match="not in the measured table"):
        TableBoard(prep, {w.key: {"default": 1.0} for w in prep.workloads}).measure(
            {prep.workloads[0].key: prep.workloads[0].default[:-1]})
    result = replay({"tiny": (prep, tables)}, trials=5, batch=2, seeds=2)
    assert len(result["rows"]) == len(prep.workloads)
    for r in result["rows"]:
        figs = [f for k, f in tables[next(w.key for w in prep.workloads
                                          if w.hash == r["workload"])].items()
                if k != "default" and f is not None]
        assert r["best"] == min([r["default"], *figs])
        assert len(r["guided_curve"]) == len(r["random_curve"]) == 5
        # after the whole table both searches have seen every point
        assert r["random_curve"][-1] == pytest.approx(r["best"] / r["default"], abs=1e-4)
        assert r["guided_curve"][-1] == pytest.approx(r["best"] / r["default"], abs=1e-4)
        assert all(h is not None and 0 <= h <= 5 for h in r["guided_hits"])
        assert 0 <= r["random_trials_to_5pct"] <= 5
    text = tables_table(result)
    assert f"median over {len(prep.workloads)} workloads" in text
    json.dumps(result)
