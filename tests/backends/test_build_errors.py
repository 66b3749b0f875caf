"""When the C compiler fails on a generated project: the compiler's first errors (file:line and
the source excerpt, bounded), nnc's bug (exit 1) told apart from the user's, the failed project
kept on request (--keep-failed, keep_failed=True, NNC_DEBUG=1); and the bounded job pool."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
import nnc.backends.c.emit as emit_module
from nnc.backends.c.build import GeneratedCodeError, _run_all, first_errors
from nnc.compiler import cli
from nnc.errors import NncError

BROKEN_LINE = "static int nnc_test_broken(void) { return undeclared_in_nnc_test; }"


def _model():
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture
def broken_codegen(monkeypatch):
    """emit_c whose model.c does not compile (stands in for a code generator bug)."""
    real = emit_module.emit_c

    def emit(module, prefix="nnc", **kw):
        files = dict(real(module, prefix, **kw))
        files["model.c"] = str(files["model.c"]) + "\n" + BROKEN_LINE + "\n"
        return files

    monkeypatch.setattr(emit_module, "emit_c", emit)
    monkeypatch.delenv("NNC_DEBUG", raising=False)


def _check_message(text: str) -> None:
    assert "this is an nnc bug" in text
    assert "model.c:" in text and "error:" in text and "undeclared_in_nnc_test" in text
    assert BROKEN_LINE.split("{")[0].strip() in text  # gcc's source excerpt
    assert "$ " not in text  # not the whole command line


def test_generated_code_error_is_nncs_bug_and_removed(broken_codegen, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(GeneratedCodeError) as err:
        nnc.compile(_model(), output_dir=out)
    text = str(err.value)
    _check_message(text)
    assert "--keep-failed" in text and "keep_failed=True" in text
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert not isinstance(err.value, NncError)


def test_keep_failed_keeps_the_project(broken_codegen, tmp_path: Path) -> None:
    with pytest.raises(GeneratedCodeError) as err:
        nnc.compile(_model(), output_dir=tmp_path / "out", keep_failed=True)
    kept = err.value.project
    assert kept is not None and f"kept in {kept}" in str(err.value)
    assert BROKEN_LINE in (kept / "model.c").read_text() and (kept / "Makefile").exists()
    with pytest.raises(GeneratedCodeError) as err:  # a compile into a temporary directory
        nnc.compile(_model(), keep_failed=True)
    kept = err.value.project
    try:
        assert kept is not None and (kept / "model.c").exists()
        assert f"kept in {kept}" in str(err.value)
    finally:
        if kept is not None:
            shutil.rmtree(kept.parent)


def test_nnc_debug_keeps_the_project(broken_codegen, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NNC_DEBUG", "1")
    with pytest.raises(GeneratedCodeError) as err:
        nnc.compile(_model(), output_dir=tmp_path / "out")
    assert err.value.kept is True and (err.value.project / "model.c").exists()


def test_cli_exit_1_with_the_compiler_errors(broken_codegen, tmp_path: Path, capsys) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(_model().SerializeToString())
    rc = cli.main(["compile", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("nnc: internal error: the C compiler rejected the code nnc generated")
    _check_message(err)
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    rc = cli.main(["compile", str(path), "-o", str(tmp_path / "out"), "--keep-failed"])
    err = capsys.readouterr().err
    assert rc == 1
    kept = Path(err.split("kept in ")[1].split(" (")[0])
    assert (kept / "model.c").exists() and kept.parent == tmp_path


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs gcc-arm-none-eabi")
def test_firmware_generated_code_error(broken_codegen, tmp_path: Path) -> None:
    with pytest.raises(GeneratedCodeError) as err:
        nnc.compile(_model(), target="cortex-m7", output_dir=tmp_path / "out", keep_failed=True)
    text = str(err.value)
    _check_message(text)
    assert "cortex-m7 firmware (model.c)" in text
    assert (err.value.project / "model" / "model.c").exists()


def test_first_errors_are_bounded() -> None:
    stderr = "model.c: In function 'k0_conv':\n"
    for i in range(10):
        stderr += (f"model.c:{10 + i}:5: error: 'v{i}' undeclared (first use in this function)\n"
                   f"   {10 + i} |     v{i} = 1;\n      |     ^~\n"
                   "model.c:3:1: note: each undeclared identifier is reported only once\n")
    text = first_errors(stderr + ("x" * 1000) + "\n")
    lines = text.splitlines()
    assert lines[0] == "model.c: In function 'k0_conv':"
    assert lines[1].startswith("model.c:10:5: error: 'v0' undeclared")
    assert lines[2] == "   10 |     v0 = 1;" and lines[3].strip() == "|     ^~"
    assert "v2" in text and "v3" not in text and lines[-1] == "... and 7 more error lines"
    assert len(lines) <= 17 and "note:" not in text
    tail = first_errors("something odd\n" + "\n".join(f"line {i}" for i in range(50)))
    assert tail.splitlines()[-1] == "line 49" and len(tail.splitlines()) <= 16
    long = first_errors("a.c:1:1: error: " + "y" * 500)
    assert len(long) <= 240 and long.endswith("...")


def test_jobs_are_bounded(tmp_path: Path) -> None:
    """At most `jobs` compiler processes at once (a real build has ~30-120 sources)."""
    script = ("import os, sys, time\n"
              "d = sys.argv[1]; me = os.path.join(d, 'run.%d' % os.getpid())\n"
              "open(me, 'w').close()\n"
              "n = len([f for f in os.listdir(d) if f.startswith('run.')])\n"
              "open(os.path.join(d, 'seen.%d' % os.getpid()), 'w').write(str(n))\n"
              "time.sleep(0.15); os.remove(me)\n")
    cmds = [[sys.executable, "-c", script, str(tmp_path)] for _ in range(8)]
    _run_all(cmds, tmp_path, jobs=2)
    seen = [int(p.read_text()) for p in tmp_path.glob("seen.*")]
    assert len(seen) == 8 and max(seen) <= 2
