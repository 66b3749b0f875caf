"""`nnc tune --target host` with the tiny fp32 model (three convs and a gemm): the host's
schedule space holds the default register tile and only legal points, one harness executable
measures a whole batch (median ns per layer on a pinned CPU), the records carry objective
`host-ns` and the host's target key, `nnc compile --target host` applies the cache with zero
measurements and stays within the model tests' tolerance of onnxruntime, and a candidate that
computes wrong results, fails to compile or faults is recorded as such and never applied."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import nnc
from nnc.compiler.tune.cache import TuningCache
from tests.test_tune_cache import tiny_model

ROOT = Path(__file__).resolve().parent.parent
RTOL, ATOL = 1e-3, 1e-4  # tests/test_models.py against onnxruntime


@pytest.fixture(scope="module")
def prepared():
    from nnc.compiler.tune.measure import prepare

    return prepare(tiny_model(), "host")


def test_host_workloads_and_space(prepared):
    """Four fp32 workloads; each space holds the default schedule, and what it proposes is
    legal (`plan`) and distinct."""
    from nnc.compiler.tune.space import HostScheduleSpace, schedule_text, space_for
    from nnc.ir.compute import plan

    assert [w.kind for w in prepared.workloads] == ["conv+relu"] * 3 + ["gemm"]
    assert "isa=" in prepared.target_key and prepared.target_key.startswith("target=host ")
    for w in prepared.workloads:
        space = space_for(w.defn, w.shapes, prepared.target)
        assert isinstance(space, HostScheduleSpace)
        default = schedule_text(w.default)
        assert any(schedule_text(s) == default for _, s in space.enumerate()), w.hash
        points = space.sample(random.Random(0), 12)
        texts = [schedule_text(s) for _, s in points]
        assert len(set(texts)) == len(texts) >= 4
        for _, steps in points:
            plan(w.defn, steps, w.shapes)


def test_harness_measures_a_batch_in_one_build(prepared, tmp_path):
    from nnc.compiler.tune.measure import HostMeasurer, close_outputs

    m = HostMeasurer(prepared, tmp_path, repeat=5, rounds=2)
    runs = m.measure_batch([{}, {}])
    assert m.builds == 1
    for r in runs:
        assert not r.error and r.total > 0
        assert set(r.figures) == {w.key for w in prepared.workloads}
        assert all(v > 0 for v in r.figures.values())
    assert close_outputs(runs[0].outputs, runs[1].outputs)
    # each tuned layer's own output is checked too, not only the model's
    layers = sorted(k for k in runs[0].outputs if k.startswith("layer "))
    assert len(layers) == 4 and "output" in runs[0].outputs
    assert (tmp_path / "b1" / "harness").exists()


def test_later_batches_are_scaled_to_a_default_timed_in_the_same_process(prepared, tmp_path):
    """Every batch after the untuned build carries the default once more; its figures are
    scaled by untuned / that copy (a batch timed while the machine was busier is not
    penalized), and the extra copy is not returned."""
    from nnc.compiler.tune.measure import HostMeasurer, Run

    key = prepared.workloads[0].key
    calls = []

    class Fake(HostMeasurer):
        def _measure_batch(self, assignments):
            calls.append(list(assignments))
            busy = 1.0 if len(calls) == 1 else 1.5  # the machine got busier after the base
            return [Run(figures={key: (60.0 if a else 100.0) * busy}, total=int(1000 * busy))
                    for a in assignments]

    m = Fake(prepared, tmp_path)
    assert m.measure({}).figures[key] == 100.0  # the baseline
    (cand,) = m.measure_batch([{key: ()}])
    assert calls[-1] == [{key: ()}, {}]
    assert cand.figures[key] == pytest.approx(60.0) and cand.total == 1000
    off = Fake(prepared, tmp_path, same_process_baseline=False)
    off.measure({})
    assert off.measure({key: ()}).figures[key] == pytest.approx(90.0)


def test_a_hanging_candidate_times_out_alone(prepared, tmp_path):
    """A candidate whose conv never returns: the batch's harness times out, each model runs
    again alone, and only the hanging one fails (`run: timed out`)."""
    from nnc.compiler.tune.measure import HostMeasurer

    w = prepared.workloads[0]

    class Hangs(HostMeasurer):
        def _write(self, i, assignment, out):
            module = super()._write(i, assignment, out)
            if i == 1:
                path = out / "m1" / "model.c"
                text = path.read_text()
                name = module.kernels[w.layers[0]].name
                brace = text.index("{", text.index(f"/* {name}: "))
                path.write_text(text[:brace + 1] + "\n    { volatile int spin = 1; "
                                "while (spin) {} }" + text[brace + 1:])
            return module

    m = Hangs(prepared, tmp_path, timeout_s=4, repeat=3, rounds=1)
    ok, hung = m.measure_batch([{}, {}])
    assert not ok.error and ok.figures[w.key] > 0
    assert hung.error.startswith("run: timed out") and not hung.figures


def test_tune_host_then_compile_from_the_cache(tmp_path, monkeypatch):
    import onnxruntime as ort

    from nnc.passes.lower_to_loops import target_key

    monkeypatch.setenv("NNC_TUNING_CACHE", "off")
    model = tiny_model()
    cache = tmp_path / "c.sqlite"
    r = nnc.tune(model, target="host", trials=2, batch=2, cache=cache, progress=False)
    assert r.objective == "host-ns" and r.builds == 1 + 1 + 1  # untuned, one batch, final
    assert r.model_default > 0 and r.model_tuned > 0
    assert "ns" in r.table().splitlines()[-1]
    key = target_key(nnc.compiler.api._target("host"))
    with TuningCache.open(cache, create=False) as c:
        trials = c.trials()
        assert len(trials) == 4 * 3  # defaults + 2 candidates per workload
        assert {t.objective for t in trials} == {"host-ns"}
        assert {t.target for t in trials} == {key}
        assert all(t.status == "ok" and t.figure > 0 for t in trials)
        assert all(t.toolchain.startswith(nnc.compiler.api._target("host").cc)
                   for t in trials)
        # a record applies only where workload, target key and objective all match
        w = r.workloads[0]
        assert c.best(w.key, key, "qemu-instructions") is None
        assert c.best(w.key, key.replace("isa=", "isa=x"), "host-ns") is None
    tuned = nnc.compile(model, target="host", tuning_cache=cache)
    assert tuned.info["tuning"]["tuned_kernels"] == 4
    assert tuned.info["tuning"]["objective"] == "host-ns"
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 6)).astype(np.float32)
    got = tuned.run({"input": x})["output"]
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    # the tuned kernels carry the cache's best schedules: other C where one beat its default
    untuned = nnc.compile(model, target="host", tuning_cache=False)
    assert "tuning" not in untuned.info
    np.testing.assert_allclose(untuned.run({"input": x})["output"], want, rtol=RTOL, atol=ATOL)
    if any(w.best < w.default for w in r.workloads):
        c_files = [sorted(m.source_dir.rglob("model.c")) for m in (tuned, untuned)]
        assert c_files[0] and c_files[0][0].read_text() != c_files[1][0].read_text()


def _corrupt_kernel(c_text: str, kernel_name: str) -> str:
    """`kernel_name`'s function with its accumulation negated (`acc0[i] = acc0[i] - ...`)."""
    start = c_text.index(f"/* {kernel_name}: ")
    end = c_text.find("\n/* k", start + 1)
    end = len(c_text) if end < 0 else end
    body = c_text[start:end]
    wrong = re.sub(r"(acc\w*(?:\[\w+\])?) = \1 \+ ", r"\1 = \1 - ", body)
    assert wrong != body, f"{kernel_name}: no accumulation to corrupt"
    return c_text[:start] + wrong + c_text[end:]


