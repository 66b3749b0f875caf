"""PassManager: pipelines, options, verification, timing, dumps, custom passes."""

from dataclasses import dataclass

import numpy as np
import pytest

from nnc.ir.graph import Graph, Op, Value
from nnc.ir.types import TensorType
from nnc.passes.manager import (
    PassError,
    PassManager,
    format_step,
    parse_pipeline,
    register_pass,
    registered_passes,
)

T = TensorType((1, 4), "float32")


def _graph():
    x, t, y = Value("x", T), Value("t", T), Value("y", T)
    return Graph("g", (x,), (y,), (), (Op("relu", ("x",), (t,), name="r0"),
                                       Op("relu", ("t",), (y,), name="r1")))


@dataclass(frozen=True)
class _Opts:
    sizes: tuple = (8,)
    name: str = "x"


@register_pass("test-count-ops", options=_Opts)
def _count_ops(graph, ctx):
    ctx.facts["count"] = (len(graph.ops), ctx.options.sizes)
    return graph


@register_pass("test-break-ir")
def _break_ir(graph, ctx):
    bad = Op("relu", ("nope",), (Value("y", T),), name="broken")
    return graph.replace(ops=(bad,))


@register_pass("test-raise")
def _raise(graph, ctx):
    raise ZeroDivisionError("boom")


def test_builtin_passes_are_registered():
    names = set(registered_passes())
    assert {"fold-constants", "eliminate-dead-code", "fold-batchnorm", "fuse-ops",
            "lower-to-loops", "schedule", "plan-memory"} <= names


def test_pipeline_options_parse_into_the_dataclass():
    steps = parse_pipeline("test-count-ops{sizes=32,32; name=abc},eliminate-dead-code")
    assert steps[0].options == _Opts(sizes=(32, 32), name="abc")
    assert format_step(steps[0]) == "test-count-ops{sizes=32,32; name=abc}"
    with pytest.raises(PassError, match="unknown pass 'nope'"):
        parse_pipeline("nope")
    with pytest.raises(PassError, match="takes no options"):
        parse_pipeline("eliminate-dead-code{a=1}")


def test_custom_pass_runs_and_is_timed():
    pm = PassManager("test-count-ops{sizes=4}")
    pm.run(_graph())
    assert pm.facts["count"] == (2, 4)
    assert [n for n, _ in pm.timings] == ["test-count-ops"]


def test_invalid_ir_names_the_pass():
    with pytest.raises(PassError, match="after pass 'test-break-ir'"):
        PassManager("test-break-ir").run(_graph())


def test_exception_names_the_pass():
    with pytest.raises(PassError, match="pass 'test-raise' failed: ZeroDivisionError: boom"):
        PassManager("test-raise").run(_graph())


def test_dump_ir_writes_one_file_per_pass(tmp_path):
    PassManager("eliminate-dead-code,lower-to-loops", dump_dir=tmp_path).run(_graph())
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["00-input.txt", "01-eliminate-dead-code.txt", "02-lower-to-loops.txt"]
    assert "relu(" in (tmp_path / "01-eliminate-dead-code.txt").read_text()
    assert "kernel @" in (tmp_path / "02-lower-to-loops.txt").read_text()


def test_env_var_dumps_ir(tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_DUMP_IR", str(tmp_path))
    PassManager("eliminate-dead-code").run(_graph())
    assert (tmp_path / "01-eliminate-dead-code.txt").exists()


def test_lowered_module_runs():
    from nnc.ir.loop_interp import run_loop_module

    m = PassManager("lower-to-loops,plan-memory").run(_graph())
    x = np.array([[-1, 2, -3, 4]], np.float32)
    np.testing.assert_array_equal(run_loop_module(m, {"x": x})[m.outputs[0]], np.maximum(x, 0))
