"""The graph-IR reference interpreter: runs a graph op by op with each op's numpy reference.

Every analysis gets a reference executor for free (constant folding, calibration, pass checks):

>>> # outputs = run_graph(graph, {"x": x})                     # {output name: array}
>>> # values = run_graph(graph, {"x": x}, keep_all=True)       # every intermediate too
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nnc.ir.graph import Graph, Op
from nnc.ir.ops import get_op


class InterpError(Exception):
    pass


def run_op(op: Op, args: list[np.ndarray | None]) -> list[np.ndarray]:
    """Evaluate one op (fused ops run their body)."""
    if op.body is not None:
        env = dict(zip((v.name for v in op.body.inputs), args, strict=True))
        res = run_graph(op.body, env)  # type: ignore[arg-type]
        return [res[v.name] for v in op.body.outputs]
    results = list(get_op(op.kind).reference(args, op.attrs))
    if len(results) != len(op.outputs):
        raise InterpError(
            f"{op.kind} '{op.name}' produced {len(results)} outputs, expected {len(op.outputs)}")
    out = []
    for r, v in zip(results, op.outputs, strict=True):
        arr = np.asarray(r)
        if arr.dtype != np.dtype(v.type.dtype):
            arr = arr.astype(v.type.dtype)
        out.append(arr.reshape(v.type.shape))
    return out


def run_graph(
    graph: Graph, inputs: Mapping[str, np.ndarray], keep_all: bool = False
) -> dict[str, np.ndarray]:
    env: dict[str, np.ndarray] = {c.name: c.data for c in graph.constants}
    for v in graph.inputs:
        if v.name not in inputs:
            raise InterpError(f"missing input {v.name!r}")
        env[v.name] = np.asarray(inputs[v.name], dtype=v.type.dtype).reshape(v.type.shape)
    for op in graph.ops:
        args = [env[n] if n else None for n in op.inputs]
        try:
            results = run_op(op, args)
        except InterpError:
            raise
        except Exception as e:
            raise InterpError(f"{op.kind} '{op.name}': {type(e).__name__}: {e}") from e
        env.update({v.name: r for v, r in zip(op.outputs, results, strict=True)})
    if keep_all:
        return env
    return {v.name: env[v.name] for v in graph.outputs}
