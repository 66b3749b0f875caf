"""Test helpers shared by the op and pass tests (importable as nnc.testing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.ops import get_op
from nnc.ir.types import tensor_type_of
from nnc.passes.manager import PassContext


def find_clang() -> str | None:
    """A clang on PATH (`nnc.backends.target.find_clang`), as its full path."""
    import shutil

    from nnc.backends.target import find_clang as find

    name = find()
    return None if name is None else shutil.which(name)


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float,
                 what: str = "output") -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if actual.dtype.kind in "fc":
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True,
                                   err_msg=what)
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=what)


def single_op_graph(kind: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any],
                    constant_inputs: Sequence[int] = ()) -> Graph:
    """A graph with one op; inputs listed in `constant_inputs` become constants."""
    opdef = get_op(kind)
    frozen = Attrs.of(attrs)
    types = [tensor_type_of(np.asarray(x)) if x is not None else None for x in inputs]
    out_types = opdef.infer(types, frozen)
    g_inputs, consts, names = [], [], []
    for i, x in enumerate(inputs):
        if x is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        if i in constant_inputs:
            consts.append(Constant.of(name, np.asarray(x)))
        else:
            g_inputs.append(Value(name, types[i]))  # type: ignore[arg-type]
    outs = tuple(Value(f"out{k}", t) for k, t in enumerate(out_types))
    op = Op(kind, tuple(names), outs, frozen, name=f"{kind}_0")
    return Graph(kind, tuple(g_inputs), outs, tuple(consts), (op,))


def check_op(kind: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any] | None = None,
             rtol: float = 1e-5, atol: float = 1e-6,
             constant_inputs: Sequence[int] = ()) -> list[np.ndarray]:
    """Check that the op's loop nest (via the loop-IR interpreter) matches its numpy reference and
    that the reference's outputs match the type rule. Returns the reference outputs."""
    from nnc.backends.target import cortex_m7, cortex_m55, host_target
    from nnc.ir.loop_verify import verify_loop_module
    from nnc.passes.default_schedule import default_schedule
    from nnc.passes.lower_to_loops import lower_to_loops
    from nnc.passes.schedule import schedule

    attrs = attrs or {}
    graph = single_op_graph(kind, inputs, attrs, constant_inputs)
    ref = [np.asarray(r) for r in get_op(kind).reference(list(inputs), Attrs.of(attrs))]
    for r, v in zip(ref, graph.outputs, strict=True):
        assert r.shape == v.type.shape, (
            f"{kind}: reference shape {r.shape} != inferred {v.type.shape}")
        assert str(r.dtype) == v.type.dtype, f"{kind}: reference dtype {r.dtype} != {v.type.dtype}"
    module = lower_to_loops(graph, PassContext())
    verify_loop_module(module)
    runtime = (x for i, x in enumerate(inputs) if x is not None and i not in constant_inputs)
    feeds = {module.inputs[k]: np.asarray(x) for k, x in enumerate(runtime)}
    got = run_loop_module(module, feeds)
    for k, name in enumerate(module.outputs):
        assert_close(got[name], ref[k], rtol, atol, f"{kind} output {k}")
    if any(k.compute is not None for k in module.kernels):
        # a declarative definition: its default schedule on every kind of target (register
        # tiles, SMLAD and Helium dot intrinsics) through the interpreter too
        for target in (host_target(), cortex_m7(), cortex_m55()):
            scheduled = schedule(default_schedule(module, PassContext(target=target)),
                                 PassContext(target=target))
            verify_loop_module(scheduled)
            got = run_loop_module(scheduled, feeds)
            for k, name in enumerate(module.outputs):
                assert_close(got[name], ref[k], rtol, atol,
                             f"{kind} output {k}, scheduled for {target.name}")
    return ref
