"""`nnc tune --cluster`: the builds fan out over a Dask cluster the test starts (a LocalCluster
of two worker processes). The same trials in the same order as one process; a worker that dies
in a build makes that build's candidates `failed`; a worker with another toolchain, no
scheduler at the address and no `distributed` package are one-line errors."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

from nnc.compiler.errors import NncError
from nnc.compiler.tune.measure import prepare
from nnc.compiler.tune.space import schedule_text
from nnc.compiler.tune.tuner import tune
from tests.test_tune_cache import FakeBoard, tiny_model
from tests.test_tune_workers import _rows

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def prep():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare(tiny_model(), "cortex-m7", quantize="int8", calibration="random")


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes that can import the tests' made-up board; a
    worker that dies fails its task at once (no retry on another worker)."""
    import dask

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), old]))
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
                distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                         dashboard_address=None) as c:
            yield c
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


class DyingBoard(FakeBoard):
    """FakeBoard whose process dies (as a worker killed by the OOM killer) on `fatal`."""

    def __init__(self, prep, fatal=(), **kw):
        super().__init__(prep, **kw)
        self.fatal = set(fatal)

    def measure(self, assignment):
        if {schedule_text(s) for s in assignment.values()} & self.fatal:
            os._exit(17)
        return super().measure(assignment)


def test_cluster_records_the_same_trials_as_one_process(prep, cluster, tmp_path):
    probe = FakeBoard(prep)
    tune(None, cache=tmp_path / "probe.sqlite", prepared=prep, measurer=probe, trials=8,
         batch=4, search="random", progress=False, seed=3)
    w0, w1 = prep.workloads[:2]
    bad = schedule_text(probe.assignments[2][w0.key])
    wrong = schedule_text(probe.assignments[4][w1.key])
    results = {}
    for name, where in (("one", None), ("cluster", cluster.scheduler_address)):
        board = FakeBoard(prep, bad={bad}, wrong={wrong})
        results[name] = tune(None, cache=tmp_path / f"{name}.sqlite", prepared=prep,
                             measurer=board, trials=8, batch=4, search="random",
                             progress=False, cluster=where, seed=3)
    assert _rows(tmp_path / "one.sqlite") == _rows(tmp_path / "cluster.sqlite")
    assert {r[3] for r in _rows(tmp_path / "one.sqlite")} == {"ok", "failed", "wrong"}
    one, farm = results["one"], results["cluster"]
    assert one.builds == farm.builds
    for a, b in zip(one.workloads, farm.workloads, strict=True):
        assert (a.best, a.best_steps, a.trials, a.failed, a.wrong) == (
            b.best, b.best_steps, b.trials, b.failed, b.wrong)
    # every worker dropped the session's build folder
    assert all(n == 0 for n in cluster_sessions(cluster).values())


def cluster_sessions(cluster):
    from nnc.compiler.tune import cluster as mod

    with distributed.Client(cluster, set_as_default=False) as client:
        return client.run(lambda: len(mod._SESSIONS))


def test_a_worker_lost_in_a_build_fails_its_candidates_only(prep, cluster, tmp_path):
    probe = FakeBoard(prep)
    tune(None, cache=tmp_path / "probe.sqlite", prepared=prep, measurer=probe, trials=4,
         batch=4, search="random", progress=False, seed=5)
    w0 = prep.workloads[0]
    fatal = schedule_text(probe.assignments[2][w0.key])  # build 2 of the first batch
    r = tune(None, cache=tmp_path / "c.sqlite", prepared=prep,
             measurer=DyingBoard(prep, fatal={fatal}), trials=4, batch=4, search="random",
             progress=False, cluster=cluster.scheduler_address, seed=5)
    rows = _rows(tmp_path / "c.sqlite")
    failed = [row for row in rows if row[3] == "failed"]
    assert failed and all("cluster worker lost" in row[4] for row in failed)
    assert any(row[1] == fatal for row in failed)
    assert len(failed) == len(prep.workloads)  # that one build's candidates, no others
    assert sum(w.trials for w in r.workloads) == 4 * len(prep.workloads)
    assert all(w.best_steps != fatal for w in r.workloads)


def test_a_worker_with_another_toolchain_is_refused(prep, cluster):
    from nnc.compiler.tune.cluster import ClusterPool

    with pytest.raises(NncError, match=r"worker tcp://\S+ has arm-none-eabi-gcc .*, this "
                                       r"machine arm-none-eabi-gcc 0\.0"):
        ClusterPool(cluster.scheduler_address, FakeBoard(prep), {}, "arm-none-eabi-gcc 0.0",
                    "arm-none-eabi-gcc")


def test_no_scheduler_at_the_address(prep, tmp_path, monkeypatch):
    import nnc.compiler.tune.cluster as mod

    monkeypatch.setattr(mod, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(NncError, match="cannot reach a Dask scheduler there"):
        tune(None, cache=tmp_path / "c.sqlite", prepared=prep, measurer=FakeBoard(prep),
             trials=2, progress=False, cluster="tcp://127.0.0.1:9")


def test_workers_and_cluster_exclude_each_other(prep, tmp_path):
    with pytest.raises(NncError, match="exclude each other"):
        tune(None, cache=tmp_path / "c.sqlite", prepared=prep, measurer=FakeBoard(prep),
             workers=2, cluster="tcp://127.0.0.1:9", progress=False)


def test_without_distributed_the_error_names_the_install(tmp_path, monkeypatch):
    import subprocess

    from tests.test_tune_cache import tiny_model as model

    path = tmp_path / "tiny.onnx"
    path.write_bytes(model().SerializeToString())
    code = ("import sys; sys.modules['distributed'] = None; "
            "from nnc.compiler.cli import main; sys.exit(main())")
    r = subprocess.run([sys.executable, "-c", code, "tune", str(path), "--quantize", "int8",
                        "--calibration", "random", "--cache", str(tmp_path / "c.sqlite"),
                        "--cluster", "tcp://127.0.0.1:9", "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "pip install 'nnc[cluster]'" in r.stderr and "Traceback" not in r.stderr


def test_the_host_is_not_tuned_on_a_cluster(tmp_path):
    with pytest.raises(NncError, match="--cluster: host candidates are timed on this machine"):
        tune(tiny_model(), "host", cache=tmp_path / "c.sqlite", cluster="tcp://127.0.0.1:9",
             progress=False)
