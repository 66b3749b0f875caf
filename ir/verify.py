"""The graph-IR verifier: checks the invariants every pass relies on; errors name the op and value.

Checked: every value defined once (inputs, constants, op outputs) with a non-empty name; every use
after its definition; constant data matching its type; attributes of the allowed kinds; every op
kind registered and its declared output types equal to what its type rule infers (dtype and shape);
static inputs (`OpDef.static_inputs`) fed by constants; graph outputs defined with their declared
type; fused bodies verified recursively, their inputs and outputs matching the outer op's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnc.ir.graph import Graph, Op
from nnc.ir.ops import get_op
from nnc.ir.types import TensorType


class VerifyError(Exception):
    """The graph breaks an IR invariant."""


def _same(a: TensorType, b: TensorType) -> bool:
    # layout and quantization are annotations the type rules do not compute
    return a.shape == b.shape and a.dtype == b.dtype


def _attr_ok(value: object) -> bool:
    if type(value) in (bool, int, float, str):
        return True
    return type(value) is tuple and all(_attr_ok(v) for v in value)


def _label(op: Op, index: int) -> str:
    name = f" '{op.name}'" if op.name else ""
    return f"{op.kind}{name} (op #{index})"


def _check_types(
    where: str, what: str, names: Sequence[str], declared: Sequence[TensorType],
    expected: Sequence[TensorType | None],
) -> None:
    if len(declared) != len(expected):
        raise VerifyError(f"{where}: declares {len(declared)} {what}, expected {len(expected)}")
    for name, d, e in zip(names, declared, expected, strict=True):
        if e is not None and not _same(d, e):
            raise VerifyError(f"{where}: {what[:-1]} %{name} is declared {d} but should be {e}")


def _verify_body(op: Op, where: str, types: list[TensorType | None], constants: set[str]) -> None:
    body = op.body
    assert body is not None
    if len(body.inputs) != len(op.inputs):
        raise VerifyError(
            f"{where}: body has {len(body.inputs)} inputs for the op's {len(op.inputs)}"
        )
    for outer, inner, t in zip(op.inputs, body.inputs, types, strict=True):
        if t is not None and not _same(inner.type, t):
            raise VerifyError(
                f"{where}: body input %{inner.name} is {inner.type} but the op passes "
                f"%{outer} of type {t}"
            )
    # a body input bound to an outer constant counts as a constant inside the body
    body_constants = {
        v.name for n, v in zip(op.inputs, body.inputs, strict=True) if n in constants
    }
    _verify(body, f"{where} body: ", body_constants)
    _check_types(
        where, "outputs", [v.name for v in op.outputs], [v.type for v in op.outputs],
        [v.type for v in body.outputs],
    )


def _verify_op(op: Op, where: str, types: list[TensorType | None], constants: set[str]) -> None:
    for key, value in op.attrs.items():
        if not _attr_ok(value):
            raise VerifyError(f"{where}: attribute {key!r} has unsupported value {value!r}")
    if op.body is not None:
        _verify_body(op, where, types, constants)
        return
    try:
        opdef = get_op(op.kind)
    except KeyError:
        raise VerifyError(f"{where}: op kind {op.kind!r} is not registered") from None
    for k in opdef.static_inputs:
        if k < len(op.inputs) and op.inputs[k] and op.inputs[k] not in constants:
            raise VerifyError(f"{where}: input {k} (%{op.inputs[k]}) must be a constant")
    try:
        inferred = list(opdef.infer(types, op.attrs))
    except Exception as e:  # a type rule rejecting its inputs, or failing on bad attributes
        raise VerifyError(f"{where}: type rule failed: {type(e).__name__}: {e}") from e
    _check_types(where, "outputs", [v.name for v in op.outputs],
                 [v.type for v in op.outputs], inferred)


def _verify(graph: Graph, prefix: str, constants: set[str]) -> None:
    defined: dict[str, TensorType] = {}
    later = {v.name for op in graph.ops for v in op.outputs}

    def define(name: str, t: TensorType, what: str) -> None:
        if not name:
            raise VerifyError(f"{prefix}{what} has an empty name (reserved for absent inputs)")
        if name in defined:
            raise VerifyError(f"{prefix}{what} redefines value %{name}")
        defined[name] = t

    for v in graph.inputs:
        define(v.name, v.type, f"graph input %{v.name}")
    constants = set(constants)
    for c in graph.constants:
        define(c.name, c.value.type, f"constant %{c.name}")
        data, t = np.asarray(c.data), c.value.type
        if str(data.dtype) != t.dtype or tuple(data.shape) != t.shape:
            raise VerifyError(
                f"{prefix}constant %{c.name}: data is {data.dtype}{list(data.shape)} but its "
                f"type is {t}"
            )
        constants.add(c.name)
    for i, op in enumerate(graph.ops):
        where = prefix + _label(op, i)
        for name in op.inputs:
            if name and name not in defined:
                when = "used before it is defined" if name in later else "not defined"
                raise VerifyError(f"{where}: input %{name} is {when}")
        types = [defined[n] if n else None for n in op.inputs]
        _verify_op(op, where, types, constants)
        for v in op.outputs:
            define(v.name, v.type, f"{_label(op, i)}: output %{v.name}")
    for v in graph.outputs:
        if v.name not in defined:
            raise VerifyError(f"{prefix}graph output %{v.name} is not defined")
        if not _same(v.type, defined[v.name]):
            raise VerifyError(
                f"{prefix}graph output %{v.name} is declared {v.type} but is defined as "
                f"{defined[v.name]}"
            )


def verify_graph(graph: Graph) -> None:
    """Raise VerifyError naming the offending op and value if `graph` is malformed."""
    _verify(graph, f"graph '{graph.name}': ", set())