def _trap_kernel(c_text: str, kernel_name: str) -> str:
    """`kernel_name`'s function dies on entry (a fault in the candidate's code)."""
    start = c_text.index(f"/* {kernel_name}: ")
    brace = c_text.index("{", start)
    return c_text[:brace + 1] + "\n    __builtin_trap();" + c_text[brace + 1:]


def test_wrong_failing_and_faulting_candidates(prepared, tmp_path, monkeypatch):
    """The first candidate of the first conv computes a wrong result, the first of the second
    conv does not compile, the first of the third conv faults: recorded `wrong`, `failed`,
    `failed`, never the best, never applied; the other candidates of those builds are measured
    again alone and count."""
    import nnc.backends.c.emit as emit
    from nnc.compiler.tune.apply import open_tuning
    from nnc.compiler.tune.space import schedule_text
    from nnc.compiler.tune.tuner import tune

    ws = prepared.workloads
    victims: dict[int, object] = {}
    real_emit = emit.emit_c

    def emit_c(module, *args, **kwargs):
        files = real_emit(module, *args, **kwargs)
        for n, w in enumerate(ws[:3]):
            k = module.kernels[w.layers[0]]
            if k.schedule != w.default and n not in victims:
                victims[n] = k.schedule
            if victims.get(n) == k.schedule:
                text = str(files["model.c"])
                files["model.c"] = (_corrupt_kernel(text, k.name) if n == 0 else
                                    text.replace(f"/* {k.name}: ", "#error injected\n/* ", 1)
                                    if n == 1 else _trap_kernel(text, k.name))
        return files

    monkeypatch.setattr(emit, "emit_c", emit_c)
    cache = tmp_path / "c.sqlite"
    r = tune(None, prepared=prepared, cache=cache, trials=2, batch=2, search="random",
             progress=False)
    assert set(victims) == {0, 1, 2}
    with TuningCache.open(cache, create=False) as c:
        for n, status, why in [(0, "wrong", "outputs differ"), (1, "failed", "build:"),
                               (2, "failed", "run:")]:
            w = ws[n]
            bad = schedule_text(victims[n])
            rows = {t.steps: t for t in c.trials(w.key)}
            assert rows[bad].status == status and rows[bad].figure is None, (n, rows[bad])
            assert why in rows[bad].error, rows[bad].error
            best = c.best(w.key, prepared.target_key, "host-ns")
            assert best is not None and best.steps != bad
            applied = open_tuning(cache, prepared.target).get(w.key)
            assert applied is not None and applied != victims[n]
        # the gemm's candidates shared the bad builds; measured again alone, they count
        assert all(t.status == "ok" for t in c.trials(ws[3].key))
    assert [x.wrong for x in r.workloads[:3]] == [1, 0, 0]
    assert [x.failed for x in r.workloads[:3]] == [0, 1, 1]
    assert r.builds == 1 + 1 + 1 + 1  # untuned, the batch, its singles again, final


def test_cli_tune_host(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    cache = tmp_path / "c.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent), "NNC_TUNING_CACHE": "off"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "nnc.compiler.cli", *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path)

    r = cli("tune", str(path), "--target", "host", "--trials", "1", "--batch", "1",
            "--cache", str(cache), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "whole model on host" in r.stdout and " ns " in r.stdout
    assert f"nnc compile {path} --target host --tuning-cache {cache}" in r.stdout
    r = cli("compile", str(path), "--target", "host", "--tuning-cache", str(cache),
            "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "4 kernels scheduled from it" in r.stdout
    for args, message in [
        (("--quantize", "int8", "--calibration", "random"), "fp32"),
        (("--workers", "2"), "--workers"),
    ]:
        r = cli("tune", str(path), "--target", "host", "--cache", str(cache), *args)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
