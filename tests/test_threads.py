"""threads: the parallelize pass (legality on hand-built kernels, the loops it picks), the OpenMP
C it emits, and whole models on 2 threads giving the 1-thread outputs bit for bit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import pytest

import nnc
from nnc.backends.c.emit import emit_c
from nnc.compiler.errors import NncError
from nnc.compiler.onnx.importer import import_model
from nnc.compiler.pipeline import default_pipeline
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loops import (
    Buffer,
    For,
    KernelBuilder,
    Load,
    LoopModule,
    Parallel,
    Stmt,
    Var,
    substitute_stmt,
    walk_stmts,
)
from nnc.passes.manager import PassManager
from nnc.passes.parallelize import ParallelError

X = Buffer("x", (4, 16), "float32", "input")
Y = Buffer("y", (4, 16), "float32", "output")
S = Buffer("s", (4,), "float32", "output")
EAGER = "parallelize{threads=2; min_work=1}"  # every kernel counts as big


def module_of(b: KernelBuilder, params: tuple[str, ...], bufs: tuple[Buffer, ...],
              steps: tuple = ()) -> LoopModule:
    k = b.build(params, schedule=steps)
    ins = tuple(x.name for x in bufs if x.scope == "input")
    outs = tuple(x.name for x in bufs if x.scope == "output")
    return LoopModule("m", bufs, (k,), ins, outs)


def elementwise() -> LoopModule:
    b = KernelBuilder("scale")
    with b.loops(X.shape) as (i, j):
        b.store(Y, (i, j), X[i, j] * 2.0)
    return module_of(b, ("x", "y"), (X, Y))


def row_sums(steps: tuple = ()) -> LoopModule:
    """s[i0] = sum_k x[i0, k] through a scalar accumulator."""
    b = KernelBuilder("row_sum")
    acc = b.local("float32")
    with b.loop(4) as i:
        b.store(acc, (), 0.0)
        with b.loop(16, "k") as k:
            b.store(acc, (), Load(acc.name, (), "float32") + X[i, k])
        b.store(S, (i,), Load(acc.name, (), "float32"))
    return module_of(b, ("x", "s"), (X, S), steps)


def parallel_loops(m: LoopModule) -> list[str]:
    return [s.var for k in m.kernels for s in walk_stmts(k.body)
            if isinstance(s, For) and s.kind == "parallel"]


def reversed_parallel(m: LoopModule) -> LoopModule:
    """Every parallel loop run backwards: a legal one gives the same bits in any order."""
    def rev(stmts: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        for s in stmts:
            if isinstance(s, For):
                body = rev(s.body)
                if s.kind == "parallel":
                    flip = {s.var: (s.extent - 1) - Var(s.var)}
                    body = tuple(substitute_stmt(c, flip) for c in body)
                s = replace(s, body=body)
            out.append(s)
        return tuple(out)

    return m.replace(kernels=tuple(k.replace(body=rev(k.body)) for k in m.kernels))


# ---------------------------------------------------------------- the legality check


def test_outermost_independent_loop_becomes_parallel() -> None:
    out = PassManager(EAGER).run(elementwise())
    assert parallel_loops(out) == ["i0"]
    assert out.kernels[0].schedule == (Parallel("i0"),)  # recorded, so it prints


def test_row_loop_of_a_reduction_is_parallel_with_a_private_accumulator() -> None:
    out = PassManager(EAGER).run(row_sums())
    assert parallel_loops(out) == ["i0"]
    text = emit_c(out, threads=2)["model.c"]
    assert "#define NNC_THREADS 2\n#include \"nnc_threads.h\"" in text
    assert "nnc_parallel_for(k0_row_sum_par0, &nnc_ctx, 4, 1);" in text
    outlined = text[text.index("static void k0_row_sum_par0"):text.index("static void k0_row_sum(")]
    assert "    float acc0 = 0;" in outlined  # the accumulator is the outlined loop's own
    assert "for (ptrdiff_t i0 = lo; i0 < hi; ++i0) {" in outlined
    # the loop runs in a function whose pointers are restrict *parameters* (LLVM ignores
    # restrict on local pointer variables: clang-15 ran resnet50's outlined convs 2x slower)
    body = outlined[:outlined.index("static void k0_row_sum_par0(void *ctx")]
    assert re.search(r"static void k0_row_sum_par0_body\(ptrdiff_t lo, ptrdiff_t hi, "
                     r"float \*restrict s, const float \*restrict x\)", body), body
    assert "k0_row_sum_par0_body(lo, hi, c->" in outlined
    x = np.random.default_rng(0).standard_normal(X.shape).astype(np.float32)
    want = run_loop_module(row_sums(), {"x": x})["s"]
    np.testing.assert_array_equal(run_loop_module(reversed_parallel(out), {"x": x})["s"], want)


def test_outlined_loops_compile_without_warnings(tmp_path) -> None:
    from nnc.backends.c.build import build

    m = PassManager(EAGER).run(row_sums())
    result = build(m, tmp_path, werror=True, bench=False, threads=2)
    assert "-pthread" in result.commands[0] and result.warnings == ""


def test_user_parallel_step_on_a_reduction_is_a_clear_error() -> None:
    with pytest.raises(ParallelError, match=r"kernel @row_sum: loop %k0 cannot run in parallel: "
                       r"%acc0 is read before it is written in an iteration"):
        PassManager("schedule,parallelize").run(row_sums((Parallel("k0"),)))
    assert issubclass(ParallelError, NncError)  # the CLI's one line, exit 2


def accumulate_into_output() -> LoopModule:
    """s[0] += x[0, k] over k: every iteration writes the same element."""
    b = KernelBuilder("acc_out")
    with b.loop(16, "k") as k:
        b.store(S, (0,), S[0] + X[0, k])
    return module_of(b, ("x", "s"), (X, S))


def prefix_sum() -> LoopModule:
    """y[0, j] = y[0, j-1] + x[0, j]: each iteration reads what the previous one wrote."""
    b = KernelBuilder("scan")
    with b.loop(15, "j") as j:
        b.store(Y, (0, j + 1), Y[0, j] + X[0, j + 1])
    return module_of(b, ("x", "y"), (X, Y))


@pytest.mark.parametrize("build, why", [
    (accumulate_into_output, "every iteration writes the same element of %s"),
    (prefix_sum, "iterations overlap in the memory"),
])
def test_loop_carried_global_dependences_are_refused(build, why) -> None:
    m = build()
    assert parallel_loops(PassManager(EAGER).run(m)) == []  # the default leaves it serial
    k = m.kernels[0]
    forced = m.replace(kernels=(k.replace(schedule=(Parallel(k.body[0].var),)),))
    with pytest.raises(ParallelError, match=why):
        PassManager("schedule,parallelize").run(forced)
    if build is prefix_sum:  # and it does matter: run backwards, the scan is wrong
        x = np.arange(64, dtype=np.float32).reshape(X.shape)
        ran = PassManager("schedule").run(forced)
        assert not np.array_equal(run_loop_module(reversed_parallel(ran), {"x": x})["y"],
                                  run_loop_module(m, {"x": x})["y"])


def shifted_in_place(shift: int) -> LoopModule:
    """b[i] = a[i + shift] * 2 with a and b on the same arena bytes (an in-place plan)."""
    a = Buffer("a", (17,), "float32", "arena", offset=0)
    b_ = Buffer("b", (16,), "float32", "arena", offset=0)
    xin = Buffer("xin", (17,), "float32", "input")
    out = Buffer("out", (16,), "float32", "output")
    b = KernelBuilder("fill")
    with b.loop(17) as i:
        b.store(a, (i,), xin[i])
    fill = b.build(("xin", "a"))
    b = KernelBuilder("shift")
    with b.loop(16) as i:
        b.store(b_, (i,), a[i + shift] * 2.0)
    shift_k = b.build(("a", "b"))
    b = KernelBuilder("copy")
    with b.loop(16) as i:
        b.store(out, (i,), b_[i])
    copy = b.build(("b", "out"))
    return LoopModule("m", (xin, a, b_, out), (fill, shift_k, copy), ("xin",), ("out",),
                      arena_size=68)


def test_overlapping_buffers_are_one_memory() -> None:
    def parallel_kernels(m: LoopModule) -> list[str]:
        out = PassManager(EAGER).run(m)
        return [k.name for k in out.kernels if parallel_loops(out.replace(kernels=(k,)))]

    assert parallel_kernels(shifted_in_place(0)) == ["fill", "shift", "copy"]  # in place
    # b[i] = a[i + 1] over the same bytes reads the element the next iteration overwrites
    assert parallel_kernels(shifted_in_place(1)) == ["fill", "copy"]


def test_picks_outermost_legal_loop_below_extent_one_and_skips_small_kernels() -> None:
    b = KernelBuilder("batch")
    xb = Buffer("xb", (1, 8, 16), "float32", "input")
    yb = Buffer("yb", (1, 8, 16), "float32", "output")
    with b.loops(xb.shape) as (n, c, w):
        b.store(yb, (n, c, w), xb[n, c, w] + 1.0)
    m = module_of(b, ("xb", "yb"), (xb, yb))
    assert parallel_loops(PassManager(EAGER).run(m)) == ["i1"]
    assert parallel_loops(PassManager("parallelize{threads=2}").run(m)) == []  # 128 stores
    assert PassManager("parallelize").run(m).kernels == m.kernels  # threads=1: untouched


def test_one_thread_emits_todays_code() -> None:
    m = row_sums()
    same = PassManager("parallelize").run(m)
    assert emit_c(same) == emit_c(m)
    par = PassManager(EAGER).run(m)
    assert "nnc_parallel_for" not in emit_c(par)["model.c"]  # 1 thread: today's serial loop


# ---------------------------------------------------------------- whole models


def _models() -> dict:
    from benchmarks.models import MODELS
    from benchmarks.models.zoo import ZOO

    return {"kws": MODELS["kws"], "ad": MODELS["ad"], "ic": MODELS["ic"],
            "grouped_dilated": ZOO["grouped_dilated"]}


@pytest.mark.parametrize("name, quantize", [("kws", None), ("ad", None), ("ic", "int8"),
                                            ("grouped_dilated", None)])
def test_two_threads_give_the_one_thread_bits(name, quantize) -> None:
    from benchmarks.models import sample_input

    model = _models()[name]()
    kw = {"quantize": "int8", "calibration": "random"} if quantize else {}
    with pytest.warns(UserWarning) if quantize else nullcontext():
        one = nnc.compile(model, **kw)
        two = nnc.compile(model, threads=2, **kw)
    # (since the fp32 conv/gemm became declarative, AD and grouped_dilated have one kernel over
    # the parallelize pass's work threshold; docs/roadmap.md, Threads)
    assert two.info["threads"] == 2 and two.info["parallel_kernels"] >= 1
    assert "nnc_parallel_for(" in (two.source_dir / "model.c").read_text()
    assert "nnc_threads" not in (one.source_dir / "model.c").read_text()
    feeds = sample_input(model)
    y1, y2 = one.run(feeds), two.run(feeds)
    for out in y1:
        np.testing.assert_array_equal(y2[out], y1[out])
    if name == "kws":
        assert two.benchmark(warmup=1, repeat=3)["threads"] == 2


def test_parallel_loops_of_a_zoo_model_give_the_same_bits_in_reverse() -> None:
    """The order-independence the legality check promises, on the loops it chose in a real
    model, checked in the loop-IR interpreter (its arena included)."""
    from benchmarks.models import sample_input
    from benchmarks.models.zoo import ZOO

    model = ZOO["grouped_dilated"]()
    graph = import_model(model)
    pipeline = default_pipeline("host").replace("parallelize", "parallelize{threads=2}")
    m = PassManager(pipeline).run(graph)
    assert parallel_loops(m)
    feeds = {b: v for b, v in zip(m.inputs, sample_input(model).values(), strict=True)}
    want = run_loop_module(m, feeds)
    got = run_loop_module(reversed_parallel(m), feeds)
    for out in m.outputs:
        np.testing.assert_array_equal(got[out], want[out])


# ---------------------------------------------------------------- targets and the CLI


def test_cortex_m_refuses_threads(tmp_path) -> None:
    from benchmarks.models import MODELS

    with pytest.raises(NncError, match=r"threads=2: parallel loops run on the host target only, "
                       r"not on cortex-m7; compile for cortex-m7 with threads=1"):
        nnc.compile(MODELS["ad"](), target="cortex-m7", threads=2)
    with pytest.raises(NncError, match="the thread count must be an integer >= 1"):
        nnc.compile(MODELS["ad"](), threads=0)


def _cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnc.compiler.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_threads(tmp_path) -> None:
    import onnx

    from benchmarks.models import MODELS

    path = tmp_path / "kws.onnx"
    onnx.save(MODELS["kws"](), str(path))
    r = _cli("compile", path, "--target", "cortex-m4", "--threads", "2", "-o", tmp_path / "m4")
    assert r.returncode == 2 and r.stderr.startswith("nnc: error: threads=2: parallel loops run "
                                                     "on the host target only"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "m4").exists()
    out = tmp_path / "host"
    r = _cli("compile", path, "--threads", "2", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "threads 2: " in r.stdout
    assert json.loads((out / "nnc.json").read_text())["threads"] == 2
    r = _cli("bench", out, "--repeat", "3", "--warmup", "1")
    assert r.returncode == 0 and "; 2 threads" in r.stdout, r.stderr


POOL_STRESS = r"""
#include <stdio.h>
#define NNC_THREADS 3
#include "nnc_threads.h"
static long acc[1000];
static void add(void *c, ptrdiff_t lo, ptrdiff_t hi) {
    for (ptrdiff_t i = lo; i < hi; ++i) acc[i] += (long)c;
}
int main(void) {
    for (int r = 0; r < 20000; ++r) nnc_parallel_for(add, (void *)(long)(r % 3), 1000, 7);
    long s = 0;
    for (int i = 0; i < 1000; ++i) s += acc[i];
    printf("%ld\n", s);
    return 0;
}
"""


def test_pool_runs_every_chunk_of_every_job_once(tmp_path) -> None:
    """20000 back-to-back jobs on 3 threads: a chunk lost, run twice or run with a stale job's
    function would change the sum."""
    from nnc.backends.c.build import RUNTIME_DIR

    (tmp_path / "stress.c").write_text(POOL_STRESS)
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread",
                    f"-I{RUNTIME_DIR / 'include'}", "stress.c", "-o", "stress"], cwd=tmp_path,
                   check=True)
    out = subprocess.run([str(tmp_path / "stress")], capture_output=True, text=True, timeout=60)
    assert int(out.stdout) == 1000 * sum(r % 3 for r in range(20000))
