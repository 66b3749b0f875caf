"""`nnc tune` on the emulated Cortex-M7 with a tiny int8 model (four workloads): the trials are
measured on the board (one firmware per candidate set), the cache it writes makes `nnc compile
--tuning-cache` schedule the kernels without measuring, and the tuned build's outputs equal the
untuned build's bit for bit; the CLI's errors are one line, exit 2."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import nnc
from nnc.compiler.tune.cache import TuningCache
from tests.test_tune_cache import tiny_model

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

needs_tools = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="needs gcc-arm-none-eabi and qemu-system-arm")


@pytest.fixture(scope="module")
def calibration():
    rng = np.random.default_rng(0)
    return {"input": rng.standard_normal((8, 1, 1, 8, 6)).astype(np.float32)}


@needs_tools
@pytest.mark.needs_arm
@pytest.mark.needs_qemu
def test_tune_then_compile_from_the_cache(tmp_path, calibration, monkeypatch):
    """The README's Python example as written (the tiny model as kws.onnx, 2 trials), then the
    tuned build against the untuned one."""
    monkeypatch.setenv("NNC_TUNING_CACHE", "off")
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "tuning.sqlite"
    model = tiny_model()
    onnx.save(model, tmp_path / "kws.onnx")
    np.savez(tmp_path / "kws_calibration.npz", **calibration)
    block = re.search(r"```python tune\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its nnc.tune example"
    code = block.group(1).replace("trials=32", "trials=2")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    r = scope["result"]
    # three convs, the average pool and the FC: every int8 kernel is a declarative definition
    assert scope["model"].info["tuning"]["tuned_kernels"] == 5
    calibration = str(tmp_path / "kws_calibration.npz")
    assert [len(w.layers) for w in r.workloads] == [1, 1, 1, 1, 1]
    assert r.builds == 1 + 2 + 1
    assert r.model_tuned <= r.model_default
    for w in r.workloads:
        assert w.trials == 2 and 0 < w.best <= w.default
    with TuningCache.open(cache, create=False) as c:
        assert c.count() == 5 * 3  # defaults + 2 trials per workload, each measured exactly
        assert all(t.status == "ok" and t.figure == int(t.figure) for t in c.trials())
    opts = dict(target="cortex-m7", quantize="int8", calibration=calibration,
                kernels="generated")
    untuned = nnc.compile(model, tuning_cache=False, **opts)
    tuned = nnc.compile(model, tuning_cache=cache, **opts)
    assert tuned.info["tuning"]["tuned_kernels"] == 5
    assert "tuning" not in untuned.info
    feeds = {"input": np.random.default_rng(1).standard_normal((1, 1, 8, 6)).astype(np.float32)}
    a, b = untuned.run(feeds), tuned.run(feeds)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    bench = tuned.benchmark(inputs=feeds)
    assert bench["instructions"] <= untuned.benchmark(inputs=feeds)["instructions"]
    # the C is the tuning run's best: the kernels carry the cached schedules
    best = {w.key: w.best_steps for w in r.workloads}
    model_c = (tuned.source_dir / "model" / "model.c").read_text()
    if any(w.best < w.default for w in r.workloads):
        assert model_c != (untuned.source_dir / "model" / "model.c").read_text()
    assert len(best) == 5


@needs_tools
@pytest.mark.needs_arm
@pytest.mark.needs_qemu
def test_cli_tune_and_errors(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    cache = tmp_path / "c.sqlite"
    env_cmd = [sys.executable, "-m", "nnc.compiler.cli"]
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT.parent), "NNC_TUNING_CACHE": "off"}

    def nnc_cli(*args):
        return subprocess.run([*env_cmd, *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path)

    r = nnc_cli("tune", str(path), "--quantize", "int8", "--calibration", "random",
                "--trials", "1", "--batch", "1", "--cache", str(cache), "--no-progress",
                "--workers", "2", "--plot", str(tmp_path / "curves.png"))
    assert r.returncode == 0, r.stderr
    assert "speedup" in r.stdout and "whole model on cortex-m7" in r.stdout
    assert "curves in" in r.stdout and "random" in r.stdout
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    r = nnc_cli("cache", "list", "--cache", str(cache))
    assert r.returncode == 0 and "10 trials of 5 workloads" in r.stdout, r.stderr
    r = nnc_cli("history", "--kind", "tune", "--json")  # every nnc tune is in the history
    assert r.returncode == 0, r.stderr
    runs = [x for x in json.loads(r.stdout) if x["model"] == "tiny"]
    assert runs and runs[-1]["kind"] == "tune" and len(runs[-1]["figures"]["workloads"]) == 5
    for args, message in [
        (("tune", str(path), "--cache", str(cache)), "no kernel with a schedule space"),
        (("tune", str(path), "--quantize", "int8", "--calibration", "random",
          "--time-budget", "soon"), "--time-budget"),
        (("compile", str(path), "--tuning-cache", str(tmp_path / "none.sqlite")),
         "no such file"),
        (("cache", "show", "--cache", str(cache)), "needs a workload hash"),
    ]:
        r = nnc_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr
    r = nnc_cli("compile", str(path), "--target", "cortex-m7", "--quantize", "int8",
                "--calibration", "random", "--kernels", "generated", "--tuning-cache",
                str(cache), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "5 kernels scheduled from it" in r.stdout
    info = json.loads((tmp_path / "out" / "nnc.json").read_text())
    assert info["tuning"]["tuned_workloads"] == 5
    warnings.filterwarnings("ignore")


def _corrupt_kernel(c_text: str, kernel_name: str) -> str:
    """`kernel_name`'s function with its accumulation negated (`acc = acc - x*w`): what a wrong
    intrinsic or emitter bug would compute; the rest of the file as it was."""
    start = c_text.index(f"/* {kernel_name}: ")
    end = c_text.find("\n/* k", start + 1)
    end = len(c_text) if end < 0 else end
    body = c_text[start:end]
    wrong = re.sub(r"(acc\w*) = \1 \+ ", r"\1 = \1 - ", body)
    assert wrong != body, f"{kernel_name}: no accumulation to corrupt"
    return c_text[:start] + wrong + c_text[end:]


@needs_tools
@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.slow
def test_a_wrong_result_on_the_board_is_recorded_and_never_applied(tmp_path, monkeypatch):
    """The first candidate of the first conv gets wrong code in the firmware (its accumulation
    negated in the emitted C): the board's outputs differ from the untuned build's, so the
    tuner records that trial `wrong`, and neither the cache's best nor `nnc compile
    --tuning-cache` ever use it."""
    import nnc.backends.c.emit as emit
    from nnc.compiler.tune.measure import prepare
    from nnc.compiler.tune.space import schedule_text
    from nnc.compiler.tune.tuner import tune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare(tiny_model(), "cortex-m7", quantize="int8", calibration="random")
    w = prep.workloads[0]
    victim: list = []  # the first non-default schedule the first conv gets
    real_emit = emit.emit_c

    def emit_c(module, *args, **kwargs):
        files = real_emit(module, *args, **kwargs)
        k = module.kernels[w.layers[0]]
        if k.schedule != w.default and not victim:
            victim.append(k.schedule)
        if victim and k.schedule == victim[0]:
            files["model.c"] = _corrupt_kernel(files["model.c"], k.name)
        return files

    monkeypatch.setattr(emit, "emit_c", emit_c)
    cache = tmp_path / "c.sqlite"
    r = tune(None, prepared=prep, cache=cache, trials=2, batch=2, search="random",
             progress=False)
    bad = schedule_text(victim[0])
    with TuningCache.open(cache, create=False) as c:
        rows = {t.steps: t for t in c.trials(w.key)}
        assert rows[bad].status == "wrong" and rows[bad].figure is None
        assert "outputs differ" in rows[bad].error
        # the other workloads' candidates of that build were measured again, alone, and are ok
        others = [t for t in c.trials() if t.workload != w.key]
        assert others and all(t.status == "ok" for t in others)
        best = c.best(w.key, prep.target_key, "qemu-instructions")
        assert best is not None and best.steps != bad
    res = next(x for x in r.workloads if x.key == w.key)
    assert res.wrong == 1 and res.best_steps != bad
    assert r.builds == 1 + 2 + len(prep.workloads) + 1  # the batch build measured again 1 by 1
    # what `nnc compile --tuning-cache` schedules the kernel with: the lookup apply-tuning uses
    from nnc.compiler.tune.apply import open_tuning

    applied = open_tuning(cache, prep.target).get(w.key)
    assert applied is not None and applied != victim[0]


@needs_tools
@pytest.mark.needs_arm
@pytest.mark.needs_qemu
def test_widened_weights_and_lane_copies_on_the_board_equal_the_untuned_build(tmp_path):
    """The FC and the pointwise conv with int16 weights (`Widen`, dot4_s8s16: SMLAD on the
    board) and two unrolled copies of the intrinsic, the other layers with dot4_s8 copies
    where they fit: the firmware's outputs are the untuned firmware's, bit for bit."""
    from nnc.compiler.tune.measure import CortexMMeasurer, prepare, same_outputs
    from nnc.compiler.tune.space import Knobs, ScheduleSpace
    from nnc.ir.loops import Widen

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare(tiny_model(), "cortex-m7", quantize="int8", calibration="random")
    measurer = CortexMMeasurer(prep, tmp_path)
    untuned = measurer.measure({})
    assert not untuned.error
    assignment, widened = {}, set()
    for w in prep.workloads:
        space = ScheduleSpace(w.defn, w.shapes, prep.target)
        for fn in ("dot4_s8s16", "dot4_s8"):
            steps = next((s for axis in ("k", "ic") for s in [space.steps_of(Knobs(
                oc_tile=4, lanes=(axis, fn, 4), lane_copies=2))] if s is not None), None)
            if steps is not None:
                assignment[w.key] = steps
                if Widen("w", "int16") in steps:
                    widened.add(w.kind)
                break
    assert widened == {"fully_connected_s8", "conv_s8"}
    tuned = measurer.measure(assignment)
    assert not tuned.error
    assert same_outputs(untuned.outputs, tuned.outputs)
    measurer.close()


@needs_tools
@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.slow
def test_workers_on_the_board_match_one_process(tmp_path):
    """--workers 2 on the emulated board (each worker its own build folder): the same trials,
    figures and statuses as one process, in the same order."""
    from nnc.compiler.tune.measure import prepare
    from nnc.compiler.tune.tuner import tune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare(tiny_model(), "cortex-m7", quantize="int8", calibration="random")
    rows = {}
    for n in (1, 2):
        r = tune(None, prepared=prep, cache=tmp_path / f"w{n}.sqlite", trials=2, batch=2,
                 search="random", progress=False, workers=n)
        assert r.builds == 1 + 2 + 1
        with TuningCache.open(tmp_path / f"w{n}.sqlite", create=False) as c:
            rows[n] = [(t.workload, t.steps, t.figure, t.status) for t in c.trials()]
    assert rows[1] == rows[2] and all(s == "ok" for *_, s in rows[1])


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.slow
def test_cluster_on_the_board_matches_one_process(tmp_path):
    """--cluster on a LocalCluster of two worker processes, each building firmware and running
    it on QEMU: the same trials, figures and statuses as one process, in the same order."""
    distributed = pytest.importorskip("distributed")
    from nnc.compiler.tune.measure import prepare
    from nnc.compiler.tune.tuner import tune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare(tiny_model(), "cortex-m7", quantize="int8", calibration="random")
    rows = {}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        for name, where in (("one", None), ("cluster", cluster.scheduler_address)):
            r = tune(None, prepared=prep, cache=tmp_path / f"{name}.sqlite", trials=2, batch=2,
                     search="random", progress=False, cluster=where)
            assert r.builds == 1 + 2 + 1
            with TuningCache.open(tmp_path / f"{name}.sqlite", create=False) as c:
                rows[name] = [(t.workload, t.steps, t.figure, t.status) for t in c.trials()]
    assert rows["one"] == rows["cluster"] and all(s == "ok" for *_, s in rows["one"])
