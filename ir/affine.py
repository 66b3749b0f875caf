"""Integer affine forms of loop-IR index expressions: the one affine analysis passes share.

    affine_form(i * 12 + j - 1, {"i": 4, "j": 12}) == {"i": 12, "j": 1, "": -1}

`flat_offset` gives a buffer access's row-major element offset as such a form; `injective` says
whether the loops around a store reach each offset at most once (lower-to-loops uses both to
prove an elementwise kernel may write in place over its input). Only +, - and * by constants are
affine here; anything else (div, mod, loads in indices) is None: "don't know".
"""

from __future__ import annotations

from collections.abc import Sequence

from nnc.ir.loops import Binary, Const, Expr, Var

Affine = dict[str, int]  # loop variable -> coefficient; "" -> the constant term


def affine_form(e: Expr, extents: dict[str, int]) -> Affine | None:
    """`e` as an integer affine form of loop variables, or None. Variables of extent-1 loops are
    always 0 and drop out (broadcast loads index such a dimension with the constant 0)."""
    if isinstance(e, Const) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return {"": e.value} if e.value else {}
    if isinstance(e, Var):
        if e.name not in extents:
            return None
        return {e.name: 1} if extents[e.name] > 1 else {}
    if isinstance(e, Binary) and e.op in ("add", "sub", "mul"):
        a, b = affine_form(e.a, extents), affine_form(e.b, extents)
        if a is None or b is None:
            return None
        if e.op == "mul":
            if set(a) <= {""}:
                a, b = b, a
            if not set(b) <= {""}:
                return None  # a product of two variables
            k = b.get("", 0)
            return {v: c * k for v, c in a.items() if c * k}
        sign = 1 if e.op == "add" else -1
        out = dict(a)
        for v, c in b.items():
            out[v] = out.get(v, 0) + sign * c
        return {v: c for v, c in out.items() if c}
    return None


def flat_offset(indices: Sequence[Expr], shape: Sequence[int],
                extents: dict[str, int]) -> Affine | None:
    """The row-major element offset of `buffer[indices]` as an affine form."""
    out: Affine = {}
    stride = 1
    for idx, dim in zip(reversed(indices), reversed(shape), strict=True):
        a = affine_form(idx, extents)
        if a is None:
            return None
        for v, c in a.items():
            out[v] = out.get(v, 0) + c * stride
        stride *= dim
    return {v: c for v, c in out.items() if c}


def injective(form: Affine, loop_vars: Sequence[str], extents: dict[str, int]) -> bool:
    """Whether the loops around a store reach each offset of `form` at most once: every loop of
    extent > 1 appears, and sorted by |coefficient| each one steps past all smaller ones' range."""
    live = [v for v in loop_vars if extents[v] > 1]
    if set(form) - {""} != set(live):
        return False
    reach = 0
    for v in sorted(live, key=lambda v: abs(form[v])):
        if abs(form[v]) <= reach:
            return False
        reach += abs(form[v]) * (extents[v] - 1)
    return True
