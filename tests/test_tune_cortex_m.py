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
                "--trials", "1", "--batch", "1", "--cache", str(cache), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "speedup" in r.stdout and "whole model on cortex-m7" in r.stdout
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
